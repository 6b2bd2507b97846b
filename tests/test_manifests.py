"""What goes to the cluster: compiled placement, the Dockerfile, k8s/ manifests, the GPU node pool."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import List

import kubernetes_validate
import pytest
import yaml
from kfp import compiler, dsl

from pipeline import cluster
from pipeline.placement import (
    Placement,
    disable_cache_for_mutable_source,
    parse_node_selector,
    place_cpu_task,
    place_gpu_task,
    retry_preempted,
)
from tests.k8s_fake_server import KUBERNETES_VERSION  # manifests must work on this version

REPOSITORY = Path(__file__).resolve().parent.parent
DOCKERFILE = REPOSITORY / "docker" / "Dockerfile"
K8S = REPOSITORY / "k8s"
IMAGE = "us-docker.pkg.dev/example/cnnpipe/cnnpipe:test"


# ---- compiled placement ---------------------------------------------------------------
@dsl.component(base_image="python:3.11-slim")
def prepare_data(source: str) -> str:
    """Stand-in for the prep step."""
    return source


@dsl.component(base_image="python:3.11-slim")
def train_model(dataset: str, model_name: str) -> str:
    """Stand-in for the train step."""
    return dataset + model_name


@dsl.component(base_image="python:3.11-slim")
def evaluate_model(model: str) -> str:
    """Stand-in for the evaluate step."""
    return model


@dsl.component(base_image="python:3.11-slim")
def write_report(results: List[str]) -> str:
    """Stand-in for the report step."""
    return ",".join(results)


def stand_in_pipeline(placement: Placement):
    """prep -> ParallelFor(models){train -> evaluate} -> report, placed like the real pipeline."""

    @dsl.pipeline(name="placement-test")
    def placed(dataset: str = "gs://bucket/images", models: list = ["lenet5", "resnet20_v1"]):
        prep = disable_cache_for_mutable_source(place_cpu_task(prepare_data(source=dataset), placement))
        with dsl.ParallelFor(models) as model_name:
            train = place_gpu_task(train_model(dataset=prep.output, model_name=model_name), placement)
            retry_preempted(train, placement)
            evaluation = retry_preempted(place_gpu_task(evaluate_model(model=train.output), placement), placement)
        place_cpu_task(write_report(results=dsl.Collected(evaluation.output)), placement)

    return placed


def compile_tasks(pipeline_function, path) -> dict[str, dict]:
    """Compiles and returns task name -> {"task", "container", "kubernetes"} from both YAML documents."""
    compiler.Compiler().compile(pipeline_function, str(path))
    documents = list(yaml.safe_load_all(path.read_text()))
    spec = documents[0]
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(documents) > 1 else {}
    executors = spec["deploymentSpec"]["executors"]
    tasks = {}

    def walk(dag):
        for name, task in dag["tasks"].items():
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"])
                continue
            label = component["executorLabel"]
            tasks[name] = {"task": task, "container": executors[label]["container"],
                           "kubernetes": platform.get(label, {})}

    walk(spec["root"]["dag"])
    return tasks


GPU_TASKS = ("train-model", "evaluate-model")
CPU_TASKS = ("prepare-data", "write-report")


def check_placement(tasks: dict, placement: Placement):
    """The settings the issue asks for, on every task of a compiled pipeline."""
    for name in GPU_TASKS:
        container, kubernetes = tasks[name]["container"], tasks[name]["kubernetes"]
        assert container["image"] == placement.image
        resources = container["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert resources["accelerator"]["resourceCount"] == str(placement.gpus_per_task)
        assert resources["resourceCpuRequest"] == placement.gpu_task_cpu
        assert resources["resourceMemoryRequest"] == placement.gpu_task_memory
        assert resources["resourceMemoryLimit"] == placement.gpu_task_memory_limit
        assert kubernetes["nodeSelector"]["labels"] == placement.gpu_node_selector()
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in kubernetes["tolerations"]
    for name in CPU_TASKS:
        container, kubernetes = tasks[name]["container"], tasks[name]["kubernetes"]
        assert container["image"] == placement.image
        assert "accelerator" not in container["resources"]
        assert container["resources"]["resourceCpuRequest"] == placement.cpu_task_cpu
        assert kubernetes == {}  # no GPU selector or toleration: CPU steps stay on CPU nodes
    for name in GPU_TASKS:  # both run on spot GPUs; a retried evaluate publishes again safely
        retry = tasks[name]["task"]["retryPolicy"]
        assert retry["maxRetryCount"] == placement.train_retries
        assert retry["backoffDuration"] == "60s" and retry["backoffFactor"] == 2.0


def test_stand_in_pipeline_places_gpu_steps_on_the_gpu_pool(tmp_path):
    placement = Placement(image=IMAGE, gpus_per_task=2)
    tasks = compile_tasks(stand_in_pipeline(placement), tmp_path / "pipeline.yaml")
    check_placement(tasks, placement)
    assert tasks["train-model"]["kubernetes"]["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert len(tasks["train-model"]["kubernetes"]["tolerations"]) == 1
    # KFP omits enableCache when it is false: prep is never served from the cache.
    assert tasks["prepare-data"]["task"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["train-model"]["task"]["cachingOptions"]["enableCache"] is True


def test_spot_adds_spot_selector_and_toleration(tmp_path):
    placement = Placement(image=IMAGE, gpu_type="nvidia-tesla-t4", spot=True)
    tasks = compile_tasks(stand_in_pipeline(placement), tmp_path / "pipeline.yaml")
    kubernetes = tasks["train-model"]["kubernetes"]
    assert kubernetes["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-accelerator": "nvidia-tesla-t4", "cloud.google.com/gke-spot": "true"}
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
            "effect": "NoSchedule"} in kubernetes["tolerations"]


def test_explicit_node_selector_replaces_the_gke_label(tmp_path):
    placement = Placement(image=IMAGE, node_selector=parse_node_selector(["pool=gpu", "zone=a"]))
    tasks = compile_tasks(stand_in_pipeline(placement), tmp_path / "pipeline.yaml")
    assert tasks["evaluate-model"]["kubernetes"]["nodeSelector"]["labels"] == {"pool": "gpu", "zone": "a"}


def test_zero_gpus_compiles_a_cpu_only_pipeline(tmp_path):
    placement = Placement(image=IMAGE, gpus_per_task=0)
    tasks = compile_tasks(stand_in_pipeline(placement), tmp_path / "pipeline.yaml")
    for task in tasks.values():
        assert "accelerator" not in task["container"]["resources"]
        assert task["kubernetes"] == {}


def test_real_pipeline_carries_the_placement(tmp_path):
    from pipeline.pipeline import build_pipeline

    placement = Placement(image=IMAGE, gpus_per_task=1, spot=True, evaluate_on_gpu=True)
    tasks = compile_tasks(build_pipeline(placement), tmp_path / "pipeline.yaml")
    check_placement(tasks, placement)


def test_real_pipeline_holds_no_idle_gpu(tmp_path):
    """With workers > 1 the train task only launches and waits: it runs on a CPU node; evaluation
    asks for a GPU only when the placement says it helps."""
    from pipeline.pipeline import build_pipeline

    placement = Placement(image=IMAGE, gpus_per_task=1)
    path = tmp_path / "pipeline.yaml"
    tasks = compile_tasks(build_pipeline(placement), path)
    on_gpu, launcher = tasks["train-model"], tasks["train-model-2"]
    assert on_gpu["container"]["resources"]["accelerator"]["resourceCount"] == "1"
    assert "accelerator" not in launcher["container"]["resources"]
    assert launcher["container"]["resources"]["resourceCpuRequest"] == placement.cpu_task_cpu
    assert "nodeSelector" not in launcher["kubernetes"] and "tolerations" not in launcher["kubernetes"]
    for train in (on_gpu, launcher):
        assert train["task"]["retryPolicy"]["maxRetryCount"] == placement.train_retries
        assert {"name": "CNNPIPE_POD_UID", "fieldPath": "metadata.uid"} in train["kubernetes"]["fieldPathAsEnv"]
    assert "accelerator" not in tasks["evaluate-model"]["container"]["resources"]
    # Which of the two runs is decided by the run's workers parameter, at run time.
    conditions = re.findall(r"condition: (.+)", path.read_text())
    assert [condition.count("pipelinechannel--workers") for condition in conditions] == [1, 1]
    assert conditions[1].startswith("'!(")


def test_real_pipeline_tells_the_evaluate_step_its_image_for_the_model_store(tmp_path):
    from pipeline.pipeline import build_pipeline

    tasks = compile_tasks(build_pipeline(Placement(image=IMAGE)), tmp_path / "pipeline.yaml")
    assert {"name": "CNNPIPE_IMAGE", "value": IMAGE} in tasks["evaluate-model"]["container"]["env"]
    local_tasks = compile_tasks(build_pipeline(), tmp_path / "local.yaml")
    assert {"name": "CNNPIPE_IMAGE", "value": "local"} in local_tasks["evaluate-model"]["container"]["env"]


def test_real_pipeline_never_serves_prep_from_the_cache(tmp_path):
    from pipeline.pipeline import build_pipeline

    tasks = compile_tasks(build_pipeline(Placement(image=IMAGE)), tmp_path / "pipeline.yaml")
    assert tasks["prepare-data"]["task"].get("cachingOptions", {}).get("enableCache", False) is False


@pytest.mark.parametrize("arguments, problem", [
    ({"image": ""}, "image must be a container image reference"),
    ({"image": "a b"}, "image must be a container image reference"),
    ({"image": IMAGE.split(":")[0] + "@sha256:abc"}, "names a digest that is not sha256:<64 hex digits>"),
    ({"image": IMAGE.split(":")[0] + "@md5:" + "0" * 64}, "names a digest that is not sha256"),
    ({"image": IMAGE, "gpus_per_task": -1}, r"gpus_per_task must be an integer >= 0 \(0 = CPU only\), got -1$"),
    ({"image": IMAGE, "gpus_per_task": 1.5}, r"gpus_per_task must be an integer >= 0 \(0 = CPU only\), got 1.5$"),
    ({"image": IMAGE, "gpu_type": None}, "needs a GPU pool to land on"),
    ({"image": IMAGE, "train_retries": -2}, "train_retries must be an integer >= 0, got -2$"),
    ({"image": IMAGE, "node_selector": (("key",),)}, "node_selector entries must be"),
])
def test_placement_refuses_bad_values(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        Placement(**arguments)


def test_placement_takes_an_image_by_digest():
    pinned = IMAGE.split(":")[0] + "@sha256:" + "0123456789abcdef" * 4
    assert Placement(image=pinned).image == pinned


def test_parse_node_selector_needs_key_and_value():
    assert parse_node_selector([" a = b "]) == (("a", "b"),)
    with pytest.raises(ValueError, match="--node-selector needs KEY=VALUE"):
        parse_node_selector(["pool"])


# ---- docker/ --------------------------------------------------------------------------
def tool(name: str) -> str:
    """An executable installed beside this Python (the virtualenv's bin/)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is missing from {path.parent}; run `make test` to install the test extras")
    return str(path)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_hadolint_passes_on_the_dockerfile():
    result = subprocess.run([tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                            capture_output=True, text=True, cwd=REPOSITORY)
    assert result.returncode == 0, result.stdout + result.stderr
    # Any rule switched off must say why on the same line.
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore" in line:
            assert re.search(r"ignore=\S+\s+\S+", line), f"hadolint ignore without a reason: {line}"


def test_dockerfile_base_image_matches_the_pinned_tensorflow():
    pinned = re.search(r'"tensorflow==([\d.]+)"', (REPOSITORY / "pyproject.toml").read_text()).group(1)
    instructions = dockerfile_instructions()
    (base,) = [arguments for instruction, arguments in instructions if instruction == "FROM"]
    # FROM ${BASE_IMAGE}: the cluster's base is that build argument's default.
    defaults = dict(arguments.split("=", 1) for instruction, arguments in instructions if instruction == "ARG" and "=" in arguments)
    assert re.sub(r"\$\{(\w+)\}", lambda match: defaults[match.group(1)], base) == f"tensorflow/tensorflow:{pinned}-gpu"


def test_dockerfile_runs_as_numeric_non_root_user_without_credentials():
    instructions = dockerfile_instructions()
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    user_id = users[-1].split(":")[0]
    assert user_id.isdigit() and int(user_id) > 0
    environment = " ".join(arguments for instruction, arguments in instructions if instruction in ("ENV", "ARG"))
    assert not re.search(r"TOKEN|SECRET|PASSWORD|CREDENTIAL|_KEY", environment, re.IGNORECASE)


def test_dockerfile_installs_dependencies_before_copying_code():
    copies = [arguments.split()[:-1] for instruction, arguments in dockerfile_instructions() if instruction == "COPY"]
    order = [source for sources in copies for source in sources]
    assert order.index("pyproject.toml") < min(order.index("components"), order.index("pipeline"))
    for source in order:
        assert (REPOSITORY / source).exists(), f"COPY {source}: no such file in the repository"


def test_dockerignore_keeps_local_state_out_but_not_what_is_copied():
    ignored = {line.strip() for line in (REPOSITORY / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "runs", "data"} <= ignored
    copied = [source for instruction, arguments in dockerfile_instructions() if instruction == "COPY"
              for source in arguments.split()[:-1]]
    assert not set(copied) & ignored


def test_image_default_command_runs(tmp_path):
    """The image's CMD, run the way its console script would, lists the four steps."""
    (command,) = [json.loads(arguments) for instruction, arguments in dockerfile_instructions()
                  if instruction == "CMD"]
    assert command[:2] == ["cnnpipe", "component"]
    console_script = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"]
    result = subprocess.run(console_script + command[1:], capture_output=True, text=True, cwd=REPOSITORY,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr
    for step in ("prepare", "train", "evaluate", "report"):
        assert step in result.stdout


# ---- k8s/ -----------------------------------------------------------------------------
def rendered_k8s() -> list[dict]:
    """What `kubectl apply -k k8s/` applies: the kustomization rendered by kubectl's own kustomize."""
    result = subprocess.run([tool("kubectl"), "kustomize", str(K8S)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def resources_of_kind(kind: str) -> dict[tuple[str, str], dict]:
    """(namespace, name) -> rendered resource of that kind."""
    return {(resource["metadata"].get("namespace", ""), resource["metadata"]["name"]): resource
            for resource in rendered_k8s() if resource["kind"] == kind}


def test_every_k8s_manifest_validates_strictly():
    resources = rendered_k8s()
    assert {resource["kind"] for resource in resources} == {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "ResourceQuota",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    for resource in resources:
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "cnnpipe"


def test_every_manifest_in_k8s_is_applied_except_the_generated_examples():
    listed = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for name in yaml.safe_load(kustomization.read_text())["resources"]:
            listed.add((kustomization.parent / name).resolve())
    on_disk = {path.resolve() for path in K8S.rglob("*.yaml")
               if path.name != "kustomization.yaml" and path.parent.name != "generated"}
    assert on_disk and on_disk <= listed, "every manifest in k8s/ is part of the kustomization"


def test_kubernetes_validate_rejects_a_broken_manifest():
    """Guards the check above: a misspelt field must fail strict validation."""
    broken = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}, "automountToken": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_service_accounts_are_the_ones_runs_and_workers_use_with_workload_identity():
    accounts = resources_of_kind("ServiceAccount")
    assert set(accounts) == {("kubeflow", cluster.RUNNER_SERVICE_ACCOUNT),
                             (cluster.WORKER_NAMESPACE, cluster.WORKER_SERVICE_ACCOUNT)}
    for account in accounts.values():
        google_account = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert re.fullmatch(r"[a-z][-a-z0-9]*@[A-Z_a-z0-9-]+\.iam\.gserviceaccount\.com", google_account)
    # Workers never call the Kubernetes API, so their pods carry no token.
    assert accounts[(cluster.WORKER_NAMESPACE, cluster.WORKER_SERVICE_ACCOUNT)]["automountServiceAccountToken"] is False
    bindings = resources_of_kind("RoleBinding")
    runner = {"kind": "ServiceAccount", "name": cluster.RUNNER_SERVICE_ACCOUNT, "namespace": "kubeflow"}
    assert bindings[("kubeflow", "cnnpipe-runner")]["subjects"] == [runner]
    assert bindings[(cluster.WORKER_NAMESPACE, "cnnpipe-launcher")]["subjects"] == [runner]


def test_the_workers_namespace_enforces_restricted_pod_security():
    (namespace,) = resources_of_kind("Namespace").values()
    assert namespace["metadata"]["name"] == cluster.WORKER_NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    bindings = resources_of_kind("ValidatingAdmissionPolicyBinding").values()
    assert {binding["spec"]["policyName"] for binding in bindings} == {"cnnpipe-worker-pods", "cnnpipe-worker-network-policies"}
    for binding in bindings:  # tests/test_security.py evaluates the policies
        assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": cluster.WORKER_NAMESPACE}
        assert binding["spec"]["validationActions"] == ["Deny"]
    quota = resources_of_kind("ResourceQuota")[(cluster.WORKER_NAMESPACE, "cnnpipe-workers")]
    assert {"requests.nvidia.com/gpu", "pods", "count/jobsets.jobset.x-k8s.io"} <= set(quota["spec"]["hard"])


def test_the_workers_namespace_denies_all_traffic_it_does_not_list():
    policies = resources_of_kind("NetworkPolicy")
    deny = policies[(cluster.WORKER_NAMESPACE, "default-deny")]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    egress = policies[(cluster.WORKER_NAMESPACE, "worker-egress")]["spec"]
    assert egress["policyTypes"] == ["Egress"] and "ingress" not in egress
    open_ports = {(port["protocol"], port["port"]) for rule in egress["egress"] if "to" not in rule
                  for port in rule["ports"]}
    assert open_ports == {("UDP", 53), ("TCP", 53), ("TCP", 443)}, "DNS and HTTPS only, anywhere"


def test_roles_are_least_privilege():
    roles = resources_of_kind("Role")
    assert set(roles) == {("kubeflow", "cnnpipe-runner"), (cluster.WORKER_NAMESPACE, "cnnpipe-launcher")}
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not {"deletecollection", "escalate", "bind", "impersonate", "update"} & set(rule["verbs"])
            if rule["resources"] in (["secrets"], ["configmaps"]):
                assert rule["verbs"] == ["get"] and rule["resourceNames"], "secrets/configmaps only by name"
            # No pod creation anywhere, and no pod patch (KFP >= 2.14 with Argo >= 3.4 needs none).
            if "pods" in rule["resources"]:
                assert not {"create", "patch"} & set(rule["verbs"])
    # KFP's namespace: nothing that starts a pod, JobSets included.
    runner_grants = {(group, resource) for rule in roles[("kubeflow", "cnnpipe-runner")]["rules"]
                     for group in rule["apiGroups"] for resource in rule["resources"]}
    assert runner_grants == {("", "configmaps"), ("", "secrets"), ("", "pods"),
                             ("argoproj.io", "workflowtaskresults")}
    # The one deletion: the train step removes the JobSet it created (tests/test_jobset.py checks
    # every call run_jobset makes against the launcher Role).
    for role in roles.values():
        for rule in role["rules"]:
            if "delete" in rule["verbs"]:
                assert (rule["apiGroups"], rule["resources"]) == (["jobset.x-k8s.io"], ["jobsets"])


@pytest.mark.parametrize("spot", [False, True])
def test_gpu_node_pool_command_matches_the_compiled_placement(tmp_path, spot):
    """Runs k8s/gpu-node-pool.sh with a recording `gcloud` and checks labels and taints."""
    script = K8S / "gpu-node-pool.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    recorder = tmp_path / "gcloud"
    recorder.write_text('#!/bin/sh\nfor argument in "$@"; do echo "$argument"; done\n')
    recorder.chmod(0o755)
    environment = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", CLUSTER="ml", LOCATION="us-central1",
                       GPU_TYPE="nvidia-l4", SPOT=str(spot).lower())
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr
    arguments = result.stdout.splitlines()
    flag = {name: arguments[arguments.index(name) + 1] for name in ("--accelerator", "--node-taints", "--location")}
    assert flag["--accelerator"].startswith("type=nvidia-l4,")  # GKE derives the gke-accelerator label from it
    taints = flag["--node-taints"].split(",")
    placement = Placement(image=IMAGE, gpu_type="nvidia-l4", spot=spot)
    tasks = compile_tasks(stand_in_pipeline(placement), tmp_path / "pipeline.yaml")
    # Every taint on the pool is tolerated by the compiled GPU tasks, and nothing more is tolerated.
    tolerated = {toleration["key"] for toleration in tasks["train-model"]["kubernetes"]["tolerations"]}
    assert {taint.split("=")[0] for taint in taints} == tolerated
    assert ("--spot" in arguments) is spot
    assert all(taint.endswith(":NoSchedule") for taint in taints)


def test_gpu_node_pool_script_requires_the_cluster_name(tmp_path):
    environment = {key: value for key, value in os.environ.items() if key not in ("CLUSTER", "LOCATION")}
    result = subprocess.run(["bash", str(K8S / "gpu-node-pool.sh")], capture_output=True, text=True, env=environment)
    assert result.returncode != 0
    assert "set CLUSTER" in result.stderr
