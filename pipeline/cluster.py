"""Talk to a Kubeflow Pipelines cluster: submit a compiled pipeline, follow it, schedule it.

Everything goes through `kfp.Client`. Authentication is whatever the client picks up: a token
passed as `existing_token` (or in the `KFP_TOKEN` environment variable), IAP/inverse-proxy
credentials for `*.googleusercontent.com` hosts, or none for a port-forwarded endpoint. Tokens
are handed to the client only; they are never printed, logged or written.

User mistakes (bad cron, unknown parameter or model, a bad recipe, unreachable host, failed
run) raise `UserError` or `ClusterError` with a one-line message; the CLI prints it and exits
non-zero. Nothing reaches the cluster before the parameters passed every check.

Following a run (`submit --wait`) survives a flaky API: a status call that times out or gets a
5xx/429 answer is retried with exponential backoff for up to STATUS_RETRY_SECONDS, then the wait
gives up with a line saying the run keeps going. Calls that create something (runs, schedules)
are not retried: a retry after a lost answer could create the run twice.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass

import yaml

from components import checks
from components.backends import BACKENDS, check_workers
from components.errors import UserError

TOKEN_ENVIRONMENT_VARIABLE = "KFP_TOKEN"
# The Kubernetes service account of pipeline pods, k8s/runner/serviceaccount.yaml (Workload Identity for GCS).
RUNNER_SERVICE_ACCOUNT = "cnnpipe-runner"
# Where multi-worker training runs, apart from KFP's namespace, and as whom (k8s/workers/).
WORKER_NAMESPACE = "cnnpipe-workers"
WORKER_SERVICE_ACCOUNT = "cnnpipe-worker"
# KFP's ScheduledWorkflow controller evaluates cron in its own time zone, UTC unless the
# cluster admin set CRON_SCHEDULE_TIMEZONE on it.
SCHEDULE_TIME_ZONE = "UTC"
FINAL_RUN_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")
CRON_EXAMPLE = "0 0 2 * * *"
# (name, lowest, highest, names allowed in place of numbers) for each of the 6 KFP cron fields.
CRON_FIELDS = (
    ("seconds", 0, 59, ()),
    ("minutes", 0, 59, ()),
    ("hours", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                      "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day of week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
SCHEDULE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# A Kubernetes namespace name: a DNS label (lower-case letters, digits and '-', at most 63).
NAMESPACE_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Following a run: how long status calls may keep failing before the wait gives up (an API server
# restart or a port-forward that reconnects takes seconds to minutes), the longest wait between
# retries, and how long one status call may take (connect, read), all in seconds.
STATUS_RETRY_SECONDS = 600.0
MAX_STATUS_BACKOFF_SECONDS = 60.0
STATUS_REQUEST_TIMEOUT_SECONDS = (10.0, 30.0)
# HTTP answers to a status call that may pass by themselves: throttling and server errors.
TRANSIENT_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
MULTI_USER_EXAMPLE_NAMESPACE = "kubeflow-user-example-com"


class ClusterError(RuntimeError):
    """A one-line problem with the cluster, the API call or the run (not a bug in cnnpipe)."""


@dataclass(frozen=True)
class SubmittedRun:
    """A run created on the cluster; `state` is None unless the caller waited for it."""

    run_id: str
    url: str
    state: str | None = None


@dataclass(frozen=True)
class Schedule:
    """One recurring run as the cluster reports it."""

    name: str
    recurring_run_id: str
    cron: str
    enabled: bool
    max_concurrency: int | None
    no_catchup: bool | None
    pipeline_id: str | None
    pipeline_version_id: str | None


# ---- arguments ------------------------------------------------------------------------
def validate_cron(expression: str) -> str:
    """Checks a 6-field KFP cron expression (seconds first) and returns it normalized."""
    fields = str(expression).split()
    if len(fields) == 5:
        raise UserError(
            f"cron needs 6 fields (seconds first) in KFP, e.g. '{CRON_EXAMPLE}'; "
            f"got 5: '{expression}'")
    if len(fields) != 6:
        raise UserError(
            f"cron needs 6 fields (seconds minutes hours day-of-month month day-of-week), "
            f"e.g. '{CRON_EXAMPLE}'; got {len(fields)}: '{expression}'")
    for position, (text, (name, lowest, highest, names)) in enumerate(zip(fields, CRON_FIELDS), 1):
        for part in text.split(","):
            if not _valid_cron_part(part, lowest, highest, names, name.startswith("day")):
                raise UserError(
                    f"cron field {position} ({name}) must use {lowest}-{highest}, '*', ranges "
                    f"a-b, lists a,b or steps */n; got '{text}' in '{expression}'")
    return " ".join(fields)


def _valid_cron_part(part: str, lowest: int, highest: int, names: tuple, allows_question_mark: bool) -> bool:
    """Whether one comma-separated piece of a cron field is well formed and in range."""
    span, _, step = part.partition("/")
    if "/" in part and not (step.isdigit() and int(step) >= 1):
        return False
    if span == "*" or (span == "?" and allows_question_mark and not step):
        return True
    bounds = span.split("-")
    if len(bounds) > 2:
        return False
    values = [_cron_value(bound, lowest, names) for bound in bounds]
    if any(value is None or not lowest <= value <= highest for value in values):
        return False
    return values[0] <= values[-1]


def _cron_value(text: str, lowest: int, names: tuple) -> int | None:
    """A cron number or name (JAN, MON) as an int, or None when it is neither."""
    if text.isdigit():
        return int(text)
    if text.upper() in names:
        return names.index(text.upper()) + lowest
    return None


def parse_params(items: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """Turns `--param KEY=VALUE` items into a dict (values stay strings until resolve_params)."""
    params = {}
    for item in items or ():
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise UserError(f"--param needs KEY=VALUE, e.g. --param preset=fast; got {item!r}")
        params[key.strip()] = value
    return params


def pipeline_parameters(pipeline_package_path: str) -> dict[str, dict]:
    """The compiled pipeline's root input parameters: name -> spec (parameterType, defaultValue)."""
    try:
        with open(pipeline_package_path, encoding="utf-8") as package:
            pipeline_spec = next(yaml.safe_load_all(package))
    except FileNotFoundError:
        raise UserError(
            f"pipeline package {pipeline_package_path!r} does not exist; "
            f"create it with `cnnpipe compile --output {pipeline_package_path}`") from None
    if not isinstance(pipeline_spec, dict) or "root" not in pipeline_spec:
        raise UserError(
            f"{pipeline_package_path!r} is not a compiled KFP pipeline; "
            f"create it with `cnnpipe compile --output {pipeline_package_path}`")
    return dict(pipeline_spec["root"].get("inputDefinitions", {}).get("parameters", {}))


def resolve_params(params: dict | None, pipeline_package_path: str) -> dict:
    """Checks parameter names against the compiled pipeline and converts string values to their types."""
    declared = pipeline_parameters(pipeline_package_path)
    resolved = {}
    for name, value in (params or {}).items():
        if name not in declared:
            raise UserError(
                f"unknown pipeline parameter {name!r}; the pipeline takes: {', '.join(sorted(declared)) or '(none)'}")
        parameter_type = declared[name].get("parameterType", "STRING")
        resolved[name] = _convert(name, value, parameter_type) if isinstance(value, str) else value
    return resolved


def _convert(name: str, text: str, parameter_type: str):
    """Converts a command-line string to the pipeline parameter's declared KFP type."""
    try:
        if parameter_type == "NUMBER_INTEGER":
            return int(text)
        if parameter_type == "NUMBER_DOUBLE":
            return float(text)
        if parameter_type == "BOOLEAN":
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise UserError(text)
            return lowered in ("true", "1", "yes")
        if parameter_type == "LIST":
            # A plain comma list is the friendly form for lists of names: models=lenet5,vgg16.
            if text.strip().startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        if parameter_type == "STRUCT":
            value = json.loads(text)
            if not isinstance(value, dict):
                raise UserError(text)
            return value
    except ValueError:
        raise UserError(
            f"pipeline parameter {name!r} is {parameter_type}; got {text!r}; "
            f"give e.g. {_type_example(parameter_type)}") from None
    return text


def _type_example(parameter_type: str) -> str:
    return {"NUMBER_INTEGER": "3", "NUMBER_DOUBLE": "0.1", "BOOLEAN": "true",
            "LIST": "a,b or [\"a\",\"b\"]", "STRUCT": '{"key": 1}'}.get(parameter_type, "text")


def check_poll_seconds(poll_seconds) -> float:
    """Seconds between status calls: a positive number (0 would call the API in a tight loop)."""
    return checks.number("--poll-seconds", poll_seconds, above=0, hint="pass e.g. --poll-seconds 15")


def check_timeout_seconds(timeout_seconds) -> float | None:
    """How long `--wait` follows a run: None for as long as it runs, else a positive number of seconds."""
    if timeout_seconds is None:
        return None
    return checks.number("--timeout", timeout_seconds, above=0, hint="pass e.g. --timeout 7200 (seconds)")


def checked_arguments(params: dict | None, pipeline_package_path: str) -> dict:
    """A run's or schedule's arguments: `params` resolved against the compiled pipeline, once the
    values the run would start with passed the project's checks."""
    resolved = resolve_params(params, pipeline_package_path)
    check_pipeline_values(pipeline_values(resolved, pipeline_package_path))
    return resolved


def pipeline_values(resolved: dict, pipeline_package_path: str) -> dict:
    """The values a run would start with: the compiled defaults, overridden by `resolved`."""
    declared = pipeline_parameters(pipeline_package_path)
    values = {name: spec["defaultValue"] for name, spec in declared.items() if "defaultValue" in spec}
    return {**values, **resolved}


def check_pipeline_values(values: dict) -> None:
    """Checks the values of the project's own parameters before anything reaches the cluster.

    A bad model name or recipe in a nightly schedule would otherwise be found in the pod, every
    night. Parameters the pipeline does not have are not checked (a stand-in pipeline has few).
    """
    for name, check in PIPELINE_VALUE_CHECKS.items():
        if name in values:
            check(values[name])
    if "backend" in values and "workers" in values:  # several workers are TensorFlow's
        check_workers(values["backend"], int(values["workers"]))


def _check_models(models) -> None:
    from components.models import get_spec  # the zoo's names, without Keras

    if not isinstance(models, list) or not models:
        raise UserError(f"models must name at least one zoo model, e.g. --param models=lenet5,resnet20_v1; got {models!r}")
    for name in models:
        get_spec(name)
    if len(set(models)) != len(models):
        raise UserError(f"models has duplicates: {','.join(models)}; name each model once")


def _check_train_config(train_config) -> None:
    from components.recipe import TrainConfig

    TrainConfig.from_dict(train_config)


def _check_workers(workers) -> None:
    # KFP hands integers over as JSON numbers, which may arrive as 4.0.
    value = int(workers) if isinstance(workers, float) and workers.is_integer() else workers
    checks.integer("workers", value, minimum=1, why="1 = one process")


def _check_preset(preset) -> None:
    from pipeline.config import get_preset

    get_preset(preset)


# The project's pipeline parameters that are checked before a run or schedule is created.
PIPELINE_VALUE_CHECKS = {
    "models": _check_models,
    "train_config": _check_train_config,
    "workers": _check_workers,
    "preset": _check_preset,
    "validation_fraction": lambda value: checks.fraction("validation_fraction", value),
    "backend": lambda value: checks.choice("backend", value, BACKENDS),
}


def check_pipeline_root(pipeline_root: str | None) -> None:
    """A pipeline root must be an object store prefix the cluster's pods can reach."""
    if pipeline_root is not None and not re.match(r"(gs|s3|minio)://[^/]+", pipeline_root):
        raise UserError(
            f"--pipeline-root must be an object store URI like gs://BUCKET/pipeline-root; got {pipeline_root!r}")


# ---- connection -----------------------------------------------------------------------
def check_reachable(host: str, timeout_seconds: float = 10.0) -> dict:
    """Fails fast with one line when nothing answers at `host` (kfp.Client would retry 25 s).

    Returns the backend's health answer ({} when it asks for credentials first).
    """
    if not host or not re.match(r"https?://", host):
        raise UserError(
            f"--host must be the KFP API URL with http:// or https://, "
            f"e.g. http://localhost:8080 after `kubectl port-forward`; got {host!r}")
    probe = urllib.request.Request(host.rstrip("/") + "/apis/v2beta1/healthz", method="GET")
    try:
        with urllib.request.urlopen(probe, timeout=timeout_seconds) as response:
            answer = json.loads(response.read() or b"{}")
            return answer if isinstance(answer, dict) else {}
    except ValueError:
        return {}  # Something answered, not with JSON (a login page); the client reports the rest.
    except urllib.error.HTTPError:
        return {}  # Something answered (perhaps 401/403 before auth); the client reports the rest.
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ClusterError(
            f"cannot reach Kubeflow Pipelines at {host} ({reason}); check --host, e.g. "
            f"`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` then --host http://localhost:8080"
        ) from None


def connect(host: str, existing_token: str | None = None, namespace: str | None = None):
    """A kfp.Client for `host`, after checking that something answers there.

    A multi-user backend (Kubeflow profiles) needs the profile's namespace for every experiment,
    run and schedule: without one, this stops with a line saying so before anything is sent.
    """
    health = check_reachable(host)
    import kfp  # Imported here so that `cnnpipe --help` stays fast.

    token = existing_token or os.environ.get(TOKEN_ENVIRONMENT_VARIABLE) or None
    arguments = {"host": host, "existing_token": token}
    if namespace:
        arguments["namespace"] = check_namespace(namespace)
    with _calling_kfp(f"connect to {host}"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
        client = kfp.Client(**arguments)
    if health.get("multi_user") and not client.get_user_namespace():
        raise UserError(
            f"Kubeflow Pipelines at {host} is multi-user (Kubeflow profiles): pass --namespace with your "
            f"profile's namespace, e.g. --namespace {MULTI_USER_EXAMPLE_NAMESPACE}")
    return client


def check_namespace(namespace: str) -> str:
    """A Kubernetes namespace name (a DNS label), else a one-line UserError."""
    if not NAMESPACE_PATTERN.fullmatch(namespace or ""):
        raise UserError(
            f"--namespace must be a Kubernetes namespace (lower-case letters, digits and '-', at most 63), "
            f"e.g. {MULTI_USER_EXAMPLE_NAMESPACE}; got {namespace!r}")
    return namespace


@contextlib.contextmanager
def _calling_kfp(action: str):
    """Silences kfp.Client's own prints and turns API/network failures into one-line ClusterErrors."""
    import kfp_server_api
    import urllib3

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except kfp_server_api.ApiException as error:
        raise ClusterError(f"{action} failed: HTTP {error.status} {_api_message(error)}") from None
    except (urllib3.exceptions.HTTPError, TimeoutError, ConnectionError) as error:
        raise ClusterError(f"{action} failed: {_one_line(str(error))}") from None


def _api_message(error) -> str:
    """The server's error message from an ApiException (its body), on one line."""
    try:
        body = json.loads(error.body or "{}")
        message = body.get("message") or body.get("error") or error.reason
    except (ValueError, AttributeError):
        message = error.reason or ""
    return _one_line(str(message))


def _one_line(text: str, limit: int = 300) -> str:
    collapsed = " ".join(text.split())
    return collapsed if len(collapsed) <= limit else collapsed[: limit - 3] + "..."


def ui_url(host: str, kind: str, identifier: str) -> str:
    """Link into the KFP UI (`KF_PIPELINES_UI_ENDPOINT` if set, else the API host)."""
    base = os.environ.get("KF_PIPELINES_UI_ENDPOINT") or host
    return f"{base.rstrip('/')}/#/{kind}/details/{identifier}"


# ---- runs -----------------------------------------------------------------------------
def submit(host: str, pipeline_package_path: str, params: dict | None = None,
           experiment: str = "cnnpipe", pipeline_root: str | None = None, wait: bool = False,
           existing_token: str | None = None, run_name: str | None = None,
           service_account: str | None = RUNNER_SERVICE_ACCOUNT,
           poll_seconds: float = 15.0, timeout_seconds: float | None = None,
           namespace: str | None = None) -> SubmittedRun:
    """Submits a compiled pipeline as a run, prints its id and UI link, optionally follows it.

    Pods run as `service_account` (k8s/runner/serviceaccount.yaml; None or '' = KFP's default account).
    Caching follows the compiled per-task settings (prep is never cached, see placement.py).
    `namespace` is the Kubeflow profile's namespace on a multi-user backend.
    With `wait`, raises ClusterError naming the failed task when the run does not succeed, or
    when `timeout_seconds` pass first (the run keeps going).
    """
    poll_seconds = check_poll_seconds(poll_seconds)
    timeout_seconds = check_timeout_seconds(timeout_seconds)
    resolved = checked_arguments(params, pipeline_package_path)
    check_pipeline_root(pipeline_root)
    client = connect(host, existing_token, namespace)
    run_name = run_name or f"cnnpipe {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    with _calling_kfp("submit run"):
        result = client.create_run_from_pipeline_package(
            pipeline_package_path, arguments=resolved, run_name=run_name,
            experiment_name=experiment, namespace=namespace, pipeline_root=pipeline_root,
            service_account=service_account or None)
    url = ui_url(host, "runs", result.run_id)
    print(f"submitted run {result.run_id} in experiment '{experiment}': {url}")
    if not wait:
        return SubmittedRun(result.run_id, url)
    run = wait_for_run(client, result.run_id, poll_seconds=poll_seconds,
                       timeout_seconds=timeout_seconds, url=url)
    return SubmittedRun(result.run_id, url, run.state)


def wait_for_run(client, run_id: str, poll_seconds: float = 15.0, timeout_seconds: float | None = None,
                 url: str = "", sleep=time.sleep, retry_seconds: float = STATUS_RETRY_SECONDS,
                 request_timeout_seconds: tuple[float, float] = STATUS_REQUEST_TIMEOUT_SECONDS):
    """Polls a run until it ends, printing one line per task state change; returns the run.

    A status call that fails transiently (timeout, no answer, 5xx, 429) is retried with
    exponential backoff from `poll_seconds` up to MAX_STATUS_BACKOFF_SECONDS, for at most
    `retry_seconds` in a row. Raises ClusterError naming the failed task (and its error) unless
    the run SUCCEEDED, and when `timeout_seconds` pass first (the run keeps going on the cluster).
    """
    poll_seconds = check_poll_seconds(poll_seconds)
    timeout_seconds = check_timeout_seconds(timeout_seconds)
    started = time.monotonic()
    last_states: dict[str, str] = {}
    failing_since, failures = None, 0
    follow_at = url or run_id
    while True:
        try:
            run = _get_run(client, run_id, request_timeout_seconds)
            if failing_since is not None:
                print(f"  {datetime.datetime.now():%H:%M:%S}  status calls answer again")
            failing_since, failures = None, 0
        except Exception as error:
            if not _is_transient(error):
                with _calling_kfp(f"get run {run_id}"):  # an API error becomes one line; a bug stays itself
                    raise
            failing_since = failing_since or time.monotonic()
            failures += 1
            if time.monotonic() - failing_since > retry_seconds:
                raise ClusterError(
                    f"get run {run_id} kept failing for {retry_seconds:g} s ({_error_summary(error)}); "
                    f"the run keeps going on the cluster: follow it at {follow_at}") from None
            backoff = min(MAX_STATUS_BACKOFF_SECONDS, poll_seconds * 2 ** (failures - 1))
            backoff *= random.uniform(0.5, 1.0)  # jitter: many followers do not retry in step
            print(f"  {datetime.datetime.now():%H:%M:%S}  get run failed ({_error_summary(error)}); "
                  f"retrying in {backoff:.1f} s")
            sleep(backoff)
            continue
        for task in _tasks(run):
            key = task.task_id or task.display_name
            if task.display_name and last_states.get(key) != task.state:
                last_states[key] = task.state
                print(f"  {datetime.datetime.now():%H:%M:%S}  {task.display_name:<24} {task.state}")
        if run.state in FINAL_RUN_STATES:
            break
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            raise ClusterError(
                f"run {run_id} still {run.state} after {timeout_seconds:g} s (--timeout); it keeps running, "
                f"follow it at {follow_at}")
        sleep(poll_seconds)
    if run.state != "SUCCEEDED":
        raise ClusterError(_failure_message(run, url))
    print(f"run {run_id} SUCCEEDED")
    return run


def _get_run(client, run_id: str, request_timeout_seconds: tuple[float, float]):
    """One status call with a (connect, read) timeout: kfp.Client.get_run has none, so a hung
    connection would block the wait forever. Silences nothing and converts nothing."""
    with contextlib.redirect_stdout(io.StringIO()):
        # The generated API under kfp.Client.get_run, called with the timeout get_run cannot pass.
        return client._run_api.run_service_get_run(run_id=run_id, _request_timeout=request_timeout_seconds)


def _is_transient(error: BaseException) -> bool:
    """Whether a failed API call may succeed when repeated: no answer, a timeout, a 5xx or 429."""
    import kfp_server_api
    import urllib3

    if isinstance(error, kfp_server_api.ApiException):
        return error.status in TRANSIENT_STATUS_CODES
    return isinstance(error, (urllib3.exceptions.HTTPError, TimeoutError, ConnectionError))


def _error_summary(error: BaseException) -> str:
    """A failed API call in a few words: its HTTP status and message, or the network error."""
    import kfp_server_api

    if isinstance(error, kfp_server_api.ApiException):
        return f"HTTP {error.status} {_api_message(error)}".strip()
    return _one_line(str(error), limit=160) or type(error).__name__


def _tasks(run) -> list:
    details = getattr(run, "run_details", None)
    return list(getattr(details, "task_details", None) or [])


def _failure_message(run, url: str) -> str:
    """One line naming the failed task (a leaf task, not its enclosing loop) and its error."""
    failed = [task for task in _tasks(run) if task.state == "FAILED"]
    leaves = [task for task in failed if not task.child_tasks] or failed
    where = f"; see {url}" if url else ""
    if not leaves:
        reason = _one_line(getattr(run.error, "message", "") or "no failed task reported")
        return f"run {run.run_id} ended {run.state}: {reason}{where}"
    task = leaves[0]
    reason = _one_line(getattr(task.error, "message", "") or "no error message")
    return f"run {run.run_id} {run.state}: task '{task.display_name}' failed: {reason}{where}"


# ---- schedules ------------------------------------------------------------------------
def schedule(host: str, name: str, cron: str, pipeline_package_path: str, params: dict | None = None,
             experiment: str = "cnnpipe", pipeline_root: str | None = None,
             existing_token: str | None = None,
             service_account: str | None = RUNNER_SERVICE_ACCOUNT, namespace: str | None = None) -> Schedule:
    """Creates or replaces the recurring run `name` on a fresh version of the uploaded pipeline `name`.

    The package is uploaded as pipeline `name` (or as a new version of it), so the schedule
    always runs the code that was just compiled. KFP's v2beta1 API cannot edit a recurring run,
    so an existing schedule of the same name is deleted after the new one exists. Runs start in
    UTC, never overlap (max concurrency 1) and missed ones are not caught up. The parameters are
    checked as `submit` checks them, once now rather than in a pod every night.
    """
    cron = validate_cron(cron)
    if not SCHEDULE_NAME_PATTERN.fullmatch(name or ""):
        raise UserError(
            f"--name must be 1-100 letters, digits, '.', '_' or '-' starting with a letter or digit, "
            f"e.g. nightly-cifar10; got {name!r}")
    resolved = checked_arguments(params, pipeline_package_path)
    check_pipeline_root(pipeline_root)
    client = connect(host, existing_token, namespace)
    pipeline_id, version_id, version_name = upload_version(client, name, pipeline_package_path)
    with _calling_kfp(f"schedule '{name}'"):
        experiment_id = client.create_experiment(name=experiment, namespace=namespace).experiment_id
        previous = _find_schedules(client, name, namespace)
        created = client.create_recurring_run(
            experiment_id=experiment_id, job_name=name,
            description=f"cnnpipe schedule '{name}' ({cron} {SCHEDULE_TIME_ZONE})",
            cron_expression=cron, max_concurrency=1, no_catchup=True, params=resolved,
            pipeline_id=pipeline_id, version_id=version_id, enabled=True,
            pipeline_root=pipeline_root, service_account=service_account or None)
        for old in previous:
            client.delete_recurring_run(old.recurring_run_id)
    verb = "updated" if previous else "created"
    print(f"{verb} schedule '{name}' ({created.recurring_run_id}): cron '{cron}' in {SCHEDULE_TIME_ZONE}, "
          f"pipeline version '{version_name}', at most 1 run at a time, no catch-up: "
          f"{ui_url(host, 'recurringrun', created.recurring_run_id)}")
    return _as_schedule(created)


def upload_version(client, pipeline_name: str, pipeline_package_path: str) -> tuple[str, str, str]:
    """Uploads the package as pipeline `pipeline_name`, or as a new version when it exists.

    Returns (pipeline id, version id, version name). Version names carry the UTC upload time and
    the package's sha256 prefix, so every schedule update is traceable to its compiled YAML.
    """
    with open(pipeline_package_path, "rb") as package:
        digest = hashlib.sha256(package.read()).hexdigest()[:12]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    version_name = f"{pipeline_name}-{stamp}-{digest}"
    with _calling_kfp(f"upload pipeline '{pipeline_name}'"):
        pipeline_id = client.get_pipeline_id(pipeline_name)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(
                pipeline_package_path, pipeline_name=pipeline_name,
                description=f"cnnpipe pipeline for schedule '{pipeline_name}'")
            # The backend stores the first upload as the pipeline's first version.
            versions = client.list_pipeline_versions(
                pipeline.pipeline_id, sort_by="created_at desc", page_size=1).pipeline_versions
            if not versions:
                raise ClusterError(f"pipeline '{pipeline_name}' was uploaded but has no version")
            return pipeline.pipeline_id, versions[0].pipeline_version_id, versions[0].display_name
        version = client.upload_pipeline_version(
            pipeline_package_path, pipeline_version_name=version_name, pipeline_id=pipeline_id)
        return pipeline_id, version.pipeline_version_id, version_name


def _find_schedules(client, name: str | None = None, namespace: str | None = None) -> list:
    """All recurring runs (following pages) of `namespace` (None: the client's), or only those named `name`."""
    name_filter = None
    if name is not None:
        name_filter = json.dumps({"predicates": [
            {"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    found, page_token = [], ""
    while True:
        response = client.list_recurring_runs(page_token=page_token, page_size=100, filter=name_filter,
                                              namespace=namespace)
        found.extend(response.recurring_runs or [])
        page_token = response.next_page_token
        if not page_token:
            return found


def _as_schedule(recurring_run) -> Schedule:
    trigger = recurring_run.trigger
    cron = trigger.cron_schedule.cron if trigger and trigger.cron_schedule else ""
    reference = recurring_run.pipeline_version_reference
    return Schedule(
        name=recurring_run.display_name,
        recurring_run_id=recurring_run.recurring_run_id,
        cron=cron,
        enabled=recurring_run.mode != "DISABLE",
        max_concurrency=int(recurring_run.max_concurrency) if recurring_run.max_concurrency else None,
        no_catchup=recurring_run.no_catchup,
        pipeline_id=reference.pipeline_id if reference else None,
        pipeline_version_id=(reference.pipeline_version_id if reference else None)
        or recurring_run.pipeline_version_id,
    )


def list_schedules(host: str, existing_token: str | None = None, namespace: str | None = None) -> list[Schedule]:
    """Prints and returns every recurring run on the cluster, or of `namespace` (cron times are UTC)."""
    client = connect(host, existing_token, namespace)
    with _calling_kfp("list schedules"):
        schedules = [_as_schedule(recurring_run) for recurring_run in _find_schedules(client, namespace=namespace)]
    if not schedules:
        print("no schedules")
    for item in schedules:
        state = "enabled" if item.enabled else "disabled"
        print(f"{item.name:<24} {item.cron:<16} {SCHEDULE_TIME_ZONE}  {state:<8} "
              f"{item.recurring_run_id}  version {item.pipeline_version_id}")
    return schedules


def delete_schedule(host: str, name: str, existing_token: str | None = None, namespace: str | None = None) -> int:
    """Deletes the recurring run(s) named `name` (in `namespace`); returns how many were deleted."""
    client = connect(host, existing_token, namespace)
    with _calling_kfp(f"delete schedule '{name}'"):
        matching = _find_schedules(client, name, namespace)
        if not matching:
            raise ClusterError(f"no schedule named '{name}'; see `cnnpipe schedule --list --host {host}`")
        for recurring_run in matching:
            client.delete_recurring_run(recurring_run.recurring_run_id)
    print(f"deleted schedule '{name}' ({', '.join(item.recurring_run_id for item in matching)})")
    return len(matching)
