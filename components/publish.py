"""Publish an evaluated model to the model registry, or reuse an unchanged one from it.

The registry (``components.registry``) stores files and decides promotion; this step prepares
what it stores: the Keras model as trained, its history and records, the per-image correctness
on the test split (for paired tests later, without evaluating the champion again) and a
TensorFlow SavedModel that serving systems load without Keras. The decision is written back
into the evaluation's ``result.json`` (its ``promotion`` block) so the report shows it.

A run whose data and recipe equal those of a complete version (same ``training_key``) need not
train at all: ``reuse_trained`` fills the train step's output from that version and
``reuse_evaluated`` the evaluate step's, and the report says "unchanged since <run>".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile

from components import manifest as dataset_manifest
from components import registry, storage
from components.artifacts import (
    CHAMPION_FILE,
    CORRECTNESS_FILE,
    HISTORY_FILE,
    MISTAKES_FILE,
    MODEL_FILE,
    RESULT_FILE,
    TRAIN_RESULT_FILE,
)
from components.errors import UserError
from components.manifest import DatasetManifest
from components.results import (
    EvaluationResult,
    read_evaluation_result,
    read_train_result,
    write_evaluation_result,
    write_train_result,
)
from components.significance import Correctness

logger = logging.getLogger(__name__)

MODEL_FILES = (MODEL_FILE, HISTORY_FILE, TRAIN_RESULT_FILE)
SAVED_MODEL_DIR = "saved_model"


def task_of(manifest: DatasetManifest) -> registry.Task:
    """The registry's test-set identity of a prepared dataset."""
    return registry.Task(dataset=manifest.name, test_identity=manifest.test_identity,
                         class_names=tuple(manifest.class_names), test_images=int(manifest.splits["test"]))


def training_key(manifest: DatasetManifest, model_name: str, config: dict) -> str:
    """What a model is trained from: every prepared file's content (train, validation and test
    shards, the mean image), the architecture, and the whole recipe with its epochs."""
    from components.recipe import TrainConfig
    from components.train import dataset_fingerprint

    recipe = TrainConfig.from_dict(config)
    encoded = json.dumps({"fingerprint": recipe.fingerprint(model_name, dataset_fingerprint(manifest)),
                          "epochs": recipe.epochs})
    return hashlib.sha256(encoded.encode()).hexdigest()


def publish(
    dataset_dir: str,
    model_dir: str,
    result_dir: str,
    registry_root: str,
    run_id: str,
    margin: float = 0.0,
    alpha: float = registry.DEFAULT_ALPHA,
) -> dict:
    """Publish the model in ``model_dir`` under the registry's lineage of the dataset's test set.

    Publishing again with the same run id (a retried step) succeeds with the same decision.
    Returns the registry's promotion block, also stored as the ``promotion`` field of
    ``result_dir/result.json``.
    """
    rule = registry.PromotionRule(margin=margin, alpha=alpha)
    manifest = dataset_manifest.read(dataset_dir)
    result = read_evaluation_result(result_dir)
    correctness = read_correctness(result_dir)
    with tempfile.TemporaryDirectory(prefix="cnnpipe-publish-") as staging:
        for name in MODEL_FILES:
            shutil.copyfile(os.path.join(model_dir, name), os.path.join(staging, name))
        if os.path.isfile(os.path.join(result_dir, MISTAKES_FILE)):
            shutil.copyfile(os.path.join(result_dir, MISTAKES_FILE), os.path.join(staging, MISTAKES_FILE))
        export_saved_model(os.path.join(model_dir, MODEL_FILE), os.path.join(staging, SAVED_MODEL_DIR))
        decision = registry.publish_model(
            staging, registry_root, task_of(manifest), result.name, run_id, result.to_dict(), correctness,
            manifest.to_dict(), rule, training_key=training_key(manifest, result.name, result.config),
        )
    write_evaluation_result(result_dir, dataclasses.replace(result, promotion=decision))
    return decision


def read_correctness(result_dir: str) -> Correctness:
    """The per-image correctness the evaluate step wrote."""
    path = os.path.join(result_dir, CORRECTNESS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"no {CORRECTNESS_FILE} in {result_dir}; pass the evaluate step's output directory")
    return Correctness.from_dict(storage.read_json(path), where=path)


def reuse_trained(registry_root: str, dataset_dir: str, model_name: str, config: dict, model_dir: str):
    """Fill ``model_dir`` from a complete version trained from the same data and recipe.

    Returns the version's TrainResult with ``reused_from`` (run id, uri, when it completed), or
    None when the registry has no such version (then the step trains).
    """
    manifest = dataset_manifest.read(dataset_dir)
    version = registry.find_reusable(
        registry_root, task_of(manifest), model_name, training_key(manifest, model_name, config))
    if version is None:
        return None
    logger.info("%s unchanged since %s (same data and recipe): reusing %s, nothing to train (--retrain trains)",
                model_name, version["run_id"], version["uri"])
    os.makedirs(model_dir, exist_ok=True)
    for name in MODEL_FILES:
        storage.download(storage.join(version["uri"], name), os.path.join(model_dir, name))
    reused_from = {key: version[key] for key in ("run_id", "uri", "completed_at")}
    train_result = dataclasses.replace(read_train_result(model_dir), reused_from=reused_from)
    write_train_result(model_dir, train_result)
    return train_result


def reuse_evaluated(model_dir: str, output_dir: str, registry_root: str) -> EvaluationResult | None:
    """Fill the evaluate step's ``output_dir`` from the version a reused model came from.

    Returns the version's evaluation (its promotion block now ``not-compared``: unchanged since
    that run), or None when ``model_dir`` was trained in this run.
    """
    source = read_train_result(model_dir).reused_from
    if not source:
        return None
    os.makedirs(output_dir, exist_ok=True)
    for name in (CORRECTNESS_FILE, MISTAKES_FILE, HISTORY_FILE, RESULT_FILE):
        uri = storage.join(source["uri"], name)
        if storage.exists(uri):
            storage.download(uri, os.path.join(output_dir, name))
    published = read_evaluation_result(output_dir)
    champion = _current_champion_name(source["uri"])
    if champion == f"{published.name}/{source['run_id']}":
        standing = "it is its architecture's champion"
    else:
        standing = f"its architecture's champion is {champion}" if champion else "its architecture has no champion"
    reason = (
        f"unchanged since {source['run_id']}: the same data and recipe as that published version, so nothing "
        f"was trained, evaluated or published again; {standing}"
    )
    result = dataclasses.replace(published, reused_from=source, promotion=registry.not_compared(reason, champion))
    write_evaluation_result(output_dir, result)
    return result


def _current_champion_name(version_uri: str) -> str | None:
    """``<model>/<run id>`` of the champion of the version's architecture, now."""
    pointer = storage.join(version_uri.rstrip("/").rsplit("/", 1)[0], CHAMPION_FILE)
    if not storage.exists(pointer):
        return None
    champion = storage.read_json(pointer)
    return f"{champion['model']}/{champion['run_id']}"


def export_saved_model(keras_path: str, export_dir: str) -> None:
    """A TensorFlow SavedModel with a ``serve`` signature taking raw 0-255 images (under the JAX
    backend Keras converts the model with jax2tf, which needs TensorFlow too)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise UserError("publishing writes a TensorFlow SavedModel and TensorFlow is not installed here; "
                        "install tensorflow (the project image has it) or leave out --registry") from None
    from components import models
    from components.keras_setup import keras

    models.allow_deep_graphs()
    keras.models.load_model(keras_path).export(export_dir, format="tf_saved_model", verbose=False)
