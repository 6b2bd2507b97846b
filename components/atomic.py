"""Atomic writes: a file (or a directory) appears complete under its name, or not at all.

Every write goes to a temporary name in the target's own directory (so the same filesystem) and
is renamed over the target with os.replace, which is atomic on POSIX. A failure removes the
temporary file and leaves whatever was there before; a half-written file never carries the name
a later step or the nightly promotion reads. Local files only: a gs:// object appears only when
its single upload completes (components/storage).

A directory is assembled in a hidden staging directory beside it (`staging_directory`) and
renamed over it as a whole (`replace_directory`); a staging directory that a killed process left
is removed by the next one that writes the same directory.

A file written this way gets the mode a plain open() would give it, 0666 less the process umask
(0644 under the usual 022), not the 0600 of tempfile.mkstemp: a serving identity other than the
writer must be able to read a model version or an artifact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Callable, Iterator

from components.processes import process_running

logger = logging.getLogger(__name__)


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


def staging_directory(path: str) -> str:
    """A fresh hidden directory beside `path`, ``.<name>.staging-<pid>-<random>``, to assemble its
    new content in; readable by others once in place (plain_mode). Staging directories of `path`
    left by a process that no longer runs on this machine are removed first."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    _remove_abandoned_staging(path)
    staging_dir = tempfile.mkdtemp(prefix=f"{_staging_prefix(path)}{os.getpid()}-", dir=parent)
    os.chmod(staging_dir, plain_mode(directory=True))
    return staging_dir


def replace_directory(staging_dir: str, path: str, last: str | None = None) -> None:
    """Rename the staging directory to `path`, replacing an existing one as a whole. An empty
    `path` that cannot be removed (a mount point) gets the staged files moved in, `last` last."""
    if not os.path.lexists(path):
        os.rename(staging_dir, path)
        return
    if not os.listdir(path):
        try:
            os.rmdir(path)
            os.rename(staging_dir, path)
        except OSError:
            # An empty mount point (a pipeline runner's artifact directory) cannot be removed.
            _move_contents(staging_dir, path, last)
        return
    previous_dir = f"{staging_dir}.previous"
    os.rename(path, previous_dir)
    try:
        os.rename(staging_dir, path)
    except BaseException:
        os.rename(previous_dir, path)
        raise
    shutil.rmtree(previous_dir, ignore_errors=True)


def _staging_prefix(path: str) -> str:
    """Staging directories of `path` are its hidden siblings ``.<name>.staging-<pid>-<random>``."""
    return f".{os.path.basename(os.path.abspath(path))}.staging-"


def _remove_abandoned_staging(path: str) -> None:
    """Deletes what a killed writer of `path` left (its staging directory, or the previous
    directory mid-replacement): those whose process no longer runs on this machine."""
    parent, prefix = os.path.dirname(os.path.abspath(path)), _staging_prefix(path)
    for name in os.listdir(parent):
        if not name.startswith(prefix):
            continue
        owner = name[len(prefix):].split("-", 1)[0]
        if owner.isdigit() and not process_running(int(owner)):
            logger.info("removing %s, left by an interrupted write", os.path.join(parent, name))
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _move_contents(staging_dir: str, path: str, last: str | None) -> None:
    """Move the staged files into an existing empty directory, `last` last."""
    for name in sorted(os.listdir(staging_dir), key=lambda name: name == last):
        shutil.move(os.path.join(staging_dir, name), os.path.join(path, name))
    os.rmdir(staging_dir)
