"""Retries of GCS calls: which failures are transient, and the jittered exponential backoff
within the budget ``CNNPIPE_STORAGE_RETRY_SECONDS`` (default 30 s).

The budget bounds the waits between the attempts of one call, not the attempts themselves
(each is bounded by the requests' own timeouts): a transfer that runs for minutes and then
breaks is tried again like a short call. A failed credentials refresh is transient too: with
Workload Identity the token comes from the node's metadata server, which restarts with its node.
"""

from __future__ import annotations

import http.client
import math
import os
import random
import re
import time
from typing import Callable, TypeVar

from components.errors import StorageError, StorageUnavailableError, UserError
from components.storage.checksums import TransferCorrupted


class UploadSessionGone(Exception):
    """A resumable upload session expired or was lost: the upload starts over in a new one
    (passed through the retries of one chunk, retried by those of the whole upload)."""


RETRY_SECONDS_ENVIRONMENT_VARIABLE = "CNNPIPE_STORAGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0
MAX_ATTEMPTS = 8
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 8.0

Result = TypeVar("Result")


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


def is_transient(error: BaseException) -> bool:
    """Whether retrying ``error`` may succeed: throttling, server errors, network trouble."""
    import requests
    import urllib3
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud.storage import exceptions as storage_exceptions

    if isinstance(error, (TransferCorrupted, storage_exceptions.DataCorruption)):
        return True
    if isinstance(error, api_exceptions.GoogleAPICallError):
        return error.code in (408, 429) or (error.code or 0) >= 500
    if isinstance(error, storage_exceptions.InvalidResponse):
        status = getattr(getattr(error, "response", None), "status_code", 0) or 0
        return status in (408, 429) or status >= 500
    if isinstance(error, (auth_exceptions.TransportError, auth_exceptions.RefreshError)):
        # A token refresh fails when Workload Identity's metadata server answers late or with a
        # 5xx (it restarts with its node); a lasting failure ends as StorageUnavailableError.
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


def describe_error(error: BaseException) -> str:
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


def with_retries(
    action: str,
    uri: str,
    operation: Callable[[], Result],
    permanent_error: Callable[[BaseException, str, str], Exception],
) -> Result:
    """Run ``operation``; retry transient errors with jittered exponential backoff, waiting at most
    the budget in all between attempts. Any other failure becomes ``permanent_error(error, uri, action)``."""
    budget_seconds = retry_seconds()
    waited = 0.0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return operation()
        except (StorageError, StorageUnavailableError, FileNotFoundError, UploadSessionGone):
            raise
        except Exception as error:
            if not is_transient(error):
                raise permanent_error(error, uri, action) from error
            # Jitter keeps concurrent clients from retrying in lockstep.
            backoff = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1))
            backoff *= random.uniform(0.5, 1.0)
            if attempt == MAX_ATTEMPTS or waited + backoff > budget_seconds:
                raise StorageUnavailableError(
                    f"cannot {action} {uri}: still failing after {attempt} attempts, {waited:.1f} s of waiting "
                    f"between them ({describe_error(error)}); check the network or the storage service, or raise "
                    f"{RETRY_SECONDS_ENVIRONMENT_VARIABLE}"
                ) from error
            time.sleep(backoff)
            waited += backoff
    raise AssertionError("unreachable: the loop returns or raises")
