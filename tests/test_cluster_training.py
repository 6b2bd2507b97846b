"""The train task on the cluster with several workers, end to end against loopback servers:
the loopback Kubernetes API server stands in for the JobSet controller (its JobSet completes),
the GCS emulator holds the checkpoint the worker pods would have written."""

import json

import pytest

from components import heartbeat, storage
from components.errors import UserError
from components.train import train
from pipeline.jobset_spec import worker_pod_settings
from pipeline.launch import train_on_workers
from pipeline.placement import Placement
from tests.k8s_fake_server import FakeKubernetesServer, completed, write_kubeconfig
from tests.test_train import quick_config, write_dataset

IMAGE = "registry.example.com/cnnpipe:1.0"


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    """A kubeconfig naming a loopback API server whose JobSets complete at once; yields the server."""
    with FakeKubernetesServer(status_script=[completed()]) as server:
        write_kubeconfig(tmp_path / "kubeconfig", server, "kubeflow")
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield server


def test_train_task_runs_a_jobset_then_writes_the_chiefs_outputs_from_the_shared_checkpoint(
    gcs_emulator, kubeconfig, tmp_path
):
    # The dataset artifact in the bucket: the worker pods and this task read it at the same location.
    dataset = gcs_emulator.url("pipeline-root/run/prepare-data/dataset")
    storage.upload_tree(write_dataset(tmp_path / "dataset"), dataset)
    checkpoint_dir = gcs_emulator.url("checkpoints/run-1/lenet5")
    config = quick_config(epochs=2)
    # What the worker pods leave behind: every epoch checkpointed in the bucket.
    train(dataset, "lenet5", str(tmp_path / "pods"), config, checkpoint_dir)

    placement = json.dumps({**worker_pod_settings(Placement(image=IMAGE)), "max_restarts": 2})
    result = train_on_workers(2, dataset, "lenet5", str(tmp_path / "model"), config, checkpoint_dir=checkpoint_dir,
                              tensorboard_dir=None, run_id="run-1", cluster_placement=placement)

    assert result.epochs == 2 and (tmp_path / "model" / "model.keras").is_file()
    (create,) = kubeconfig.requests_to("POST", "/jobsets")
    assert create.body["spec"]["failurePolicy"]["maxRestarts"] == 2
    (replicated_job,) = create.body["spec"]["replicatedJobs"]
    assert replicated_job["template"]["spec"]["parallelism"] == 2
    (container,) = replicated_job["template"]["spec"]["template"]["spec"]["containers"]
    command = container["command"] + container.get("args", [])
    assert container["image"] == IMAGE
    assert command[:3] == ["python3", "-m", "components.workers"]  # sets TF_CONFIG from the pod's place
    worker_command = command[3:]
    assert worker_command[:3] == ["python3", "-m", "components.train_worker"]
    flags = dict(zip(worker_command[3::2], worker_command[4::2]))
    # The pods read the dataset from the bucket and share progress through the gs:// checkpoint.
    assert flags["--dataset"] == dataset
    assert flags["--checkpoint-dir"] == checkpoint_dir
    assert flags["--tensorboard-dir"] == storage.join(checkpoint_dir, "tensorboard")
    assert json.loads(flags["--config"]) == config.to_dict()
    # The pods watch this task's heartbeat beside the checkpoint; it is gone once the task is done.
    environment = {variable["name"]: variable["value"] for variable in container["env"]}
    heartbeat_uri = storage.join(checkpoint_dir, heartbeat.HEARTBEAT_FILE)
    assert environment[heartbeat.HEARTBEAT_VARIABLE] == heartbeat_uri
    assert environment[heartbeat.TIMEOUT_VARIABLE] == "300"
    assert not storage.exists(heartbeat_uri)
    assert kubeconfig.requests_to("DELETE", "/jobsets")


def test_several_workers_on_the_cluster_need_a_gcs_checkpoint(kubeconfig, tmp_path):
    placement = json.dumps(worker_pod_settings(Placement(image=IMAGE)))
    with pytest.raises(UserError, match="needs a gs:// checkpoint_root"):
        train_on_workers(2, "gs://root/dataset", "lenet5", str(tmp_path / "model"), quick_config(),
                         checkpoint_dir=str(tmp_path / "local-checkpoints"), tensorboard_dir=None, run_id="run-1",
                         cluster_placement=placement)
    assert not kubeconfig.requests_to("POST", "/jobsets")


def test_a_bad_heartbeat_timeout_on_the_train_task_stops_it_before_anything_is_created(kubeconfig, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setenv(heartbeat.TIMEOUT_VARIABLE, "5 min")
    placement = json.dumps(worker_pod_settings(Placement(image=IMAGE)))
    with pytest.raises(UserError, match="^CNNPIPE_LAUNCHER_TIMEOUT_SECONDS must be a number > 0, got '5 min'"):
        train_on_workers(2, "gs://root/dataset", "lenet5", str(tmp_path / "model"), quick_config(),
                         checkpoint_dir="gs://root/checkpoints/run-1/lenet5", tensorboard_dir=None, run_id="run-1",
                         cluster_placement=placement)
    assert not kubeconfig.requests_to("POST", "/jobsets")
