"""Every benchmarks/*.py script still runs: each in its --tiny mode, in a subprocess, writing its JSON.

The scripts run side by side (most of their time is TensorFlow start-up and tracing, one core
each) so the whole file stays around two minutes. Nothing is timed here: speed figures belong
to BENCHMARKS.md.
"""

import json
import os
import subprocess
import sys

import pytest

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_DIR = os.path.join(REPOSITORY_ROOT, "benchmarks")
HELPER_MODULES = {"common.py", "throughput.py"}
# Optional code paths a script only takes with a flag, exercised here too.
EXTRA_ARGUMENTS = {"cpu_efficiency": ["--explore"]}
SCRIPT_TIMEOUT_SECONDS = 600

SCRIPTS = sorted(name[:-3] for name in os.listdir(BENCHMARKS_DIR) if name.endswith(".py") and name not in HELPER_MODULES)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Starts every script with --tiny at once; returns {name: (exit code, output, JSON path)}."""
    output_dir = tmp_path_factory.mktemp("benchmarks")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    processes = {}
    for name in SCRIPTS:
        json_path = output_dir / f"{name}.json"
        command = [sys.executable, os.path.join(BENCHMARKS_DIR, f"{name}.py"), "--tiny", "--output", str(json_path), *EXTRA_ARGUMENTS.get(name, [])]
        log = open(output_dir / f"{name}.log", "w+")
        processes[name] = (subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT), log, json_path)
    runs = {}
    for name, (process, log, json_path) in processes.items():
        try:
            process.wait(timeout=SCRIPT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        runs[name] = (process.returncode, log.read(), json_path)
        log.close()
    return runs


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
