"""The local back end: files on this machine's filesystem.

Writes go to a temporary file beside the target and are renamed over it (components/atomic.py).
A file's generation is derived from its content, and a conditional write (``if_generation_match``)
holds an exclusive lock on a ``.<name>.lock`` file beside the target while it compares and writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil

from components import atomic
from components.errors import PreconditionFailedError

# Block size for streaming copies (bytes).
COPY_BLOCK_BYTES = 1024 * 1024


def content_generation(data: bytes) -> int:
    """A local file's generation: 63 bits of its SHA-256, never 0 (0 means 'absent', as on GCS)."""
    return (int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1) | 1


def generation(path: str) -> int:
    """Generation of a local file, 0 when it does not exist."""
    try:
        with open(path, "rb") as file:
            return content_generation(file.read())
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def lock(path: str):
    """Hold an exclusive lock on ``.<name>.lock`` beside ``path`` (threads and processes alike)."""
    import fcntl

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    lock_path = os.path.join(directory, f".{os.path.basename(path)}.lock")
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def exists(path: str) -> bool:
    return os.path.exists(path)


def is_directory(path: str) -> bool:
    return os.path.isdir(path)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def read_with_generation(path: str) -> tuple[bytes, int]:
    data = read_bytes(path)
    return data, content_generation(data)


def write_bytes(path: str, data: bytes, if_generation_match: int | None = None) -> int:
    if if_generation_match is None:
        atomic.write_file(path, lambda file: file.write(data))
        return content_generation(data)
    with lock(path):
        current = generation(path)
        if current != if_generation_match:
            raise PreconditionFailedError(
                f"{path} changed since it was read (generation {current}, expected {if_generation_match})"
            )
        atomic.write_file(path, lambda file: file.write(data))
    return content_generation(data)


def delete(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def list_files(directory: str) -> list[str]:
    """Relative POSIX names of all files under a local directory, sorted; [] when it is missing."""
    names = []
    for root, _, files in os.walk(directory):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), directory)
            names.append(relative.replace(os.sep, "/"))
    return sorted(names)


def copy(source_path: str, destination_path: str) -> None:
    """Copy one file atomically (nothing to do when both name the same file)."""
    if os.path.abspath(source_path) != os.path.abspath(destination_path):
        atomic.write_file(destination_path, lambda file: copy_into(source_path, file))


def copy_into(source_path: str, file) -> None:
    """Stream a local file into an open binary file."""
    with open(source_path, "rb") as source:
        shutil.copyfileobj(source, file, COPY_BLOCK_BYTES)
