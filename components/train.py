"""Training step: assemble a registry model, feed it augmented batches, checkpoint every epoch.

`train()` reads a dataset artifact written by `data_prep.prepare`, trains one model from the
registry and writes the best model (by validation accuracy), its history and a result record.
The default `TrainConfig` is the recipe of the ResNet seed notebook: Adam at 1e-3 with a step
schedule plus reduce-on-plateau, batch 128, random shifts of 10 % and horizontal flips,
per-pixel mean subtraction, 200 epochs.

The saved model takes raw uint8-valued images: scaling to [0, 1], mean subtraction and resizing
up to the architecture's minimum input size are layers inside it, so evaluation and serving
need no separate preprocessing.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from components import checkpoints, data_prep, models, storage
from components.callbacks import EpochCheckpointer, PlateauCallback, ProgressReporter, StopOnDivergence, TensorBoardWriter
from components.errors import UserError, one_line
from components.keras_setup import keras, tf
from components.recipe import PlateauState, TrainConfig
from components.schedules import make_learning_rate

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
RESULT_FILE = "train_result.json"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "steps", "images", "seconds")


# ---------------------------------------------------------------------------------------------
# Input pipeline


def shift_and_flip(images: tf.Tensor, row_offsets: tf.Tensor, column_offsets: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
    """Shifts each image by its own offsets (edge pixels fill the gap) and mirrors the flagged ones.

    Equivalent to edge-padding each image, cropping the window that starts `offset` pixels from
    the unshifted position, then flipping; done as two batched gathers of clipped indices.

    Args:
        images: [batch, height, width, channels].
        row_offsets, column_offsets: int32 [batch]; output pixel (r, c) reads input pixel
            (r + row_offset, c + column_offset), clipped to the image.
        flips: bool [batch]; True mirrors the image left-right.
    """
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows = tf.clip_by_value(tf.range(height)[tf.newaxis, :] + row_offsets[:, tf.newaxis], 0, height - 1)
    columns = tf.clip_by_value(tf.range(width)[tf.newaxis, :] + column_offsets[:, tf.newaxis], 0, width - 1)
    columns = tf.where(flips[:, tf.newaxis], width - 1 - columns, columns)
    shifted_rows = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(shifted_rows, columns, axis=2, batch_dims=1)


def augment_batch(images: tf.Tensor, shift_pixels: int | tuple[int, int], flip: bool, seed: tf.Tensor) -> tf.Tensor:
    """Random per-image shifts of up to `shift_pixels` and, if `flip`, random horizontal flips.

    Vectorized over the whole batch (no per-image Python); keeps shape and dtype. The seed's
    ImageDataGenerator(width/height_shift_range=0.1, fill_mode='nearest') shifted by fractional
    amounts with interpolation; whole-pixel shifts with the same edge fill cost two gathers instead.

    Args:
        images: [batch, height, width, channels] of any dtype.
        shift_pixels: Largest shift in pixels, one int for both axes or (rows, columns).
        flip: Whether to mirror a random half of the images.
        seed: int32/int64 tensor of shape [2] for the stateless random ops, so a batch's
            augmentation depends only on it.
    """
    row_shift, column_shift = (shift_pixels, shift_pixels) if isinstance(shift_pixels, (int, np.integer)) else shift_pixels
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    row_offsets = tf.random.stateless_uniform([batch], seeds[0], -row_shift, row_shift + 1, dtype=tf.int32)
    column_offsets = tf.random.stateless_uniform([batch], seeds[1], -column_shift, column_shift + 1, dtype=tf.int32)
    if flip:
        flips = tf.random.stateless_uniform([batch], seeds[2]) < 0.5
    else:
        flips = tf.zeros([batch], dtype=tf.bool)
    return shift_and_flip(images, row_offsets, column_offsets, flips)


def shift_pixels_for(image_shape: Sequence[int], shift_fraction: float) -> tuple[int, int]:
    """Largest shift in (rows, columns) pixels: round(shift_fraction * size) per axis."""
    return round(shift_fraction * image_shape[0]), round(shift_fraction * image_shape[1])


def steps_per_epoch_for(image_count: int, batch_size: int) -> int:
    """Optimizer steps per epoch: enough full batches to cover the split once (the last one
    reaches into the next epoch's shuffle, see make_train_dataset)."""
    return math.ceil(image_count / batch_size)


def make_train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    seed: int,
    shift_pixels: tuple[int, int] = (0, 0),
    flip: bool = False,
) -> tf.data.Dataset:
    """An endless stream of shuffled, augmented, full (float32 images, one-hot labels) batches
    from in-memory uint8 arrays; fit it with steps_per_epoch=steps_per_epoch_for(...).

    Every pass over the split is shuffled anew and the passes run into each other, so each batch
    is full and no image is left out: a smaller last batch would trace the train step a second
    time, seconds of graph building on a CPU and a full recompile under XLA.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=True)
    augmenting = flip or any(shift_pixels)
    # One stateless seed pair per batch, different every epoch but fixed by `seed`.
    batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def prepare(batch, batch_seed):
        batch_images, batch_labels = batch
        if augmenting:
            batch_images = augment_batch(batch_images, shift_pixels, flip, batch_seed)
        return tf.cast(batch_images, tf.float32), tf.one_hot(batch_labels, num_classes)

    dataset = tf.data.Dataset.zip(dataset, batch_seeds).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int) -> tf.data.Dataset:
    """Batched (float32 images, one-hot labels) in file order, for validation."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# Model assembly and compilation


def assemble_model(
    model_name: str, image_shape: Sequence[int], num_classes: int, pixel_mean: np.ndarray | None = None
) -> keras.Model:
    """Wraps the registry body in the preprocessing layers so the model takes raw uint8-valued images.

    raw float32 input -> /255 -> minus `pixel_mean` (an [H, W, C] image in [0, 1] units, if given)
    -> bilinear resize up to the architecture's min_input_size (only when the images are smaller)
    -> registry body (ends in a float32 softmax).
    """
    spec = models.get_spec(model_name)
    height, width, channels = (int(size) for size in image_shape)
    inputs = keras.Input(shape=(height, width, channels), dtype="float32", name="images")
    features = keras.layers.Rescaling(1.0 / 255.0, name="scale_to_unit")(inputs)
    if pixel_mean is not None:
        mean_image = np.asarray(pixel_mean, dtype=np.float32)
        features = keras.layers.Rescaling(1.0, offset=-mean_image, name="subtract_pixel_mean")(features)
    if height < spec.min_input_size or width < spec.min_input_size:
        height, width = max(height, spec.min_input_size), max(width, spec.min_input_size)
        features = keras.layers.Resizing(height, width, interpolation="bilinear", name="resize_to_min_input")(features)
    body = models.build_model(model_name, (height, width, channels), num_classes)
    return keras.Model(inputs, body(features), name=model_name)


def make_optimizer(config: TrainConfig, learning_rate) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay) or Nesterov SGD at `learning_rate` (a float or a schedule)."""
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=learning_rate,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay or None,
        )
    if config.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def shorten_batch_norm_momentum(model: keras.Model, steps_per_epoch: int) -> None:
    """Shortens the window of every BatchNormalization's moving statistics.

    Keras' momentum 0.99 averages over the last ~100 steps. While the weights still move fast
    (a short run, a small dataset: 23 steps an epoch for the bundled digits) the statistics then
    describe older weights, and inference-mode accuracy stays near chance while training accuracy
    is high. 0.9 (PyTorch's default), or one epoch when that is shorter, keeps them current. The
    momentum is saved with the model, so a resumed run keeps it.
    """
    momentum = max(0.5, min(0.9, 1.0 - 1.0 / steps_per_epoch))
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > momentum:
            layer.momentum = momentum


def compile_model(model: keras.Model, config: TrainConfig, jit_compile: bool, steps_per_execution: int, learning_rate) -> None:
    """Compiles with categorical cross-entropy (label smoothing) and accuracy.

    The optimizer's slot variables are created here rather than inside the first train step:
    a tf.function that creates variables is traced twice, doubling the first epoch's graph building.
    """
    model.compile(
        optimizer=make_optimizer(config, learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)


@dataclass(frozen=True)
class DeviceSettings:
    """How this machine runs the model: resolved from the config's 'auto' values."""

    gpus: int
    mixed_precision: str
    jit_compile: bool


def resolve_device_settings(config: TrainConfig) -> DeviceSettings:
    """Resolves 'auto' precision and XLA for the visible devices.

    On GPU: XLA on, bfloat16 on compute capability >= 8 (no loss scaling needed), float16 before.
    On CPU: float32 and no XLA (XLA measured about half as fast for ResNet20 on this CPU).
    """
    gpus = tf.config.list_physical_devices("GPU")
    if config.mixed_precision != "auto":
        mixed_precision = config.mixed_precision
    elif not gpus:
        mixed_precision = "float32"
    else:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        mixed_precision = "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
    jit_compile = bool(gpus) if config.jit_compile == "auto" else bool(config.jit_compile)
    return DeviceSettings(gpus=len(gpus), mixed_precision=mixed_precision, jit_compile=jit_compile)


def resolve_steps_per_execution(setting: int | str, params: int, steps_per_epoch: int) -> int:
    """Steps per compiled call: 'auto' is 32 for models under 1M parameters (where per-step
    dispatch dominates), 8 otherwise; never more than one epoch's steps."""
    if setting == "auto":
        setting = 32 if params < 1_000_000 else 8
    return max(1, min(int(setting), steps_per_epoch))


def distribution_strategy(gpus: int) -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs when there are several, else the default strategy."""
    return tf.distribute.MirroredStrategy() if gpus > 1 else tf.distribute.get_strategy()


# ---------------------------------------------------------------------------------------------
# The step


def train(
    dataset_dir: str,
    model_name: str,
    output_dir: str,
    config: TrainConfig,
    checkpoint_dir: str | None = None,
    *,
    tensorboard_dir: str | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Trains `model_name` on the dataset artifact and writes the best model and its records.

    Writes output_dir/model.keras (best by validation accuracy, without optimizer state; takes
    raw uint8-valued images), output_dir/history.csv and output_dir/train_result.json, and
    returns the result dict. Validation uses the dataset's validation split when it has one,
    else its test split. An epoch is exactly ceil(train images / batch_size) optimizer steps.

    With `checkpoint_dir` (local or gs://), every epoch is checkpointed there (model with
    optimizer state plus schedule state) and a rerun resumes after the last completed epoch; a
    checkpoint from a different configuration is refused. `epochs` is not part of that identity,
    so rerunning with more epochs extends a run, and a rerun whose epochs are all done only
    writes the outputs. Without `checkpoint_dir` a temporary one beside `output_dir` is used.
    A run that stops on a user mistake or a diverged loss records that in `checkpoint_dir`, so a
    retry of the same run stops at once (see checkpoints.record_failure).

    Args:
        tensorboard_dir: Where TensorBoard event files go (local or gs://); None writes none.
        callbacks: Extra Keras callbacks run after the step's own (tests, tools).
    """
    manifest = data_prep.read_manifest(dataset_dir)
    spec = models.get_spec(model_name)
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    location = checkpoint_dir
    # Keras saves to local files: a gs:// location is mirrored in a local scratch directory.
    remote_dir = checkpoint_dir if checkpoint_dir and storage.is_gcs(checkpoint_dir) else None
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}-scratch-", dir=os.path.dirname(output_dir))
    if checkpoint_dir is None or remote_dir:
        checkpoint_dir = os.path.join(scratch, "checkpoint")
        os.makedirs(checkpoint_dir)
    dataset_sha = dataset_fingerprint(manifest)
    fingerprint = config.fingerprint(model_name, dataset_sha)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        if remote_dir:
            checkpoints.pull(remote_dir, checkpoint_dir)
        if location:
            checkpoints.check_recorded_failure(checkpoint_dir, location, fingerprint)
        try:
            state = _train_with_checkpoints(
                dataset_dir, manifest, model_name, config, checkpoint_dir, list(callbacks), remote_dir,
                tensorboard_dir, os.path.join(scratch, "tensorboard"),
            )
        except UserError as error:
            if location:
                checkpoints.record_failure(location, fingerprint, one_line(error))
            raise
        return _write_outputs(output_dir, spec, manifest, config, state)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        shutil.rmtree(scratch, ignore_errors=True)


def dataset_fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 over the manifest's per-file hashes: identifies the dataset's content."""
    return hashlib.sha256(json.dumps(manifest["sha256"], sort_keys=True).encode()).hexdigest()


def _train_with_checkpoints(
    dataset_dir: str,
    manifest: dict[str, Any],
    model_name: str,
    config: TrainConfig,
    checkpoint_dir: str,
    extra_callbacks: list[keras.callbacks.Callback],
    remote_dir: str | None,
    tensorboard_dir: str | None,
    tensorboard_scratch: str,
) -> dict[str, Any]:
    """Resumes or starts the run in `checkpoint_dir`, trains the missing epochs, returns the final state.

    With `remote_dir` (gs://), `checkpoint_dir` is its local mirror and every epoch is pushed there.
    """
    location = remote_dir or checkpoint_dir  # what the user named, for messages
    dataset_sha = dataset_fingerprint(manifest)
    fingerprint_inputs = config.fingerprint_inputs(model_name, dataset_sha)
    fingerprint = config.fingerprint(model_name, dataset_sha)
    state = checkpoints.load(checkpoint_dir)
    if state is not None and state["fingerprint"] != fingerprint:
        raise UserError(
            f"checkpoint at {location} was written by a different configuration "
            f"({_describe_difference(state.get('fingerprint_inputs', {}), fingerprint_inputs)}); "
            "use a new --checkpoint-root or delete it"
        )
    resumed_from_epoch = state["epoch"] if state else 0
    if state is not None and state["epoch"] >= config.epochs:
        logger.info("all %d epochs already done in %s; writing outputs only", state["epoch"], location)
        return dict(state, resumed_from_epoch=resumed_from_epoch)

    keras.utils.set_random_seed(config.seed)
    train_images, train_labels = data_prep.load_split(dataset_dir, "train")
    validation_split = "validation" if manifest["splits"].get("validation", 0) > 0 else "test"
    validation_images, validation_labels = data_prep.load_split(dataset_dir, validation_split)
    num_classes = int(manifest["num_classes"])
    steps_per_epoch = steps_per_epoch_for(len(train_images), config.batch_size)
    plateau = PlateauState(**state["plateau"]) if state else PlateauState()

    device = resolve_device_settings(config)
    keras.mixed_precision.set_global_policy(device.mixed_precision)
    strategy = distribution_strategy(device.gpus)
    with strategy.scope():
        learning_rate = make_learning_rate(config, steps_per_epoch, plateau.scale)
        if state is None:
            pixel_mean = train_images.mean(axis=0, dtype=np.float64) / 255.0 if config.subtract_pixel_mean else None
            model = assemble_model(model_name, manifest["image_shape"], num_classes, pixel_mean)
            steps_per_execution = resolve_steps_per_execution(config.steps_per_execution, model.count_params(), steps_per_epoch)
            shorten_batch_norm_momentum(model, steps_per_epoch)
            compile_model(model, config, device.jit_compile, steps_per_execution, learning_rate)
            state = _new_state(model_name, fingerprint, fingerprint_inputs, model.count_params(), validation_split)
        else:
            models.allow_deep_graphs()
            model = keras.models.load_model(state["checkpoint_path"])
            steps_per_execution = resolve_steps_per_execution(config.steps_per_execution, model.count_params(), steps_per_epoch)
            # Keep the restored optimizer (its step counter and moments) and the saved precision
            # policy of the layers; the schedule is rebuilt, since --epochs may have grown, and
            # the execution knobs follow this machine.
            model.optimizer.learning_rate = learning_rate
            model.jit_compile = device.jit_compile
            model.steps_per_execution = steps_per_execution
            logger.info("resuming %s from %s after epoch %d", model_name, location, resumed_from_epoch)

    flip = bool(manifest.get("allow_horizontal_flip", False) if config.horizontal_flip is None else config.horizontal_flip)
    shift_pixels = shift_pixels_for(manifest["image_shape"], config.shift_fraction) if config.augment else (0, 0)
    flip = flip and config.augment
    logger.info(
        "training %s (%d params) for epochs %d..%d: %d train / %d %s images, batch %d, %d steps/epoch, "
        "peak learning rate %g (%s schedule), steps_per_execution %d, jit_compile %s, precision %s, %d GPU(s), "
        "%s strategy, shift %s px, flip %s",
        model_name, model.count_params(), resumed_from_epoch + 1, config.epochs, len(train_images), len(validation_images),
        validation_split, config.batch_size, steps_per_epoch, config.peak_learning_rate, config.schedule, steps_per_execution,
        device.jit_compile, device.mixed_precision, device.gpus, type(strategy).__name__, shift_pixels, flip,
    )
    # A resumed run reshuffles with a different seed so it does not replay the first epochs' order.
    train_dataset = make_train_dataset(
        train_images, train_labels, num_classes, config.batch_size, config.seed + resumed_from_epoch, shift_pixels, flip
    )
    # Exactly one epoch's steps per pass over this dataset: Keras ends the epoch when it runs
    # out, even inside a compiled call of `steps_per_execution` steps, and starts it anew.
    train_dataset = train_dataset.take(steps_per_epoch)
    validation_dataset = make_eval_dataset(validation_images, validation_labels, num_classes, config.batch_size)
    plateau_callback = PlateauCallback(plateau)
    step_callbacks = [
        StopOnDivergence(config),
        plateau_callback,
        EpochCheckpointer(checkpoint_dir, state, plateau_callback, config.batch_size, remote_dir),
        ProgressReporter(model_name, config.epochs, steps_per_epoch, config.batch_size),
    ]
    if tensorboard_dir:
        local_tensorboard = tensorboard_scratch if storage.is_gcs(tensorboard_dir) else tensorboard_dir
        step_callbacks.append(TensorBoardWriter(tensorboard_dir, local_tensorboard, config.batch_size))
    model.fit(
        train_dataset,
        validation_data=validation_dataset,
        epochs=config.epochs,
        initial_epoch=resumed_from_epoch,
        callbacks=[*step_callbacks, *extra_callbacks],
        shuffle=False,  # the dataset shuffles itself
        verbose=0,  # ProgressReporter reports
    )
    return dict(checkpoints.load(checkpoint_dir), resumed_from_epoch=resumed_from_epoch)


def _new_state(
    model_name: str, fingerprint: str, fingerprint_inputs: dict[str, Any], params: int, validation_split: str
) -> dict[str, Any]:
    """The checkpoint state of a run that has completed no epoch yet."""
    return {
        "format_version": checkpoints.FORMAT_VERSION,
        "model_name": model_name,
        "fingerprint": fingerprint,
        "fingerprint_inputs": fingerprint_inputs,
        "params": int(params),
        "validation_split": validation_split,
        "epoch": 0,
        "plateau": dataclasses.asdict(PlateauState()),
        "best_validation_accuracy": None,
        "best_epoch": None,
        "train_seconds": 0.0,
        "optimizer_steps": 0,
        "history": [],
        "checkpoint": None,
        "best_checkpoint": None,
    }


def _describe_difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """Names the fingerprint inputs that differ, e.g. "changed: learning_rate 0.001 -> 0.01"."""
    keys = sorted(set(saved) | set(current))
    changes = [f"{key} {saved.get(key)!r} -> {current.get(key)!r}" for key in keys if saved.get(key) != current.get(key)]
    return "changed: " + ", ".join(changes) if changes else "fingerprints differ"


def _write_outputs(
    output_dir: str, spec: models.ModelSpec, manifest: dict[str, Any], config: TrainConfig, state: dict[str, Any]
) -> dict[str, Any]:
    """Writes the best model (for inference: no optimizer state, loads with plain Keras),
    history.csv, and train_result.json last, as the commit point."""
    models.allow_deep_graphs()
    best_model = keras.models.load_model(state["best_checkpoint_path"], compile=False)
    checkpoints.save_model_atomically(best_model, os.path.join(output_dir, MODEL_FILE))
    history = io.StringIO()
    writer = csv.DictWriter(history, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(state["history"])
    storage.write_text(os.path.join(output_dir, HISTORY_FILE), history.getvalue())
    train_seconds = float(state["train_seconds"])
    optimizer_steps = int(state["optimizer_steps"])
    result = {
        "name": spec.name,
        "family": spec.family,
        "params": int(state["params"]),
        "epochs": int(state["epoch"]),
        "train_seconds": train_seconds,
        "train_images_per_second": optimizer_steps * config.batch_size / train_seconds if train_seconds > 0 else None,
        "best_validation_accuracy": state["best_validation_accuracy"],
        "best_epoch": state["best_epoch"],
        "resumed_from_epoch": int(state["resumed_from_epoch"]),
        "optimizer_steps": optimizer_steps,
        "steps_per_epoch": steps_per_epoch_for(int(manifest["splits"]["train"]), config.batch_size),
        "images_seen": optimizer_steps * config.batch_size,  # every batch is full
        "validation_split": state["validation_split"],
        "dataset": manifest.get("name"),
        "config": config.to_dict(),
    }
    storage.write_json(os.path.join(output_dir, RESULT_FILE), result)
    return result
