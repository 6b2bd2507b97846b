"""Atomic writes: a file appears complete under its name, or not at all.

Every write goes to a temporary name in the target's own directory (so the same filesystem) and
is renamed over the target with os.replace, which is atomic on POSIX. A failure removes the
temporary file and leaves whatever was there before; a half-written file never carries the name
a later step or the nightly promotion reads. Local files only: a gs:// object appears only when
its single upload completes (components/storage).

A file written this way gets the mode a plain open() would give it, 0666 less the process umask
(0644 under the usual 022), not the 0600 of tempfile.mkstemp: a serving identity other than the
writer must be able to read a model version or an artifact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Callable, Iterator


@contextlib.contextmanager
def replaced_on_success(path: str, suffix: str = ".tmp") -> Iterator[str]:
    """A fresh temporary path beside `path` (ending in `suffix`, for writers that insist on an
    extension such as Keras' ".keras") for the block to write; renamed over `path` when the block
    ends, removed when it raises."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(descriptor)
    try:
        yield temporary_path
        os.chmod(temporary_path, plain_mode())
        os.replace(temporary_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary_path)
        raise


def plain_mode(directory: bool = False) -> int:
    """The mode open() (0666) or os.makedirs (0777) gives a new file or directory under this
    process's umask; for files and folders that tempfile makes 0600 or 0700."""
    return (0o777 if directory else 0o666) & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only set it, which would race
    with other threads creating files); from /proc on Linux."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(umask)
    return umask


def write_file(path: str, write: Callable[[object], None], check: Callable[[str], None] | None = None) -> None:
    """Create `path` through `write(file)` on an open binary file, flushed to disk before the rename.
    `check(temporary_path)` runs on the complete temporary file first and may refuse it by raising."""
    with replaced_on_success(path) as temporary_path:
        with open(temporary_path, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if check is not None:
            check(temporary_path)


def write_text(path: str, text: str) -> None:
    """A UTF-8 text file, atomically."""
    write_file(path, lambda file: file.write(text.encode("utf-8")))


def write_files(directory: str, files: dict[str, str]) -> None:
    """Several UTF-8 text files of one directory (name -> content): all are written to temporary
    names first and renamed only when every one is complete, so a full disk leaves none of them."""
    with contextlib.ExitStack() as stack:
        temporary_paths = {
            name: stack.enter_context(replaced_on_success(os.path.join(directory, name))) for name in files
        }
        for name, text in files.items():
            with open(temporary_paths[name], "w", encoding="utf-8") as file:
                file.write(text)
