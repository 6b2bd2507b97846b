"""A local image folder, in either of two layouts:
    * ``<root>/train/<class>/...`` and ``<root>/test/<class>/...``: the splits as given;
    * ``<root>/<class>/...`` (no train/ or test/ folder, as photo collections come): a seeded
      HELD_OUT_TEST_FRACTION of each class becomes the test split.
A class folder may hold images in sub-folders (albums); files that are not images (notes,
Thumbs.db) are skipped with one warning, hidden files and folders silently.

Files are decoded with Pillow in a fixed order (classes sorted by name, files sorted by path
within a class), a few at a time. All images end up with one size and one channel count:
    * size: ``image_size`` when given, else the most common size (found by a first pass that
      reads only image headers); other images are resized (bilinear) and counted in
      ``resized_images``, so a surprising number is visible; without ``image_size`` a size
      whose longer side is over DEFAULT_MAX_SIDE is scaled down to it;
    * channels: one channel when every image is grayscale, otherwise RGB (grayscale images are
      replicated into three channels, alpha is dropped; 16-bit images keep their top 8 bits).
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from components.errors import UserError
from components.sources.base import SOURCE_SPLITS, ImageSize, SourceStream, check_labels
from components.sources.splits import stratified_split

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
HELD_OUT_TEST_FRACTION = 0.2
# Without image_size, images are brought down to this longer side (the most common size's aspect
# kept): the zoo's networks are CIFAR-sized, and at a camera's resolution every epoch would be
# thousands of times slower and the shards gigabytes.
DEFAULT_MAX_SIDE = 128

# Pillow modes that carry no colour; any other mode makes the dataset RGB.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# 16-bit grayscale, which Pillow's convert("L") would clip to white above 255.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# Files are opened and decoded by a few threads: file reads and Pillow's decoders release the
# GIL, so the disk and every core stay busy; results are used in file order.
READ_THREADS = 8
READ_AHEAD = 256  # images decoded ahead of the shard writer at most
# EXIF orientations that turn the stored image by 90 degrees, swapping width and height.
EXIF_ORIENTATION_TAG = 0x0112
SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class FolderListing:
    """What listing a folder found: image paths per split and class (both sorted), the files that
    are not images, and the share of each class held out as the test split (0: the folder's own)."""

    files_by_split: dict[str, dict[str, list[str]]]
    skipped_files: list[str]
    test_held_out_fraction: float


def recognizes(path: str) -> bool:
    return os.path.isdir(path)


def check(root: str) -> None:
    """The folder layout (splits, class folders, image extensions), without decoding anything."""
    list_image_folder(root)


def read(root: str, *, image_size: ImageSize | None = None, name: str | None = None, seed: int = 0) -> SourceStream:
    """Lists the folder and reads every image header; the pixels are decoded while streaming."""
    listing = list_image_folder(root, seed)
    if listing.skipped_files:
        logger.warning(
            "skipped %d file(s) that are not images (%s), e.g. %s",
            len(listing.skipped_files), " ".join(IMAGE_EXTENSIONS), listing.skipped_files[0],
        )
    if listing.test_held_out_fraction:
        logger.warning(
            "%s has no train/ and test/ folders: %d%% of each class's images (seed %d) are the test split",
            root, round(100 * listing.test_held_out_fraction), seed,
        )
    files_by_split = listing.files_by_split
    class_names = sorted({class_name for classes in files_by_split.values() for class_name in classes})
    paths = {split: [path for paths in classes.values() for path in paths] for split, classes in files_by_split.items()}
    label_of = {class_name: label for label, class_name in enumerate(class_names)}
    labels = {
        split: np.asarray(
            [label_of[class_name] for class_name, class_paths in classes.items() for _ in class_paths], dtype=np.int32
        )
        for split, classes in files_by_split.items()
    }
    check_labels(name or root, class_names, labels)

    sizes, modes = collections.Counter(), set()
    for size, mode in ordered_map(read_header, [path for split_paths in paths.values() for path in split_paths]):
        sizes[size] += 1
        modes.add(mode)
    # Pillow speaks (width, height); the manifest and image_size speak (height, width).
    common_size = most_common_size(sizes)
    target_size = (image_size[1], image_size[0]) if image_size else within_default_side(common_size)
    target_mode = "L" if modes <= GRAYSCALE_MODES else "RGB"
    resized = sum(count for size, count in sizes.items() if size != target_size)
    if resized:
        if image_size:
            reason = "the requested image_size"
        elif target_size != common_size:
            reason = "the most common size %dx%d scaled to a longer side of %d (--image-size or image_size chooses another)" % (
                *common_size, DEFAULT_MAX_SIDE)
        else:
            reason = "the most common size"
        logger.warning("resizing %d of %d images to %dx%d, %s", resized, sum(sizes.values()), *target_size, reason)

    def chunks() -> Iterator[tuple[str, np.ndarray]]:
        for split in SOURCE_SPLITS:
            for pixels in ordered_map(lambda path: decode_image(path, target_size, target_mode), paths[split]):
                yield split, pixels[np.newaxis]

    width, height = target_size
    return SourceStream(
        name=name or os.path.basename(os.path.normpath(root)),
        class_names=tuple(class_names),
        image_shape=(height, width, 1 if target_mode == "L" else 3),
        labels=labels,
        allow_horizontal_flip=True,
        chunks=chunks,
        resized_images=resized,
        test_held_out_fraction=listing.test_held_out_fraction,
    )


def list_image_folder(root: str, seed: int = 0) -> FolderListing:
    """The folder's images per split and class, checking the layout without decoding anything."""
    layout_hint = f"lay it out as {root}/<class>/*.jpg, or as {root}/train/<class>/ and {root}/test/<class>/"
    skipped: list[str] = []
    present = [split for split in SOURCE_SPLITS if os.path.isdir(os.path.join(root, split))]
    if len(present) == 1:
        missing = next(split for split in SOURCE_SPLITS if split not in present)
        raise UserError(f"image folder {root} has no {missing}/ subfolder; {layout_hint}")
    if not present:
        by_class = _list_classes(root, layout_hint, skipped)
        labels = np.repeat(np.arange(len(by_class)), [len(paths) for paths in by_class.values()])
        paths = [path for class_paths in by_class.values() for path in class_paths]
        kept, held_out = stratified_split(labels, HELD_OUT_TEST_FRACTION, seed)
        if not len(held_out):
            raise UserError(
                f"image folder {root} has too few images to hold out a test split ({HELD_OUT_TEST_FRACTION:.0%} of each "
                f"class rounds to none); add images, or give the splits as {root}/train/<class>/ and {root}/test/<class>/"
            )
        class_names = list(by_class)
        files_by_split = {split: {name: [] for name in class_names} for split in SOURCE_SPLITS}
        for split, indices in (("train", kept), ("test", held_out)):
            for index in indices:  # sorted, so each class keeps its order
                files_by_split[split][class_names[labels[index]]].append(paths[index])
        return FolderListing(files_by_split, skipped, test_held_out_fraction=HELD_OUT_TEST_FRACTION)

    files_by_split = {split: _list_classes(os.path.join(root, split), layout_hint, skipped) for split in SOURCE_SPLITS}
    missing_in_train = sorted(set(files_by_split["test"]) - set(files_by_split["train"]))
    if missing_in_train:
        raise UserError(
            f"class {missing_in_train[0]!r} has test images but no folder in {os.path.join(root, 'train')}; "
            "add training images for it or remove its test folder"
        )
    return FolderListing(files_by_split, skipped, test_held_out_fraction=0.0)


def _list_classes(directory: str, layout_hint: str, skipped: list[str]) -> dict[str, list[str]]:
    """Sorted image paths of each class folder in ``directory``; files that are not images are
    appended to ``skipped``, an image outside a class folder or a class without images is an error."""
    classes = {}
    for entry in _visible_entries(directory):
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
            classes[entry] = _list_class_folder(path, skipped)
        elif entry.lower().endswith(IMAGE_EXTENSIONS):
            raise UserError(f"{path} is not inside a class folder; move it into {directory}/<class>/")
        else:
            skipped.append(path)
    if not classes:
        raise UserError(f"no images found: {directory} has no class folders; {layout_hint}")
    return classes


def _list_class_folder(class_dir: str, skipped: list[str]) -> list[str]:
    """Sorted image paths under one class folder, its sub-folders included."""
    images = []
    for directory, subdirectories, files in os.walk(class_dir):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in files:
            if not name.startswith("."):
                path = os.path.join(directory, name)
                (images if name.lower().endswith(IMAGE_EXTENSIONS) else skipped).append(path)
    if not images:
        raise UserError(f"class folder {class_dir} has no images; add images to it or remove it")
    return sorted(images)


def _visible_entries(directory: str) -> list[str]:
    """Sorted names in a directory, skipping hidden ones (.DS_Store, editor files)."""
    return sorted(entry for entry in os.listdir(directory) if not entry.startswith("."))


def ordered_map(function: Callable, items: list) -> Iterator:
    """function(item) for each item, in order, computed by READ_THREADS threads at most
    READ_AHEAD items ahead of the consumer (so memory stays bounded on any folder size)."""
    with ThreadPoolExecutor(READ_THREADS) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= READ_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def read_header(path: str) -> tuple[tuple[int, int], str]:
    """(width, height) as displayed and the Pillow mode, from the header alone."""
    with open_image(path) as image:
        return oriented_size(image), image.mode


def open_image(path: str):
    """Open an image lazily (header only); a corrupt or non-image file is a one-line UserError."""
    from PIL import Image

    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read image {path} ({error}); remove or replace the file") from error


def oriented_size(image) -> tuple[int, int]:
    """(width, height) as displayed, honouring a camera's EXIF rotation."""
    width, height = image.size
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION_TAG)
    except (OSError, SyntaxError, ValueError):
        orientation = None  # broken EXIF: use the stored orientation
    return (height, width) if orientation in SWAPPED_ORIENTATIONS else (width, height)


def most_common_size(sizes: collections.Counter) -> tuple[int, int]:
    """The (width, height) most images have; ties go to the larger area, then the wider size."""
    return max(sizes, key=lambda size: (sizes[size], size[0] * size[1], size))


def within_default_side(size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, so that its longer side is at most DEFAULT_MAX_SIDE."""
    width, height = size
    scale = DEFAULT_MAX_SIDE / max(width, height)
    if scale >= 1:
        return size
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_image(path: str, target_size: tuple[int, int], target_mode: str) -> np.ndarray:
    """Decode one image as uint8 [H, W, C] in ``target_mode`` and ``target_size`` (width, height)."""
    from PIL import Image, ImageOps

    with open_image(path) as image:
        try:
            # A JPEG much larger than the target decodes at 1/2, 1/4 or 1/8 scale (still at least
            # the target size), so a camera photo is not decoded in full to be shrunk. Sizes as stored.
            width, height = target_size
            stored = (height, width) if oriented_size(image) != image.size else (width, height)
            image.draft(target_mode, stored)
            upright = ImageOps.exif_transpose(image)
            if upright.mode in SIXTEEN_BIT_MODES:
                upright = Image.fromarray((np.asarray(upright, dtype=np.uint16) >> 8).astype(np.uint8))
            converted = upright.convert(target_mode)
            if converted.size != target_size:
                converted = converted.resize(target_size, Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as error:
            raise UserError(f"cannot decode image {path} ({error}); remove or replace the file") from error
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels
