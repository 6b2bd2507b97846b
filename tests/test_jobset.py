"""pipeline.jobset_spec and pipeline.jobset_run: the JobSet against the CRD's schema, run_jobset against a loopback Kubernetes API."""

import _thread
import copy
import json
import re
import signal
import threading
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from kubernetes import client

from components import heartbeat, workers
from components.errors import UserError
from pipeline import jobset_run, jobset_spec
from pipeline.placement import Placement
from tests.k8s_fake_server import (
    FakeKubernetesServer, completed, failed, job_failed, jobset_schema, pod_failed, running, unavailable,
    write_kubeconfig,
)
from tests.loopback_http import HANG

REPOSITORY = Path(__file__).resolve().parent.parent
IMAGE = "us-docker.pkg.dev/example/cnnpipe/cnnpipe:test"
COMMAND = ["cnnpipe", "component", "train", "--model", "resnet20_v1", "--output", "gs://bucket/run/model"]


def strict(schema):
    """The schema with unknown fields refused wherever it lists the known ones.

    The API server drops unknown fields of a custom resource (or refuses them, with strict field
    validation), so a misspelt field would silently vanish; the tests refuse it instead.
    """
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft7Validator(strict(jobset_schema()))


def spec_document(worker_count=2, placement=None, **arguments):
    placement = placement or Placement(image=IMAGE)
    return jobset_spec.jobset_spec("train-resnet", command=COMMAND, worker_count=worker_count,
                                  **jobset_spec.worker_pod_settings(placement), **arguments)


def worker_pod(document):
    (replicated_job,) = document["spec"]["replicatedJobs"]
    return replicated_job["template"]["spec"]["template"]["spec"]


# ---- the spec ------------------------------------------------------------------------------
@pytest.mark.parametrize("placement", [Placement(image=IMAGE), Placement(image=IMAGE, spot=True, gpus_per_task=2),
                                       Placement(image=IMAGE, gpus_per_task=0)])
def test_spec_matches_the_jobset_crd_schema(validator, placement):
    errors = [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(spec_document(4, placement))]
    assert errors == []


def test_strict_schema_refuses_a_misspelt_field(validator):
    """Guards the check above: unknown and mistyped fields must fail."""
    document = spec_document()
    document["spec"]["failurePolicy"]["maxRestart"] = 3
    worker_pod(document)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = [1]
    messages = " ".join(error.message for error in validator.iter_errors(document))
    assert "'maxRestart' was unexpected" in messages
    assert "is not valid under any of the given schemas" in messages


def test_spec_is_one_indexed_job_of_all_workers_with_stable_host_names():
    document = spec_document(worker_count=3, max_restarts=5)
    assert (document["apiVersion"], document["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
    assert document["metadata"]["namespace"] == "cnnpipe-workers"
    spec = document["spec"]
    assert spec["network"] == {"enableDNSHostnames": True, "subdomain": "train-resnet"}
    assert spec["failurePolicy"]["maxRestarts"] == 5
    assert spec["successPolicy"] == {"operator": "All", "targetReplicatedJobs": ["worker"]}
    (replicated_job,) = spec["replicatedJobs"]
    assert (replicated_job["name"], replicated_job["replicas"]) == ("worker", 1)
    job = replicated_job["template"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"], job["backoffLimit"]) == ("Indexed", 3, 3, 0)
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "cnnpipe-worker"
    (container,) = pod["containers"]
    assert container["command"] == ["python3", "-m", "components.workers", *COMMAND]


def test_a_user_mistake_fails_the_group_without_restarts():
    document = spec_document()
    container_name = worker_pod(document)["containers"][0]["name"]
    (_, exit_code_rule, _) = document["spec"]["replicatedJobs"][0]["template"]["spec"]["podFailurePolicy"]["rules"]
    assert exit_code_rule == {"action": "FailJob",
                              "onExitCodes": {"containerName": container_name, "operator": "In", "values": [2]}}
    rules = {rule["name"]: rule for rule in document["spec"]["failurePolicy"]["rules"]}
    assert rules["userMistake"]["action"] == "FailJobSet"
    assert rules["userMistake"]["onJobFailureReasons"] == ["PodFailurePolicy"]
    assert rules["userMistake"]["onJobFailureMessagePatterns"] == ["exit code 2 matching"]


def test_every_pod_builds_the_same_tf_config_from_the_jobset_host_names():
    document = spec_document(worker_count=3, port=2345, env={"STORAGE_EMULATOR_HOST": "http://gcs:9023"})
    environment = {variable["name"]: variable["value"] for variable in worker_pod(document)["containers"][0]["env"]}
    assert environment["STORAGE_EMULATOR_HOST"] == "http://gcs:9023"
    configs = [json.loads(workers.tf_config_from_jobset_environment(dict(environment, JOB_COMPLETION_INDEX=str(index))))
               for index in range(3)]
    subdomain = document["spec"]["network"]["subdomain"]
    # JobSet's pod host name: <jobset>-<replicated job>-<job index>-<completion index>.<subdomain>
    expected = [f"train-resnet-worker-0-{index}.{subdomain}:2345" for index in range(3)]
    assert all(config["cluster"]["worker"] == expected for config in configs)
    assert [config["task"]["index"] for config in configs] == [0, 1, 2]


@pytest.mark.parametrize("spot", [False, True])
def test_workers_are_placed_like_the_single_pod_train_task(spot):
    placement = Placement(image=IMAGE, gpu_type="nvidia-l4", gpus_per_task=2, spot=spot)
    pod = worker_pod(spec_document(placement=placement))
    assert pod["nodeSelector"] == placement.gpu_node_selector()
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    spot_toleration = {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    assert (spot_toleration in pod["tolerations"]) is spot
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["resources"] == {"requests": {"cpu": placement.gpu_task_cpu, "memory": placement.gpu_task_memory},
                                      "limits": {"cpu": placement.gpu_task_cpu_limit,
                                                 "memory": placement.gpu_task_memory_limit, "nvidia.com/gpu": 2}}


def test_cpu_only_workers_stay_off_the_gpu_pool():
    placement = Placement(image=IMAGE, gpus_per_task=0)
    pod = worker_pod(spec_document(placement=placement))
    assert pod["nodeSelector"] == {} and pod["tolerations"] == []
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]


def test_spec_refuses_a_bad_worker_count():
    with pytest.raises(UserError, match=r"--workers must be an integer >= 1 \(1 = one process\), got 0$"):
        spec_document(worker_count=0)


def test_jobset_names_are_stable_short_dns_labels():
    name = jobset_spec.jobset_name("Run 7f3a/2026-01-01", "ResNet20_v1")
    assert name == jobset_spec.jobset_name("Run 7f3a/2026-01-01", "ResNet20_v1")
    assert name != jobset_spec.jobset_name("Run 7f3a/2026-01-01", "resnet32_v1")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and name.startswith("run-7f3a-2026")
    long_name = jobset_spec.jobset_name("x" * 200, "9model")
    # The longest pod host name, <name>-worker-0-<index>, stays a valid 63-character DNS label.
    assert len(long_name) <= jobset_spec.MAX_NAME_LENGTH and len(f"{long_name}-worker-0-999") <= 63
    assert re.fullmatch(r"cnnpipe-[0-9a-f]{8}", jobset_spec.jobset_name("123", "_"))


def test_log_lines_are_whole_even_when_chunks_cut_them():
    chunks = [b"epoch 1\nep", b"och 2 \xc3", b"\xa9\r\n", b"last"]
    assert list(jobset_run.split_lines(chunks)) == ["epoch 1", "epoch 2 \u00e9", "last"]


# ---- run_jobset against the loopback API server -------------------------------------------
def api_client(server):
    configuration = client.Configuration()
    configuration.host = server.host
    return client.ApiClient(configuration)


def run(server, document=None, **arguments):
    lines = []
    arguments.setdefault("poll_seconds", 0.02)
    arguments.setdefault("timeout_seconds", 60)  # a script that never ends fails the test, not the suite
    jobset_run.run_jobset(document or spec_document(), api_client=api_client(server), log=lines.append, **arguments)
    return lines


def assert_deleted(server):
    (delete,) = server.requests_to("DELETE", "/jobsets/train-resnet")
    assert delete.query["propagationPolicy"] == "Foreground"
    assert server.jobsets == {} and server.pods == {} and server.network_policies == {}


def test_run_creates_follows_the_chief_and_deletes_on_success():
    with FakeKubernetesServer(chief_logs=[["cnnpipe-progress {\"phase\": \"epoch\", \"epoch\": 1}", "é done"]]) as server:
        document = spec_document(worker_count=2)
        lines = run(server, document)
    (create,) = server.requests_to("POST", "/namespaces/cnnpipe-workers/jobsets")
    assert create.body == document
    assert lines == ["created JobSet cnnpipe-workers/train-resnet: 2 workers",
                     "cnnpipe-progress {\"phase\": \"epoch\", \"epoch\": 1}", "é done"]
    (log_request, *_) = server.requests_to("GET", "/log")
    assert log_request.path == "/api/v1/namespaces/cnnpipe-workers/pods/train-resnet-worker-0-0-a0/log"
    assert log_request.query["follow"].lower() == "true" and log_request.query["container"] == "worker"
    assert_deleted(server)


def test_a_failed_jobset_is_named_with_its_message_and_deleted():
    script = [running(), failed("jobset failed due to reaching max number of restarts", restarts=3)]
    with FakeKubernetesServer(status_script=script) as server:
        with pytest.raises(RuntimeError) as raised:
            run(server)
    assert str(raised.value) == ("JobSet cnnpipe-workers/train-resnet failed: FailedJobs: "
                                 "jobset failed due to reaching max number of restarts")
    assert_deleted(server)


def test_a_user_mistake_of_the_chief_is_a_user_error():
    logs = [["error: dataset gs://bucket/x has no train split; run prepare first"]]
    with FakeKubernetesServer(status_script=[running(), running(), failed("pod failure policy", "PodFailurePolicy")],
                              chief_logs=logs) as server:
        with pytest.raises(UserError, match="^dataset gs://bucket/x has no train split; run prepare first$"):
            run(server)
    assert_deleted(server)


def test_after_a_group_restart_the_new_chief_is_followed():
    script = [running(), running(), running(restarts=1), running(restarts=1), completed(restarts=1)]
    with FakeKubernetesServer(status_script=script, chief_logs=[["attempt 0 epoch 1"], ["attempt 1 epoch 2"]]) as server:
        lines = run(server)
    assert ("JobSet cnnpipe-workers/train-resnet: a worker failed; restarted the group (restart 1, "
            "1 counted against maxRestarts)") in lines
    assert lines.index("attempt 0 epoch 1") < lines.index("attempt 1 epoch 2")
    assert_deleted(server)


def test_a_passing_api_server_outage_does_not_end_the_run():
    with FakeKubernetesServer(status_script=[running(), unavailable(), unavailable(), completed()]) as server:
        lines = run(server)
    assert "done" in lines
    assert len(server.requests_to("GET", "/jobsets/train-resnet")) == 4
    assert_deleted(server)


def test_an_api_server_outage_longer_than_allowed_ends_the_run(monkeypatch):
    monkeypatch.setattr(jobset_run, "UNREACHABLE_SECONDS", 0.1)
    with FakeKubernetesServer(status_script=[running(), unavailable()]) as server:
        with pytest.raises(client.exceptions.ApiException) as raised:
            run(server)
    assert raised.value.status == 503
    assert_deleted(server)


def test_a_timeout_deletes_the_jobset():
    with FakeKubernetesServer(status_script=[running()]) as server:
        with pytest.raises(RuntimeError, match=r"^JobSet cnnpipe-workers/train-resnet did not finish within 0.2 s; deleted it$"):
            run(server, timeout_seconds=0.2)
    assert_deleted(server)


def test_an_interrupt_deletes_the_jobset():
    # A shell that starts pytest in the background without job control hands it SIGINT ignored,
    # and interrupt_main() then does nothing; Python's own handler makes the interrupt arrive.
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        interrupt_during_run()
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def interrupt_during_run():
    with FakeKubernetesServer(status_script=[running()]) as server:
        def interrupt_once_created():
            while not server.jobsets:
                time.sleep(0.01)
            _thread.interrupt_main()

        threading.Thread(target=interrupt_once_created, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run(server)
    assert_deleted(server)


def left_behind(server, pipeline_run, status=None):
    """A JobSet of the same name that the server already holds, launched by `pipeline_run`."""
    server.jobsets[("cnnpipe-workers", "train-resnet")] = {
        "metadata": {"name": "train-resnet", "labels": {jobset_spec.PIPELINE_RUN_LABEL: pipeline_run}},
        "status": status or running()}


def test_a_jobset_left_by_an_earlier_attempt_is_replaced():
    with FakeKubernetesServer() as server:
        document = spec_document(pipeline_run="run-1")
        left_behind(server, "run-1")
        lines = run(server, document)
    assert lines[0] == "replacing JobSet cnnpipe-workers/train-resnet left by an earlier attempt of this run"
    assert [request.method for request in server.requests if "/jobsets" in request.path][:5] == \
        ["POST", "GET", "DELETE", "GET", "POST"]
    assert server.jobsets == {}


def test_a_cluster_without_jobset_is_a_user_error():
    with FakeKubernetesServer(jobset_api_installed=False) as server:
        with pytest.raises(UserError, match=r"no jobset.x-k8s.io/v1alpha2 API: install JobSet"):
            run(server)


def test_the_fake_server_refuses_what_the_api_server_would():
    """The loopback server checks JobSets against the same CRD schema as the API server."""
    document = spec_document()
    document["spec"]["replicatedJobs"][0]["replicas"] = "one"
    with FakeKubernetesServer() as server:
        with pytest.raises(client.exceptions.ApiException) as raised:
            run(server, document)
    assert raised.value.status == 422 and "replicas" in raised.value.body


@pytest.mark.parametrize("worker_namespace, namespace", [
    ("cnnpipe-workers", "cnnpipe-workers"),
    ("ml-workers", "ml-workers"),
    (None, "cnnpipe-workers"),  # a pipeline compiled before the placement named the namespace
    ("team-a", "team-a"),  # the task's own namespace: its pod owns the JobSet
])
def test_a_train_task_runs_its_workers_in_the_workers_namespace_not_its_own(tmp_path, monkeypatch, worker_namespace,
                                                                            namespace):
    placement = Placement(image=IMAGE, spot=True, worker_namespace=worker_namespace or "cnnpipe-workers")
    # What a train task calls; the placement travels through the compiled pipeline as JSON.
    pod_settings = json.loads(json.dumps(jobset_spec.worker_pod_settings(placement)))
    if worker_namespace is None:
        del pod_settings["namespace"]
    with FakeKubernetesServer(status_script=[completed()]) as server:  # done at the first poll: no wait
        write_kubeconfig(tmp_path / "config", server, "team-a")
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        for variable, value in (("CNNPIPE_POD_NAME", "train-pod"), ("CNNPIPE_POD_UID", "uid-9"),
                                ("CNNPIPE_POD_NAMESPACE", "team-a")):
            monkeypatch.setenv(variable, value)
        assert jobset_run.kubernetes_client()[1] == "team-a"  # the train task's own namespace: not used
        lines = []
        jobset_run.run_workers_on_cluster("train-resnet", COMMAND, 2, pod_settings, log=lines.append,
                                          pipeline_run="run-9")
    (create,) = server.requests_to("POST", "/jobsets")
    assert create.path == f"/apis/jobset.x-k8s.io/v1alpha2/namespaces/{namespace}/jobsets"
    # An owner in another namespace would get the JobSet deleted at once: none there.
    owners = [owner["uid"] for owner in create.body["metadata"].get("ownerReferences", [])]
    assert owners == (["uid-9"] if namespace == "team-a" else [])
    assert create.body["metadata"]["labels"]["cnnpipe/pipeline-run"] == "run-9"
    assert worker_pod(create.body)["tolerations"] == jobset_spec.gpu_tolerations(placement)
    assert lines[0] == f"created JobSet {namespace}/train-resnet: 2 workers"
    (policy,) = server.requests_to("POST", "/networkpolicies")
    assert policy.path == f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    assert_deleted(server)


# ---- k8s/workers/rbac.yaml grants exactly these calls ----------------------------------------
def role_grants() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) triples the launcher's Role in k8s/workers/rbac.yaml allows."""
    documents = yaml.safe_load_all((REPOSITORY / "k8s" / "workers" / "rbac.yaml").read_text())
    (role,) = [document for document in documents if document["kind"] == "Role"]
    return {(group, resource, verb) for rule in role["rules"] if not rule.get("resourceNames")
            for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}


def permission_needed(request) -> tuple[str, str, str]:
    """What RBAC checks for one recorded request: (API group, resource, verb)."""
    parts = request.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    resource = rest[2] + ("/" + rest[4] if len(rest) > 4 else "")
    named = len(rest) > 3
    verb = {"POST": "create", "DELETE": "delete", "GET": "get" if named else "list"}[request.method]
    return group, resource, verb


def test_the_role_grants_every_call_run_jobset_makes_and_nothing_more():
    script = [running(), running(restarts=1), completed(restarts=1)]
    with FakeKubernetesServer(status_script=script) as server:
        left_behind(server, "run-1")  # the replace path too
        run(server, spec_document(pipeline_run="run-1"))
    needed = {permission_needed(request) for request in server.requests}
    assert needed == {("jobset.x-k8s.io", "jobsets", "create"), ("jobset.x-k8s.io", "jobsets", "get"),
                      ("jobset.x-k8s.io", "jobsets", "delete"), ("networking.k8s.io", "networkpolicies", "create"),
                      ("", "pods", "list"), ("", "pods/log", "get")}
    assert role_grants() == needed


# ---- faults: what heals by itself and what stops ------------------------------------------
PREEMPTED = pod_failed(worker=1, exit_code=143, condition="DisruptionTarget")
CRASHED = pod_failed(worker=1, exit_code=137)


def test_preemptions_do_not_count_against_max_restarts():
    script = [running(), PREEMPTED, PREEMPTED, PREEMPTED, completed(restarts=3)]
    with FakeKubernetesServer(status_script=script) as server:
        lines = run(server, spec_document(max_restarts=1))
    preempted = [line for line in lines if "preempted" in line]
    assert preempted == [f"JobSet cnnpipe-workers/train-resnet: a worker was preempted; restarted the group "
                         f"(restart {count}, not counted against maxRestarts)" for count in (1, 2, 3)]
    assert_deleted(server)


def test_crashes_do_count_against_max_restarts():
    script = [running(), CRASHED, CRASHED, running()]
    with FakeKubernetesServer(status_script=script) as server:
        with pytest.raises(RuntimeError, match="failed: ReachedMaxRestarts"):
            run(server, spec_document(max_restarts=1))
    assert_deleted(server)


def test_a_user_mistake_of_a_worker_fails_the_jobset_at_once():
    with FakeKubernetesServer(status_script=[running(), pod_failed(worker=1, exit_code=2), running()]) as server:
        with pytest.raises(RuntimeError, match="failed: FailureRuleMatched: Container worker .* exit code 2"):
            run(server, spec_document(max_restarts=3))
    assert_deleted(server)


def test_an_attempt_past_its_deadline_fails_the_jobset():
    document = spec_document(placement=Placement(image=IMAGE, worker_deadline_seconds=3600))
    assert document["spec"]["replicatedJobs"][0]["template"]["spec"]["activeDeadlineSeconds"] == 3600
    with FakeKubernetesServer(status_script=[running(), job_failed()]) as server:
        with pytest.raises(RuntimeError, match="Job was active longer than specified deadline"):
            run(server, document)
    assert_deleted(server)


def test_restarts_wait_for_the_old_pods_and_rule_names_pass_the_webhook():
    policy = spec_document()["spec"]["failurePolicy"]
    assert policy["restartStrategy"] == "BlockingRecreate"
    assert [rule["name"] for rule in policy["rules"]] == ["preempted", "userMistake", "launcherGone",
                                                          "deadlineExceeded"]


def test_workers_whose_launcher_is_gone_fail_the_jobset_at_once_and_it_expires():
    """A worker exits with LAUNCHER_GONE_EXIT_CODE when the launcher's heartbeat stops
    (tests/test_heartbeat.py): the Job fails by its pod failure policy, the JobSet by its rule,
    without a restart; the failed JobSet is deleted after its TTL."""
    document = spec_document(max_restarts=3)
    *_, launcher_rule = document["spec"]["replicatedJobs"][0]["template"]["spec"]["podFailurePolicy"]["rules"]
    assert launcher_rule == {"action": "FailJob", "onExitCodes": {
        "containerName": "worker", "operator": "In", "values": [heartbeat.LAUNCHER_GONE_EXIT_CODE]}}
    assert document["spec"]["ttlSecondsAfterFinished"] == jobset_spec.FINISHED_TTL_SECONDS
    script = [running(), pod_failed(worker=0, exit_code=heartbeat.LAUNCHER_GONE_EXIT_CODE), running()]
    with FakeKubernetesServer(status_script=script) as server:
        with pytest.raises(RuntimeError, match=r"failed: FailureRuleMatched: Container worker .* exit code 69 "
                                               r"matching FailJob rule at index 2") as raised:
            run(server, document)
    assert "restart" not in str(raised.value)
    assert_deleted(server)


def test_a_live_jobset_of_another_run_with_the_same_run_name_is_never_touched():
    with FakeKubernetesServer() as server:
        left_behind(server, "run-A")
        with pytest.raises(UserError) as raised:
            run(server, spec_document(pipeline_run="run-B"))
    assert str(raised.value) == (
        "pipeline run run-A is still training with the same run_name and model (JobSet cnnpipe-workers/train-resnet); "
        "give this run another run_name, or wait until that one ends")
    assert server.requests_to("DELETE", "/jobsets") == []
    assert ("cnnpipe-workers", "train-resnet") in server.jobsets


def test_a_finished_jobset_of_another_run_is_replaced():
    with FakeKubernetesServer() as server:
        left_behind(server, "run-A", status=completed())
        lines = run(server, spec_document(pipeline_run="run-B"))
    assert lines[0] == "replacing JobSet cnnpipe-workers/train-resnet of the finished run run-A"


def test_the_jobset_goes_with_the_pod_that_launched_it():
    with FakeKubernetesServer() as server:
        server.add_pod("cnnpipe-workers", "train-task-pod", uid="uid-7")
        document = spec_document(owner_pod={"name": "train-task-pod", "uid": "uid-7"})
        jobset_run.create_jobset(client.CustomObjectsApi(api_client(server)), document, print)
        assert document["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Pod", "name": "train-task-pod", "uid": "uid-7"}]
        assert len(server.pods) == 3  # the launcher and two workers
        server.delete_pod("cnnpipe-workers", "train-task-pod")  # what a SIGKILL'd launcher's pod deletion does
        assert server.jobsets == {} and server.pods == {}


def test_the_launching_pod_owns_the_jobset_only_in_its_own_namespace():
    environment = {"CNNPIPE_POD_NAME": "train-task-pod", "CNNPIPE_POD_UID": "uid-7", "CNNPIPE_POD_NAMESPACE": "team-a"}
    assert jobset_run.launching_pod("team-a", environment) == {"name": "train-task-pod", "uid": "uid-7"}
    assert jobset_run.launching_pod("cnnpipe-workers", environment) is None
    assert jobset_run.launching_pod("team-a", {}) is None


def test_a_kueue_queue_labels_the_jobset_and_a_suspended_one_says_it_waits():
    document = spec_document(placement=Placement(image=IMAGE, queue_name="gpu-queue"), pipeline_run="run-1")
    labels = document["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "gpu-queue" and labels["cnnpipe/pipeline-run"] == "run-1"
    assert "kueue.x-k8s.io/queue-name" not in spec_document()["metadata"]["labels"]
    with FakeKubernetesServer() as server:
        document["spec"]["suspend"] = True  # as Kueue's webhook sets it until the workload is admitted
        lines = run(server, document)
    assert "JobSet cnnpipe-workers/train-resnet is suspended: waiting for Kueue to admit it" in lines


def test_a_failed_or_lost_create_is_tried_again():
    with FakeKubernetesServer() as server:
        server.inject("POST", "/namespaces/cnnpipe-workers/jobsets", 503, 500)
        lines = run(server, spec_document(pipeline_run="run-1"))
    assert lines[:2] == ["creating JobSet cnnpipe-workers/train-resnet failed (ApiException 503); trying again",
                         "creating JobSet cnnpipe-workers/train-resnet failed (ApiException 500); trying again"]
    assert lines[2] == "created JobSet cnnpipe-workers/train-resnet: 2 workers"
    assert_deleted(server)


def test_a_hung_status_call_is_cut_off_and_retried(monkeypatch):
    monkeypatch.setattr(jobset_run, "REQUEST_TIMEOUT_SECONDS", (1.0, 0.3))
    with FakeKubernetesServer(status_script=[running(), completed()]) as server:
        server.inject("GET", "/jobsets/train-resnet", HANG)
        started = time.monotonic()
        run(server)
    assert time.monotonic() - started < 10 and len(server.faulted) == 1
    assert_deleted(server)


def test_a_conflict_over_a_jobset_that_is_gone_by_then_creates_it():
    with FakeKubernetesServer() as server:
        server.inject("POST", "/namespaces/cnnpipe-workers/jobsets", 409)
        lines = run(server, spec_document(pipeline_run="run-1"))
    assert lines[:2] == ["JobSet cnnpipe-workers/train-resnet existed a moment ago and is gone; creating it",
                         "created JobSet cnnpipe-workers/train-resnet: 2 workers"]
    assert server.jobsets == {} and server.pods == {}  # deleted when done
