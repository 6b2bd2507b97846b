"""Data prep speed and memory: a CIFAR-10-sized JPEG folder (60,000 32x32 images) and a tenth of it.

ours:     `prepare()` of this checkout (each file read once, decoded in worker processes).
baseline: `prepare()` of another revision (default: the one before that change, with its header
          pass and 8 decoding threads), extracted with `git archive` into a scratch folder.
Each prep runs in a fresh Python process; the two take turns per size (baseline, ours, baseline,
ours ...) so a shared machine's changing load hits them alike. Per run:
    images/s      images ÷ seconds of the `prepare()` call (start-up and imports not counted);
    CPU µs/image  user + system CPU of the prep process and every process under it (decoder
                  workers included), ÷ images: less sensitive to other work on the machine;
    peak RSS      the largest sum of resident memory over the prep process and its descendants,
                  sampled every SAMPLE_SECONDS (and of PSS, which splits shared pages).
Figures: images/s and CPU per image at 60,000 (ours vs baseline; `ratio` is baseline CPU per
image ÷ ours), and peak RSS at 60,000 ÷ at 6,000 for each (target ≤ 1.3). A second part
measures whether Pillow's decoding uses a second core from threads: the same files decoded by
1 thread, 2 threads and 2 processes.

The folders are generated (structured 32x32 images, gradients and a disc with a little noise,
saved as JPEG by Pillow at its default quality, 10 classes in train/ and test/ like the
CIFAR-10 JPEG folder) into `--folders` and reused from there.

    python benchmarks/prep.py --folders /tmp/prep-folders --repeats 3
    python benchmarks/prep.py --tiny
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import common
from components.processes import descendant_processes

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# (train, test) images per class: CIFAR-10's 60,000 and a tenth of them.
SIZES = {"6000": (500, 100), "60000": (5000, 1000)}
TINY_SIZES = {"60": (5, 1), "600": (50, 10)}
# The revision before prep read each file once: its header pass, then 8 decoding threads.
BASELINE_REVISION = "1bbd7ec"
SAMPLE_SECONDS = 0.02
SIDE = 32


def add_arguments(parser) -> None:
    parser.add_argument("--folders", help="where the generated folders are kept between runs (default: a scratch folder)")
    parser.add_argument("--baseline-revision", default=BASELINE_REVISION, help=f"git revision to compare with (default {BASELINE_REVISION})")


def structured_images(generator, count: int):
    """uint8 [count, SIDE, SIDE, 3]: a colour gradient with a disc of another colour and a little noise."""
    import numpy as np

    rows, columns = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE
    images = np.empty((count, SIDE, SIDE, 3), dtype=np.uint8)
    for index in range(count):
        slopes = generator.uniform(-1, 1, (3, 2))
        picture = slopes[:, 0, None, None] * columns + slopes[:, 1, None, None] * rows + generator.uniform(0.2, 0.8, (3, 1, 1))
        centre_row, centre_column, radius = generator.uniform(0.2, 0.8), generator.uniform(0.2, 0.8), generator.uniform(0.1, 0.35)
        disc = (rows - centre_row) ** 2 + (columns - centre_column) ** 2 < radius ** 2
        picture = np.where(disc, generator.uniform(0, 1, (3, 1, 1)), picture) + generator.normal(0, 0.04, picture.shape)
        images[index] = (np.clip(picture, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    return images


def make_folder(root: str, per_class: tuple[int, int]) -> str:
    """``root``/{train,test}/<class>/NNNNN.jpg, generated once (a marker file says it is complete)."""
    import numpy as np
    from PIL import Image

    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return root
    shutil.rmtree(root, ignore_errors=True)
    generator = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class):
        for class_name in CLASS_NAMES:
            class_dir = os.path.join(root, split, class_name)
            os.makedirs(class_dir)
            for index, pixels in enumerate(structured_images(generator, count)):
                Image.fromarray(pixels).save(os.path.join(class_dir, f"{index:05d}.jpg"))
    open(marker, "w").close()
    return root


class ProcessTreeSampler:
    """Samples a process and its descendants: the peak sums of resident memory (RSS, which counts
    pages the processes share once in each; and PSS, which splits them), and CPU seconds."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_rss_bytes = self.peak_pss_bytes = 0
        self.cpu_ticks: dict[int, int] = {}
        self.process_count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def descendants_cpu_seconds(self) -> float:
        """CPU seconds of every sampled process but the top one (whose exact figure its parent's
        rusage of children gives)."""
        return sum(ticks for pid, ticks in self.cpu_ticks.items() if pid != self.pid) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = [self.pid, *descendant_processes(self.pid)]
            self.process_count = max(self.process_count, len(pids))
            rss = pss = 0
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/smaps_rollup") as rollup:
                        fields = dict(line.split(":", 1) for line in rollup if ":" in line and not line[0].isdigit())
                    rss += int(fields["Rss"].split()[0]) * 1024
                    pss += int(fields["Pss"].split()[0]) * 1024
                    with open(f"/proc/{pid}/stat") as stat:
                        fields = stat.read().rsplit(")", 1)[1].split()
                    self.cpu_ticks[pid] = max(self.cpu_ticks.get(pid, 0), int(fields[11]) + int(fields[12]))
                except (OSError, IndexError, KeyError, ValueError):
                    continue  # the process ended between listing and reading
            self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
            self._stop.wait(SAMPLE_SECONDS)


def measure_prepare(code_root: str, folder: str, output_dir: str) -> dict:
    """prepare(folder, output_dir) with the components package under ``code_root``, in a fresh Python."""
    script = (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from components.data_prep import prepare\n"
        "started = time.perf_counter()\n"
        "prepare(%r, %r)\n"
        "print('PREPARE_SECONDS', time.perf_counter() - started)\n"
    ) % (code_root, folder, output_dir)
    load = os.getloadavg()[0]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    sampler = ProcessTreeSampler(process.pid)
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.stop()
    if process.returncode:
        raise RuntimeError(f"prepare failed:\n{stderr}")
    with open(os.path.join(output_dir, "manifest.json")) as manifest_file:
        images = sum(json.load(manifest_file)["splits"].values())
    seconds = float(stdout.split("PREPARE_SECONDS")[-1])
    # The prep process (and any child it waited for) exactly, from this process's rusage of its
    # children; the processes under it that it did not wait for (decoder workers) as sampled.
    cpu_seconds = (children_after.ru_utime - children_before.ru_utime + children_after.ru_stime - children_before.ru_stime
                   + sampler.descendants_cpu_seconds())
    shutil.rmtree(output_dir)
    return {
        "images": images,
        "prepare_seconds": seconds,
        "images_per_second": images / seconds,
        "process_wall_seconds": wall,
        "cpu_seconds": cpu_seconds,
        "cpu_microseconds_per_image": 1e6 * cpu_seconds / images,
        "peak_rss_mb": sampler.peak_rss_bytes / 2**20,
        "peak_pss_mb": sampler.peak_pss_bytes / 2**20,
        "processes": sampler.process_count,
        "load_average_1min_at_start": load,
    }


def decode_with(pool_kind: str, workers: int, chunks: list[list[str]]) -> float:
    """Images per second decoding ``chunks`` with this checkout's decode_chunk in a pool."""
    import multiprocessing

    from components.sources import image_folder
    from components.sources.base import DEFAULT_MAX_IMAGE_PIXELS

    decoding = image_folder.Decoding((SIDE, SIDE), "RGB", DEFAULT_MAX_IMAGE_PIXELS)
    if pool_kind == "threads":
        pool = ThreadPoolExecutor(workers)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        list(pool.map(image_folder.decode_chunk, chunks[:workers], [decoding] * workers))  # start the workers
    with pool:
        started = time.perf_counter()
        decoded = sum(len(pixels) for pixels, _ in pool.map(image_folder.decode_chunk, chunks, [decoding] * len(chunks)))
        return decoded / (time.perf_counter() - started)


def main() -> None:
    arguments = common.parse_arguments("prep", __doc__.splitlines()[0], add_arguments)
    scratch = tempfile.mkdtemp(prefix="cnnpipe-prep-benchmark-")
    folders_dir = arguments.folders or os.path.join(scratch, "folders")
    sizes = TINY_SIZES if arguments.tiny else SIZES
    try:
        folders = {}
        for size, per_class in sizes.items():
            common.progress(f"folder of {size} images")
            folders[size] = make_folder(os.path.join(folders_dir, f"cifar_like_{size}"), per_class)
        code = {"baseline": common.extract_revision(arguments.baseline_revision, os.path.join(scratch, "baseline")),
                "ours": common.REPOSITORY_ROOT}
        runs = {variant: {size: [] for size in sizes} for variant in code}
        for repeat in range(arguments.repeats):
            for size, folder in folders.items():
                for variant, code_root in code.items():
                    run = measure_prepare(code_root, folder, os.path.join(scratch, "dataset"))
                    runs[variant][size].append(run)
                    common.progress(
                        f"repeat {repeat + 1}, {size} images, {variant}: {run['images_per_second']:.0f} images/s, "
                        f"{run['cpu_microseconds_per_image']:.0f} CPU µs/image, peak RSS {run['peak_rss_mb']:.0f} MB, "
                        f"load {run['load_average_1min_at_start']:.1f}"
                    )
        small, large = sizes
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(os.path.join(folders[small], "train"))
                       for name in names)
        chunks = [files[start:start + 256] for start in range(0, len(files), 256)]
        decode_with("threads", 1, chunks)  # untimed: files into the page cache, Pillow's plugins loaded
        decoding_rates = {
            "1 thread": decode_with("threads", 1, chunks),
            "2 threads": decode_with("threads", 2, chunks),
            "2 processes": decode_with("processes", 2, chunks),
        }
        common.progress(f"decoding alone: {decoding_rates}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def median_of(variant: str, size: str, key: str) -> float:
        return common.median([run[key] for run in runs[variant][size]])

    summary = {
        variant: {
            "images_per_second": {size: median_of(variant, size, "images_per_second") for size in sizes},
            "cpu_microseconds_per_image": {size: median_of(variant, size, "cpu_microseconds_per_image") for size in sizes},
            "peak_rss_mb": {size: median_of(variant, size, "peak_rss_mb") for size in sizes},
            "peak_rss_ratio": median_of(variant, large, "peak_rss_mb") / median_of(variant, small, "peak_rss_mb"),
            "peak_pss_mb": {size: median_of(variant, size, "peak_pss_mb") for size in sizes},
        }
        for variant in code
    }
    common.write_result(arguments.output, {
        "benchmark": "prep",
        "tiny": arguments.tiny,
        "baseline_revision": arguments.baseline_revision,
        "summary": summary,
        # ratio: how many images ours prepares per CPU second for each one of the baseline (at the
        # large size): the figure a shared machine's load disturbs least.
        "ratio": (summary["baseline"]["cpu_microseconds_per_image"][large]
                  / summary["ours"]["cpu_microseconds_per_image"][large]),
        "speed_ratio": summary["ours"]["images_per_second"][large] / summary["baseline"]["images_per_second"][large],
        "cpu_per_image_ratio": (summary["ours"]["cpu_microseconds_per_image"][large]
                                / summary["baseline"]["cpu_microseconds_per_image"][large]),
        "decoding_images_per_second": decoding_rates,
        "targets": {"images_per_second_at_60000": ">= 6000 on 2 cores", "peak_rss_ratio": "<= 1.3"},
        "runs": runs,
        "machine": common.cpu_machine_description(),
    })


if __name__ == "__main__":
    main()
