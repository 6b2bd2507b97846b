"""Training and evaluation input pipelines over a DatasetReader (components/dataset.py).

Everything is tf.data: shard reads, parsing, augmentation and batching run as tensor ops on
TensorFlow's threads, never a Python generator. The decoded split is kept in memory when it fits
(``cache``), otherwise it is streamed from the shards every pass:

    "memory"  the split is read once into one uint8 tensor; every pass shuffles all its images
              (batches are gathered by index, so the images are held once);
    "none"    every pass reads the shards again: shard order shuffled per pass, INTERLEAVE_CYCLE
              shards interleaved, then a shuffle buffer of SHUFFLE_BUFFER_BYTES;
    "auto"    "memory" when the decoded split fits in MEMORY_CACHE_SHARE of the available memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from components import checks
from components.dataset import DatasetReader
from components.keras_setup import tf
from components.recipe import CACHE_CHOICES
from components.resources import available_memory_bytes

logger = logging.getLogger(__name__)

# Why a quarter: the memory path briefly holds the split twice while it moves from NumPy into
# one tensor, so a quarter keeps the peak under half of what is available, leaving the rest to
# the model, TensorFlow's buffers and whatever else runs on the node.
MEMORY_CACHE_SHARE = 0.25
# The streaming shuffle buffer, in bytes of images: big enough to mix the records of the
# interleaved shards well beyond one batch, small next to any training machine's memory.
SHUFFLE_BUFFER_BYTES = 256 * 1024 * 1024


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

    Vectorized over the whole batch (no per-image Python); keeps shape and dtype. The seed documents'
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
    shift_pixels: tuple[int, int] = (0, 0),
    flip: bool = False,
    cache: str = "auto",
    shard_index: int = 0,
    shard_count: int = 1,
) -> tf.data.Dataset:
    """An endless stream of shuffled, augmented, full (float32 images, one-hot labels) batches of
    the train split; fit it with steps_per_epoch=steps_per_epoch_for(reader.count("train"), batch_size).

    Passes over the split run into each other, so each batch is full and no image is left out:
    a smaller last batch would trace the train step a second time, seconds of graph building on
    a CPU and a full recompile under XLA. shard_index/shard_count select this worker's share.
    """
    image_bytes = int(np.prod(reader.image_shape))
    share = reader.share_count("train", shard_index, shard_count)
    if resolve_cache(cache, share * image_bytes) == "memory":
        batches = _memory_batches(reader, batch_size, seed, shard_index, shard_count)
    else:
        records = reader.records("train", shard_index=shard_index, shard_count=shard_count, shuffle_seed=seed).repeat()
        buffer_images = max(batch_size, min(share, SHUFFLE_BUFFER_BYTES // image_bytes))
        records = records.shuffle(buffer_images, seed=seed, reshuffle_each_iteration=True)
        batches = records.batch(batch_size, drop_remainder=True).map(reader.parse_batch, num_parallel_calls=tf.data.AUTOTUNE)
    augmenting = flip or any(shift_pixels)
    num_classes = reader.num_classes
    # One stateless seed pair per batch, different every epoch but fixed by `seed`.
    batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def prepare(batch, batch_seed):
        batch_images, batch_labels = batch
        if augmenting:
            batch_images = augment_batch(batch_images, shift_pixels, flip, batch_seed)
        return tf.cast(batch_images, tf.float32), tf.one_hot(batch_labels, num_classes)

    dataset = tf.data.Dataset.zip(batches, batch_seeds).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _memory_batches(reader: DatasetReader, batch_size: int, seed: int, shard_index: int, shard_count: int) -> tf.data.Dataset:
    """Endless full batches of uint8 images and int32 labels gathered by shuffled index from one
    in-memory tensor: every pass shuffles the whole split, and the images are held once."""
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
    """Batched (float32 images, one-hot labels) of every image of ``split`` in file order; the
    last batch may be smaller. With cache "memory" the decoded uint8 batches are kept after the
    first pass (validation runs every epoch)."""
    image_bytes = int(np.prod(reader.image_shape))
    mode = resolve_cache(cache, reader.count(split) * image_bytes)
    batches = reader.records(split, ordered=True).batch(batch_size).map(reader.parse_batch, num_parallel_calls=tf.data.AUTOTUNE)
    if mode == "memory":
        batches = batches.cache()
    num_classes = reader.num_classes
    batches = batches.map(
        lambda images, labels: (tf.cast(images, tf.float32), tf.one_hot(labels, num_classes)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return batches.prefetch(tf.data.AUTOTUNE)
