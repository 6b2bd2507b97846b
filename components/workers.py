"""Launching one training process per worker of tf.distribute.MultiWorkerMirroredStrategy.

TensorFlow finds its peers through the TF_CONFIG environment variable: the address of every
worker and this process's own index (index 0 is the chief, which writes checkpoints, the model
and the results). This module only builds that variable and starts or wraps processes; the
training itself is the same command a single process runs.

- Locally, `run_local_workers` starts N copies of a command on 127.0.0.1, one free port each.
- On the cluster every worker is a pod of a JobSet (pipeline/jobset_spec.py) whose container runs
  `python3 -m components.workers COMMAND...`: `tf_config_from_jobset_environment` derives
  TF_CONFIG from the JobSet's stable host names, then COMMAND replaces this process.

No TensorFlow import here: starting workers must not pay for it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from components import checks
from components.errors import USER_ERROR_EXIT_CODE, UserError, reported_user_error
from components.processes import TERMINATE_GRACE_SECONDS, die_with_parent, sigterm_as_interrupt, terminate_groups

# Environment variables pipeline/jobset_spec.py sets on every worker pod: what the JobSet spec knows
# and the pod cannot look up by itself.
JOBSET_NAME_VARIABLE = "CNNPIPE_JOBSET_NAME"
REPLICATED_JOB_VARIABLE = "CNNPIPE_REPLICATED_JOB"
WORKER_COUNT_VARIABLE = "CNNPIPE_WORKER_COUNT"
WORKER_PORT_VARIABLE = "CNNPIPE_WORKER_PORT"
# Set by the Kubernetes Job controller in every pod of an Indexed Job: 0 .. completions-1.
COMPLETION_INDEX_VARIABLE = "JOB_COMPLETION_INDEX"

# How many of a failed worker's last output lines its error shows.
ERROR_TAIL_LINES = 20
# How often the launcher checks its workers' exit status (seconds).
POLL_SECONDS = 0.1


def tf_config(worker_hosts: list[str], index: int) -> str:
    """TF_CONFIG for worker `index` of a cluster of `worker_hosts` ("host:port" each)."""
    if not 0 <= index < len(worker_hosts):
        raise ValueError(f"worker index must be in 0..{len(worker_hosts) - 1}; got {index}")
    return json.dumps({"cluster": {"worker": list(worker_hosts)},
                       "task": {"type": "worker", "index": index}})


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    All sockets stay bound until every port is known, so the ports differ from each other.
    """
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(probe)
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def check_worker_count(worker_count) -> int:
    """The worker count as given by the user, refused unless it is a whole number >= 1."""
    return checks.integer("--workers", worker_count, minimum=1, why="1 = one process")


# ---- local workers --------------------------------------------------------------------------
def run_local_workers(worker_count: int, argv: list[str], *, env: dict | None = None,
                      log_dir: str | os.PathLike | None = None) -> None:
    """Runs `worker_count` copies of `argv` as one multi-worker cluster on 127.0.0.1.

    Worker 0 (the chief) prints to this process's stdout line by line, so its progress lines
    pass through; worker i > 0 writes to `log_dir/worker-i.log` (a temporary directory when
    `log_dir` is None). Returns when every worker exited 0. When one fails, the others are
    terminated and an error names the worker, its exit code and its last lines: a UserError when
    it exited with USER_ERROR_EXIT_CODE (it reported a user mistake), else a RuntimeError.
    Interrupting (Ctrl-C, SIGTERM) terminates every worker before the interruption propagates.
    `env` is the workers' environment (default: this process's); TF_CONFIG is added to it.
    """
    check_worker_count(worker_count)
    hosts = [f"127.0.0.1:{port}" for port in free_ports(worker_count)]
    base_environment = dict(os.environ if env is None else env)
    # Python children buffer stdout in blocks when it is a pipe; progress must arrive at once.
    base_environment["PYTHONUNBUFFERED"] = "1"
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="cnnpipe-workers-"))
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(sigterm_as_interrupt())
        workers: list[subprocess.Popen] = []
        stack.callback(terminate_groups, workers)
        chief_tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
        for index in range(worker_count):
            environment = dict(base_environment, TF_CONFIG=tf_config(hosts, index))
            workers.append(start_worker(argv, environment, None if index == 0 else log_dir / f"worker-{index}.log"))
        relay = threading.Thread(target=relay_lines, args=(workers[0].stdout, chief_tail), daemon=True)
        relay.start()
        failed = wait_for_first_failure(workers)
        if failed is None:
            relay.join(timeout=TERMINATE_GRACE_SECONDS)
            return
        terminate_groups(workers)
        relay.join(timeout=TERMINATE_GRACE_SECONDS)
        index = workers.index(failed)
        tail = list(chief_tail) if index == 0 else last_lines(log_dir / f"worker-{index}.log")
        raise worker_error(index, worker_count, failed.returncode, tail)


def start_worker(argv: list[str], environment: dict, log_path: Path | None) -> subprocess.Popen:
    """Starts one worker: the chief on a pipe (relayed to stdout), the others into a log file."""
    if log_path is None:
        return subprocess.Popen(argv, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1, start_new_session=True,
                                preexec_fn=die_with_parent)
    with open(log_path, "w") as log:
        # The child keeps its own copy of the descriptor; ours can close at once.
        return subprocess.Popen(argv, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent)


def relay_lines(stream, tail: collections.deque) -> None:
    """Copies the chief's output to stdout line by line and keeps its last lines for errors."""
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        tail.append(line.rstrip("\n"))
    stream.close()


def wait_for_first_failure(workers: list[subprocess.Popen]) -> subprocess.Popen | None:
    """Waits until every worker exited 0 (returns None) or one exited otherwise (returns it).

    A collective cannot finish without every peer, so the first failure dooms the rest: they
    are not waited for.
    """
    while True:
        codes = [worker.poll() for worker in workers]
        failures = [worker for worker, code in zip(workers, codes) if code not in (None, 0)]
        if failures:
            return failures[0]
        if all(code == 0 for code in codes):
            return None
        time.sleep(POLL_SECONDS)


def last_lines(path: Path, count: int = ERROR_TAIL_LINES) -> list[str]:
    """The last `count` lines of a worker's log file."""
    with open(path, errors="replace") as log:
        return [line.rstrip("\n") for line in collections.deque(log, maxlen=count)]


def worker_error(index: int, worker_count: int, exit_code: int, tail: list[str]) -> Exception:
    """The error for a failed worker: a one-line UserError for a user mistake, else a RuntimeError."""
    who = f"worker {index} of {worker_count}" + (" (the chief)" if index == 0 else "")
    if exit_code == USER_ERROR_EXIT_CODE:
        reported = [mistake for mistake in map(reported_user_error, tail) if mistake is not None]
        return UserError(reported[-1] if reported else f"{who} stopped on a user mistake (exit code {exit_code})")
    how = f"was killed by {signal.Signals(-exit_code).name}" if exit_code < 0 else f"exited with code {exit_code}"
    return RuntimeError(f"{who} {how}; its last lines:\n" + "\n".join(tail))


# ---- workers in a JobSet --------------------------------------------------------------------
def tf_config_from_jobset_environment(environ: dict | None = None) -> str | None:
    """TF_CONFIG for this pod when it is a worker of a cnnpipe JobSet, else None.

    JobSet gives every pod of an Indexed Job the stable DNS name
    `<jobset>-<replicated job>-<job index>-<completion index>.<subdomain>`; cnnpipe's JobSet has
    one replicated job with one Job (job index 0) and the subdomain is the JobSet's name. The
    Job controller sets JOB_COMPLETION_INDEX; pipeline/jobset_spec.py sets the rest.
    """
    environ = os.environ if environ is None else environ
    jobset = environ.get(JOBSET_NAME_VARIABLE)
    if not jobset:
        return None
    missing = [name for name in (REPLICATED_JOB_VARIABLE, WORKER_COUNT_VARIABLE, WORKER_PORT_VARIABLE,
                                 COMPLETION_INDEX_VARIABLE) if not environ.get(name)]
    if missing:
        raise RuntimeError(f"JobSet worker {jobset!r} lacks the environment variables {', '.join(missing)}; "
                           f"its pod template is not the one pipeline/jobset_spec.py writes")
    replicated_job = environ[REPLICATED_JOB_VARIABLE]
    port = int(environ[WORKER_PORT_VARIABLE])
    hosts = [f"{jobset}-{replicated_job}-0-{index}.{jobset}:{port}"
             for index in range(int(environ[WORKER_COUNT_VARIABLE]))]
    return tf_config(hosts, int(environ[COMPLETION_INDEX_VARIABLE]))


def exec_as_jobset_worker(argv: list[str]) -> None:
    """Sets TF_CONFIG from the JobSet environment (unless already set) and replaces this process with argv."""
    if not argv:
        raise UserError("usage: python3 -m components.workers COMMAND [ARGUMENT...]")
    environment = dict(os.environ)
    if "TF_CONFIG" not in environment:
        config = tf_config_from_jobset_environment(environment)
        if config is not None:
            environment["TF_CONFIG"] = config
    os.execvpe(argv[0], argv, environment)


if __name__ == "__main__":
    exec_as_jobset_worker(sys.argv[1:])
