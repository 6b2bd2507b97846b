"""Run the pipeline on this machine with the real KFP local runner, and gather what it wrote.

``kfp.local`` executes the very same ``@dsl.pipeline`` as the cluster: each task runs in a
subprocess of this Python (``SubprocessRunner(use_venv=False)``, no Docker needed) or in the
project image (``DockerRunner``). Artifacts land under the pipeline root; ``collect_outputs``
then puts the report and each model's files where the user asked for them.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import warnings

from pipeline.config import RunConfig
from pipeline.console import Console

from components.errors import UserError

REPORT_FILES = ("report.html", "report.md", "summary.json")
MODEL_FILES = ("model.keras", "history.csv")


def init_local_runner(runner: str, pipeline_root: str, gpus: bool = False) -> None:
    """Point ``kfp.local`` at ``pipeline_root`` with the chosen runner."""
    from kfp import local

    if runner == "subprocess":
        chosen = local.SubprocessRunner(use_venv=False)
    elif runner == "docker":
        chosen = docker_runner(gpus)
    else:
        raise UserError(f"unknown runner '{runner}'; choose subprocess or docker")
    local.init(runner=chosen, pipeline_root=pipeline_root, raise_on_error=True)


def docker_runner(gpus: bool):
    """A ``DockerRunner`` after checking that a Docker engine answers (fails in a second if not)."""
    import docker
    from kfp import local

    try:
        docker.from_env(timeout=5).ping()
    except Exception as error:  # the SDK raises several types for "no engine"; all mean the same here
        raise UserError(
            f"no Docker engine answers ({type(error).__name__}); start Docker, or use --runner subprocess"
        ) from None
    return local.DockerRunner(**docker_run_arguments(gpus))


def docker_run_arguments(gpus: bool) -> dict:
    """Extra ``docker run`` arguments of every step: all the host's GPUs when asked for."""
    if not gpus:
        return {}
    import docker

    return {"device_requests": [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]}


def pipeline_arguments(
    config: RunConfig, checkpoint_root: str, run_name: str, registry: str = "", promotion_margin: float = 0.0
) -> dict:
    """The pipeline's parameters for one run: exactly the names `cnnpipe compile` exposes."""
    return {
        "registry": registry,
        "promotion_margin": promotion_margin,
        "dataset": config.dataset,
        "models": list(config.models),
        "train_config": dict(config.train),
        "validation_fraction": config.validation_fraction,
        "seed": config.seed,
        "checkpoint_root": checkpoint_root,
        "run_name": run_name,
        "preset": config.preset,
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
            pipeline_function(**pipeline_arguments(config, checkpoint_root, run_name, registry, promotion_margin))
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
        with open(os.path.join(model_dir, "train_result.json")) as handle:
            name = json.load(handle)["name"]
        destination = os.path.join(output_dir, "models", name)
        os.makedirs(destination, exist_ok=True)
        for file_name in MODEL_FILES:
            link_or_copy(os.path.join(model_dir, file_name), os.path.join(destination, file_name))
    return os.path.join(output_dir, "report.html")


def link_or_copy(source: str, destination: str) -> None:
    """Hard-link when possible (models can be hundreds of MB), copy otherwise."""
    if os.path.exists(destination):
        os.remove(destination)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)
