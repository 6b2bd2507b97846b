"""What every loopback API server of the tests shares: serving on 127.0.0.1 in a thread, and the
record of a request."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RecordedRequest:
    """One request as a server received it; `body` is parsed JSON (or a multipart file's text)."""

    method: str
    path: str
    query: dict[str, str]
    body: object = None
    authorization: str | None = None


class LoopbackServer:
    """Serves a request handler on 127.0.0.1 at an ephemeral port; use as a context manager."""

    def serve(self, handler_class: type[BaseHTTPRequestHandler]) -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self._http.daemon_threads = True
        # shutdown() waits for the serving loop's next poll: a short poll keeps each test's teardown short.
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def host(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exception_info):
        self._http.shutdown()
        self._http.server_close()
