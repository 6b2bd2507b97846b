"""Child processes: whether one still runs, and stopping it with whatever it started.

The worker launcher (components/workers.py), the cleanup of abandoned staging folders (atomic.py) and
the local pipeline runner (pipeline/local_run.py) all use these. Linux: process state is read
from /proc and a child can ask to die with its parent; elsewhere those parts do nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time

# How long a process may take to exit after SIGTERM before it is killed (seconds).
TERMINATE_GRACE_SECONDS = 10.0
# How often a stop checks whether its processes have exited (seconds).
POLL_SECONDS = 0.1


def process_running(pid: int) -> bool:
    """Whether process `pid` is alive on this machine and not a zombie waiting for its parent (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendant_processes(pid: int) -> list[int]:
    """Every process below `pid` (children first), read from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat_file:
                parent = int(stat_file.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def terminate_processes(pids: list[int], grace_seconds: float = TERMINATE_GRACE_SECONDS) -> None:
    """SIGTERM to each, then SIGKILL to those still running after `grace_seconds`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(process_running(pid) for pid in pids):
        time.sleep(POLL_SECONDS)
    for pid in pids:
        if process_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def signal_group(process: subprocess.Popen, signal_number: int) -> None:
    """Signals a process and whatever it started (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal_number)


def terminate_groups(processes: list[subprocess.Popen], grace_seconds: float = TERMINATE_GRACE_SECONDS) -> None:
    """SIGTERM to every running process's group, SIGKILL to those still alive after the grace."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait()


def die_with_parent() -> None:
    """In a new child (a `preexec_fn`): ask Linux to SIGKILL it when its parent dies, even by SIGKILL.

    Otherwise a killed launcher leaves its workers waiting forever on each other's collectives.
    Elsewhere than Linux this does nothing (the launcher still stops them when it can).
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Turns SIGTERM into KeyboardInterrupt meanwhile, so cleanup runs when a runner stops us.

    Python's default SIGTERM ends the process at once and would leave its children orphaned.
    Signal handlers can only be set from the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signal_number, frame):
        raise KeyboardInterrupt(f"signal {signal_number}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
