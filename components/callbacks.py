"""The training step's Keras callbacks, one job each, in the order `fit` runs them:

    StopOnDivergence   refuses a non-finite loss before anything is saved;
    PlateauCallback    reduce-on-plateau for the step schedule (scale read by the optimizer);
    ValidateAveragedWeights  validates the weights' moving average, when the recipe keeps one;
    EpochCheckpointer  appends the history row and checkpoints the epoch;
    ProgressReporter   progress events for whoever runs the step (components/progress.py);
    TensorBoardWriter  per-epoch scalars for TensorBoard.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

from components import checkpoints, checks, progress, storage
from components.errors import UserError
from components.event_file import ScalarWriter
from components.keras_setup import backend, keras, variable_value
from components.recipe import PlateauState, TrainConfig, update_plateau
from components.schedules import StepDecayWithPlateau, learning_rate_of_step


def optimizer_steps(model: keras.Model) -> int:
    """Optimizer steps taken so far (read from the primary copy under a distribution strategy)."""
    return int(variable_value(model.optimizer.iterations))


def epoch_learning_rate(model: keras.Model) -> float:
    """The rate of the last step the optimizer took (the epoch's last, at epoch end)."""
    return learning_rate_of_step(model.optimizer, max(optimizer_steps(model) - 1, 0))


class EpochMeter(keras.callbacks.Callback):
    """Measures each epoch as it ends: `epoch_steps()` optimizer steps in `epoch_seconds()`."""

    def __init__(self):
        super().__init__()
        self.epoch_started = 0.0
        self.steps_before_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()
        self.steps_before_epoch = optimizer_steps(self.model)

    def epoch_steps(self) -> int:
        return optimizer_steps(self.model) - self.steps_before_epoch

    def epoch_seconds(self) -> float:
        return time.perf_counter() - self.epoch_started


class StopOnDivergence(keras.callbacks.Callback):
    """Stops the run with a UserError when the epoch's loss is not finite (nothing is saved)."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("loss", float("nan")))
        if not math.isfinite(loss):
            raise UserError(
                f"training diverged: loss became {loss} at epoch {epoch + 1}; lower --learning-rate "
                f"(the peak rate was {self.config.peak_learning_rate:g}) or use --optimizer adam"
            )


class PlateauCallback(keras.callbacks.Callback):
    """Reduce-on-plateau for the step schedule; the state is checkpointed.

    It watches the validation loss; a run without a validation split passes monitor="loss" and
    it watches the training loss instead, so the test split never steers the learning rate.
    """

    def __init__(self, plateau: PlateauState, monitor: str = "val_loss"):
        super().__init__()
        self.plateau = plateau
        self.monitor = checks.choice("plateau monitor", monitor, ("val_loss", "loss"))

    def on_epoch_end(self, epoch, logs=None):
        schedule = self.model.optimizer._learning_rate
        if not isinstance(schedule, StepDecayWithPlateau) or not logs or self.monitor not in logs:
            return
        scale = self.plateau.scale
        self.plateau = update_plateau(self.plateau, float(logs[self.monitor]), epoch_learning_rate(self.model))
        if self.plateau.scale != scale:
            schedule.plateau_scale.assign(self.plateau.scale)
            if backend == "jax":  # a compiled JAX step holds the value it was traced with: trace anew
                self.model.make_train_function(force=True)


class ValidateAveragedWeights(keras.callbacks.Callback):
    """Swaps the optimizer's moving average of the weights in for validation and back out after,
    so the epoch's val_accuracy (and the best-epoch choice) is that of the averaged model while
    training goes on from the trained weights, which the checkpoint keeps beside the average."""

    def on_test_begin(self, logs=None):
        self.trained_values = [variable.numpy() for variable in self.model.trainable_variables]
        self.model.optimizer.finalize_variable_values(self.model.trainable_variables)

    def on_test_end(self, logs=None):
        for variable, value in zip(self.model.trainable_variables, self.trained_values):
            variable.assign(value)


class EpochCheckpointer(EpochMeter):
    """Appends the epoch's history row, checkpoints (locally, then to `remote_dir` if given).

    Args:
        checkpoint_dir: Local checkpoint directory (or the local mirror of `remote_dir`).
        state: The checkpoint state so far (see checkpoints.save).
        plateau_callback: Whose plateau state is saved with the epoch.
        batch_size: Images per optimizer step, for the images column.
        remote_dir: gs:// location of the checkpoint, or None.
    """

    def __init__(self, checkpoint_dir: str, state: dict[str, Any], plateau_callback: PlateauCallback,
                 batch_size: int, remote_dir: str | None = None):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.remote_dir = remote_dir
        self.state = state
        self.plateau_callback = plateau_callback
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        seconds, steps = self.epoch_seconds(), self.epoch_steps()
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", float("nan"))),
            "accuracy": float(logs.get("accuracy", float("nan"))),
            "val_loss": float(logs.get("val_loss", float("nan"))),
            "val_accuracy": float(logs.get("val_accuracy", float("nan"))),
            "learning_rate": epoch_learning_rate(self.model),
            "steps": steps,
            "images": steps * self.batch_size,
            "seconds": seconds,
        }
        # Without a validation split no epoch is chosen: the last one is kept.
        best = self.state["best_validation_accuracy"]
        has_validation = "val_accuracy" in logs
        is_best = not has_validation or best is None or row["val_accuracy"] > best
        state = dict(
            self.state,
            epoch=epoch + 1,
            history=self.state["history"] + [row],
            train_seconds=self.state["train_seconds"] + seconds,
            plateau=dataclasses.asdict(self.plateau_callback.plateau),
            optimizer_steps=optimizer_steps(self.model),
        )
        if is_best:
            state.update(best_validation_accuracy=row["val_accuracy"] if has_validation else None, best_epoch=epoch + 1)
        self.state = checkpoints.save(self.checkpoint_dir, self.model, state, is_best)
        if self.remote_dir:
            checkpoints.push(self.checkpoint_dir, self.remote_dir, self.state)


class ProgressReporter(keras.callbacks.Callback):
    """Emits a progress event after each compiled call (at most every `interval_seconds`) and
    after each epoch: epoch k/N, step, loss, accuracy, validation accuracy, images/s and ETA."""

    def __init__(self, model_name: str, epochs: int, steps_per_epoch: int, batch_size: int, interval_seconds: float = 1.0):
        super().__init__()
        self.model_name = model_name
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.interval_seconds = interval_seconds
        self.epoch = 0
        self.epoch_started = 0.0
        self.last_emitted = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = self.last_emitted = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self.last_emitted >= self.interval_seconds and batch + 1 < self.steps_per_epoch:
            self.last_emitted = now
            self._emit("step", batch + 1, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        self._emit("epoch", self.steps_per_epoch, logs or {})

    def on_train_end(self, logs=None):
        progress.emit("train", "done", model=self.model_name, epochs=self.epochs)

    def _emit(self, phase: str, step: int, logs: dict) -> None:
        seconds = max(time.perf_counter() - self.epoch_started, 1e-9)
        seconds_per_step = seconds / step
        steps_left = (self.steps_per_epoch - step) + (self.epochs - self.epoch - 1) * self.steps_per_epoch
        fields = dict(
            model=self.model_name, epoch=self.epoch + 1, epochs=self.epochs, step=step, steps=self.steps_per_epoch,
            loss=logs.get("loss"), accuracy=logs.get("accuracy"),
            images_per_second=step * self.batch_size / seconds, eta_seconds=steps_left * seconds_per_step,
        )
        if phase == "epoch":
            fields.update(val_loss=logs.get("val_loss"), val_accuracy=logs.get("val_accuracy"), seconds=seconds)
        progress.emit("train", phase, **fields)


class TensorBoardWriter(EpochMeter):
    """Writes per-epoch scalars TensorBoard shows: loss and accuracy under `train/` and
    `validation/` (the tags Keras' own TensorBoard callback uses, so the two overlay), learning
    rate and images/s under `train/`. The x axis is the epoch, so a resumed run continues the
    same curves. With a gs:// `log_dir` the files are written locally and uploaded every epoch.
    The files are written without TensorFlow (components/event_file.py), alike under both backends.
    """

    def __init__(self, log_dir: str, local_dir: str, batch_size: int):
        super().__init__()
        self.log_dir = log_dir
        self.local_dir = local_dir
        self.batch_size = batch_size
        self.writers = {}

    def on_train_begin(self, logs=None):
        self.writers = {name: ScalarWriter(os.path.join(self.local_dir, name)) for name in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds, images = self.epoch_seconds(), self.epoch_steps() * self.batch_size
        scalars = {
            "train": {"epoch_loss": logs.get("loss"), "epoch_accuracy": logs.get("accuracy"),
                      "epoch_learning_rate": epoch_learning_rate(self.model),
                      "epoch_images_per_second": images / seconds if seconds > 0 else None},
            "validation": {"epoch_loss": logs.get("val_loss"), "epoch_accuracy": logs.get("val_accuracy")},
        }
        for name, values in scalars.items():
            for tag, value in values.items():
                if value is not None:
                    self.writers[name].scalar(tag, value, step=epoch + 1)
            self.writers[name].flush()
        if storage.is_gcs(self.log_dir):
            for path in _files_under(self.local_dir):
                storage.upload(path, storage.join(self.log_dir, os.path.relpath(path, self.local_dir)))

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()


def _files_under(directory: str) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
