"""Where the train step runs: in this process, on N local worker processes, or on a JobSet of N pods.

The decision sits here, above the library: components/ trains (components/train.py), starts and
watches local worker processes (components/workers.py) and is the command every worker runs
(components/train_worker.py); the JobSet is the cluster's (pipeline/jobset_spec.py, pipeline/jobset_run.py).
"""

from __future__ import annotations

import json
import sys

from components import storage
from components.checkpoints import HOLDER_VARIABLE
from components.errors import UserError
from components.heartbeat import HEARTBEAT_FILE, LauncherHeartbeat
from components.results import TrainResult, read_train_result
from components.train_worker import worker_arguments
from components.workers import check_worker_count, run_local_workers

# Where a JobSet worker pod puts the outputs of its train command; the train task's own pod
# writes the real ones from the shared checkpoint.
WORKER_SCRATCH_OUTPUT = "/tmp/cnnpipe-worker-output"
# How often the JobSet restarts its group of workers after a failure, unless the placement says.
DEFAULT_MAX_RESTARTS = 3


def train_on_workers(worker_count: int, dataset: str, model_name: str, output_dir: str, config, *,
                     checkpoint_dir: str | None, tensorboard_dir: str | None, run_id: str = "",
                     cluster_placement: str = "", holder: str = "") -> TrainResult:
    """The train task: trains in this process, on N local processes, or on a JobSet of N pods.

    On the cluster (`cluster_placement` set by `cnnpipe compile`) the worker pods read the
    dataset at its gs:// location and share their progress through the gs:// `checkpoint_dir`;
    once they are done, this pod writes the chief's best model and records to `output_dir` from
    the final checkpoint (a train run whose epochs are all done only writes its outputs).

    Args:
        dataset: The dataset's location (a directory, or the gs:// prefix of a pipeline artifact).
        config: The TrainConfig.
        run_id: Names the JobSet with the model; the same on a retry of the task, which then replaces it.
        cluster_placement: JSON of the worker pods' settings (pipeline.jobset_spec.worker_pod_settings)
            plus the JobSet's max_restarts, set by `cnnpipe compile`; '' off the cluster.
        holder: The pipeline run id. On the cluster it holds the checkpoint lease in every attempt
            (a retried task and a restarted JobSet find their own lease) and labels the JobSet; off
            the cluster the training process holds the lease itself, so the lease of a local run
            that was killed is seen to be gone.
    """
    check_worker_count(worker_count)
    holder = holder if cluster_placement else ""
    if worker_count == 1:
        return train_here(dataset, model_name, output_dir, config, checkpoint_dir, tensorboard_dir, holder)
    if not cluster_placement:
        arguments = worker_arguments(dataset, model_name, output_dir, config.to_dict(), checkpoint_dir=checkpoint_dir,
                                     tensorboard_dir=tensorboard_dir)
        run_local_workers(worker_count, [sys.executable, "-m", "components.train_worker", *arguments])
        return read_train_result(output_dir)
    train_on_jobset(worker_count, dataset, model_name, config, checkpoint_dir=checkpoint_dir,
                    tensorboard_dir=tensorboard_dir, run_id=run_id, cluster_placement=cluster_placement, holder=holder)
    return train_here(dataset, model_name, output_dir, config, checkpoint_dir, None, holder)


def train_here(dataset: str, model_name: str, output_dir: str, config, checkpoint_dir: str | None,
               tensorboard_dir: str | None, holder: str = "") -> TrainResult:
    """Trains in this process (TensorFlow is imported only here: a launcher of workers does not pay for it)."""
    from components.train import train

    return train(dataset, model_name, output_dir, config, checkpoint_dir, tensorboard_dir=tensorboard_dir,
                 holder=holder or None)


def train_on_jobset(worker_count: int, dataset: str, model_name: str, config, *, checkpoint_dir: str | None,
                    tensorboard_dir: str | None, run_id: str, cluster_placement: str, holder: str = "") -> None:
    """Runs the workers as the pods of a JobSet and waits for them; they leave their model in `checkpoint_dir`."""
    from pipeline.jobset_run import run_workers_on_cluster
    from pipeline.jobset_spec import jobset_name

    if not checkpoint_dir or not storage.is_gcs(checkpoint_dir):
        raise UserError("training on several workers on the cluster needs a gs:// checkpoint_root: the worker pods "
                        "share their progress through it; pass --param checkpoint_root=gs://BUCKET/checkpoints")
    pod_settings = json.loads(cluster_placement)
    max_restarts = pod_settings.pop("max_restarts", DEFAULT_MAX_RESTARTS)
    if not tensorboard_dir or not storage.is_gcs(tensorboard_dir):
        tensorboard_dir = storage.join(checkpoint_dir, "tensorboard")  # the pods cannot write into this pod
    command = ["python3", "-m", "components.train_worker",
               *worker_arguments(dataset, model_name, WORKER_SCRATCH_OUTPUT, config.to_dict(),
                                 checkpoint_dir=checkpoint_dir, tensorboard_dir=tensorboard_dir)]
    # Every worker pod's chief holds the checkpoint lease as this run, in every attempt of the group.
    env = {HOLDER_VARIABLE: holder} if holder else {}
    # The workers stop when this pod stops renewing its heartbeat (killed, deleted): in the
    # workers' namespace nothing else ties the JobSet to it.
    with LauncherHeartbeat(storage.join(checkpoint_dir, HEARTBEAT_FILE)) as heartbeat:
        run_workers_on_cluster(jobset_name(run_id, model_name), command, worker_count, pod_settings,
                               max_restarts=max_restarts, pipeline_run=holder,
                               env={**env, **heartbeat.worker_environment()})
