"""A record in storage (local or gs://) that a thread keeps fresh while a `with` block runs.

Both the checkpoint lease (components/checkpoints.py) and the launcher's heartbeat
(components/heartbeat.py) are such records: written on entry (a failure there raises), rewritten
every `renew_seconds` on a daemon thread, released on exit. Storage may be away for a while: a
failed renewal or release is logged and left to the next renewal, or to the record's expiry.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

# What a storage call raises when storage is away (components.storage has already retried it).
STORAGE_ERRORS = (OSError, RuntimeError, ValueError)


class RenewedRecord:
    """Subclasses say how the record is taken (`take`), rewritten (`renew_once`) and released
    (`release`); `description` names it in log lines ("the lease on gs://...")."""

    def __init__(self, renew_seconds: float, description: str):
        self.renew_seconds, self.description = renew_seconds, description
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name=description, daemon=True)

    def take(self) -> None:
        raise NotImplementedError

    def renew_once(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.take()
        self._renewer.start()
        return self

    def __exit__(self, *exception_info) -> None:
        self._stop.set()
        self._renewer.join(timeout=self.renew_seconds)
        try:
            self.release()
        except STORAGE_ERRORS as error:  # left behind, it expires by itself
            logger.warning("could not release %s: %s", self.description, error)

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_seconds):
            try:
                self.renew_once()
            except STORAGE_ERRORS as error:  # the next renewal may succeed
                logger.warning("could not renew %s: %s", self.description, error)
