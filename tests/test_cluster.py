"""pipeline.cluster against a loopback KFP v2beta1 server, through the real kfp.Client."""

import json
import socket
import time

import pytest
import yaml
from kfp import compiler, dsl

from pipeline import cluster
from pipeline.placement import Placement, place_cpu_task, place_gpu_task
from components.errors import UserError
from tests.kfp_fake_server import FakeKfpServer, failing_script, successful_script
from tests.loopback_http import HANG

# Seconds between status calls in these tests: short, but not the refused 0.
POLL = 0.01


@dsl.component(base_image="python:3.11-slim")
def echo_step(text: str) -> str:
    """Stand-in step: returns its input."""
    return text


@dsl.pipeline(name="cluster-test")
def stand_in_pipeline(dataset: str = "digits", epochs: int = 1, models: list = ["lenet5"],
                      learning_rate: float = 0.01, augment: bool = True):
    """Prep then one GPU step, enough to carry every kind of parameter."""
    placement = Placement(image="example.com/cnnpipe:test")
    prep = place_cpu_task(echo_step(text=dataset), placement)
    place_gpu_task(echo_step(text=prep.output), placement)


@pytest.fixture(scope="module")
def package_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("package") / "pipeline.yaml"
    compiler.Compiler().compile(stand_in_pipeline, str(path))
    return str(path)


@pytest.fixture
def server():
    with FakeKfpServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def no_inherited_kfp_settings(monkeypatch, tmp_path):
    """Keeps a developer's token, UI endpoint or kfp context out of the tests."""
    for name in ("KFP_TOKEN", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def closed_port_url() -> str:
    """A loopback URL where nothing listens (bind, note the port, close)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---- submit ---------------------------------------------------------------------------
def test_submit_prints_run_id_and_link_and_sends_typed_params(server, package_path, capsys):
    submitted = cluster.submit(server.host, package_path,
                               params={"epochs": "3", "models": "lenet5,resnet20_v1",
                                       "learning_rate": "0.1", "augment": "false"},
                               experiment="nightly", pipeline_root="gs://bucket/root")
    output = capsys.readouterr().out
    assert submitted.run_id in output
    assert f"{server.host}/#/runs/details/{submitted.run_id}" in output
    assert submitted.state is None
    (create,) = server.requests_to("POST", "/runs")
    assert create.body["runtime_config"] == {
        "parameters": {"epochs": 3, "models": ["lenet5", "resnet20_v1"],
                       "learning_rate": 0.1, "augment": False},
        "pipeline_root": "gs://bucket/root"}
    # The compiled placement travels with the run: the platform spec holds the GPU node selector.
    platform = json.dumps(create.body["pipeline_spec"]["platform_spec"])
    assert "cloud.google.com/gke-accelerator" in platform
    assert create.body["service_account"] == "cnnpipe-runner"  # k8s/runner/serviceaccount.yaml
    experiment = server.experiments[create.body["experiment_id"]]
    assert experiment["display_name"] == "nightly"


def test_submit_wait_follows_run_to_success(server, package_path, capsys):
    server.run_script = successful_script(("prep", "train"))
    submitted = cluster.submit(server.host, package_path, wait=True, poll_seconds=POLL)
    output = capsys.readouterr().out
    assert submitted.state == "SUCCEEDED"
    lines = [line.split()[1:] for line in output.splitlines() if line.startswith("  ")]
    assert lines == [["prep", "RUNNING"], ["prep", "SUCCEEDED"],
                     ["train", "RUNNING"], ["train", "SUCCEEDED"]]
    assert f"run {submitted.run_id} SUCCEEDED" in output


def test_submit_wait_on_failed_run_names_the_task(server, package_path):
    server.run_script = failing_script("train", "OOMKilled:\ncontainer exceeded memory")
    with pytest.raises(cluster.ClusterError) as raised:
        cluster.submit(server.host, package_path, wait=True, poll_seconds=POLL)
    message = str(raised.value)
    assert "task 'train' failed: OOMKilled: container exceeded memory" in message
    assert "\n" not in message


def test_wait_for_run_gives_up_after_timeout(server, package_path):
    server.run_script = [("RUNNING", [{"display_name": "train", "state": "RUNNING"}])]
    submitted = cluster.submit(server.host, package_path)
    client = cluster.connect(server.host)
    with pytest.raises(cluster.ClusterError, match=r"still RUNNING after 0.01 s \(--timeout\); it keeps running"):
        cluster.wait_for_run(client, submitted.run_id, poll_seconds=POLL, timeout_seconds=0.01)


def test_token_is_sent_but_never_printed(server, package_path, capsys, monkeypatch):
    monkeypatch.setenv("KFP_TOKEN", "secret-token-value")
    cluster.submit(server.host, package_path, wait=True, poll_seconds=POLL)
    captured = capsys.readouterr()
    assert "secret-token-value" not in captured.out + captured.err
    (create,) = server.requests_to("POST", "/runs")
    assert create.authorization == "Bearer secret-token-value"


def test_unknown_parameter_lists_the_pipeline_parameters(server, package_path):
    with pytest.raises(ValueError) as raised:
        cluster.submit(server.host, package_path, params={"epoch": "3"})
    assert str(raised.value) == (
        "unknown pipeline parameter 'epoch'; the pipeline takes: "
        "augment, dataset, epochs, learning_rate, models")
    assert server.requests_to("POST", "/runs") == []


def test_parameter_of_wrong_type_is_refused(package_path):
    with pytest.raises(ValueError, match="'epochs' is NUMBER_INTEGER; got 'three'"):
        cluster.resolve_params({"epochs": "three"}, package_path)


def test_unreachable_host_is_one_line_error(package_path):
    host = closed_port_url()
    with pytest.raises(cluster.ClusterError) as raised:
        cluster.submit(host, package_path)
    assert str(raised.value).startswith(f"cannot reach Kubeflow Pipelines at {host}")
    assert "\n" not in str(raised.value)


def test_host_without_scheme_is_refused(package_path):
    with pytest.raises(ValueError, match="--host must be the KFP API URL"):
        cluster.submit("localhost:8080", package_path)


def test_missing_package_says_how_to_make_it(server, tmp_path):
    with pytest.raises(ValueError, match="cnnpipe compile --output"):
        cluster.submit(server.host, str(tmp_path / "absent.yaml"))


# ---- schedule -------------------------------------------------------------------------
def test_schedule_creates_recurring_run_on_uploaded_version(server, package_path, capsys):
    created = cluster.schedule(server.host, "nightly", "0 0 2 * * *", package_path,
                               params={"dataset": "gs://bucket/images"})
    output = capsys.readouterr().out
    assert "created schedule 'nightly'" in output and "UTC" in output
    (upload,) = server.requests_to("POST", "/pipelines/upload")
    assert upload.query["name"] == "nightly"
    assert yaml.safe_load_all(upload.body).__next__()["pipelineInfo"]["name"] == "cluster-test"
    (create,) = server.requests_to("POST", "/recurringruns")
    body = create.body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 2 * * *"}}
    assert body["max_concurrency"] == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == "nightly"
    assert body["service_account"] == "cnnpipe-runner"
    assert body["runtime_config"]["parameters"] == {"dataset": "gs://bucket/images"}
    (pipeline_id,) = server.pipelines
    (version,) = server.versions[pipeline_id]
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pipeline_id, "pipeline_version_id": version["pipeline_version_id"]}
    assert "pipeline_spec" not in body  # runs the named upload, not an inline copy
    assert created.pipeline_version_id == version["pipeline_version_id"]


def test_schedule_again_with_same_name_replaces_it_on_a_new_version(server, package_path, capsys):
    first = cluster.schedule(server.host, "nightly", "0 0 2 * * *", package_path)
    second = cluster.schedule(server.host, "nightly", "0 30 3 * * *", package_path)
    assert "updated schedule 'nightly'" in capsys.readouterr().out
    assert list(server.recurring_runs) == [second.recurring_run_id]
    assert server.requests_to("DELETE", f"/recurringruns/{first.recurring_run_id}")
    (version_upload,) = server.requests_to("POST", "/pipelines/upload_version")
    assert version_upload.query["pipelineid"] == first.pipeline_id
    assert version_upload.query["name"].startswith("nightly-")
    assert second.pipeline_version_id != first.pipeline_version_id
    assert second.cron == "0 30 3 * * *"
    assert len(server.pipelines) == 1


def test_list_and_delete_schedules(server, package_path, capsys):
    cluster.schedule(server.host, "nightly", "0 0 2 * * *", package_path)
    cluster.schedule(server.host, "weekly", "0 0 4 * * SUN", package_path)
    capsys.readouterr()
    listed = cluster.list_schedules(server.host)
    assert sorted(item.name for item in listed) == ["nightly", "weekly"]
    assert all(item.max_concurrency == 1 and item.no_catchup for item in listed)
    assert "0 0 4 * * SUN" in capsys.readouterr().out
    assert cluster.delete_schedule(server.host, "nightly") == 1
    assert [item.name for item in cluster.list_schedules(server.host)] == ["weekly"]
    with pytest.raises(cluster.ClusterError, match="no schedule named 'nightly'"):
        cluster.delete_schedule(server.host, "nightly")


def test_schedule_with_five_field_cron_is_refused_before_any_request(server, package_path):
    with pytest.raises(ValueError) as raised:
        cluster.schedule(server.host, "nightly", "0 2 * * *", package_path)
    assert str(raised.value) == (
        "cron needs 6 fields (seconds first) in KFP, e.g. '0 0 2 * * *'; got 5: '0 2 * * *'")
    assert server.requests == []


def test_schedule_unreachable_host(package_path):
    with pytest.raises(cluster.ClusterError, match="cannot reach Kubeflow Pipelines"):
        cluster.schedule(closed_port_url(), "nightly", "0 0 2 * * *", package_path)


def test_api_error_becomes_one_line(server, package_path):
    client = cluster.connect(server.host)
    with pytest.raises(cluster.ClusterError) as raised:
        cluster.wait_for_run(client, "run-that-does-not-exist", poll_seconds=POLL)
    assert str(raised.value) == (
        "get run run-that-does-not-exist failed: HTTP 404 run 'run-that-does-not-exist' not found")


# ---- cron validation ------------------------------------------------------------------
@pytest.mark.parametrize("expression", [
    "0 0 2 * * *", "0 */15 * * * *", "30 0 2 1-15 JAN-MAR MON", "0 0 2 ? * 1,3,5", "0 0 0 1 */2 *",
])
def test_valid_cron(expression):
    assert cluster.validate_cron(expression) == expression


@pytest.mark.parametrize("expression, problem", [
    ("0 0 25 * * *", "field 3 (hours)"),
    ("60 0 2 * * *", "field 1 (seconds)"),
    ("0 0 2 0 * *", "field 4 (day of month)"),
    ("0 0 2 * 13 *", "field 5 (month)"),
    ("0 0 2 * * 7", "field 6 (day of week)"),
    ("0 0 2 * * MON-XYZ", "field 6 (day of week)"),
    ("0 0 5-2 * * *", "field 3 (hours)"),
    ("0 */0 2 * * *", "field 2 (minutes)"),
    ("0 0 ? * * *", "field 3 (hours)"),
    ("0 0 2 * * * 2030", "got 7"),
    ("@daily", "got 1"),
])
def test_invalid_cron(expression, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        cluster.validate_cron(expression)


def test_parse_params():
    assert cluster.parse_params(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ValueError, match="--param needs KEY=VALUE"):
        cluster.parse_params(["novalue"])


def test_submit_real_pipeline_with_typed_params(server, tmp_path):
    """The project's own compiled pipeline goes through the same path, list and int params typed."""
    from pipeline.pipeline import build_pipeline

    package = tmp_path / "cnnpipe.yaml"
    compiler.Compiler().compile(build_pipeline(Placement(image="example.com/cnnpipe:test")), str(package))
    cluster.submit(server.host, str(package), params={"models": "lenet5,resnet20_v1", "seed": "3"})
    (create,) = server.requests_to("POST", "/runs")
    assert create.body["runtime_config"]["parameters"] == {"models": ["lenet5", "resnet20_v1"], "seed": 3}
    executors = create.body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # Two train tasks (on a GPU node for one worker, on a CPU node to launch a JobSet), each told its pod.
    assert set(executors) == {"exec-train-model", "exec-train-model-2"}


def test_local_pipeline_root_is_refused(server, package_path):
    with pytest.raises(ValueError, match="--pipeline-root must be an object store URI"):
        cluster.schedule(server.host, "nightly", "0 0 2 * * *", package_path, pipeline_root="/tmp/root")
    assert server.requests == []


# ---- faults while following a run ------------------------------------------------------
def started_run(server, package_path):
    """A submitted run (not followed) and a client to follow it with."""
    return cluster.submit(server.host, package_path).run_id, cluster.connect(server.host)


def test_wait_retries_status_calls_through_5xx_and_a_hung_call(server, package_path, capsys):
    server.run_script = successful_script(("prep", "train"))
    run_id, client = started_run(server, package_path)
    server.inject("GET", f"/runs/{run_id}", 503, 502, HANG, 429)
    started = time.monotonic()
    run = cluster.wait_for_run(client, run_id, poll_seconds=POLL, request_timeout_seconds=(1.0, 0.3))
    assert run.state == "SUCCEEDED"
    assert time.monotonic() - started < 10  # the hung call was cut off by its read timeout
    assert [request.path for request in server.faulted] == [f"/apis/v2beta1/runs/{run_id}"] * 4
    output = capsys.readouterr().out
    assert "get run failed (HTTP 503" in output and "get run failed (HTTP 429" in output
    assert "status calls answer again" in output and f"run {run_id} SUCCEEDED" in output


def test_wait_gives_up_after_the_retry_budget_saying_the_run_keeps_going(server, package_path):
    run_id, client = started_run(server, package_path)
    server.inject("GET", f"/runs/{run_id}", *[503] * 100)
    with pytest.raises(cluster.ClusterError) as raised:
        cluster.wait_for_run(client, run_id, poll_seconds=POLL, retry_seconds=0.1, url="http://ui/run")
    assert str(raised.value).startswith(f"get run {run_id} kept failing for 0.1 s (HTTP 503 injected HTTP 503)")
    assert str(raised.value).endswith("the run keeps going on the cluster: follow it at http://ui/run")
    assert len(server.faulted) >= 2  # retried before giving up


def test_a_permanent_status_error_is_not_retried(server, package_path):
    run_id, client = started_run(server, package_path)
    server.inject("GET", f"/runs/{run_id}", 403, 503)
    with pytest.raises(cluster.ClusterError, match=f"get run {run_id} failed: HTTP 403"):
        cluster.wait_for_run(client, run_id, poll_seconds=POLL)
    assert len(server.faulted) == 1


@pytest.mark.parametrize("poll_seconds", [0, -1, float("nan")])
def test_a_zero_or_negative_poll_interval_is_refused_before_submitting(server, package_path, poll_seconds):
    with pytest.raises(UserError, match="--poll-seconds must be a number > 0"):
        cluster.submit(server.host, package_path, wait=True, poll_seconds=poll_seconds)
    assert server.requests == []


def test_a_zero_timeout_is_refused(server, package_path):
    with pytest.raises(UserError, match="--timeout must be a number > 0"):
        cluster.submit(server.host, package_path, wait=True, poll_seconds=POLL, timeout_seconds=0)
    assert server.requests == []


# ---- multi-user backends (Kubeflow profiles) ------------------------------------------
@pytest.fixture
def multi_user_server():
    with FakeKfpServer(multi_user=True) as fake:
        yield fake


def test_multi_user_backend_without_namespace_is_one_line_before_anything_is_created(multi_user_server, package_path):
    with pytest.raises(UserError) as raised:
        cluster.submit(multi_user_server.host, package_path)
    assert str(raised.value) == (
        f"Kubeflow Pipelines at {multi_user_server.host} is multi-user (Kubeflow profiles): pass --namespace "
        f"with your profile's namespace, e.g. --namespace kubeflow-user-example-com")
    assert not multi_user_server.requests_to("POST", "/runs")
    assert not multi_user_server.experiments


def test_submit_and_schedule_in_a_profile_namespace(multi_user_server, package_path):
    server = multi_user_server
    cluster.submit(server.host, package_path, experiment="mine", namespace="team-a")
    (experiment,) = server.experiments.values()
    assert experiment["namespace"] == "team-a"
    (run,) = server.runs.values()
    assert run["experiment_id"] == experiment["experiment_id"]

    cluster.schedule(server.host, "nightly", "0 0 2 * * *", package_path, namespace="team-a")
    assert [item.name for item in cluster.list_schedules(server.host, namespace="team-a")] == ["nightly"]
    assert cluster.list_schedules(server.host, namespace="team-b") == []
    assert cluster.delete_schedule(server.host, "nightly", namespace="team-a") == 1


def test_a_malformed_namespace_is_refused(server, package_path):
    with pytest.raises(UserError, match="--namespace must be a Kubernetes namespace"):
        cluster.submit(server.host, package_path, namespace="Team_A")


# ---- checks of the project's own parameters before anything reaches the cluster ---------
@pytest.fixture(scope="module")
def project_package(tmp_path_factory):
    """The project's own pipeline, compiled once."""
    from pipeline.pipeline import build_pipeline

    path = tmp_path_factory.mktemp("project") / "cnnpipe.yaml"
    compiler.Compiler().compile(build_pipeline(Placement(image="example.com/cnnpipe:test")), str(path))
    return str(path)


@pytest.mark.parametrize("params, problem", [
    ({"models": "lenet5,resnet99"}, "unknown model 'resnet99'; choose one of: "),
    ({"models": "lenet5,lenet5"}, "models has duplicates: lenet5,lenet5"),
    ({"train_config": '{"epochs": 0}'}, "epochs must be an integer >= 1, got 0"),
    ({"train_config": '{"epoch": 3}'}, "unknown train config field(s) epoch"),
    ({"workers": "0"}, "workers must be an integer >= 1"),
    ({"preset": "quick"}, "unknown preset 'quick'"),
    ({"backend": "torch"}, "backend must be one of tensorflow, jax, got 'torch'"),
    ({"backend": "jax", "workers": "2"}, "--workers 2 needs --backend tensorflow: the jax backend trains in one process"),
])
def test_bad_models_and_recipes_are_refused_before_submit_and_schedule(server, project_package, params, problem):
    with pytest.raises(UserError) as raised:
        cluster.submit(server.host, project_package, params=params)
    assert problem in str(raised.value)
    with pytest.raises(UserError):
        cluster.schedule(server.host, "nightly", "0 0 2 * * *", project_package, params=params)
    assert server.requests == []


def test_the_compiled_defaults_pass_the_checks(project_package):
    values = cluster.pipeline_values({}, project_package)
    assert values["models"] and isinstance(values["train_config"], dict)
    cluster.check_pipeline_values(values)
