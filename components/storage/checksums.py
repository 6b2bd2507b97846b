"""Whether a transfer to or from GCS arrived whole: size and CRC32C (or MD5) of a local file
against what GCS reports for the object, both as base64 of the big-endian digest."""

from __future__ import annotations

import hashlib
import os
from base64 import b64decode, b64encode

# Block size for reading a file into a checksum (bytes).
READ_BLOCK_BYTES = 1024 * 1024


class TransferCorrupted(Exception):
    """Size or checksum of a transferred object differs from the source (retried)."""


def crc32c_of_file(path: str) -> str:
    """CRC32C of a local file, base64 of the big-endian digest (the form GCS reports)."""
    import google_crc32c

    return digest_of_file(path, google_crc32c.Checksum())


def md5_of_file(path: str) -> str:
    """MD5 of a local file, base64 (the form GCS reports)."""
    return digest_of_file(path, hashlib.md5())


def digest_of_file(path: str, checksum) -> str:
    """Base64 of a hashlib-style ``checksum``'s digest of a file."""
    return b64encode(fed_with_file(path, checksum).digest()).decode("ascii")


def fed_with_file(path: str, checksum):
    """``checksum`` (hashlib-style) after feeding it a file block by block."""
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(READ_BLOCK_BYTES), b""):
            checksum.update(block)
    return checksum


def verify_transfer(local_path: str, blob, uri: str) -> None:
    """Compare size and CRC32C (or MD5 when the object has no CRC32C) of a local file and an object."""
    local_size = os.path.getsize(local_path)
    if blob.size is not None and int(blob.size) != local_size:
        raise TransferCorrupted(f"size mismatch for {uri}: object {blob.size} bytes, local {local_size} bytes")
    if blob.crc32c:
        local_checksum, remote_checksum, kind = crc32c_of_file(local_path), blob.crc32c, "crc32c"
    elif blob.md5_hash:
        local_checksum, remote_checksum, kind = md5_of_file(local_path), blob.md5_hash, "md5"
    else:
        return
    if b64decode(local_checksum) != b64decode(remote_checksum):
        raise TransferCorrupted(f"{kind} mismatch for {uri}: object {remote_checksum}, local {local_checksum}")
