"""Storage faults against the real gs:// emulator (stopped mid-transfer) and a stand-in of the
GKE metadata server that Workload Identity takes its tokens from."""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from components import storage
from components.storage import gcs
from tests.loopback_http import LoopbackServer

CHUNK = 256 * 1024  # the smallest chunk GCS accepts


class MetadataServer(LoopbackServer):
    """The token endpoints of the GCE/GKE metadata server; refuses the first `refusals` requests with 403."""

    def __init__(self, refusals: int):
        self.refusals = refusals
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if server.refusals > 0:
                    server.refusals -= 1
                    return self._answer(403, b"")
                if self.path.split("?")[0].endswith("/token"):
                    return self._answer(200, json.dumps({"access_token": "token", "expires_in": 3600,
                                                         "token_type": "Bearer"}).encode())
                return self._answer(200, json.dumps({"email": "runner@example.iam.gserviceaccount.com",
                                                     "scopes": ["cloud-platform"], "aliases": ["default"]}).encode())

            def _answer(self, code, body):
                self.send_response(code)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        self.serve(Handler)


def point_metadata_at(metadata: MetadataServer, monkeypatch) -> None:
    """Sends google-auth's metadata requests to `metadata` (it reads GCE_METADATA_HOST once, when
    first imported, so an earlier test's address would stick without the second line)."""
    from google.auth.compute_engine import _metadata

    host = metadata.host.removeprefix("http://")
    monkeypatch.setenv("GCE_METADATA_HOST", host)
    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", host)


def refreshing_read(uri):
    """A storage call that first refreshes Workload Identity credentials, as the real client does."""
    from google.auth import compute_engine
    from google.auth.transport.requests import Request

    credentials = compute_engine.Credentials()

    def read():
        credentials.refresh(Request())
        return storage.read_json(uri)

    return read


def test_a_failed_token_refresh_is_retried_not_a_user_mistake(gcs_emulator, monkeypatch):
    uri = gcs_emulator.url("state.json")
    storage.write_json(uri, {"epoch": 2})
    with MetadataServer(refusals=2) as metadata:
        point_metadata_at(metadata, monkeypatch)
        assert gcs._with_retries("read", uri, refreshing_read(uri)) == {"epoch": 2}
        assert metadata.refusals == 0


def test_a_lasting_refresh_failure_is_an_outage_never_recorded_as_a_user_mistake(gcs_emulator, monkeypatch):
    from google.auth.exceptions import RefreshError

    monkeypatch.setenv(storage.RETRY_SECONDS_ENVIRONMENT_VARIABLE, "0")  # no waiting: the first failure lasts
    uri = gcs_emulator.url("state.json")
    with MetadataServer(refusals=1) as metadata:
        point_metadata_at(metadata, monkeypatch)
        with pytest.raises(storage.StorageUnavailableError) as raised:
            gcs._with_retries("read", uri, refreshing_read(uri))
    assert not isinstance(raised.value, ValueError)  # not a UserError: no failure record, exit code 1
    assert isinstance(raised.value.__cause__, RefreshError)
    assert metadata.refusals == 0  # the metadata server itself refused


def test_a_transfer_longer_than_the_budget_is_still_retried(monkeypatch, tmp_path):
    """The budget counts the waits between attempts, not the attempts."""
    monkeypatch.setenv(storage.RETRY_SECONDS_ENVIRONMENT_VARIABLE, "1")
    attempts = []

    def long_transfer_that_breaks_once():
        attempts.append(time.monotonic())
        time.sleep(1.2)  # longer than the whole budget
        if len(attempts) == 1:
            raise ConnectionResetError("connection reset by peer")
        return "done"

    assert gcs._with_retries("upload", "gs://bucket/big", long_transfer_that_breaks_once) == "done"
    assert len(attempts) == 2


def record_chunk_requests(monkeypatch) -> list[str]:
    """The Content-Range of every answered request of a resumable upload session (calls pass through)."""
    ranges, put = [], requests.Session.put

    def recording_put(self, url, *args, **kwargs):
        response = put(self, url, *args, **kwargs)
        ranges.append(kwargs.get("headers", {}).get("Content-Range", ""))
        return response

    monkeypatch.setattr(requests.Session, "put", recording_put)
    return ranges


def stop_after_first_chunk(gcs_emulator, ranges) -> threading.Thread:
    """Stops the emulator once the first chunk was answered, and starts it again a second later.

    (Once a chunk is answered the service holds it. The emulator answers a status query of a
    session that holds nothing with `Range: bytes=0-0`, one byte, where GCS sends no Range, so
    the stop waits for the first answer.)
    """

    def watch():
        deadline = time.monotonic() + 30
        while not any(item.startswith("bytes 0-") for item in ranges) and time.monotonic() < deadline:
            time.sleep(0.001)
        gcs_emulator.stop()
        time.sleep(1.0)
        gcs_emulator.start()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_large_upload_resumes_by_chunk_after_the_service_went_away(gcs_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv(storage.RETRY_SECONDS_ENVIRONMENT_VARIABLE, "20")
    path = tmp_path / "model.keras"
    data = os.urandom(12 * CHUNK + 1000)
    path.write_bytes(data)
    uri = gcs_emulator.url("checkpoints/model.keras")
    ranges = record_chunk_requests(monkeypatch)
    watcher = stop_after_first_chunk(gcs_emulator, ranges)
    gcs._upload_in_chunks(str(path), uri, len(data), chunk_bytes=CHUNK)
    watcher.join()
    assert storage.read_bytes(uri) == data
    chunk_starts = [int(item.split()[1].split("-")[0]) for item in ranges if not item.startswith("bytes */")]
    assert chunk_starts.count(0) == 1, "the upload went on from where the service was, not from byte 0"
    assert any(item.startswith("bytes */") for item in ranges), "it asked the service how much had arrived"
    assert chunk_starts == sorted(chunk_starts)


def test_a_large_upload_goes_through_the_chunked_path(gcs_emulator, monkeypatch, tmp_path):
    monkeypatch.setattr(gcs, "LARGE_OBJECT_BYTES", CHUNK)
    monkeypatch.setattr(gcs, "CHUNK_BYTES", CHUNK)
    ranges = record_chunk_requests(monkeypatch)
    path = tmp_path / "big.bin"
    data = os.urandom(3 * CHUNK + 7)
    path.write_bytes(data)
    storage.upload(str(path), gcs_emulator.url("big.bin"))
    assert storage.read_bytes(gcs_emulator.url("big.bin")) == data
    assert ranges == [f"bytes {start}-{min(start + CHUNK, len(data)) - 1}/{len(data)}"
                      for start in range(0, len(data), CHUNK)]
