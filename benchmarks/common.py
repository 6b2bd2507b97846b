"""Shared parts of the benchmark scripts: arguments, machine description, results (no TensorFlow
until a function needs it; the training measurements are in throughput.py).

Every script takes `--tiny` (a few seconds of the same code path, so the scripts cannot rot
unnoticed), `--repeats` (measurements are repeated and the median reported, because the
machine may be shared) and `--output` (the JSON file; default `benchmarks/results/<name>.json`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPOSITORY_ROOT, "benchmarks", "results")

# The scripts run as `python benchmarks/<name>.py` from a checkout that may not be installed
# (the GPU machines: benchmarks/gpu.py), so the repository goes on the path before any import of it.
if REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, REPOSITORY_ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

from components import atomic  # noqa: E402  (needs the path above)


def parse_arguments(name: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The common flags plus the script's own; `--repeats` defaults to 3 (1 with --tiny)."""
    parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    parser.add_argument("--tiny", action="store_true", help="seconds-long run of the same code path (for the test that keeps scripts working)")
    parser.add_argument("--repeats", type=int, help="measurements to take; the median is reported (default 3, 1 with --tiny)")
    parser.add_argument("--output", metavar="FILE", help=f"JSON result file (default benchmarks/results/{name}.json)")
    if add_arguments:
        add_arguments(parser)
    arguments = parser.parse_args()
    if arguments.repeats is None:
        arguments.repeats = 1 if arguments.tiny else 3
    if arguments.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {arguments.repeats}")
    if arguments.output is None:
        arguments.output = os.path.join(RESULTS_DIR, f"{name}{'_tiny' if arguments.tiny else ''}.json")
    return arguments


def extract_revision(revision: str, destination: str) -> str:
    """The revision's components/ package under ``destination`` (git archive): a baseline's code, run
    by a child Python that puts ``destination`` first on its path."""
    archive = subprocess.run(["git", "archive", revision, "components"], cwd=REPOSITORY_ROOT, check=True, capture_output=True).stdout
    os.makedirs(destination)
    subprocess.run(["tar", "-x", "-C", destination], input=archive, check=True)
    return destination


def cpu_model_name() -> str:
    """lscpu's 'Model name', or the platform's processor string where lscpu is missing."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in listing.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def machine_description(load_average_at_start: float | None = None) -> dict[str, Any]:
    """Where and with what a figure was measured: CPU, cores, GPUs, load, versions, date.

    It loads TensorFlow; a script that must not have it loaded while it measures (a parent
    process holding TensorFlow slowed the pipeline it timed) calls this afterwards and passes the
    load average it saw at the start.
    """
    import numpy as np

    from components.keras_setup import keras, tf

    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model_name(),
        "cpu_cores": os.cpu_count(),
        "gpus": gpu_names,
        "load_average_1min_at_start": os.getloadavg()[0] if load_average_at_start is None else load_average_at_start,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
    }


def cpu_machine_description() -> dict[str, Any]:
    """Where a CPU figure was measured, without loading TensorFlow: CPU, cores, the load average
    when the measuring ended, Python's version."""
    return {"cpu": cpu_model_name(), "cpu_cores": os.cpu_count(), "load_average_1min_at_end": os.getloadavg()[0],
            "python": sys.version.split()[0]}


def has_gpu() -> bool:
    from components.keras_setup import tf

    return bool(tf.config.list_physical_devices("GPU"))


def progress(message: str) -> None:
    """One line on stderr per measurement, so a long run shows where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def steady_rate(units_per_epoch: float, epoch_seconds: Sequence[float]) -> float:
    """Units per second in steady state: the first epoch (tracing, autotuning) is left out and the
    median of the others taken, because on a shared machine a neighbour's burst can double one
    epoch's time, which a mean would charge to whichever side happened to be running."""
    return units_per_epoch / median(epoch_seconds[1:])


def write_result(path: str, result: dict[str, Any]) -> None:
    """Prints the result as JSON and writes it to `path` (atomically)."""
    text = json.dumps(result, indent=2, default=float)
    print(text)
    atomic.write_text(path, text + "\n")
