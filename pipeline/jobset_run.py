"""Running a JobSet of training workers (the spec: pipeline/jobset_spec.py) from the train task's pod.

`run_jobset` creates the JobSet and its NetworkPolicy, follows the chief's log, waits for its
Completed or Failed condition and deletes it whatever happens. The calls it makes are exactly
those k8s/workers/rbac.yaml grants, in the workers' namespace. A JobSet of the same name left by
an earlier attempt of the same pipeline run, or by a run that has finished, is replaced; one of
another run that still trains (the same run_name) is never touched: the second run stops in one
line naming the first. Creating is retried while the API server answers 5xx/429 or not at all;
every call has a timeout, so a hung one is retried too.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from components.errors import UserError, reported_user_error
from components.processes import sigterm_as_interrupt
from pipeline.cluster import WORKER_NAMESPACE
from pipeline.jobset_spec import (
    CONTAINER, DEFAULT_DEADLINE_SECONDS, GROUP, JOBSET_NAME_LABEL, PIPELINE_RUN_LABEL, PLURAL, REPLICATED_JOB,
    VERSION, jobset_spec, network_policy_spec, owned_by,
)
from pipeline.placement import POD_NAME_VARIABLE, POD_NAMESPACE_VARIABLE, POD_UID_VARIABLE

# Labels the JobSet controller puts on every pod it creates, besides JOBSET_NAME_LABEL (jobset_spec.py).
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL = "jobset.sigs.k8s.io/job-index"
RESTART_ATTEMPT_LABEL = "jobset.sigs.k8s.io/restart-attempt"
# Set by the Job controller on the pods of an Indexed Job (annotation on every version, label from 1.28).
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# How long a NetworkPolicy of a deleted JobSet of the same name may take to be removed by the
# garbage collector before its replacement is created (seconds).
STALE_POLICY_SECONDS = 60.0
# How long the API server may stay unreachable while a JobSet runs before the wait gives up (seconds).
UNREACHABLE_SECONDS = 600
# (connect, read) timeout of one API call, seconds: a hung call counts as the API server being away.
REQUEST_TIMEOUT_SECONDS = (10.0, 60.0)
# Attempts at creating the JobSet while the API server answers 5xx/429 or not at all; a retry
# after a lost answer finds its own JobSet (409) and replaces it.
CREATE_ATTEMPTS = 5
SERVICE_ACCOUNT_DIRECTORY = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def run_workers_on_cluster(name: str, command: list[str], worker_count: int, pod_settings: dict, *,
                           env: dict[str, str] | None = None, max_restarts: int = 3, pipeline_run: str = "",
                           log: Callable[[str], None] = print) -> None:
    """What a train task calls inside its pod: runs `command` on `worker_count` pods of a JobSet.

    `pod_settings` is `jobset_spec.worker_pod_settings(Placement(...))`, made when the pipeline
    is compiled and handed to the task (it is plain JSON). The JobSet goes into the workers'
    namespace it names (k8s/workers/), not the task's own: there its pods can only be cnnpipe
    workers. The task's pod owns the JobSet when both share a namespace and the pod knows itself
    (pipeline/placement.py); elsewhere the workers stop by themselves when the task's heartbeat
    stops (pipeline/launch.py, components/heartbeat.py). `pipeline_run` is the KFP run id of the task.
    """
    api_client, _ = kubernetes_client()
    pod_settings = {"namespace": WORKER_NAMESPACE, **pod_settings}  # pipelines compiled before it was named
    spec = jobset_spec(name, command=command, worker_count=worker_count, env=env, max_restarts=max_restarts,
                       pipeline_run=pipeline_run, owner_pod=launching_pod(pod_settings["namespace"]), **pod_settings)
    # The whole run, every attempt included, is bounded too: the attempts' deadline per allowed restart.
    deadline_seconds = pod_settings.get("deadline_seconds", DEFAULT_DEADLINE_SECONDS)
    run_jobset(spec, api_client=api_client, log=log, timeout_seconds=deadline_seconds * (max_restarts + 1))


def launching_pod(namespace: str, environ: dict | None = None) -> dict | None:
    """{"name", "uid"} of this pod (from the Downward API variables), when it runs in `namespace`.

    An owner must be in its dependent's namespace; a JobSet elsewhere gets no owner (the
    garbage collector would otherwise treat the owner as missing and delete the JobSet at once).
    """
    environ = os.environ if environ is None else environ
    name, uid = environ.get(POD_NAME_VARIABLE), environ.get(POD_UID_VARIABLE)
    if not name or not uid or environ.get(POD_NAMESPACE_VARIABLE) != namespace:
        return None
    return {"name": name, "uid": uid}


def kubernetes_client(service_account_directory: Path = SERVICE_ACCOUNT_DIRECTORY):
    """(ApiClient, namespace): in-cluster credentials inside a pod, else the kubeconfig's context."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (service_account_directory / "token").exists():
        config.load_incluster_config(client_configuration=configuration)
        namespace = (service_account_directory / "namespace").read_text().strip()
    else:
        # The client reads KUBECONFIG once, at import; read it now so a changed value counts.
        kubeconfig = os.environ.get("KUBECONFIG")
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
        namespace = context["context"].get("namespace") or "default"
    return client.ApiClient(configuration), namespace


def run_jobset(spec: dict, *, api_client=None, poll_seconds: float = 10.0,
               timeout_seconds: float | None = None, log: Callable[[str], None] = print) -> None:
    """Creates the JobSet, relays its chief's log, waits until it completes, and deletes it.

    Raises a one-line error naming the JobSet and its Failed condition's message (a UserError
    when the chief reported a user mistake), or when `timeout_seconds` pass. The JobSet is
    deleted in every case, also on Ctrl-C or SIGTERM.
    """
    from kubernetes import client

    if api_client is None:
        api_client, _ = kubernetes_client()
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    namespace, name = spec["metadata"]["namespace"], spec["metadata"]["name"]
    follower = ChiefLogFollower(core, namespace, name, log, poll_seconds)
    with sigterm_as_interrupt():
        try:
            created = create_jobset(custom, spec, log, retry_seconds=poll_seconds)
        except UserError:
            raise  # refused by the API server: nothing was created
        except BaseException:
            delete_jobset(custom, namespace, name)  # interrupted mid-request: it may exist already
            raise
        try:
            create_network_policy(client.NetworkingV1Api(api_client), owned_by(network_policy_spec(spec), created))
            follower.start()
            failed = wait_for_jobset(custom, namespace, name, poll_seconds, timeout_seconds, log)
            follower.finish(timeout=max(30.0, 3 * poll_seconds))  # the chief has ended: so does its log
        finally:
            delete_jobset(custom, namespace, name)
            follower.finish(timeout=poll_seconds)  # after an interrupt, the deletion ends the log stream
    if failed is not None:
        if follower.user_mistake:
            raise UserError(follower.user_mistake)
        reason = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": ")
        raise RuntimeError(f"JobSet {namespace}/{name} failed: {reason}")


def create_jobset(custom, spec: dict, log: Callable[[str], None], retry_seconds: float = 10.0) -> dict:
    """Creates the JobSet and returns it as created. One of the same name left by an earlier
    attempt of the same run, or by any run that has finished, is replaced; one of another run
    that still runs is not.

    A create that fails transiently is tried again CREATE_ATTEMPTS times, `retry_seconds` apart
    and doubling (its JobSet may exist then: that is the 409 path, with our own run's label).
    """
    from kubernetes.client.exceptions import ApiException

    namespace, name = spec["metadata"]["namespace"], spec["metadata"]["name"]

    def create() -> dict:
        return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, spec,
                                                      _request_timeout=REQUEST_TIMEOUT_SECONDS)

    try:
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                created = create()
                break
            except Exception as error:
                if attempt == CREATE_ATTEMPTS or not is_transient(error):
                    raise
                log(f"creating JobSet {namespace}/{name} failed ({type(error).__name__} "
                    f"{getattr(error, 'status', '') or ''}); trying again")
                time.sleep(retry_seconds * 2 ** (attempt - 1))
    except ApiException as error:
        if error.status == 409:
            log(replacement_reason(custom, spec))
            delete_jobset(custom, namespace, name)
            wait_until_deleted(custom, namespace, name)
            created = create()
        elif error.status == 404:
            raise UserError(f"the cluster has no {GROUP}/{VERSION} API: install JobSet "
                            f"(README, 'Training on several workers') before using --workers") from None
        elif error.status == 403:
            raise UserError(f"not allowed to create JobSets in namespace {namespace}: apply k8s/ "
                            f"(kubectl apply -k k8s/) so the pipeline's service account may") from None
        else:
            raise
    worker_job = spec["spec"]["replicatedJobs"][0]["template"]["spec"]
    log(f"created JobSet {namespace}/{name}: {worker_job['parallelism']} workers")
    return created


def create_network_policy(networking, policy: dict) -> None:
    """Creates the JobSet's NetworkPolicy. One of the same name belongs to a JobSet of the same
    name that was just deleted (the live one was created a moment ago): it is waited out until
    the garbage collector removes it, as the Role may create NetworkPolicies but not delete them."""
    from kubernetes.client.exceptions import ApiException

    namespace = policy["metadata"]["namespace"]
    deadline = time.monotonic() + STALE_POLICY_SECONDS
    while True:
        try:
            networking.create_namespaced_network_policy(namespace, policy)
            return
        except ApiException as error:
            if error.status == 403:
                raise UserError(f"not allowed to create NetworkPolicies in namespace {namespace}: re-apply k8s/ "
                                f"so the pipeline's service account may (docs/cluster.md, step 4)") from None
            if error.status != 409 or time.monotonic() > deadline:
                raise
        time.sleep(1.0)


def replacement_reason(custom, spec: dict) -> str:
    """Why the existing JobSet of this name may be replaced; a UserError when it must not be."""
    from kubernetes.client.exceptions import ApiException

    namespace, name = spec["metadata"]["namespace"], spec["metadata"]["name"]
    try:
        existing = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                       _request_timeout=REQUEST_TIMEOUT_SECONDS)
    except ApiException as error:
        if error.status != 404:
            raise
        return f"JobSet {namespace}/{name} existed a moment ago and is gone; creating it"
    ours = spec["metadata"]["labels"].get(PIPELINE_RUN_LABEL)
    theirs = ((existing.get("metadata") or {}).get("labels") or {}).get(PIPELINE_RUN_LABEL)
    if ours and theirs == ours:
        return f"replacing JobSet {namespace}/{name} left by an earlier attempt of this run"
    if has_finished(existing):
        return f"replacing JobSet {namespace}/{name} of the finished run {theirs or '(unknown)'}"
    raise UserError(
        f"pipeline run {theirs or '(unknown)'} is still training with the same run_name and model "
        f"(JobSet {namespace}/{name}); give this run another run_name, or wait until that one ends")


def has_finished(jobset: dict) -> bool:
    """Whether a JobSet completed or failed (its terminal state, or a true Completed/Failed condition)."""
    status = jobset.get("status") or {}
    return bool(status.get("terminalState")) or any(
        condition.get("type") in ("Completed", "Failed") and condition.get("status") == "True"
        for condition in status.get("conditions", []))


def wait_for_jobset(custom, namespace: str, name: str, poll_seconds: float, timeout_seconds: float | None,
                    log: Callable[[str], None]) -> dict | None:
    """Polls the JobSet until its Completed (returns None) or Failed (returns that condition) is true.

    Says when Kueue holds it suspended, and tells a preemption's restart (not counted against
    maxRestarts) from a crash's.
    """
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    restarts = counted_restarts = 0
    reported_suspended = False
    unreachable_since = None
    while True:
        try:
            jobset = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                         _request_timeout=REQUEST_TIMEOUT_SECONDS)
            unreachable_since = None
        except Exception as error:
            # Training runs for hours; an API server restart or upgrade must not end it.
            if not is_transient(error):
                raise
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > UNREACHABLE_SECONDS:
                raise
            time.sleep(poll_seconds)
            continue
        status = jobset.get("status") or {}
        if (jobset.get("spec") or {}).get("suspend") and not reported_suspended:
            reported_suspended = True
            log(f"JobSet {namespace}/{name} is suspended: waiting for Kueue to admit it")
        if status.get("restarts", 0) > restarts:
            restarts = status["restarts"]
            counted = status.get("restartsCountTowardsMax", restarts)
            if counted > counted_restarts:
                log(f"JobSet {namespace}/{name}: a worker failed; restarted the group (restart {restarts}, "
                    f"{counted} counted against maxRestarts)")
            else:
                log(f"JobSet {namespace}/{name}: a worker was preempted; restarted the group (restart {restarts}, "
                    f"not counted against maxRestarts)")
            counted_restarts = counted
        conditions = {condition["type"]: condition for condition in status.get("conditions", [])
                      if condition.get("status") == "True"}
        if "Completed" in conditions:
            return None
        if "Failed" in conditions:
            return conditions["Failed"]
        if deadline is not None and time.monotonic() > deadline:
            raise RuntimeError(f"JobSet {namespace}/{name} did not finish within {timeout_seconds:g} s; deleted it")
        time.sleep(poll_seconds)


def is_transient(error: Exception) -> bool:
    """Whether an API call's error may pass by itself: a 5xx or 429 answer, or no answer at all."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(error, ApiException):
        return error.status is not None and (error.status >= 500 or error.status == 429)
    return isinstance(error, HTTPError)


def delete_jobset(custom, namespace: str, name: str) -> None:
    """Deletes the JobSet with its Jobs and pods (foreground: children go first); gone already is fine."""
    from kubernetes.client.exceptions import ApiException

    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                               propagation_policy="Foreground")
    except ApiException as error:
        if error.status != 404:
            raise


def wait_until_deleted(custom, namespace: str, name: str, seconds: float = 300.0) -> None:
    """Waits until a deleted JobSet is gone (foreground deletion first removes its pods)."""
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(1.0)
    raise RuntimeError(f"JobSet {namespace}/{name} was still being deleted after {seconds:g} s")


class ChiefLogFollower:
    """Relays the chief pod's log, line by line, on a thread; after a group restart, the new chief's.

    It also remembers the chief's last `error: ...` line: when the JobSet fails, that line is
    the user mistake to report.
    """

    def __init__(self, core, namespace: str, name: str, log: Callable[[str], None], poll_seconds: float):
        self.core, self.namespace, self.name, self.log = core, namespace, name, log
        self.poll_seconds = poll_seconds
        self.user_mistake: str | None = None
        self._finishing = threading.Event()
        self._followed: set[str] = set()
        self._thread = threading.Thread(target=self._run, name=f"log {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float) -> None:
        """Lets the follower read the rest of the current chief's log, waiting at most `timeout` seconds."""
        self._finishing.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        while True:
            try:
                pod = self._unfollowed_chief()
            except (ApiException, HTTPError):
                pod = None  # a passing API server hiccup or outage: the log is relayed on a later poll
            if pod is not None:
                self._follow(pod)
            elif self._finishing.is_set():
                return
            else:
                self._finishing.wait(self.poll_seconds)

    def _unfollowed_chief(self) -> str | None:
        """The newest chief pod that has started and whose log was not relayed yet."""
        selector = (f"{JOBSET_NAME_LABEL}={self.name},{REPLICATED_JOB_LABEL}={REPLICATED_JOB},"
                    f"{JOB_INDEX_LABEL}=0")
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        chiefs = [pod for pod in pods
                  if (pod.metadata.annotations or {}).get(COMPLETION_INDEX_ANNOTATION) == "0"
                  and pod.status is not None and pod.status.phase in ("Running", "Succeeded", "Failed")
                  and pod.metadata.name not in self._followed]
        if not chiefs:
            return None
        newest = max(chiefs, key=lambda pod: int((pod.metadata.labels or {}).get(RESTART_ATTEMPT_LABEL, "0")))
        return newest.metadata.name

    def _follow(self, pod: str) -> None:
        from kubernetes.client.exceptions import ApiException

        from urllib3.exceptions import HTTPError

        try:
            response = self.core.read_namespaced_pod_log(pod, self.namespace, container=CONTAINER, follow=True,
                                                         _preload_content=False)
        except (ApiException, HTTPError):
            # Not readable yet (the container is still being created): try again on the next poll.
            self._finishing.wait(self.poll_seconds)
            return
        # Relayed once only: a stream cut short is not replayed from its start.
        self._followed.add(pod)
        try:
            for line in split_lines(response.stream(4096)):
                mistake = reported_user_error(line)
                if mistake is not None:
                    self.user_mistake = mistake
                self.log(line)
        except HTTPError:
            pass  # the stream was cut (the API server went away): training goes on, its log is not replayed
        finally:
            response.release_conn()


def split_lines(chunks) -> Iterator[str]:
    """Lines of a byte stream that arrives in chunks cut anywhere (also mid-line or mid-character)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace").rstrip("\r")
    if pending:
        yield pending.decode(errors="replace")
