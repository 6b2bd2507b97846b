"""Every cluster command through the `cnnpipe` entry point, against the loopback KFP server.

tests/test_cluster.py checks the functions; these check what a user types and reads: the
printed lines, the exit code, and that nothing ends in a traceback.
"""

import pytest

from pipeline.cli import main
from tests.kfp_fake_server import FakeKfpServer, failing_script, successful_script
from tests.test_cluster import package_path, no_inherited_kfp_settings  # noqa: F401  (fixtures)


@pytest.fixture
def server():
    with FakeKfpServer() as fake:
        yield fake


def cnnpipe(capsys, *args):
    """Runs `cnnpipe ARGS` in this process; returns (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_submit_prints_the_run_and_its_link(server, package_path, capsys):
    code, out, err = cnnpipe(capsys, "submit", "--host", server.host, "--package", package_path,
                             "--param", "epochs=2", "--pipeline-root", "gs://bucket/root")
    assert code == 0 and err == ""
    (run_id,) = server.runs
    assert run_id in out and f"{server.host}/#/runs/details/{run_id}" in out
    (create,) = server.requests_to("POST", "/runs")
    assert create.body["runtime_config"]["parameters"] == {"epochs": 2}


@pytest.mark.parametrize("flag, value, parameter, expected", [("--workers", "4", "workers", 4),
                                                               ("--backend", "jax", "backend", "jax")])
def test_submit_flags_set_their_pipeline_parameters(server, tmp_path, capsys, flag, value, parameter, expected):
    from kfp import compiler

    from pipeline.pipeline import build_pipeline
    from pipeline.placement import Placement

    package = str(tmp_path / "pipeline.yaml")
    compiler.Compiler().compile(build_pipeline(Placement(image="example.com/cnnpipe:1")), package)
    code, _, _ = cnnpipe(capsys, "submit", "--host", server.host, "--package", package,
                         "--pipeline-root", "gs://bucket/root", flag, value)
    assert code == 0
    (create,) = server.requests_to("POST", "/runs")
    assert create.body["runtime_config"]["parameters"][parameter] == expected


def test_submit_wait_prints_each_task_state_and_succeeds(server, package_path, capsys):
    server.run_script = successful_script(("prep", "train"))
    code, out, _ = cnnpipe(capsys, "submit", "--host", server.host, "--package", package_path,
                           "--pipeline-root", "gs://bucket/root", "--wait", "--poll-seconds", "0.01")
    assert code == 0
    states = [line.split()[1:] for line in out.splitlines() if line.startswith("  ")]
    assert states == [["prep", "RUNNING"], ["prep", "SUCCEEDED"], ["train", "RUNNING"], ["train", "SUCCEEDED"]]
    assert "SUCCEEDED" in out.splitlines()[-1]


def test_submit_wait_on_a_failed_run_exits_non_zero_naming_the_task(server, package_path, capsys):
    server.run_script = failing_script("train", "OOMKilled: container exceeded memory")
    code, _, err = cnnpipe(capsys, "submit", "--host", server.host, "--package", package_path,
                           "--pipeline-root", "gs://bucket/root", "--wait", "--poll-seconds", "0.01")
    assert code == 1
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert err.startswith("error: ") and "task 'train' failed: OOMKilled" in err


def test_schedule_create_update_list_and_delete(server, package_path, capsys):
    code, out, _ = cnnpipe(capsys, "schedule", "--host", server.host, "--package", package_path,
                           "--name", "nightly", "--cron", "0 0 2 * * *", "--pipeline-root", "gs://b/r")
    assert code == 0 and "nightly" in out
    first_version = next(iter(server.recurring_runs.values()))["pipeline_version_reference"]["pipeline_version_id"]

    code, out, _ = cnnpipe(capsys, "schedule", "--host", server.host, "--package", package_path,
                           "--name", "nightly", "--cron", "0 30 3 * * *", "--pipeline-root", "gs://b/r")
    assert code == 0
    (schedule,) = server.recurring_runs.values()  # replaced, not added
    assert schedule["trigger"]["cron_schedule"]["cron"] == "0 30 3 * * *"
    assert schedule["pipeline_version_reference"]["pipeline_version_id"] != first_version

    code, out, err = cnnpipe(capsys, "schedule", "--host", server.host, "--list")
    assert code == 0 and err == ""
    (line,) = out.strip().splitlines()
    assert line.split()[:5] == ["nightly", "0", "30", "3", "*"] and "enabled" in line

    code, out, _ = cnnpipe(capsys, "schedule", "--host", server.host, "--delete", "nightly")
    assert code == 0 and "deleted schedule 'nightly'" in out and not server.recurring_runs


def test_schedule_list_without_schedules_says_so_once(server, capsys):
    code, out, _ = cnnpipe(capsys, "schedule", "--host", server.host, "--list")
    assert code == 0 and out == "no schedules\n"


def test_deleting_an_unknown_schedule_is_one_line(server, capsys):
    code, out, err = cnnpipe(capsys, "schedule", "--host", server.host, "--delete", "nightly")
    assert code == 1
    assert err.count("\n") == 1 and "no schedule named 'nightly'" in err


def test_submit_wait_timeout_exits_non_zero_saying_the_run_keeps_going(server, package_path, capsys):
    server.run_script = [("RUNNING", [{"display_name": "train", "state": "RUNNING"}])]
    code, _, err = cnnpipe(capsys, "submit", "--host", server.host, "--package", package_path,
                           "--pipeline-root", "gs://bucket/root", "--wait", "--poll-seconds", "0.01",
                           "--timeout", "0.2")
    assert code == 1
    (run_id,) = server.runs
    assert err == (f"error: run {run_id} still RUNNING after 0.2 s (--timeout); it keeps running, "
                   f"follow it at {server.host}/#/runs/details/{run_id}\n")


@pytest.mark.parametrize("flags, problem", [
    (("--poll-seconds", "0"), "--poll-seconds must be a number > 0, got 0.0"),
    (("--poll-seconds", "0.01", "--timeout", "-5"), "--timeout must be a number > 0, got -5.0"),
])
def test_submit_refuses_a_zero_poll_interval_and_a_negative_timeout(server, package_path, capsys, flags, problem):
    code, _, err = cnnpipe(capsys, "submit", "--host", server.host, "--package", package_path, "--wait", *flags)
    assert code == 2 and err.startswith(f"error: {problem}") and err.count("\n") == 1
    assert server.requests == []


def test_namespace_flag_reaches_a_multi_user_backend(package_path, capsys):
    with FakeKfpServer(multi_user=True) as server:
        code, _, err = cnnpipe(capsys, "submit", "--host", server.host, "--package", package_path)
        assert code == 2 and "pass --namespace" in err
        code, _, _ = cnnpipe(capsys, "submit", "--host", server.host, "--package", package_path,
                             "--namespace", "team-a")
        assert code == 0
        assert [experiment["namespace"] for experiment in server.experiments.values()] == ["team-a"]
        code, out, _ = cnnpipe(capsys, "schedule", "--host", server.host, "--package", package_path,
                               "--namespace", "team-a", "--name", "nightly", "--cron", "0 0 2 * * *")
        assert code == 0
        code, out, _ = cnnpipe(capsys, "schedule", "--host", server.host, "--namespace", "team-a", "--list")
        assert code == 0 and out.startswith("nightly ")


def test_schedule_refuses_an_unknown_model_before_uploading(server, tmp_path, capsys):
    from kfp import compiler

    from pipeline.pipeline import build_pipeline
    from pipeline.placement import Placement

    package = str(tmp_path / "pipeline.yaml")
    compiler.Compiler().compile(build_pipeline(Placement(image="example.com/cnnpipe:1")), package)
    code, _, err = cnnpipe(capsys, "schedule", "--host", server.host, "--package", package, "--name", "nightly",
                           "--cron", "0 0 2 * * *", "--param", "models=resnet20_v1,resnet21")
    assert code == 2 and err.startswith("error: unknown model 'resnet21'; choose one of:")
    assert server.requests == []
