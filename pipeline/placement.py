"""Where each pipeline task runs on the cluster: image, GPUs, node pool, retries, caching.

The pipeline builder calls `place_gpu_task` on train and evaluate, `place_cpu_task` on prep
and report, `retry_preempted` on train and `disable_cache_for_mutable_source` on prep. All
settings land in the compiled pipeline YAML: resources and retries in the pipeline spec,
node selectors and tolerations in its second document (the Kubernetes platform config).

Caching decision for prep: KFP keys its cache on a task's input values, and prep's input is a
source *name* (`cifar10`, `gs://bucket/images/`), not its content. A nightly run over the same
`gs://` prefix would therefore be served yesterday's dataset. The content fingerprint of a
`gs://` prefix is only known once the run is executing, too late for a compile-time or
schedule-time cache key, so prep is never cached: it always re-reads the source and writes the
sha256 of every array into its manifest. Train and evaluate keep caching on; their cache key
includes the new dataset artifact, so they rerun whenever prep ran.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kfp import kubernetes

from components import checks
from components.errors import UserError
from pipeline.cluster import NAMESPACE_PATTERN, WORKER_NAMESPACE

# GKE labels every node of an accelerator pool with the accelerator name, e.g. nvidia-l4.
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
# GKE labels Spot VMs with this key; the taint of the same key is added by the node pool command.
GKE_SPOT_LABEL = "cloud.google.com/gke-spot"
# Extended resource name the NVIDIA device plugin advertises; GKE taints GPU nodes with it.
GPU_RESOURCE = "nvidia.com/gpu"
# Environment variables through which a train task's pod knows itself (the Downward API): the
# JobSet it launches names that pod as its owner, so the JobSet goes when the pod goes.
POD_NAME_VARIABLE = "CNNPIPE_POD_NAME"
POD_UID_VARIABLE = "CNNPIPE_POD_UID"
POD_NAMESPACE_VARIABLE = "CNNPIPE_POD_NAMESPACE"


@dataclass(frozen=True)
class Placement:
    """How the compiled pipeline's tasks are placed on the cluster.

    Attributes:
        image: container image every task runs in (built from docker/Dockerfile).
        gpu_type: GKE accelerator name of the GPU node pool (`nvidia-l4`, `nvidia-tesla-t4`);
            None puts train and evaluate on CPU nodes.
        gpus_per_task: GPUs each train/evaluate pod requests; 0 means CPU only.
        node_selector: (key, value) labels the GPU pods require; empty means the GKE default
            `cloud.google.com/gke-accelerator=<gpu_type>`. Give it for non-GKE clusters.
        spot: run GPU tasks on Spot VMs (tolerate and select the `cloud.google.com/gke-spot` label).
        evaluate_on_gpu: evaluate on the GPU pool too. Off by default: evaluation is one
            prediction pass over the test split, which the step's fixed start-up dominates on the
            bundled datasets, while a GPU pod waits for a GPU node and holds a GPU that another
            model's train task could use. Worth it for large test splits or large images.
        worker_deadline_seconds: how long one attempt of a JobSet of workers may run before it
            fails (a hung collective or a stuck pod must not hold GPUs for ever).
        queue_name: Kueue LocalQueue the JobSet of workers is submitted to ('' = no Kueue).
        train_retries: how often a failed train pod is retried; preempted Spot nodes are the
            usual cause and training resumes from its last epoch checkpoint.
        retry_backoff_seconds: wait before the first retry; doubles every retry (seconds).
        retry_max_seconds: no retries start after this long since the first failure (seconds).
        gpu_task_cpu, gpu_task_memory: CPU/memory requests of a GPU pod (Kubernetes quantities);
            the defaults fit a g2-standard-8 (8 vCPU, 32 GB, one L4) with room for system pods.
        gpu_task_cpu_limit, gpu_task_memory_limit: their limits.
        cpu_task_cpu, cpu_task_memory: requests of prep and report pods.
        cpu_task_cpu_limit, cpu_task_memory_limit: their limits.
        worker_namespace: where the worker pods of multi-worker training run (k8s/workers/).
    """

    image: str
    gpu_type: str | None = "nvidia-l4"
    gpus_per_task: int = 1
    node_selector: tuple[tuple[str, str], ...] = ()
    spot: bool = False
    evaluate_on_gpu: bool = False
    worker_deadline_seconds: int = 24 * 3600
    queue_name: str = ""
    train_retries: int = 3
    retry_backoff_seconds: int = 60
    retry_max_seconds: int = 3600
    gpu_task_cpu: str = "4"
    gpu_task_memory: str = "16G"
    gpu_task_cpu_limit: str = "7"
    gpu_task_memory_limit: str = "24G"
    cpu_task_cpu: str = "1"
    cpu_task_memory: str = "4G"
    cpu_task_cpu_limit: str = "2"
    cpu_task_memory_limit: str = "8G"
    worker_namespace: str = WORKER_NAMESPACE

    def __post_init__(self):
        if not self.image or any(character.isspace() for character in self.image):
            raise UserError(
                f"image must be a container image reference like "
                f"'us-docker.pkg.dev/PROJECT/REPO/cnnpipe:TAG'; got {self.image!r}")
        _, by_digest, digest = self.image.partition("@")
        if by_digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise UserError(
                f"image {self.image!r} names a digest that is not sha256:<64 hex digits>; copy it from "
                f"`docker push` or `gcloud artifacts docker images describe IMAGE`")
        checks.integer("gpus_per_task", self.gpus_per_task, minimum=0, why="0 = CPU only")
        checks.integer("train_retries", self.train_retries, minimum=0)
        checks.integer("worker_deadline_seconds", self.worker_deadline_seconds, minimum=60)
        if self.queue_name and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?", self.queue_name):
            raise UserError(f"queue_name must be a Kueue LocalQueue name (lower-case letters, digits, '-', '.'); "
                            f"got {self.queue_name!r}")
        if self.gpus_per_task > 0 and not self.gpu_type and not self.node_selector:
            raise UserError(
                f"gpus_per_task={self.gpus_per_task} needs a GPU pool to land on: give gpu_type "
                f"(e.g. 'nvidia-l4') or a node_selector, or set gpus_per_task=0 for CPU only")
        if not NAMESPACE_PATTERN.fullmatch(self.worker_namespace):
            raise UserError(
                f"worker_namespace must be a Kubernetes namespace name (lower-case letters, digits and '-', "
                f"at most 63), the one k8s/workers/ was applied with; got {self.worker_namespace!r}")
        for pair in self.node_selector:
            if len(pair) != 2 or not all(isinstance(part, str) and part for part in pair):
                raise UserError(
                    f"node_selector entries must be (key, value) string pairs; got {pair!r}")

    @property
    def uses_gpu(self) -> bool:
        """Whether train and evaluate request GPUs."""
        return self.gpus_per_task > 0

    def gpu_node_selector(self) -> dict[str, str]:
        """Labels a GPU pod requires: the explicit selector, else GKE's accelerator label."""
        labels = dict(self.node_selector) if self.node_selector else {GKE_ACCELERATOR_LABEL: self.gpu_type}
        if self.spot:
            labels[GKE_SPOT_LABEL] = "true"
        return labels


def parse_node_selector(items: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Turns `KEY=VALUE` command-line items into node selector pairs."""
    pairs = []
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key.strip() or not value.strip():
            raise UserError(
                f"--node-selector needs KEY=VALUE, e.g. cloud.google.com/gke-nodepool=gpu-pool; got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def place_gpu_task(task, placement: Placement):
    """Puts a train/evaluate task on the GPU pool: GPU limit, selector, tolerations, resources.

    With `placement.gpus_per_task == 0` the task gets CPU placement instead, so the same
    pipeline compiles for clusters without GPUs.
    """
    if not placement.uses_gpu:
        return place_cpu_task(task, placement)
    task.set_container_image(placement.image)
    task.set_accelerator_type(GPU_RESOURCE)
    task.set_accelerator_limit(placement.gpus_per_task)
    task.set_cpu_request(placement.gpu_task_cpu)
    task.set_cpu_limit(placement.gpu_task_cpu_limit)
    task.set_memory_request(placement.gpu_task_memory)
    task.set_memory_limit(placement.gpu_task_memory_limit)
    for key, value in placement.gpu_node_selector().items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in gpu_tolerations(placement):
        kubernetes.add_toleration(task, **toleration)
    return task


def place_cpu_task(task, placement: Placement):
    """Puts a prep/report task on ordinary CPU nodes with modest requests."""
    task.set_container_image(placement.image)
    task.set_cpu_request(placement.cpu_task_cpu)
    task.set_cpu_limit(placement.cpu_task_cpu_limit)
    task.set_memory_request(placement.cpu_task_memory)
    task.set_memory_limit(placement.cpu_task_memory_limit)
    return task


def retry_preempted(task, placement: Placement):
    """Retries a failed task with exponential backoff (60 s, 120 s, 240 s ... by default).

    KFP's retry policy cannot look at exit codes, so every failure starts a retry; training
    resumes from its per-epoch checkpoint, so a retry after a preemption repeats at most one
    epoch. A run that stopped on a user mistake or a diverged loss left a failure record beside
    its checkpoint (components/checkpoints.py), so its retries stop at once with the same message
    instead of training again.
    """
    if placement.train_retries == 0:
        return task
    task.set_retry(
        num_retries=placement.train_retries,
        backoff_duration=f"{placement.retry_backoff_seconds}s",
        backoff_factor=2.0,
        backoff_max_duration=f"{placement.retry_max_seconds}s",
    )
    return task


def expose_pod_identity(task):
    """Gives the task's container its own pod name, uid and namespace (POD_*_VARIABLE)."""
    for variable, field_path in ((POD_NAME_VARIABLE, "metadata.name"), (POD_UID_VARIABLE, "metadata.uid"),
                                 (POD_NAMESPACE_VARIABLE, "metadata.namespace")):
        kubernetes.use_field_path_as_env(task, env_name=variable, field_path=field_path)
    return task


def disable_cache_for_mutable_source(task):
    """Makes prep always run: its source may change under the same name (see module docstring)."""
    task.set_caching_options(enable_caching=False)
    return task


def gpu_tolerations(placement: Placement) -> list[dict[str, str]]:
    """Taints a GPU pod tolerates, as Kubernetes toleration objects (also used by pipeline/jobset_spec.py)."""
    # GKE taints GPU nodes so that CPU-only pods stay off them; GPU pods must tolerate it.
    tolerations = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    if placement.spot:
        tolerations.append({"key": GKE_SPOT_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"})
    return tolerations
