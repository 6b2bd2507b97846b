"""The source table: every dataset format data prep reads, by name -> (recognizes, check, read).

A source string is matched against the formats in table order; the first whose ``recognizes``
says yes handles it. A gs:// source is copied into a scratch directory first and then matched
like a local path. Adding a format: write a module with ``recognizes(source)``, ``check(source)``
(cheap: no decoding) and ``read(source, *, name=None, seed=0) -> SourceStream`` (see base.py),
then add it to FORMATS. A format that decodes encoded images (PNG, JPEG ...) also takes
``image_size`` and ``max_image_pixels`` and refuses an image over that cap before decoding it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from components.errors import UserError
from components.sources import cifar_archive, image_folder, keyword
from components.sources.base import ImageSize, SourceStream, checked_max_image_pixels, resized_stream
from components.sources.keyword import KEYWORD_SOURCES


@dataclass(frozen=True)
class SourceFormat:
    """One dataset format: whether a source is in it, a cheap check, and the streaming reader."""

    recognizes: Callable[[str], bool]
    check: Callable[[str], None]
    read: Callable[..., SourceStream]
    # Whether the format decodes encoded images itself: it then resizes while decoding and
    # enforces max_image_pixels (else resized_stream resizes its output).
    decodes_images: bool = False


FORMATS: dict[str, SourceFormat] = {
    "keyword": SourceFormat(keyword.recognizes, keyword.check, keyword.read),
    "image_folder": SourceFormat(image_folder.recognizes, image_folder.check, image_folder.read, decodes_images=True),
    "cifar_archive": SourceFormat(cifar_archive.recognizes, cifar_archive.check, cifar_archive.read),
}


def check_source(source: str) -> None:
    """Cheap validation of a source (keyword, existence, folder layout) so mistakes fail in a second.

    Decodes no images and reads no archive beyond its first header; reading does the full checks.
    A gs:// source is only checked for its form: the machine that launches a pipeline may lack
    the credentials its cluster has.
    """
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"source must be a keyword or a path, got {source!r}; {source_choices()}")
    if source.startswith("gs://"):
        if not source[len("gs://"):].split("/")[0]:
            raise UserError(f"source {source!r} names no bucket; write it as gs://bucket/path")
        return
    if keyword.recognizes(source):
        return
    path = os.path.expanduser(source)
    if not os.path.exists(path):
        if _looks_like_path(source):
            raise UserError(f"source path {source} does not exist; check the path or name a dataset keyword")
        raise UserError(f"unknown source {source!r}; {source_choices()}")
    format_for(path).check(path)


def format_for(source: str) -> SourceFormat:
    """The first format in FORMATS that recognizes ``source``."""
    for source_format in FORMATS.values():
        if source_format.recognizes(source):
            return source_format
    raise UserError(f"unknown source {source!r}; {source_choices()}")


@contextlib.contextmanager
def open_source(
    source: str, *, image_size: ImageSize | None = None, seed: int = 0, max_image_pixels: int | None = None
) -> Iterator[SourceStream]:
    """The source as a stream, valid inside the ``with`` (a gs:// source's scratch copy lives that
    long); ``max_image_pixels`` caps each decoded image (None: DEFAULT_MAX_IMAGE_PIXELS)."""
    max_image_pixels = checked_max_image_pixels(max_image_pixels)
    if source.startswith("gs://"):
        with _scratch_copy(source) as (local_path, name):
            try:
                yield _read(local_path, image_size, seed, max_image_pixels, name=name)
            except (ValueError, FileNotFoundError) as error:
                # Name the gs:// location rather than the scratch copy.
                raise type(error)(str(error).replace(local_path, source.rstrip("/"))) from error
        return
    path = source if keyword.recognizes(source) else os.path.expanduser(source)
    if not keyword.recognizes(source) and not os.path.exists(path):
        raise UserError(f"source path {path} does not exist; check the path")
    yield _read(path, image_size, seed, max_image_pixels)


def _read(source: str, image_size: ImageSize | None, seed: int, max_image_pixels: int, name: str | None = None) -> SourceStream:
    source_format = format_for(source)
    if source_format.decodes_images:
        return source_format.read(source, name=name, seed=seed, image_size=image_size, max_image_pixels=max_image_pixels)
    return resized_stream(source_format.read(source, name=name, seed=seed), image_size)


@contextlib.contextmanager
def _scratch_copy(uri: str) -> Iterator[tuple[str, str]]:
    """Downloads a gs:// image folder or archive into a scratch directory: (local path, name).

    A URI with objects under it is an image folder; otherwise it names one object (an archive).
    """
    from components import storage  # imported here: google-cloud-storage is only needed for gs:// sources

    location = uri.rstrip("/")
    name = posixpath.basename(location)
    with tempfile.TemporaryDirectory(prefix="cnnpipe-source-") as scratch_dir:
        local_path = os.path.join(scratch_dir, name)
        try:
            if storage.list_files(location):
                storage.download_tree(location, local_path)
            else:
                storage.download(location, local_path)
        except (ValueError, FileNotFoundError) as error:
            raise type(error)(str(error).replace(local_path, location)) from error
        yield local_path, name


def _looks_like_path(source: str) -> bool:
    """True when a missing source was clearly meant as a path rather than a keyword."""
    return os.sep in source or "/" in source or source.startswith((".", "~")) or "." in source


def source_choices() -> str:
    """The one-line list of accepted sources."""
    return (
        f"choose one of: {', '.join(KEYWORD_SOURCES)}, a local image folder (<class>/ or train/<class>/ and test/<class>/), "
        "a CIFAR-10 binary archive (cifar-10-binary.tar.gz) or a gs:// path"
    )
