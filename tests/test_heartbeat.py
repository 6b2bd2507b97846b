"""components.heartbeat: workers on the cluster stop when the train task that launched them is gone.

Real processes throughout: the launcher is `pipeline.launch.train_on_jobset` in a process of its
own (killed with SIGKILL, so nothing of its cleanup runs), the heartbeat lives in the GCS
emulator, the JobSet in the loopback Kubernetes server, and the workers are processes started
with the environment of the pod template the launcher created.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from components import heartbeat, storage
from components.errors import USER_ERROR_EXIT_CODE, UserError, reported_user_error
from tests.k8s_fake_server import FakeKubernetesServer, running, write_kubeconfig

IMAGE = "registry.example.com/cnnpipe:1.0"
# Short enough for a test, long enough that a loaded machine renews in time (seconds).
TIMEOUT_SECONDS = 2.0
# What a worker pod runs, with the training replaced by a wait: the watch is what is under test.
WAITING_WORKER = "from components import heartbeat; heartbeat.watch_launcher(); import time; time.sleep(300)"


class Clock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_heartbeat_is_stale_only_after_the_timeout_without_a_renewal_by_the_workers_own_clock(tmp_path):
    uri = str(tmp_path / heartbeat.HEARTBEAT_FILE)
    launcher = heartbeat.LauncherHeartbeat(uri, timeout_seconds=10)
    launcher.beat()
    clock = Clock()
    watch = heartbeat.HeartbeatWatch(uri, timeout_seconds=10, clock=clock)
    assert not watch.check()
    clock.now += 9
    assert not watch.check()
    launcher.beat()  # renewed: the timeout starts again when the watch sees it
    clock.now += 2
    assert not watch.check()
    clock.now += 9
    assert not watch.check()
    clock.now += 2
    assert watch.check()  # 11 s since the renewal was seen


def test_a_missing_heartbeat_is_stale_after_the_timeout_too(tmp_path):
    clock = Clock()
    watch = heartbeat.HeartbeatWatch(str(tmp_path / "never-written.json"), timeout_seconds=5, clock=clock)
    assert not watch.check()
    clock.now += 6
    assert watch.check()


def test_a_storage_outage_never_stops_the_workers(gcs_emulator, monkeypatch):
    monkeypatch.setenv(storage.RETRY_SECONDS_ENVIRONMENT_VARIABLE, "0.5")
    uri = gcs_emulator.url("checkpoints/run-1/lenet5/" + heartbeat.HEARTBEAT_FILE)
    heartbeat.LauncherHeartbeat(uri, timeout_seconds=10).beat()
    clock = Clock()
    watch = heartbeat.HeartbeatWatch(uri, timeout_seconds=10, clock=clock)
    assert not watch.check()
    clock.now += 9
    gcs_emulator.stop()
    try:
        assert not watch.check()  # unreadable: says nothing about the launcher
    finally:
        gcs_emulator.start()
    clock.now += 9  # 18 s since the last renewal, 9 s since the outage
    assert not watch.check()
    clock.now += 2
    assert watch.check()


def test_the_timeout_comes_from_the_environment_and_a_bad_one_is_one_line():
    assert heartbeat.timeout_from_environment({}) == heartbeat.TIMEOUT_SECONDS == 300
    assert heartbeat.timeout_from_environment({heartbeat.TIMEOUT_VARIABLE: "42.5"}) == 42.5
    for bad, shown in (("0", "0.0"), ("-3", "-3.0"), ("five", "'five'"), ("inf", "inf"), ("nan", "nan")):
        with pytest.raises(UserError) as raised:
            heartbeat.timeout_from_environment({heartbeat.TIMEOUT_VARIABLE: bad})
        assert str(raised.value) == (f"CNNPIPE_LAUNCHER_TIMEOUT_SECONDS must be a number > 0, got {shown}; "
                                     f"give seconds, e.g. 300 (the default)")
    launcher = heartbeat.LauncherHeartbeat("gs://bucket/run/" + heartbeat.HEARTBEAT_FILE, timeout_seconds=300)
    assert launcher.renew_seconds == 60
    assert launcher.worker_environment() == {"CNNPIPE_LAUNCHER_HEARTBEAT": "gs://bucket/run/launcher-heartbeat.json",
                                             "CNNPIPE_LAUNCHER_TIMEOUT_SECONDS": "300"}
    assert heartbeat.watch_launcher({}) is None  # local runs: no watch


def train_worker(tmp_path, environment, timeout=300):
    """The real worker command of a train task, on a dataset that does not exist."""
    return subprocess.run(
        [sys.executable, "-m", "components.train_worker", "--dataset", str(tmp_path / "absent"), "--model", "lenet5",
         "--output", str(tmp_path / "model"), "--config", "{}"],
        env={**os.environ, **environment}, capture_output=True, text=True, timeout=timeout)


def test_a_train_worker_whose_launcher_stopped_renewing_exits_with_the_launcher_gone_code(tmp_path):
    launcher = heartbeat.LauncherHeartbeat(str(tmp_path / heartbeat.HEARTBEAT_FILE), timeout_seconds=0.5)
    launcher.beat()  # and never again: the launcher was killed
    started = time.monotonic()
    worker = train_worker(tmp_path, launcher.worker_environment())
    # It stops while TensorFlow is still being imported, long before it would find the dataset missing.
    assert worker.returncode == heartbeat.LAUNCHER_GONE_EXIT_CODE, worker.stderr
    assert time.monotonic() - started < 30
    last_line = worker.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"the launcher's heartbeat {launcher.uri} was not renewed for ")
    assert last_line.endswith("(the train task that started these workers is gone): stopping with exit code 69")
    assert reported_user_error(last_line) is None  # not mistaken for a user mistake by the log follower


def test_a_live_launcher_never_stops_a_train_worker(tmp_path):
    # The worker runs for several timeouts (TensorFlow's import alone), then stops on its own mistake.
    with heartbeat.LauncherHeartbeat(str(tmp_path / heartbeat.HEARTBEAT_FILE), timeout_seconds=1.0) as launcher:
        worker = train_worker(tmp_path, launcher.worker_environment())
    assert worker.returncode == USER_ERROR_EXIT_CODE, worker.stderr
    assert reported_user_error(worker.stderr.strip().splitlines()[-1]).startswith("no manifest.json in")
    assert not os.path.exists(launcher.uri)  # removed when the launcher is done


LAUNCHER = textwrap.dedent("""
    import json, sys
    from components.recipe import TrainConfig
    from pipeline.launch import train_on_jobset
    checkpoint_dir, placement = sys.argv[1:]
    train_on_jobset(2, "gs://datasets/digits", "lenet5", TrainConfig(epochs=2), checkpoint_dir=checkpoint_dir,
                    tensorboard_dir=None, run_id="run-1", cluster_placement=placement, holder="run-1")
""")


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds:g} s")
        time.sleep(0.05)


def test_killing_the_launcher_stops_its_workers_and_fails_their_jobset_by_its_rule(gcs_emulator, tmp_path,
                                                                                   monkeypatch):
    from pipeline.jobset_spec import FINISHED_TTL_SECONDS, worker_pod_settings
    from pipeline.placement import Placement

    checkpoint_dir = gcs_emulator.url("checkpoints/run-1/lenet5")
    placement = json.dumps(worker_pod_settings(Placement(image=IMAGE)))
    with FakeKubernetesServer(status_script=[running()]) as server:
        write_kubeconfig(tmp_path / "kubeconfig", server, "kubeflow")
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv(heartbeat.TIMEOUT_VARIABLE, f"{TIMEOUT_SECONDS:g}")  # set on the train task
        launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, checkpoint_dir, placement],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        workers = []
        try:
            wait_for(lambda: server.jobsets, 60, "the launcher's JobSet")
            ((namespace, name), jobset) = next(iter(server.jobsets.items()))
            assert namespace == "cnnpipe-workers" and "ownerReferences" not in jobset["metadata"]
            assert jobset["spec"]["ttlSecondsAfterFinished"] == FINISHED_TTL_SECONDS
            (container,) = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"]
            pod_environment = {variable["name"]: variable["value"] for variable in container["env"]}
            assert pod_environment[heartbeat.HEARTBEAT_VARIABLE] == storage.join(checkpoint_dir, heartbeat.HEARTBEAT_FILE)
            assert pod_environment[heartbeat.TIMEOUT_VARIABLE] == "2"
            # The pods as the JobSet runs them: the pod command's wrapper, the pod's environment.
            workers = [subprocess.Popen([sys.executable, "-m", "components.workers", sys.executable, "-c",
                                         WAITING_WORKER],
                                        env={**os.environ, **pod_environment, "JOB_COMPLETION_INDEX": str(index)},
                                        stderr=subprocess.PIPE, text=True)
                       for index in range(2)]

            time.sleep(3 * TIMEOUT_SECONDS)  # a live launcher: the watch never fires
            assert [worker.poll() for worker in workers] == [None, None]
            assert launcher.poll() is None

            launcher.send_signal(signal.SIGKILL)  # no cleanup of any kind runs
            killed = time.monotonic()
            codes = [worker.wait(timeout=60) for worker in workers]
            stopped_after = time.monotonic() - killed
        finally:
            for process in [launcher, *workers]:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert codes == [heartbeat.LAUNCHER_GONE_EXIT_CODE] * 2
        # Within the timeout (plus one check and one renewal interval) of the last renewal.
        assert stopped_after < TIMEOUT_SECONDS * (1 + heartbeat.CHECK_FRACTION + heartbeat.RENEW_FRACTION) + 5
        assert "was not renewed for" in workers[0].stderr.read()
        # As the Job and JobSet controllers decide on the chief's exit code: failed by the rule, not restarted.
        status = server.worker_exited(namespace, name, worker=0, exit_code=codes[0])
    (failed,) = status["conditions"]
    assert (failed["type"], failed["reason"]) == ("Failed", "FailureRuleMatched")
    assert "exit code 69 matching FailJob rule" in failed["message"] and status["restarts"] == 0
    assert storage.exists(storage.join(checkpoint_dir, heartbeat.HEARTBEAT_FILE))  # a SIGKILL removes nothing
