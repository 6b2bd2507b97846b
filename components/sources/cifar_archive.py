"""The CIFAR-10 binary archive ``cifar-10-binary.tar.gz`` (``cifar-10-batches-bin/*.bin``).

Read twice, front to back, straight out of the compressed tar (nothing extracted): the first pass
checks every member and keeps only the label bytes; streaming then reads the records again a
chunk at a time. Training images come in the archive's member order (data_batch_1 ... 5).
"""

from __future__ import annotations

import contextlib
import gzip
import posixpath
import tarfile
import zlib
from collections.abc import Iterator

import numpy as np

from components.errors import UserError
from components.sources.base import SourceStream, check_labels

CIFAR_SIDE = 32
CIFAR_RECORD_BYTES = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE  # one label byte, then R, G, B planes
CIFAR_TRAIN_MEMBERS = tuple(f"data_batch_{number}.bin" for number in range(1, 6))
CIFAR_TEST_MEMBER = "test_batch.bin"
CIFAR_META_MEMBER = "batches.meta.txt"
CIFAR_MEMBERS = (*CIFAR_TRAIN_MEMBERS, CIFAR_TEST_MEMBER, CIFAR_META_MEMBER)
GZIP_MAGIC = b"\x1f\x8b"
# Records read at a time while streaming (about 3 MB).
CHUNK_RECORDS = 1024


def recognizes(path: str) -> bool:
    return True  # any file that is not a folder is taken for an archive, and checked as one


def check(path: str) -> None:
    """The file is a tar archive (its first header only)."""
    if not tarfile.is_tarfile(path):
        raise UserError(
            f"source file {path} is not a tar archive; pass an image folder or the CIFAR-10 binary "
            "archive cifar-10-binary.tar.gz"
        )


def read(path: str, *, name: str | None = None, seed: int = 0) -> SourceStream:
    """Checks the whole archive and reads its labels; the pixels are read again while streaming."""
    labels_by_member: dict[str, np.ndarray] = {}
    meta_text = None
    seen_names: list[str] = []
    with _archive_errors(path):
        for member_name, member_file, size in _cifar_members(path, seen_names):
            if member_name == CIFAR_META_MEMBER:
                meta_text = member_file.read().decode("utf-8", "replace")
                continue
            _check_record_size(member_name, size, path)
            blocks = iter(lambda: member_file.read(CHUNK_RECORDS * CIFAR_RECORD_BYTES), b"")
            labels_by_member[member_name] = np.concatenate(
                [np.frombuffer(block, dtype=np.uint8)[::CIFAR_RECORD_BYTES] for block in blocks]
            ).astype(np.int32)

    missing = [member for member in CIFAR_MEMBERS if member not in labels_by_member and member != CIFAR_META_MEMBER]
    if meta_text is None:
        missing.append(CIFAR_META_MEMBER)
    if missing:
        python_version = any(posixpath.basename(name) == "data_batch_1" for name in seen_names)
        hint = (
            "this is the Python (pickle) version; use the binary version cifar-10-binary.tar.gz"
            if python_version
            else "expected cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin, test_batch.bin and "
            "batches.meta.txt as in cifar-10-binary.tar.gz"
        )
        raise UserError(f"archive {path} lacks {', '.join(missing)}; {hint}")

    class_names = tuple(line.strip() for line in meta_text.splitlines() if line.strip())
    for member, member_labels in labels_by_member.items():
        if member_labels.max() >= len(class_names):
            raise UserError(
                f"{member} in {path} has label {member_labels.max()} but {CIFAR_META_MEMBER} names only "
                f"{len(class_names)} classes; download cifar-10-binary.tar.gz again"
            )
    train_order = [member for member in labels_by_member if member in CIFAR_TRAIN_MEMBERS]  # archive order
    labels = {
        "train": np.concatenate([labels_by_member[member] for member in train_order]),
        "test": labels_by_member[CIFAR_TEST_MEMBER],
    }
    check_labels("cifar10", class_names, labels)

    def chunks() -> Iterator[tuple[str, np.ndarray]]:
        with _archive_errors(path):
            for member_name, member_file, _ in _cifar_members(path, []):
                if member_name == CIFAR_META_MEMBER:
                    continue
                split = "test" if member_name == CIFAR_TEST_MEMBER else "train"
                for block in iter(lambda: member_file.read(CHUNK_RECORDS * CIFAR_RECORD_BYTES), b""):
                    yield split, records_to_images(block)

    return SourceStream(
        name="cifar10",
        class_names=class_names,
        image_shape=(CIFAR_SIDE, CIFAR_SIDE, 3),
        labels=labels,
        allow_horizontal_flip=True,
        chunks=chunks,
    )


def records_to_images(block: bytes) -> np.ndarray:
    """Records of 1 label byte + 32x32 R, G, B planes -> uint8 images [N, 32, 32, 3]."""
    records = np.frombuffer(block, dtype=np.uint8).reshape(-1, CIFAR_RECORD_BYTES)
    planes = records[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1))


def _check_record_size(member: str, size: int, path: str) -> None:
    if not size or size % CIFAR_RECORD_BYTES:
        raise UserError(
            f"{member} in {path} holds {size} bytes, not a whole number of {CIFAR_RECORD_BYTES}-byte "
            "CIFAR-10 records; download cifar-10-binary.tar.gz again"
        )


def _cifar_members(path: str, seen_names: list[str]) -> Iterator[tuple[str, object, int]]:
    """(base name, open member file, size) of the first copy of each CIFAR member, in archive order.

    Each member must be read before the next is asked for (the archive is one compressed stream);
    every member name seen is appended to ``seen_names``.
    """
    visited = set()
    # Stream mode reads the compressed archive once, front to back. A gzip archive is read through
    # the gzip module, which checks the CRC at the end of the stream (tarfile's own reader does not,
    # so a flipped bit would pass as different pixels); reading to the end makes that check run.
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                seen_names.append(member.name)
                base_name = posixpath.basename(member.name)
                if member.isfile() and base_name in CIFAR_MEMBERS and base_name not in visited:
                    visited.add(base_name)
                    yield base_name, archive.extractfile(member), member.size
        while compressed and stream.read(1 << 20):
            pass


@contextlib.contextmanager
def _archive_errors(path: str):
    """A damaged archive (found while listing or while reading a member) as one UserError."""
    try:
        yield
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise UserError(f"cannot read archive {path} ({error}); download cifar-10-binary.tar.gz again") from error
