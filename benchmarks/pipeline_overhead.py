"""Pipeline overhead: what `cnnpipe run` costs beyond the training and evaluation compute.

wall      = seconds of the whole `cnnpipe run` command (smoke preset, the default: the bundled
            digits and its four models), as a child process started and awaited here.
compute   = sum over models of
              train_seconds (summary.json: the summed per-epoch seconds of fit, validation included)
            + evaluation seconds = test images / inference_images_per_second (the timed
              prediction pass of the evaluate step over the test split).
overhead  = wall - compute: interpreter and TensorFlow start-up of each step's process, the KFP
            local runner, data prep, model building and tracing, checkpoint writes, the report.
figure:   overhead seconds (target <= 20 s); the ratio compute / wall is reported beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import common
from common import median

NAME = "pipeline_overhead"


def add_arguments(parser) -> None:
    parser.add_argument("--run-arguments", default="", help="extra `cnnpipe run` flags, e.g. '--models lenet5' (default: none, the smoke preset)")


def run_pipeline(output_dir: str, extra_arguments: list[str]) -> float:
    """Runs `cnnpipe run --output output_dir ...` from the repository root; returns its wall seconds."""
    command = [sys.executable, "-m", "pipeline.cli", "run", "--output", output_dir, *extra_arguments]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=common.REPOSITORY_ROOT, capture_output=True, text=True)
    wall_seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"`{' '.join(command)}` failed with exit code {completed.returncode}:\n{tail}")
    return wall_seconds


def compute_seconds(summary: dict) -> dict:
    """Per-model train and evaluation compute seconds from summary.json (see the module docstring)."""
    test_images = int(summary["splits"]["test"])
    per_model = {}
    for model in summary["models"]:
        inference_speed = model.get("inference_images_per_second") or 0.0
        evaluation = test_images / inference_speed if inference_speed > 0 else 0.0
        per_model[model["name"]] = {"train_seconds": float(model["train_seconds"]), "evaluate_seconds": evaluation}
    return per_model


def measure_once(extra_arguments: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="cnnpipe-overhead-") as output_dir:
        wall = run_pipeline(output_dir, extra_arguments)
        with open(os.path.join(output_dir, "summary.json")) as handle:
            summary = json.load(handle)
    per_model = compute_seconds(summary)
    compute = sum(times["train_seconds"] + times["evaluate_seconds"] for times in per_model.values())
    return {"wall_seconds": wall, "compute_seconds": compute, "overhead_seconds": wall - compute, "per_model": per_model,
            "preset": summary.get("preset"), "dataset": summary.get("dataset")}


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    extra_arguments = arguments.run_arguments.split()
    if arguments.tiny:
        extra_arguments = ["--models", "lenet5", "--epochs", "1"]
    load_average_at_start = os.getloadavg()[0]
    runs = [measure_once(extra_arguments) for _ in range(arguments.repeats)]
    # Only now: this process holding TensorFlow while the pipeline ran made the runs ~8 s slower.
    machine = common.machine_description(load_average_at_start)
    result = {
        "benchmark": NAME,
        "tiny": arguments.tiny,
        "command": " ".join(["cnnpipe", "run", "--output", "DIR", *extra_arguments]),
        "repeats": arguments.repeats,
        "overhead_seconds": median([run["overhead_seconds"] for run in runs]),
        "wall_seconds": median([run["wall_seconds"] for run in runs]),
        "compute_seconds": median([run["compute_seconds"] for run in runs]),
        "compute_share": median([run["compute_seconds"] / run["wall_seconds"] for run in runs]),
        "target": "overhead_seconds <= 20",
        "runs": runs,
        "machine": machine,
    }
    result["ratio"] = result["compute_share"]
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
