"""What every dataset source format hands to data prep: a stream of images, split by split.

A source is read in two steps so that no split has to be held in memory:
    1. opening it reads what is cheap (class names, every label, the image shape) and checks it;
    2. ``chunks()`` then yields the pixels in the same order as the labels, a few images at a time.
Data prep decides the validation split from the labels alone, then routes each streamed image to
its split's shard writer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from components import checks
from components.errors import UserError

SOURCE_SPLITS = ("train", "test")

# (height, width) in pixels.
ImageSize = tuple[int, int]

# The largest image (width x height, in pixels) a source decodes unless max_image_pixels says
# otherwise: a 64-megapixel camera photo passes; a decompression bomb (a small PNG that claims
# 50,000 x 50,000 pixels) is refused from its header, before its pixels are decoded.
DEFAULT_MAX_IMAGE_PIXELS = 64 * 1024 * 1024
MAX_IMAGE_PIXELS_SETTING = "max_image_pixels (--max-image-pixels)"


@dataclass(eq=False)
class SourceStream:
    """An opened source.

    Attributes:
        name: dataset name recorded in the manifest (a folder's basename, "cifar10", ...).
        class_names: label i is class_names[i].
        image_shape: (height, width, channels) of every streamed image.
        labels: int32 labels per source split ("train", "test"), in stream order.
        allow_horizontal_flip: whether mirrored images are still valid examples.
        resized_images: how many images were resized to image_shape; final once chunks() is
            exhausted (an image folder counts them while decoding).
        test_held_out_fraction: the share of each class the reader held out as the test split
            (seeded), for sources without one of their own; 0 when the source gave the test split.
        chunks: yields (split, uint8 images [k, H, W, C]) in label order, split by split or mixed.
    """

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    labels: dict[str, np.ndarray]
    allow_horizontal_flip: bool
    chunks: Callable[[], Iterator[tuple[str, np.ndarray]]]
    resized_images: int = 0
    test_held_out_fraction: float = 0.0


def checked_image_size(image_size) -> ImageSize | None:
    """``image_size`` (None, an int, or (height, width)) as (height, width), else a UserError."""
    if image_size is None:
        return None
    size = (image_size, image_size) if checks.is_integer(image_size) else image_size
    try:
        height, width = size
    except (TypeError, ValueError):
        height = width = None
    if not all(checks.is_integer(side) and side > 0 for side in (height, width)):
        raise UserError(f"image_size must be a positive integer or (height, width), got {image_size!r}; e.g. 32 or (224, 224)")
    return int(height), int(width)


def checked_max_image_pixels(max_image_pixels) -> int:
    """``max_image_pixels`` (None for DEFAULT_MAX_IMAGE_PIXELS) as a positive int, else a UserError."""
    if max_image_pixels is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    return checks.integer(MAX_IMAGE_PIXELS_SETTING, max_image_pixels, minimum=1, hint=f"e.g. {DEFAULT_MAX_IMAGE_PIXELS}")


def resize_images(images: np.ndarray, size: ImageSize) -> np.ndarray:
    """uint8 images [k, H, W, C] resized (bilinear, with Pillow) to [k, height, width, C]."""
    from PIL import Image

    height, width = size
    resized = np.empty((len(images), height, width, images.shape[-1]), dtype=np.uint8)
    for index, pixels in enumerate(images):
        single_channel = pixels.shape[-1] == 1
        picture = Image.fromarray(pixels[..., 0] if single_channel else pixels)
        array = np.asarray(picture.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
        resized[index] = array[..., np.newaxis] if single_channel else array
    return resized


def resized_stream(stream: SourceStream, size: ImageSize | None) -> SourceStream:
    """``stream`` with every image resized to ``size`` while streaming (unchanged when it already fits)."""
    if size is None or tuple(stream.image_shape[:2]) == tuple(size):
        return stream

    def chunks() -> Iterator[tuple[str, np.ndarray]]:
        for split, images in stream.chunks():
            yield split, resize_images(images, size)

    return dataclasses.replace(
        stream,
        image_shape=(*size, stream.image_shape[2]),
        chunks=chunks,
        resized_images=sum(len(labels) for labels in stream.labels.values()),
    )


def check_labels(name: str, class_names, labels: dict[str, np.ndarray]) -> None:
    """Both source splits non-empty and every label within the classes."""
    for split in SOURCE_SPLITS:
        split_labels = labels[split]
        if not len(split_labels):
            raise UserError(f"dataset {name} has no {split} images; add some to the source")
        if split_labels.min() < 0 or split_labels.max() >= len(class_names):
            raise UserError(
                f"dataset {name} {split} split has labels outside 0..{len(class_names) - 1}; fix the source's labels"
            )
