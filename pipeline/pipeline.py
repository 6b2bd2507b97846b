"""The cnnpipe DAG: prepare → ParallelFor(models){train → evaluate} → report.

``build_pipeline()`` returns the ``@dsl.pipeline`` function. Without a placement it is the
local pipeline that ``cnnpipe run`` executes with ``kfp.local``; with one (``cnnpipe compile``)
train and evaluate ask for GPUs on the GPU node pool, and prep and report stay on CPU nodes.
The pipeline function only wires steps: every setting lives in the components or the placement.
"""

from typing import TYPE_CHECKING, Callable

from kfp import dsl

from components.kfp_components import evaluate_model, prepare_data, train_model, write_report
from pipeline.config import PRESETS

if TYPE_CHECKING:
    from pipeline.placement import Placement

PIPELINE_NAME = "cnnpipe"


def build_pipeline(placement: "Placement | None" = None, image: str | None = None, parallelism: int = 0) -> Callable:
    """The pipeline function.

    ``placement`` puts tasks on cluster node pools (and names the image); ``image`` alone only
    replaces the image (``cnnpipe run --runner docker``); ``parallelism`` caps concurrent train
    tasks (0 = no cap).

    (No ``from __future__ import annotations`` here: KFP reads the parameter types at run time.)
    """
    smoke = PRESETS["smoke"]

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Train and compare classic CNNs: data prep, augmented training, evaluation, report.",
    )
    def cnnpipe(
        dataset: str = smoke.dataset,
        models: list = list(smoke.models),
        train_config: dict = dict(smoke.train),
        validation_fraction: float = smoke.validation_fraction,
        seed: int = 0,
        checkpoint_root: str = "",
        run_name: str = "",
        preset: str = smoke.name,
    ):
        prep = prepare_data(source=dataset, validation_fraction=validation_fraction, seed=seed)
        with dsl.ParallelFor(models, parallelism=parallelism) as model_name:
            train = train_model(
                dataset=prep.outputs["dataset"],
                model_name=model_name,
                train_config=train_config,
                checkpoint_root=checkpoint_root,
                run_name=run_name,
                pipeline_job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            evaluation = evaluate_model(dataset=prep.outputs["dataset"], model=train.outputs["model"])
        report = write_report(
            dataset=prep.outputs["dataset"],
            results=dsl.Collected(evaluation.outputs["result"]),
            preset=preset,
            train_config=train_config,
        )
        tasks = (prep, train, evaluation, report)
        if image or placement is not None:
            for task in tasks:
                task.set_container_image(placement.image if placement is not None else image)
        if placement is not None:
            from pipeline import placement as place

            place.place_cpu_task(prep, placement)
            place.place_cpu_task(report, placement)
            place.place_gpu_task(train, placement)
            place.place_gpu_task(evaluation, placement)
            place.retry_preempted(train, placement)

    return cnnpipe
