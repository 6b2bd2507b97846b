"""The train step's and the evaluate step's records: train_result.json and result.json.

Each is a frozen record with a format version, written and read only here. A file written before
the records carried a version (format 1 without the field) reads as format 1; another version, or
a field missing or unknown, is a one-line error naming the file and the fix.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from components.artifacts import RESULT_FILE, TRAIN_RESULT_FILE
from components.errors import UserError
from components.records import from_fields

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainResult:
    """What training one model gave: train_result.json in the model directory."""

    format_version: int
    name: str  # the zoo name
    family: str
    params: int
    epochs: int  # epochs completed, resumed ones included
    train_seconds: float
    train_images_per_second: float | None
    best_validation_accuracy: float | None  # None without a validation split
    best_epoch: int
    resumed_from_epoch: int
    optimizer_steps: int
    steps_per_epoch: int
    images_seen: int
    validation_split: str | None  # None: the dataset has none, nothing was validated
    dataset: str
    workers: int
    backend: str  # the Keras backend it trained on: "tensorflow" or "jax"
    config: dict[str, Any]  # the TrainConfig's fields
    # Which epoch the model is: "validation" (the best by validation accuracy) or "last" (no
    # validation split); None in files written before it was recorded.
    epoch_chosen_by: str | None = dataclasses.field(default=None, kw_only=True)
    # The registry version an unchanged run reused instead of training: {"run_id", "uri", "completed_at"}.
    reused_from: dict[str, Any] | None = dataclasses.field(default=None, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EvaluationResult(TrainResult):
    """The train result plus the test split's measurements: result.json in the evaluation directory;
    `promotion` is the registry's decision, present once the model was published."""

    test_accuracy: float
    test_identity: str | None = dataclasses.field(default=None, kw_only=True)  # the test set's (manifest.test_identity)
    test_loss: float
    test_images: int
    inference_images_per_second: float | None
    inference_batch_size: int
    class_names: list[str]
    confusion_matrix: list[list[int]]
    per_class: list[dict[str, Any]]
    reference_accuracy: float | None
    seed_accuracy: float | None
    mistakes: list[dict[str, Any]]
    promotion: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        if fields["promotion"] is None:
            del fields["promotion"]
        return fields


def write_train_result(model_dir: str, result: TrainResult) -> None:
    _write(model_dir, TRAIN_RESULT_FILE, result)


def read_train_result(model_dir: str) -> TrainResult:
    return _read(TrainResult, model_dir, TRAIN_RESULT_FILE, "train the model again with this version")


def write_evaluation_result(result_dir: str, result: EvaluationResult) -> None:
    _write(result_dir, RESULT_FILE, result)


def read_evaluation_result(result_dir: str) -> EvaluationResult:
    return _read(EvaluationResult, result_dir, RESULT_FILE, "rerun the evaluate step for this model")


def _write(directory: str, file_name: str, result: TrainResult) -> None:
    from components import storage

    storage.write_json(os.path.join(directory, file_name), result.to_dict())


def _read(record_type, directory: str, file_name: str, fix: str):
    from components import storage

    path = os.path.join(directory, file_name)
    if not storage.exists(path):
        raise UserError(f"no {file_name} in {directory}; {fix}")
    try:
        fields = storage.read_json(path)
    except ValueError as error:  # not JSON, or not text
        raise UserError(f"{path} is not valid JSON ({type(error).__name__}); {fix}") from None
    if not isinstance(fields, dict):
        raise UserError(f"{path} holds a {type(fields).__name__}, not an object; {fix}")
    fields.setdefault("format_version", 1)  # written before the records carried their version
    fields.setdefault("backend", "tensorflow")  # written before there was a choice of backend
    if fields["format_version"] != FORMAT_VERSION:
        raise UserError(f"{path} has format_version {fields['format_version']!r}, expected {FORMAT_VERSION}; {fix}")
    return from_fields(record_type, fields, path, fix)
