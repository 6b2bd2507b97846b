"""Publish an evaluated model to the model registry, with a SavedModel export for serving.

The registry (``components.registry``) stores files and decides promotion; this step prepares
what it stores: the Keras model as trained, its history and records, and a TensorFlow SavedModel
that serving systems load without Keras. The decision is written back into the evaluation's
``result.json`` so the report shows champion against challenger.
"""

import dataclasses
import os
import shutil
import tempfile

from components import manifest as dataset_manifest
from components import registry
from components.artifacts import HISTORY_FILE, MODEL_FILE, TRAIN_RESULT_FILE
from components.results import read_evaluation_result, write_evaluation_result

MODEL_FILES = (MODEL_FILE, HISTORY_FILE, TRAIN_RESULT_FILE)
SAVED_MODEL_DIR = "saved_model"


def publish(
    dataset_dir: str, model_dir: str, result_dir: str, registry_root: str, run_id: str, margin: float = 0.0
) -> dict:
    """Publish the model in ``model_dir`` under ``<registry_root>/<dataset>/<model>/<run_id>/``.

    Returns the registry's decision (promoted or kept, and why), also stored as the
    ``promotion`` field of ``result_dir/result.json``.
    """
    manifest = dataset_manifest.read(dataset_dir)
    result = read_evaluation_result(result_dir)
    with tempfile.TemporaryDirectory(prefix="cnnpipe-publish-") as staging:
        for name in MODEL_FILES:
            shutil.copyfile(os.path.join(model_dir, name), os.path.join(staging, name))
        export_saved_model(os.path.join(model_dir, MODEL_FILE), os.path.join(staging, SAVED_MODEL_DIR))
        decision = registry.publish_model(
            staging, registry_root, manifest.name, result.name, run_id, result.to_dict(), manifest.to_dict(), margin
        )
    write_evaluation_result(result_dir, dataclasses.replace(result, promotion=decision))
    return decision


def export_saved_model(keras_path: str, export_dir: str) -> None:
    """A TensorFlow SavedModel with a ``serve`` signature taking raw 0-255 images."""
    from components import models
    from components.keras_setup import keras

    models.allow_deep_graphs()
    keras.models.load_model(keras_path).export(export_dir, format="tf_saved_model", verbose=False)
