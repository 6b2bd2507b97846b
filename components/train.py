"""Training step: build or restore a model, train the missing epochs, write the best model.

The step's three jobs live in three modules: this one resumes or starts the run and writes its
outputs (checkpoint identity, state, train_result.json); components/model_assembly.py builds a
zoo model or restores a checkpointed one; components/fit.py makes the datasets and callbacks and
runs the epochs in one process or on several workers.

`train()` reads a dataset artifact written by `data_prep.prepare`, trains one model from the
zoo and writes the best model (by validation accuracy), its history and a result record.
The default `TrainConfig` is the ResNet recipe of the seed documents: Adam at 1e-3 with a step
schedule plus reduce-on-plateau, batch 128, random shifts of 10 % and horizontal flips,
per-pixel mean subtraction, 200 epochs.

The saved model takes raw uint8-valued images: scaling to [0, 1], mean subtraction and resizing
up to the architecture's minimum input size are layers inside it, so evaluation and serving
need no separate preprocessing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


from components import checkpoints, keras_setup, models, storage
from components.artifacts import HISTORY_FILE, MODEL_FILE
from components.augmentation import inference_model
from components.backends import check_workers
from components.dataset import DatasetReader, open_dataset
from components.distributed import WorkerRole, agreed_resume_epoch, distribution_strategy, worker_role
from components.errors import StorageError, UserError, one_line
from components.fit import augmentation_settings, fit_epochs, flips_allowed
from components.input_pipeline import split_arrays, steps_per_epoch_for
from components.keras_setup import backend, keras
from components.manifest import DatasetManifest
from components.model_assembly import (
    averaged_weights,
    build_model,
    resolve_device_settings,
    restore_model,
    with_test_time_flip,
)
from components.recipe import PlateauState, TrainConfig
from components.results import FORMAT_VERSION as RESULTS_FORMAT_VERSION
from components.results import TrainResult, write_train_result
from components.schedules import make_learning_rate

logger = logging.getLogger(__name__)

# Which epoch's model train writes (train_result.json's epoch_chosen_by): the best by validation
# accuracy, or, without a validation split, the last one (the test split never chooses).
EPOCH_CHOSEN_BY_VALIDATION = "validation"
EPOCH_CHOSEN_AS_LAST = "last"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "steps", "images", "seconds")


# ---------------------------------------------------------------------------------------------
# The step


def train(
    dataset_dir: str,
    model_name: str,
    output_dir: str,
    config: TrainConfig,
    checkpoint_dir: str | None = None,
    *,
    tensorboard_dir: str | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    holder: str | None = None,
) -> TrainResult | None:
    """Trains `model_name` on the dataset artifact and writes the best model and its records.

    Writes output_dir/model.keras (best by validation accuracy, without optimizer state; takes
    raw uint8-valued images), output_dir/history.csv and output_dir/train_result.json, and
    returns the TrainResult (None on a worker other than the chief). Validation uses the dataset's
    validation split; a dataset without one validates nothing, and the last epoch's model is
    written. An epoch is exactly ceil(train images / batch_size) optimizer steps.

    With `checkpoint_dir` (local or gs://), every epoch is checkpointed there (model with
    optimizer state plus schedule state) and a rerun resumes after the last completed epoch; a
    checkpoint from a different configuration is refused. `epochs` is not part of that identity,
    so rerunning with more epochs extends a run, and a rerun whose epochs are all done only
    writes the outputs. Without `checkpoint_dir` a temporary one beside `output_dir` is used.
    A run that stops on a user mistake or a diverged loss records that in `checkpoint_dir`, so a
    retry of the same run stops at once (see checkpoints.record_failure); a storage failure is
    never recorded (fixing the bucket's permissions must not leave the run stopped). While it
    trains, the run holds a lease on `checkpoint_dir` (checkpoints.Lease): another run there
    stops in one line naming this one.

    Run as one of several workers (TF_CONFIG set, see components/distributed.py), every worker
    trains its share of each global batch; only the chief (worker 0) writes checkpoints,
    TensorBoard files and outputs, and all of them resume from the chief's checkpoint.

    Args:
        tensorboard_dir: Where TensorBoard event files go (local or gs://); None writes none.
        callbacks: Extra Keras callbacks run after the step's own (tests, tools).
        holder: Who holds the lease: the same for every attempt of one run (the pipeline run id
            on the cluster); default $CNNPIPE_RUN_HOLDER, else this host and process.
    """
    role = worker_role()
    check_workers(backend, role.count)
    # TensorFlow's strategy comes before any other TensorFlow work; JAX trains in this process alone.
    strategy = distribution_strategy(role) if backend == "tensorflow" else None
    reader = open_dataset(dataset_dir)
    spec = models.get_spec(model_name)
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}-scratch-", dir=os.path.dirname(output_dir))
    run = TrainingRun(
        model_name=model_name, config=config, reader=reader, role=role, strategy=strategy,
        location=checkpoint_dir, scratch=scratch, tensorboard_dir=tensorboard_dir if role.is_chief else None,
    )
    previous_policy = keras.mixed_precision.global_policy()
    try:
        with _lease(run, holder):
            run.pull_checkpoint()
            if run.location:
                checkpoints.check_recorded_failure(run.read_dir, run.location, run.fingerprint)
            try:
                state = _train_with_checkpoints(run, list(callbacks))
            except UserError as error:
                if run.location and role.is_chief and not isinstance(error, StorageError):
                    checkpoints.record_failure(run.location, run.fingerprint, one_line(error))
                raise
        if not role.is_chief:  # the chief writes the outputs
            return None
        return _write_outputs(output_dir, spec, reader, config, state, role)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        shutil.rmtree(scratch, ignore_errors=True)


def _lease(run: TrainingRun, holder: str | None):
    """The chief's lease on the checkpoint location the user named (nothing to hold otherwise)."""
    if not run.location or not run.role.is_chief:
        return contextlib.nullcontext()
    holder = holder or os.environ.get(checkpoints.HOLDER_VARIABLE) or checkpoints.default_holder()
    return checkpoints.Lease(run.location, holder)


@dataclass
class TrainingRun:
    """What one train step works with, and where its checkpoints are read and written.

    `location` is the checkpoint location the user named (local, gs://, or None). Keras saves to
    local files, so a gs:// location is mirrored in `scratch`; so is a run without a location.
    Workers other than the chief read the chief's checkpoint but write theirs to scratch.
    """

    model_name: str
    config: TrainConfig
    reader: DatasetReader
    role: WorkerRole
    strategy: Any  # a tf.distribute.Strategy under TensorFlow, None under JAX
    location: str | None
    scratch: str
    tensorboard_dir: str | None

    def __post_init__(self):
        dataset_sha = dataset_fingerprint(self.reader.manifest)
        self.fingerprint_inputs = self.config.fingerprint_inputs(self.model_name, dataset_sha)
        self.fingerprint = self.config.fingerprint(self.model_name, dataset_sha)
        local = self.location and not storage.is_gcs(self.location)
        self.read_dir = self.location if local else os.path.join(self.scratch, "checkpoint")
        self.write_dir = self.read_dir if self.role.is_chief else os.path.join(self.scratch, "worker-checkpoint")
        self.remote_dir = self.location if self.location and not local and self.role.is_chief else None
        os.makedirs(self.read_dir, exist_ok=True)
        os.makedirs(self.write_dir, exist_ok=True)

    def pull_checkpoint(self) -> None:
        if self.location and storage.is_gcs(self.location):
            checkpoints.pull(self.location, self.read_dir)


def dataset_fingerprint(manifest: DatasetManifest) -> str:
    """sha256 over the manifest's per-file hashes: identifies the dataset's content."""
    return hashlib.sha256(json.dumps(manifest.sha256, sort_keys=True).encode()).hexdigest()


def _train_with_checkpoints(run: TrainingRun, extra_callbacks: list[keras.callbacks.Callback]) -> dict[str, Any]:
    """Resumes or starts the run, trains the missing epochs, returns the final checkpoint state."""
    config, reader, strategy = run.config, run.reader, run.strategy
    location = run.location or "a temporary directory"  # for messages
    state = checkpoints.load(run.read_dir)
    if state is not None and state["fingerprint"] != run.fingerprint:
        raise UserError(
            f"checkpoint at {location} was written by a different configuration "
            f"({_describe_difference(state.get('fingerprint_inputs', {}), run.fingerprint_inputs)}); "
            "use a new --checkpoint-root or delete it"
        )
    # Every worker pulled the checkpoint by itself: they must have found the same epoch.
    resumed_from_epoch = agreed_resume_epoch(strategy, run.role, state["epoch"] if state else 0)
    if state is not None and state["epoch"] >= config.epochs:
        logger.info("all %d epochs already done in %s; writing outputs only", state["epoch"], location)
        return dict(state, resumed_from_epoch=resumed_from_epoch)

    keras_setup.set_random_seed(config.seed)
    validation_split = reader.validation_split
    steps_per_epoch = steps_per_epoch_for(reader.count("train"), config.batch_size)
    plateau = PlateauState(**state["plateau"]) if state else PlateauState()
    # JAX trains from the split in memory, read without TensorFlow (components/input_pipeline.py).
    train_arrays = split_arrays(reader, "train", config.cache) if backend == "jax" else None
    replicas = strategy.num_replicas_in_sync if strategy else 1

    device = resolve_device_settings(config)
    keras.mixed_precision.set_global_policy(device.mixed_precision)
    with strategy.scope() if strategy else contextlib.nullcontext():
        learning_rate = make_learning_rate(config, steps_per_epoch, plateau.scale)
        if state is None:
            model, steps_per_execution = build_model(
                run.model_name, reader, config, device, learning_rate, steps_per_epoch, replicas,
                augmentation_settings(config, reader), train_arrays[0] if train_arrays else None,
            )
            state = _new_state(run.model_name, run.fingerprint, run.fingerprint_inputs, model.count_params(), validation_split)
        else:
            model, steps_per_execution = restore_model(state["checkpoint_path"], config, device, learning_rate,
                                                       steps_per_epoch, replicas)
            logger.info("resuming %s from %s after epoch %d", run.model_name, location, resumed_from_epoch)

    fit_epochs(
        model, strategy, reader, config, run.role, model_name=run.model_name, state=state, plateau=plateau,
        resumed_from_epoch=resumed_from_epoch, validation_split=validation_split, steps_per_epoch=steps_per_epoch,
        steps_per_execution=steps_per_execution, device=device, write_dir=run.write_dir, remote_dir=run.remote_dir, scratch=run.scratch,
        tensorboard_dir=run.tensorboard_dir, extra_callbacks=extra_callbacks, train_arrays=train_arrays,
    )
    return dict(checkpoints.load(run.write_dir), resumed_from_epoch=resumed_from_epoch)


def _new_state(
    model_name: str, fingerprint: str, fingerprint_inputs: dict[str, Any], params: int, validation_split: str | None
) -> dict[str, Any]:
    """The checkpoint state of a run that has completed no epoch yet."""
    return {
        "format_version": checkpoints.FORMAT_VERSION,
        "model_name": model_name,
        "fingerprint": fingerprint,
        "fingerprint_inputs": fingerprint_inputs,
        "params": int(params),
        "validation_split": validation_split,
        "epoch": 0,
        "plateau": dataclasses.asdict(PlateauState()),
        "best_validation_accuracy": None,
        "best_epoch": None,
        "train_seconds": 0.0,
        "optimizer_steps": 0,
        "history": [],
        "checkpoint": None,
        "best_checkpoint": None,
    }


def _describe_difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """Names the fingerprint inputs that differ, e.g. "changed: learning_rate 0.001 -> 0.01"."""
    keys = sorted(set(saved) | set(current))
    changes = [f"{key} {saved.get(key)!r} -> {current.get(key)!r}" for key in keys if saved.get(key) != current.get(key)]
    return "changed: " + ", ".join(changes) if changes else "fingerprints differ"


def _write_outputs(
    output_dir: str, spec: models.ModelSpec, reader: DatasetReader, config: TrainConfig, state: dict[str, Any], role: WorkerRole
) -> TrainResult:
    """Writes the best model (for inference: no optimizer state, loads with plain Keras),
    history.csv, and train_result.json last, as the commit point."""
    models.allow_deep_graphs()
    best_training_model = keras.models.load_model(state["best_checkpoint_path"], compile=False)
    if config.weight_average_momentum:
        best_training_model.set_weights(averaged_weights(state["best_checkpoint_path"]))
    best_model = inference_model(best_training_model)  # without the augmentation
    if config.test_time_flip and flips_allowed(config, reader):
        best_model = with_test_time_flip(best_model)
    checkpoints.save_model_atomically(best_model, os.path.join(output_dir, MODEL_FILE))
    history = io.StringIO()
    writer = csv.DictWriter(history, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(state["history"])
    storage.write_text(os.path.join(output_dir, HISTORY_FILE), history.getvalue())
    train_seconds = float(state["train_seconds"])
    optimizer_steps = int(state["optimizer_steps"])
    result = TrainResult(
        format_version=RESULTS_FORMAT_VERSION,
        name=spec.name,
        family=spec.family,
        params=int(state["params"]),
        epochs=int(state["epoch"]),
        train_seconds=train_seconds,
        train_images_per_second=optimizer_steps * config.batch_size / train_seconds if train_seconds > 0 else None,
        best_validation_accuracy=state["best_validation_accuracy"],
        best_epoch=state["best_epoch"],
        resumed_from_epoch=int(state["resumed_from_epoch"]),
        optimizer_steps=optimizer_steps,
        steps_per_epoch=steps_per_epoch_for(reader.count("train"), config.batch_size),
        images_seen=optimizer_steps * config.batch_size,  # every batch is full
        validation_split=state["validation_split"],
        epoch_chosen_by=EPOCH_CHOSEN_BY_VALIDATION if state["validation_split"] else EPOCH_CHOSEN_AS_LAST,
        dataset=reader.name,
        workers=role.count,
        backend=backend,
        config=config.to_dict(),
    )
    write_train_result(output_dir, result)
    return result
