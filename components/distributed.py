"""Training across several worker processes with tf.distribute.MultiWorkerMirroredStrategy.

Each worker is one process (components/workers.py starts them locally, pipeline/jobset_spec.py on
the cluster) that finds its peers through TF_CONFIG. Gradients are all-reduced by TensorFlow's
collectives; the global batch is split evenly over the workers, each reading its own shards.

Keras 3's `fit` cannot consume a distributed dataset under this strategy with TensorFlow 2.21
(it fails converting the per-worker values to tensors), so several workers train through
`fit_on_workers`: a loop over `strategy.run` with the model's own optimizer, the same loss, and
the same Keras callbacks `fit` would call. One worker (the usual case) trains with `fit`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

from typing import TYPE_CHECKING

from components import checks, keras_setup
from components.keras_setup import keras

if TYPE_CHECKING:  # imported where a strategy is made: the JAX backend runs without TensorFlow
    import tensorflow as tf

# How long one collective (an all-reduce of gradients, say) may wait for its peers before it
# fails with DeadlineExceeded, in seconds: a worker that hangs without dying (TensorFlow's health
# check only notices dead peers) must end the attempt, not hold every GPU of the group for ever.
# The longest legitimate wait is the chief saving and uploading a checkpoint at an epoch's end
# while the others wait at the next step's all-reduce, hence half an hour.
COLLECTIVE_TIMEOUT_SECONDS = 1800.0
COLLECTIVE_TIMEOUT_VARIABLE = "CNNPIPE_COLLECTIVE_TIMEOUT_SECONDS"


@dataclass(frozen=True)
class WorkerRole:
    """This process's place among the workers: index 0 of N is the chief."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def worker_role() -> WorkerRole:
    """From TF_CONFIG (set by the launcher); a process without it is the only worker."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    workers = config.get("cluster", {}).get("worker", [])
    if len(workers) < 2:
        return WorkerRole()
    return WorkerRole(index=int(config["task"]["index"]), count=len(workers))


def distribution_strategy(role: WorkerRole) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy for several workers (created before any other TensorFlow
    work, as its collectives require), MirroredStrategy over several local GPUs, else the default."""
    tf = keras_setup.tf
    if role.count > 1:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout_seconds())
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def collective_timeout_seconds() -> float:
    """COLLECTIVE_TIMEOUT_SECONDS, or the number of seconds in CNNPIPE_COLLECTIVE_TIMEOUT_SECONDS."""
    text = os.environ.get(COLLECTIVE_TIMEOUT_VARIABLE)
    if not text:
        return COLLECTIVE_TIMEOUT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = text
    return checks.number(COLLECTIVE_TIMEOUT_VARIABLE, value, above=0, hint="set e.g. 1800")


def agreed_resume_epoch(strategy: tf.distribute.Strategy, role: WorkerRole, epoch: int) -> int:
    """The epoch every worker resumes after, checked across the workers before training.

    Each worker pulls the chief's checkpoint by itself; if they found different epochs (a
    checkpoint pushed between two pulls), the schedule and data order would differ between
    them. One all-reduce of the epoch and of its square tells every worker whether all agree
    (the mean equals its own epoch and the variance is 0); when they do not, the attempt fails
    with a RuntimeError and the group restarts, pulling again.
    """
    if role.count == 1:
        return epoch
    tf = keras_setup.tf

    @tf.function
    def sums():
        def replica_values():
            value = tf.constant(float(epoch))
            return tf.stack([value, value * value])
        return strategy.reduce("SUM", strategy.run(replica_values), axis=None)

    total, total_of_squares = (float(value) for value in sums())
    replicas = strategy.num_replicas_in_sync
    mean = total / replicas
    if mean != epoch or total_of_squares / replicas - mean * mean > 1e-6:
        raise RuntimeError(
            f"worker {role.index} of {role.count} found the checkpoint at epoch {epoch}, the workers' mean is "
            f"{mean:g}: they pulled different checkpoints; the group restarts and pulls again")
    return epoch


def fit_on_workers(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train_dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    validation_dataset: tf.data.Dataset | None,
    *,
    global_batch_size: int,
    label_smoothing: float,
    epochs: int,
    initial_epoch: int,
    steps_per_epoch: int,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    """`model.fit` for several workers: exactly `steps_per_epoch` synchronous steps an epoch.

    Args:
        train_dataset_fn: Builds one worker's dataset of per-worker batches from its
            InputContext (one epoch's steps, as fit would be given).
        validation_dataset: Every worker validates on the whole split (identical weights give
            identical results, and no worker waits on another's uneven share).
        callbacks: Keras callbacks, called as fit calls them.
    """
    tf = keras_setup.tf
    distributed = strategy.distribute_datasets_from_function(train_dataset_fn)
    per_example_loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, reduction=None)
    optimizer = model.optimizer

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            loss = tf.nn.compute_average_loss(per_example_loss(labels, probabilities), global_batch_size=global_batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled_loss = optimizer.scale_loss(loss)  # loss scaling under mixed_float16, else the loss
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss, _correct_count(labels, probabilities)

    @tf.function
    def train_step(iterator):
        loss, correct = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce("SUM", loss, axis=None), strategy.reduce("SUM", correct, axis=None)

    @tf.function
    def validation_step(images, labels):
        probabilities = model(images, training=False)
        losses = per_example_loss(labels, probabilities)
        return tf.reduce_sum(losses), _correct_count(labels, probabilities), tf.cast(tf.shape(labels)[0], tf.float32)

    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        iterator = iter(distributed)
        loss_sum = correct_sum = 0.0
        for step in range(steps_per_epoch):
            loss, correct = train_step(iterator)
            loss_sum += float(loss)
            correct_sum += float(correct)
            logs = {"loss": loss_sum / (step + 1), "accuracy": correct_sum / ((step + 1) * global_batch_size)}
            callback_list.on_train_batch_end(step, logs)
        if validation_dataset is not None:  # None: the dataset has no validation split
            validation = [0.0, 0.0, 0.0]
            callback_list.on_test_begin()
            for images, labels in validation_dataset:
                validation = [total + float(value) for total, value in zip(validation, validation_step(images, labels))]
            callback_list.on_test_end()
            logs.update(val_loss=validation[0] / validation[2], val_accuracy=validation[1] / validation[2])
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()


def _correct_count(one_hot_labels, probabilities):
    tf = keras_setup.tf
    matches = tf.equal(tf.argmax(one_hot_labels, axis=-1), tf.argmax(probabilities, axis=-1))
    return tf.reduce_sum(tf.cast(matches, tf.float32))
