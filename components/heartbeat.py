"""The launcher's heartbeat: workers on the cluster stop when the train task that launched them is gone.

A JobSet in the workers' namespace cannot be owned by the launching pod (an ownerReference does
not cross namespaces), so Kubernetes does not delete it when that pod is killed. Instead the
launcher renews a small object in the run's durable storage (the gs:// checkpoint location the
workers already share), and every worker watches it on a thread of its own:

- the launcher (`LauncherHeartbeat`) writes the object before the workers start and rewrites it
  every RENEW_FRACTION of the timeout while it waits for them; it removes it when it is done;
- a worker (`watch_launcher`) reads the object's generation every CHECK_FRACTION of the timeout.
  When the generation has not changed for the timeout, by the worker's own clock (so the
  launcher's and the workers' clocks need not agree), the worker exits with
  LAUNCHER_GONE_EXIT_CODE, which the JobSet's failure policy turns into a failed JobSet
  (pipeline/jobset_spec.py): its pods stop and release their GPUs.

A read that fails (a storage outage) says nothing about the launcher: the timeout starts again
from the next successful read, so workers never stop because storage was away for a while.
Local runs do not use this: their workers die with the process that started them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from components import checks, storage
from components.renewal import RenewedRecord

# The heartbeat object, beside the checkpoint's state.json and lease.json.
HEARTBEAT_FILE = "launcher-heartbeat.json"
# Set by the launcher on every worker pod: where its heartbeat is, and how long it may go
# unrenewed before the workers stop (seconds). The launcher takes the timeout from its own
# environment variable of the same name when set (on the train task), else TIMEOUT_SECONDS.
HEARTBEAT_VARIABLE = "CNNPIPE_LAUNCHER_HEARTBEAT"
TIMEOUT_VARIABLE = "CNNPIPE_LAUNCHER_TIMEOUT_SECONDS"
# Workers stop after TIMEOUT_SECONDS without a renewal; the launcher renews every RENEW_FRACTION
# of it (60 s by default): four renewals in a row may fail, each already retried for up to 30 s
# by components.storage.
TIMEOUT_SECONDS = 300.0
RENEW_FRACTION = 0.2
# A worker reads the heartbeat this often, as a fraction of the timeout (every 30 s by default).
CHECK_FRACTION = 0.1
# The exit code of a worker that stopped because its launcher is gone (sysexits' EX_UNAVAILABLE:
# the service it works for is no longer there). The JobSet fails on it instead of restarting.
LAUNCHER_GONE_EXIT_CODE = 69

logger = logging.getLogger(__name__)


class LauncherHeartbeat(RenewedRecord):
    """The launcher's side: renews the heartbeat object at `uri` on a thread while in the `with` block.

    The first write happens on entry (a failure there raises: workers started without a
    heartbeat would stop after the timeout); later failures are logged and tried again at the
    next renewal. The object is removed on exit.
    """

    def __init__(self, uri: str, timeout_seconds: float | None = None):
        self.uri = uri
        self.timeout_seconds = timeout_from_environment() if timeout_seconds is None else timeout_seconds
        super().__init__(self.timeout_seconds * RENEW_FRACTION, f"the heartbeat {uri}")
        self.renewals = 0

    def worker_environment(self) -> dict[str, str]:
        """The environment variables that make a worker watch this heartbeat (`watch_launcher`)."""
        return {HEARTBEAT_VARIABLE: self.uri, TIMEOUT_VARIABLE: f"{self.timeout_seconds:g}"}

    def release(self) -> None:
        storage.delete(self.uri)  # the workers are gone by now: left behind, nobody reads it

    def beat(self) -> None:
        """Writes the heartbeat once (atomically: a worker never reads half of it)."""
        self.renewals += 1
        storage.write_json(self.uri, {"launcher": socket.gethostname(), "renewals": self.renewals,
                                      "renewed_at": time.time(), "timeout_seconds": self.timeout_seconds})

    take = renew_once = beat  # the first write on entry raises; a failed renewal is logged


class HeartbeatWatch:
    """The worker's side: tells whether the heartbeat at `uri` went `timeout_seconds` without a renewal.

    `clock` is a monotonic clock in seconds (the worker's own: launcher and worker clocks need not agree).
    """

    def __init__(self, uri: str, timeout_seconds: float, clock=time.monotonic):
        self.uri, self.timeout_seconds, self.clock = uri, timeout_seconds, clock
        self.generation: int | None = None
        self.changed_at = clock()

    def check(self) -> bool:
        """Reads the heartbeat once; True when it is stale (unchanged, or missing, for the whole timeout)."""
        try:
            generation = storage.generation(self.uri)  # 0 when it is missing
        except (OSError, RuntimeError, ValueError) as error:
            # Storage is away, which says nothing about the launcher: wait a whole timeout again.
            logger.warning("could not read the launcher's heartbeat %s: %s", self.uri, error)
            self.changed_at = self.clock()
            return False
        if generation != self.generation:
            self.generation, self.changed_at = generation, self.clock()
        return self.clock() - self.changed_at > self.timeout_seconds

    def unrenewed_seconds(self) -> float:
        return self.clock() - self.changed_at


def watch_launcher(environ: dict | None = None) -> threading.Thread | None:
    """Starts the worker's watch on a daemon thread when the launcher asked for one (HEARTBEAT_VARIABLE);
    returns the thread, or None (a local run, or a single process).

    When the heartbeat is stale the whole process exits with LAUNCHER_GONE_EXIT_CODE at once,
    even while the main thread is blocked in a collective.
    """
    environ = os.environ if environ is None else environ
    uri = environ.get(HEARTBEAT_VARIABLE)
    if not uri:
        return None
    timeout_seconds = timeout_from_environment(environ)
    watch = HeartbeatWatch(uri, timeout_seconds)
    # The reason goes to a copy of standard error made now: TensorFlow's import mutes descriptor 2
    # for a while (components/keras_setup.py), and the watch may fire just then.
    thread = threading.Thread(target=_watch, args=(watch, timeout_seconds * CHECK_FRACTION, os.dup(2)),
                              name="launcher heartbeat", daemon=True)
    thread.start()
    return thread


def timeout_from_environment(environ: dict | None = None) -> float:
    """The heartbeat's timeout in seconds: TIMEOUT_VARIABLE when set, else TIMEOUT_SECONDS."""
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_VARIABLE, "")
    if not text:
        return TIMEOUT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = text  # refused below, as received
    return checks.number(TIMEOUT_VARIABLE, value, above=0, hint=f"give seconds, e.g. {TIMEOUT_SECONDS:g} (the default)")


def _watch(watch: HeartbeatWatch, check_seconds: float, stderr: int) -> None:
    while not watch.check():
        time.sleep(check_seconds)
    line = (f"the launcher's heartbeat {watch.uri} was not renewed for {watch.unrenewed_seconds():.0f} s (the "
            f"train task that started these workers is gone): stopping with exit code {LAUNCHER_GONE_EXIT_CODE}\n")
    os.write(stderr, line.encode())
    # Not sys.exit: that only ends this thread. os._exit ends the process even mid-collective.
    os._exit(LAUNCHER_GONE_EXIT_CODE)
