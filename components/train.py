"""Training step: assemble a zoo model, feed it augmented batches, checkpoint every epoch.

`train()` reads a dataset artifact written by `data_prep.prepare`, trains one model from the
zoo and writes the best model (by validation accuracy), its history and a result record.
The default `TrainConfig` is the ResNet recipe of the seed documents: Adam at 1e-3 with a step
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
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from components import checkpoints, models, storage
from components.artifacts import HISTORY_FILE, MODEL_FILE
from components.callbacks import (
    EpochCheckpointer,
    PlateauCallback,
    ProgressReporter,
    StopOnDivergence,
    TensorBoardWriter,
    ValidateAveragedWeights,
)
from components.dataset import DatasetReader, open_dataset
from components.manifest import DatasetManifest
from components.results import FORMAT_VERSION as RESULTS_FORMAT_VERSION
from components.results import TrainResult, write_train_result
from components.distributed import WorkerRole, distribution_strategy, fit_on_workers, worker_role
from components.errors import UserError, one_line
from components.input_pipeline import make_eval_dataset, make_train_dataset, shift_pixels_for, steps_per_epoch_for
from components.keras_setup import keras, tf
from components.recipe import PlateauState, TrainConfig
from components.schedules import make_learning_rate

logger = logging.getLogger(__name__)

# Train images a data-fitted first layer is computed from (see ModelSpec.fit_to_images): enough
# for a stable patch covariance, a second or so to read; fewer for big images, whose bytes
# (uint8, before preprocessing makes them float32) are capped.
FIT_SAMPLE_IMAGES = 5000
FIT_SAMPLE_BYTES = 64 * 1024 * 1024
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "steps", "images", "seconds")


# ---------------------------------------------------------------------------------------------
# Model assembly and compilation


def assemble_model(
    model_name: str,
    image_shape: Sequence[int],
    num_classes: int,
    pixel_mean: np.ndarray | None = None,
    sample_images: np.ndarray | None = None,
) -> keras.Model:
    """Wraps the zoo body in the preprocessing layers so the model takes raw uint8-valued images.

    raw float32 input -> /255 -> minus `pixel_mean` (an [H, W, C] image in [0, 1] units, if given)
    -> bilinear resize up to the architecture's min_input_size (only when the images are smaller)
    -> zoo body (ends in a float32 softmax). With `sample_images` (raw, [N, H, W, C]) a zoo
    entry that has fit_to_images sets its data-dependent weights from them, preprocessed as above.
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
    if spec.fit_to_images is not None and sample_images is not None:
        preprocess = keras.Model(inputs, features)
        spec.fit_to_images(body, preprocess.predict(np.asarray(sample_images, dtype=np.float32), batch_size=256, verbose=0))
    return keras.Model(inputs, body(features), name=model_name)


def mirror_images(width: int, name: str = "mirror_images") -> keras.Sequential:
    """A fixed layer stack that mirrors [batch, height, width, channels] images left-right.

    Built from stock Keras layers (a non-trainable Dense holding the anti-diagonal permutation,
    applied along the width axis) rather than a custom layer, so a model holding it still loads
    with plain `keras.models.load_model`.
    """
    reverse = keras.layers.Dense(width, use_bias=False, trainable=False, name=f"{name}_reverse_columns")
    stack = keras.Sequential(
        [keras.layers.Permute((1, 3, 2)), reverse, keras.layers.Permute((1, 3, 2))], name=name
    )
    reverse.build((None, None, None, width))
    reverse.kernel.assign(np.eye(width, dtype=np.float32)[::-1])
    return stack


def with_test_time_flip(model: keras.Model) -> keras.Model:
    """`model` averaging its class probabilities for each image and the image's mirror."""
    inputs = keras.Input(shape=model.input_shape[1:], dtype="float32", name="images")
    mirrored = mirror_images(int(model.input_shape[2]))(inputs)
    probabilities = keras.layers.Average(name="flip_averaged_probabilities")([model(inputs), model(mirrored)])
    return keras.Model(inputs, probabilities, name=model.name)


def make_optimizer(config: TrainConfig, learning_rate) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay) or Nesterov SGD at `learning_rate` (a float or a schedule),
    keeping a moving average of the weights when the recipe asks for one."""
    average = {"use_ema": True, "ema_momentum": config.weight_average_momentum} if config.weight_average_momentum else {}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=learning_rate,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay or None,
            **average,
        )
    if config.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay, **average)
    return keras.optimizers.Adam(learning_rate=learning_rate, **average)


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
    if config.weight_decay > 0 and not config.weight_decay_on_norm_and_bias:
        exclude_norm_and_bias_from_weight_decay(model)
    model.optimizer.build(model.trainable_variables)


def exclude_norm_and_bias_from_weight_decay(model: keras.Model) -> None:
    """Leaves batch-norm parameters and biases (every trainable variable of rank 0 or 1) out of
    the optimizer's weight decay, which then shrinks only kernels.

    Keras neither saves this choice with the optimizer nor accepts it once the optimizer is built
    (as a restored one is), so the exclusion set is written where `exclude_from_weight_decay`
    keeps it, and again on every resume.
    """
    optimizer = model.optimizer
    optimizer._exclude_from_weight_decay = {optimizer._var_key(variable) for variable in model.trainable_variables if len(variable.shape) <= 1}
    optimizer._exclude_from_weight_decay_pattern = None
    optimizer._exclude_from_weight_decay_cache = {}


@dataclass(frozen=True)
class DeviceSettings:
    """How this machine runs the model: resolved from the config's 'auto' values."""

    gpus: int
    mixed_precision: str
    jit_compile: bool


def resolve_device_settings(config: TrainConfig) -> DeviceSettings:
    """Resolves 'auto' precision and XLA for the visible devices.

    On GPU: XLA on, bfloat16 on compute capability >= 8 (no loss scaling needed), float16 before.
    On CPU: float32 and no XLA (slower there for ResNet20, BENCHMARKS.md).
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


def resolve_steps_per_execution(setting: int | str, params: int, steps_per_epoch: int, replicas: int = 1) -> int:
    """Steps per compiled call: 'auto' is 32 for models under 1M parameters (where per-step
    dispatch dominates), 8 otherwise; never more than one epoch's steps.

    With several replicas (MirroredStrategy over GPUs) it is 1: Keras 3.15's multi-step loop
    fails on a distributed iterator that ends with the epoch (checked on two logical CPU devices
    in tests/test_device_paths.py), and the per-step dispatch it saves matters least there.
    """
    if replicas > 1:
        return 1
    if setting == "auto":
        setting = 32 if params < 1_000_000 else 8
    return max(1, min(int(setting), steps_per_epoch))


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
) -> TrainResult | None:
    """Trains `model_name` on the dataset artifact and writes the best model and its records.

    Writes output_dir/model.keras (best by validation accuracy, without optimizer state; takes
    raw uint8-valued images), output_dir/history.csv and output_dir/train_result.json, and
    returns the TrainResult (None on a worker other than the chief). Validation uses the dataset's validation split when it has one,
    else its test split. An epoch is exactly ceil(train images / batch_size) optimizer steps.

    With `checkpoint_dir` (local or gs://), every epoch is checkpointed there (model with
    optimizer state plus schedule state) and a rerun resumes after the last completed epoch; a
    checkpoint from a different configuration is refused. `epochs` is not part of that identity,
    so rerunning with more epochs extends a run, and a rerun whose epochs are all done only
    writes the outputs. Without `checkpoint_dir` a temporary one beside `output_dir` is used.
    A run that stops on a user mistake or a diverged loss records that in `checkpoint_dir`, so a
    retry of the same run stops at once (see checkpoints.record_failure).

    Run as one of several workers (TF_CONFIG set, see components/distributed.py), every worker
    trains its share of each global batch; only the chief (worker 0) writes checkpoints,
    TensorBoard files and outputs, and all of them resume from the chief's checkpoint.

    Args:
        tensorboard_dir: Where TensorBoard event files go (local or gs://); None writes none.
        callbacks: Extra Keras callbacks run after the step's own (tests, tools).
    """
    role = worker_role()
    strategy = distribution_strategy(role)  # before any other TensorFlow work
    reader = open_dataset(dataset_dir)
    spec = models.get_spec(model_name)
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}-scratch-", dir=os.path.dirname(output_dir))
    run = TrainingRun(
        model_name=model_name, config=config, reader=reader, role=role, strategy=strategy,
        location=checkpoint_dir, scratch=scratch, tensorboard_dir=tensorboard_dir if role.is_chief else None,
    )
    previous_policy = keras.mixed_precision.global_policy()
    try:
        run.pull_checkpoint()
        if run.location:
            checkpoints.check_recorded_failure(run.read_dir, run.location, run.fingerprint)
        try:
            state = _train_with_checkpoints(run, list(callbacks))
        except UserError as error:
            if run.location and role.is_chief:
                checkpoints.record_failure(run.location, run.fingerprint, one_line(error))
            raise
        if not role.is_chief:  # the chief writes the outputs
            return None
        return _write_outputs(output_dir, spec, reader, config, state, role)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class TrainingRun:
    """What one train step works with, and where its checkpoints are read and written.

    `location` is the checkpoint location the user named (local, gs://, or None). Keras saves to
    local files, so a gs:// location is mirrored in `scratch`; so is a run without a location.
    Workers other than the chief read the chief's checkpoint but write theirs to scratch.
    """

    model_name: str
    config: TrainConfig
    reader: DatasetReader
    role: WorkerRole
    strategy: tf.distribute.Strategy
    location: str | None
    scratch: str
    tensorboard_dir: str | None

    def __post_init__(self):
        dataset_sha = dataset_fingerprint(self.reader.manifest)
        self.fingerprint_inputs = self.config.fingerprint_inputs(self.model_name, dataset_sha)
        self.fingerprint = self.config.fingerprint(self.model_name, dataset_sha)
        local = self.location and not storage.is_gcs(self.location)
        self.read_dir = self.location if local else os.path.join(self.scratch, "checkpoint")
        self.write_dir = self.read_dir if self.role.is_chief else os.path.join(self.scratch, "worker-checkpoint")
        self.remote_dir = self.location if self.location and not local and self.role.is_chief else None
        os.makedirs(self.read_dir, exist_ok=True)
        os.makedirs(self.write_dir, exist_ok=True)

    def pull_checkpoint(self) -> None:
        if self.location and storage.is_gcs(self.location):
            checkpoints.pull(self.location, self.read_dir)


def dataset_fingerprint(manifest: DatasetManifest) -> str:
    """sha256 over the manifest's per-file hashes: identifies the dataset's content."""
    return hashlib.sha256(json.dumps(manifest.sha256, sort_keys=True).encode()).hexdigest()


def _train_with_checkpoints(run: TrainingRun, extra_callbacks: list[keras.callbacks.Callback]) -> dict[str, Any]:
    """Resumes or starts the run, trains the missing epochs, returns the final checkpoint state."""
    config, reader, strategy = run.config, run.reader, run.strategy
    location = run.location or "a temporary directory"  # for messages
    state = checkpoints.load(run.read_dir)
    if state is not None and state["fingerprint"] != run.fingerprint:
        raise UserError(
            f"checkpoint at {location} was written by a different configuration "
            f"({_describe_difference(state.get('fingerprint_inputs', {}), run.fingerprint_inputs)}); "
            "use a new --checkpoint-root or delete it"
        )
    resumed_from_epoch = state["epoch"] if state else 0
    if state is not None and state["epoch"] >= config.epochs:
        logger.info("all %d epochs already done in %s; writing outputs only", state["epoch"], location)
        return dict(state, resumed_from_epoch=resumed_from_epoch)

    keras.utils.set_random_seed(config.seed)
    validation_split = reader.validation_split
    steps_per_epoch = steps_per_epoch_for(reader.count("train"), config.batch_size)
    plateau = PlateauState(**state["plateau"]) if state else PlateauState()

    device = resolve_device_settings(config)
    keras.mixed_precision.set_global_policy(device.mixed_precision)
    with strategy.scope():
        learning_rate = make_learning_rate(config, steps_per_epoch, plateau.scale)
        if state is None:
            pixel_mean = reader.pixel_mean() if config.subtract_pixel_mean else None
            sample = sample_train_images(reader) if config.fit_stem_to_data and models.get_spec(run.model_name).fit_to_images else None
            model = assemble_model(run.model_name, reader.image_shape, reader.num_classes, pixel_mean, sample)
            steps_per_execution = resolve_steps_per_execution(
                config.steps_per_execution, model.count_params(), steps_per_epoch, strategy.num_replicas_in_sync
            )
            shorten_batch_norm_momentum(model, steps_per_epoch)
            compile_model(model, config, device.jit_compile, steps_per_execution, learning_rate)
            state = _new_state(run.model_name, run.fingerprint, run.fingerprint_inputs, model.count_params(), validation_split)
        else:
            models.allow_deep_graphs()
            model = keras.models.load_model(state["checkpoint_path"])
            steps_per_execution = resolve_steps_per_execution(
                config.steps_per_execution, model.count_params(), steps_per_epoch, strategy.num_replicas_in_sync
            )
            # Keep the restored optimizer (its step counter and moments) and the saved precision
            # policy of the layers; the schedule is rebuilt, since --epochs may have grown, and
            # the execution knobs follow this machine.
            model.optimizer.learning_rate = learning_rate
            if config.weight_decay > 0 and not config.weight_decay_on_norm_and_bias:
                exclude_norm_and_bias_from_weight_decay(model)
            model.jit_compile = device.jit_compile
            model.steps_per_execution = steps_per_execution
            logger.info("resuming %s from %s after epoch %d", run.model_name, location, resumed_from_epoch)

    shift_pixels = shift_pixels_for(reader.image_shape, config.shift_fraction) if config.augment else (0, 0)
    flip = flips_allowed(config, reader) and config.augment
    logger.info(
        "training %s (%d params) for epochs %d..%d: %d train / %d %s images, batch %d, %d steps/epoch, "
        "peak learning rate %g (%s schedule), steps_per_execution %d, jit_compile %s, precision %s, %d GPU(s), "
        "%s on %d worker(s), shift %s px, flip %s",
        run.model_name, model.count_params(), resumed_from_epoch + 1, config.epochs, reader.count("train"),
        reader.count(validation_split), validation_split, config.batch_size, steps_per_epoch, config.peak_learning_rate,
        config.schedule, steps_per_execution, device.jit_compile, device.mixed_precision, device.gpus,
        type(strategy).__name__, run.role.count, shift_pixels, flip,
    )
    # A resumed run reshuffles with a different seed so it does not replay the first epochs' order.
    seed = config.seed + resumed_from_epoch

    def train_dataset(batch_size: int, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
        # Exactly one epoch's steps per pass over this dataset: Keras ends the epoch when it runs
        # out, even inside a compiled call of `steps_per_execution` steps, and starts it anew.
        return make_train_dataset(
            reader, batch_size, seed, shift_pixels=shift_pixels, flip=flip, cache=config.cache,
            shard_index=shard_index, shard_count=shard_count,
        ).take(steps_per_epoch).apply(tf.data.experimental.assert_cardinality(steps_per_epoch))  # known even when streamed

    validation_dataset = make_eval_dataset(reader, validation_split, config.batch_size, cache=config.cache)
    plateau_callback = PlateauCallback(plateau)
    step_callbacks = [
        StopOnDivergence(config),
        plateau_callback,
        *([ValidateAveragedWeights()] if config.weight_average_momentum else []),
        EpochCheckpointer(run.write_dir, state, plateau_callback, config.batch_size, run.remote_dir),
    ]
    if run.role.is_chief:
        step_callbacks.append(ProgressReporter(run.model_name, config.epochs, steps_per_epoch, config.batch_size))
    if run.tensorboard_dir:
        local_tensorboard = os.path.join(run.scratch, "tensorboard") if storage.is_gcs(run.tensorboard_dir) else run.tensorboard_dir
        step_callbacks.append(TensorBoardWriter(run.tensorboard_dir, local_tensorboard, config.batch_size))
    if run.role.count > 1:
        fit_on_workers(
            model, strategy,
            lambda context: train_dataset(context.get_per_replica_batch_size(config.batch_size),
                                          context.input_pipeline_id, context.num_input_pipelines),
            validation_dataset,
            global_batch_size=config.batch_size, label_smoothing=config.label_smoothing, epochs=config.epochs,
            initial_epoch=resumed_from_epoch, steps_per_epoch=steps_per_epoch, callbacks=[*step_callbacks, *extra_callbacks],
        )
    else:
        # The last compiled call of an epoch whose steps are not a multiple of steps_per_execution
        # stops at the end of the epoch's batches on purpose; Keras warns about that every time.
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        model.fit(
            train_dataset(config.batch_size),
            validation_data=validation_dataset,
            epochs=config.epochs,
            initial_epoch=resumed_from_epoch,
            callbacks=[*step_callbacks, *extra_callbacks],
            shuffle=False,  # the dataset shuffles itself
            verbose=0,  # ProgressReporter reports
        )
    return dict(checkpoints.load(run.write_dir), resumed_from_epoch=resumed_from_epoch)


def sample_train_images(reader: DatasetReader) -> np.ndarray:
    """Up to FIT_SAMPLE_IMAGES train images (FIT_SAMPLE_BYTES at most) spread evenly over the
    split (every k-th record, so a split stored class by class still gives every class), uint8
    [N, H, W, C]."""
    count = max(1, min(FIT_SAMPLE_IMAGES, FIT_SAMPLE_BYTES // int(np.prod(reader.image_shape))))
    stride = max(1, reader.count("train") // count)
    examples = reader.examples("train", ordered=True).shard(stride, 0).take(count).batch(count)
    images, _ = next(examples.as_numpy_iterator())
    return images


def flips_allowed(config: TrainConfig, reader: DatasetReader) -> bool:
    """Whether a mirrored image keeps its class: horizontal_flip, or the dataset's say when it is None."""
    if config.horizontal_flip is None:
        return bool(reader.manifest.allow_horizontal_flip)
    return bool(config.horizontal_flip)


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


def averaged_weights(checkpoint_path: str) -> list[np.ndarray]:
    """The checkpointed model's weights with the optimizer's moving average in place of each
    trainable variable (non-trainable ones, such as batch-norm statistics, as trained)."""
    model = keras.models.load_model(checkpoint_path)
    model.optimizer.finalize_variable_values(model.trainable_variables)
    return model.get_weights()


def _write_outputs(
    output_dir: str, spec: models.ModelSpec, reader: DatasetReader, config: TrainConfig, state: dict[str, Any], role: WorkerRole
) -> TrainResult:
    """Writes the best model (for inference: no optimizer state, loads with plain Keras),
    history.csv, and train_result.json last, as the commit point."""
    models.allow_deep_graphs()
    best_model = keras.models.load_model(state["best_checkpoint_path"], compile=False)
    if config.weight_average_momentum:
        best_model.set_weights(averaged_weights(state["best_checkpoint_path"]))
    if config.test_time_flip and flips_allowed(config, reader):
        best_model = with_test_time_flip(best_model)
    checkpoints.save_model_atomically(best_model, os.path.join(output_dir, MODEL_FILE))
    history = io.StringIO()
    writer = csv.DictWriter(history, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(state["history"])
    storage.write_text(os.path.join(output_dir, HISTORY_FILE), history.getvalue())
    train_seconds = float(state["train_seconds"])
    optimizer_steps = int(state["optimizer_steps"])
    result = TrainResult(
        format_version=RESULTS_FORMAT_VERSION,
        name=spec.name,
        family=spec.family,
        params=int(state["params"]),
        epochs=int(state["epoch"]),
        train_seconds=train_seconds,
        train_images_per_second=optimizer_steps * config.batch_size / train_seconds if train_seconds > 0 else None,
        best_validation_accuracy=state["best_validation_accuracy"],
        best_epoch=state["best_epoch"],
        resumed_from_epoch=int(state["resumed_from_epoch"]),
        optimizer_steps=optimizer_steps,
        steps_per_epoch=steps_per_epoch_for(reader.count("train"), config.batch_size),
        images_seen=optimizer_steps * config.batch_size,  # every batch is full
        validation_split=state["validation_split"],
        dataset=reader.name,
        workers=role.count,
        config=config.to_dict(),
    )
    write_train_result(output_dir, result)
    return result
