"""components.workers with real worker processes on 127.0.0.1."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from components import workers
from components.errors import USER_ERROR_EXIT_CODE, UserError, reported_user_error

REPOSITORY = Path(__file__).resolve().parent.parent


def write_program(tmp_path, body: str) -> list[str]:
    """A small Python worker program; returns the argv that runs it."""
    path = tmp_path / "worker.py"
    path.write_text("import json, os, sys, time\n"
                    "config = json.loads(os.environ['TF_CONFIG'])\n"
                    "index = config['task']['index']\n" + textwrap.dedent(body))
    return [sys.executable, str(path)]


def process_is_gone(pid: int) -> bool:
    """True when no live process has this id (a zombie waiting to be reaped counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ---- TF_CONFIG and ports -------------------------------------------------------------------
def test_tf_config_lists_every_worker_and_this_task():
    config = json.loads(workers.tf_config(["a:1", "b:2"], 1))
    assert config == {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(ValueError, match="worker index must be in 0..1"):
        workers.tf_config(["a:1", "b:2"], 2)


def test_free_ports_are_distinct_and_bindable():
    ports = workers.free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        with workers.socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "2"])
def test_worker_count_must_be_a_whole_number_of_at_least_one(count):
    with pytest.raises(UserError, match=r"--workers must be an integer >= 1 \(1 = one process\), got " + re.escape(repr(count))):
        workers.run_local_workers(count, [sys.executable, "-c", "pass"])


# ---- local workers -------------------------------------------------------------------------
def test_chief_output_streams_to_stdout_and_the_others_go_to_logs(tmp_path, capfd):
    argv = write_program(tmp_path, """
        print('cnnpipe-progress ' + json.dumps({'task': 'train', 'phase': 'step', 'worker': index}))
        print('hosts', ','.join(config['cluster']['worker']))
    """)
    workers.run_local_workers(3, argv, log_dir=tmp_path / "logs")
    output = capfd.readouterr().out.splitlines()
    assert output[0] == 'cnnpipe-progress {"task": "train", "phase": "step", "worker": 0}'
    hosts = output[1].split()[1].split(",")
    assert len(hosts) == 3 and len(set(hosts)) == 3
    assert all(host.startswith("127.0.0.1:") for host in hosts)
    for index in (1, 2):
        log = (tmp_path / "logs" / f"worker-{index}.log").read_text().splitlines()
        assert log[0].endswith(f'"worker": {index}}}')
        assert log[1] == output[1]  # every worker sees the same cluster
    assert not (tmp_path / "logs" / "worker-0.log").exists()


def test_a_failed_worker_stops_the_others_and_is_named(tmp_path):
    argv = write_program(tmp_path, f"""
        open(os.path.join({str(tmp_path)!r}, f'pid-{{index}}'), 'w').write(str(os.getpid()))
        if index == 1:
            print('loading shard 3')
            print('shard 3 is corrupt', file=sys.stderr)
            sys.exit(3)
        time.sleep(600)  # the chief would wait forever for its lost peer
    """)
    started = time.monotonic()
    with pytest.raises(RuntimeError) as raised:
        workers.run_local_workers(2, argv)
    assert time.monotonic() - started < 60
    message = str(raised.value)
    assert message.startswith("worker 1 of 2 exited with code 3; its last lines:")
    assert message.endswith("loading shard 3\nshard 3 is corrupt")
    assert process_is_gone(int((tmp_path / "pid-0").read_text()))


def test_a_user_mistake_in_a_worker_is_a_one_line_user_error(tmp_path):
    argv = write_program(tmp_path, """
        print("error: unknown model 'resnet0'; run `cnnpipe models` for the list", flush=True)
        sys.exit(2)
    """)
    with pytest.raises(UserError) as raised:
        workers.run_local_workers(2, argv)
    assert str(raised.value) == "unknown model 'resnet0'; run `cnnpipe models` for the list"


def test_a_killed_chief_is_reported_with_its_signal(tmp_path, capfd):
    argv = write_program(tmp_path, """
        if index == 0:
            print('epoch 1 of 3', flush=True)
            os.kill(os.getpid(), 9)
        time.sleep(600)
    """)
    with pytest.raises(RuntimeError, match=r"worker 0 of 2 \(the chief\) was killed by SIGKILL; "
                                           r"its last lines:\nepoch 1 of 3$"):
        workers.run_local_workers(2, argv)
    assert "epoch 1 of 3" in capfd.readouterr().out


def test_stopping_the_launcher_leaves_no_worker_behind(tmp_path):
    argv = write_program(tmp_path, f"""
        open(os.path.join({str(tmp_path)!r}, f'pid-{{index}}'), 'w').write(str(os.getpid()))
        time.sleep(600)
    """)
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import sys; from components.workers import run_local_workers; "
                               f"run_local_workers(2, {argv!r})"],
        cwd=REPOSITORY, env=dict(os.environ, PYTHONPATH=str(REPOSITORY)))
    try:
        wait_for(lambda: all((tmp_path / f"pid-{index}").exists() for index in (0, 1))
                 and all((tmp_path / f"pid-{index}").read_text() for index in (0, 1)))
        pids = [int((tmp_path / f"pid-{index}").read_text()) for index in (0, 1)]
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) != 0
    finally:
        launcher.kill()
    wait_for(lambda: all(process_is_gone(pid) for pid in pids), seconds=10)


@pytest.mark.slow
def test_two_workers_all_reduce_with_multi_worker_mirrored_strategy(tmp_path, capfd):
    """The collective really runs here: two processes on 127.0.0.1 sum one value each."""
    argv = write_program(tmp_path, """
        import tensorflow as tf
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        total = strategy.reduce(tf.distribute.ReduceOp.SUM,
                                strategy.run(lambda: tf.constant(float(index + 1))), axis=None)
        print(f'worker {index} of {strategy.num_replicas_in_sync} sum {float(total)}')
    """)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    workers.run_local_workers(2, argv, env=environment, log_dir=tmp_path / "logs")
    assert "worker 0 of 2 sum 3.0" in capfd.readouterr().out.splitlines()
    assert "worker 1 of 2 sum 3.0" in (tmp_path / "logs" / "worker-1.log").read_text().splitlines()


# ---- workers in a JobSet -------------------------------------------------------------------
JOBSET_ENVIRONMENT = {"CNNPIPE_JOBSET_NAME": "train-resnet", "CNNPIPE_REPLICATED_JOB": "worker",
                      "CNNPIPE_WORKER_COUNT": "3", "CNNPIPE_WORKER_PORT": "2222", "JOB_COMPLETION_INDEX": "2"}


def test_tf_config_from_the_jobset_host_names():
    config = json.loads(workers.tf_config_from_jobset_environment(JOBSET_ENVIRONMENT))
    assert config["cluster"]["worker"] == [f"train-resnet-worker-0-{index}.train-resnet:2222" for index in range(3)]
    assert config["task"] == {"type": "worker", "index": 2}


def test_no_tf_config_outside_a_jobset_and_a_clear_error_for_a_broken_pod_template():
    assert workers.tf_config_from_jobset_environment({"JOB_COMPLETION_INDEX": "0"}) is None
    broken = {key: value for key, value in JOBSET_ENVIRONMENT.items() if key != "JOB_COMPLETION_INDEX"}
    with pytest.raises(RuntimeError, match="lacks the environment variables JOB_COMPLETION_INDEX"):
        workers.tf_config_from_jobset_environment(broken)


def test_jobset_entry_point_sets_tf_config_and_runs_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "components.workers", sys.executable, "-c",
         "import os; print(os.environ['TF_CONFIG'])"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPOSITORY), **JOBSET_ENVIRONMENT))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(workers.tf_config_from_jobset_environment(JOBSET_ENVIRONMENT))


def test_a_train_worker_reports_a_user_mistake_as_one_error_line(tmp_path):
    """The worker command the launchers start: a user mistake is one `error:` line and exit code 2,
    which run_local_workers and the JobSet's log follower read back."""
    worker = subprocess.run(
        [sys.executable, "-m", "components.train_worker", "--dataset", str(tmp_path / "absent"), "--model", "lenet5",
         "--output", str(tmp_path / "model"), "--config", "{}"],
        capture_output=True, text=True, timeout=300,
    )
    assert worker.returncode == USER_ERROR_EXIT_CODE
    (last_line,) = worker.stderr.strip().splitlines()[-1:]
    assert reported_user_error(last_line).startswith(f"no manifest.json in {tmp_path / 'absent'}")
