"""components.registry: versions, lineages by test-set identity, significant promotion, per-task
champions and pins, on a local dir and the GCS emulator."""

import os
import re
import tempfile
import threading

import numpy as np
import pytest

from components import registry, storage
from components.errors import UserError
from components.significance import Correctness

MODEL = "lenet5"
TEST_IMAGES = 1000
TASK = registry.Task(dataset="digits", test_identity="ab" * 32, class_names=tuple("0123456789"), test_images=TEST_IMAGES)
OTHER_TASK = registry.Task(dataset="digits", test_identity="cd" * 32, class_names=tuple("0123456789"),
                           test_images=TEST_IMAGES)
DATASET_MANIFEST = {"name": "digits", "num_classes": 10, "sha256": {"test-00000-of-00001.tfrecord": "ab" * 32}}
# A champion right on the first 800 test images and wrong on the rest.
BASE_CORRECT = np.arange(TEST_IMAGES) < 800


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
        "history.csv": b"epoch,loss\n0,1.0\n",
    }
    files.update({f"extra/file_{number:03d}.bin": os.urandom(4096) for number in range(extra_files)})
    for name, data in files.items():
        path = os.path.join(directory, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(data)
    return str(directory), sorted(files)


def changed(correct, wins=0, losses=0):
    """``correct`` with ``wins`` wrong images made right and ``losses`` right images made wrong."""
    original = np.asarray(correct, dtype=bool)
    correct = original.copy()
    correct[np.flatnonzero(~original)[:wins]] = True
    correct[np.flatnonzero(original)[:losses]] = False
    return correct


def publish(root, tmp_path, run_id, correct, rule=registry.PromotionRule(), model=MODEL, task=TASK, extra_files=0,
            training_key=""):
    """Publish a fake model with the given per-image correctness."""
    model_dir, _ = make_model_dir(tempfile.mkdtemp(dir=tmp_path, prefix=f"{model}-{run_id}-"), extra_files)
    correctness = Correctness(task.test_identity, np.asarray(correct, dtype=bool))
    result = {"name": model, "test_accuracy": correctness.accuracy, "config": {"epochs": 2}}
    return registry.publish_model(model_dir, root, task, model, run_id, result, correctness, DATASET_MANIFEST, rule,
                                  training_key=training_key)


def test_first_model_becomes_both_champions_and_its_version_is_complete(registry_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPIPE_IMAGE", "example.org/cnnpipe:1.2.3")
    decision = publish(registry_root, tmp_path, "run-1", BASE_CORRECT)
    version = registry.version_uri(registry_root, TASK, MODEL, "run-1")
    assert decision["decision"] == "first" and decision["champion_run"] is None
    assert decision["task"]["decision"] == "first" and decision["version_uri"] == version
    assert version == storage.join(registry_root, "digits", "ab" * 8, MODEL, "run-1")
    assert {"_COMPLETE", "correctness.json", "manifest.json", "result.json", "model.keras"} <= set(storage.list_files(version))
    manifest = storage.read_json(storage.join(version, "manifest.json"))
    assert manifest["test_identity"] == TASK.test_identity and manifest["image"] == "example.org/cnnpipe:1.2.3"
    assert manifest["image_digest"] is None  # a tag only
    assert {"tensorflow", "keras", "cnnpipe"} <= set(manifest["versions"])
    assert registry.load_correctness(version).correct.tolist() == BASE_CORRECT.tolist()
    for champion in (registry.read_champion(registry_root, TASK, MODEL), registry.read_champion(registry_root, TASK)):
        assert champion["uri"] == version and champion["previous"] is None and champion["how"] == "first"
    lineage = storage.read_json(storage.join(registry.lineage_uri(registry_root, TASK), "lineage.json"))
    assert lineage["test_identity"] == TASK.test_identity and lineage["class_names"] == list("0123456789")


def test_a_version_records_the_digest_of_an_image_given_by_digest(tmp_path, monkeypatch):
    digest = "sha256:" + "0123456789abcdef" * 4
    monkeypatch.setenv("CNNPIPE_IMAGE", f"example.org/cnnpipe@{digest}")
    root = str(tmp_path / "models")
    publish(root, tmp_path, "run-1", BASE_CORRECT)
    record = storage.read_json(storage.join(registry.version_uri(root, TASK, MODEL, "run-1"), "manifest.json"))
    assert record["image"] == f"example.org/cnnpipe@{digest}" and record["image_digest"] == digest


def test_only_a_significant_win_above_the_margin_is_promoted(registry_root, tmp_path):
    publish(registry_root, tmp_path, "champion", BASE_CORRECT)
    # 12 against 8 disagreements: +0.4 points, p = 0.25; a new random seed does this.
    noise = publish(registry_root, tmp_path, "noise", changed(BASE_CORRECT, wins=12, losses=8))
    assert noise["decision"] == "kept" and noise["champion_run"] == f"{MODEL}/champion"
    assert (noise["wins"], noise["losses"]) == (12, 8) and noise["p_value"] == pytest.approx(0.2517223358)
    assert "not a significant win" in noise["reason"] and noise["task"]["decision"] == "not-compared"
    # Equal wins and losses, and no disagreement at all: no evidence, p >= 0.5.
    assert publish(registry_root, tmp_path, "tie", changed(BASE_CORRECT, wins=5, losses=5))["p_value"] > 0.5
    same = publish(registry_root, tmp_path, "same", BASE_CORRECT)
    assert same["decision"] == "kept" and (same["wins"], same["losses"], same["p_value"]) == (0, 0, 1.0)
    # 30 against 5: +2.5 points, p = 1.1e-5, but a 3-point margin keeps the champion.
    strict = registry.PromotionRule(margin=0.03, alpha=0.05)
    below_margin = publish(registry_root, tmp_path, "below-margin", changed(BASE_CORRECT, wins=30, losses=5), strict)
    assert below_margin["decision"] == "kept" and "not above the margin" in below_margin["reason"]
    better = publish(registry_root, tmp_path, "better", changed(BASE_CORRECT, wins=30, losses=5))
    assert better["decision"] == "promoted" and better["p_value"] == pytest.approx(1.118076e-5) and better["champion_run"] == f"{MODEL}/champion"
    assert better["task"]["decision"] == "promoted" and "significant win above the margin" in better["reason"]
    champion = registry.read_champion(registry_root, TASK, MODEL)
    assert champion["run_id"] == "better" and champion["previous"]["run_id"] == "champion"
    assert champion["comparison"] == {"wins": 30, "losses": 5, "p_value": better["p_value"]}
    for run_id in ("champion", "noise", "tie", "same", "below-margin", "better"):  # every run stays a version
        assert registry.is_complete(registry.version_uri(registry_root, TASK, MODEL, run_id))


def test_a_stricter_alpha_keeps_a_win_that_a_looser_one_promotes(tmp_path):
    root = str(tmp_path / "models")
    publish(root, tmp_path, "champion", BASE_CORRECT)
    challenger = changed(BASE_CORRECT, wins=15, losses=5)  # p = 0.0207
    strict = publish(root, tmp_path, "strict", challenger, registry.PromotionRule(alpha=0.01))
    assert strict["decision"] == "kept" and strict["p_value"] == pytest.approx(0.020694733)
    assert publish(root, tmp_path, "loose", challenger, registry.PromotionRule(alpha=0.05))["decision"] == "promoted"


def test_a_different_test_set_under_the_same_name_starts_its_own_lineage(registry_root, tmp_path):
    publish(registry_root, tmp_path, "run-1", BASE_CORRECT)
    other = publish(registry_root, tmp_path, "run-2", np.zeros(TEST_IMAGES, bool), task=OTHER_TASK)
    assert other["decision"] == "first" and other["champion_run"] is None  # never compared with run-1's 0.8
    assert f"digits has versions on 1 other test set ({TASK.lineage}), measured on other images" in other["reason"]
    assert registry.read_champion(registry_root, TASK, MODEL)["run_id"] == "run-1"
    assert registry.read_champion(registry_root, OTHER_TASK, MODEL)["run_id"] == "run-2"
    listed = registry.list_registry(registry_root)
    assert [entry["reference"] for entry in listed] == ["digits/" + "ab" * 8, "digits/" + "cd" * 8]


def test_the_task_champion_is_the_significantly_best_architecture(registry_root, tmp_path):
    publish(registry_root, tmp_path, "run-1", BASE_CORRECT, model="lenet5")
    noisy = publish(registry_root, tmp_path, "run-1", changed(BASE_CORRECT, wins=3, losses=1), model="alexnet8")
    assert noisy["decision"] == "first" and noisy["task"]["decision"] == "kept"  # its architecture's first, not the task's
    better = publish(registry_root, tmp_path, "run-1", changed(BASE_CORRECT, wins=40), model="resnet20_v1")
    assert better["task"]["decision"] == "promoted" and better["task"]["champion_run"] == "lenet5/run-1"
    task_champion = registry.read_champion(registry_root, TASK)
    assert (task_champion["model"], task_champion["run_id"]) == ("resnet20_v1", "run-1")


def test_a_pin_survives_a_better_run_until_unpinned(registry_root, tmp_path):
    publish(registry_root, tmp_path, "good", changed(BASE_CORRECT, wins=40))
    publish(registry_root, tmp_path, "old", BASE_CORRECT)
    reference = f"digits/{TASK.lineage}/{MODEL}/old"
    registry.promote_by_hand(registry_root, reference, pin=True, note="rollback")
    better = publish(registry_root, tmp_path, "better", changed(BASE_CORRECT, wins=60))
    assert better["decision"] == "kept" and "pinned" in better["reason"] and better["wins"] == 60
    for champion in (registry.read_champion(registry_root, TASK, MODEL), registry.read_champion(registry_root, TASK)):
        assert champion["run_id"] == "old" and champion["pinned"]["note"] == "rollback"
    with pytest.raises(UserError, match="is pinned to lenet5/old; `cnnpipe registry unpin` it first"):
        registry.promote_by_hand(registry_root, f"digits/{TASK.lineage}/{MODEL}/good")
    assert len(registry.unpin(registry_root, reference)) == 2
    assert publish(registry_root, tmp_path, "after", changed(BASE_CORRECT, wins=60))["decision"] == "promoted"


def test_publishing_a_run_again_gives_the_same_decision_and_a_different_result_is_refused(registry_root, tmp_path):
    first = publish(registry_root, tmp_path, "run-1", BASE_CORRECT)
    again = publish(registry_root, tmp_path, "run-1", BASE_CORRECT)
    assert again["decision"] == first["decision"] == "first"
    publish(registry_root, tmp_path, "run-2", changed(BASE_CORRECT, wins=40))
    assert publish(registry_root, tmp_path, "run-2", changed(BASE_CORRECT, wins=40))["decision"] == "promoted"
    with pytest.raises(UserError, match="already published .* with test accuracy 0.84"):
        publish(registry_root, tmp_path, "run-2", BASE_CORRECT)
    assert registry.read_champion(registry_root, TASK, MODEL)["run_id"] == "run-2"


def test_a_version_of_the_same_training_key_is_found_for_reuse(tmp_path):
    root = str(tmp_path / "models")
    assert registry.find_reusable(root, TASK, MODEL, "key-1") is None
    publish(root, tmp_path, "run-1", BASE_CORRECT, training_key="key-1")
    publish(root, tmp_path, "run-2", BASE_CORRECT, training_key="key-1")
    found = registry.find_reusable(root, TASK, MODEL, "key-1")
    assert found["run_id"] == "run-1" and found["uri"] == registry.version_uri(root, TASK, MODEL, "run-1")
    assert registry.find_reusable(root, TASK, MODEL, "key-2") is None
    assert registry.find_reusable(root, OTHER_TASK, MODEL, "key-1") is None


def test_bad_arguments_are_clear_errors(tmp_path):
    root = str(tmp_path / "models")
    model_dir, _ = make_model_dir(tmp_path / "model")
    good = {"test_accuracy": 0.5}
    correctness = Correctness(TASK.test_identity, BASE_CORRECT)
    with pytest.raises(ValueError, match=re.escape("promotion_margin must be a fraction in [0, 1), got -0.1; e.g. 0.005 for half a point")):
        registry.PromotionRule(margin=-0.1)
    with pytest.raises(ValueError, match=re.escape("promotion_alpha must be a number in (0, 1], got 0; e.g. 0.05")):
        registry.PromotionRule(alpha=0)
    with pytest.raises(ValueError, match="test_accuracy"):
        registry.publish_model(model_dir, root, TASK, MODEL, "run-1", {"test_accuracy": 91.2}, correctness, {})
    with pytest.raises(ValueError, match="run id 'a/b'"):
        registry.publish_model(model_dir, root, TASK, MODEL, "a/b", good, correctness, {})
    with pytest.raises(UserError, match="no model directory"):
        registry.publish_model(str(tmp_path / "absent"), root, TASK, MODEL, "run-1", good, correctness, {})
    with pytest.raises(UserError, match="measured on another test set"):
        registry.publish_model(model_dir, root, TASK, MODEL, "run-1", good, Correctness("ef" * 32, BASE_CORRECT), {})
    with pytest.raises(UserError, match="is not <dataset>/<lineage>/<model>/<run id>"):
        registry.promote_by_hand(root, "digits/run-1")
    assert not os.path.exists(root)


def test_concurrent_publishes_end_with_the_better_model(registry_root, tmp_path):
    for round_number in range(3):
        model = f"model{round_number}"
        publish(registry_root, tmp_path, "seed", BASE_CORRECT, model=model)
        start_together = threading.Barrier(2)
        decisions, errors = {}, []

        def publish_racing(run_id, correct, model=model, start_together=start_together, decisions=decisions):
            try:
                start_together.wait()
                decisions[run_id] = publish(registry_root, tmp_path, run_id, correct, model=model)
            except Exception as error:  # surfaced below: a thread's exception would be lost otherwise
                errors.append(error)

        racers = (("low", changed(BASE_CORRECT, losses=50)), ("high", changed(BASE_CORRECT, wins=100)))
        threads = [threading.Thread(target=publish_racing, args=args) for args in racers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert registry.read_champion(registry_root, TASK, model)["run_id"] == "high"
        assert decisions["high"]["decision"] == "promoted" and decisions["low"]["decision"] == "kept"


def test_a_racing_winner_overwritten_on_a_store_without_preconditions_is_restored(registry_root, tmp_path, monkeypatch):
    publish(registry_root, tmp_path, "champion", BASE_CORRECT)
    real_write_json = storage.write_json
    pointer = storage.join(registry.model_uri(registry_root, TASK, MODEL), "champion.json")
    stale = {}

    def write_then_let_a_stale_racer_overwrite(uri, value, if_generation_match=None):
        generation = real_write_json(uri, value, if_generation_match=if_generation_match)
        if uri == pointer and value["run_id"] == "best" and not stale:
            # A racer that read the pointer before "best" moved it writes its own win over the old
            # champion; the store ignores its precondition (the GCS emulator does).
            stale["done"] = True
            publish_without_contending("slightly-better", changed(BASE_CORRECT, wins=30))
        return generation

    def publish_without_contending(run_id, correct):
        version = registry.version_uri(registry_root, TASK, MODEL, run_id)
        model_dir, _ = make_model_dir(tempfile.mkdtemp(dir=tmp_path))
        correctness = Correctness(TASK.test_identity, correct)
        result = {"test_accuracy": correctness.accuracy}
        registry._upload_version(model_dir, version, run_id, correctness.accuracy, result, correctness, {}, "")
        replaced = registry.read_champion(registry_root, TASK, MODEL)["previous"]  # the champion it read
        real_write_json(storage.join(version, registry.MODEL_CLAIM_FILE), {"against": replaced["uri"]})
        record = registry._pointer_record(registry._version_summary(version), replaced,
                                          registry.Verdict(True, "won"), how="promoted")
        real_write_json(pointer, record)

    monkeypatch.setattr(storage, "write_json", write_then_let_a_stale_racer_overwrite)
    best = publish(registry_root, tmp_path, "best", changed(BASE_CORRECT, wins=150))
    assert best["decision"] == "promoted"
    champion = registry.read_champion(registry_root, TASK, MODEL)
    assert champion["run_id"] == "best" and champion["previous"]["run_id"] == "slightly-better"


def test_emulator_stopped_mid_publish_leaves_the_champion_on_a_complete_model(gcs_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv(storage.RETRY_SECONDS_ENVIRONMENT_VARIABLE, "1")
    root = gcs_emulator.url("models")
    publish(root, tmp_path, "run-1", BASE_CORRECT)
    real_copy = storage.copy
    copied = []

    def copy_but_stop_the_emulator_before_the_third_file(source, destination):
        copied.append(destination)
        if len(copied) == 3:  # two files of run-2 are stored, the rest never arrive
            gcs_emulator.stop()
        real_copy(source, destination)

    monkeypatch.setattr(storage, "copy", copy_but_stop_the_emulator_before_the_third_file)
    with pytest.raises(storage.StorageUnavailableError, match="attempts"):
        publish(root, tmp_path, "run-2", changed(BASE_CORRECT, wins=100), extra_files=10)
    monkeypatch.setattr(storage, "copy", real_copy)
    gcs_emulator.start()

    champion = registry.read_champion(root, TASK, MODEL)
    assert champion["run_id"] == "run-1" and registry.is_complete(champion["uri"])
    run_2 = registry.version_uri(root, TASK, MODEL, "run-2")
    assert storage.list_files(run_2) and not registry.is_complete(run_2)  # stopped half-way
    # Publishing the interrupted run again completes it and promotes it.
    assert publish(root, tmp_path, "run-2", changed(BASE_CORRECT, wins=100))["decision"] == "promoted"
    assert not [name for name in storage.list_files(run_2) if name.startswith("extra/")]
    assert registry.read_champion(root, TASK, MODEL)["previous"]["run_id"] == "run-1"
