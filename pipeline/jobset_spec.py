"""The JobSet (kubernetes-sigs/jobset) that trains one model on several worker pods: its spec.

A JobSet runs a group of pods as one unit: stable host names for every pod (a headless
service), a success policy over the group, and restarts of the *whole* group on failure, which
is what a collective needs, since MultiWorkerMirroredStrategy cannot continue when one peer is
lost. cnnpipe's JobSet has one replicated job, `worker`: one Indexed Job whose N pods are the N
workers. Every pod runs `python3 -m components.workers COMMAND...`, which builds TF_CONFIG from
the pod's completion index and the JobSet's host names (components/workers.py), then runs the
worker's command (`python3 -m components.train_worker ...`). Training resumes from its last
epoch checkpoint after a group restart.

`jobset_spec` writes the JobSet; pipeline/jobset_run.py creates and follows it.

What the spec does about faults:
- a preempted or drained worker (its pod gets the DisruptionTarget condition) fails its Job by
  the pod failure policy, and the JobSet restarts the group without counting it against
  maxRestarts; a crash counts; a user mistake (exit code 2) fails the JobSet at once;
- restarts are blocking: the next attempt's pods start only when the last one's are gone, so no
  old chief can push a checkpoint while the new workers pull theirs;
- every attempt has a deadline (activeDeadlineSeconds of the Job), after which it fails;
- the JobSet goes when the train task's pod goes (deleted, its run cancelled, or killed too
  abruptly to clean up): in the pod's own namespace the pod owns it and Kubernetes deletes it with
  the pod; in the workers' namespace, where an owner cannot be named, the workers stop when the
  pod's heartbeat stops (components/heartbeat.py) with an exit code that fails the JobSet, whose
  pods then stop and release their GPUs; a finished JobSet is deleted after FINISHED_TTL_SECONDS;
- it carries the launching pipeline run's id, so another run with the same run_name is told
  apart from a retry of this one (pipeline/jobset_run.py), and optionally a Kueue queue label.
"""

from __future__ import annotations

import hashlib
import re

from components import checks, workers
from components.errors import USER_ERROR_EXIT_CODE
from components.heartbeat import LAUNCHER_GONE_EXIT_CODE
from pipeline import pod_security
from pipeline.cluster import WORKER_SERVICE_ACCOUNT
from pipeline.placement import GPU_RESOURCE, Placement, gpu_tolerations

GROUP = "jobset.x-k8s.io"
VERSION = "v1alpha2"
PLURAL = "jobsets"
REPLICATED_JOB = "worker"
CONTAINER = "worker"
# Port of TensorFlow's collective service in every worker pod (any free port works; pods do
# not share a network namespace).
DEFAULT_WORKER_PORT = 2222
# A finished JobSet that nobody deleted (its launcher was killed) is removed after this long (seconds).
FINISHED_TTL_SECONDS = 3600
# The label the JobSet controller puts on every pod of a JobSet, with the JobSet's name.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
# JobSet's pod host names are `<name>-worker-0-<index>`; DNS labels are at most 63 characters.
MAX_NAME_LENGTH = 40
# The pipeline run that launched a JobSet (its KFP run id), to tell a retry of the same task from
# another run that uses the same run_name.
PIPELINE_RUN_LABEL = "cnnpipe/pipeline-run"
# Kueue admits a JobSet with this label through the named LocalQueue.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# The pod condition Kubernetes sets on a pod it evicts: preemption, a node drain, a Spot reclaim.
DISRUPTION_CONDITION = "DisruptionTarget"
# Default deadline of one attempt of the workers (seconds).
DEFAULT_DEADLINE_SECONDS = 24 * 3600


def jobset_name(*parts: str) -> str:
    """A valid, stable JobSet name for these parts (e.g. a run id and a model name).

    The same parts give the same name, so a retried task finds (and replaces) the JobSet of
    its failed attempt instead of leaving it running beside a new one.
    """
    text = "-".join(parts)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    readable = re.sub(r"^[^a-z]+", "", readable)[:MAX_NAME_LENGTH - len(digest) - 1].rstrip("-")
    return f"{readable}-{digest}" if readable else f"cnnpipe-{digest}"


def jobset_spec(name: str, namespace: str, image: str, command: list[str], worker_count: int, *,
                    gpus_per_worker: int = 1, node_selector: dict[str, str] | None = None,
                    tolerations: list[dict] | None = None, env: dict[str, str] | None = None,
                    service_account: str = WORKER_SERVICE_ACCOUNT, max_restarts: int = 3,
                    port: int = DEFAULT_WORKER_PORT, cpu: str = "4", memory: str = "16G",
                    cpu_limit: str | None = None, memory_limit: str | None = None,
                    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS, queue_name: str = "",
                    pipeline_run: str = "", owner_pod: dict | None = None) -> dict:
    """The JobSet that runs `command` on `worker_count` pods as one MultiWorkerMirroredStrategy cluster.

    Args:
        name: JobSet name (see `jobset_name`); also the pods' DNS subdomain.
        namespace: where it runs: the workers' namespace (k8s/workers/), not KFP's.
        image: the project image.
        command: the training command each worker runs, e.g. ["cnnpipe", "component", "train", ...].
        worker_count: number of worker pods (>= 1).
        gpus_per_worker: `nvidia.com/gpu` each pod requests; 0 for CPU-only pods.
        node_selector, tolerations: where the pods may run (see `worker_pod_settings`).
        env: extra environment variables of every worker.
        service_account: the pods' Kubernetes service account (Workload Identity for gs://; no API token).
        max_restarts: how often the whole group is restarted after a worker fails.
        port: the collective's port in every pod.
        cpu, memory, cpu_limit, memory_limit: each pod's requests and limits (Kubernetes quantities).
        deadline_seconds: how long one attempt may run before it fails (a hung group must not
            hold its GPUs for ever).
        queue_name: Kueue LocalQueue to be admitted through ('' = none).
        pipeline_run: the KFP run id of the launching task (labels the JobSet).
        owner_pod: {"name", "uid"} of the launching pod in `namespace`: the JobSet's owner.
    """
    workers.check_worker_count(worker_count)
    if not command:
        raise ValueError("command must name the training command the workers run")
    worker_environment = dict(env or {})
    # What a pod cannot find out by itself; JOB_COMPLETION_INDEX comes from the Job controller.
    worker_environment.update({
        workers.JOBSET_NAME_VARIABLE: name,
        workers.REPLICATED_JOB_VARIABLE: REPLICATED_JOB,
        workers.WORKER_COUNT_VARIABLE: str(worker_count),
        workers.WORKER_PORT_VARIABLE: str(port),
    })
    labels = {"app.kubernetes.io/part-of": "cnnpipe", "app.kubernetes.io/component": "train"}
    metadata = {"name": name, "namespace": namespace,
                "labels": {**labels, **jobset_labels(pipeline_run, queue_name)}}
    if owner_pod:
        metadata["ownerReferences"] = [owner_reference(owner_pod)]
    checks.integer("deadline_seconds", deadline_seconds, minimum=1)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobSet",
        "metadata": metadata,
        "spec": {
            # Stable host names <name>-worker-0-<index>.<name> for TF_CONFIG.
            "network": {"enableDNSHostnames": True, "subdomain": name},
            "failurePolicy": failure_policy(max_restarts),
            "successPolicy": {"operator": "All", "targetReplicatedJobs": [REPLICATED_JOB]},
            "ttlSecondsAfterFinished": FINISHED_TTL_SECONDS,
            "replicatedJobs": [{
                "name": REPLICATED_JOB,
                "replicas": 1,
                "template": {"spec": worker_job_spec(
                    image, command, worker_count, worker_environment, labels, gpus_per_worker=gpus_per_worker,
                    node_selector=node_selector or {}, tolerations=tolerations or [],
                    service_account=service_account, port=port,
                    resources=worker_resources(gpus_per_worker, cpu, memory, cpu_limit, memory_limit),
                    deadline_seconds=deadline_seconds)},
            }],
        },
    }


def jobset_labels(pipeline_run: str, queue_name: str) -> dict[str, str]:
    """The launching run's label and, for clusters that admit work through Kueue, the queue's."""
    labels = {PIPELINE_RUN_LABEL: pipeline_run} if pipeline_run else {}
    if queue_name:
        labels[KUEUE_QUEUE_LABEL] = queue_name
    return labels


def owner_reference(pod: dict) -> dict:
    """Makes the launching pod the JobSet's owner: the garbage collector deletes the JobSet with it.

    Not a controller reference, and it does not block the pod's deletion (that would need the
    right to delete pods, which the runner's Role does not grant).
    """
    return {"apiVersion": "v1", "kind": "Pod", "name": pod["name"], "uid": pod["uid"]}


def failure_policy(max_restarts: int) -> dict:
    """What the JobSet does when a worker's Job fails, by the Job's failure reason and message.

    The Job fails through its pod failure policy (worker_job_spec), whose message names the rule
    that matched: "Pod ... has condition DisruptionTarget matching FailJob rule at index 0" for a
    preemption, "Container worker ... failed with exit code 2 matching FailJob rule at index 1"
    for a user mistake, "... exit code 69 matching FailJob rule at index 2" for workers whose
    launcher is gone. Rules are tried in order; names follow JobSet's rule name pattern.
    """
    return {
        "maxRestarts": max_restarts,
        # The next attempt's pods start only when all of the last attempt's are gone.
        "restartStrategy": "BlockingRecreate",
        "rules": [
            # Preempted, drained or reclaimed: not the training's fault, so not counted.
            {"name": "preempted", "action": "RestartJobSetAndIgnoreMaxRestarts",
             "onJobFailureReasons": ["PodFailurePolicy"],
             "onJobFailureMessagePatterns": [f"condition {DISRUPTION_CONDITION} matching"]},
            # A worker that reported a user mistake fails the same way after a restart. Matched by
            # its exit code too: a Job failure no rule matches restarts the group and counts,
            # which is the safe side should a Kubernetes release word the messages differently.
            {"name": "userMistake", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"],
             "onJobFailureMessagePatterns": [f"exit code {USER_ERROR_EXIT_CODE} matching"]},
            # The train task that launched the workers is gone (its heartbeat stopped): nobody waits
            # for their result, and a retry of the task starts a JobSet of its own.
            {"name": "launcherGone", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"],
             "onJobFailureMessagePatterns": [f"exit code {LAUNCHER_GONE_EXIT_CODE} matching"]},
            # An attempt that ran past its deadline is hung or far too slow: restarting repeats it.
            {"name": "deadlineExceeded", "action": "FailJobSet", "onJobFailureReasons": ["DeadlineExceeded"]},
        ],
    }


def worker_job_spec(image: str, command: list[str], worker_count: int, environment: dict[str, str],
                    labels: dict[str, str], *, gpus_per_worker: int, node_selector: dict[str, str],
                    tolerations: list[dict], service_account: str, port: int, resources: dict,
                    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS) -> dict:
    """The Indexed Job of the N workers: pod i is worker i (the chief is 0)."""
    return {
        "completionMode": "Indexed",
        "completions": worker_count,
        "parallelism": worker_count,
        # One failed pod fails the Job, and the JobSet restarts the whole group: a collective
        # cannot take back a single replaced peer.
        "backoffLimit": 0,
        "activeDeadlineSeconds": deadline_seconds,
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onPodConditions": [{"type": DISRUPTION_CONDITION, "status": "True"}]},
            {"action": "FailJob",
             "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [USER_ERROR_EXIT_CODE]}},
            {"action": "FailJob",
             "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [LAUNCHER_GONE_EXIT_CODE]}},
        ]},
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": {
                "restartPolicy": "Never",
                **pod_security.restricted_pod_settings(service_account),
                "nodeSelector": node_selector,
                "tolerations": tolerations,
                "containers": [{
                    "name": CONTAINER,
                    "image": image,
                    "command": ["python3", "-m", "components.workers", *command],
                    "env": [{"name": key, "value": value} for key, value in environment.items()],
                    "ports": [{"name": "collective", "containerPort": port, "protocol": "TCP"}],
                    "resources": resources,
                    **pod_security.restricted_container_settings(image),
                }],
            },
        },
    }


def worker_resources(gpus: int, cpu: str, memory: str, cpu_limit: str | None, memory_limit: str | None) -> dict:
    """Requests and limits of one worker container; GPUs are requested through their limit."""
    limits = {key: value for key, value in (("cpu", cpu_limit), ("memory", memory_limit)) if value}
    if gpus:
        limits[GPU_RESOURCE] = gpus
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def network_policy_spec(jobset: dict) -> dict:
    """The NetworkPolicy that lets the pods of `jobset`, and only they, reach each other's collective port.

    TensorFlow's collective service runs whatever a peer sends it and authenticates nobody, so
    nothing else may reach it; the namespace's default-deny policies (k8s/workers/networkpolicy.yaml)
    block all other traffic. It is named like the JobSet and, once created, owned by it (`owned_by`).
    """
    name, namespace = jobset["metadata"]["name"], jobset["metadata"]["namespace"]
    (container,) = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"]
    own_pods = {"podSelector": {"matchLabels": {JOBSET_NAME_LABEL: name}}}
    collective = [{"protocol": "TCP", "port": port["containerPort"]} for port in container["ports"]]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(jobset["metadata"]["labels"])},
        "spec": {
            **own_pods,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [own_pods], "ports": collective}],
            "egress": [{"to": [own_pods], "ports": collective}],
        },
    }


def owned_by(network_policy: dict, jobset: dict) -> dict:
    """`network_policy` owned by the created `jobset` (as the API server returned it, with its uid),
    so that Kubernetes deletes it with the JobSet, also when the JobSet's TTL runs out."""
    owner = {"apiVersion": jobset["apiVersion"], "kind": jobset["kind"], "name": jobset["metadata"]["name"],
             "uid": jobset["metadata"]["uid"]}
    return {**network_policy, "metadata": {**network_policy["metadata"], "ownerReferences": [owner]}}


def worker_pod_settings(placement: Placement) -> dict:
    """The `jobset_spec` keyword arguments that place and size worker pods like a single-pod train task
    (plain JSON: `cnnpipe compile` hands them to the train task), with the workers' namespace, the
    attempts' deadline and the Kueue queue."""
    scheduling = {"namespace": placement.worker_namespace, "deadline_seconds": placement.worker_deadline_seconds,
                  "queue_name": placement.queue_name}
    if not placement.uses_gpu:
        # Like place_gpu_task with gpus_per_task=0: ordinary CPU nodes and requests.
        return {"image": placement.image, "gpus_per_worker": 0, "node_selector": {}, "tolerations": [],
                "cpu": placement.cpu_task_cpu, "memory": placement.cpu_task_memory,
                "cpu_limit": placement.cpu_task_cpu_limit, "memory_limit": placement.cpu_task_memory_limit,
                **scheduling}
    return {"image": placement.image, "gpus_per_worker": placement.gpus_per_task,
            "node_selector": placement.gpu_node_selector(), "tolerations": gpu_tolerations(placement),
            "cpu": placement.gpu_task_cpu, "memory": placement.gpu_task_memory,
            "cpu_limit": placement.gpu_task_cpu_limit, "memory_limit": placement.gpu_task_memory_limit,
            **scheduling}
