"""The hand-over records train_result.json and result.json: written and read in one place, refused
in one line naming the file when a field is missing or unknown."""

import json

import pytest

from components import results
from components.errors import UserError

TRAIN_FIELDS = {
    "name": "lenet5", "family": "lenet", "params": 61706, "epochs": 2, "train_seconds": 3.5,
    "train_images_per_second": 120.0, "best_validation_accuracy": 0.5, "best_epoch": 2, "resumed_from_epoch": 0,
    "optimizer_steps": 6, "steps_per_epoch": 3, "images_seen": 48, "validation_split": "test",
    "dataset": "digits", "workers": 1, "backend": "jax", "config": {"epochs": 2},
}
EVALUATION_FIELDS = {
    **TRAIN_FIELDS, "test_accuracy": 0.75, "test_loss": 0.7, "test_images": 12, "inference_images_per_second": 900.0,
    "inference_batch_size": 256, "class_names": ["a", "b"], "confusion_matrix": [[5, 1], [2, 4]],
    "per_class": [], "reference_accuracy": None, "seed_accuracy": None, "mistakes": [],
}


def test_a_train_result_reads_back_as_written(tmp_path):
    written = results.TrainResult(format_version=results.FORMAT_VERSION, **TRAIN_FIELDS)
    results.write_train_result(str(tmp_path), written)
    assert results.read_train_result(str(tmp_path)) == written
    assert json.loads((tmp_path / "train_result.json").read_text())["format_version"] == results.FORMAT_VERSION


def test_an_evaluation_result_keeps_promotion_out_of_the_file_until_published(tmp_path):
    written = results.EvaluationResult(format_version=results.FORMAT_VERSION, **EVALUATION_FIELDS)
    results.write_evaluation_result(str(tmp_path), written)
    assert "promotion" not in json.loads((tmp_path / "result.json").read_text())
    published = results.EvaluationResult(**{**written.to_dict(), "promotion": {"decision": "promoted"}})
    results.write_evaluation_result(str(tmp_path), published)
    assert results.read_evaluation_result(str(tmp_path)).promotion == {"decision": "promoted"}


def test_a_file_of_the_previous_format_without_a_version_still_reads(tmp_path):
    (tmp_path / "train_result.json").write_text(json.dumps(TRAIN_FIELDS))
    assert results.read_train_result(str(tmp_path)).format_version == 1


def test_a_file_from_before_the_choice_of_backend_reads_as_tensorflow(tmp_path):
    (tmp_path / "train_result.json").write_text(json.dumps({key: value for key, value in TRAIN_FIELDS.items() if key != "backend"}))
    assert results.read_train_result(str(tmp_path)).backend == "tensorflow"


@pytest.mark.parametrize("fields, named", [
    ({key: value for key, value in TRAIN_FIELDS.items() if key != "params"}, "lacks params"),
    ({**TRAIN_FIELDS, "accuracy": 0.5}, "has unknown accuracy"),
    ({**TRAIN_FIELDS, "format_version": 7}, "has format_version 7, expected 1"),
])
def test_a_train_result_with_a_field_missing_or_unknown_names_the_file(tmp_path, fields, named):
    path = tmp_path / "train_result.json"
    path.write_text(json.dumps(fields))
    with pytest.raises(UserError, match=f"^{path} {named}; train the model again"):
        results.read_train_result(str(tmp_path))


def test_a_missing_or_broken_result_json_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no result.json in .*rerun the evaluate step"):
        results.read_evaluation_result(str(tmp_path))
    (tmp_path / "result.json").write_text('{"name": "lenet5", "test_acc')
    with pytest.raises(UserError, match="result.json is not valid JSON.*rerun the evaluate step"):
        results.read_evaluation_result(str(tmp_path))
