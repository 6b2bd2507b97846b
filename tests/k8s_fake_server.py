"""A loopback HTTP server on 127.0.0.1 speaking the subset of the Kubernetes API that pipeline/jobset_run.py uses.

It lets tests drive the real `kubernetes` Python client through `run_jobset` without a cluster.
Implemented endpoints (paths as the Kubernetes API server serves them):

    POST   /apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets         201; 409 if it exists;
                                                                          422 if the body fails the CRD schema
    GET    /apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets/{name}  the JobSet with the next scripted status
    DELETE /apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets/{name}  removes it and its pods
    GET    /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...             equality selectors only
    GET    /api/v1/namespaces/{ns}/pods/{pod}/log?container=&follow=      the pod's scripted log, streamed

Everything else answers 404 with a Kubernetes `Status` body. Every request is recorded in
`server.requests`. Like the JobSet controller, the server creates one pod per worker when a
JobSet is created, labelled and annotated as JobSet and the Job controller do; a status with
`restarts: k` replaces them with the pods of restart attempt k. `status_script` is the list of
statuses the JobSet reports, one per GET, the last one repeated; `chief_logs[k]` is what the
chief of attempt k prints (the last entry repeated). A status `unavailable()` answers that GET
with 503.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

from tests.loopback_http import LoopbackServer, RecordedRequest

JOBSETS = "/apis/jobset.x-k8s.io/v1alpha2/namespaces/"
CORE = "/api/v1/namespaces/"
CRD = Path(__file__).resolve().parent / "schemas" / "jobset.x-k8s.io_jobsets.yaml"
TIMESTAMP = "2026-01-01T00:00:00Z"


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


@dataclass
class FakeKubernetesServer(LoopbackServer):
    """In-memory Kubernetes API subset on 127.0.0.1 with an ephemeral port; use as a context manager."""

    status_script: list = field(default_factory=lambda: [running(), running(), completed()])
    chief_logs: list = field(default_factory=lambda: [["cnnpipe-progress {\"phase\": \"epoch\"}", "done"]])
    jobset_api_installed: bool = True
    requests: list[RecordedRequest] = field(default_factory=list)
    jobsets: dict[tuple[str, str], dict] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)

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
            del self.jobsets[key]
            for pod_key in [pod_key for pod_key, pod in self.pods.items()
                            if pod["metadata"]["labels"]["jobset.sigs.k8s.io/jobset-name"] == key[1]]:
                del self.pods[pod_key]
            return 200, status(200, "", "deleted")[1]
        return status(405, "MethodNotAllowed", f"{method} is not supported here")

    def _create_jobset(self, namespace: str, body: dict) -> tuple[int, dict]:
        errors = sorted(self._validator.iter_errors(body), key=lambda error: list(error.path))
        if errors:
            return status(422, "Invalid", "; ".join(f"{'.'.join(map(str, error.path))}: {error.message}"
                                                  for error in errors))
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
        poll = self._polls[key]
        self._polls[key] = poll + 1
        jobset = self.jobsets[key]
        jobset["status"] = self.status_script[min(poll, len(self.status_script) - 1)]
        attempt = jobset["status"].get("restarts", 0)
        if jobset["status"].get("unavailable"):
            return jobset
        if not any(pod["metadata"]["labels"]["jobset.sigs.k8s.io/restart-attempt"] == str(attempt)
                   for pod in self.pods.values() if pod["metadata"]["namespace"] == key[0]):
            self._start_pods(jobset, attempt)
        return jobset

    def _start_pods(self, jobset: dict, attempt: int) -> None:
        """One pod per worker, as the JobSet and Job controllers label them; older attempts' pods go."""
        namespace, name = jobset["metadata"]["namespace"], jobset["metadata"]["name"]
        for key in [key for key, pod in self.pods.items() if pod["metadata"]["namespace"] == namespace
                    and pod["metadata"]["labels"]["jobset.sigs.k8s.io/jobset-name"] == name]:
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


def _handler_for(server: FakeKubernetesServer):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            url = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            with server._lock:
                server.requests.append(RecordedRequest(self.command, url.path, query, body))
                if url.path.startswith(JOBSETS):
                    code, response = server.handle_jobsets(
                        self.command, url.path[len(JOBSETS):].split("/"), query, body)
                    return self._send_json(code, response)
                parts = url.path[len(CORE):].split("/") if url.path.startswith(CORE) else []
                if self.command == "GET" and len(parts) == 2 and parts[1] == "pods":
                    return self._send_json(*server.list_pods(parts[0], query))
                log = (server.pod_log(parts[0], parts[2])
                       if self.command == "GET" and len(parts) == 4 and parts[3] == "log" else None)
                if log is None:
                    return self._send_json(*status(404, "NotFound", f"fake Kubernetes server: no route for {url.path}"))
            self._stream_log(log)

        def _send_json(self, code: int, response: dict):
            encoded = json.dumps(response).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

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

        def log_message(self, format, *args):  # keep test output quiet
            pass

    return Handler


def write_kubeconfig(path, server: "FakeKubernetesServer", namespace: str) -> None:
    """A kubeconfig whose current context is `server` with a bearer token and `namespace`."""
    import yaml

    config = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
              "clusters": [{"name": "fake", "cluster": {"server": server.host}}],
              "users": [{"name": "me", "user": {"token": "secret-token"}}],
              "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "me", "namespace": namespace}}]}
    path.write_text(yaml.safe_dump(config))
