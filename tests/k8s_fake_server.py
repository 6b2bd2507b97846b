"""A loopback HTTP server on 127.0.0.1 speaking the subset of the Kubernetes API that pipeline/jobset_run.py uses.

It lets tests drive the real `kubernetes` Python client through `run_jobset` without a cluster.
Implemented endpoints (paths as the Kubernetes API server serves them):

    POST   /apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets         201; 409 if it exists;
                                                                          422 if the body fails the CRD schema
    GET    /apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets/{name}  the JobSet with the next scripted status
    DELETE /apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets/{name}  removes it and its pods
    GET    /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...             equality selectors only
    GET    /api/v1/namespaces/{ns}/pods/{pod}/log?container=&follow=      the pod's scripted log, streamed
    POST   /apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies     201; 409 if it exists; 422 if
                                                                          kubernetes-validate refuses it

Everything else answers 404 with a Kubernetes `Status` body. Every request is recorded in
`server.requests`. Like the garbage collector, deleting a JobSet deletes the NetworkPolicies
whose ownerReferences name its uid. Like the JobSet controller, the server creates one pod per
worker when a JobSet is created, labelled and annotated as JobSet and the Job controller do; a status with
`restarts: k` replaces them with the pods of restart attempt k. `status_script` is the list of
statuses the JobSet reports, one per GET, the last one repeated; `chief_logs[k]` is what the
chief of attempt k prints (the last entry repeated). A status `unavailable()` answers that GET
with 503. A `pod_failed(...)` entry is an event rather than a status: one worker pod fails (an
exit code, a pod condition such as DisruptionTarget) and the server decides what follows as the
Job and JobSet controllers do: the Job's podFailurePolicy, then backoffLimit, then the JobSet's
failurePolicy rules (first match by reason and message pattern) against maxRestarts.
`worker_exited(...)` does the same for a real worker process's exit code, when it happens.

Also as the real cluster does: failure policy rule names are checked as JobSet's webhook checks
them (422), deleting a pod with `delete_pod` garbage-collects the JobSets it owns
(ownerReferences), and `server.inject(method, path_part, 409, 503, HANG, ...)` makes chosen
requests fail (tests/loopback_http.py).
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

from tests.loopback_http import JsonRequestHandler, LoopbackServer, RecordedRequest

JOBSETS = "/apis/jobset.x-k8s.io/v1alpha2/namespaces/"
NETWORK_POLICIES = "/apis/networking.k8s.io/v1/namespaces/"
# The Kubernetes version whose schemas objects are validated against: the oldest minor GKE's
# regular channel still offers (tests/test_manifests.py, tests/test_security.py).
KUBERNETES_VERSION = "1.33.0"
CORE = "/api/v1/namespaces/"
CRD = Path(__file__).resolve().parent / "schemas" / "jobset.x-k8s.io_jobsets.yaml"
TIMESTAMP = "2026-01-01T00:00:00Z"
# What JobSet's validating webhook accepts as a failure policy rule name.
RULE_NAME_PATTERN = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


@functools.lru_cache(maxsize=None)
def jobset_schema(version: str = "v1alpha2") -> dict:
    """The OpenAPI v3 schema of one JobSet version, from the CRD in tests/schemas/ (read once: 10,000 lines)."""
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (served,) = [entry for entry in crd["spec"]["versions"] if entry["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def condition(kind: str, reason: str = "", message: str = "") -> dict:
    """A true JobSet status condition."""
    return {"type": kind, "status": "True", "reason": reason or kind, "message": message,
            "lastTransitionTime": TIMESTAMP}


def running(restarts: int = 0) -> dict:
    return {"restarts": restarts, "conditions": []}


def completed(restarts: int = 0) -> dict:
    return {"restarts": restarts, "terminalState": "Completed",
            "conditions": [condition("Completed", "AllJobsCompleted", "jobset completed successfully")]}


def failed(message: str = "jobset failed due to reaching max number of restarts", reason: str = "FailedJobs",
           restarts: int = 0) -> dict:
    return {"restarts": restarts, "terminalState": "Failed", "conditions": [condition("Failed", reason, message)]}


def unavailable() -> dict:
    """Not a status: the GET that draws it is answered 503, as during an API server restart."""
    return {"unavailable": True}


def pod_failed(worker: int = 1, exit_code: int = 137, condition: str | None = None) -> dict:
    """Not a status: worker `worker`'s pod ends with `exit_code` and, when given, the true pod
    `condition` (DisruptionTarget is what a preemption or a node drain sets); the server applies
    the JobSet's own policies to it and reports the status that results."""
    return {"pod_failed": {"worker": worker, "exit_code": exit_code, "condition": condition}}


def job_failed(reason: str = "DeadlineExceeded", message: str = "Job was active longer than specified deadline") -> dict:
    """Not a status: the workers' Job fails by itself (its deadline passed, say); the server applies
    the JobSet's failure policy to it."""
    return {"job_failed": {"reason": reason, "message": message}}


def job_failure(job_spec: dict, pod: str, exit_code: int, condition: str | None) -> tuple[str, str] | None:
    """(reason, message) of the Job failure one failed pod causes, or None when the Job keeps going.

    As the Job controller decides: the first podFailurePolicy rule that matches the pod's
    container exit code or its true conditions (FailJob fails the Job, Ignore does not count the
    pod), else the pod counts against backoffLimit.
    """
    for index, rule in enumerate(job_spec.get("podFailurePolicy", {}).get("rules", [])):
        exit_codes = rule.get("onExitCodes")
        if exit_codes:
            matched = (exit_code in exit_codes["values"]) == (exit_codes["operator"] == "In")
            what = f"Container {exit_codes.get('containerName', 'worker')} for pod {pod} failed with exit code {exit_code}"
        else:
            matched = condition is not None and any(
                pattern["type"] == condition and pattern.get("status", "True") == "True"
                for pattern in rule.get("onPodConditions", []))
            what = f"Pod {pod} has condition {condition}"
        if not matched:
            continue
        if rule["action"] == "Ignore":
            return None
        if rule["action"] == "FailJob":
            return "PodFailurePolicy", f"{what} matching FailJob rule at index {index}"
        break  # Count: counts against backoffLimit
    if job_spec.get("backoffLimit", 6) == 0:
        return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    return None


def jobset_failure_action(failure_policy: dict, reason: str, message: str) -> str:
    """The action of the first failurePolicy rule matching a Job failure (RestartJobSet when none does)."""
    for rule in failure_policy.get("rules", []):
        reasons, patterns = rule.get("onJobFailureReasons", []), rule.get("onJobFailureMessagePatterns", [])
        if (not reasons or reason in reasons) and (not patterns or any(re.search(pattern, message)
                                                                       for pattern in patterns)):
            return rule["action"]
    return "RestartJobSet"


@dataclass
class FakeKubernetesServer(LoopbackServer):
    """In-memory Kubernetes API subset on 127.0.0.1 with an ephemeral port; use as a context manager."""

    status_script: list = field(default_factory=lambda: [running(), running(), completed()])
    chief_logs: list = field(default_factory=lambda: [["cnnpipe-progress {\"phase\": \"epoch\"}", "done"]])
    jobset_api_installed: bool = True
    requests: list[RecordedRequest] = field(default_factory=list)
    jobsets: dict[tuple[str, str], dict] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)
    network_policies: dict[tuple[str, str], dict] = field(default_factory=dict)
    # Resources (e.g. "networkpolicies") the caller's Role does not grant: 403 for every request.
    forbidden: set[str] = field(default_factory=set)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._polls: dict[tuple[str, str], int] = {}
        self._validator = jsonschema.Draft7Validator(jobset_schema())
        self.serve(_handler_for(self))

    def requests_to(self, method: str, path_part: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.method == method and path_part in request.path]

    # ---- JobSets --------------------------------------------------------------------------
    def handle_jobsets(self, method: str, parts: list[str], query: dict, body) -> tuple[int, dict]:
        """parts: [namespace, "jobsets"] or [namespace, "jobsets", name]."""
        if not self.jobset_api_installed:
            return status(404, "NotFound", "the server could not find the requested resource")
        namespace = parts[0]
        if method == "POST" and len(parts) == 2:
            return self._create_jobset(namespace, body)
        key = (namespace, parts[2]) if len(parts) == 3 else None
        if key not in self.jobsets:
            return status(404, "NotFound", f'jobsets.jobset.x-k8s.io "{key and key[1]}" not found')
        if method == "GET":
            jobset = self._next_status(key)
            if jobset["status"].get("unavailable"):
                return status(503, "ServiceUnavailable", "the API server is restarting")
            return 200, jobset
        if method == "DELETE":
            self._delete_jobset(key)
            return 200, status(200, "", "deleted")[1]
        return status(405, "MethodNotAllowed", f"{method} is not supported here")

    def _create_jobset(self, namespace: str, body: dict) -> tuple[int, dict]:
        errors = sorted(self._validator.iter_errors(body), key=lambda error: list(error.path))
        if errors:
            return status(422, "Invalid", "; ".join(f"{'.'.join(map(str, error.path))}: {error.message}"
                                                  for error in errors))
        for rule in body["spec"].get("failurePolicy", {}).get("rules", []):
            if not RULE_NAME_PATTERN.match(rule["name"]):
                return status(422, "Invalid", f"spec.failurePolicy.rules: invalid rule name {rule['name']!r}")
        name = body["metadata"]["name"]
        if (namespace, name) in self.jobsets:
            return status(409, "AlreadyExists", f'jobsets.jobset.x-k8s.io "{name}" already exists')
        jobset = json.loads(json.dumps(body))
        jobset["metadata"].update(namespace=namespace, uid=f"uid-{name}", creationTimestamp=TIMESTAMP)
        jobset["status"] = {}
        self.jobsets[(namespace, name)] = jobset
        self._polls[(namespace, name)] = 0
        self._start_pods(jobset, attempt=0)
        return 201, jobset

    def _next_status(self, key) -> dict:
        if key not in self._polls:  # put there by the test, not created through the API: as it is
            return dict(self.jobsets[key], status=self.jobsets[key].get("status") or {})
        poll = self._polls[key]
        self._polls[key] = poll + 1
        jobset = self.jobsets[key]
        scripted = self.status_script[min(poll, len(self.status_script) - 1)]
        if "pod_failed" in scripted or "job_failed" in scripted:
            if poll < len(self.status_script):  # a repeated last entry is not a new failure
                jobset["status"] = self._after_failure(jobset, scripted)
        else:
            jobset["status"] = scripted
        attempt = jobset["status"].get("restarts", 0)
        if jobset["status"].get("unavailable"):
            return jobset
        if not any(pod["metadata"]["labels"].get("jobset.sigs.k8s.io/restart-attempt") == str(attempt)
                   for pod in self.pods.values() if pod["metadata"]["namespace"] == key[0]):
            self._start_pods(jobset, attempt)
        return jobset

    def _after_failure(self, jobset: dict, event: dict) -> dict:
        """The JobSet's status after one of its pods or its Job failed, as the Job and JobSet controllers decide."""
        current = dict(jobset.get("status") or {}, conditions=[])
        current.setdefault("restarts", 0)
        current.setdefault("restartsCountTowardsMax", 0)
        if "job_failed" in event:
            failure = (event["job_failed"]["reason"], event["job_failed"]["message"])
        else:
            pod_failure = event["pod_failed"]
            pod = f"{jobset['metadata']['namespace']}/{jobset['metadata']['name']}-worker-0-{pod_failure['worker']}"
            (replicated_job,) = jobset["spec"]["replicatedJobs"]
            failure = job_failure(replicated_job["template"]["spec"], pod, pod_failure["exit_code"],
                                  pod_failure["condition"])
        if failure is None:
            return current
        policy = jobset["spec"].get("failurePolicy", {})
        action = jobset_failure_action(policy, *failure)
        if action == "FailJobSet":
            return failed(f"{failure[1]} (failure policy rule matched)", "FailureRuleMatched", current["restarts"])
        counted = action in ("RestartJobSet", "RestartJob")
        if counted and current["restartsCountTowardsMax"] >= policy.get("maxRestarts", 0):
            return failed(restarts=current["restarts"], reason="ReachedMaxRestarts")
        return dict(current, restarts=current["restarts"] + 1,
                    restartsCountTowardsMax=current["restartsCountTowardsMax"] + counted)

    def worker_exited(self, namespace: str, name: str, worker: int, exit_code: int) -> dict:
        """Worker `worker` of a live JobSet has just exited with `exit_code` (a real process the test
        ran with the pod's environment): the controllers decide as for a scripted `pod_failed`, and
        from now on the JobSet keeps the status that results (its script is over). Returns that status."""
        with self._lock:
            key = (namespace, name)
            jobset = self.jobsets[key]
            jobset["status"] = self._after_failure(jobset, pod_failed(worker, exit_code))
            self._polls.pop(key, None)
            return jobset["status"]

    def add_pod(self, namespace: str, name: str, uid: str) -> None:
        """A pod that is not a worker, e.g. the train task's own pod that launches a JobSet."""
        self.pods[(namespace, name)] = {
            "apiVersion": "v1", "kind": "Pod", "log": [],
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": {}, "annotations": {},
                         "creationTimestamp": TIMESTAMP},
            "spec": {"containers": []}, "status": {"phase": "Running"}}

    def delete_pod(self, namespace: str, name: str) -> None:
        """Deletes a pod, and (as the garbage collector does) every JobSet it owns with its pods."""
        with self._lock:
            uid = self.pods.pop((namespace, name))["metadata"].get("uid")
            for key, jobset in list(self.jobsets.items()):
                owners = jobset["metadata"].get("ownerReferences", [])
                if key[0] == namespace and any(owner.get("uid") == uid for owner in owners):
                    self._delete_jobset(key)

    def _delete_jobset(self, key) -> None:
        uid = self.jobsets.pop(key)["metadata"].get("uid")
        for pod_key in [pod_key for pod_key, pod in self.pods.items()
                        if pod["metadata"]["labels"].get("jobset.sigs.k8s.io/jobset-name") == key[1]]:
            del self.pods[pod_key]
        for policy_key, policy in list(self.network_policies.items()):
            if policy_key[0] == key[0] and uid in [owner["uid"] for owner in policy["metadata"].get("ownerReferences", [])]:
                del self.network_policies[policy_key]

    def _start_pods(self, jobset: dict, attempt: int) -> None:
        """One pod per worker, as the JobSet and Job controllers label them; older attempts' pods go."""
        namespace, name = jobset["metadata"]["namespace"], jobset["metadata"]["name"]
        for key in [key for key, pod in self.pods.items() if pod["metadata"]["namespace"] == namespace
                    and pod["metadata"]["labels"].get("jobset.sigs.k8s.io/jobset-name") == name]:
            del self.pods[key]
        (replicated_job,) = jobset["spec"]["replicatedJobs"]
        for index in range(replicated_job["template"]["spec"]["completions"]):
            pod_name = f"{name}-{replicated_job['name']}-0-{index}-a{attempt}"
            labels = {"jobset.sigs.k8s.io/jobset-name": name,
                      "jobset.sigs.k8s.io/replicatedjob-name": replicated_job["name"],
                      "jobset.sigs.k8s.io/job-index": "0",
                      "jobset.sigs.k8s.io/restart-attempt": str(attempt),
                      "batch.kubernetes.io/job-completion-index": str(index)}
            self.pods[(namespace, pod_name)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": namespace, "labels": labels,
                             "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
                             "creationTimestamp": TIMESTAMP},
                "spec": {"containers": replicated_job["template"]["spec"]["template"]["spec"]["containers"]},
                "status": {"phase": "Running"},
                "log": self.chief_logs[min(attempt, len(self.chief_logs) - 1)] if index == 0
                else [f"worker {index} log"],
            }

    # ---- NetworkPolicies ------------------------------------------------------------------
    def handle_network_policies(self, method: str, parts: list[str], body) -> tuple[int, dict]:
        """parts: [namespace, "networkpolicies"]."""
        import kubernetes_validate

        namespace = parts[0]
        if "networkpolicies" in self.forbidden:
            return status(403, "Forbidden", 'networkpolicies.networking.k8s.io is forbidden: User '
                                            '"system:serviceaccount:kubeflow:cnnpipe-runner" cannot create it')
        if method == "POST" and len(parts) == 2:
            try:
                kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                return status(422, "Invalid", str(error))
            key = (namespace, body["metadata"]["name"])
            if key in self.network_policies:
                return status(409, "AlreadyExists", f'networkpolicies.networking.k8s.io "{key[1]}" already exists')
            self.network_policies[key] = json.loads(json.dumps(body))
            return 201, self.network_policies[key]
        return status(405, "MethodNotAllowed", f"{method} is not supported here")

    # ---- pods -----------------------------------------------------------------------------
    def list_pods(self, namespace: str, query: dict) -> tuple[int, dict]:
        wanted = dict(pair.split("=", 1) for pair in query.get("labelSelector", "").split(",") if pair)
        items = [{key: value for key, value in pod.items() if key != "log"} for pod in self.pods.values()
                 if pod["metadata"]["namespace"] == namespace
                 and all(pod["metadata"]["labels"].get(key) == value for key, value in wanted.items())]
        return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    def pod_log(self, namespace: str, name: str) -> list[str] | None:
        pod = self.pods.get((namespace, name))
        return None if pod is None else list(pod["log"])


def status(code: int, reason: str, message: str) -> tuple[int, dict]:
    """A Kubernetes `Status` response."""
    return code, {"apiVersion": "v1", "kind": "Status", "status": "Failure" if code >= 400 else "Success",
                  "reason": reason, "message": message, "code": code}


def injected_status(code: int) -> tuple[int, dict]:
    """The `Status` an injected fault answers with."""
    reasons = {409: "AlreadyExists", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
    return status(code, reasons.get(code, "Unknown"), f"injected HTTP {code}")


def _handler_for(server: FakeKubernetesServer):
    class Handler(JsonRequestHandler):
        def _serve(self):
            path, query, payload = self.read_request()
            body = json.loads(payload) if payload else None
            if self.answered_fault(server, path, query, injected_status):
                return
            with server._lock:
                server.requests.append(RecordedRequest(self.command, path, query, body))
                if path.startswith(JOBSETS):
                    code, response = server.handle_jobsets(
                        self.command, path[len(JOBSETS):].split("/"), query, body)
                    return self.send_json(code, response)
                if path.startswith(NETWORK_POLICIES):
                    return self.send_json(*server.handle_network_policies(
                        self.command, path[len(NETWORK_POLICIES):].split("/"), body))
                parts = path[len(CORE):].split("/") if path.startswith(CORE) else []
                if self.command == "GET" and len(parts) == 2 and parts[1] == "pods":
                    return self.send_json(*server.list_pods(parts[0], query))
                log = (server.pod_log(parts[0], parts[2])
                       if self.command == "GET" and len(parts) == 4 and parts[3] == "log" else None)
                if log is None:
                    return self.send_json(*status(404, "NotFound", f"fake Kubernetes server: no route for {path}"))
            self._stream_log(log)

        def _stream_log(self, lines: list[str]):
            """Streams the log a line at a time without a length, as `follow=true` does until the pod ends."""
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for line in lines:
                self.wfile.write(line.encode() + b"\n")
                self.wfile.flush()
                time.sleep(0.01)

        do_GET = do_POST = do_DELETE = _serve

    return Handler


def write_kubeconfig(path, server: "FakeKubernetesServer", namespace: str) -> None:
    """A kubeconfig whose current context is `server` with a bearer token and `namespace`."""
    import yaml

    config = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
              "clusters": [{"name": "fake", "cluster": {"server": server.host}}],
              "users": [{"name": "me", "user": {"token": "secret-token"}}],
              "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "me", "namespace": namespace}}]}
    path.write_text(yaml.safe_dump(config))
