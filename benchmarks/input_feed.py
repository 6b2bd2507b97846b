"""The input pipeline alone: how many training batches per second the host hands over, per core.

What is measured: `input_pipeline.make_train_dataset(reader, batch, seed, cache=...)` with no
augmentation (augmentation belongs to the compiled step), over the shards of a prepared
CIFAR-10-sized dataset (50,000 train images, 32x32x3), its batches pulled one after another as
a training loop pulls them, with `--cache memory` (the split held once in memory, batches
gathered by shuffled index) and `--cache none` (the shards read, shuffled and parsed every pass),
each confined to 1 and to 2 cores with `taskset` (TensorFlow sizes its thread pools to the
cores it may use). Every measurement runs in a fresh process; the settings take turns.

Per measurement: images/s over `--batches` batches after `--warmup` untimed ones, and the CPU
seconds the process used meanwhile (user + system): images per CPU second is what one core
delivers, and is far less sensitive than images/s to other work on a shared machine. From it:
the cores that keep a GPU fed at the training rates in GPU_RATES.

    python benchmarks/input_feed.py --repeats 3
    python benchmarks/input_feed.py --tiny
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import common

BATCH_SIZE = 512  # the batch of the GPU figures below
CACHES = ("memory", "none")
CORE_SETS = {1: "0", 2: "0,1"}
# Training images/s on one H200 (Keras 3 on JAX, bf16, batch 512, steps_per_execution 16,
# augmentation in the step), from docs/../shared/DESIGN.md's lent-machine measurement.
GPU_RATES = {"resnet20_v1": 133_000, "fastnet8_small": 354_000}
PER_CLASS = (5000, 1000)  # train, test images per class: CIFAR-10's 60,000
TINY_PER_CLASS = (40, 5)

MEASURE = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from components import input_pipeline
from components.dataset import open_dataset

reader = open_dataset({dataset!r})
dataset = input_pipeline.make_train_dataset(reader, {batch}, 0, cache={cache!r})
batches = iter(dataset)
for _ in range({warmup}):
    images, labels = next(batches)
usage = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
for _ in range({count}):
    images, labels = next(batches)
_ = images.shape  # the last batch is complete
seconds = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
print("RESULT", json.dumps({{"seconds": seconds, "cpu_seconds": cpu, "images": {count} * {batch},
                            "image_dtype": images.dtype.name, "label_shape": list(labels.shape)}}))
"""


def add_arguments(parser) -> None:
    parser.add_argument("--folder", help="a CIFAR-sized JPEG folder to prepare (default: generated, see benchmarks/prep.py)")
    parser.add_argument("--batches", type=int, default=300, help="timed batches per measurement (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed batches first (default 30)")
    parser.add_argument("--code-root", default=common.REPOSITORY_ROOT,
                        help="checkout whose components/ is measured (default: this one), e.g. another branch's worktree")


def measure(code_root: str, dataset: str, cache: str, cores: int, batches: int, warmup: int) -> dict:
    """One measurement in a fresh process confined to ``cores`` cores."""
    script = MEASURE.format(root=code_root, dataset=dataset, batch=BATCH_SIZE, cache=cache,
                            warmup=warmup, count=batches)
    load = os.getloadavg()[0]
    result = subprocess.run(["taskset", "-c", CORE_SETS[cores], sys.executable, "-c", script],
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"measurement failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.split("RESULT", 1)[1])
    return {
        **figures,
        "cache": cache,
        "cores": cores,
        "images_per_second": figures["images"] / figures["seconds"],
        "images_per_second_per_core": figures["images"] / figures["seconds"] / cores,
        "images_per_cpu_second": figures["images"] / max(figures["cpu_seconds"], 1e-9),
        "load_average_1min_at_start": load,
    }


def main() -> None:
    arguments = common.parse_arguments("input_feed", __doc__.splitlines()[0], add_arguments)
    import prep  # the generated CIFAR-sized folder
    from components.data_prep import prepare

    scratch = tempfile.mkdtemp(prefix="cnnpipe-input-feed-")
    if arguments.tiny:
        arguments.batches, arguments.warmup = 3, 1
    try:
        folder = arguments.folder or prep.make_folder(os.path.join(scratch, "folder"), TINY_PER_CLASS if arguments.tiny else PER_CLASS)
        dataset = os.path.join(scratch, "dataset")
        common.progress(f"preparing {folder}")
        prepare(folder, dataset)
        runs = []
        for repeat in range(arguments.repeats):
            for cache in CACHES:
                for cores in CORE_SETS:
                    runs.append(measure(arguments.code_root, dataset, cache, cores, arguments.batches, arguments.warmup))
                    common.progress(
                        f"repeat {repeat + 1}, cache {cache}, {cores} core(s): {runs[-1]['images_per_second']:.0f} images/s, "
                        f"{runs[-1]['images_per_cpu_second']:.0f} images per CPU second, load {runs[-1]['load_average_1min_at_start']:.1f}"
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    summary = {}
    for cache in CACHES:
        for cores in CORE_SETS:
            chosen = [run for run in runs if run["cache"] == cache and run["cores"] == cores]
            summary[f"{cache}, {cores} core(s)"] = {
                "images_per_second": common.median([run["images_per_second"] for run in chosen]),
                "images_per_second_per_core": common.median([run["images_per_second_per_core"] for run in chosen]),
                "images_per_cpu_second": common.median([run["images_per_cpu_second"] for run in chosen]),
            }
    # The lower of the 1- and 2-core figures: more threads share more work between them.
    per_core = {cache: min(summary[f"{cache}, {cores} core(s)"]["images_per_cpu_second"] for cores in CORE_SETS) for cache in CACHES}
    common.write_result(arguments.output, {
        "benchmark": "input_feed",
        "tiny": arguments.tiny,
        "batch_size": BATCH_SIZE,
        "code_root": arguments.code_root,
        "handed_over": {"image_dtype": runs[-1]["image_dtype"], "label_shape": runs[-1]["label_shape"]},
        "summary": summary,
        # ratio: what streaming from the shards delivers per CPU second, as a share of the memory path.
        "ratio": per_core["none"] / per_core["memory"],
        # Cores whose input pipelines together hand over a GPU's training rate, at the measured
        # images per CPU second (pipelines on separate cores add up: they share nothing).
        "cores_to_feed_an_h200": {
            model: {cache: rate / per_core[cache] for cache in CACHES} for model, rate in GPU_RATES.items()
        },
        "gpu_rates": GPU_RATES,
        "runs": runs,
        "machine": common.cpu_machine_description(),
    })


if __name__ == "__main__":
    main()
