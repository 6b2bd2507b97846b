"""What every loopback API server of the tests shares: serving on 127.0.0.1 in a thread, the
record of a request, injected faults (an error status or a hang on chosen requests), and the
base of their request handlers (JsonRequestHandler)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# An injected fault that answers nothing: the request waits until the server stops or
# HANG_SECONDS pass, then the connection closes without a response.
HANG = "hang"
HANG_SECONDS = 30.0


@dataclass
class RecordedRequest:
    """One request as a server received it; `body` is parsed JSON (or a multipart file's text)."""

    method: str
    path: str
    query: dict[str, str]
    body: object = None
    authorization: str | None = None


class LoopbackServer:
    """Serves a request handler on 127.0.0.1 at an ephemeral port; use as a context manager.

    `inject(method, path_part, *faults)` makes the next requests with that method whose path
    contains `path_part` answer with each fault in turn (an HTTP status, or HANG) instead of
    being served; requests after the last fault are served as usual. Faulted requests are
    recorded in `faulted`.
    """

    def serve(self, handler_class: type[BaseHTTPRequestHandler]) -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self._http.daemon_threads = True
        # shutdown() waits for the serving loop's next poll: a short poll keeps each test's teardown short.
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._faults: list[tuple[str, str, list]] = []
        self._faults_lock = threading.Lock()
        self._stopping = threading.Event()
        self.faulted: list[RecordedRequest] = []

    def inject(self, method: str, path_part: str, *faults: int | str) -> None:
        """Answers the next matching requests with `faults` (HTTP status codes or HANG), one each."""
        with self._faults_lock:
            self._faults.append((method, path_part, list(faults)))

    def take_fault(self, method: str, path: str, query: dict | None = None) -> int | str | None:
        """The fault this request draws (consumed), or None when it is to be served."""
        with self._faults_lock:
            for fault_method, path_part, faults in self._faults:
                if fault_method == method and path_part in path and faults:
                    self.faulted.append(RecordedRequest(method, path, dict(query or {})))
                    return faults.pop(0)
        return None

    def hang(self) -> None:
        """What a handler does for a HANG fault: waits without answering (ends when the server stops)."""
        self._stopping.wait(HANG_SECONDS)

    @property
    def host(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exception_info):
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()


class JsonRequestHandler(BaseHTTPRequestHandler):
    """What the servers' request handlers share: reading a request, answering an injected fault,
    answering JSON, and a quiet log."""

    def read_request(self) -> tuple[str, dict[str, str], bytes]:
        """The request's path, its query (the last value of each key) and its body."""
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        return url.path, query, self.rfile.read(length) if length else b""

    def answered_fault(self, server: LoopbackServer, path: str, query: dict,
                       fault_answer: Callable[[int], tuple[int, dict]]) -> bool:
        """Whether this request drew an injected fault, now answered: HANG waits without an answer,
        a status code is answered with `fault_answer(code)` (the status and the JSON body)."""
        fault = server.take_fault(self.command, path, query)
        if fault is None:
            return False
        if fault == HANG:
            server.hang()
        else:
            self.send_json(*fault_answer(fault))
        return True

    def send_json(self, code: int, response: dict) -> None:
        encoded = json.dumps(response).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format, *args):  # keep test output quiet
        pass
