"""Running a JobSet of training workers (the spec: pipeline/jobset_spec.py) from the train task's pod.

`run_jobset` creates the JobSet, follows the chief's log, waits for its Completed or Failed
condition and deletes it whatever happens. The calls it makes are exactly those k8s/rbac.yaml
grants.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from components.errors import UserError, reported_user_error
from components.processes import sigterm_as_interrupt
from pipeline.jobset_spec import CONTAINER, GROUP, PLURAL, REPLICATED_JOB, VERSION, jobset_spec

# Labels the JobSet controller puts on every pod it creates.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL = "jobset.sigs.k8s.io/job-index"
RESTART_ATTEMPT_LABEL = "jobset.sigs.k8s.io/restart-attempt"
# Set by the Job controller on the pods of an Indexed Job (annotation on every version, label from 1.28).
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# How long the API server may stay unreachable while a JobSet runs before the wait gives up (seconds).
UNREACHABLE_SECONDS = 600
SERVICE_ACCOUNT_DIRECTORY = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def run_workers_on_cluster(name: str, command: list[str], worker_count: int, pod_settings: dict, *,
                           env: dict[str, str] | None = None, max_restarts: int = 3,
                           log: Callable[[str], None] = print) -> None:
    """What a train task calls inside its pod: runs `command` on `worker_count` pods of a JobSet.

    `pod_settings` is `jobset_spec.worker_pod_settings(Placement(...))`, made when the pipeline
    is compiled and handed to the task (it is plain JSON). The JobSet goes into the task's own namespace.
    """
    api_client, namespace = kubernetes_client()
    spec = jobset_spec(name, namespace, command=command, worker_count=worker_count, env=env,
                       max_restarts=max_restarts, **pod_settings)
    run_jobset(spec, api_client=api_client, log=log)


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
            create_jobset(custom, spec, log)
        except UserError:
            raise  # refused by the API server: nothing was created
        except BaseException:
            delete_jobset(custom, namespace, name)  # interrupted mid-request: it may exist already
            raise
        try:
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


def create_jobset(custom, spec: dict, log: Callable[[str], None]) -> None:
    """Creates the JobSet; one left behind by an earlier attempt of the same task is replaced."""
    from kubernetes.client.exceptions import ApiException

    namespace, name = spec["metadata"]["namespace"], spec["metadata"]["name"]
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, spec)
    except ApiException as error:
        if error.status == 409:
            log(f"replacing JobSet {namespace}/{name} left by an earlier attempt")
            delete_jobset(custom, namespace, name)
            wait_until_deleted(custom, namespace, name)
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, spec)
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


def wait_for_jobset(custom, namespace: str, name: str, poll_seconds: float, timeout_seconds: float | None,
                    log: Callable[[str], None]) -> dict | None:
    """Polls the JobSet until its Completed (returns None) or Failed (returns that condition) is true."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    restarts = 0
    unreachable_since = None
    while True:
        try:
            jobset = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
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
        if status.get("restarts", 0) > restarts:
            restarts = status["restarts"]
            log(f"JobSet {namespace}/{name}: a worker failed; restarted the group (restart {restarts})")
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

        while True:
            try:
                pod = self._unfollowed_chief()
            except ApiException:
                pod = None  # a passing API server hiccup: the log is relayed on a later poll
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

        try:
            response = self.core.read_namespaced_pod_log(pod, self.namespace, container=CONTAINER, follow=True,
                                                         _preload_content=False)
        except ApiException:
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
