"""The cnnpipe DAG: prepare → ParallelFor(models){train → evaluate} → report.

``build_pipeline()`` returns the ``@dsl.pipeline`` function. Without a placement it is the
local pipeline that ``cnnpipe run`` executes with ``kfp.local``; with one (``cnnpipe compile``)
train asks for a GPU on the GPU node pool, and prep, evaluate (unless the placement asks for a
GPU) and report stay on CPU nodes. The pipeline function only wires steps: every setting lives
in the components or the placement.

No idle GPU: with ``workers`` > 1 the train task only launches a JobSet of GPU pods and waits
for it, so it must not hold a GPU itself. ``workers`` is a run-time parameter (``submit
--workers``), so the choice is a KFP condition on it: two train tasks, one on a GPU node for
``workers == 1`` and one on a CPU node for the launcher, and ``dsl.OneOf`` hands whichever ran
to evaluate. (The SDK's task-config passthrough hands a task's compile-time resources to its
component, e.g. to copy onto a JobSet; it cannot move the task itself by a run-time value.)
"""

import json
from typing import Callable

from kfp import dsl

from pipeline.config import RunConfig, resolve
from pipeline.jobset_spec import worker_pod_settings
from pipeline.placement import (
    Placement,
    disable_cache_for_mutable_source,
    expose_pod_identity,
    place_cpu_task,
    place_gpu_task,
    retry_preempted,
)
from pipeline.steps import evaluate_model, prepare_data, train_model, write_report

PIPELINE_NAME = "cnnpipe"
IMAGE_ENVIRONMENT_VARIABLE = "CNNPIPE_IMAGE"


def build_pipeline(
    placement: Placement | None = None,
    image: str | None = None,
    parallelism: int = 0,
    defaults: RunConfig | None = None,
    checkpoint_root: str = "",
    registry: str = "",
    promotion_margin: float = 0.0,
    promotion_alpha: float = 0.05,
) -> Callable:
    """The pipeline function.

    ``placement`` puts tasks on cluster node pools (and names the image); ``image`` alone only
    replaces the image (``cnnpipe run --runner docker``); ``parallelism`` caps concurrent train
    tasks (0 = no cap); ``defaults`` (the smoke preset if not given), ``checkpoint_root``,
    ``registry``, ``promotion_margin`` and ``promotion_alpha`` become the compiled defaults of the
    pipeline's parameters.

    (No ``from __future__ import annotations`` here: KFP reads the parameter types at run time.)
    """
    defaults = defaults or resolve("smoke")

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Train and compare classic CNNs: data prep, augmented training, evaluation, report.",
    )
    def cnnpipe(
        dataset: str = defaults.dataset,
        models: list = list(defaults.models),
        train_config: dict = dict(defaults.train),
        validation_fraction: float = defaults.validation_fraction,
        seed: int = defaults.seed,
        checkpoint_root: str = checkpoint_root,
        run_name: str = "",
        preset: str = defaults.preset,
        registry: str = registry,
        promotion_margin: float = promotion_margin,
        promotion_alpha: float = promotion_alpha,
        retrain: bool = False,
        workers: int = defaults.workers,
        image_size: int = defaults.image_size,
        max_image_pixels: int = defaults.max_image_pixels,
        tensorboard_root: str = "",
        backend: str = defaults.backend,
    ):
        prep = prepare_data(source=dataset, validation_fraction=validation_fraction, seed=seed, image_size=image_size,
                            max_image_pixels=max_image_pixels)
        disable_cache_for_mutable_source(prep)
        with dsl.ParallelFor(models, parallelism=parallelism) as model_name:
            train_arguments = dict(
                dataset=prep.outputs["dataset"],
                model_name=model_name,
                train_config=train_config,
                checkpoint_root=checkpoint_root,
                run_name=run_name,
                pipeline_job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                workers=workers,
                backend=backend,
                tensorboard_root=tensorboard_root,
                registry=registry,
                retrain=retrain,
                cluster_placement=json.dumps({**worker_pod_settings(placement), "max_restarts": placement.train_retries})
                if placement else "",
            )
            if placement is not None and placement.uses_gpu:
                with dsl.If(workers == 1, name="train-here"):
                    train = place_gpu_task(train_model(**train_arguments), placement)
                with dsl.Else(name="launch-workers"):
                    launcher = place_cpu_task(train_model(**train_arguments), placement)
                trains, model = [train, launcher], dsl.OneOf(train.outputs["model"], launcher.outputs["model"])
            else:
                train = train_model(**train_arguments)
                trains, model = [train], train.outputs["model"]
            evaluation = evaluate_model(
                dataset=prep.outputs["dataset"],
                model=model,
                registry=registry,
                promotion_margin=promotion_margin,
                promotion_alpha=promotion_alpha,
                run_name=run_name,
                pipeline_job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                backend=backend,
            )
        report = write_report(
            dataset=prep.outputs["dataset"],
            results=dsl.Collected(evaluation.outputs["result"]),
            preset=preset,
            train_config=train_config,
        )
        if image:
            for task in (prep, *trains, evaluation, report):
                task.set_container_image(image)
        # The model store records which image made a model (components/registry.py).
        evaluation.set_env_variable(IMAGE_ENVIRONMENT_VARIABLE, placement.image if placement else image or "local")
        if placement is not None:  # sets the placement's image too
            place_cpu_task(prep, placement)
            place_cpu_task(report, placement)
            if placement.evaluate_on_gpu:
                place_gpu_task(evaluation, placement)
            else:
                place_cpu_task(evaluation, placement)
            retry_preempted(evaluation, placement)  # publishing again under the same run id is safe
            for train in trains:
                if not placement.uses_gpu:
                    place_cpu_task(train, placement)
                retry_preempted(train, placement)
                expose_pod_identity(train)  # the owner of the JobSet it may launch

    return cnnpipe
