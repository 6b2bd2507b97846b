"""Training one model on several workers: images/s with 1 and 2 local worker processes, and the
cost of the gradient all-reduce that every synchronous step adds.

Training: `cnnpipe component train --workers N` of ResNet20 v1 on a generated folder of 32x32 RGB
images (CIFAR-sized), batch 128, 2 epochs; the figure is the second epoch's images/s from
history.csv (the first includes graph building). Worker counts take turns (1, 2, 1, 2 ...).
Collective: two processes on 127.0.0.1 all-reduce a float32 tensor of ResNet20's parameter count
(the gradients of one step) `--reductions` times; the figure is the median time of one.
`--tiny` trains LeNet5 on 64 images instead: the same code path in seconds.

    python benchmarks/workers.py
    python benchmarks/workers.py --tiny
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import common

MODEL_NAME = "resnet20_v1"
TINY_MODEL_NAME = "lenet5"  # --tiny only proves the script still runs: the cheapest model to train
RESNET20_PARAMS = 272_474


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=4096, help="training images in the generated folder")
    parser.add_argument("--reductions", type=int, default=50, help="timed all-reduces")


def make_folder(root: str, train_images: int) -> None:
    """Random 32x32 RGB PNGs in 10 class folders (what is learnt does not matter here)."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for split, count in (("train", train_images), ("test", max(20, train_images // 8))):
        for index in range(count):
            class_dir = os.path.join(root, split, f"class{index % 10}")
            os.makedirs(class_dir, exist_ok=True)
            Image.fromarray(generator.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(os.path.join(class_dir, f"{index}.png"))


def train_images_per_second(dataset: str, output_dir: str, workers: int, batch_size: int, model_name: str) -> float:
    config = {"epochs": 2, "batch_size": batch_size, "optimizer": "sgd", "learning_rate": 0.05, "schedule": "constant"}
    command = [sys.executable, "-m", "pipeline.cli", "component", "train", "--dataset", dataset, "--model", model_name,
               "--output", output_dir, "--config", json.dumps(config), "--workers", str(workers)]
    subprocess.run(command, cwd=common.REPOSITORY_ROOT, check=True, capture_output=True)
    with open(os.path.join(output_dir, "history.csv")) as history:
        last = list(csv.DictReader(history))[-1]
    return float(last["images"]) / float(last["seconds"])


def all_reduce_seconds(reductions: int) -> float:
    """Median seconds of one all-reduce of RESNET20_PARAMS floats between two local workers."""

    script = textwrap.dedent(f"""
        import json, os, statistics, time
        import tensorflow as tf
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        gradients = tf.ones([{RESNET20_PARAMS}])

        @tf.function
        def reduce():
            return strategy.reduce("SUM", strategy.run(lambda: gradients), axis=None)

        reduce()  # connect and trace
        seconds = []
        for _ in range({reductions}):
            started = time.perf_counter()
            reduce().numpy()
            seconds.append(time.perf_counter() - started)
        if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0:
            print("SECONDS", statistics.median(seconds), flush=True)
    """)
    with tempfile.TemporaryDirectory() as log_dir:
        captured = subprocess.run(
            [sys.executable, "-c", "import sys; from components.workers import run_local_workers; "
             "run_local_workers(2, [sys.executable, '-c', sys.argv[1]], log_dir=sys.argv[2])", script, log_dir],
            cwd=common.REPOSITORY_ROOT, check=True, capture_output=True, text=True,
        )
    return float(next(line.split()[1] for line in captured.stdout.splitlines() if line.startswith("SECONDS")))


def main() -> None:
    arguments = common.parse_arguments("workers", __doc__.splitlines()[0], add_arguments)
    if arguments.tiny:
        model_name, images, batch_size, reductions = TINY_MODEL_NAME, 64, 16, 5
    else:
        model_name, images, batch_size, reductions = MODEL_NAME, arguments.images, 128, arguments.reductions
    load_at_start = os.getloadavg()[0]
    from components.data_prep import prepare

    measured: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as scratch:
        folder, dataset = os.path.join(scratch, "folder"), os.path.join(scratch, "dataset")
        make_folder(folder, images)
        prepare(folder, dataset)
        for repeat in range(arguments.repeats):
            for workers in measured:
                output_dir = os.path.join(scratch, f"output-{workers}-{repeat}")
                measured[workers].append(train_images_per_second(dataset, output_dir, workers, batch_size, model_name))
                common.progress(f"{workers} worker(s): {measured[workers][-1]:.1f} images/s")
    reduce_seconds = all_reduce_seconds(reductions)
    common.progress(f"all-reduce of {RESNET20_PARAMS} floats: {reduce_seconds * 1000:.1f} ms")
    one, two = (common.median(measured[workers]) for workers in (1, 2))
    common.write_result(arguments.output, {
        "benchmark": "workers",
        "tiny": arguments.tiny,
        "ratio": two / one,
        "machine": common.machine_description(load_at_start),
        "model": model_name,
        "batch_size": batch_size,
        "train_images": images,
        "images_per_second": {"1_worker": one, "2_workers": two, "runs": measured},
        "all_reduce_milliseconds": reduce_seconds * 1000,
        "all_reduce_floats": RESNET20_PARAMS,
    })


if __name__ == "__main__":
    main()
