"""What a platform team's security review reads: the scanner's verdict on k8s/ and the Dockerfile,
the admission policy of the workers' namespace, and the generated worker JobSet and NetworkPolicy.

checkov (the scanner) runs from its own virtual environment, .venv-checkov, which `make test`
builds from constraints-checkov.txt; offline (`--skip-download`). It does not read JobSets, so
the worker pods are scanned as the Jobs the JobSet controller makes of them.

The admission policy is CEL, evaluated here by cel-python (the CEL of the Kubernetes API server
adds type checking against the Pod schema and a few library functions the policy does not use).
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import celpy
import pytest
import yaml
from celpy import celtypes

from pipeline import cluster

REPOSITORY = Path(__file__).resolve().parent.parent
K8S = REPOSITORY / "k8s"
GENERATED = K8S / "generated"
CHECKOV = REPOSITORY / ".venv-checkov" / "bin" / "checkov"
# The controllers' labels on every pod of a JobSet (the NetworkPolicy selects on the first).
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"


# ---- the worker pods as the controllers create them -----------------------------------------
def generated(name: str) -> dict:
    return yaml.safe_load((GENERATED / name).read_text())


def worker_job(jobset: dict) -> dict:
    """The Job the JobSet controller creates for the JobSet's one replicated job."""
    (replicated,) = jobset["spec"]["replicatedJobs"]
    job_spec = copy.deepcopy(replicated["template"]["spec"])
    job_spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update({
        JOBSET_NAME_LABEL: jobset["metadata"]["name"], REPLICATED_JOB_LABEL: replicated["name"]})
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"{jobset['metadata']['name']}-{replicated['name']}-0",
                         "namespace": jobset["metadata"]["namespace"], "labels": jobset["metadata"]["labels"]},
            "spec": job_spec}


def worker_pod(jobset: dict) -> dict:
    """Worker 0's pod as the Job controller asks the API server to admit it."""
    template = worker_job(jobset)["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{jobset['metadata']['name']}-worker-0-0-abcde",
                         "namespace": jobset["metadata"]["namespace"], **template["metadata"]},
            "spec": copy.deepcopy(template["spec"])}


# ---- checkov ---------------------------------------------------------------------------------
def checkov(directory: Path) -> dict[str, dict]:
    """checkov's report on a directory: framework -> {"summary", "failed", "skipped"}."""
    if not CHECKOV.exists():
        pytest.fail(f"checkov is missing from {CHECKOV.parent}; run `make test` (it builds .venv-checkov)")
    result = subprocess.run([str(CHECKOV), "--skip-download", "--framework", "kubernetes", "dockerfile",
                             "--directory", str(directory), "--output", "json"],
                            capture_output=True, text=True, cwd=directory)
    assert result.returncode in (0, 1), result.stderr  # 1: some check failed
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return {report["check_type"]: {"summary": report["summary"],
                                   "passed": report["results"].get("passed_checks", []),
                                   "failed": report["results"].get("failed_checks", []),
                                   "skipped": report["results"].get("skipped_checks", [])}
            for report in reports}


def scanned_tree(tmp_path: Path) -> Path:
    """k8s/ with the generated JobSets' workers as Jobs (checkov reads no JobSet), and the Dockerfile."""
    tree = tmp_path / "scanned"
    (tree / "docker").mkdir(parents=True)
    (tree / "docker" / "Dockerfile").write_text((REPOSITORY / "docker" / "Dockerfile").read_text())
    for path in K8S.rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        target = tree / "k8s" / path.relative_to(K8S)
        target.parent.mkdir(parents=True, exist_ok=True)
        documents = [document for document in yaml.safe_load_all(path.read_text()) if document]
        documents = [worker_job(document) if document["kind"] == "JobSet" else document for document in documents]
        target.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return tree


def failures(report: dict) -> list[str]:
    return [f"{check['check_id']} {check['check_name']}: {check['resource']} ({check['file_path']})"
            for check in report["failed"]]


def test_checkov_passes_k8s_the_worker_pods_and_the_dockerfile(tmp_path):
    reports = checkov(scanned_tree(tmp_path))
    kubernetes, dockerfile = reports["kubernetes"], reports["dockerfile"]
    assert failures(kubernetes) == [] and failures(dockerfile) == []
    assert kubernetes["summary"]["parsing_errors"] == 0 and dockerfile["summary"]["parsing_errors"] == 0
    # The worker Job was scanned: the checks of a pod's securityContext ran on it, and passed.
    job = worker_job(generated("worker-jobset.yaml"))
    passed_on_job = {check["check_id"] for check in kubernetes["passed"]
                     if check["resource"] == f"Job.{job['metadata']['namespace']}.{job['metadata']['name']}"}
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28", "CKV_K8S_38", "CKV_K8S_43"} <= passed_on_job
    # ... and its pods have a NetworkPolicy (the generated one selects them).
    assert any(check["check_id"] == "CKV2_K8S_6" and check["resource"].startswith(f"Pod.{cluster.WORKER_NAMESPACE}.")
               for check in kubernetes["passed"])
    # Every suppression says why.
    for report in reports.values():
        for check in report["skipped"]:
            assert len(check.get("check_result", {}).get("suppress_comment", "")) > 20, check["check_id"]


def test_checkov_fails_an_unhardened_worker_pod(tmp_path):
    """Guards the scan above: the same pod without its securityContext and token setting fails."""
    jobset = generated("worker-jobset.yaml")
    pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    del pod["securityContext"], pod["automountServiceAccountToken"]
    for container in pod["containers"]:
        del container["securityContext"]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(worker_job(jobset)))
    failed = {check["check_id"] for check in checkov(tmp_path)["kubernetes"]["failed"]}
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31", "CKV_K8S_37",
            "CKV_K8S_38", "CKV2_K8S_6"} <= failed  # CKV2_K8S_6: no NetworkPolicy selects its pods here


# ---- the admission policy --------------------------------------------------------------------
def admission_policy() -> tuple[dict, dict]:
    """(ValidatingAdmissionPolicy, its binding) from k8s/admission/."""
    documents = {document["kind"]: document
                 for document in yaml.safe_load_all((K8S / "admission" / "worker-pod-policy.yaml").read_text())}
    return documents["ValidatingAdmissionPolicy"], documents["ValidatingAdmissionPolicyBinding"]


def refusals(pod: dict, repository: str) -> list[str]:
    """The messages of the policy's validations that refuse `pod` (empty: admitted).

    The placeholder IMAGE_REPOSITORY is replaced as docs/cluster.md's apply command does. An
    expression that cannot be evaluated refuses, as it does under the policy's failurePolicy Fail.
    """
    policy, _ = admission_policy()
    environment = celpy.Environment()

    def evaluate(expression: str, activation: dict):
        expression = expression.replace("IMAGE_REPOSITORY", repository)
        return environment.program(environment.compile(expression)).evaluate(activation)

    activation = {"object": celpy.json_to_cel(pod)}
    variables = celtypes.MapType({})
    for variable in policy["spec"]["variables"]:
        variables[celtypes.StringType(variable["name"])] = evaluate(
            variable["expression"], {**activation, "variables": variables})
    activation["variables"] = variables
    refused = []
    for validation in policy["spec"]["validations"]:
        try:
            result = evaluate(validation["expression"], activation)
        except celpy.CELEvalError:
            result = None  # an expression that fails refuses, as the API server's failurePolicy Fail does
        if not (isinstance(result, celtypes.BoolType) and result):
            refused.append(validation.get("message") or str(evaluate(validation["messageExpression"], activation)))
    return refused


REPOSITORY_OF_EXAMPLE = "us-central1-docker.pkg.dev/PROJECT_ID/cnnpipe/cnnpipe"


def example_pod() -> dict:
    return worker_pod(generated("worker-jobset.yaml"))


def test_the_policy_admits_the_worker_pods_a_train_step_creates():
    pod = example_pod()
    assert pod["spec"]["containers"][0]["image"].startswith(REPOSITORY_OF_EXAMPLE + "@sha256:")
    assert refusals(pod, REPOSITORY_OF_EXAMPLE) == []
    tagged = copy.deepcopy(pod)
    tagged["spec"]["containers"][0]["image"] = REPOSITORY_OF_EXAMPLE + ":0.1.0"
    assert refusals(tagged, REPOSITORY_OF_EXAMPLE) == []


def changed(change) -> dict:
    pod = example_pod()
    change(pod["spec"], pod["spec"]["containers"][0])
    return pod


@pytest.mark.parametrize("change, refusal", [
    (lambda pod, container: pod.update(serviceAccountName="default"), "service account cnnpipe-worker"),
    (lambda pod, container: pod.pop("serviceAccountName"), "service account cnnpipe-worker"),
    (lambda pod, container: pod.update(automountServiceAccountToken=True), "automountServiceAccountToken"),
    (lambda pod, container: pod.pop("automountServiceAccountToken"), "automountServiceAccountToken"),
    (lambda pod, container: container.update(image="python:3.11"), "project image"),
    (lambda pod, container: container.update(image=REPOSITORY_OF_EXAMPLE + "-evil:1"), "project image"),
    (lambda pod, container: pod.setdefault("initContainers", []).append(
        {**copy.deepcopy(container), "name": "init", "image": "busybox"}), "project image"),
    (lambda pod, container: pod.update(hostNetwork=True), "host namespace"),
    (lambda pod, container: pod.update(hostPID=True), "host namespace"),
    (lambda pod, container: pod["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    (lambda pod, container: pod["securityContext"].update(runAsUser=0), "runAsNonRoot"),
    (lambda pod, container: pod.pop("securityContext"), "runAsNonRoot"),
    (lambda pod, container: pod["securityContext"].update(seccompProfile={"type": "Unconfined"}), "RuntimeDefault"),
    (lambda pod, container: container["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    (lambda pod, container: container["securityContext"].update(privileged=True), "not privileged"),
    (lambda pod, container: container["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    (lambda pod, container: container["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop ALL"),
    (lambda pod, container: container["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "add none"),
    (lambda pod, container: container.pop("securityContext"), "allowPrivilegeEscalation"),
    (lambda pod, container: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "emptyDir"),
    (lambda pod, container: pod["volumes"].append({"name": "key", "secret": {"secretName": "x"}}), "emptyDir"),
    (lambda pod, container: container["ports"][0].update(hostPort=2222), "host ports"),
    (lambda pod, container: container["resources"]["limits"].pop("memory"), "limits"),
])
def test_the_policy_refuses_pods_that_are_not_cnnpipe_workers(change, refusal):
    refused = refusals(changed(change), REPOSITORY_OF_EXAMPLE)
    assert len(refused) == 1 and refusal in refused[0], refused


def test_the_policy_binds_to_the_workers_namespace_only():
    policy, binding = admission_policy()
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["matchResources"] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.WORKER_NAMESPACE}}}
    assert policy["spec"]["failurePolicy"] == "Fail"
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                      "resources": ["pods", "pods/ephemeralcontainers"]}]
    # The service account it admits is the one the worker pods run as.
    assert f"== '{cluster.WORKER_SERVICE_ACCOUNT}'" in policy["spec"]["validations"][0]["expression"]
