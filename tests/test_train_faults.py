"""The train step under faults: another run holding the checkpoint location, and storage
failures that must never be recorded as the run's own mistake."""

import os

import pytest

from components import checkpoints
from components.errors import StorageError, UserError
from components.keras_setup import keras
from components.train import train
from tests.test_train import quick_config, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("faults") / "dataset")


class FailAtFirstEpochEnd(keras.callbacks.Callback):
    """Raises `error` when the first epoch ends (after its checkpoint was written)."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def on_epoch_end(self, epoch, logs=None):
        raise self.error


def test_a_run_with_the_same_checkpoint_location_as_a_live_run_stops_before_training(dataset, tmp_path):
    location = str(tmp_path / "checkpoints" / "nightly" / "lenet5")
    with checkpoints.Lease(location, "pipeline-run-A"):
        with pytest.raises(UserError, match=f"^run pipeline-run-A is training into {location}"):
            train(dataset, "lenet5", str(tmp_path / "output"), quick_config(), location, holder="pipeline-run-B")
        # Nothing of run B's (the lock file is the local back end's conditional write).
        assert sorted(os.listdir(location)) == [".lease.json.lock", ".lease.lock", "lease.json"]


def test_a_storage_failure_is_not_recorded_but_a_user_mistake_is(dataset, tmp_path):
    location = str(tmp_path / "checkpoints")
    failure = os.path.join(location, checkpoints.FAILURE_FILE)
    denied = StorageError("permission denied to upload gs://bucket/checkpoints/state.json; grant the service account access")
    with pytest.raises(StorageError):
        train(dataset, "lenet5", str(tmp_path / "a"), quick_config(), location, callbacks=[FailAtFirstEpochEnd(denied)])
    assert not os.path.exists(failure)  # a retry after the permissions are fixed trains on
    assert not os.path.exists(os.path.join(location, "lease.json"))  # released on the way out
    with pytest.raises(UserError):
        train(dataset, "lenet5", str(tmp_path / "b"), quick_config(), location,
              callbacks=[FailAtFirstEpochEnd(UserError("loss diverged"))])
    assert os.path.exists(failure)
