"""One interface over local paths and ``gs://bucket/key`` URIs.

Every function takes either a local path or a GCS URI and hands it to its back end:

    local.py       files on this machine (atomic renames, content generations, lock files)
    gcs.py         objects through google-cloud-storage (client, transfers, progress of large ones)
    retries.py     which GCS failures are transient, and the backoff within the retry budget
    checksums.py   size and CRC32C/MD5 checks of every transfer
    uris.py        gs:// URIs: which back end, bucket and key, joining names

Failures come in two kinds:
- transient (5xx, 429, 408, timeouts, connection reset/refused, a credentials refresh that
  failed, a checksum mismatch after a transfer): retried with exponential backoff, waiting at most
  ``CNNPIPE_STORAGE_RETRY_SECONDS`` (default 30 s) in all between the attempts of one call, then
  a ``StorageUnavailableError`` naming the URI: an outage, never a user mistake. Large uploads
  resume chunk by chunk (gcs.py);
- permanent (no bucket, 401/403, 400): a ``StorageError`` at once; a missing object is a
  ``FileNotFoundError``. Both carry a one-line message that names the URI.

Writes are atomic: a local file is written to a temporary file beside it and renamed; a GCS
object appears only when its single upload completes. ``write_bytes(..., if_generation_match=)``
is a compare-and-swap: GCS enforces it on the server (412 -> ``PreconditionFailedError``); for
local files it is done under an exclusive lock on a ``.<name>.lock`` file beside the target,
and a local file's generation is derived from its content. The GCS emulator used by the tests
ignores preconditions; ``components.registry`` stays correct without them.
"""

from __future__ import annotations

import json
import os

from components.errors import PreconditionFailedError, StorageError, StorageUnavailableError, UserError
from components.storage import gcs, local
from components.storage.retries import RETRY_SECONDS_ENVIRONMENT_VARIABLE, retry_seconds
from components.storage.uris import GCS_SCHEME, is_gcs, join, split_gcs_uri

__all__ = [
    "GCS_SCHEME", "RETRY_SECONDS_ENVIRONMENT_VARIABLE", "PreconditionFailedError", "StorageError",
    "StorageUnavailableError", "copy", "delete", "download", "download_tree", "exists", "generation",
    "is_directory", "is_gcs", "join", "list_files", "read_bytes", "read_json", "read_text",
    "read_with_generation", "retry_seconds", "split_gcs_uri", "upload", "upload_tree", "write_bytes",
    "write_json", "write_text",
]


def _back_end(uri: str):
    """The module that serves ``uri``: gcs for ``gs://`` URIs, local for everything else."""
    return gcs if is_gcs(uri) else local


# --------------------------------------------------------------------------- small objects


def exists(uri: str) -> bool:
    """Whether a file/object or a directory/prefix with at least one object exists at ``uri``."""
    return _back_end(uri).exists(uri)


def is_directory(uri: str) -> bool:
    """Whether ``uri`` is a local directory or a GCS prefix with at least one object under it."""
    return _back_end(uri).is_directory(uri)


def read_bytes(uri: str) -> bytes:
    """The whole content of a file/object."""
    return _back_end(uri).read_bytes(uri)


def read_with_generation(uri: str) -> tuple[bytes, int]:
    """Content and generation of one version of a file/object (for a later compare-and-swap)."""
    return _back_end(uri).read_with_generation(uri)


def write_bytes(uri: str, data: bytes, if_generation_match: int | None = None) -> int:
    """Write a whole file/object atomically; returns its new generation.

    ``if_generation_match``: write only if the current generation is this one (0: only if absent),
    else ``PreconditionFailedError``. A retried conditional GCS write whose first attempt landed
    reports a precondition failure too: callers re-read and find their own write.
    """
    if isinstance(data, str):
        raise UserError(f"write_bytes got text for {uri}; use write_text or encode it first")
    return _back_end(uri).write_bytes(uri, data, if_generation_match=if_generation_match)


def read_text(uri: str) -> str:
    """A UTF-8 text file/object."""
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str, if_generation_match: int | None = None) -> int:
    """Write UTF-8 text atomically; returns the new generation."""
    return write_bytes(uri, text.encode("utf-8"), if_generation_match=if_generation_match)


def read_json(uri: str):
    """A JSON file/object; a parse error names the URI."""
    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{uri} is not valid JSON ({error}); rewrite or remove it") from None


def write_json(uri: str, value, if_generation_match: int | None = None) -> int:
    """Write a value as indented JSON atomically; returns the new generation."""
    return write_text(uri, json.dumps(value, indent=2) + "\n", if_generation_match=if_generation_match)


def generation(uri: str) -> int:
    """The current generation of a file/object, 0 when it does not exist."""
    return _back_end(uri).generation(uri)


def delete(uri: str) -> None:
    """Remove a file/object; a missing one is fine."""
    _back_end(uri).delete(uri)


def list_files(prefix: str) -> list[str]:
    """Relative names (``a/b.npy``) of all files/objects under a directory or prefix, sorted."""
    return _back_end(prefix).list_files(prefix)


# --------------------------------------------------------------------------- single files


def download(uri: str, local_path: str) -> str:
    """Copy one file/object to ``local_path`` atomically, verified by size and checksum; returns the path."""
    if is_gcs(uri):
        return gcs.download(uri, local_path)
    local.copy(uri, local_path)
    return local_path


def upload(local_path: str, uri: str) -> None:
    """Copy one local file to a file/object atomically, verified by size and checksum."""
    if not os.path.isfile(local_path):
        raise FileNotFoundError(f"no file to upload at {local_path}; check the path")
    if is_gcs(uri):
        gcs.upload(local_path, uri)
    else:
        local.copy(local_path, uri)


def copy(source: str, destination: str) -> None:
    """Copy one file/object between any two of: local path, ``gs://`` URI (server-side for GCS to GCS)."""
    if not is_gcs(source):
        upload(source, destination)
    elif not is_gcs(destination):
        download(source, destination)
    else:
        gcs.copy(source, destination)


# --------------------------------------------------------------------------- trees


def download_tree(prefix: str, local_dir: str) -> list[str]:
    """Copy every file under a directory/prefix into ``local_dir``; returns the relative names."""
    names = list_files(prefix)
    if not names:
        raise FileNotFoundError(f"nothing to download under {prefix}; check the path")
    for name in names:
        download(join(prefix, name), os.path.join(local_dir, *name.split("/")))
    return names


def upload_tree(local_dir: str, prefix: str) -> list[str]:
    """Copy every file under ``local_dir`` to a directory/prefix; returns the relative names."""
    names = local.list_files(local_dir)
    if not names:
        raise FileNotFoundError(f"no files to upload under {local_dir}; check the path")
    for name in names:
        upload(os.path.join(local_dir, *name.split("/")), join(prefix, name))
    return names
