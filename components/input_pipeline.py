"""Training and evaluation input pipelines over a DatasetReader (components/dataset.py).

They hand the training step uint8 image batches and one-hot labels, nothing else: scaling and
mean subtraction are layers of the model, and augmentation is the training model's first layer
(components/augmentation.py), so the host only moves bytes however fast the accelerator is.
Every training batch is full, and an epoch is exactly steps_per_epoch_for(...) steps.

Two feeders, one per backend:

tf.data (TensorFlow): shard reads, parsing and batching run as tensor ops on TensorFlow's
threads, never a Python generator. The decoded split is kept in memory when it fits
(``cache``), otherwise it is streamed from the shards every pass:

    "memory"  the split is read once into one uint8 tensor; every pass shuffles all its images
              (batches are gathered by index, so the images are held once);
    "none"    every pass reads the shards again: shard order shuffled per pass, INTERLEAVE_CYCLE
              shards interleaved, then a shuffle buffer of SHUFFLE_BUFFER_BYTES;
    "auto"    "memory" when the decoded split fits in MEMORY_CACHE_SHARE of the available memory.

NumPy (JAX, where TensorFlow may not be installed): the split is read into memory without
TensorFlow (components/shards.py) and `ArrayBatches` gathers shuffled batches from it; a split
that does not fit is refused with the fix (train it with the TensorFlow backend, which streams).
Its order is a function of (seed, step), so a resumed run continues exactly where the
interrupted one stopped.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from components import checks, keras_setup
from components.errors import UserError
from components.recipe import CACHE_CHOICES
from components.resources import available_memory_bytes

if TYPE_CHECKING:  # TensorFlow is imported by the tf.data feeder alone, when it runs
    import tensorflow as tf

    from components.dataset import DatasetReader

logger = logging.getLogger(__name__)

# Why a quarter: the memory path briefly holds the split twice while it moves from NumPy into
# one tensor, so a quarter keeps the peak under half of what is available, leaving the rest to
# the model, TensorFlow's buffers and whatever else runs on the node.
MEMORY_CACHE_SHARE = 0.25
# The streaming shuffle buffer, in bytes of images: big enough to mix the records of the
# interleaved shards well beyond one batch, small next to any training machine's memory.
SHUFFLE_BUFFER_BYTES = 256 * 1024 * 1024


def steps_per_epoch_for(image_count: int, batch_size: int) -> int:
    """Optimizer steps per epoch: enough full batches to cover the split once (the last one
    reaches into the next epoch's shuffle, see make_train_dataset)."""
    return math.ceil(image_count / batch_size)


def resolve_cache(cache: str, split_bytes: int) -> str:
    """"memory" or "none" for a ``cache`` choice and a decoded split of ``split_bytes``."""
    checks.choice("cache", cache, CACHE_CHOICES)
    if cache != "auto":
        return cache
    budget = MEMORY_CACHE_SHARE * available_memory_bytes()
    chosen = "memory" if split_bytes <= budget else "none"
    logger.info(
        "cache auto -> %s: decoded split %.0f MB, %.0f%% of available memory is %.0f MB",
        chosen, split_bytes / 1e6, 100 * MEMORY_CACHE_SHARE, budget / 1e6,
    )
    return chosen


def make_train_dataset(
    reader: DatasetReader,
    batch_size: int,
    seed: int,
    *,
    cache: str = "auto",
    shard_index: int = 0,
    shard_count: int = 1,
) -> tf.data.Dataset:
    """An endless stream of shuffled, full (uint8 images, one-hot labels) batches of the train
    split; fit it with steps_per_epoch=steps_per_epoch_for(reader.count("train"), batch_size).

    Passes over the split run into each other, so each batch is full and no image is left out:
    a smaller last batch would trace the train step a second time, seconds of graph building on
    a CPU and a full recompile under XLA. shard_index/shard_count select this worker's share.
    """
    tf = keras_setup.tf
    image_bytes = int(np.prod(reader.image_shape))
    share = reader.share_count("train", shard_index, shard_count)
    if resolve_cache(cache, share * image_bytes) == "memory":
        batches = _memory_batches(reader, batch_size, seed, shard_index, shard_count)
    else:
        records = reader.records("train", shard_index=shard_index, shard_count=shard_count, shuffle_seed=seed).repeat()
        buffer_images = max(batch_size, min(share, SHUFFLE_BUFFER_BYTES // image_bytes))
        records = records.shuffle(buffer_images, seed=seed, reshuffle_each_iteration=True)
        batches = records.batch(batch_size, drop_remainder=True).map(reader.parse_batch, num_parallel_calls=tf.data.AUTOTUNE)
    num_classes = reader.num_classes
    dataset = batches.map(lambda images, labels: (images, tf.one_hot(labels, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _memory_batches(reader: DatasetReader, batch_size: int, seed: int, shard_index: int, shard_count: int) -> tf.data.Dataset:
    """Endless full batches of uint8 images and int32 labels gathered by shuffled index from one
    in-memory tensor: every pass shuffles the whole split, and the images are held once."""
    tf = keras_setup.tf
    images, labels = reader.arrays("train", shard_index=shard_index, shard_count=shard_count)
    images_tensor, labels_tensor = tf.constant(images), tf.constant(labels)
    del images  # the tensor holds its own copy
    count = len(labels)
    indices = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True).repeat()
    indices = indices.batch(batch_size, drop_remainder=True)
    return indices.map(
        lambda batch: (tf.gather(images_tensor, batch), tf.gather(labels_tensor, batch)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def make_eval_dataset(reader: DatasetReader, split: str, batch_size: int, cache: str = "auto") -> tf.data.Dataset:
    """Batched (uint8 images, one-hot labels) of every image of ``split`` in file order; the
    last batch may be smaller. With cache "memory" the decoded batches are kept after the first
    pass (validation runs every epoch)."""
    tf = keras_setup.tf
    image_bytes = int(np.prod(reader.image_shape))
    mode = resolve_cache(cache, reader.count(split) * image_bytes)
    batches = reader.records(split, ordered=True).batch(batch_size).map(reader.parse_batch, num_parallel_calls=tf.data.AUTOTUNE)
    if mode == "memory":
        batches = batches.cache()
    num_classes = reader.num_classes
    batches = batches.map(
        lambda images, labels: (images, tf.one_hot(labels, num_classes)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return batches.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# The NumPy feeder (JAX)


def split_arrays(reader: DatasetReader, split: str, cache: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory, read without TensorFlow: uint8 images [N, H, W, C], int32 labels [N].

    The NumPy feeder cannot stream, so a split that does not fit (or cache "none") is refused
    with the way out.
    """
    from components import shards

    split_bytes = reader.count(split) * int(np.prod(reader.image_shape))
    if resolve_cache(cache, split_bytes) != "memory":
        raise UserError(
            f"the jax backend holds the {split} split in memory ({split_bytes / 1e9:.1f} GB) and cannot stream it "
            f"(cache {cache}); train with --backend tensorflow, which streams from the shards"
        )
    return shards.read_arrays(reader.shard_paths(split), reader.image_shape, reader.count(split))


class ArrayBatches(keras_setup.keras.utils.PyDataset):
    """Full batches of (uint8 images, float32 one-hot labels) gathered from arrays in memory,
    exactly `steps_per_epoch` of them per epoch: fit it with steps_per_epoch=len(batches) and
    `epoch_callback()` among the callbacks.

    The order is a function of (seed, position) alone: pass p over the split is the permutation
    default_rng([seed, p]).permutation(N), the passes run into each other (so every batch is
    full), and optimizer step k takes positions k*batch_size ... (k+1)*batch_size - 1 of that
    stream, so a resumed run continues exactly. Batch `index` of a call is that of the epoch fit
    announces (`start_epoch`, by `epoch_callback`): Keras also calls the PyDataset's own epoch
    hooks around the batch it reads to build the model's metrics before the first epoch, so
    counting those would start training one epoch into the stream.

    A Keras PyDataset rather than a generator: under JAX, fit stops a compiled call of
    steps_per_execution steps at the epoch's end only when the epoch's input runs out, and an
    endless generator ran into the next epoch's batches.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, seed: int,
                 steps_per_epoch: int):
        super().__init__()  # one worker, in this thread: a batch is one gather
        self.images, self.labels = images, labels
        self.one_hot = np.eye(num_classes, dtype=np.float32)
        self.batch_size, self.seed, self.steps_per_epoch = batch_size, seed, steps_per_epoch
        self.epoch = 0  # of fit, counted from 0: set by start_epoch
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        step = self.epoch * self.steps_per_epoch + index
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        passes, offsets = np.divmod(positions, len(self.labels))
        indices = np.concatenate([self._order(int(number))[offsets[passes == number]] for number in np.unique(passes)])
        return self.images[indices], self.one_hot[self.labels[indices]]

    def start_epoch(self, epoch: int) -> None:
        """The batches read next are those of fit's `epoch` (from 0; a resumed run's first is its
        completed epochs)."""
        self.epoch = epoch

    def epoch_callback(self) -> keras_setup.keras.callbacks.Callback:
        """The callback that hands fit's epoch to `start_epoch` as each epoch begins."""
        return keras_setup.keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: self.start_epoch(epoch))

    def _order(self, pass_number: int) -> np.ndarray:
        if pass_number not in self._orders:
            self._orders = {number: order for number, order in self._orders.items() if number >= pass_number - 1}
            self._orders[pass_number] = np.random.default_rng([self.seed, pass_number]).permutation(len(self.labels))
        return self._orders[pass_number]
