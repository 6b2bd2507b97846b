"""Checkpoint pushes to gs:// (the real emulator) after a preemption between two uploads."""

import time

import numpy as np
import pytest

from components import checkpoints, storage
from components.errors import UserError
from components.keras_setup import keras


def tiny_model(value: float):
    """A one-layer model whose weights are all `value` (so two attempts' files differ)."""
    constant = keras.initializers.Constant(value)
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer=constant,
                                                                   bias_initializer=constant)])


def state_for(epoch: int) -> dict:
    return {"epoch": epoch, "format_version": checkpoints.FORMAT_VERSION, "fingerprint": "f", "history": []}


def test_a_new_attempt_never_reuses_an_earlier_attempts_upload(gcs_emulator, tmp_path, monkeypatch):
    remote = gcs_emulator.url("run/model")
    # Attempt A finished epoch 1 properly, then saved epoch 2 and was preempted after uploading
    # the model file, before state.json.
    monkeypatch.setattr(checkpoints, "ATTEMPT", "aaaaaa")
    first = checkpoints.save(str(tmp_path / "a"), tiny_model(1.0), state_for(1), is_best=True)
    checkpoints.push(str(tmp_path / "a"), remote, first)
    second = checkpoints.save(str(tmp_path / "a"), tiny_model(2.0), state_for(2), is_best=True)
    storage.upload(str(tmp_path / "a" / second["checkpoint"]), storage.join(remote, second["checkpoint"]))

    # Attempt B resumes after epoch 1, trains epoch 2 again (other weights) and pushes it.
    monkeypatch.setattr(checkpoints, "ATTEMPT", "bbbbbb")
    checkpoints.pull(remote, str(tmp_path / "b"))
    assert checkpoints.load(str(tmp_path / "b"))["epoch"] == 1
    retrained = checkpoints.save(str(tmp_path / "b"), tiny_model(3.0), state_for(2), is_best=True)
    checkpoints.push(str(tmp_path / "b"), remote, retrained)

    # The remote state names B's weights, and A's stray upload is gone.
    checkpoints.pull(remote, str(tmp_path / "check"))
    state = checkpoints.load(str(tmp_path / "check"))
    assert state["checkpoint"] == "epoch-0002-bbbbbb.keras"
    restored = keras.models.load_model(state["checkpoint_path"])
    assert all(np.all(weights == 3.0) for weights in restored.get_weights())
    assert sorted(storage.list_files(remote)) == sorted(
        {"state.json", "epoch-0002-bbbbbb.keras", "best-0002-bbbbbb.keras"})


# ---- one run at a time per checkpoint location -------------------------------------------
@pytest.fixture(params=["gcs", "local"])
def location(request, tmp_path):
    if request.param == "gcs":
        return request.getfixturevalue("gcs_emulator").url("run/model")
    return str(tmp_path / "run" / "model")


def test_a_second_run_with_a_live_run_name_stops_naming_the_first(location):
    with checkpoints.Lease(location, "pipeline-run-A"):
        with pytest.raises(UserError) as raised:
            checkpoints.Lease(location, "pipeline-run-B").claim()
        message = str(raised.value)
        assert message.startswith(f"run pipeline-run-A is training into {location} (its lease was renewed ")
        assert message.endswith("give this run another run_name, or wait until that one ends")
        # A retry of the same run takes its lease back at once.
        checkpoints.Lease(location, "pipeline-run-A").claim()
    # Released at the end: the next run may start.
    with checkpoints.Lease(location, "pipeline-run-B"):
        assert storage.read_json(storage.join(location, "lease.json"))["holder"] == "pipeline-run-B"
    assert not storage.exists(storage.join(location, "lease.json"))


def test_a_lease_left_by_a_run_that_is_gone_expires(gcs_emulator):
    location = gcs_emulator.url("run/model")  # a local lease has a lock instead (below)
    storage.write_json(storage.join(location, "lease.json"), {"holder": "killed-run", "renewed_at": time.time() - 30})
    with pytest.raises(UserError, match="run killed-run is training"):
        checkpoints.Lease(location, "new-run").claim()
    checkpoints.Lease(location, "new-run", lease_seconds=20).claim()  # 30 s without renewal: gone
    assert storage.read_json(storage.join(location, "lease.json"))["holder"] == "new-run"


def test_a_held_lease_is_renewed_while_the_run_trains(location):
    with checkpoints.Lease(location, "run-A", renew_seconds=0.05):
        first = storage.read_json(storage.join(location, "lease.json"))["renewed_at"]
        time.sleep(0.5)
        assert storage.read_json(storage.join(location, "lease.json"))["renewed_at"] > first


def test_the_lease_of_a_local_run_whose_process_ended_is_taken_over_at_once(location):
    import socket
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = f"{socket.gethostname()}:{int(ended.stdout)}"
    storage.write_json(storage.join(location, "lease.json"), {"holder": holder, "renewed_at": time.time()})
    checkpoints.Lease(location, checkpoints.default_holder()).claim()
    assert storage.read_json(storage.join(location, "lease.json"))["holder"] == checkpoints.default_holder()


def test_a_local_lease_is_held_by_a_live_process_lock_and_free_once_it_ends(tmp_path):
    """Locally the holder keeps .lease.lock locked: a run in another process (or a container sharing
    the folder, with a host name and process ids of its own) blocks a second run while it lives,
    and its lease is taken over at once after it is killed, however fresh its lease.json."""
    import signal
    import subprocess
    import sys

    location = str(tmp_path / "run" / "model")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from components import checkpoints\n"
         f"with checkpoints.Lease({location!r}, 'container-a:1'):\n"
         "    print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="run container-a:1 is training into"):
            checkpoints.Lease(location, "container-b:1").claim()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert storage.read_json(storage.join(location, "lease.json"))["holder"] == "container-a:1"  # left fresh
    with checkpoints.Lease(location, "container-b:1"):
        assert storage.read_json(storage.join(location, "lease.json"))["holder"] == "container-b:1"


def test_a_local_claim_that_fails_keeps_no_lock(tmp_path):
    """A claim that raises (here: a lease.json that is not JSON) lets go of .lease.lock, so the
    process that failed does not keep other runs from taking the location over."""
    import fcntl
    import os

    location = str(tmp_path / "run" / "model")
    os.makedirs(location)
    with open(os.path.join(location, "lease.json"), "w") as lease:
        lease.write("not json")
    with pytest.raises(ValueError):
        checkpoints.Lease(location, "run-a").claim()
    with open(os.path.join(location, checkpoints.LEASE_LOCK_FILE), "a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError while held
