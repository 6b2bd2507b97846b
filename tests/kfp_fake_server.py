"""A loopback HTTP server speaking the subset of the KFP v2beta1 REST API that kfp.Client uses.

It exists so tests can drive the real `kfp.Client` (and `pipeline.cluster`) end to end without a
Kubernetes cluster. Implemented endpoints (paths as in KFP 2.x's `kfp_server_api`):

    GET    /apis/v2beta1/healthz
    POST   /apis/v2beta1/pipelines/upload            multipart `uploadfile`, ?name=&description=
    POST   /apis/v2beta1/pipelines/upload_version    multipart `uploadfile`, ?name=&pipelineid=
    GET    /apis/v2beta1/pipelines                   ?filter= (display_name EQUALS)
    GET    /apis/v2beta1/pipelines/{id}/versions
    POST   /apis/v2beta1/experiments
    GET    /apis/v2beta1/experiments                 ?filter= (display_name EQUALS)
    POST   /apis/v2beta1/runs
    GET    /apis/v2beta1/runs/{id}                   advances the scripted state progression
    POST   /apis/v2beta1/recurringruns
    GET    /apis/v2beta1/recurringruns               ?filter= (display_name EQUALS)
    GET    /apis/v2beta1/recurringruns/{id}
    DELETE /apis/v2beta1/recurringruns/{id}

Everything else answers 404 with a KFP-style error body. Every request is recorded in
`server.requests` (method, path, query, parsed body) so tests can check what the client sent.
Faults come from `server.inject(method, path_part, 503, HANG, ...)` (tests/loopback_http.py).
With `multi_user=True` the server behaves like a multi-user (Kubeflow profiles) backend: healthz
says so, and creating or listing experiments and recurring runs needs a namespace; experiments
and recurring runs are listed per namespace.
Runs follow `server.run_script`: a list of `(run_state, [task, ...])` snapshots, one returned per
GET of the run, the last one repeated; a task is a dict with at least `display_name` and `state`.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
from dataclasses import dataclass, field

from tests.loopback_http import JsonRequestHandler, LoopbackServer, RecordedRequest

API = "/apis/v2beta1"
CREATED_AT = "2025-01-01T00:00:00Z"
# What a multi-user backend answers when a call lacks the namespace of a Kubeflow profile.
NAMESPACE_REQUIRED = "Invalid input error: In multi-user mode, a namespace is required"


def successful_script(task_names=("prep", "train", "evaluate", "report")):
    """A run that starts pending, runs each task in turn and succeeds."""
    snapshots = [("PENDING", [])]
    finished = []
    for name in task_names:
        snapshots.append(("RUNNING", finished + [{"display_name": name, "state": "RUNNING"}]))
        finished = finished + [{"display_name": name, "state": "SUCCEEDED"}]
    snapshots.append(("SUCCEEDED", finished))
    return snapshots


def failing_script(failed_task="train", message="OOMKilled: container exceeded its memory limit"):
    """A run whose `failed_task` fails after prep succeeded."""
    return [
        ("RUNNING", [{"display_name": "prep", "state": "RUNNING"}]),
        ("RUNNING", [{"display_name": "prep", "state": "SUCCEEDED"},
                     {"display_name": failed_task, "state": "RUNNING"}]),
        ("FAILED", [{"display_name": "prep", "state": "SUCCEEDED"},
                    {"display_name": failed_task, "state": "FAILED",
                     "error": {"code": 9, "message": message}}]),
    ]


@dataclass
class FakeKfpServer(LoopbackServer):
    """In-memory KFP backend on 127.0.0.1 with an ephemeral port; use as a context manager."""

    run_script: list = field(default_factory=successful_script)
    multi_user: bool = False
    requests: list[RecordedRequest] = field(default_factory=list)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, list[dict]] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        self._ids = itertools.count(1)
        self._run_polls: dict[str, int] = {}
        self._lock = threading.Lock()
        self.serve(_handler_for(self))

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests with this method and path (path without /apis/v2beta1)."""
        return [request for request in self.requests
                if request.method == method and request.path == API + path]

    def new_id(self, prefix: str) -> str:
        """A readable unique id such as `run-3`."""
        return f"{prefix}-{next(self._ids)}"

    # ---- request dispatch -------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body,
               authorization: str | None = None) -> tuple[int, dict]:
        """Routes one request; returns (HTTP status, JSON response)."""
        with self._lock:
            self.requests.append(RecordedRequest(method, path, query, body, authorization))
            route = path[len(API):] if path.startswith(API) else None
            parts = [part for part in (route or "").split("/") if part]
            if route is None:
                return _not_found(path)
            if method == "GET" and parts == ["healthz"]:
                return 200, {"multi_user": self.multi_user, "pipeline_store": "database"}
            if self.multi_user and self._lacks_namespace(method, parts, query, body):
                return 400, {"code": 3, "message": NAMESPACE_REQUIRED}
            if method == "POST" and parts == ["pipelines", "upload"]:
                return self._upload_pipeline(query, body)
            if method == "POST" and parts == ["pipelines", "upload_version"]:
                return self._upload_version(query, body)
            if method == "GET" and parts == ["pipelines"]:
                return 200, {"pipelines": _filtered(self.pipelines.values(), query)}
            if method == "GET" and len(parts) == 3 and parts[0] == "pipelines" and parts[2] == "versions":
                versions = self.versions.get(parts[1], [])
                return 200, {"pipeline_versions": list(reversed(versions)), "total_size": len(versions)}
            if method == "POST" and parts == ["experiments"]:
                return self._create(self.experiments, "experiment", "experiment_id", body)
            if method == "GET" and parts == ["experiments"]:
                return 200, {"experiments": _in_namespace(_filtered(self.experiments.values(), query), query)}
            if method == "POST" and parts == ["runs"]:
                return self._create(self.runs, "run", "run_id", body, state="PENDING")
            if method == "GET" and len(parts) == 2 and parts[0] == "runs":
                return self._get_run(parts[1])
            if method == "POST" and parts == ["recurringruns"]:
                experiment = self.experiments.get((body or {}).get("experiment_id"), {})
                return self._create(self.recurring_runs, "recurring", "recurring_run_id", body,
                                    status="ENABLED", namespace=experiment.get("namespace", ""))
            if method == "GET" and parts == ["recurringruns"]:
                listed = _filtered(self.recurring_runs.values(), query)
                return 200, {"recurringRuns": _in_namespace(listed, query)}
            if len(parts) == 2 and parts[0] == "recurringruns" and parts[1] in self.recurring_runs:
                if method == "GET":
                    return 200, self.recurring_runs[parts[1]]
                if method == "DELETE":
                    del self.recurring_runs[parts[1]]
                    return 200, {}
            return _not_found(path)

    def _lacks_namespace(self, method, parts, query, body) -> bool:
        """Whether a call that needs a profile's namespace in multi-user mode comes without one."""
        if parts == ["experiments"]:
            return not (query.get("namespace") if method == "GET" else (body or {}).get("namespace"))
        return method == "GET" and parts == ["recurringruns"] and not (
            query.get("namespace") or query.get("experiment_id"))

    def _upload_pipeline(self, query, body):
        name = query.get("name") or query.get("display_name")
        if any(pipeline["display_name"] == name for pipeline in self.pipelines.values()):
            return 409, {"error": f"pipeline {name!r} already exists", "code": 6,
                         "message": f"pipeline {name!r} already exists"}
        pipeline_id = self.new_id("pipeline")
        pipeline = {"pipeline_id": pipeline_id, "display_name": name, "name": name,
                    "description": query.get("description", ""), "created_at": CREATED_AT}
        self.pipelines[pipeline_id] = pipeline
        # Like the real backend, the first upload also creates the first version.
        self._add_version(pipeline_id, name, body)
        return 200, pipeline

    def _upload_version(self, query, body):
        pipeline_id = query.get("pipelineid")
        if pipeline_id not in self.pipelines:
            return 404, {"code": 5, "message": f"pipeline {pipeline_id!r} not found"}
        name = query.get("name") or query.get("display_name")
        if any(version["display_name"] == name for version in self.versions[pipeline_id]):
            return 409, {"code": 6, "message": f"version {name!r} already exists"}
        return 200, self._add_version(pipeline_id, name, body)

    def _add_version(self, pipeline_id, name, package_text):
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": self.new_id("version"),
                   "display_name": name, "name": name, "created_at": CREATED_AT,
                   "package_text": package_text}
        self.versions.setdefault(pipeline_id, []).append(version)
        return {key: value for key, value in version.items() if key != "package_text"}

    def _create(self, table, prefix, id_key, body, **extra):
        record = dict(body or {})
        record[id_key] = self.new_id(prefix)
        record.setdefault("created_at", CREATED_AT)
        record.update(extra)
        table[record[id_key]] = record
        return 200, record

    def _get_run(self, run_id):
        if run_id not in self.runs:
            return 404, {"code": 5, "message": f"run {run_id!r} not found"}
        poll = self._run_polls.get(run_id, 0)
        self._run_polls[run_id] = poll + 1
        state, tasks = self.run_script[min(poll, len(self.run_script) - 1)]
        run = dict(self.runs[run_id], state=state)
        run["run_details"] = {"task_details": [
            dict({"run_id": run_id, "task_id": f"{run_id}-task-{index}"}, **task)
            for index, task in enumerate(tasks)]}
        return 200, run


def _filtered(records, query) -> list[dict]:
    """Applies a KFP filter's display_name EQUALS predicates (the only kind kfp.Client sends)."""
    records = list(records)
    if "filter" not in query:
        return records
    for predicate in json.loads(query["filter"]).get("predicates", []):
        if predicate.get("operation") not in (1, "EQUALS") or predicate.get("key") != "display_name":
            raise ValueError(f"the fake KFP server only filters on display_name EQUALS; got {predicate}")
        records = [record for record in records
                   if record.get("display_name") == predicate.get("stringValue")]
    return records


def _in_namespace(records, query) -> list[dict]:
    """The records of the namespace a list call asks for (all of them when it names none)."""
    namespace = query.get("namespace")
    return [record for record in records if not namespace or record.get("namespace") == namespace]


def _not_found(path) -> tuple[int, dict]:
    return 404, {"code": 5, "message": f"fake KFP server: no route for {path}"}


def _parse_multipart_file(content_type: str, payload: bytes) -> str:
    """Returns the text of the first file part of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + payload)
    for part in message.iter_parts():
        if part.get_filename():
            return part.get_payload(decode=True).decode()
    return ""


def _handler_for(server: FakeKfpServer):
    """Builds the request handler class bound to one FakeKfpServer."""

    class Handler(JsonRequestHandler):
        def _serve(self):
            path, query, payload = self.read_request()
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                body = _parse_multipart_file(content_type, payload)
            else:
                body = json.loads(payload) if payload else None
            if self.answered_fault(server, path, query, lambda code: (code, {"code": 14, "message": f"injected HTTP {code}"})):
                return
            self.send_json(*server.handle(self.command, path, query, body, self.headers.get("Authorization")))

        do_GET = do_POST = do_DELETE = _serve

    return Handler
