"""components.registry: publishing versions and champion promotion, on a local dir and the GCS emulator."""

import os
import re
import stat
import tempfile
import threading

import pytest

from components.errors import UserError
from components import artifacts, registry, storage

DATASET = "digits"
MODEL = "lenet5"
DATASET_MANIFEST = {"name": "digits", "num_classes": 10, "sha256": {"train_images.npy": "ab" * 32}}


@pytest.fixture(params=["gcs", "local"])
def registry_root(request, tmp_path):
    """An empty registry: a prefix in the emulator's bucket, or a local directory."""
    if request.param == "gcs":
        return request.getfixturevalue("gcs_emulator").url("models")
    return str(tmp_path / "models")


def make_model_dir(directory, extra_files=0):
    """A stand-in for a train step's output: any files will do (no Keras needed)."""
    files = {
        "model.keras": os.urandom(2048),
        "export/saved_model.pb": b"graph",
        "export/variables/variables.data-00000-of-00001": os.urandom(512),
        "history.csv": b"epoch,loss\n0,1.0\n",
    }
    files.update({f"extra/file_{number:03d}.bin": os.urandom(4096) for number in range(extra_files)})
    for name, data in files.items():
        path = os.path.join(directory, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(data)
    return str(directory), sorted(files)


def publish(root, tmp_path, run_id, accuracy, margin=0.0, model=MODEL, extra_files=0):
    """Publish a fake model with the given test accuracy."""
    model_dir, _ = make_model_dir(tempfile.mkdtemp(dir=tmp_path, prefix=f"{model}-{run_id}-"), extra_files)
    result = {"name": model, "test_accuracy": accuracy, "config": {"epochs": 2, "learning_rate": 0.001}}
    return registry.publish_model(model_dir, root, DATASET, model, run_id, result, DATASET_MANIFEST, margin=margin)


def test_first_model_is_promoted_and_its_version_is_complete(registry_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPIPE_IMAGE", "example.org/cnnpipe:1.2.3")
    model_dir, model_files = make_model_dir(tmp_path / "model")
    result = {"name": MODEL, "test_accuracy": 0.8, "config": {"epochs": 2}}
    decision = registry.publish_model(model_dir, registry_root, DATASET, MODEL, "run-1", result, DATASET_MANIFEST)
    version = registry.version_uri(registry_root, DATASET, MODEL, "run-1")
    assert decision["decision"] == "promoted" and decision["champion_accuracy"] is None
    assert decision["champion_uri"] == version and decision["challenger_accuracy"] == 0.8
    assert storage.list_files(version) == sorted(model_files + ["_COMPLETE", "manifest.json", "result.json"])
    manifest = storage.read_json(storage.join(version, "manifest.json"))
    assert manifest["dataset_sha256"] == DATASET_MANIFEST["sha256"] and manifest["config"] == {"epochs": 2}
    assert manifest["image"] == "example.org/cnnpipe:1.2.3" and manifest["image_digest"] is None  # a tag only
    assert {"tensorflow", "keras", "cnnpipe"} <= set(manifest["versions"])
    assert storage.read_json(storage.join(version, "result.json")) == result
    champion = registry.read_champion(registry_root, DATASET, MODEL)
    assert champion["run_id"] == "run-1" and champion["uri"] == version and champion["previous"] is None


def test_a_version_records_the_digest_of_an_image_given_by_digest(tmp_path, monkeypatch):
    digest = "sha256:" + "0123456789abcdef" * 4
    monkeypatch.setenv("CNNPIPE_IMAGE", f"example.org/cnnpipe@{digest}")
    root = str(tmp_path / "models")
    publish(root, tmp_path, "run-1", 0.8)
    record = storage.read_json(storage.join(registry.version_uri(root, DATASET, MODEL, "run-1"), "manifest.json"))
    assert record["image"] == f"example.org/cnnpipe@{digest}" and record["image_digest"] == digest


@pytest.mark.parametrize("umask, file_mode, directory_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_a_local_version_is_readable_by_whom_the_umask_lets_read(tmp_path, umask, file_mode, directory_mode):
    """A serving identity other than the publisher reads the version and the champion pointer:
    0644 files and 0755 folders under the usual umask 022 (mkstemp's 0600 used to keep it out)."""
    root = str(tmp_path / "models")
    previous = os.umask(umask)
    try:
        publish(root, tmp_path, "run-1", 0.8)
    finally:
        os.umask(previous)
    modes = {}
    for directory, _, files in os.walk(registry.model_uri(root, DATASET, MODEL)):
        modes[directory] = directory_mode
        modes.update({os.path.join(directory, name): file_mode for name in files})
    assert {path: stat.S_IMODE(os.stat(path).st_mode) for path in modes} == modes
    assert any(path.endswith("champion.json") for path in modes) and len(modes) > 8


def test_better_model_is_promoted_worse_and_tied_ones_are_kept(registry_root, tmp_path):
    assert registry.read_champion(registry_root, DATASET, MODEL) is None
    publish(registry_root, tmp_path, "run-1", 0.80)
    better = publish(registry_root, tmp_path, "run-2", 0.85)
    assert better["decision"] == "promoted" and better["champion_accuracy"] == 0.80
    worse = publish(registry_root, tmp_path, "run-3", 0.70)
    assert worse["decision"] == "kept" and worse["champion_run_id"] == "run-2" and worse["champion_accuracy"] == 0.85
    tie = publish(registry_root, tmp_path, "run-4", 0.85)
    assert tie["decision"] == "kept" and "does not beat" in tie["reason"]
    champion = registry.read_champion(registry_root, DATASET, MODEL)
    assert champion["run_id"] == "run-2" and champion["previous"]["run_id"] == "run-1"
    for run_id in ("run-1", "run-2", "run-3", "run-4"):  # every run stays available as a version
        assert registry.is_complete(registry.version_uri(registry_root, DATASET, MODEL, run_id))


def test_margin_is_required_on_top_of_the_champion(registry_root, tmp_path):
    publish(registry_root, tmp_path, "run-1", 0.80)
    assert publish(registry_root, tmp_path, "run-2", 0.805, margin=0.01)["decision"] == "kept"
    assert publish(registry_root, tmp_path, "run-3", 0.82, margin=0.01)["decision"] == "promoted"
    assert registry.read_champion(registry_root, DATASET, MODEL)["run_id"] == "run-3"


def test_a_published_run_id_is_never_overwritten(registry_root, tmp_path):
    publish(registry_root, tmp_path, "run-1", 0.80)
    with pytest.raises(ValueError, match="already published"):
        publish(registry_root, tmp_path, "run-1", 0.99)
    assert registry.read_champion(registry_root, DATASET, MODEL)["test_accuracy"] == 0.80


def test_bad_arguments_are_clear_errors(tmp_path):
    root = str(tmp_path / "models")
    model_dir, _ = make_model_dir(tmp_path / "model")
    good = {"test_accuracy": 0.5}
    with pytest.raises(ValueError, match=re.escape("margin must be a fraction in [0, 1), got -0.1; e.g. 0.005 for half a point")):
        registry.publish_model(model_dir, root, DATASET, MODEL, "run-1", good, {}, margin=-0.1)
    with pytest.raises(ValueError, match="test_accuracy"):
        registry.publish_model(model_dir, root, DATASET, MODEL, "run-1", {"test_accuracy": 91.2}, {})
    with pytest.raises(ValueError, match="run id 'a/b'"):
        registry.publish_model(model_dir, root, DATASET, MODEL, "a/b", good, {})
    with pytest.raises(UserError, match="no model directory"):
        registry.publish_model(str(tmp_path / "absent"), root, DATASET, MODEL, "run-1", good, {})
    assert not os.path.exists(root)


def test_concurrent_publishes_end_with_the_better_model(registry_root, tmp_path):
    for round_number in range(3):
        model = f"model{round_number}"
        publish(registry_root, tmp_path, "seed", 0.5, model=model)
        start_together = threading.Barrier(2)
        decisions, errors = {}, []

        def publish_racing(run_id, accuracy, model=model, start_together=start_together, decisions=decisions):
            try:
                start_together.wait()
                decisions[run_id] = publish(registry_root, tmp_path, run_id, accuracy, model=model)
            except Exception as error:  # surfaced below: a thread's exception would be lost otherwise
                errors.append(error)

        threads = [threading.Thread(target=publish_racing, args=args) for args in (("low", 0.7), ("high", 0.9))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        champion = registry.read_champion(registry_root, DATASET, model)
        assert champion["run_id"] == "high" and champion["test_accuracy"] == 0.9
        assert decisions["high"]["decision"] == "promoted"


def test_a_lost_update_is_repaired_by_the_next_promotion(registry_root, tmp_path):
    publish(registry_root, tmp_path, "low", 0.6)
    publish(registry_root, tmp_path, "high", 0.9)
    # What a store that ignores generation preconditions (like the GCS emulator) lets a racing
    # run do: overwrite the pointer with the worse model it had decided on from a stale read.
    pointer = storage.join(registry.model_uri(registry_root, DATASET, MODEL), artifacts.CHAMPION_FILE)
    low_uri = registry.version_uri(registry_root, DATASET, MODEL, "low")
    storage.write_json(pointer, {"run_id": "low", "uri": low_uri, "test_accuracy": 0.6, "previous": None})
    middle = publish(registry_root, tmp_path, "middle", 0.7)
    assert middle["decision"] == "kept" and middle["champion_run_id"] == "high"
    assert registry.read_champion(registry_root, DATASET, MODEL)["run_id"] == "high"


def test_emulator_stopped_mid_publish_leaves_the_champion_on_a_complete_model(gcs_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv(storage.RETRY_SECONDS_ENVIRONMENT_VARIABLE, "1")
    root = gcs_emulator.url("models")
    publish(root, tmp_path, "run-1", 0.7)
    real_copy = storage.copy
    copied = []

    def copy_but_stop_the_emulator_before_the_third_file(source, destination):
        copied.append(destination)
        if len(copied) == 3:  # two files of run-2 are stored, the rest never arrive
            gcs_emulator.stop()
        real_copy(source, destination)

    monkeypatch.setattr(storage, "copy", copy_but_stop_the_emulator_before_the_third_file)
    with pytest.raises(storage.StorageUnavailableError, match="attempts"):
        publish(root, tmp_path, "run-2", 0.95, extra_files=10)
    monkeypatch.setattr(storage, "copy", real_copy)
    gcs_emulator.start()

    champion = registry.read_champion(root, DATASET, MODEL)
    assert champion["run_id"] == "run-1" and registry.is_complete(champion["uri"])
    run_2 = registry.version_uri(root, DATASET, MODEL, "run-2")
    assert storage.list_files(run_2) and not registry.is_complete(run_2)  # stopped half-way
    # An incomplete version is never promoted, even by a later promotion's check of all versions.
    assert publish(root, tmp_path, "run-3", 0.8)["champion_run_id"] == "run-3"
    # Publishing the interrupted run again completes it and promotes it.
    assert publish(root, tmp_path, "run-2", 0.95)["decision"] == "promoted"
    assert not [name for name in storage.list_files(run_2) if name.startswith("extra/")]
    assert registry.read_champion(root, DATASET, MODEL)["previous"]["run_id"] == "run-3"
