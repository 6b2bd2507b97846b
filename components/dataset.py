"""The one reader of a prepared dataset: open it once per step, then ask it for splits as tf.data.

    reader = open_dataset(dataset_dir)          # a local directory or a gs:// prefix
    reader.num_classes, reader.image_shape, reader.count("train"), reader.pixel_mean()
    reader.examples("train")                    # tf.data.Dataset of (uint8 [H, W, C], int32)

Shards are read with parallel interleave. Local shards (and gs:// ones on a machine where
TensorFlow could read them) are opened by TensorFlow directly. gs:// shards go through the
project's storage layer (components/storage: retries, checksums, the emulator in tests):
each shard is downloaded just ahead of the reader into a local cache directory and deleted as
soon as all its records have been read, so local disk stays bounded (see SHARD_LOOKAHEAD).
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from components import keras_setup, storage, tfrecord
from components import manifest as dataset_manifest
from components.errors import UserError
from components.manifest import SPLITS, DatasetManifest

if TYPE_CHECKING:  # tf.data is TensorFlow's; the JAX backend reads the shards with components/shards.py
    import tensorflow as tf

# Shards read at once by parallel interleave: enough to overlap file reads and to mix the
# records of several shards, few enough that their read buffers stay small.
INTERLEAVE_CYCLE = 4
# Read-ahead buffer per open shard (bytes).
READ_BUFFER_BYTES = 8 * 1024 * 1024
# gs:// shards downloaded ahead of the one being opened. Local disk then holds at most
# (2 * INTERLEAVE_CYCLE + SHARD_LOOKAHEAD + 1) shards: those being read, those interleave has
# opened ahead, and those downloading.
SHARD_LOOKAHEAD = 2
DOWNLOAD_THREADS = 2
# Where gs:// shards are cached while read; default: the system's temporary directory.
SHARD_CACHE_ENVIRONMENT_VARIABLE = "CNNPIPE_SHARD_CACHE_DIR"
# Records parsed at a time when a whole split is loaded into memory.
ARRAY_BATCH = 4096



def _features() -> dict:
    tf = keras_setup.tf
    return {tfrecord.IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string), tfrecord.LABEL_FEATURE: tf.io.FixedLenFeature([], tf.int64)}


def open_dataset(location: str) -> DatasetReader:
    """The reader of the dataset at ``location`` (a directory or gs:// prefix holding manifest.json)."""
    return DatasetReader(location, dataset_manifest.read(location))


def load_split(location: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [N, H, W, C]) and labels (int32 [N]) of one split, in file order.

    Holds the whole split in memory: for small data, evaluation galleries and tests. Training and
    evaluation stream through `DatasetReader.records` / components.input_pipeline instead.
    """
    return open_dataset(location).arrays(split)


class DatasetReader:
    """A prepared dataset: its manifest's facts and its splits as tf.data streams."""

    def __init__(self, location: str, manifest: DatasetManifest):
        self.location = location
        self.manifest = manifest
        self._shards_location = manifest.shards_location or location
        self._pixel_mean = None
        self._cache_dir = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def num_classes(self) -> int:
        return int(self.manifest.num_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(side) for side in self.manifest.image_shape)

    @property
    def validation_split(self) -> str | None:
        """The split to validate on while training: "validation" when the dataset has one, else None
        (nothing is validated: the test split never chooses an epoch or steers a schedule)."""
        return "validation" if self.count("validation") > 0 else None

    def count(self, split: str) -> int:
        """Images in ``split`` (0 for a split the dataset does not have)."""
        _check_split_name(split)
        return int(self.manifest.splits.get(split, 0))

    def pixel_mean(self) -> np.ndarray:
        """The train split's mean image, float [H, W, C] in 0..1 units."""
        if self._pixel_mean is None:
            data = storage.read_bytes(storage.join(self.location, self.manifest.pixel_mean))
            self._pixel_mean = np.load(io.BytesIO(data), allow_pickle=False)
        return self._pixel_mean

    def shard_paths(self, split: str) -> list[str]:
        """Paths or gs:// URIs of the split's shards, in file order."""
        self._check_split(split)
        return [storage.join(self._shards_location, shard["file"]) for shard in self.manifest.shards[split]]

    def records(
        self,
        split: str,
        *,
        shard_index: int = 0,
        shard_count: int = 1,
        shuffle_seed: int | None = None,
        ordered: bool = False,
    ) -> tf.data.Dataset:
        """Serialized tf.train.Example records of ``split`` (one pass).

        Args:
            shard_index, shard_count: this worker's share: shards shard_index, shard_index +
                shard_count, ... (or every shard_count-th record when there are fewer shards than workers).
            shuffle_seed: shuffle the shard order, anew on every pass (None: file order).
            ordered: read the shards one after the other, so records come in file order.
        """
        if not 0 <= shard_index < shard_count:
            raise UserError(f"shard_index must be in 0..shard_count-1, got {shard_index} of {shard_count}")
        tf = keras_setup.tf
        paths = self.shard_paths(split)
        split_by_record = shard_count > len(paths)
        if not split_by_record:
            paths = paths[shard_index::shard_count]
        if storage.is_gcs(self._shards_location):
            files = self._downloaded_shards(paths, shuffle_seed)
            read_file = _read_and_delete
        else:
            files = tf.data.Dataset.from_tensor_slices(paths)
            if shuffle_seed is not None:
                files = files.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
            read_file = _read_file
        if ordered:
            records = files.flat_map(read_file)
        else:
            records = files.interleave(
                read_file,
                cycle_length=min(INTERLEAVE_CYCLE, len(paths)),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        return records.shard(shard_count, shard_index) if split_by_record else records

    def parse_batch(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A batch of serialized records [B] -> (uint8 images [B, H, W, C], int32 labels [B])."""
        tf = keras_setup.tf
        parsed = tf.io.parse_example(serialized, _features())
        images = tf.reshape(tf.io.decode_raw(parsed[tfrecord.IMAGE_FEATURE], tf.uint8), [-1, *self.image_shape])
        return images, tf.cast(parsed[tfrecord.LABEL_FEATURE], tf.int32)

    def examples(self, split: str, *, shard_index: int = 0, shard_count: int = 1, ordered: bool = False) -> tf.data.Dataset:
        """(uint8 image [H, W, C], int32 label) of ``split``, unbatched, one pass."""
        records = self.records(split, shard_index=shard_index, shard_count=shard_count, ordered=ordered)
        # Parsing a batch at a time is one vectorised op instead of one per record.
        return records.batch(256).map(self.parse_batch, num_parallel_calls=keras_setup.tf.data.AUTOTUNE).unbatch()

    def share_count(self, split: str, shard_index: int = 0, shard_count: int = 1) -> int:
        """Images in the share of ``split`` that records(..., shard_index, shard_count) reads."""
        shards = self.manifest.shards.get(split, [])
        if shard_count > len(shards):
            return len(range(shard_index, self.count(split), shard_count))
        return sum(shard["images"] for shard in shards[shard_index::shard_count])

    def arrays(self, split: str, *, shard_index: int = 0, shard_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """A split (or a worker's share of it) in memory, in file order: uint8 images [N, H, W, C], int32 labels [N]."""
        self._check_split(split)
        count = self.share_count(split, shard_index, shard_count)
        images = np.empty((count, *self.image_shape), dtype=np.uint8)
        labels = np.empty(count, dtype=np.int32)
        position = 0
        records = self.records(split, shard_index=shard_index, shard_count=shard_count, ordered=True)
        for batch_images, batch_labels in records.batch(ARRAY_BATCH).map(self.parse_batch).as_numpy_iterator():
            if position + len(batch_labels) > count:
                break
            images[position:position + len(batch_labels)] = batch_images
            labels[position:position + len(batch_labels)] = batch_labels
            position += len(batch_labels)
        if position != count:
            raise UserError(
                f"dataset {self.location} {split} shards do not hold the {count} images its manifest "
                "lists; prepare the dataset again"
            )
        return images, labels

    def _check_split(self, split: str) -> None:
        if not self.count(split):
            raise UserError(
                f"dataset {self.location} has no {split} split; prepare it with validation_fraction > 0 "
                "or use the test split"
            )

    def _downloaded_shards(self, uris: list[str], shuffle_seed: int | None) -> tf.data.Dataset:
        """Local paths of the shards, each yielded once downloaded, SHARD_LOOKAHEAD downloads ahead."""
        cache_dir = self._shard_cache_dir()
        passes = itertools.count()

        def local_paths() -> Iterator[str]:
            pass_number = next(passes)
            order = list(range(len(uris)))
            if shuffle_seed is not None:
                np.random.default_rng([shuffle_seed, pass_number]).shuffle(order)
            yield from _download_ahead(uris, order, os.path.join(cache_dir, f"pass{pass_number}"))

        tf = keras_setup.tf
        return tf.data.Dataset.from_generator(local_paths, output_signature=tf.TensorSpec([], tf.string))

    def _shard_cache_dir(self) -> str:
        if self._cache_dir is None:
            parent = os.environ.get(SHARD_CACHE_ENVIRONMENT_VARIABLE) or None
            self._cache_dir = tempfile.mkdtemp(prefix="cnnpipe-shards-", dir=parent)
            # Shards left by a pass that stopped early go with the reader.
            weakref.finalize(self, shutil.rmtree, self._cache_dir, True)
        return self._cache_dir


def _download_ahead(uris: list[str], order: list[int], directory: str) -> Iterator[str]:
    """Downloads uris in ``order`` into ``directory``, yielding each local path when its download is done."""
    os.makedirs(directory, exist_ok=True)
    with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
        downloads = {}
        for position, index in enumerate(order):
            for upcoming in order[position:position + SHARD_LOOKAHEAD + 1]:
                if upcoming not in downloads:
                    local_path = os.path.join(directory, os.path.basename(uris[upcoming]))
                    downloads[upcoming] = pool.submit(storage.download, uris[upcoming], local_path)
            yield downloads.pop(index).result()


def _read_file(path: tf.Tensor) -> tf.data.Dataset:
    return keras_setup.tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES)


def _delete_file(path) -> str:
    os.remove(path.numpy().decode())
    return path


def _read_and_delete(path: tf.Tensor) -> tf.data.Dataset:
    """The records of a downloaded shard; the file is deleted once the last record has been read.

    The deletion is a dataset concatenated after the records that yields nothing, so it runs
    exactly when the shard's records are exhausted.
    """
    tf = keras_setup.tf
    deletion = tf.data.Dataset.from_tensors(path).map(
        lambda name: tf.reshape(tf.py_function(_delete_file, [name], tf.string), [])
    )
    return _read_file(path).concatenate(deletion.filter(lambda _: False))


def _check_split_name(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
