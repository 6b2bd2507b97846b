"""A local image folder, in either of two layouts:
    * ``<root>/train/<class>/...`` and ``<root>/test/<class>/...``: the splits as given;
    * ``<root>/<class>/...`` (no train/ or test/ folder, as photo collections come): a seeded
      HELD_OUT_TEST_FRACTION of each class becomes the test split.
A class folder may hold images in sub-folders (albums); files that are not images (notes,
Thumbs.db) are skipped with one warning, hidden files and folders silently. A symbolic link is
followed only when it points inside the folder: one leading out of it is refused (a dataset
folder from elsewhere must not make prep read other files of the machine).

Each file is read and decoded once, with Pillow, in a fixed order (classes sorted by name, files
sorted by path within a class). All images end up with one size and one channel count:
    * size: ``image_size`` when given, else the most common size among the headers of up to
      SIZE_SAMPLE_IMAGES images spread evenly over the folder (all of them in a smaller folder);
      other images are resized (bilinear) and counted in ``resized_images``, so a surprising
      number is visible; without ``image_size`` a size whose longer side is over
      DEFAULT_MAX_SIDE is scaled down to it;
    * channels: one channel when every image is grayscale, otherwise RGB (grayscale images are
      replicated into three channels, alpha is dropped; 16-bit images keep their top 8 bits).
      One colour image makes a folder RGB, so when the sample is all grayscale every other
      file's header is read too (a second read, only for grayscale folders).
Decoding refuses an image over ``max_image_pixels`` (width x height, from its header, before
any pixel is decoded) and runs in worker processes, as many as the cores this process may use
and the memory for that many images at the cap allow.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from components import resources
from components.errors import UserError
from components.sources.base import (
    MAX_IMAGE_PIXELS_SETTING,
    SOURCE_SPLITS,
    ImageSize,
    SourceStream,
    check_labels,
    checked_max_image_pixels,
)
from components.sources.splits import stratified_split

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The Pillow decoders of those formats, the only ones tried on a file from the folder (whatever
# its name): no other plugin (EPS through Ghostscript, for one) ever sees a dataset's bytes.
PILLOW_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP")
HELD_OUT_TEST_FRACTION = 0.2
# Without image_size, images are brought down to this longer side (the most common size's aspect
# kept): the zoo's networks are CIFAR-sized, and at a camera's resolution every epoch would be
# thousands of times slower and the shards gigabytes.
DEFAULT_MAX_SIDE = 128
# Headers read (a second read of those files) to find the most common size before decoding:
# enough to find the size of any folder whose images mostly share one; the whole folder's sizes
# are tallied while decoding, and a sample that chose differently is reported.
SIZE_SAMPLE_IMAGES = 1000

# Pillow modes that carry no colour; any other mode makes the dataset RGB.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# 16-bit grayscale, which Pillow's convert("L") would clip to white above 255.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# EXIF orientations that turn the stored image by 90 degrees, swapping width and height.
EXIF_ORIENTATION_TAG = 0x0112
SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})

# Decoding runs in worker processes, not threads: for small images Pillow's per-image Python
# work (parsing the file's markers, setting up the decoder) outweighs the decoding itself and
# holds the GIL, so threads do not use a second core (measured in BENCHMARKS.md, "Data prep").
# A folder this small is decoded in the calling process: starting the workers would cost more.
IN_PROCESS_IMAGES = 512
# Files per task sent to a worker: up to MAX_CHUNK_IMAGES, fewer when their decoded pixels would
# pass CHUNK_BYTES; each worker has at most CHUNKS_AHEAD_PER_DECODER tasks queued or done ahead
# of the shard writer, so memory stays bounded on any folder size.
MAX_CHUNK_IMAGES = 256
CHUNK_BYTES = 4 * 1024 * 1024
CHUNKS_AHEAD_PER_DECODER = 2
# Workers are also limited by memory: each may hold an image at max_image_pixels in up to three
# copies at once (decoded, turned upright, converted) of up to 4 bytes a pixel (RGBA, CMYK and
# 32-bit modes), and together they may use this share of the memory available to the step.
DECODED_BYTES_PER_PIXEL = 3 * 4
DECODER_MEMORY_SHARE = 0.5
# Files up to this size are read whole in one call (see open_image).
WHOLE_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FolderListing:
    """What listing a folder found: image paths per split and class (both sorted), the files that
    are not images, and the share of each class held out as the test split (0: the folder's own)."""

    files_by_split: dict[str, dict[str, list[str]]]
    skipped_files: list[str]
    test_held_out_fraction: float


@dataclass(frozen=True)
class Decoding:
    """How every image is decoded: Pillow's (width, height) and mode, and the pixel cap."""

    size: tuple[int, int]
    mode: str
    max_image_pixels: int


def recognizes(path: str) -> bool:
    return os.path.isdir(path)


def check(root: str) -> None:
    """The folder layout (splits, class folders, image extensions, links), without decoding anything."""
    list_image_folder(root)


def read(
    root: str,
    *,
    image_size: ImageSize | None = None,
    name: str | None = None,
    seed: int = 0,
    max_image_pixels: int | None = None,
) -> SourceStream:
    """Lists the folder and chooses the images' size and mode; the pixels are decoded while streaming."""
    max_image_pixels = checked_max_image_pixels(max_image_pixels)
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

    all_paths = [path for split in SOURCE_SPLITS for path in paths[split]]
    decoders = decoder_count(len(all_paths), max_image_pixels)
    decoding = choose_decoding(all_paths, image_size, max_image_pixels, decoders)
    width, height = decoding.size
    channels = 1 if decoding.mode == "L" else 3
    chunk_images = max(1, min(MAX_CHUNK_IMAGES, CHUNK_BYTES // (width * height * channels)))
    tasks = [(split, chunk) for split in SOURCE_SPLITS for chunk in chunked(paths[split], chunk_images)]

    def chunks() -> Iterator[tuple[str, np.ndarray]]:
        sizes: collections.Counter = collections.Counter()
        decoded = in_order(decode_chunk, [(chunk, decoding) for _, chunk in tasks], decoders, max_image_pixels)
        for (split, _), (pixels, chunk_sizes) in zip(tasks, decoded):
            sizes.update(chunk_sizes)
            yield split, pixels
        stream.resized_images = report_resizing(sizes, decoding.size, image_size is not None)

    stream = SourceStream(
        name=name or os.path.basename(os.path.normpath(root)),
        class_names=tuple(class_names),
        image_shape=(height, width, channels),
        labels=labels,
        allow_horizontal_flip=True,
        chunks=chunks,
        test_held_out_fraction=listing.test_held_out_fraction,
    )
    return stream


def choose_decoding(paths: list[str], image_size: ImageSize | None, max_image_pixels: int, decoders: int) -> Decoding:
    """The size and mode every image is decoded to, from the headers of a sample of ``paths``
    (and of all of them when the sample is all grayscale: one colour image makes the folder RGB)."""
    sample = sampled(paths, SIZE_SAMPLE_IMAGES)
    sizes, modes = collections.Counter(), set()
    with pillow_pixel_limit(max_image_pixels):
        for path in sample:
            size, mode = read_header(path, max_image_pixels)
            sizes[size] += 1
            modes.add(mode)
    if modes <= GRAYSCALE_MODES and len(sample) < len(paths):
        mode_tasks = [(chunk, max_image_pixels) for chunk in chunked(paths, MAX_CHUNK_IMAGES)]
        for chunk_modes in in_order(read_modes, mode_tasks, decoders, max_image_pixels):
            modes |= chunk_modes
    # Pillow speaks (width, height); the manifest and image_size speak (height, width).
    return Decoding(
        size=(image_size[1], image_size[0]) if image_size else within_default_side(most_common_size(sizes)),
        mode="L" if modes <= GRAYSCALE_MODES else "RGB",
        max_image_pixels=max_image_pixels,
    )


def report_resizing(sizes: collections.Counter, target_size: tuple[int, int], size_given: bool) -> int:
    """Warns about the images that were resized (and a sample that chose another size than the
    whole folder would have); returns how many were resized."""
    resized = sum(count for size, count in sizes.items() if size != target_size)
    if not size_given and within_default_side(most_common_size(sizes)) != target_size:
        logger.warning(
            "the sampled headers chose %dx%d, but the folder's most common size is %dx%d; pass image_size to choose",
            *target_size, *most_common_size(sizes),
        )
    if resized:
        if size_given:
            reason = "the requested image_size"
        elif target_size != most_common_size(sizes):
            reason = "the most common size %dx%d scaled to a longer side of %d (--image-size or image_size chooses another)" % (
                *most_common_size(sizes), DEFAULT_MAX_SIDE)
        else:
            reason = "the most common size"
        logger.warning("resized %d of %d images to %dx%d, %s", resized, sum(sizes.values()), *target_size, reason)
    return resized


def list_image_folder(root: str, seed: int = 0) -> FolderListing:
    """The folder's images per split and class, checking the layout and links without decoding anything."""
    layout_hint = f"lay it out as {root}/<class>/*.jpg, or as {root}/train/<class>/ and {root}/test/<class>/"
    folder = DatasetFolder(root)
    skipped: list[str] = []
    present = [split for split in SOURCE_SPLITS if os.path.isdir(os.path.join(root, split))]
    if len(present) == 1:
        missing = next(split for split in SOURCE_SPLITS if split not in present)
        raise UserError(f"image folder {root} has no {missing}/ subfolder; {layout_hint}")
    if not present:
        by_class = _list_classes(folder, root, layout_hint, skipped)
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

    for split in SOURCE_SPLITS:
        folder.check_link(os.path.join(root, split))
    files_by_split = {split: _list_classes(folder, os.path.join(root, split), layout_hint, skipped) for split in SOURCE_SPLITS}
    missing_in_train = sorted(set(files_by_split["test"]) - set(files_by_split["train"]))
    if missing_in_train:
        raise UserError(
            f"class {missing_in_train[0]!r} has test images but no folder in {os.path.join(root, 'train')}; "
            "add training images for it or remove its test folder"
        )
    return FolderListing(files_by_split, skipped, test_held_out_fraction=0.0)


class DatasetFolder:
    """The dataset folder's boundary: a symbolic link inside it may point anywhere inside it, not out."""

    def __init__(self, root: str):
        self.root = root
        self.real_root = os.path.realpath(root)

    def check_link(self, path: str) -> str:
        """``path``, or for a symbolic link the file it points to; a link leading out of the folder
        is a UserError naming it."""
        if not os.path.islink(path):
            return path
        target = os.path.realpath(path)
        if os.path.commonpath([self.real_root, target]) != self.real_root:
            raise UserError(
                f"{path} is a symbolic link to {target}, outside the image folder {self.root}; "
                "copy the file into the folder or remove the link"
            )
        return target


def _list_classes(folder: DatasetFolder, directory: str, layout_hint: str, skipped: list[str]) -> dict[str, list[str]]:
    """Sorted image paths of each class folder in ``directory``; files that are not images are
    appended to ``skipped``, an image outside a class folder or a class without images is an error."""
    classes = {}
    for entry in _visible_entries(directory):
        path = os.path.join(directory, entry)
        folder.check_link(path)
        if os.path.isdir(path):
            classes[entry] = _list_class_folder(folder, path, skipped)
        elif entry.lower().endswith(IMAGE_EXTENSIONS):
            raise UserError(f"{path} is not inside a class folder; move it into {directory}/<class>/")
        else:
            skipped.append(path)
    if not classes:
        raise UserError(f"no images found: {directory} has no class folders; {layout_hint}")
    return classes


def _list_class_folder(folder: DatasetFolder, class_dir: str, skipped: list[str]) -> list[str]:
    """Sorted image paths under one class folder, its sub-folders included (a link to a file
    inside the dataset folder listed as that file; linked sub-folders are not walked)."""
    images = []
    for directory, subdirectories, files in os.walk(class_dir):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in subdirectories:
            folder.check_link(os.path.join(directory, name))
        for name in files:
            if not name.startswith("."):
                path = os.path.join(directory, name)
                (images if name.lower().endswith(IMAGE_EXTENSIONS) else skipped).append(path)
    if not images:
        raise UserError(f"class folder {class_dir} has no images; add images to it or remove it")
    return [folder.check_link(path) for path in sorted(images)]


def _visible_entries(directory: str) -> list[str]:
    """Sorted names in a directory, skipping hidden ones (.DS_Store, editor files)."""
    return sorted(entry for entry in os.listdir(directory) if not entry.startswith("."))


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def sampled(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (all of them when there are no more)."""
    if len(items) <= count:
        return items
    return [items[index] for index in np.linspace(0, len(items) - 1, count).round().astype(int)]


def chunked(items: list, size: int) -> list[list]:
    """``items`` cut into consecutive lists of ``size`` (the last one shorter)."""
    return [items[start:start + size] for start in range(0, len(items), size)]


def decoder_count(image_count: int, max_image_pixels: int) -> int:
    """Worker processes to decode ``image_count`` images with: 0 (this process) for a small
    folder, else as many as this process's cores and DECODER_MEMORY_SHARE of its available memory
    allow at max_image_pixels, at least one."""
    if image_count <= IN_PROCESS_IMAGES:
        return 0
    cores = resources.available_cores()
    memory = resources.available_memory_bytes()
    by_memory = int(DECODER_MEMORY_SHARE * memory // (max_image_pixels * DECODED_BYTES_PER_PIXEL))
    count = max(1, min(cores, by_memory))
    logger.info(
        "decoding with %d process(es): %d core(s); %.0f MB available fits %d at %s pixels per image",
        count, cores, memory / 1e6, by_memory, f"{max_image_pixels:,}",
    )
    return count


def in_order(function: Callable, tasks: list[tuple], decoders: int, max_image_pixels: int) -> Iterator:
    """function(*task) for each task, in order: in this process when ``decoders`` is 0, else in
    that many worker processes, at most CHUNKS_AHEAD_PER_DECODER tasks each ahead of the consumer."""
    if not decoders:
        for task in tasks:
            with pillow_pixel_limit(max_image_pixels):
                result = function(*task)
            yield result
        return
    # forkserver: workers start from a small clean process, not from a copy of this one (which
    # may hold threads, TensorFlow or a test runner), with this module already imported.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(decoders, mp_context=context, initializer=set_pillow_pixel_limit, initargs=(max_image_pixels,))
    try:
        pending: collections.deque = collections.deque()
        for task in tasks:
            pending.append(pool.submit(function, *task))
            if len(pending) >= decoders * CHUNKS_AHEAD_PER_DECODER:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def set_pillow_pixel_limit(max_image_pixels: int) -> None:
    """Pillow's own decompression-bomb limit set to the cap, and its warning between one and two
    times the limit silenced: open_image refuses those images with the project's one-line error."""
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_image_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


@contextlib.contextmanager
def pillow_pixel_limit(max_image_pixels: int) -> Iterator[None]:
    """set_pillow_pixel_limit for the duration of a ``with`` in this process, then restored."""
    import warnings

    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            set_pillow_pixel_limit(max_image_pixels)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def decode_chunk(paths: list[str], decoding: Decoding) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """uint8 images [k, H, W, C] of ``paths`` as ``decoding`` says, and each file's (width, height)
    as displayed before resizing."""
    width, height = decoding.size
    pixels = np.empty((len(paths), height, width, 1 if decoding.mode == "L" else 3), dtype=np.uint8)
    sizes = []
    for index, path in enumerate(paths):
        pixels[index], size = decode_image(path, decoding)
        sizes.append(size)
    return pixels, sizes


def read_modes(paths: list[str], max_image_pixels: int) -> set[str]:
    """The Pillow modes of ``paths``, from their headers."""
    return {read_header(path, max_image_pixels)[1] for path in paths}


def read_header(path: str, max_image_pixels: int) -> tuple[tuple[int, int], str]:
    """(width, height) as displayed and the Pillow mode, from the header alone."""
    with open_image(path, max_image_pixels) as image:
        return oriented_size(image), image.mode


@contextlib.contextmanager
def open_image(path: str, max_image_pixels: int):
    """The image, opened lazily (header only) and within the pixel cap; a missing, corrupt or
    non-image file, one over the cap, or a path that became a symbolic link after listing (it
    is opened with O_NOFOLLOW) is a one-line UserError."""
    from PIL import Image

    try:
        image_file = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")
    except OSError as error:
        raise UserError(f"cannot read image {path} ({error.strerror}); remove or replace the file") from error
    with image_file:
        # A small file is read whole at once (cheaper than Pillow's many small reads); a large
        # one as Pillow asks, so that no more than its header is read before the cap is checked.
        whole = os.fstat(image_file.fileno()).st_size <= WHOLE_FILE_BYTES
        try:
            image = Image.open(io.BytesIO(image_file.read()) if whole else image_file, formats=PILLOW_FORMATS)
        except Image.DecompressionBombError:
            raise UserError(over_cap_message(path, "its header declares over twice that", max_image_pixels)) from None
        except Image.UnidentifiedImageError as error:
            # Pillow's own message names the in-memory buffer, not the file.
            readable = ", ".join(PILLOW_FORMATS[:-1]) + " or " + PILLOW_FORMATS[-1]
            raise UserError(f"cannot read image {path} (not a {readable} image); remove or replace the file") from error
        except (OSError, SyntaxError, ValueError) as error:
            raise UserError(f"cannot read image {path} ({error}); remove or replace the file") from error
        with image:
            width, height = image.size
            if width * height > max_image_pixels:
                raise UserError(over_cap_message(path, f"{width}x{height} = {width * height:,} pixels", max_image_pixels))
            yield image


def over_cap_message(path: str, detail: str, max_image_pixels: int) -> str:
    """The one line that refuses an image over the cap; ``detail`` says how much it holds."""
    return (
        f"image {path} ({detail}) is over the decoding cap of {max_image_pixels:,} pixels "
        f"({MAX_IMAGE_PIXELS_SETTING}); shrink the image, remove it, or raise the cap"
    )


def oriented_size(image) -> tuple[int, int]:
    """(width, height) as displayed, honouring a camera's EXIF rotation."""
    width, height = image.size
    return (height, width) if exif_orientation(image) in SWAPPED_ORIENTATIONS else (width, height)


def exif_orientation(image) -> int | None:
    """The EXIF orientation tag (1: as stored; 2-8: mirrored and/or turned), None without one."""
    try:
        return image.getexif().get(EXIF_ORIENTATION_TAG)
    except (OSError, SyntaxError, ValueError):
        return None  # broken EXIF: use the stored orientation


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


def decode_image(path: str, decoding: Decoding) -> tuple[np.ndarray, tuple[int, int]]:
    """One image as uint8 [H, W, C] in ``decoding``'s mode and size, and its (width, height) as displayed."""
    from PIL import Image, ImageOps

    with open_image(path, decoding.max_image_pixels) as image:
        size = oriented_size(image)
        try:
            # A JPEG much larger than the target decodes at 1/2, 1/4 or 1/8 scale (still at least
            # the target size), so a camera photo is not decoded in full to be shrunk. Sizes as stored.
            width, height = decoding.size
            image.draft(decoding.mode, (height, width) if size != image.size else (width, height))
            # Each step copies the pixels, so it is skipped where it would change nothing.
            upright = image if exif_orientation(image) in (None, 1) else ImageOps.exif_transpose(image)
            if upright.mode in SIXTEEN_BIT_MODES:
                upright = Image.fromarray((np.asarray(upright, dtype=np.uint16) >> 8).astype(np.uint8))
            converted = upright if upright.mode == decoding.mode else upright.convert(decoding.mode)
            if converted.size != decoding.size:
                converted = converted.resize(decoding.size, Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.uint8)
        except Image.DecompressionBombError:  # Pillow's own check of a later frame or tile, at the same cap
            raise UserError(over_cap_message(path, "a part of it declares over twice that", decoding.max_image_pixels)) from None
        except (OSError, SyntaxError, ValueError) as error:
            raise UserError(f"cannot decode image {path} ({error}); remove or replace the file") from error
    return (pixels[..., np.newaxis] if pixels.ndim == 2 else pixels), size
