"""Every benchmarks/*.py script still runs: each in its --tiny mode, in a subprocess, writing its JSON.

The scripts run side by side (most of their time is TensorFlow start-up and tracing, one core
each). Nothing is timed here: speed figures belong to BENCHMARKS.md.
"""

import json
import math
import os
import subprocess
import sys

import pytest

import docker_image

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_DIR = os.path.join(REPOSITORY_ROOT, "benchmarks")
HELPER_MODULES = {"common.py", "throughput.py"}
# Optional code paths a script only takes with a flag, exercised here too.
EXTRA_ARGUMENTS = {"cpu_efficiency": ["--explore"]}
SCRIPT_TIMEOUT_SECONDS = 600
# Scripts that run containers of the project image (the `local_image` fixture builds it).
IMAGE_SCRIPTS = {"containers"}

SCRIPTS = sorted(name[:-3] for name in os.listdir(BENCHMARKS_DIR) if name.endswith(".py") and name not in HELPER_MODULES)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, request):
    """Starts every script with --tiny at once; returns {name: (exit code, output, JSON path)}.

    containers.py measures the project image, so it starts once the image is built (the other
    scripts run meanwhile); without a Docker engine it runs anyway and reports why it skipped.
    """
    output_dir = tmp_path_factory.mktemp("benchmarks")
    processes = {name: start_tiny_run(name, output_dir) for name in SCRIPTS if name not in IMAGE_SCRIPTS}
    try:
        if not docker_image.missing_requirement():
            request.getfixturevalue("local_image")
    except BaseException:  # a failed image build: leave no script running behind the error
        for process, log, _ in processes.values():
            process.kill()
            process.wait()
            log.close()
        raise
    processes |= {name: start_tiny_run(name, output_dir) for name in IMAGE_SCRIPTS}
    return {name: finish_tiny_run(*started) for name, started in processes.items()}


def start_tiny_run(name: str, output_dir):
    """The script's --tiny process, its log file and its JSON path."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    json_path = output_dir / f"{name}.json"
    command = [sys.executable, os.path.join(BENCHMARKS_DIR, f"{name}.py"), "--tiny", "--output", str(json_path), *EXTRA_ARGUMENTS.get(name, [])]
    log = open(output_dir / f"{name}.log", "w+")
    return subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT), log, json_path


def finish_tiny_run(process, log, json_path):
    """(exit code, output, JSON path) once the process ends (killed after SCRIPT_TIMEOUT_SECONDS)."""
    try:
        process.wait(timeout=SCRIPT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.seek(0)
    output = log.read()
    log.close()
    return process.returncode, output, json_path


def test_every_benchmark_has_a_script():
    assert set(SCRIPTS) >= {"input_pipeline", "cpu_efficiency", "recipes", "pipeline_overhead", "gpu"}


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_tiny_run_exits_zero_and_writes_its_json(tiny_runs, name):
    returncode, output, json_path = tiny_runs[name]
    assert returncode == 0, f"{name}.py --tiny exited {returncode}:\n{output[-3000:]}"
    result = json.loads(json_path.read_text())
    assert result["benchmark"] == name
    assert result["tiny"] is True
    assert isinstance(result["ratio"], (int, float))
    assert result["machine"]["cpu_cores"] >= 1
    if name == "gpu":  # the GPU machines have no TensorFlow
        assert result["tensorflow_imported"] is False
    if name in IMAGE_SCRIPTS and not docker_image.missing_requirement():
        assert "skipped" not in result, f"{name}.py skipped with a Docker engine here: {result['skipped']}"
        assert math.isfinite(result["ratio"])
