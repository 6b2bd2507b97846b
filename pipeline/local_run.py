"""Run the pipeline on this machine with the real KFP local runner, and gather what it wrote.

``kfp.local`` executes the very same ``@dsl.pipeline`` as the cluster: each task runs in a
subprocess of this Python (``SubprocessRunner(use_venv=False)``, no Docker needed) or in the
project image (``DockerRunner``). Artifacts land under the pipeline root; ``collect_outputs``
then puts the report and each model's files where the user asked for them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import warnings

from pipeline.config import RunConfig
from pipeline.console import Console

from components.artifacts import HISTORY_FILE, MODEL_FILE, REPORT_FILES, REPORT_HTML_FILE
from components.errors import UserError
from components.processes import descendant_processes, terminate_processes
from components.results import read_train_result

MODEL_FILES = (MODEL_FILE, HISTORY_FILE)


def init_local_runner(
    runner: str, pipeline_root: str, gpus: bool = False, inputs: tuple = (), outputs: tuple = ()
) -> None:
    """Point ``kfp.local`` at ``pipeline_root`` with the chosen runner.

    ``inputs`` (the dataset) and ``outputs`` (checkpoint root, registry) are the run's other
    locations; the Docker runner mounts the local ones into every step, at the same paths.
    """
    from kfp import local

    if runner == "subprocess":
        chosen = local.SubprocessRunner(use_venv=False)
    elif runner == "docker":
        chosen = docker_runner(gpus, pipeline_root, inputs, outputs)
    else:
        raise UserError(f"unknown runner '{runner}'; choose subprocess or docker")
    local.init(runner=chosen, pipeline_root=pipeline_root, raise_on_error=True)


def docker_runner(gpus: bool, pipeline_root: str, inputs: tuple = (), outputs: tuple = ()):
    """A ``DockerRunner`` after checking that a Docker engine answers (fails in a second if not)."""
    import docker
    from kfp import local

    try:
        docker.from_env(timeout=5).ping()
    except Exception as error:  # the SDK raises several types for "no engine"; all mean the same here
        raise UserError(
            f"no Docker engine answers ({type(error).__name__}); start Docker, or use --runner subprocess"
        ) from None
    # The engine would create a missing mount source itself, owned by root, where a step running
    # as the caller could not write: every directory the steps write to exists, as the caller's.
    for directory in (pipeline_root, *outputs):
        if is_local(directory):
            os.makedirs(directory, exist_ok=True)
    from kfp.local import docker_task_handler

    docker_task_handler.run_docker_container = run_container_keeping_its_exit_code
    return local.DockerRunner(**docker_run_arguments(gpus, inputs, outputs, pipeline_root))


def run_container_keeping_its_exit_code(client, image: str, command: list, volumes: dict, **container_run_args) -> int:
    """Runs one step's container, prints its output and returns its exit code.

    Stands in for kfp 2.17.0's ``docker_task_handler.run_docker_container``, which starts the
    container with auto-remove and reports success when the container is already gone by the
    time it asks for the exit code: a step that failed fast could pass as succeeded. Here the
    container stays until its exit code is read, then is removed.
    """
    if not client.images.list(name=image):
        client.images.pull(image)
    container = client.containers.run(
        image=image, command=command, volumes=volumes, detach=True, stdout=True, stderr=True, **container_run_args
    )
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


# Sources read without a network: scikit-learn ships the digits; the other keywords download.
BUNDLED_SOURCES = ("digits",)
# Settings of the caller's environment that steps honour; everything else stays outside.
PASSED_ENVIRONMENT = ("STORAGE_EMULATOR_HOST", "CNNPIPE_STORAGE_RETRY_SECONDS", "TF_ENABLE_ONEDNN_OPTS")


def is_local(location: str) -> bool:
    """A path on this machine: not gs://, not a dataset keyword such as ``digits`` or ``cifar10``."""
    return bool(location) and "://" not in location and (os.sep in location or os.path.exists(location))


def docker_run_arguments(gpus: bool, inputs: tuple = (), outputs: tuple = (), pipeline_root: str = "") -> dict:
    """Extra ``docker run`` arguments of every step (kfp mounts the pipeline root itself).

    - runs as the caller's uid:gid, so what steps write belongs to the caller (the image's
      HOME works for any uid);
    - binds every local location at its own path: inputs read-only, outputs (checkpoint root,
      registry) read-write, so checkpoints outlive the container and a rerun resumes;
    - no network unless a location or the dataset needs one (gs://, downloaded datasets), then
      the host's: never a bridge;
    - all the host's GPUs with ``gpus``; without them, TensorFlow's C++ log stops at fatal
      errors, because on a machine without a GPU its CUDA probe logs an error every start.
    """
    import docker

    locations = [location for location in (*inputs, *outputs) if location]
    mounts = [
        docker.types.Mount(target=path, source=os.path.realpath(path), type="bind", read_only=not writable)
        for path, writable in unique_local_paths(inputs, outputs, pipeline_root)
    ]
    environment = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
    if not gpus:
        environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    arguments = {
        "user": f"{os.getuid()}:{os.getgid()}",
        "mounts": mounts,
        "network_mode": "host" if "STORAGE_EMULATOR_HOST" in environment or not all(
            is_local(location) or location in BUNDLED_SOURCES for location in locations
        ) else "none",
        "environment": environment,
    }
    if gpus:
        arguments["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return arguments


def unique_local_paths(inputs: tuple, outputs: tuple, pipeline_root: str = "") -> list[tuple[str, bool]]:
    """(absolute path, writable) of each local location, outputs first.

    A path inside one already mounted is left out (the engine refuses a mount point twice);
    kfp mounts ``pipeline_root`` itself.
    """
    covered = [os.path.abspath(pipeline_root)] if pipeline_root else []
    chosen: list[tuple[str, bool]] = []
    for location, writable in [(path, True) for path in outputs] + [(path, False) for path in inputs]:
        if not is_local(location):
            continue
        path = os.path.abspath(location)  # where the step looks for it
        if not any(path == other or path.startswith(other + os.sep) for other in covered):
            chosen.append((path, writable))
            covered.append(path)
    return chosen


def pipeline_arguments(
    config: RunConfig, checkpoint_root: str, run_name: str, registry: str = "", promotion_margin: float = 0.0,
    tensorboard_root: str = "", promotion_alpha: float = 0.05, retrain: bool = False,
) -> dict:
    """The pipeline's parameters for one run: exactly the names `cnnpipe compile` exposes."""
    return {
        "registry": registry,
        "promotion_margin": promotion_margin,
        "promotion_alpha": promotion_alpha,
        "retrain": retrain,
        "dataset": config.dataset,
        "models": list(config.models),
        "train_config": dict(config.train),
        "validation_fraction": config.validation_fraction,
        "seed": config.seed,
        "checkpoint_root": checkpoint_root,
        "run_name": run_name,
        "preset": config.preset,
        "workers": config.workers,
        "image_size": config.image_size,
        "max_image_pixels": config.max_image_pixels,
        "tensorboard_root": tensorboard_root,
        "backend": config.backend,
    }


class PipelineFailed(RuntimeError):
    """A task failed for a reason other than a user mistake; the message is one line: the task,
    its cause and the path of its log."""


def run_pipeline(
    config: RunConfig,
    checkpoint_root: str,
    run_name: str,
    console: Console,
    image: str | None = None,
    registry: str = "",
    promotion_margin: float = 0.0,
    tensorboard_root: str = "",
    promotion_alpha: float = 0.05,
    retrain: bool = False,
) -> str:
    """Execute the pipeline with the runner set by ``init_local_runner``; returns the run's directory.

    Everything the tasks print goes through ``console`` (their logs, progress, start and end
    lines). A task that stopped on a user mistake (its ``error: ...`` line) raises UserError,
    any other failure PipelineFailed; both name the task, the cause and the task's log.
    """
    from kfp import local

    from pipeline.pipeline import PIPELINE_NAME, build_pipeline

    pipeline_root = local.config.LocalExecutionConfig.instance.pipeline_root
    before = set(glob.glob(os.path.join(pipeline_root, f"{PIPELINE_NAME}-*")))
    # One train task at a time: on a laptop the models would only fight over the same cores,
    # and the measured images/s of each model stay meaningful.
    pipeline_function = build_pipeline(image=image, parallelism=1)
    try:
        with warnings.catch_warnings(), console.capture():
            # The subprocess runner warns that the components name an image; here that is the point.
            warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)
            pipeline_function(**pipeline_arguments(config, checkpoint_root, run_name, registry, promotion_margin,
                                                   tensorboard_root, promotion_alpha, retrain))
    except RuntimeError as error:
        raise failure(console, str(error)) from None
    created = sorted(set(glob.glob(os.path.join(pipeline_root, f"{PIPELINE_NAME}-*"))) - before)
    if not created:
        raise RuntimeError(f"the local runner wrote no run directory under {pipeline_root}")
    return created[-1]


def failure(console: Console, message: str) -> Exception:
    """The error for a failed run: UserError when the task stopped on a user mistake."""
    task = console.failed_task()
    if task is None:
        log = os.path.join(console.logs_dir, "pipeline.log")
        return PipelineFailed(f"{failed_task(message)}; see {log}")
    text = f"the pipeline step '{task.name}' failed: {task.cause}; log: {task.log_path}"
    return UserError(text) if task.error else PipelineFailed(text)


def failed_task(message: str) -> str:
    """"the pipeline step 'train-model' failed" from the local runner's colored failure message."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", message)
    match = re.search(r"Inner task failed: '([^']+)'", plain) or re.search(r"Task '([^']+)'", plain)
    return f"the pipeline step '{match.group(1)}' failed" if match else plain.splitlines()[0]


def collect_outputs(run_dir: str, output_dir: str) -> str:
    """Copy the report files and each model's ``model.keras`` + ``history.csv`` into ``output_dir``.

    Layout: ``report.html``, ``report.md``, ``summary.json`` and ``models/<name>/``. Returns the
    path of ``report.html``.
    """
    reports = glob.glob(os.path.join(run_dir, "**", "write-report", "report"), recursive=True)
    if len(reports) != 1:
        raise RuntimeError(f"expected one report artifact under {run_dir}, found {len(reports)}")
    for name in REPORT_FILES:
        shutil.copyfile(os.path.join(reports[0], name), os.path.join(output_dir, name))
    for model_dir in glob.glob(os.path.join(run_dir, "**", "train-model", "model"), recursive=True):
        name = read_train_result(model_dir).name
        destination = os.path.join(output_dir, "models", name)
        os.makedirs(destination, exist_ok=True)
        for file_name in MODEL_FILES:
            link_or_copy(os.path.join(model_dir, file_name), os.path.join(destination, file_name))
    return os.path.join(output_dir, REPORT_HTML_FILE)


def link_or_copy(source: str, destination: str) -> None:
    """Hard-link when possible (models can be hundreds of MB), copy otherwise."""
    if os.path.exists(destination):
        os.remove(destination)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)


@contextlib.contextmanager
def stopping_tasks_on_exit():
    """While the pipeline runs, a SIGTERM (a scheduler stopping the run, `kill`) or SIGINT stops
    every task process first, then leaves as KeyboardInterrupt.

    The local runner starts each task as a child process that a signal to this process alone
    would not reach, and waits for it on the way out: without this, a stopped `cnnpipe run` hung
    until its training had finished. Checkpoints are written atomically, so the same command
    resumes after the last completed epoch.
    """
    def stop_tasks(signal_number, frame):
        terminate_processes(descendant_processes(os.getpid()))
        raise KeyboardInterrupt(f"signal {signal_number}")

    previous = {number: signal.signal(number, stop_tasks) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
