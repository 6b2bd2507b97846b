"""The GCS back end: ``gs://bucket/key`` objects through google-cloud-storage.

The client honours ``STORAGE_EMULATOR_HOST`` (then anonymous credentials and project ``test`` are
used) and otherwise the normal Google application-default credentials. Every call goes through
``with_retries`` (retries.py); transfers are verified by size and checksum (checksums.py); an
object appears only when its upload completes. Objects above LARGE_OBJECT_BYTES stream with a
progress line on stderr; uploads of them go chunk by chunk through a resumable upload session,
each chunk with its own retries, and after a failure go on from what the service holds.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable, TypeVar

from components import atomic, checks, progress
from components.errors import PreconditionFailedError, StorageError, UserError
from components.storage.retries import UploadSessionGone, describe_error, with_retries
from components.storage.checksums import TransferCorrupted, verify_transfer
from components.storage.uris import split_gcs_uri

# Objects above this size stream in chunks and show a progress line on stderr (bytes).
LARGE_OBJECT_BYTES = 16 * 1024 * 1024
# Resumable-upload chunk; GCS requires a multiple of 256 KiB (bytes).
CHUNK_BYTES = 8 * 1024 * 1024
# (connect, read) timeout of one HTTP request, seconds: a hung request counts as transient.
REQUEST_TIMEOUT_SECONDS = (10, 120)

Result = TypeVar("Result")


# --------------------------------------------------------------------------- client and errors


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


def _directory_key(key: str) -> str:
    """A key as a listing prefix: ``a/b`` -> ``a/b/`` so that ``a/bc`` is not under it."""
    return key.rstrip("/") + "/" if key.strip("/") else ""


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
            f"{bucket_name!r} or fix the credentials ({describe_error(error)})"
        )
    return StorageError(f"cannot {action} {uri}: {describe_error(error)}")


def _with_retries(action: str, uri: str, operation: Callable[[], Result]) -> Result:
    """Run ``operation`` with retries of transient failures; others become one-line errors."""
    return with_retries(action, uri, operation, _permanent_error)


# --------------------------------------------------------------------------- objects


def exists(uri: str) -> bool:
    """Whether an object, or a prefix with at least one object under it, exists at ``uri``."""
    bucket_name, key = split_gcs_uri(uri)

    def look_for_object() -> bool:
        blob = _client(uri).bucket(bucket_name).blob(key)
        return blob.exists(retry=None, timeout=REQUEST_TIMEOUT_SECONDS)

    # A missing bucket makes the listing fail with a clear error rather than answer False.
    return (bool(key) and _with_retries("look up", uri, look_for_object)) or is_directory(uri)


def is_directory(uri: str) -> bool:
    """Whether ``uri`` is a prefix with at least one object under it."""
    bucket_name, key = split_gcs_uri(uri)

    def look() -> bool:
        found = _client(uri).list_blobs(
            bucket_name, prefix=_directory_key(key), max_results=1, retry=None, timeout=REQUEST_TIMEOUT_SECONDS
        )
        return any(True for _ in found)

    return _with_retries("list", uri, look)


def read_bytes(uri: str) -> bytes:
    """The whole content of a object."""
    blob = _blob(uri)
    return _with_retries(
        "read", uri, lambda: blob.download_as_bytes(retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
    )


def read_with_generation(uri: str) -> tuple[bytes, int]:
    """Content and generation of one version of a object (for a later compare-and-swap)."""
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
    """Write a whole object in one upload; returns its new generation. A retried conditional write
    whose first attempt landed reports a precondition failure: callers re-read and find their own write."""
    blob = _blob(uri)

    def upload() -> int:
        blob.upload_from_string(
            data, if_generation_match=if_generation_match, retry=None, timeout=REQUEST_TIMEOUT_SECONDS
        )
        return int(blob.generation)

    return _with_retries("write", uri, upload)


def generation(uri: str) -> int:
    """The current generation of a object, 0 when it does not exist."""
    bucket_name, key = split_gcs_uri(uri)

    def look() -> int:
        blob = _client(uri).bucket(bucket_name).get_blob(key, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
        return 0 if blob is None else int(blob.generation)

    return _with_retries("look up", uri, look)


def delete(uri: str) -> None:
    """Remove a object; a missing one is fine."""
    from google.api_core import exceptions as api_exceptions

    blob = _blob(uri)

    def remove() -> None:
        with contextlib.suppress(api_exceptions.NotFound):
            blob.delete(retry=None, timeout=REQUEST_TIMEOUT_SECONDS)

    _with_retries("delete", uri, remove)


def list_files(prefix: str) -> list[str]:
    """Relative names (``a/b.npy``) of all files/objects under a directory or prefix, sorted."""
    bucket_name, key = split_gcs_uri(prefix)
    listing_prefix = _directory_key(key)

    def list_names() -> list[str]:
        blobs = _client(prefix).list_blobs(
            bucket_name, prefix=listing_prefix, retry=None, timeout=REQUEST_TIMEOUT_SECONDS
        )
        # Names ending in "/" are folder placeholders made by consoles, not files.
        return sorted(blob.name[len(listing_prefix):] for blob in blobs if not blob.name.endswith("/"))

    names = _with_retries("list", prefix, list_names)
    # A listed name becomes a local path when it is downloaded: a hostile one ("../../x") is
    # refused here, naming the object, before anything under the prefix is fetched.
    for name in names:
        checks.relative_object_name(f"gs://{bucket_name}/{listing_prefix}", name)
    return names


def download(uri: str, local_path: str) -> str:
    """Copy one object to ``local_path`` atomically, verified by size and checksum; returns the path."""
    bucket_name, key = split_gcs_uri(uri)

    def fetch() -> str:
        blob = _client(uri).bucket(bucket_name).get_blob(key, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
        if blob is None:
            raise FileNotFoundError(f"no object at {uri}; check the path")
        large = (blob.size or 0) > LARGE_OBJECT_BYTES
        progress_line = _transfer_progress("download", uri, blob.size or 0) if large else None

        def write(file) -> None:
            target = _ProgressWriter(file, progress_line) if progress_line else file
            blob.download_to_file(target, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)

        try:
            atomic.write_file(local_path, write, check=lambda path: verify_transfer(path, blob, uri))
        finally:
            if progress_line:
                progress_line.finish()
        return local_path

    return _with_retries("download", uri, fetch)


def upload(local_path: str, uri: str) -> None:
    """Copy one local file to a object atomically, verified by size and checksum."""
    size = os.path.getsize(local_path)
    if size > LARGE_OBJECT_BYTES:
        _upload_in_chunks(local_path, uri, size)
        return
    blob = _blob(uri)

    def send() -> None:
        with open(local_path, "rb") as file:
            blob.upload_from_file(file, size=size, retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
        verify_transfer(local_path, blob, uri)

    _with_retries("upload", uri, send)


def _upload_in_chunks(local_path: str, uri: str, size: int, chunk_bytes: int | None = None) -> None:
    """Upload a large file through a resumable upload session, one chunk at a time.

    Each chunk gets its own retries; a retried chunk first asks the service how many bytes it
    holds (a chunk may have arrived although its answer did not), then sends from there. The
    object appears only when the last chunk completes; its size and CRC32C are then checked,
    and a mismatch, or a lost session, uploads it again in a new session.
    """
    import requests

    chunk_bytes = chunk_bytes or CHUNK_BYTES
    blob = _blob(uri)
    progress_line = _transfer_progress("upload", uri, size)
    try:
        with open(local_path, "rb") as file, requests.Session() as http:

            def upload_once() -> None:
                # The session URL authorizes the chunks that follow by itself (GCS resumable uploads).
                session_url = blob.create_resumable_upload_session(
                    size=size, timeout=REQUEST_TIMEOUT_SECONDS, content_type="application/octet-stream")
                offset = 0
                try:
                    while offset < size:
                        sender = _chunk_sender(http, session_url, file, offset, size, chunk_bytes)
                        offset = _with_retries("upload", uri, sender)
                        progress_line.update(offset)
                except UploadSessionGone as error:
                    raise TransferCorrupted(f"{error}; starting over in a new session") from error
                blob.reload(retry=None, timeout=REQUEST_TIMEOUT_SECONDS)
                verify_transfer(local_path, blob, uri)

            _with_retries("upload", uri, upload_once)
    finally:
        progress_line.finish()


def _chunk_sender(http, session_url: str, file, offset: int, size: int, chunk_bytes: int) -> Callable[[], int]:
    """One chunk's attempts: each returns the number of bytes the service holds afterwards."""
    state = {"retry": False}

    def send_chunk() -> int:
        start = _persisted_bytes(http, session_url, size) if state["retry"] else offset
        state["retry"] = True
        if start >= size:
            return size
        file.seek(start)
        data = file.read(chunk_bytes)
        end = start + len(data) - 1
        response = http.put(session_url, data=data, timeout=REQUEST_TIMEOUT_SECONDS,
                            headers={"Content-Range": f"bytes {start}-{end}/{size}"})
        return _bytes_held(response, size)

    return send_chunk


def _persisted_bytes(http, session_url: str, size: int) -> int:
    """Asks a resumable upload session how many bytes it holds (an empty PUT, `bytes */size`)."""
    response = http.put(session_url, timeout=REQUEST_TIMEOUT_SECONDS, headers={"Content-Range": f"bytes */{size}"})
    return _bytes_held(response, size)


def _bytes_held(response, size: int) -> int:
    """The bytes a session holds after a chunk or a status query: 308 names them in its Range header."""
    from google.api_core import exceptions as api_exceptions

    if response.status_code in (200, 201):
        return size
    if response.status_code == 308:
        held = response.headers.get("Range", "")  # "bytes=0-N"; absent when nothing arrived yet
        return int(held.rpartition("-")[2]) + 1 if held else 0
    if response.status_code in (404, 410):
        raise UploadSessionGone(f"upload session answered {response.status_code}")
    raise api_exceptions.from_http_status(response.status_code, response.text[:200] or response.reason or "")


def copy(source: str, destination: str) -> None:
    """Copy one object to another on the server, verified by CRC32C."""
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
            raise TransferCorrupted(f"crc32c mismatch copying {source} to {destination}")

    _with_retries("copy", destination, rewrite)


# --------------------------------------------------------------------------- progress of large transfers


def _transfer_progress(action: str, uri: str, total_bytes: int) -> progress.ProgressLine:
    """A progress line for a large transfer: 'download gs://b/k: 12.0/48.0 MB ( 25%)'."""
    megabytes = 1024 * 1024

    def describe(done_bytes: float, total: float) -> str:
        fraction = min(done_bytes / total, 1.0)
        return f"{action} {uri}: {done_bytes / megabytes:.1f}/{total / megabytes:.1f} MB ({100 * fraction:3.0f}%)"

    return progress.ProgressLine(total_bytes, describe)


class _ProgressWriter:
    """A binary file wrapper that reports the bytes written to a progress line."""

    def __init__(self, file, line: progress.ProgressLine):
        self.file, self.line, self.written = file, line, 0

    def write(self, data) -> int:
        count = self.file.write(data)
        self.written += len(data)
        self.line.update(self.written)
        return count

    def __getattr__(self, name):
        return getattr(self.file, name)
