"""Training checkpoints: a local directory whose state.json is the commit point, mirrored to gs://.

Layout of a checkpoint directory:
    state.json               the run's progress (epochs done, history, schedule state, fingerprint);
                             written last, so it only ever names complete model files
    epoch-NNNN-AAAAAA.keras  the model with its optimizer after the last completed epoch
    best-NNNN-AAAAAA.keras   the best epoch by validation accuracy so far
    failed.json              present when the run stopped on a mistake that a retry cannot fix
    lease.json               which run trains into this location now, renewed while it does

AAAAAA names the attempt (the process) that wrote the file. A preempted attempt can leave an
uploaded epoch file that no state.json names yet; the next attempt trains that epoch again and
writes it under its own name, so a push never mistakes the old upload for the new weights.

Keras saves to local files, so a gs:// location is mirrored in a local scratch directory:
pulled before training, pushed after every epoch in the same order as the local writes.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
import time
from typing import Any

from components import atomic, storage
from components.errors import UserError
from components.processes import process_running
from components.renewal import RenewedRecord

STATE_FILE = "state.json"
FAILURE_FILE = "failed.json"
LEASE_FILE = "lease.json"
# Beside a local location's lease: the lock its holder keeps open (see Lease).
LEASE_LOCK_FILE = ".lease.lock"  # hidden, like the local back end's own lock files
# A lease not renewed for this long belongs to a run that is gone (killed, preempted) and may
# be taken over; a live run renews its lease every LEASE_RENEW_SECONDS (both in seconds).
LEASE_SECONDS = 600.0
LEASE_RENEW_SECONDS = 120.0
# Names the holder of a lease when the caller does not: the JobSet launcher sets it on every
# worker pod to its pipeline run id, so each attempt of the group holds the same lease.
HOLDER_VARIABLE = "CNNPIPE_RUN_HOLDER"
FORMAT_VERSION = 1
# Names the model files this process writes (see the module docstring).
ATTEMPT = secrets.token_hex(3)


def save(checkpoint_dir: str, model, state: dict[str, Any], is_best: bool) -> dict[str, Any]:
    """Saves the model (with optimizer) and `state` for completed epoch state['epoch'].

    The model goes to a new epoch-numbered file first, then state.json is replaced atomically to
    point at it; an interruption at any moment leaves the previous consistent checkpoint. Files
    no longer referenced are removed afterwards. Returns the state as written.
    """
    os.makedirs(checkpoint_dir, exist_ok=True)
    epoch = state["epoch"]
    state = dict(state, checkpoint=f"epoch-{epoch:04d}-{ATTEMPT}.keras")
    save_model_atomically(model, os.path.join(checkpoint_dir, state["checkpoint"]))
    if is_best:
        state["best_checkpoint"] = f"best-{epoch:04d}-{ATTEMPT}.keras"
        shutil.copyfile(os.path.join(checkpoint_dir, state["checkpoint"]), os.path.join(checkpoint_dir, state["best_checkpoint"]))
    storage.write_json(os.path.join(checkpoint_dir, STATE_FILE), state)
    referenced = {STATE_FILE, state["checkpoint"], state["best_checkpoint"]}
    for name in os.listdir(checkpoint_dir):
        if name not in referenced and name.endswith(".keras"):
            os.remove(os.path.join(checkpoint_dir, name))
    return state


def load(checkpoint_dir: str) -> dict[str, Any] | None:
    """Returns the checkpoint state in `checkpoint_dir` (None when there is none), with
    'checkpoint_path' and 'best_checkpoint_path' set to the model files' local paths."""
    state_path = os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.exists(state_path):
        return None
    with open(state_path) as state_file:
        state = json.load(state_file)
    if state.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint at {checkpoint_dir} has format_version {state.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}; delete it"
        )
    state["checkpoint_path"] = os.path.join(checkpoint_dir, state["checkpoint"])
    state["best_checkpoint_path"] = os.path.join(checkpoint_dir, state["best_checkpoint"])
    return state


def pull(remote_dir: str, local_dir: str) -> None:
    """Copies the checkpoint under a gs:// prefix (state.json, the model files it names and a
    failure record) into `local_dir`; does nothing when there is none yet."""
    failure_uri = storage.join(remote_dir, FAILURE_FILE)
    if storage.exists(failure_uri):
        storage.download(failure_uri, os.path.join(local_dir, FAILURE_FILE))
    state_uri = storage.join(remote_dir, STATE_FILE)
    if not storage.exists(state_uri):
        return
    state = storage.read_json(state_uri)
    for name in {state["checkpoint"], state["best_checkpoint"]}:
        storage.download(storage.join(remote_dir, name), os.path.join(local_dir, name))
    storage.download(state_uri, os.path.join(local_dir, STATE_FILE))


def push(local_dir: str, remote_dir: str, state: dict[str, Any]) -> None:
    """Uploads the model files `state` names, then state.json, then removes files no longer named.

    The same order as `save`: a preempted pod can stop between any two uploads and the remote
    state.json still names complete files. A named file already there is skipped: its name says
    which attempt wrote it, so it holds these very weights.
    """
    named = {state["checkpoint"], state["best_checkpoint"]}
    remote_files = set(storage.list_files(remote_dir))
    for name in sorted(named - remote_files):
        storage.upload(os.path.join(local_dir, name), storage.join(remote_dir, name))
    storage.write_json(storage.join(remote_dir, STATE_FILE), state)
    for name in remote_files - named - {STATE_FILE, FAILURE_FILE}:
        if name.endswith(".keras"):
            storage.delete(storage.join(remote_dir, name))


def default_holder() -> str:
    """Who trains, when the caller does not say (a pipeline run names itself): this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_is_gone(holder: str) -> bool:
    """Whether a holder named by default_holder() on this very host is a process that has ended
    (a local run killed with SIGKILL need not wait for its lease to expire)."""
    host, _, pid = holder.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not process_running(int(pid))


class Lease(RenewedRecord):
    """A run's claim on a checkpoint location (local or gs://): while it holds a fresh lease, no
    other run (another pipeline run with the same run_name, say) may train into the location,
    whose checkpoints the two would otherwise prune from under each other. A retry of the same
    run (the same holder) takes its own lease back at once; a lease left by a run that is gone
    expires after LEASE_SECONDS. Use as a context manager: renewed in a thread, released at the end.
    """

    def __init__(self, location: str, holder: str, lease_seconds: float = LEASE_SECONDS,
                 renew_seconds: float = LEASE_RENEW_SECONDS):
        super().__init__(renew_seconds, f"the lease on {location}")
        self.uri = storage.join(location, LEASE_FILE)
        self.location, self.holder = location, holder
        self.lease_seconds = lease_seconds
        self._lock_file = None

    def release(self) -> None:
        """Removes the lease if it is still this run's, and lets go of the local lock."""
        try:
            if storage.exists(self.uri) and storage.read_json(self.uri).get("holder") == self.holder:
                storage.delete(self.uri)
        finally:
            self._unlock()

    def claim(self) -> None:
        """Takes the lease, or raises a one-line UserError naming the run that holds it."""
        holder_lock_free = self._lock_local_location()
        try:
            self._write_claim(holder_lock_free)
        except BaseException:
            self._unlock()  # a lease not taken keeps no lock
            raise

    take = claim  # on entering the `with` block

    def _write_claim(self, holder_lock_free: bool) -> None:
        for _ in range(3):  # another run may write between our read and our conditional write
            try:
                data, generation = storage.read_with_generation(self.uri)
                current = json.loads(data)
            except FileNotFoundError:
                current, generation = None, 0
            if (current and current.get("holder") != self.holder and not holder_lock_free
                    and not holder_is_gone(current.get("holder", ""))):
                age = time.time() - float(current.get("renewed_at", 0))
                if age < self.lease_seconds:
                    raise UserError(
                        f"run {current.get('holder')} is training into {self.location} (its lease was renewed "
                        f"{max(age, 0):.0f} s ago); give this run another run_name, or wait until that one ends")
            try:
                self.renew_once(generation)
                return
            except storage.PreconditionFailedError:
                continue
        raise UserError(f"runs keep claiming {self.location} at the same time; give this run another run_name")

    def _unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases its lock
            self._lock_file = None

    def _lock_local_location(self) -> bool:
        """For a local location, takes an exclusive lock on .lease.lock, held as long as the lease.

        The kernel releases the lock when its process ends, however it ends and whatever process
        namespace it ran in (a killed container sharing the folder included), so a free lock means
        the lease's holder is gone and its lease can be taken over at once. Returns whether the
        lock was free; False for gs:// (leases there expire instead) and while another run holds it.
        """
        if storage.is_gcs(self.location):
            return False
        os.makedirs(self.location, exist_ok=True)
        lock_file = open(os.path.join(self.location, LEASE_LOCK_FILE), "a")
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            return False
        self._lock_file = lock_file
        return True

    def renew_once(self, generation: int | None = None) -> None:
        """Writes the lease: only over the given generation when one is given (0: only if absent)."""
        storage.write_json(self.uri, {"holder": self.holder, "renewed_at": time.time()},
                           if_generation_match=generation)


def record_failure(location: str, fingerprint: str, message: str) -> None:
    """Remembers, beside the checkpoint (local dir or gs://), that this run stopped on a mistake
    a retry cannot fix (a user error, a diverged loss).

    The cluster retries a failed train task whatever the cause (KFP's retry policy cannot look
    at exit codes); with this record a retry of the same run stops at once with the same message
    instead of training again until it fails the same way.
    """
    storage.write_json(storage.join(location, FAILURE_FILE), {"fingerprint": fingerprint, "message": message})


def check_recorded_failure(checkpoint_dir: str, location: str, fingerprint: str) -> None:
    """Raises the recorded failure of this same run (same fingerprint) found in `checkpoint_dir`
    (the local directory or mirror). A record from another configuration is stale (the user
    changed something since) and is removed from `location` (what the user named) and the mirror."""
    path = os.path.join(checkpoint_dir, FAILURE_FILE)
    if not os.path.exists(path):
        return
    with open(path) as failure_file:
        failure = json.load(failure_file)
    if failure.get("fingerprint") == fingerprint:
        raise UserError(f"{failure.get('message')} (this run stopped the same way before; change the recipe or use a new --run-name)")
    storage.delete(storage.join(location, FAILURE_FILE))
    storage.delete(path)


def save_model_atomically(model, path: str) -> None:
    """model.save to a temporary name beside `path`, then rename (Keras requires the .keras suffix)."""
    with atomic.replaced_on_success(path, suffix=".keras") as temporary:
        model.save(temporary)
