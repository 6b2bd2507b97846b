"""The training recipe: `TrainConfig`, its validation, and what the learning-rate schedules need
(milestones, warmup steps, the reduce-on-plateau state); components/schedules.py runs them.

Everything here is plain Python (no TensorFlow), so the command line and the pipeline builder
can check a recipe in milliseconds; `components.train` runs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from components import checks
from components.errors import UserError

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("step", "cosine", "linear", "constant")
MIXED_PRECISION_POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
CACHE_CHOICES = ("auto", "memory", "none")  # see components/input_pipeline.py

# The seed documents' step schedule drops the learning rate after epochs 80/120/160/180 of 200; the
# milestones are kept as fractions of the run so that a shorter run still decays.
STEP_MILESTONE_FRACTIONS = (0.4, 0.6, 0.8, 0.9)
STEP_FACTORS = (1e-1, 1e-2, 1e-3, 0.5e-3)

# The seed documents' ReduceLROnPlateau(factor=sqrt(0.1), patience=5, min_lr=0.5e-6) on val_loss.
PLATEAU_FACTOR = math.sqrt(0.1)
PLATEAU_PATIENCE = 5  # epochs without improvement
PLATEAU_MIN_LEARNING_RATE = 0.5e-6
PLATEAU_MIN_DELTA = 1e-4  # Keras' default: smaller val_loss changes are not improvements

# Fields that change how fast a run goes but not what it learns; a preempted run may resume on
# a different machine (or be extended with more epochs), so they are left out of the fingerprint.
FINGERPRINT_EXCLUDED_FIELDS = ("epochs", "steps_per_execution", "jit_compile", "cache")
# Fields that joined the recipe after checkpoints were first written: left out of the fingerprint
# while they hold their default, so those checkpoints still resume.
FINGERPRINT_OMITTED_AT_DEFAULT = ("weight_decay_on_norm_and_bias", "test_time_flip", "fit_stem_to_data", "weight_average_momentum")

INTEGER_FIELDS = ("epochs", "batch_size", "reference_batch_size", "seed", "steps_per_execution")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and execution settings of one training run.

    Attributes:
        epochs: Number of passes over the training split.
        batch_size: Images per optimizer step (global batch across all GPUs).
        reference_batch_size: The batch size `learning_rate` is meant for; another batch size
            scales the rate linearly (half the batch, half the rate), so a recipe keeps working
            when the batch changes to fit a GPU. None: `learning_rate` is used as given.
        optimizer: 'adam' (AdamW when weight_decay > 0) or 'sgd' (Nesterov momentum).
        learning_rate: Peak learning rate (at reference_batch_size, when that is set).
        momentum: SGD momentum; unused by Adam.
        weight_decay: Decoupled weight decay; 0 disables it.
        weight_decay_on_norm_and_bias: Whether weight decay also shrinks batch-norm parameters and
            biases (every variable of rank 0 or 1); False decays only kernels.
        schedule: 'step' (the seed documents' milestones plus reduce-on-plateau), 'cosine' (per-step cosine
            decay after a linear warmup), 'linear' (linear warmup, then linear decay to 0 at the
            last step: the one-cycle triangle) or 'constant'.
        warmup_epochs: Linear warmup length of the cosine and linear schedules, in epochs (may be
            fractional).
        label_smoothing: Label smoothing of the categorical cross-entropy, in [0, 1).
        augment: Whether to apply random shifts and flips to training batches.
        horizontal_flip: Random horizontal flips; None follows the manifest's
            allow_horizontal_flip (off for digits, where a flip changes the class).
        shift_fraction: Largest random shift as a fraction of height and width.
        subtract_pixel_mean: Subtract the train split's mean image inside the model.
        fit_stem_to_data: Let a model that can (the zoo entry's fit_to_images: FastNet's whitening
            stem) set its first layer from a sample of the training images before training.
        weight_average_momentum: Momentum of an exponential moving average of the weights, updated
            every step; 0 turns it off. When on, validation (and so the best epoch) and the saved
            model use the averaged weights; the batch-norm statistics stay those of training.
        test_time_flip: The saved model averages its predictions for each image and its mirror
            image (ignored where the dataset forbids flips); twice the inference compute.
        seed: Random seed of weight initialization, shuffling and augmentation.
        steps_per_execution: Optimizer steps per compiled call, or 'auto'.
        jit_compile: XLA compilation, or 'auto' (on for GPU, off for CPU where it measured slower).
        mixed_precision: 'auto' (bfloat16 on Ampere or newer GPUs, float16 on older GPUs,
            float32 on CPU), 'float32', 'mixed_float16' or 'mixed_bfloat16'.
        cache: 'memory' keeps the decoded dataset in memory, 'none' streams it from its shards,
            'auto' keeps it in memory when it fits (components/input_pipeline.py).
    """

    epochs: int = 200
    batch_size: int = 128
    reference_batch_size: int | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    weight_decay_on_norm_and_bias: bool = True
    schedule: str = "step"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    horizontal_flip: bool | None = None
    shift_fraction: float = 0.1
    subtract_pixel_mean: bool = True
    fit_stem_to_data: bool = False
    weight_average_momentum: float = 0.0
    test_time_flip: bool = False
    seed: int = 0
    steps_per_execution: int | str = "auto"
    jit_compile: bool | str = "auto"
    mixed_precision: str = "auto"
    cache: str = "auto"

    def __post_init__(self) -> None:
        checks.integer("epochs", self.epochs, minimum=1)
        checks.integer("batch_size", self.batch_size, minimum=1)
        if self.reference_batch_size is not None:
            checks.integer("reference_batch_size", self.reference_batch_size, minimum=1, alternative="null")
        checks.choice("optimizer", self.optimizer, OPTIMIZERS)
        checks.number("learning_rate", self.learning_rate, above=0)
        checks.fraction("momentum", self.momentum)
        checks.number("weight_decay", self.weight_decay, at_least=0)
        checks.boolean("weight_decay_on_norm_and_bias", self.weight_decay_on_norm_and_bias)
        checks.choice("schedule", self.schedule, SCHEDULES)
        checks.number("warmup_epochs", self.warmup_epochs, at_least=0)
        checks.fraction("label_smoothing", self.label_smoothing)
        checks.boolean("augment", self.augment)
        if self.horizontal_flip is not None:
            checks.boolean("horizontal_flip", self.horizontal_flip, alternative="null (follow the dataset)")
        checks.number("shift_fraction", self.shift_fraction, at_least=0, below=0.5)
        checks.boolean("subtract_pixel_mean", self.subtract_pixel_mean)
        checks.boolean("fit_stem_to_data", self.fit_stem_to_data)
        checks.fraction("weight_average_momentum", self.weight_average_momentum)
        checks.boolean("test_time_flip", self.test_time_flip)
        checks.integer("seed", self.seed, minimum=0)
        if self.steps_per_execution != "auto":
            checks.integer("steps_per_execution", self.steps_per_execution, minimum=1, alternative="'auto'")
        if self.jit_compile != "auto":
            checks.boolean("jit_compile", self.jit_compile, alternative="'auto'")
        checks.choice("mixed_precision", self.mixed_precision, MIXED_PRECISION_POLICIES)
        checks.choice("cache", self.cache, CACHE_CHOICES)

    @property
    def peak_learning_rate(self) -> float:
        """The schedule's peak: learning_rate, scaled linearly to batch_size from reference_batch_size."""
        if self.reference_batch_size is None:
            return self.learning_rate
        return self.learning_rate * self.batch_size / self.reference_batch_size

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Builds a config from plain values (JSON, CLI); unknown keys and bad values raise ValueError."""
        if not isinstance(values, dict):
            raise UserError(f"train config must be a mapping of field names to values, got {values!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown train config field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
        # KFP passes dict parameters as JSON structs, whose numbers are all doubles: 4 arrives as 4.0.
        return cls(**{
            key: int(value) if key in INTEGER_FIELDS and isinstance(value, float) and value.is_integer() else value
            for key, value in values.items()
        })

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as a JSON-serializable dict that `from_dict` accepts back."""
        return dataclasses.asdict(self)

    def fingerprint_inputs(self, model_name: str, dataset_sha: str) -> dict[str, Any]:
        """Returns what a checkpoint's identity depends on: the config except FINGERPRINT_EXCLUDED_FIELDS,
        the model name and the dataset's content hash."""
        defaults = TrainConfig.__dataclass_fields__
        inputs = {
            key: value for key, value in self.to_dict().items()
            if key not in FINGERPRINT_EXCLUDED_FIELDS
            and not (key in FINGERPRINT_OMITTED_AT_DEFAULT and value == defaults[key].default)
        }
        inputs["model_name"] = model_name
        inputs["dataset_sha256"] = dataset_sha
        return inputs

    def fingerprint(self, model_name: str, dataset_sha: str) -> str:
        """Returns a sha256 hex digest identifying the run a checkpoint belongs to.

        `epochs` is excluded on purpose: rerunning with more epochs extends a finished run.
        """
        encoded = json.dumps(self.fingerprint_inputs(model_name, dataset_sha), sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules (pure functions of the epoch position)


@dataclass(frozen=True)
class PlateauState:
    """Reduce-on-plateau bookkeeping; it is saved in checkpoints so a resumed run keeps it.

    Attributes:
        scale: Multiplier applied to the step schedule's learning rate (1, sqrt(0.1), 0.1, ...).
        best_validation_loss: Lowest validation loss seen, None before the first epoch.
        wait: Epochs since the last improvement (or reduction).
    """

    scale: float = 1.0
    best_validation_loss: float | None = None
    wait: int = 0


def warmup_steps_for(config: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the cosine schedule's linear warmup."""
    return round(config.warmup_epochs * steps_per_epoch)


def step_boundaries_for(config: TrainConfig, steps_per_epoch: int) -> list[int]:
    """The last optimizer step (0-based) before each milestone of the step schedule.

    A milestone takes effect at the first epoch whose 0-based index exceeds fraction * epochs
    (as the reference in tests/schedule_reference.py does), i.e. from step (floor(fraction * epochs) + 1) * steps_per_epoch.
    """
    return [(math.floor(fraction * config.epochs) + 1) * steps_per_epoch - 1 for fraction in STEP_MILESTONE_FRACTIONS]


def update_plateau(state: PlateauState, validation_loss: float, learning_rate: float) -> PlateauState:
    """Returns the plateau state after an epoch with `validation_loss` trained at `learning_rate`.

    Mirrors Keras' ReduceLROnPlateau: after PLATEAU_PATIENCE epochs without an improvement of at
    least PLATEAU_MIN_DELTA, the scale shrinks by PLATEAU_FACTOR unless the rate is already minimal.
    """
    best = state.best_validation_loss
    if best is None or validation_loss < best - PLATEAU_MIN_DELTA:
        return PlateauState(scale=state.scale, best_validation_loss=float(validation_loss), wait=0)
    wait = state.wait + 1
    if wait >= PLATEAU_PATIENCE and learning_rate > PLATEAU_MIN_LEARNING_RATE:
        return PlateauState(scale=state.scale * PLATEAU_FACTOR, best_validation_loss=best, wait=0)
    return dataclasses.replace(state, wait=wait)
