"""Collectives between two real worker processes on 127.0.0.1: a hung peer ends the attempt
within the collective timeout, and workers that pulled different checkpoints refuse to train."""

import sys
import textwrap
import time

import pytest

from components.workers import run_local_workers

pytestmark = pytest.mark.slow


def run_two_workers(script: str, tmp_path, timeout_seconds: float = 4.0):
    """Runs `script` as workers 0 and 1; returns the error run_local_workers raised (or None)."""
    environment = {**__import__("os").environ, "CNNPIPE_COLLECTIVE_TIMEOUT_SECONDS": str(timeout_seconds)}
    try:
        run_local_workers(2, [sys.executable, "-c", textwrap.dedent(script)], env=environment,
                          log_dir=str(tmp_path / "logs"))
    except RuntimeError as error:
        return error
    return None


def test_a_hung_worker_ends_the_attempt_within_the_collective_timeout(tmp_path):
    script = """
        import time
        from components.distributed import distribution_strategy, worker_role
        from components.keras_setup import tf

        role = worker_role()
        strategy = distribution_strategy(role)
        all_reduce = tf.function(lambda: strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None))
        print("first all-reduce", float(all_reduce()), flush=True)
        if role.index == 1:
            time.sleep(600)  # alive but stuck: TensorFlow's health check sees nothing wrong
        all_reduce()
    """
    started = time.monotonic()
    error = run_two_workers(script, tmp_path, timeout_seconds=4.0)
    elapsed = time.monotonic() - started
    assert error is not None and "worker 0 of 2 (the chief)" in str(error)
    assert "DeadlineExceeded" in str(error) or "timed out" in str(error)
    assert "first all-reduce 2.0" in str(error)
    assert elapsed < 120  # not the 600 s the stuck worker sleeps


@pytest.mark.parametrize("epochs, agreed", [((3, 3), True), ((3, 4), False)])
def test_workers_resume_only_from_the_same_epoch(tmp_path, epochs, agreed):
    script = f"""
        from components.distributed import agreed_resume_epoch, distribution_strategy, worker_role

        role = worker_role()
        strategy = distribution_strategy(role)
        epoch = {epochs!r}[role.index]
        print("resuming after epoch", agreed_resume_epoch(strategy, role, epoch), flush=True)
    """
    error = run_two_workers(script, tmp_path)
    if agreed:
        assert error is None
    else:
        assert error is not None and "pulled different checkpoints" in str(error)
