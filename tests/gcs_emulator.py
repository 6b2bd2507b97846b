"""A real GCS emulator for tests: the ``gcp-storage-emulator`` process on 127.0.0.1.

conftest.py lists this module in ``pytest_plugins``, so every test module can ask for the
``gcs_emulator`` fixture and they all share one process (importing the fixtures into a module
would give that module a session fixture, and an emulator, of its own). The process is started
once per test session (per xdist worker) on a free port, stores its data on disk (so a stopped
and restarted emulator keeps its objects), and is stopped at the end. Each test that asks for ``gcs_emulator`` gets a fresh
bucket, ``STORAGE_EMULATOR_HOST`` pointing at the emulator, and a running emulator even when an
earlier test stopped it.

What the emulator does not do (checked against gcp-storage-emulator 2026.7.19): it ignores
``ifGenerationMatch`` preconditions (a conditional write always succeeds), and it serves one
request at a time. Code that relies on preconditions must stay correct without them here.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
_bucket_numbers = itertools.count()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmulatorServer:
    """The emulator process: start, stop (gracefully, between requests) and restart on the same port."""

    def __init__(self, data_dir: str, port: int | None = None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = os.path.join(data_dir, "emulator.log")

    def is_running(self) -> bool:
        """Whether the process is alive (it may still be starting)."""
        return self.process is not None and self.process.poll() is None

    def answers(self) -> bool:
        """Whether the emulator answers its health check."""
        try:
            with urllib.request.urlopen(self.host + "/", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        """Start the process (if not running) and wait until it answers."""
        if self.is_running():
            return
        command = [
            sys.executable, "-m", "gcp_storage_emulator", "--data-dir", self.data_dir,
            "start", "--host", "127.0.0.1", "--port", str(self.port), "--quiet",
        ]
        with open(self.log_path, "ab") as log:
            # SIGINT is the graceful stop; a parent that ignores it (a CI job in the background)
            # would pass that on, and every stop would wait out STOP_TIMEOUT_SECONDS.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"gcp-storage-emulator exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gcp-storage-emulator did not answer on {self.host}; see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the process: SIGINT lets it finish the request in progress and save its data."""
        if not self.is_running():
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart_later(self, delay_seconds: float) -> threading.Thread:
        """Start the (stopped) emulator again on the same port after ``delay_seconds``, in a thread."""

        def start_later() -> None:
            time.sleep(delay_seconds)
            self.start()

        thread = threading.Thread(target=start_later, daemon=True)
        thread.start()
        return thread

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the JSON API."""
        request = urllib.request.Request(
            f"{self.host}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"creating bucket {name} answered {response.status}")


class GcsEmulator:
    """What a test sees: the emulator, its own fresh bucket, and helpers."""

    def __init__(self, server: EmulatorServer, bucket: str):
        self.server = server
        self.host = server.host
        self.bucket = bucket

    def url(self, key: str = "") -> str:
        """``gs://<this test's bucket>/<key>``."""
        return f"gs://{self.bucket}/{key.lstrip('/')}" if key else f"gs://{self.bucket}"

    def stored_object_path(self, key: str) -> str:
        """Where the emulator keeps an object's bytes on disk (to damage them on purpose)."""
        return os.path.join(self.server.data_dir, ".cloudstorage", self.bucket, *key.split("/"))

    def stop(self) -> None:
        """Stop the emulator (a later test gets it running again)."""
        self.server.stop()

    def start(self) -> None:
        """Start the emulator again on the same port, with the same data."""
        self.server.start()

    def restart_later(self, delay_seconds: float) -> threading.Thread:
        """Start the stopped emulator again after ``delay_seconds`` (returns the thread doing it)."""
        return self.server.restart_later(delay_seconds)


@pytest.fixture(scope="session")
def gcs_emulator_server(tmp_path_factory):
    """The emulator process for the whole session."""
    server = EmulatorServer(str(tmp_path_factory.mktemp("gcs-emulator")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gcs_emulator(gcs_emulator_server, monkeypatch):
    """A running emulator, ``STORAGE_EMULATOR_HOST`` set, and a fresh bucket for this test."""
    gcs_emulator_server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator_server.host)
    bucket = f"test-bucket-{os.getpid()}-{next(_bucket_numbers)}"
    gcs_emulator_server.create_bucket(bucket)
    return GcsEmulator(gcs_emulator_server, bucket)
