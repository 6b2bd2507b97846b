"""The whole pipeline through the real KFP local runner, on tiny generated data."""

import json
import os

import pytest
import yaml
from kfp import compiler

from datagen import make_image_folder
from pipeline.cli import main
from pipeline.config import resolve
from pipeline.local_run import pipeline_arguments
from pipeline.pipeline import build_pipeline

pytestmark = pytest.mark.slow

MODELS = ["lenet5", "resnet20_v1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    make_image_folder(root / "shapes", classes=("circle", "square", "star"), per_class=(8, 4), size=(16, 16))
    output = root / "run"
    code = main([
        "run", "--dataset", str(root / "shapes"), "--models", ",".join(MODELS),
        "--epochs", "2", "--batch-size", "8", "--output", str(output),
    ])
    return code, output


def test_run_writes_report_summary_and_model_files(finished_run):
    code, output = finished_run
    assert code == 0
    for name in ("report.html", "report.md", "summary.json", "config.json"):
        assert (output / name).stat().st_size > 0, name
    summary = json.loads((output / "summary.json").read_text())
    assert summary["dataset"] == "shapes"
    assert summary["preset"] == "smoke"
    assert summary["num_classes"] == 3
    assert sorted(entry["name"] for entry in summary["models"]) == sorted(MODELS)
    for entry in summary["models"]:
        assert entry["epochs"] == 2
        assert 0.0 <= entry["test_accuracy"] <= 1.0
        assert entry["params"] > 0 and entry["train_seconds"] > 0
        assert (output / "models" / entry["name"] / "model.keras").stat().st_size > 0
        history = (output / "models" / entry["name"] / "history.csv").read_text().splitlines()
        assert len(history) == 1 + 2  # header + one row per epoch
    html = (output / "report.html").read_text()
    assert all(name in html for name in MODELS)


def test_run_config_records_resolved_values(finished_run):
    _, output = finished_run
    config = json.loads((output / "config.json").read_text())
    assert config["models"] == MODELS
    assert config["train"]["epochs"] == 2 and config["train"]["batch_size"] == 8
    assert config["checkpoint_root"] == str(output / "checkpoints")


def test_rerun_with_same_output_resumes_from_checkpoints(finished_run):
    """Asking for one more epoch with the same output trains only that epoch."""
    _, output = finished_run
    code = main([
        "run", "--dataset", str(output.parent / "shapes"), "--models", "lenet5",
        "--epochs", "3", "--batch-size", "8", "--output", str(output),
    ])
    assert code == 0
    history = (output / "models" / "lenet5" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3
    summary = json.loads((output / "summary.json").read_text())
    assert [entry["name"] for entry in summary["models"]] == ["lenet5"]
    assert summary["models"][0]["epochs"] == 3


def test_compiled_pipeline_exposes_the_run_parameters(tmp_path):
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build_pipeline(), str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    # What `cnnpipe run` passes is exactly what a cluster run can set with `submit --param`.
    assert set(parameters) == set(pipeline_arguments(resolve("smoke"), checkpoint_root="", run_name=""))
    assert {"dataset", "models", "train_config", "workers", "image_size", "tensorboard_root"} <= set(parameters)
    tasks = spec["root"]["dag"]["tasks"]
    assert {"prepare-data", "for-loop-1", "write-report"} <= set(tasks)


@pytest.mark.slow
def test_a_stopped_run_stops_its_tasks_and_the_same_command_resumes(tmp_path):
    """SIGTERM to `cnnpipe run` mid-training (a scheduler stopping it): no task process is left
    running, and the same command then resumes from the last completed epoch."""
    import signal
    import subprocess
    import sys
    import time

    from components.processes import descendant_processes

    output = tmp_path / "run"
    command = [sys.executable, "-m", "pipeline.cli", "run", "--models", "lenet5", "--output", str(output)]
    run = subprocess.Popen([*command, "--epochs", "400"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = output / "checkpoints" / "local" / "lenet5" / "state.json"
    deadline = time.monotonic() + 300
    while not state.exists():
        assert run.poll() is None, run.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    tasks = descendant_processes(run.pid)
    assert tasks, "the train task runs as a child process"
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 130
    time.sleep(0.5)
    assert not [pid for pid in tasks if os.path.exists(f"/proc/{pid}") and
                open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    stopped_at = json.loads(state.read_text())["epoch"]
    assert 1 <= stopped_at < 400

    again = subprocess.run([*command, "--epochs", str(stopped_at + 1)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    result = json.loads(next((output / "pipeline").rglob("train_result.json")).read_text())
    assert result["resumed_from_epoch"] == stopped_at and result["epochs"] == stopped_at + 1
