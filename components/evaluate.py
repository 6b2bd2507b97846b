"""Evaluation step: test-set loss, accuracy, per-class metrics, confusion matrix and inference speed.

The model written by `train` takes raw uint8-valued images (its preprocessing is built in), so
evaluation only casts the stored test images to float32 and runs one timed prediction pass.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from typing import Any

import numpy as np

from components import checks, keras_setup, models, storage
from components.artifacts import CORRECTNESS_FILE, HISTORY_FILE, MISTAKES_FILE, MODEL_FILE, TRAIN_RESULT_FILE
from components.dataset import open_dataset
from components.errors import UserError
from components.input_pipeline import split_arrays
from components.keras_setup import backend, gpu_compute_capabilities, keras
from components.results import EvaluationResult, read_train_result, write_evaluation_result
from components.significance import Correctness

logger = logging.getLogger(__name__)

# Probabilities are clipped like Keras' categorical cross-entropy does, so a confident mistake
# costs a large finite loss instead of infinity.
PROBABILITY_EPSILON = 1e-7
# How many of the most confidently wrong test images the report shows, and the largest side
# (pixels) their thumbnails keep: enough to recognise the image, small enough to embed.
MISTAKES_SHOWN = 12
THUMBNAIL_MAX_SIZE = 64


def evaluate(dataset_dir: str, model_dir: str, output_dir: str, batch_size: int = 256) -> EvaluationResult:
    """Evaluates model_dir/model.keras on the dataset's test split and writes output_dir/result.json.

    result.json holds train_result.json's fields plus test_accuracy, test_loss (plain categorical
    cross-entropy, without training's label smoothing), inference_images_per_second (one timed
    prediction pass after a warm-up batch), class_names, confusion_matrix (rows: true class,
    columns: predicted class), per_class precision/recall/support, the zoo's
    reference_accuracy and seed_accuracy, and `mistakes`: the test images the model gets most
    confidently wrong (index, true and predicted class, probabilities), whose thumbnails
    (uint8 [N, H, W, C], at most THUMBNAIL_MAX_SIZE pixels a side) go to mistakes.npy in the same
    order. history.csv is copied beside it, and correctness.json records which test images the
    model got right (a bit per image, with the test set's identity) for paired comparisons.

    Args:
        dataset_dir: Dataset artifact written by data prep.
        model_dir: Training step's output directory (model.keras, train_result.json, history.csv).
        output_dir: Directory to write result.json and history.csv into.
        batch_size: Images per prediction batch.
    """
    checks.integer("batch_size", batch_size, minimum=1)
    model_path = os.path.join(model_dir, MODEL_FILE)
    train_result_path = os.path.join(model_dir, TRAIN_RESULT_FILE)
    for required in (model_path, train_result_path):
        if not os.path.isfile(required):
            raise UserError(f"no {os.path.basename(required)} in {model_dir}; pass the training step's output directory")
    train_result = read_train_result(model_dir)
    reader = open_dataset(dataset_dir)
    manifest = reader.manifest

    model = load_model_for_inference(model_path)
    if backend == "jax":  # the test split in memory, read without TensorFlow
        test_images, labels = split_arrays(reader, "test")
        probabilities, seconds = timed_predict_arrays(model, test_images, batch_size)
    else:
        # The test split is streamed from its shards, never held whole: the pixels pass through the
        # model once, the labels are read on their own, and only the mistakes shown keep an image.
        test_images = None
        test_batches = reader.examples("test", ordered=True).batch(batch_size)
        labels = np.concatenate([batch_labels for _, batch_labels in test_batches.as_numpy_iterator()])
        probabilities, seconds = timed_predict(model, test_batches.map(lambda images, _: images), len(labels), batch_size)
    num_classes = int(manifest.num_classes)
    predictions = probabilities.argmax(axis=1)
    confusion = confusion_matrix(labels, predictions, num_classes)
    spec = models.MODELS.get(train_result.name)
    correctness = Correctness(manifest.test_identity, predictions == labels)
    result = EvaluationResult(
        **train_result.to_dict(),
        test_accuracy=correctness.accuracy,
        test_identity=correctness.test_identity,
        test_loss=cross_entropy(probabilities, labels),
        test_images=int(len(labels)),
        inference_images_per_second=len(labels) / seconds if seconds > 0 else None,
        inference_batch_size=batch_size,
        class_names=list(manifest.class_names),
        confusion_matrix=confusion.tolist(),
        per_class=per_class_metrics(confusion, manifest.class_names),
        reference_accuracy=spec.reference_accuracy if spec else None,
        seed_accuracy=spec.seed_accuracy if spec else None,
        mistakes=confident_mistakes(probabilities, labels, MISTAKES_SHOWN),
    )
    logger.info(
        "%s: test accuracy %.4f, loss %.4f, %.0f images/s inference",
        result.name, result.test_accuracy, result.test_loss, result.inference_images_per_second or 0,
    )
    os.makedirs(output_dir, exist_ok=True)
    history_path = os.path.join(model_dir, HISTORY_FILE)
    if os.path.isfile(history_path) and os.path.abspath(model_dir) != os.path.abspath(output_dir):
        shutil.copyfile(history_path, os.path.join(output_dir, HISTORY_FILE))
    mistaken = [mistake["index"] for mistake in result.mistakes]
    mistaken_images = test_images[mistaken] if test_images is not None else images_at(reader, "test", mistaken)
    write_thumbnails(mistaken_images, os.path.join(output_dir, MISTAKES_FILE))
    storage.write_json(os.path.join(output_dir, CORRECTNESS_FILE), correctness.to_dict())
    write_evaluation_result(output_dir, result)
    return result


def load_model_for_inference(model_path: str) -> keras.Model:
    """Loads a saved model without its optimizer; under TensorFlow XLA only on GPU (it measured
    slower on CPU), JAX always compiles with it."""
    models.allow_deep_graphs()
    model = keras.models.load_model(model_path, compile=False)
    model.jit_compile = backend == "jax" or bool(gpu_compute_capabilities())
    return model


def timed_predict(model: keras.Model, batches, image_count: int, batch_size: int) -> tuple[np.ndarray, float]:
    """Class probabilities for the uint8 image `batches` (`image_count` images, `batch_size` a
    batch) and the seconds the prediction pass took.

    The first and the last batch are predicted first so tracing and compilation are not counted:
    a last batch of another size would otherwise be traced again inside the timed pass.
    """
    tf = keras_setup.tf
    dataset = batches.map(lambda batch: tf.cast(batch, tf.float32)).prefetch(tf.data.AUTOTUNE)
    model.predict(dataset.take(1), verbose=0)
    if image_count > batch_size and image_count % batch_size:
        model.predict(dataset.skip(image_count // batch_size), verbose=0)
    started = time.perf_counter()
    probabilities = model.predict(dataset, verbose=0)
    return np.asarray(probabilities, dtype=np.float64), time.perf_counter() - started


def timed_predict_arrays(model: keras.Model, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Class probabilities for uint8 `images` held in memory, and the seconds the prediction pass
    took; as timed_predict, the first and last batch shapes are compiled before the clock starts."""

    starts = range(0, len(images), batch_size)
    for start in {starts[0], starts[-1]}:
        model.predict_on_batch(images[start:start + batch_size].astype(np.float32))
    started = time.perf_counter()
    probabilities = np.concatenate([model.predict_on_batch(images[start:start + batch_size].astype(np.float32))
                                    for start in starts])
    return np.asarray(probabilities, dtype=np.float64), time.perf_counter() - started


def images_at(reader, split: str, indices: list[int]) -> np.ndarray:
    """The uint8 images at `indices` (file order) of `split`, in that order, from one streamed pass."""
    found = np.zeros((len(indices), *reader.image_shape), dtype=np.uint8)
    if not indices:
        return found
    start = 0
    for batch_images, _ in reader.examples(split, ordered=True).batch(1024).as_numpy_iterator():
        for position, index in enumerate(indices):
            if start <= index < start + len(batch_images):
                found[position] = batch_images[index - start]
        start += len(batch_images)
        if start > max(indices):
            break
    return found


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean categorical cross-entropy (natural log) of integer `labels` under `probabilities`."""
    chosen = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(chosen, PROBABILITY_EPSILON, 1.0))))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] int64 counts; row = true class, column = predicted class."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return counts


def confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, count: int) -> list[dict[str, Any]]:
    """The `count` wrongly classified test images with the highest predicted probability, most
    confident first (ties by index): index, true_class, predicted_class, confidence (probability of
    the predicted class) and true_class_probability."""
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    confidence = probabilities[wrong, predictions[wrong]]
    chosen = wrong[np.lexsort((wrong, -confidence))][:count]
    return [
        {
            "index": int(index),
            "true_class": int(labels[index]),
            "predicted_class": int(predictions[index]),
            "confidence": float(probabilities[index, predictions[index]]),
            "true_class_probability": float(probabilities[index, labels[index]]),
        }
        for index in chosen
    ]


def thumbnail(image: np.ndarray, max_size: int = THUMBNAIL_MAX_SIZE) -> np.ndarray:
    """`image` shrunk by a whole stride until no side exceeds `max_size` (small ones unchanged)."""
    stride = max(1, -(-max(image.shape[:2]) // max_size))
    return image[::stride, ::stride]


def write_thumbnails(images: np.ndarray, path: str) -> None:
    """Thumbnails of `images` as one uint8 [N, H, W, C] .npy file, written atomically."""
    thumbnails = np.stack([thumbnail(image) for image in images]) if len(images) else images[:, :0, :0]
    buffer = io.BytesIO()
    np.save(buffer, thumbnails.astype(np.uint8), allow_pickle=False)
    storage.write_bytes(path, buffer.getvalue())


def per_class_metrics(confusion: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    """Precision, recall and support per class; a class never predicted scores precision 0.

    A class with no test images has no recall: it is None and the row says "no test images"
    (a warning names the class), so the gap is visible rather than a silent 0 %.
    """
    true_positives = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    rows = []
    for index, name in enumerate(class_names):
        row = {
            "class": name,
            "precision": float(true_positives[index] / predicted[index]) if predicted[index] else 0.0,
            "recall": float(true_positives[index] / support[index]) if support[index] else None,
            "support": int(support[index]),
        }
        if not support[index]:
            row["note"] = "no test images"
            logger.warning("class %s has no test images: its recall cannot be measured", name)
        rows.append(row)
    return rows
