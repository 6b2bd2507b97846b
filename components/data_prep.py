"""Data prep step: stream a dataset source into sharded TFRecord files plus a manifest.

Sources (see components/sources/ for the table of formats):
    ``digits``                        scikit-learn's bundled 8x8 handwritten digits (no download);
    ``cifar10``, ``fashion_mnist``, ``mnist``   the Keras loaders (need internet);
    a local image folder              ``<root>/<class>/*.jpg`` (20 % held out as test), or
                                      ``<root>/train/<class>/...`` and ``<root>/test/<class>/...``;
    a CIFAR-10 binary archive         ``cifar-10-binary.tar.gz`` (``cifar-10-batches-bin/*.bin``);
    ``gs://bucket/path``              either of the last two in object storage (copied to scratch disk first).

The dataset is a directory holding ``manifest.json``, ``pixel_mean.npy`` (the train split's mean
image) and, per split (``train``, ``test`` and, when asked for, ``validation``), TFRecord shards
``<split>-00000-of-00008.tfrecord`` of tf.train.Example records (raw uint8 pixels, int64 label;
see components/tfrecord.py). With ``shards_location`` the shards go there instead (a gs:// prefix
or a local directory) and the directory holds only the manifest naming them, so a pipeline passes
a few KB between steps and each training pod reads the shards straight from the bucket.

Images are streamed: the source's labels are read first, the validation split is decided from
them, and then each image is read, routed to its split's shard and forgotten, so the memory prep
needs does not grow with the dataset. Every shard is written under a temporary name and renamed
(or uploaded, then verified); the directory is assembled beside ``output_dir`` and renamed into
place at the end, so a failed prep leaves nothing half-written where a later step would pick it up.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import secrets
import shutil
import time

import numpy as np

from components import atomic, checks, progress, tfrecord
from components import manifest as dataset_manifest
from components.artifacts import MANIFEST_FILE, PIXEL_MEAN_FILE
from components.errors import UserError
from components.manifest import SPLITS, DatasetManifest
from components.sources import check_source, open_source  # noqa: F401  (check_source is part of this step's API)
from components.sources.base import SourceStream, checked_image_size
from components.sources.keyword import KEYWORD_SOURCES
from components.sources.splits import stratified_split

logger = logging.getLogger(__name__)

SHARD_SUFFIX = ".tfrecord"

# Shard sizing. Large shards keep per-file overhead (opens, GCS requests) negligible; a split
# is cut into at least MIN_SHARDS_PER_SPLIT shards (when that leaves each at least
# MIN_SHARD_BYTES) so that parallel interleave has several files to read at once, shard-order
# shuffling mixes the data, and several training workers can each take their own shards.
TARGET_SHARD_BYTES = 128 * 1024 * 1024
MIN_SHARDS_PER_SPLIT = 8
MIN_SHARD_BYTES = 4 * 1024 * 1024

# A progress event at most this often (seconds): often enough to watch, rare enough for logs.
PROGRESS_INTERVAL_SECONDS = 2.0

# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def prepare(
    source: str,
    output_dir: str,
    validation_fraction: float = 0.0,
    seed: int = 0,
    *,
    image_size: int | tuple[int, int] | None = None,
    shards_location: str | None = None,
    max_image_pixels: int | None = None,
) -> DatasetManifest:
    """Stream ``source`` into sharded TFRecords and a manifest in ``output_dir``; return the manifest.

    Args:
        source: ``digits``, ``cifar10``, ``fashion_mnist``, ``mnist``, or an image folder or a
            CIFAR-10 binary archive (``cifar-10-binary.tar.gz``), as a local path or gs:// URI.
        output_dir: directory to create; an existing one is replaced as a whole once the new
            dataset is complete.
        validation_fraction: share of each training class held out as the validation split, in [0, 1).
        seed: seed of the validation split and of the digits train/test split.
        image_size: resize every image to this (an int for square, or (height, width)); without
            it an image folder's images are resized to its most common size.
        shards_location: a gs:// prefix or local directory to write the shards under (in a new
            sub-folder per prep, so no earlier dataset's shards are overwritten); then
            ``output_dir`` holds only the manifest and the mean image.
        max_image_pixels: the largest image (width x height) an image folder may hold; a larger
            one is refused from its header, before decoding (None: 64 Mi pixels).

    Raises:
        UserError: a user mistake, with a one-line message naming it and the fix.
    """
    validation_fraction = _checked_fraction(validation_fraction)
    seed = checks.integer("seed", seed, minimum=0, hint="pass e.g. seed=0")
    size = checked_image_size(image_size)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"output path {output_dir} is a file; pass a directory path for the dataset")
    if shards_location is not None and (not isinstance(shards_location, str) or not shards_location.strip()):
        raise UserError(f"shards_location must be a gs:// prefix or a directory, got {shards_location!r}")
    check_source(source)

    with open_source(source, image_size=size, seed=seed, max_image_pixels=max_image_pixels) as stream:
        split_labels, held_out = _plan_splits(stream, validation_fraction, seed)
        manifest = _write_dataset(stream, source, output_dir, split_labels, held_out, shards_location)
    logger.info("prepared %s: %s", manifest.name, manifest.splits)
    return manifest


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def _checked_fraction(validation_fraction) -> float:
    """validation_fraction as a float in [0, 1), else a UserError naming the received value."""
    return checks.fraction("validation_fraction", validation_fraction, hint="use e.g. 0.1, or 0 for no validation split")


def _plan_splits(stream: SourceStream, validation_fraction: float, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Labels of each written split, and a mask over the source's train images marking the held-out ones.

    Decided from the labels alone, before any pixel is read.
    """
    train_labels = stream.labels["train"]
    held_out = np.zeros(len(train_labels), dtype=bool)
    if validation_fraction > 0:
        # At least one image of each class, so that a small dataset still gets a validation split
        # (and no epoch is ever chosen on the test split).
        _, held_out_indices = stratified_split(train_labels, validation_fraction, seed, minimum_per_class=1)
        if not len(held_out_indices):
            raise UserError(
                f"validation_fraction={validation_fraction} holds out no image of the {len(train_labels)} "
                "training images; use a larger fraction or 0"
            )
        held_out[held_out_indices] = True
    split_labels = {"train": train_labels[~held_out], "test": stream.labels["test"]}
    if held_out.any():
        split_labels["validation"] = train_labels[held_out]
    return split_labels, held_out


def shard_count_for(image_count: int, image_bytes: int) -> int:
    """Shards for a split of ``image_count`` images of ``image_bytes`` each (see TARGET_SHARD_BYTES)."""
    total_bytes = image_count * image_bytes
    by_target_size = math.ceil(total_bytes / TARGET_SHARD_BYTES)
    by_parallelism = min(MIN_SHARDS_PER_SPLIT, total_bytes // MIN_SHARD_BYTES)
    return int(max(1, min(image_count, max(by_target_size, by_parallelism))))


def classes_without_test_images(stream: SourceStream) -> list[str]:
    """Classes that have training images but no test image (their test accuracy cannot be measured)."""
    train_counts = np.bincount(stream.labels["train"], minlength=len(stream.class_names))
    test_counts = np.bincount(stream.labels["test"], minlength=len(stream.class_names))
    return [name for name, train, test in zip(stream.class_names, train_counts, test_counts) if train and not test]


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


_SQUARES = np.arange(256, dtype=np.int64) ** 2


class PixelStatistics:
    """Streaming sums over the train split: the mean image and per-channel mean and std.

    Sums are exact integers (int64), so the result does not depend on the chunking.
    """

    def __init__(self, image_shape: tuple[int, int, int]):
        self.pixel_sum = np.zeros(image_shape, dtype=np.int64)
        self.square_sum = np.zeros(image_shape[-1], dtype=np.int64)
        self.count = 0

    def add(self, images: np.ndarray) -> None:
        self.pixel_sum += images.sum(axis=0, dtype=np.int64)
        # Sum of squares per channel from a histogram of the values: exact, and a third of the
        # cost of squaring every pixel (255 squared needs a wider type than the pixels).
        for channel in range(images.shape[-1]):
            counts = np.bincount(images[..., channel].ravel(), minlength=256)
            self.square_sum[channel] += int(counts @ _SQUARES)
        self.count += len(images)

    def pixel_mean(self) -> np.ndarray:
        """The mean image, float64 [H, W, C] in 0..1 units."""
        return self.pixel_sum / (self.count * 255.0)

    def channel_mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation in 0..1 units."""
        values = self.count * self.pixel_sum.shape[0] * self.pixel_sum.shape[1]
        mean = self.pixel_sum.sum(axis=(0, 1)) / (values * 255.0)
        variance = np.maximum(self.square_sum / (values * 255.0**2) - np.square(mean), 0.0)  # rounding can dip below 0
        return mean.tolist(), np.sqrt(variance).tolist()


class _ShardAbandoned(Exception):
    """Unwinds the context of a shard that is abandoned half-written (ShardWriter.abort)."""


class ShardWriter:
    """Writes one split's images into its planned shards, in arrival order, each shard atomically.

    A shard is written to a temporary file with its sha256 computed on the way and renamed to its
    name (components/atomic.py) in ``location`` or, for a gs:// ``location``, in the scratch
    directory, then uploaded (the upload verifies its checksum) and the local file removed.
    """

    def __init__(self, split: str, count: int, image_bytes: int, location: str, scratch_dir: str):
        self.split = split
        self.shard_total = shard_count_for(count, image_bytes)
        # Shard i holds images [boundaries[i], boundaries[i + 1]) of the split.
        self.boundaries = [round(index * count / self.shard_total) for index in range(self.shard_total + 1)]
        self.location, self.scratch_dir = location, scratch_dir
        self.written = 0
        self.shards: list[dict] = []
        self.digests: dict[str, str] = {}
        self._file = None

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        for pixels, label in zip(images, labels):
            if self._file is None:
                self._open_next()
            record = tfrecord.record_bytes(tfrecord.encode_example(pixels.tobytes(), int(label)))
            self._file.write(record)
            self._digest.update(record)
            self.written += 1
            if self.written == self.boundaries[len(self.shards) + 1]:
                self._finish_current()

    def close(self) -> None:
        if self._file is not None or len(self.shards) != self.shard_total:
            raise RuntimeError(f"{self.split}: {self.written} images written, expected {self.boundaries[-1]}")

    def abort(self) -> None:
        """Closes and removes the shard being written: an error inside its context keeps it from its name."""
        if self._file is not None:
            self._file = None
            with contextlib.suppress(_ShardAbandoned), self._shard:
                raise _ShardAbandoned(self.split)

    def _name(self, index: int) -> str:
        return f"{self.split}-{index:05d}-of-{self.shard_total:05d}{SHARD_SUFFIX}"

    def _local_path(self, name: str) -> str:
        directory = self.scratch_dir if self.location.startswith("gs://") else self.location
        return os.path.join(directory, name)

    def _open_next(self) -> None:
        # The shard's temporary file stays open across write() calls: the stack holds it until
        # _finish_current renames it (or abort removes it).
        self._shard = contextlib.ExitStack()
        temporary_path = self._shard.enter_context(atomic.replaced_on_success(self._local_path(self._name(len(self.shards)))))
        self._file = self._shard.enter_context(open(temporary_path, "wb"))
        self._digest = hashlib.sha256()

    def _finish_current(self) -> None:
        from components import storage

        name = self._name(len(self.shards))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file = None
        self._shard.close()  # closes the file and renames it to its name
        if self.location.startswith("gs://"):
            storage.upload(self._local_path(name), storage.join(self.location, name))
            os.remove(self._local_path(name))
        start, end = self.boundaries[len(self.shards)], self.boundaries[len(self.shards) + 1]
        self.shards.append({"file": name, "images": end - start})
        self.digests[name] = self._digest.hexdigest()


class PrepareProgress:
    """Images done / total with images per second and ETA: progress events every
    PROGRESS_INTERVAL_SECONDS, and with each a progress line (components/progress.py) on a terminal."""

    def __init__(self, total: int):
        self.total = total
        self.started = self.last_report = time.monotonic()
        self.rate, self.eta = 0.0, None
        self.line = progress.ProgressLine(total, self._describe)

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last_report < PROGRESS_INTERVAL_SECONDS:
            return
        self.last_report = now
        self.rate = done / max(now - self.started, 1e-9)
        self.eta = (self.total - done) / self.rate if self.rate > 0 else None
        progress.emit("prepare", "images", images=done, total=self.total, images_per_second=self.rate,
                      eta_seconds=self.eta)
        if self.line.on_terminal:  # a log has the events
            self.line.update(done)

    def finish(self) -> None:
        seconds = time.monotonic() - self.started
        progress.emit("prepare", "done", images=self.total, total=self.total, seconds=seconds,
                      images_per_second=self.total / max(seconds, 1e-9), eta_seconds=0)
        self.line.finish()

    def _describe(self, done: float, total: float) -> str:
        return (f"prepare {progress.bar(done, self.total, 30)} {done}/{self.total} images, "
                f"{self.rate:.0f} images/s, ETA {self.eta or 0:.0f} s ")


def _write_dataset(
    stream: SourceStream,
    source: str,
    output_dir: str,
    split_labels: dict[str, np.ndarray],
    held_out: np.ndarray,
    shards_location: str | None,
) -> DatasetManifest:
    """Streams every image into its split's shards, then writes the manifest and moves the directory into place."""
    from components import storage

    output_dir = os.path.abspath(output_dir)
    staging_dir = atomic.staging_directory(output_dir)
    location = staging_dir
    if shards_location is not None:
        # A fresh sub-folder per prep: an earlier dataset's manifest keeps naming intact shards.
        run_name = f"{stream.name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
        location = storage.join(shards_location if storage.is_gcs(shards_location) else os.path.abspath(shards_location), run_name)
        if not storage.is_gcs(location):
            os.makedirs(location)
    image_bytes = int(np.prod(stream.image_shape))
    writers = {
        split: ShardWriter(split, len(labels), image_bytes, location, staging_dir) for split, labels in split_labels.items()
    }
    try:
        statistics = _stream_into(stream, writers, split_labels, held_out)
        np.save(os.path.join(staging_dir, PIXEL_MEAN_FILE), statistics.pixel_mean(), allow_pickle=False)
        manifest = _build_manifest(stream, source, split_labels, writers, statistics, shards_location and location,
                                   file_sha256(os.path.join(staging_dir, PIXEL_MEAN_FILE)))
        dataset_manifest.write(staging_dir, manifest)
        atomic.replace_directory(staging_dir, output_dir, last=MANIFEST_FILE)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        shutil.rmtree(staging_dir, ignore_errors=True)
        if shards_location is not None:
            _remove_shards(location)
        raise
    return manifest


def _stream_into(
    stream: SourceStream, writers: dict[str, ShardWriter], split_labels: dict[str, np.ndarray], held_out: np.ndarray
) -> PixelStatistics:
    """Reads every image once, sends it to its split's writer and the train statistics."""
    statistics = PixelStatistics(stream.image_shape)
    total = sum(len(labels) for labels in stream.labels.values())
    tracker = PrepareProgress(total)
    source_position = {"train": 0, "test": 0}
    done = 0
    for source_split, images in stream.chunks():
        start = source_position[source_split]
        source_position[source_split] += len(images)
        if images.shape[1:] != tuple(stream.image_shape):
            raise UserError(
                f"dataset {stream.name} has an image of shape {list(images.shape[1:])} among images of "
                f"{list(stream.image_shape)}; give every image one size or pass image_size"
            )
        labels = stream.labels[source_split][start:start + len(images)]
        if source_split == "train":
            mask = held_out[start:start + len(images)]
            if mask.any():
                writers["validation"].write(images[mask], labels[mask])
            kept = images[~mask] if mask.any() else images
            writers["train"].write(kept, labels[~mask])
            statistics.add(kept)
        else:
            writers["test"].write(images, labels)
        done += len(images)
        tracker.update(done)
    for writer in writers.values():
        writer.close()
    tracker.finish()
    return statistics


def _build_manifest(
    stream: SourceStream,
    source: str,
    split_labels: dict[str, np.ndarray],
    writers: dict[str, ShardWriter],
    statistics: PixelStatistics,
    shards_location: str | None,
    pixel_mean_sha256: str,
) -> DatasetManifest:
    """The manifest; ``sha256`` names every data file (the dataset's identity for checkpoints)."""
    mean, std = statistics.channel_mean_std()
    is_local_path = source not in KEYWORD_SOURCES and not source.startswith("gs://")
    missing_test = classes_without_test_images(stream)
    if missing_test:
        logger.warning(
            "classes with training images but no test images (their test accuracy cannot be measured): %s",
            ", ".join(missing_test),
        )
    num_classes = len(stream.class_names)
    return DatasetManifest(
        format_version=dataset_manifest.FORMAT_VERSION,
        name=stream.name,
        source=os.path.abspath(os.path.expanduser(source)) if is_local_path else source,
        class_names=list(stream.class_names),
        num_classes=num_classes,
        image_shape=list(stream.image_shape),
        splits={split: int(len(split_labels.get(split, ()))) for split in SPLITS},
        class_counts={
            split: np.bincount(labels, minlength=num_classes).tolist() for split, labels in split_labels.items()
        },
        classes_without_test_images=missing_test,
        mean=mean,
        std=std,
        pixel_mean=PIXEL_MEAN_FILE,
        allow_horizontal_flip=stream.allow_horizontal_flip,
        resized_images=int(stream.resized_images),
        test_held_out_fraction=stream.test_held_out_fraction,
        record_format={"image": "raw uint8 bytes, [height, width, channels] order", "label": "int64"},
        shards_location=shards_location,
        shards={split: writer.shards for split, writer in writers.items()},
        sha256={**{name: digest for writer in writers.values() for name, digest in writer.digests.items()},
                PIXEL_MEAN_FILE: pixel_mean_sha256},
    )


def file_sha256(path: str) -> str:
    """Hex sha256 of a file."""
    from components.storage.checksums import fed_with_file

    return fed_with_file(path, hashlib.sha256()).hexdigest()


def _remove_shards(location: str) -> None:
    """Best-effort removal of a failed prep's shards under ``shards_location``."""
    from components import storage

    if not storage.is_gcs(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    try:
        for name in storage.list_files(location):
            storage.delete(storage.join(location, name))
    except Exception as error:  # the original failure matters more than leftovers nobody names
        logger.warning("could not remove the partial shards under %s: %s", location, error)
