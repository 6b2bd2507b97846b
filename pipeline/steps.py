"""The four steps as KFP components: thin typed wrappers over the plain step functions.

Each body imports its step at run time, so the same definition runs in ``kfp.local`` (a
subprocess of this Python), in ``kfp.local.DockerRunner`` and on a cluster, where the image
named by ``DEFAULT_IMAGE`` (or ``cnnpipe compile --image``) has the project installed. User
mistakes leave a step as one ``error: ...`` line and exit code 1, not a traceback.
"""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

DEFAULT_IMAGE = "cnnpipe:latest"


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare_data(source: str, validation_fraction: float, seed: int, image_size: int, max_image_pixels: int,
                 dataset: Output[Dataset]):
    """Load a dataset source, validate it, split it and stream it into sharded TFRecords plus a manifest.

    Args:
        source: `digits`, `cifar10`, `fashion_mnist`, `mnist`, an image folder (<class>/*.jpg, or
            train/<class>/ and test/<class>/) or a CIFAR-10 binary archive; local path or gs:// URI.
        validation_fraction: Share of the training images held out for validation (0 = none: the last
            epoch's model is kept and nothing is validated).
        seed: Random seed of the validation split and of the bundled dataset's train/test split.
        image_size: Side every image is resized to (0 = the source's size; large photos are
            scaled to 128 pixels on the longer side).
        max_image_pixels: Largest image (width x height) decoded; a larger one is refused from its
            header (0 = the default, 64 Mi pixels).
    """
    from components.data_prep import prepare
    from components.errors import pipeline_step

    # On the cluster the artifact lives in gs://: the shards go straight to a prefix beside it and
    # the artifact keeps only the manifest, so the steps after this one never download the data.
    shards_location = dataset.uri + "-shards" if dataset.uri.startswith("gs://") else None
    with pipeline_step():
        manifest = prepare(source, dataset.path, validation_fraction=validation_fraction, seed=seed,
                           image_size=image_size or None, shards_location=shards_location,
                           max_image_pixels=max_image_pixels or None)
    dataset.metadata.update({"name": manifest.name, "num_classes": manifest.num_classes,
                             "image_shape": manifest.image_shape, "splits": manifest.splits})


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_model(
    dataset: Input[Dataset],
    model_name: str,
    train_config: dict,
    checkpoint_root: str,
    run_name: str,
    pipeline_job_id: str,
    workers: int,
    backend: str,
    tensorboard_root: str,
    cluster_placement: str,
    registry: str,
    retrain: bool,
    model: Output[Model],
):
    """Train one zoo model with augmentation, an LR schedule and per-epoch checkpoints.

    Args:
        model_name: Zoo name of the architecture (see `cnnpipe models`).
        train_config: Fields of TrainConfig (epochs, batch_size, optimizer, learning_rate, schedule ...).
        checkpoint_root: Durable directory or gs:// prefix for resumable checkpoints ('' = none).
        run_name: Names this run's checkpoints under checkpoint_root ('' = the pipeline job id), so a
            retried task, or the same local command run again, resumes instead of starting over.
        pipeline_job_id: The KFP job id, which stays the same when the cluster retries a task.
        workers: Worker processes training the model data-parallel (1 = this process alone).
        backend: Keras backend, tensorflow or jax (jax: one worker, the data in memory, no TensorFlow).
        tensorboard_root: Directory or gs:// prefix for TensorBoard files, a folder per model
            ('' = inside the model artifact).
        cluster_placement: Where a JobSet's worker pods go, set by `cnnpipe compile` ('' = local processes).
        registry: Model registry root; a complete version of the same data and recipe there is
            reused instead of training ('' = always train).
        retrain: Train even when the registry holds such a version.
    """
    import os

    from components import storage
    from components.backends import select_backend
    from components.errors import pipeline_step
    from components.publish import reuse_trained
    from components.recipe import TrainConfig
    from pipeline.launch import train_on_workers
    from pipeline.step_inputs import checkpoint_run_id, dataset_location

    run_id = checkpoint_run_id(run_name, pipeline_job_id)
    checkpoint_dir = storage.join(checkpoint_root, run_id, model_name) if checkpoint_root else None
    tensorboard_dir = storage.join(tensorboard_root, model_name) if tensorboard_root else os.path.join(model.path, "tensorboard")
    with pipeline_step():
        select_backend(backend)  # before anything imports Keras; worker processes inherit it
        reused = reuse_trained(registry, dataset_location(dataset), model_name, train_config, model.path) \
            if registry and not retrain else None
        result = reused or train_on_workers(
            workers, dataset_location(dataset), model_name, model.path, TrainConfig.from_dict(train_config),
            checkpoint_dir=checkpoint_dir, tensorboard_dir=tensorboard_dir, run_id=run_id,
            cluster_placement=cluster_placement, holder=pipeline_job_id,
        )
    model.metadata.update({"name": result.name, "params": result.params, "epochs": result.epochs,
                           "train_seconds": result.train_seconds, "workers": result.workers})


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate_model(
    dataset: Input[Dataset],
    model: Input[Model],
    registry: str,
    promotion_margin: float,
    promotion_alpha: float,
    run_name: str,
    pipeline_job_id: str,
    backend: str,
    result: Output[Artifact],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
):
    """Test loss and accuracy, per-class precision/recall, confusion matrix and inference speed;
    then, with a registry, publish the model and promote it on a significant win over the champion.
    A model the train step reused from the registry is not evaluated or published again.

    Args:
        registry: Model registry root (local dir or gs:// prefix); '' publishes nothing.
        promotion_margin: How much higher (a fraction) the new test accuracy must be to replace the champion.
        promotion_alpha: Significance level of the paired test (McNemar, one-sided) it must also pass.
        run_name: Names the published version ('' = the pipeline job id).
        pipeline_job_id: The KFP job id.
        backend: Keras backend, tensorflow or jax.
    """
    from components.backends import select_backend
    from components.errors import pipeline_step
    from components.publish import publish, reuse_evaluated
    from pipeline.step_inputs import dataset_location, version_id

    with pipeline_step():
        select_backend(backend)  # before anything imports Keras
        from components.evaluate import evaluate

        evaluation = reuse_evaluated(model.path, result.path, registry)
        promotion = evaluation.promotion if evaluation else None
        if evaluation is None:
            evaluation = evaluate(dataset_location(dataset), model.path, result.path)
            if registry:
                promotion = publish(dataset_location(dataset), model.path, result.path, registry,
                                    version_id(run_name, pipeline_job_id), promotion_margin, promotion_alpha)
        if promotion:
            result.metadata["promotion"] = promotion["decision"]
    for key in ("test_accuracy", "test_loss", "inference_images_per_second", "params"):
        metrics.log_metric(key, getattr(evaluation, key))
    classification.log_confusion_matrix(evaluation.class_names, evaluation.confusion_matrix)
    result.metadata.update({"name": evaluation.name, "test_accuracy": evaluation.test_accuracy})


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def write_report(
    dataset: Input[Dataset],
    results: Input[List[Artifact]],
    preset: str,
    train_config: dict,
    report: Output[Artifact],
    report_html: Output[HTML],
    report_markdown: Output[Markdown],
):
    """Compare every model of the run: report.html (plots embedded), report.md and summary.json.

    Args:
        results: The evaluate step's result directory of each model.
        preset: Name of the preset the run started from.
        train_config: The resolved training recipe, shown in the report.
    """
    import os
    import shutil

    from components.artifacts import REPORT_HTML_FILE, REPORT_MARKDOWN_FILE
    from components import manifest as dataset_manifest
    from components.errors import pipeline_step
    from components.report import write_report_files
    from pipeline.step_inputs import dataset_location

    with pipeline_step():
        manifest = dataset_manifest.read(dataset_location(dataset))
        run_config = {"preset": preset, "dataset": manifest.name, "train": train_config}
        summary = write_report_files([item.path for item in results], report.path, manifest, run_config)
    shutil.copyfile(os.path.join(report.path, REPORT_HTML_FILE), report_html.path)
    shutil.copyfile(os.path.join(report.path, REPORT_MARKDOWN_FILE), report_markdown.path)
    report.metadata["models"] = [entry["name"] for entry in summary["models"]]
