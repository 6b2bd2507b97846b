"""One interface over local paths and ``gs://bucket/key`` URIs.

Every function takes either a local path or a GCS URI. GCS goes through google-cloud-storage,
which honours ``STORAGE_EMULATOR_HOST`` (then anonymous credentials and project ``test`` are
used) and otherwise the normal Google application-default credentials.

Failures come in two kinds:
- transient (5xx, 429, 408, timeouts, connection reset/refused, a checksum mismatch after a
  transfer): retried with exponential backoff for at most ``CNNPIPE_STORAGE_RETRY_SECONDS``
  (default 30 s), then a ``StorageError`` naming the URI;
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

import contextlib
import functools
import hashlib
import http.client
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from base64 import b64decode, b64encode
from typing import Callable, TypeVar

from components.errors import UserError

GCS_SCHEME = "gs://"
RETRY_SECONDS_ENVIRONMENT_VARIABLE = "CNNPIPE_STORAGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0
MAX_ATTEMPTS = 8
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 8.0
# Objects above this size stream in chunks and show a progress line on stderr (bytes).
LARGE_OBJECT_BYTES = 16 * 1024 * 1024
# Resumable-upload chunk; GCS requires a multiple of 256 KiB (bytes).
CHUNK_BYTES = 8 * 1024 * 1024
# (connect, read) timeout of one HTTP request, seconds: a hung request counts as transient.
REQUEST_TIMEOUT_SECONDS = (10, 120)
_READ_BLOCK_BYTES = 1024 * 1024

Result = TypeVar("Result")


class StorageError(UserError):
    """A storage operation failed for good; the message is one line naming the URI."""


class StorageUnavailableError(RuntimeError):
    """The storage service kept failing for the whole retry budget: an outage, not a mistake in
    the request, so a later retry (the cluster's, or the user's) may succeed."""


class PreconditionFailedError(StorageError):
    """A conditional write found another generation than the one it was given."""


class _TransferCorrupted(Exception):
    """Size or checksum of a transferred object differs from the source (retried)."""


# --------------------------------------------------------------------------- URIs


def is_gcs(uri: str) -> bool:
    """Whether ``uri`` is a ``gs://`` URI (anything else is a local path)."""
    return isinstance(uri, str) and uri.startswith(GCS_SCHEME)


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty."""
    if not is_gcs(uri):
        raise UserError(f"not a GCS URI: {uri!r}; expected gs://bucket/key")
    bucket, _, key = uri[len(GCS_SCHEME):].partition("/")
    if not bucket:
        raise UserError(f"GCS URI without a bucket: {uri!r}; expected gs://bucket/key")
    return bucket, key


def join(base: str, *names: str) -> str:
    """Join path components under ``base``: ``/`` for GCS, ``os.path.join`` for local paths."""
    if not is_gcs(base):
        return os.path.join(base, *names)
    parts = [base.rstrip("/")] + [name.strip("/") for name in names if name.strip("/")]
    return "/".join(parts)


def _directory_key(key: str) -> str:
    """A key as a listing prefix: ``a/b`` -> ``a/b/`` so that ``a/bc`` is not under it."""
    return key.rstrip("/") + "/" if key.strip("/") else ""


# --------------------------------------------------------------------------- client and retries


@functools.lru_cache(maxsize=None)
def _client_for(emulator_host: str | None):
    """One client per emulator host (None = real GCS), reused for all calls in this process."""
    from google.cloud import storage as gcs

    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return gcs.Client(project="test", credentials=AnonymousCredentials())
    return gcs.Client()


def _client(uri: str):
    """The cached client for the current ``STORAGE_EMULATOR_HOST``; a clear error without credentials."""
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return _client_for(os.environ.get("STORAGE_EMULATOR_HOST") or None)
    except DefaultCredentialsError:
        raise StorageError(
            f"no Google Cloud credentials to reach {uri}; run `gcloud auth application-default login`, "
            "set GOOGLE_APPLICATION_CREDENTIALS, or set STORAGE_EMULATOR_HOST for an emulator"
        ) from None


def _blob(uri: str):
    """The (unfetched) blob object for ``uri``."""
    bucket_name, key = split_gcs_uri(uri)
    if not key:
        raise UserError(f"GCS URI without an object name: {uri!r}; expected gs://bucket/key")
    return _client(uri).bucket(bucket_name).blob(key)


def retry_seconds() -> float:
    """The retry budget for transient errors, from ``CNNPIPE_STORAGE_RETRY_SECONDS`` (seconds)."""
    text = os.environ.get(RETRY_SECONDS_ENVIRONMENT_VARIABLE, "")
    if not text:
        return DEFAULT_RETRY_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise UserError(
            f"{RETRY_SECONDS_ENVIRONMENT_VARIABLE}={text!r} is not a number of seconds >= 0; set e.g. 30"
        )
    return seconds


def _is_transient(error: BaseException) -> bool:
    """Whether retrying ``error`` may succeed: throttling, server errors, network trouble."""
    import requests
    import urllib3
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud.storage import exceptions as storage_exceptions

    if isinstance(error, (_TransferCorrupted, storage_exceptions.DataCorruption)):
        return True
    if isinstance(error, api_exceptions.GoogleAPICallError):
        return error.code in (408, 429) or (error.code or 0) >= 500
    if isinstance(error, storage_exceptions.InvalidResponse):
        status = getattr(getattr(error, "response", None), "status_code", 0) or 0
        return status in (408, 429) or status >= 500
    if isinstance(error, auth_exceptions.TransportError):
        return True
    network_errors = (
        ConnectionError,
        TimeoutError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
    )
    return isinstance(error, network_errors)


def _summary(error: BaseException) -> str:
    """An exception as one short line (library messages can span lines and quote whole URLs)."""
    from google.cloud.storage import exceptions as storage_exceptions

    if isinstance(error, storage_exceptions.DataCorruption):
        return "checksum mismatch between the object and the bytes received"
    text = " ".join(str(error).split()) or type(error).__name__
    # Connection failures bury the cause ("[Errno 111] Connection refused") deep in a long message.
    system_error = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if system_error:
        return system_error.group(0).strip()
    return text if len(text) <= 240 else text[:237] + "..."


def _bucket_is_missing(uri: str) -> bool:
    """True only when the bucket of ``uri`` surely does not exist (no permission to check -> False)."""
    bucket_name, _ = split_gcs_uri(uri)
    try:
        return not _client(uri).bucket(bucket_name).exists(retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
    except Exception:
        return False


def _permanent_error(error: BaseException, uri: str, action: str) -> Exception:
    """The user-facing exception for a non-retryable failure of ``action`` on ``uri``."""
    from google.api_core import exceptions as api_exceptions

    bucket_name = split_gcs_uri(uri)[0]
    code = getattr(error, "code", None) if isinstance(error, api_exceptions.GoogleAPICallError) else None
    if code == 404:
        if _bucket_is_missing(uri):
            return StorageError(f"bucket {bucket_name!r} does not exist ({uri}); create it or fix the URI")
        return FileNotFoundError(f"no object at {uri}; check the path")
    if code == 412:
        return PreconditionFailedError(f"{uri} changed since it was read (generation precondition failed)")
    if code in (401, 403):
        return StorageError(
            f"permission denied to {action} {uri}; grant the service account access to bucket "
            f"{bucket_name!r} or fix the credentials ({_summary(error)})"
        )
    return StorageError(f"cannot {action} {uri}: {_summary(error)}")


def _with_retries(action: str, uri: str, operation: Callable[[], Result]) -> Result:
    """Run ``operation``; retry transient errors with jittered exponential backoff within the budget."""
    budget_seconds = retry_seconds()
    started = time.monotonic()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return operation()
        except (StorageError, StorageUnavailableError, FileNotFoundError):
            raise
        except Exception as error:
            if not _is_transient(error):
                raise _permanent_error(error, uri, action) from error
            # Jitter keeps concurrent clients from retrying in lockstep.
            backoff = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1))
            backoff *= random.uniform(0.5, 1.0)
            elapsed = time.monotonic() - started
            if attempt == MAX_ATTEMPTS or elapsed + backoff > budget_seconds:
                raise StorageUnavailableError(
                    f"cannot {action} {uri}: still failing after {attempt} attempts in {elapsed:.1f} s "
                    f"({_summary(error)}); check the network or the storage service, or raise "
                    f"{RETRY_SECONDS_ENVIRONMENT_VARIABLE}"
                ) from error
            time.sleep(backoff)
    raise AssertionError("unreachable: the loop returns or raises")


# --------------------------------------------------------------------------- checksums and progress


def _crc32c_of_file(path: str) -> str:
    """CRC32C of a local file, base64 of the big-endian digest (the form GCS reports)."""
    import google_crc32c

    return _digest_of_file(path, google_crc32c.Checksum())


def _md5_of_file(path: str) -> str:
    """MD5 of a local file, base64 (the form GCS reports)."""
    return _digest_of_file(path, hashlib.md5())


def _digest_of_file(path: str, checksum) -> str:
    """Feed a file to a hashlib-style ``checksum`` block by block; base64 of its digest."""
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_READ_BLOCK_BYTES), b""):
            checksum.update(block)
    return b64encode(checksum.digest()).decode("ascii")


def _verify_transfer(local_path: str, blob, uri: str) -> None:
    """Compare size and CRC32C (or MD5 when the object has no CRC32C) of a local file and an object."""
    local_size = os.path.getsize(local_path)
    if blob.size is not None and int(blob.size) != local_size:
        raise _TransferCorrupted(f"size mismatch for {uri}: object {blob.size} bytes, local {local_size} bytes")
    if blob.crc32c:
        local_checksum, remote_checksum, kind = _crc32c_of_file(local_path), blob.crc32c, "crc32c"
    elif blob.md5_hash:
        local_checksum, remote_checksum, kind = _md5_of_file(local_path), blob.md5_hash, "md5"
    else:
        return
    if b64decode(local_checksum) != b64decode(remote_checksum):
        raise _TransferCorrupted(f"{kind} mismatch for {uri}: object {remote_checksum}, local {local_checksum}")


class _Progress:
    """A hand-written progress line on stderr: carriage returns on a terminal, one line per 10 % in logs."""

    def __init__(self, label: str, total_bytes: int):
        self.label = label
        self.total_bytes = max(total_bytes, 1)
        self.on_terminal = sys.stderr.isatty()
        self.last_printed_tenth = -1
        self.last_printed_time = 0.0

    def update(self, done_bytes: int) -> None:
        """Report ``done_bytes`` transferred so far (printed at most a few times a second)."""
        fraction = min(done_bytes / self.total_bytes, 1.0)
        tenth = int(fraction * 10)
        now = time.monotonic()
        if self.on_terminal and now - self.last_printed_time < 0.2 and fraction < 1.0:
            return
        if not self.on_terminal and tenth == self.last_printed_tenth:
            return
        self.last_printed_tenth, self.last_printed_time = tenth, now
        megabytes = 1024 * 1024
        line = (
            f"{self.label}: {done_bytes / megabytes:.1f}/{self.total_bytes / megabytes:.1f} MB "
            f"({100 * fraction:3.0f}%)"
        )
        print(line, end="\r" if self.on_terminal else "\n", file=sys.stderr, flush=True)

    def finish(self) -> None:
        """End the progress line."""
        if self.on_terminal:
            print(file=sys.stderr, flush=True)


class _ProgressWriter:
    """A binary file wrapper that reports the bytes written to a ``_Progress``."""

    def __init__(self, file, progress: _Progress):
        self.file, self.progress, self.written = file, progress, 0

    def write(self, data) -> int:
        count = self.file.write(data)
        self.written += len(data)
        self.progress.update(self.written)
        return count

    def __getattr__(self, name):
        return getattr(self.file, name)


class _ProgressReader:
    """A binary file wrapper that reports the read position to a ``_Progress``."""

    def __init__(self, file, progress: _Progress):
        self.file, self.progress = file, progress

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.progress.update(self.file.tell())
        return data

    def __getattr__(self, name):
        return getattr(self.file, name)


# --------------------------------------------------------------------------- local helpers


def _content_generation(data: bytes) -> int:
    """A local file's generation: 63 bits of its SHA-256, never 0 (0 means 'absent', as on GCS)."""
    return (int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1) | 1


def _local_generation(path: str) -> int:
    """Generation of a local file, 0 when it does not exist."""
    try:
        with open(path, "rb") as file:
            return _content_generation(file.read())
    except FileNotFoundError:
        return 0


def _atomic_local_write(
    path: str, write: Callable[[object], None], check: Callable[[str], None] | None = None
) -> None:
    """Create ``path`` through ``write(file)`` on a temporary file beside it, then rename over it.

    ``check(temporary_path)`` runs on the complete temporary file before the rename and may refuse it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if check is not None:
            check(temporary_path)
        os.replace(temporary_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary_path)
        raise


@contextlib.contextmanager
def _local_lock(path: str):
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


def _local_files(directory: str) -> list[str]:
    """Relative POSIX names of all files under a local directory, sorted; [] when it is missing."""
    names = []
    for root, _, files in os.walk(directory):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), directory)
            names.append(relative.replace(os.sep, "/"))
    return sorted(names)


# --------------------------------------------------------------------------- small objects


def exists(uri: str) -> bool:
    """Whether a file/object or a directory/prefix with at least one object exists at ``uri``."""
    if not is_gcs(uri):
        return os.path.exists(uri)
    bucket_name, key = split_gcs_uri(uri)

    def look_for_object() -> bool:
        blob = _client(uri).bucket(bucket_name).blob(key)
        return blob.exists(retry=None, timeout=REQUEST_TIMEOUT_SECONDS)

    # A missing bucket makes the listing fail with a clear error rather than answer False.
    return (bool(key) and _with_retries("look up", uri, look_for_object)) or is_directory(uri)


def is_directory(uri: str) -> bool:
    """Whether ``uri`` is a local directory or a GCS prefix with at least one object under it."""
    if not is_gcs(uri):
        return os.path.isdir(uri)
    bucket_name, key = split_gcs_uri(uri)

    def look() -> bool:
        found = _client(uri).list_blobs(
            bucket_name, prefix=_directory_key(key), max_results=1, retry=None, timeout=REQUEST_TIMEOUT_SECONDS
        )
        return any(True for _ in found)

    return _with_retries("list", uri, look)


def read_bytes(uri: str) -> bytes:
    """The whole content of a file/object."""
    if not is_gcs(uri):
        with open(uri, "rb") as file:
            return file.read()
    blob = _blob(uri)
    return _with_retries(
        "read", uri, lambda: blob.download_as_bytes(retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
    )


def read_with_generation(uri: str) -> tuple[bytes, int]:
    """Content and generation of one version of a file/object (for a later compare-and-swap)."""
    if not is_gcs(uri):
        data = read_bytes(uri)
        return data, _content_generation(data)
    bucket_name, key = split_gcs_uri(uri)

    def read_pinned() -> tuple[bytes, int]:
        from google.api_core import exceptions as api_exceptions

        blob = _client(uri).bucket(bucket_name).get_blob(key, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
        if blob is None:
            raise FileNotFoundError(f"no object at {uri}; check the path")
        read_generation = int(blob.generation)
        try:
            # The precondition pins the content to the generation just read.
            data = blob.download_as_bytes(
                if_generation_match=read_generation, retry=None, timeout=REQUEST_TIMEOUT_SECONDS
            )
        except api_exceptions.PreconditionFailed as error:
            raise api_exceptions.ServiceUnavailable(f"{uri} changed while being read") from error
        return data, read_generation

    return _with_retries("read", uri, read_pinned)


def write_bytes(uri: str, data: bytes, if_generation_match: int | None = None) -> int:
    """Write a whole file/object atomically; returns its new generation.

    ``if_generation_match``: write only if the current generation is this one (0: only if absent),
    else ``PreconditionFailedError``. A retried conditional GCS write whose first attempt landed
    reports a precondition failure too: callers re-read and find their own write.
    """
    if isinstance(data, str):
        raise UserError(f"write_bytes got text for {uri}; use write_text or encode it first")
    if not is_gcs(uri):
        if if_generation_match is None:
            _atomic_local_write(uri, lambda file: file.write(data))
            return _content_generation(data)
        with _local_lock(uri):
            current = _local_generation(uri)
            if current != if_generation_match:
                raise PreconditionFailedError(
                    f"{uri} changed since it was read (generation {current}, expected {if_generation_match})"
                )
            _atomic_local_write(uri, lambda file: file.write(data))
        return _content_generation(data)
    blob = _blob(uri)

    def upload() -> int:
        blob.upload_from_string(
            data, if_generation_match=if_generation_match, retry=None, timeout=REQUEST_TIMEOUT_SECONDS
        )
        return int(blob.generation)

    return _with_retries("write", uri, upload)


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
    if not is_gcs(uri):
        return _local_generation(uri)
    bucket_name, key = split_gcs_uri(uri)

    def look() -> int:
        blob = _client(uri).bucket(bucket_name).get_blob(key, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
        return 0 if blob is None else int(blob.generation)

    return _with_retries("look up", uri, look)


def delete(uri: str) -> None:
    """Remove a file/object; a missing one is fine."""
    if not is_gcs(uri):
        with contextlib.suppress(FileNotFoundError):
            os.remove(uri)
        return
    from google.api_core import exceptions as api_exceptions

    blob = _blob(uri)

    def remove() -> None:
        with contextlib.suppress(api_exceptions.NotFound):
            blob.delete(retry=None, timeout=REQUEST_TIMEOUT_SECONDS)

    _with_retries("delete", uri, remove)


def list_files(prefix: str) -> list[str]:
    """Relative names (``a/b.npy``) of all files/objects under a directory or prefix, sorted."""
    if not is_gcs(prefix):
        return _local_files(prefix) if os.path.isdir(prefix) else []
    bucket_name, key = split_gcs_uri(prefix)
    listing_prefix = _directory_key(key)

    def list_names() -> list[str]:
        blobs = _client(prefix).list_blobs(
            bucket_name, prefix=listing_prefix, retry=None, timeout=REQUEST_TIMEOUT_SECONDS
        )
        # Names ending in "/" are folder placeholders made by consoles, not files.
        return sorted(blob.name[len(listing_prefix):] for blob in blobs if not blob.name.endswith("/"))

    return _with_retries("list", prefix, list_names)


# --------------------------------------------------------------------------- single files


def download(uri: str, local_path: str) -> str:
    """Copy one file/object to ``local_path`` atomically, verified by size and checksum; returns the path."""
    if not is_gcs(uri):
        if os.path.abspath(uri) != os.path.abspath(local_path):
            _atomic_local_write(local_path, lambda file: _copy_local_into(uri, file))
        return local_path
    bucket_name, key = split_gcs_uri(uri)

    def fetch() -> str:
        blob = _client(uri).bucket(bucket_name).get_blob(key, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
        if blob is None:
            raise FileNotFoundError(f"no object at {uri}; check the path")
        large = (blob.size or 0) > LARGE_OBJECT_BYTES
        progress = _Progress(f"download {uri}", blob.size or 0) if large else None

        def write(file) -> None:
            target = _ProgressWriter(file, progress) if progress else file
            blob.download_to_file(target, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)

        try:
            _atomic_local_write(local_path, write, check=lambda path: _verify_transfer(path, blob, uri))
        finally:
            if progress:
                progress.finish()
        return local_path

    return _with_retries("download", uri, fetch)


def _copy_local_into(source_path: str, file) -> None:
    """Stream a local file into an open binary file."""
    with open(source_path, "rb") as source:
        shutil.copyfileobj(source, file, _READ_BLOCK_BYTES)


def upload(local_path: str, uri: str) -> None:
    """Copy one local file to a file/object atomically, verified by size and checksum."""
    if not os.path.isfile(local_path):
        raise FileNotFoundError(f"no file to upload at {local_path}; check the path")
    if not is_gcs(uri):
        if os.path.abspath(uri) != os.path.abspath(local_path):
            _atomic_local_write(uri, lambda file: _copy_local_into(local_path, file))
        return
    bucket_name, key = split_gcs_uri(uri)
    if not key:
        raise UserError(f"GCS URI without an object name: {uri!r}; expected gs://bucket/key")
    size = os.path.getsize(local_path)
    large = size > LARGE_OBJECT_BYTES

    def send() -> None:
        # A chunk size makes the client use a resumable upload that streams the file in pieces.
        blob = _client(uri).bucket(bucket_name).blob(key, chunk_size=CHUNK_BYTES if large else None)
        progress = _Progress(f"upload {uri}", size) if large else None
        try:
            with open(local_path, "rb") as file:
                source = _ProgressReader(file, progress) if progress else file
                blob.upload_from_file(source, size=size, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
        finally:
            if progress:
                progress.finish()
        _verify_transfer(local_path, blob, uri)

    _with_retries("upload", uri, send)


def copy(source: str, destination: str) -> None:
    """Copy one file/object between any two of: local path, ``gs://`` URI (server-side for GCS to GCS)."""
    if not is_gcs(source):
        upload(source, destination)
        return
    if not is_gcs(destination):
        download(source, destination)
        return
    source_bucket, source_key = split_gcs_uri(source)
    destination_blob = _blob(destination)

    def rewrite() -> None:
        client = _client(source)
        source_blob = client.bucket(source_bucket).get_blob(source_key, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
        if source_blob is None:
            raise FileNotFoundError(f"no object at {source}; check the path")
        # Large or cross-location copies take several rewrite calls; the token carries the progress.
        token, _, _ = destination_blob.rewrite(source_blob, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
        while token is not None:
            token, _, _ = destination_blob.rewrite(
                source_blob, token=token, retry=None, timeout=REQUEST_TIMEOUT_SECONDS
            )
        if source_blob.crc32c and destination_blob.crc32c and source_blob.crc32c != destination_blob.crc32c:
            raise _TransferCorrupted(f"crc32c mismatch copying {source} to {destination}")

    _with_retries("copy", destination, rewrite)


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
    names = _local_files(local_dir) if os.path.isdir(local_dir) else []
    if not names:
        raise FileNotFoundError(f"no files to upload under {local_dir}; check the path")
    for name in names:
        upload(os.path.join(local_dir, *name.split("/")), join(prefix, name))
    return names
