"""The train step's epochs: the inputs, the callbacks, and one of three fit paths: Keras's own
`fit` over tf.data in one process (TensorFlow), components/distributed.py's loop on several
workers (TensorFlow), or Keras's `fit` over the split held in memory (JAX, without TensorFlow).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from components import storage
from components.callbacks import (
    EpochCheckpointer,
    PlateauCallback,
    ProgressReporter,
    StopOnDivergence,
    TensorBoardWriter,
    ValidateAveragedWeights,
)
from components import keras_setup
from components.augmentation import shift_pixels_for
from components.dataset import DatasetReader
from components.distributed import WorkerRole, fit_on_workers
from components.input_pipeline import ArrayBatches, make_eval_dataset, make_train_dataset, split_arrays
from components.keras_setup import backend, keras
from components.model_assembly import DeviceSettings
from components.recipe import PlateauState, TrainConfig

if TYPE_CHECKING:
    import tensorflow as tf

# The train step's log lines carry its name (components.train), whichever module writes them.
logger = logging.getLogger("components.train")


def flips_allowed(config: TrainConfig, reader: DatasetReader) -> bool:
    """Whether a mirrored image keeps its class: horizontal_flip, or the dataset's say when it is None."""
    if config.horizontal_flip is None:
        return bool(reader.manifest.allow_horizontal_flip)
    return bool(config.horizontal_flip)


def augmentation_settings(config: TrainConfig, reader: DatasetReader) -> tuple[tuple[int, int], bool]:
    """(shift_pixels, flip) of the augmentation inside the step: what the recipe and dataset allow."""
    shift_pixels = shift_pixels_for(reader.image_shape, config.shift_fraction) if config.augment else (0, 0)
    return shift_pixels, flips_allowed(config, reader) and config.augment


def fit_epochs(
    model: keras.Model, strategy: tf.distribute.Strategy | None, reader: DatasetReader, config: TrainConfig, role: WorkerRole,
    *, model_name: str, state: dict[str, Any], plateau: PlateauState, resumed_from_epoch: int, validation_split: str | None,
    steps_per_epoch: int, steps_per_execution: int, device: DeviceSettings, write_dir: str, remote_dir: str | None,
    scratch: str, tensorboard_dir: str | None, extra_callbacks: list[keras.callbacks.Callback],
    train_arrays: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Trains epochs resumed_from_epoch + 1 .. config.epochs; every epoch is checkpointed to
    `write_dir` (and mirrored to `remote_dir`) by EpochCheckpointer, which updates `state`.

    Under JAX (no strategy) the train split comes as `train_arrays`, held in memory."""
    shift_pixels, flip = augmentation_settings(config, reader)
    logger.info(
        "training %s (%d params) for epochs %d..%d: %d train / %d %s images, batch %d, %d steps/epoch, "
        "peak learning rate %g (%s schedule), steps_per_execution %d, jit_compile %s, precision %s, %d GPU(s), "
        "%s backend, %s on %d worker(s), shift %s px, flip %s (inside the step)",
        model_name, model.count_params(), resumed_from_epoch + 1, config.epochs, reader.count("train"),
        reader.count(validation_split) if validation_split else 0, validation_split or "validation",
        config.batch_size, steps_per_epoch, config.peak_learning_rate,
        config.schedule, steps_per_execution, device.jit_compile, device.mixed_precision, device.gpus,
        backend, type(strategy).__name__ if strategy else "one process", role.count, shift_pixels, flip,
    )
    # Without a validation split nothing is validated: the last epoch is kept and the plateau
    # schedule watches the training loss, so the test split steers nothing.
    plateau_callback = PlateauCallback(plateau, monitor="val_loss" if validation_split else "loss")
    step_callbacks = [
        StopOnDivergence(config),
        plateau_callback,
        *([ValidateAveragedWeights()] if config.weight_average_momentum else []),
        EpochCheckpointer(write_dir, state, plateau_callback, config.batch_size, remote_dir),
    ]
    if role.is_chief:
        step_callbacks.append(ProgressReporter(model_name, config.epochs, steps_per_epoch, config.batch_size))
    if tensorboard_dir:
        local_tensorboard = os.path.join(scratch, "tensorboard") if storage.is_gcs(tensorboard_dir) else tensorboard_dir
        step_callbacks.append(TensorBoardWriter(tensorboard_dir, local_tensorboard, config.batch_size))
    # The last compiled call of an epoch whose steps are not a multiple of steps_per_execution
    # stops at the end of the epoch's batches on purpose; Keras warns about that every time.
    warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
    fit_arguments = dict(
        epochs=config.epochs, initial_epoch=resumed_from_epoch, callbacks=[*step_callbacks, *extra_callbacks],
        shuffle=False,  # the inputs are shuffled already
        verbose=0,  # ProgressReporter reports
    )
    if backend == "jax":
        # The batch order is a function of seed and step: a resumed run continues it exactly.
        batches = ArrayBatches(*train_arrays, reader.num_classes, config.batch_size, config.seed, steps_per_epoch)
        validation_data = None
        if validation_split:
            validation_images, validation_labels = split_arrays(reader, validation_split, config.cache)
            validation_data = (validation_images, np.eye(reader.num_classes, dtype=np.float32)[validation_labels])
        fit_arguments["callbacks"] = [batches.epoch_callback(), *fit_arguments["callbacks"]]
        model.fit(batches, steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                  validation_batch_size=config.batch_size, **fit_arguments)
        return

    tf = keras_setup.tf
    # A resumed run reshuffles with a different seed so it does not replay the first epochs' order.
    seed = config.seed + resumed_from_epoch

    def train_dataset(batch_size: int, shard_index: int = 0, shard_count: int = 1) -> tf.data.Dataset:
        # Exactly one epoch's steps per pass over this dataset: Keras ends the epoch when it runs
        # out, even inside a compiled call of `steps_per_execution` steps, and starts it anew.
        return make_train_dataset(
            reader, batch_size, seed, cache=config.cache, shard_index=shard_index, shard_count=shard_count,
        ).take(steps_per_epoch).apply(tf.data.experimental.assert_cardinality(steps_per_epoch))  # known even when streamed

    validation_dataset = (
        make_eval_dataset(reader, validation_split, config.batch_size, cache=config.cache) if validation_split else None
    )
    if role.count > 1:
        fit_on_workers(
            model, strategy,
            lambda context: train_dataset(context.get_per_replica_batch_size(config.batch_size),
                                          context.input_pipeline_id, context.num_input_pipelines),
            validation_dataset,
            global_batch_size=config.batch_size, label_smoothing=config.label_smoothing, epochs=config.epochs,
            initial_epoch=resumed_from_epoch, steps_per_epoch=steps_per_epoch, callbacks=[*step_callbacks, *extra_callbacks],
        )
    else:
        model.fit(train_dataset(config.batch_size), validation_data=validation_dataset, **fit_arguments)
