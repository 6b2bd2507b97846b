"""Data prep step: load a dataset source, validate it, split it, and write the dataset artifact.

Sources:
    ``digits``                        scikit-learn's bundled 8x8 handwritten digits (no download);
    ``cifar10``, ``fashion_mnist``, ``mnist``   the Keras loaders (need internet);
    a local image folder              ``<root>/train/<class>/*.png`` and ``<root>/test/<class>/...``;
    a CIFAR-10 binary archive         ``cifar-10-binary.tar.gz`` (``cifar-10-batches-bin/*.bin``);
    ``gs://bucket/path``              either of the last two in object storage (downloaded first).

The artifact is a directory holding ``manifest.json`` and uint8 image / int32 label ``.npy`` files
per split (``train``, ``test`` and, when asked for, ``validation``). It is written into a staging
directory beside ``output_dir`` and renamed into place at the end, so a failed prep leaves nothing
half-written where a later step would pick it up.

Image folders are decoded with Pillow in a fixed order (classes sorted by name, files sorted by
name within a class). All images end up with one size and one channel count:
    * size: images whose size differs from the most common size are resized to it (bilinear),
      so a folder of photos straight from a camera works; the manifest's ``resized_images`` counts
      them, so a surprising number is visible;
    * channels: one channel when every image is grayscale, otherwise RGB (grayscale images are
      replicated into three channels, alpha is dropped).
"""

import collections
import hashlib
import json
import logging
import os
import posixpath
import shutil
import socket
import tarfile
import tempfile
import zlib
from dataclasses import dataclass

import numpy as np

from components.errors import UserError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "test", "validation")
KEYWORD_SOURCES = ("digits", "cifar10", "fashion_mnist", "mnist")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_FOLDER_SPLITS = ("train", "test")

# Handwriting looks wrong mirrored; every other source is fine with horizontal flips.
NO_HORIZONTAL_FLIP = frozenset({"digits", "mnist"})

# The bundled digits have no official test split; this share of each class becomes the test split.
DIGITS_TEST_FRACTION = 0.2
DIGITS_MAX_PIXEL_VALUE = 16

# A Keras download with no answer would otherwise wait forever (urlretrieve has no timeout).
DOWNLOAD_TIMEOUT_SECONDS = 60

CIFAR_SIDE = 32
CIFAR_RECORD_BYTES = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE  # one label byte, then R, G, B planes
CIFAR_TRAIN_MEMBERS = tuple(f"data_batch_{number}.bin" for number in range(1, 6))
CIFAR_TEST_MEMBER = "test_batch.bin"
CIFAR_META_MEMBER = "batches.meta.txt"
CIFAR_MEMBERS = (*CIFAR_TRAIN_MEMBERS, CIFAR_TEST_MEMBER, CIFAR_META_MEMBER)
CIFAR_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASS_NAMES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)

# Pillow modes that carry no colour; any other mode makes the dataset RGB.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# EXIF orientations that turn the stored image by 90 degrees, swapping width and height.
EXIF_ORIENTATION_TAG = 0x0112
SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})

ImagesAndLabels = tuple[np.ndarray, np.ndarray]

# Pixel statistics are accumulated this many images at a time to bound float64 memory.
STATISTICS_CHUNK_IMAGES = 4096


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A loaded source before splitting: uint8 images [N, H, W, C] and int32 labels [N] per split."""

    name: str
    class_names: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    allow_horizontal_flip: bool
    resized_images: int = 0


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def check_source(source: str) -> None:
    """Cheap validation of a source (keyword, existence, folder layout) so mistakes fail in a second.

    Decodes no images and reads no archive beyond its first header; ``prepare`` does the full checks.
    A gs:// source is only checked for its form: the machine that launches a pipeline may lack
    the credentials its cluster has.
    Raises ValueError or FileNotFoundError with a one-line message naming the problem and the fix.
    """
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"source must be a keyword or a path, got {source!r}; {_source_choices()}")
    if source.startswith("gs://"):
        if not source[len("gs://"):].split("/")[0]:
            raise UserError(f"source {source!r} names no bucket; write it as gs://bucket/path")
        return
    if source in KEYWORD_SOURCES:
        return
    path = os.path.expanduser(source)
    if not os.path.exists(path):
        if _looks_like_path(source):
            raise UserError(f"source path {source} does not exist; check the path or name a dataset keyword")
        raise UserError(f"unknown source {source!r}; {_source_choices()}")
    if os.path.isdir(path):
        _list_image_folder(path)
    elif not tarfile.is_tarfile(path):
        raise UserError(
            f"source file {source} is not a tar archive; pass an image folder or the CIFAR-10 binary "
            "archive cifar-10-binary.tar.gz"
        )


def prepare(source: str, output_dir: str, validation_fraction: float = 0.0, seed: int = 0) -> dict:
    """Load ``source``, split it and write the dataset artifact to ``output_dir``; return the manifest.

    Args:
        source: ``digits``, ``cifar10``, ``fashion_mnist``, ``mnist``, or an image folder or a
            CIFAR-10 binary archive (``cifar-10-binary.tar.gz``), as a local path or gs:// URI.
        output_dir: directory to create; an existing one is replaced as a whole once the new
            artifact is complete.
        validation_fraction: share of each training class held out as the validation split, in [0, 1).
        seed: seed of the validation split and of the digits train/test split.

    Raises:
        ValueError, FileNotFoundError: a user mistake, with a one-line message naming it and the fix.
    """
    validation_fraction = _checked_fraction(validation_fraction)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise UserError(f"seed must be an integer, got {seed!r}; pass e.g. seed=0")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"output path {output_dir} is a file; pass a directory path for the dataset")
    check_source(source)

    raw = load_source(source, seed=seed)
    splits = _split_validation(raw, validation_fraction, seed)
    manifest = _build_manifest(raw, source, splits)
    _write_atomically(output_dir, splits, manifest)
    logger.info("prepared %s: %s", manifest["name"], manifest["splits"])
    return manifest


def read_manifest(dataset_dir: str) -> dict:
    """The manifest of a prepared dataset directory."""
    path = os.path.join(dataset_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise UserError(f"no {MANIFEST_NAME} in {dataset_dir}; run data prep (prepare) to create the dataset")
    with open(path, encoding="utf-8") as manifest_file:
        manifest = json.load(manifest_file)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"dataset {dataset_dir} has format_version {manifest.get('format_version')!r}, expected "
            f"{FORMAT_VERSION}; prepare the dataset again with this version"
        )
    return manifest


def load_split(dataset_dir: str, split: str) -> ImagesAndLabels:
    """Images (uint8 [N, H, W, C]) and labels (int32 [N]) of one split of a prepared dataset."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    manifest = read_manifest(dataset_dir)
    if not manifest["splits"].get(split):
        raise UserError(
            f"dataset {dataset_dir} has no {split} split; prepare it with validation_fraction > 0 "
            "or use the test split"
        )
    images = np.load(os.path.join(dataset_dir, f"{split}_images.npy"), allow_pickle=False)
    labels = np.load(os.path.join(dataset_dir, f"{split}_labels.npy"), allow_pickle=False)
    return images, labels


def load_source(source: str, seed: int = 0) -> RawDataset:
    """Load a keyword, local or gs:// source into memory (no validation split, nothing written)."""
    if source.startswith("gs://"):
        return load_gcs_source(source)
    if source in KEYWORD_SOURCES:
        return _load_digits(seed) if source == "digits" else _load_keras_dataset(source)
    return load_local_source(os.path.expanduser(source))


def load_local_source(path: str, name: str | None = None) -> RawDataset:
    """Load a local image folder (named ``name`` or its basename) or CIFAR-10 binary archive (``cifar10``)."""
    if not os.path.exists(path):
        raise UserError(f"source path {path} does not exist; check the path")
    if os.path.isdir(path):
        return read_image_folder(path, name=name)
    return read_cifar_binary_archive(path)


def load_gcs_source(uri: str) -> RawDataset:
    """Download a gs:// image folder or archive into a scratch directory and read it like a local one.

    A URI with objects under it is an image folder; otherwise it names one object (an archive).
    Error messages name the gs:// location rather than the scratch copy.
    """
    from components import storage  # imported here: google-cloud-storage is only needed for gs:// sources

    location = uri.rstrip("/")
    name = posixpath.basename(location)
    with tempfile.TemporaryDirectory(prefix="cnnpipe-source-") as scratch_dir:
        local_path = os.path.join(scratch_dir, name)
        if storage.list_files(location):
            storage.download_tree(location, local_path)
        else:
            storage.download(location, local_path)
        try:
            return load_local_source(local_path, name=name)
        except (ValueError, FileNotFoundError) as error:
            raise type(error)(str(error).replace(local_path, location)) from error


# ---------------------------------------------------------------------------------------------
# Keyword sources
# ---------------------------------------------------------------------------------------------


def _load_digits(seed: int) -> RawDataset:
    """scikit-learn's bundled digits (1797 images, 8x8, values 0..16) with a stratified 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Scale 0..16 to 0..255 so every source shares the uint8 convention the trainer expects.
    images = np.rint(digits.images * (255.0 / DIGITS_MAX_PIXEL_VALUE)).astype(np.uint8)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    train_indices, test_indices = stratified_split(labels, DIGITS_TEST_FRACTION, seed)
    return RawDataset(
        name="digits",
        class_names=tuple(str(digit) for digit in range(10)),
        train_images=images[train_indices],
        train_labels=labels[train_indices],
        test_images=images[test_indices],
        test_labels=labels[test_indices],
        allow_horizontal_flip=False,
    )


def _load_keras_dataset(keyword: str) -> RawDataset:
    """CIFAR-10, Fashion-MNIST or MNIST through ``keras.datasets`` (downloads on first use)."""
    # Imported here: TensorFlow takes seconds to import and most sources never need it.
    from components.keras_setup import keras

    loaders = {
        "cifar10": (keras.datasets.cifar10, CIFAR_CLASS_NAMES),
        "fashion_mnist": (keras.datasets.fashion_mnist, FASHION_MNIST_CLASS_NAMES),
        "mnist": (keras.datasets.mnist, tuple(str(digit) for digit in range(10))),
    }
    module, class_names = loaders[keyword]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        (train_images, train_labels), (test_images, test_labels) = module.load_data()
    except Exception as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(
            f"could not download the {keyword} dataset ({reason}); without internet access use a local "
            "image folder (train/<class>/*.png, test/<class>/...) or a CIFAR-10 binary archive "
            "(cifar-10-binary.tar.gz) as the source"
        ) from error
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return RawDataset(
        name=keyword,
        class_names=class_names,
        train_images=_with_channel_axis(train_images),
        train_labels=train_labels.reshape(-1).astype(np.int32),
        test_images=_with_channel_axis(test_images),
        test_labels=test_labels.reshape(-1).astype(np.int32),
        allow_horizontal_flip=keyword not in NO_HORIZONTAL_FLIP,
    )


def _with_channel_axis(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C]; grayscale loaders return [N, H, W]."""
    images = np.asarray(images, dtype=np.uint8)
    return images[..., np.newaxis] if images.ndim == 3 else images


# ---------------------------------------------------------------------------------------------
# Local image folder
# ---------------------------------------------------------------------------------------------


def read_image_folder(root: str, name: str | None = None) -> RawDataset:
    """Decode ``root/{train,test}/<class>/*.{png,jpg,jpeg,bmp}`` with Pillow into one size and mode."""
    files_by_split = _list_image_folder(root)
    class_names = sorted({class_name for classes in files_by_split.values() for class_name in classes})
    all_paths = [path for classes in files_by_split.values() for paths in classes.values() for path in paths]

    sizes = {}
    modes = set()
    for path in all_paths:
        with _open_image(path) as image:
            sizes[path] = _oriented_size(image)
            modes.add(image.mode)
    target_size = _most_common_size(sizes)
    target_mode = "L" if modes <= GRAYSCALE_MODES else "RGB"
    resized = sum(size != target_size for size in sizes.values())
    if resized:
        logger.warning("resizing %d of %d images to the most common size %dx%d", resized, len(sizes), *target_size)

    arrays = {}
    for split, classes in files_by_split.items():
        images, labels = [], []
        for class_name, paths in classes.items():
            label = class_names.index(class_name)
            for path in paths:
                images.append(_decode_image(path, target_size, target_mode))
                labels.append(label)
        arrays[split] = (np.stack(images), np.asarray(labels, dtype=np.int32))
    return RawDataset(
        name=name or os.path.basename(os.path.normpath(root)),
        class_names=tuple(class_names),
        train_images=arrays["train"][0],
        train_labels=arrays["train"][1],
        test_images=arrays["test"][0],
        test_labels=arrays["test"][1],
        allow_horizontal_flip=True,
        resized_images=resized,
    )


def _list_image_folder(root: str) -> dict[str, dict[str, list[str]]]:
    """Image paths per split and class (both sorted by name), checking the layout without decoding."""
    layout_hint = f"lay it out as {root}/train/<class>/*.png and {root}/test/<class>/*.png"
    files_by_split = {}
    for split in IMAGE_FOLDER_SPLITS:
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            raise UserError(f"image folder {root} has no {split}/ subfolder; {layout_hint}")
        entries = _visible_entries(split_dir)
        strays = [entry for entry in entries if not os.path.isdir(os.path.join(split_dir, entry))]
        if strays:
            raise UserError(
                f"{os.path.join(split_dir, strays[0])} is not inside a class folder; move it into {split_dir}/<class>/"
            )
        if not entries:
            raise UserError(f"no images found: {split_dir} has no class folders; {layout_hint}")
        files_by_split[split] = {entry: _list_class_folder(os.path.join(split_dir, entry)) for entry in entries}

    missing_in_train = sorted(set(files_by_split["test"]) - set(files_by_split["train"]))
    if missing_in_train:
        raise UserError(
            f"class {missing_in_train[0]!r} has test images but no folder in {os.path.join(root, 'train')}; "
            "add training images for it or remove its test folder"
        )
    return files_by_split


def _list_class_folder(class_dir: str) -> list[str]:
    """Sorted image paths of one class folder; an empty folder or a non-image file is an error."""
    entries = _visible_entries(class_dir)
    if not entries:
        raise UserError(f"class folder {class_dir} is empty; add images to it or remove it")
    for entry in entries:
        path = os.path.join(class_dir, entry)
        if os.path.isdir(path) or not entry.lower().endswith(IMAGE_EXTENSIONS):
            raise UserError(
                f"unsupported entry {path}; class folders may hold only {', '.join(IMAGE_EXTENSIONS)} images"
            )
    return [os.path.join(class_dir, entry) for entry in entries]


def _visible_entries(directory: str) -> list[str]:
    """Sorted names in a directory, skipping hidden ones (.DS_Store, editor files)."""
    return sorted(entry for entry in os.listdir(directory) if not entry.startswith("."))


def _open_image(path: str):
    """Open an image lazily (header only); a corrupt or non-image file is a one-line ValueError."""
    from PIL import Image

    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read image {path} ({error}); remove or replace the file") from error


def _oriented_size(image) -> tuple[int, int]:
    """(width, height) as displayed, honouring a camera's EXIF rotation."""
    width, height = image.size
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION_TAG)
    except (OSError, SyntaxError, ValueError):
        orientation = None  # broken EXIF: use the stored orientation
    return (height, width) if orientation in SWAPPED_ORIENTATIONS else (width, height)


def _most_common_size(sizes: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """The (width, height) most images have; ties go to the larger area, then the wider size."""
    counts = collections.Counter(sizes.values())
    return max(counts, key=lambda size: (counts[size], size[0] * size[1], size))


def _decode_image(path: str, target_size: tuple[int, int], target_mode: str) -> np.ndarray:
    """Decode one image as uint8 [H, W, C] in ``target_mode`` and ``target_size`` (width, height)."""
    from PIL import Image, ImageOps

    with _open_image(path) as image:
        try:
            upright = ImageOps.exif_transpose(image)
            converted = upright.convert(target_mode)
            if converted.size != target_size:
                converted = converted.resize(target_size, Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as error:
            raise UserError(f"cannot decode image {path} ({error}); remove or replace the file") from error
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


# ---------------------------------------------------------------------------------------------
# CIFAR-10 binary archive
# ---------------------------------------------------------------------------------------------


def read_cifar_binary_archive(path: str) -> RawDataset:
    """Parse ``cifar-10-binary.tar.gz`` with numpy, streaming members out of the tar (nothing extracted)."""
    contents = {}
    seen_names = []
    try:
        # Stream mode reads the compressed archive once, front to back.
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                seen_names.append(member.name)
                base_name = posixpath.basename(member.name)
                if member.isfile() and base_name in CIFAR_MEMBERS and base_name not in contents:
                    contents[base_name] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise UserError(f"cannot read archive {path} ({error}); download cifar-10-binary.tar.gz again") from error

    missing = [member for member in CIFAR_MEMBERS if member not in contents]
    if missing:
        python_version = any(posixpath.basename(name) == "data_batch_1" for name in seen_names)
        hint = (
            "this is the Python (pickle) version; use the binary version cifar-10-binary.tar.gz"
            if python_version
            else "expected cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin, test_batch.bin and "
            "batches.meta.txt as in cifar-10-binary.tar.gz"
        )
        raise UserError(f"archive {path} lacks {', '.join(missing)}; {hint}")

    meta_lines = contents[CIFAR_META_MEMBER].decode("utf-8", "replace").splitlines()
    class_names = tuple(line.strip() for line in meta_lines if line.strip())
    parsed = {
        member: _parse_cifar_records(contents[member], member, path, len(class_names))
        for member in (*CIFAR_TRAIN_MEMBERS, CIFAR_TEST_MEMBER)
    }
    train_parts = [parsed[member] for member in CIFAR_TRAIN_MEMBERS]
    test_images, test_labels = parsed[CIFAR_TEST_MEMBER]
    return RawDataset(
        name="cifar10",
        class_names=class_names,
        train_images=np.concatenate([images for images, _ in train_parts]),
        train_labels=np.concatenate([labels for _, labels in train_parts]),
        test_images=test_images,
        test_labels=test_labels,
        allow_horizontal_flip=True,
    )


def _parse_cifar_records(data: bytes, member: str, path: str, num_classes: int) -> ImagesAndLabels:
    """Records of 1 label byte + 32x32 R, G, B planes -> uint8 [N, 32, 32, 3] images, int32 labels."""
    if not data or len(data) % CIFAR_RECORD_BYTES:
        raise UserError(
            f"{member} in {path} holds {len(data)} bytes, not a whole number of {CIFAR_RECORD_BYTES}-byte "
            "CIFAR-10 records; download cifar-10-binary.tar.gz again"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD_BYTES)
    labels = records[:, 0].astype(np.int32)
    if labels.max() >= num_classes:
        raise UserError(
            f"{member} in {path} has label {labels.max()} but {CIFAR_META_MEMBER} names only {num_classes} "
            "classes; download cifar-10-binary.tar.gz again"
        )
    planes = records[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels


# ---------------------------------------------------------------------------------------------
# Splitting, statistics, manifest
# ---------------------------------------------------------------------------------------------


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): a seeded random ``fraction`` of each class is held out.

    Each class keeps at least one image; both index arrays are sorted, so the source order survives.
    """
    generator = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        generator.shuffle(indices)
        count = min(int(round(fraction * len(indices))), len(indices) - 1)
        held_out.append(indices[:count])
    held_out_indices = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=np.int64)
    kept_indices = np.setdiff1d(np.arange(len(labels)), held_out_indices)
    return kept_indices, held_out_indices


def _checked_fraction(validation_fraction) -> float:
    """validation_fraction as a float in [0, 1), else a ValueError naming the received value."""
    if isinstance(validation_fraction, bool) or not isinstance(validation_fraction, (int, float, np.floating)):
        raise UserError(f"validation_fraction must be a number in [0, 1), got {validation_fraction!r}; e.g. 0.1")
    if not 0.0 <= validation_fraction < 1.0:
        raise UserError(
            f"validation_fraction must be in [0, 1), got {validation_fraction}; "
            "use e.g. 0.1, or 0 for no validation split"
        )
    return float(validation_fraction)


def _split_validation(raw: RawDataset, validation_fraction: float, seed: int) -> dict[str, ImagesAndLabels]:
    """The arrays to write per split, carving the validation split out of train when asked to."""
    _check_arrays(raw)
    splits = {"train": (raw.train_images, raw.train_labels), "test": (raw.test_images, raw.test_labels)}
    if validation_fraction > 0:
        kept, held_out = stratified_split(raw.train_labels, validation_fraction, seed)
        if not len(held_out):
            raise UserError(
                f"validation_fraction={validation_fraction} holds out no image of the {len(raw.train_labels)} "
                "training images; use a larger fraction or 0"
            )
        splits["train"] = (raw.train_images[kept], raw.train_labels[kept])
        splits["validation"] = (raw.train_images[held_out], raw.train_labels[held_out])
    return splits


def _check_arrays(raw: RawDataset) -> None:
    """Both splits non-empty, uint8 [N, H, W, C] of one shape, labels matching and within the classes."""
    splits = (("train", raw.train_images, raw.train_labels), ("test", raw.test_images, raw.test_labels))
    for split, images, labels in splits:
        if not len(images):
            raise UserError(f"dataset {raw.name} has no {split} images; add some to the source")
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise UserError(
                f"dataset {raw.name} {split} split has images {images.dtype}{list(images.shape)} and "
                f"{len(labels)} labels; expected uint8 [N, H, W, C] with N labels"
            )
        if labels.min() < 0 or labels.max() >= len(raw.class_names):
            raise UserError(
                f"dataset {raw.name} {split} split has labels outside 0..{len(raw.class_names) - 1}; "
                "fix the source's labels"
            )
    if raw.train_images.shape[1:] != raw.test_images.shape[1:]:
        raise UserError(
            f"dataset {raw.name} train images are {list(raw.train_images.shape[1:])} but test images are "
            f"{list(raw.test_images.shape[1:])}; give both splits one image size"
        )


def channel_mean_std(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images [N, H, W, C], in [0, 1] units."""
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_of_squares = np.zeros(channels)
    for start in range(0, len(images), STATISTICS_CHUNK_IMAGES):
        chunk = images[start:start + STATISTICS_CHUNK_IMAGES].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 1, 2))
        total_of_squares += np.square(chunk).sum(axis=(0, 1, 2))
    count = images.size // channels
    mean = total / count
    variance = np.maximum(total_of_squares / count - np.square(mean), 0.0)  # rounding can dip below zero
    return mean.tolist(), np.sqrt(variance).tolist()


def _build_manifest(raw: RawDataset, source: str, splits: dict) -> dict:
    """The manifest without ``sha256`` (added once the files are written)."""
    mean, std = channel_mean_std(splits["train"][0])
    is_local_path = source not in KEYWORD_SOURCES and not source.startswith("gs://")
    return {
        "format_version": FORMAT_VERSION,
        "name": raw.name,
        "source": os.path.abspath(os.path.expanduser(source)) if is_local_path else source,
        "class_names": list(raw.class_names),
        "num_classes": len(raw.class_names),
        "image_shape": list(raw.train_images.shape[1:]),
        "splits": {split: len(splits[split][1]) if split in splits else 0 for split in SPLITS},
        "mean": mean,
        "std": std,
        "allow_horizontal_flip": raw.allow_horizontal_flip,
        "resized_images": raw.resized_images,
    }


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as data_file:
        for block in iter(lambda: data_file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Atomic write
# ---------------------------------------------------------------------------------------------


def _write_atomically(output_dir: str, splits: dict, manifest: dict) -> None:
    """Write every file into a staging directory beside ``output_dir``, then move it into place."""
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.staging-", dir=parent)
    try:
        manifest["sha256"] = {}
        for split, (images, labels) in splits.items():
            for file_name, array in ((f"{split}_images.npy", images), (f"{split}_labels.npy", labels)):
                file_path = os.path.join(staging_dir, file_name)
                np.save(file_path, np.ascontiguousarray(array), allow_pickle=False)
                manifest["sha256"][file_name] = file_sha256(file_path)
        with open(os.path.join(staging_dir, MANIFEST_NAME), "w", encoding="utf-8") as manifest_file:
            json.dump(manifest, manifest_file, indent=2)
        _publish(staging_dir, output_dir)
    except BaseException:
        shutil.rmtree(staging_dir, ignore_errors=True)
        raise


def _publish(staging_dir: str, output_dir: str) -> None:
    """Rename the staging directory to ``output_dir``, replacing an existing one as a whole."""
    if not os.path.lexists(output_dir):
        os.rename(staging_dir, output_dir)
        return
    if not os.listdir(output_dir):
        try:
            os.rmdir(output_dir)
            os.rename(staging_dir, output_dir)
        except OSError:
            # An empty mount point (a pipeline runner's artifact directory) cannot be removed.
            _move_contents(staging_dir, output_dir)
        return
    previous_dir = f"{staging_dir}.previous"
    os.rename(output_dir, previous_dir)
    try:
        os.rename(staging_dir, output_dir)
    except BaseException:
        os.rename(previous_dir, output_dir)
        raise
    shutil.rmtree(previous_dir, ignore_errors=True)


def _move_contents(staging_dir: str, output_dir: str) -> None:
    """Move the staged files into an existing empty directory, the manifest last."""
    names = sorted(os.listdir(staging_dir), key=lambda name: name == MANIFEST_NAME)
    for name in names:
        shutil.move(os.path.join(staging_dir, name), os.path.join(output_dir, name))
    os.rmdir(staging_dir)


def _looks_like_path(source: str) -> bool:
    """True when a missing source was clearly meant as a path rather than a keyword."""
    return os.sep in source or "/" in source or source.startswith((".", "~")) or "." in source


def _source_choices() -> str:
    """The one-line list of accepted sources."""
    return (
        f"choose one of: {', '.join(KEYWORD_SOURCES)}, a local image folder (train/<class>/, test/<class>/), "
        "a CIFAR-10 binary archive (cifar-10-binary.tar.gz) or a gs:// path"
    )
