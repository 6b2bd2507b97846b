"""One model trained by two real worker processes talking over 127.0.0.1 (MultiWorkerMirroredStrategy).

Both workers finish with identical weights, only the chief writes the model and records, and a
run whose worker is killed resumes from the chief's last checkpoint.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from components import storage
from components.checkpoints import load as load_checkpoint
from components.workers import run_local_workers
from tests.test_train import write_dataset

pytestmark = pytest.mark.slow

CONFIG = {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "seed": 1, "schedule": "cosine", "warmup_epochs": 1}
# The killed run's length: the worker is killed as soon as the first checkpoint is there, and the
# run still has seconds of epochs to go (each a fraction of a second once traced), so the kill
# lands mid-run; the rerun trains the rest.
KILLED_RUN_EPOCHS = 30


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("multiworker") / "dataset", train_count=30)


def test_two_workers_train_one_model_with_identical_weights(dataset, tmp_path):
    output_dir, weights_dir = tmp_path / "output", tmp_path / "weights"
    script = textwrap.dedent(f"""
        import json, os
        import numpy as np
        from components.keras_setup import keras
        from components.recipe import TrainConfig
        from components.train import train

        class SaveFinalWeights(keras.callbacks.Callback):
            def on_train_end(self, logs=None):
                index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
                np.savez({str(weights_dir)!r} + f"/worker-{{index}}.npz", *self.model.get_weights())

        os.makedirs({str(weights_dir)!r}, exist_ok=True)
        train({dataset!r}, "lenet5", {str(output_dir)!r}, TrainConfig(**{CONFIG!r}),
              checkpoint_dir={str(tmp_path / "checkpoints")!r}, callbacks=[SaveFinalWeights()])
    """)
    run_local_workers(2, [sys.executable, "-c", script], log_dir=str(tmp_path / "logs"))

    chief, other = (np.load(weights_dir / f"worker-{index}.npz") for index in (0, 1))
    assert len(chief.files) == len(other.files) > 0
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], other[name])
    # One model and one set of records, written by the chief; 30 images at a global batch of 8
    # are 4 synchronous steps an epoch, each worker taking 4 images of every batch.
    assert sorted(os.listdir(output_dir)) == ["history.csv", "model.keras", "train_result.json"]
    result = storage.read_json(str(output_dir / "train_result.json"))
    assert result["workers"] == 2 and result["epochs"] == 3 and result["optimizer_steps"] == 12
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".output-scratch")]


def test_a_run_whose_worker_is_killed_resumes_from_the_chiefs_checkpoint(dataset, tmp_path):
    checkpoint_dir, output_dir = tmp_path / "checkpoints", tmp_path / "output"
    config = dict(CONFIG, epochs=KILLED_RUN_EPOCHS)
    command = [sys.executable, "-m", "pipeline.cli", "component", "train", "--dataset", dataset, "--model", "lenet5",
               "--output", str(output_dir), "--config", json.dumps(config),
               "--checkpoint-dir", str(checkpoint_dir), "--workers", "2"]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while (load_checkpoint(str(checkpoint_dir)) or {}).get("epoch", 0) < 1:
            assert launcher.poll() is None, launcher.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.1)
        other_worker = worker_pids(launcher.pid)[1]
        os.kill(other_worker, signal.SIGKILL)
        output, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1 and "worker 1" in output
    killed_at = load_checkpoint(str(checkpoint_dir))["epoch"]
    assert 1 <= killed_at < KILLED_RUN_EPOCHS and not (output_dir / "train_result.json").exists()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    result = storage.read_json(str(output_dir / "train_result.json"))
    assert result["resumed_from_epoch"] >= killed_at and result["epochs"] == KILLED_RUN_EPOCHS and result["workers"] == 2
    assert result["optimizer_steps"] == KILLED_RUN_EPOCHS * 4


def worker_pids(launcher_pid: int) -> list[int]:
    """The launcher's worker processes, in start order (worker 0 first)."""
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(launcher_pid), "--sort=start_time"],
                              capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in children]
