"""The recipe's learning-rate schedules as Keras schedules that the optimizer evaluates every step.

`make_learning_rate` turns a TrainConfig into what the optimizer takes as `learning_rate`:
    constant  the peak rate (a float);
    cosine    Keras' CosineDecay: linear warmup from 0 joined to a cosine decay to 0 at the last step;
    linear    WarmupLinearDecay: the same warmup joined to a straight line down to 0 at the last step;
    step      the seed documents' milestones (x0.1, x0.01, ... at 40/60/80/90 % of the epochs) times the
              reduce-on-plateau scale, which the PlateauCallback updates after each epoch.
Each is the step-wise form of `learning_rate_at_step` in tests/schedule_reference.py, which tests compare
it with. Being a function of the optimizer's step counter, the rate is right at every step
however many steps one compiled call runs, and a resumed run continues the same curve.
"""

from __future__ import annotations

from components.keras_setup import keras, variable_value
from components.recipe import (
    PLATEAU_MIN_LEARNING_RATE,
    STEP_FACTORS,
    TrainConfig,
    step_boundaries_for,
    warmup_steps_for,
)

ops = keras.ops


@keras.saving.register_keras_serializable(package="cnnpipe")
class StepDecayWithPlateau(keras.optimizers.schedules.LearningRateSchedule):
    """peak x factor(step) x plateau scale, never below min(scheduled, min_learning_rate).

    Args:
        peak_learning_rate: The rate before the first boundary.
        boundaries: Last step (0-based) at each rate; after boundaries[i] the factor is factors[i].
        factors: Multipliers of the peak rate after each boundary.
        plateau_scale: Starting reduce-on-plateau scale (1 for a new run, the saved one on resume).
        min_learning_rate: Floor of the plateau reductions (not of the milestones).
    """

    def __init__(self, peak_learning_rate, boundaries, factors, plateau_scale=1.0, min_learning_rate=PLATEAU_MIN_LEARNING_RATE):
        super().__init__()
        self.peak_learning_rate = float(peak_learning_rate)
        self.boundaries = [int(boundary) for boundary in boundaries]
        self.factors = [float(factor) for factor in factors]
        self.min_learning_rate = float(min_learning_rate)
        # A variable, so a new scale reaches TensorFlow's compiled train step without retracing
        # it (a JAX step is traced anew: components.callbacks.PlateauCallback).
        self.plateau_scale = keras.Variable(float(plateau_scale), trainable=False, dtype="float32", name="plateau_scale")

    def __call__(self, step):
        # int32 steps: JAX computes in 32 bits unless told otherwise; 2**31 steps are never reached.
        passed = ops.cast(step, "int32") > ops.convert_to_tensor(self.boundaries, "int32")
        factor = ops.take(ops.convert_to_tensor([1.0, *self.factors], "float32"), ops.sum(ops.cast(passed, "int32")))
        scheduled = self.peak_learning_rate * factor
        return ops.maximum(scheduled * self.plateau_scale.value, ops.minimum(scheduled, self.min_learning_rate))

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "boundaries": self.boundaries,
            "factors": self.factors,
            "plateau_scale": float(variable_value(self.plateau_scale)),
            "min_learning_rate": self.min_learning_rate,
        }


@keras.saving.register_keras_serializable(package="cnnpipe")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to the peak over `warmup_steps`, then linear decay to 0 over `decay_steps`."""

    def __init__(self, peak_learning_rate, warmup_steps, decay_steps):
        super().__init__()
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warming = step / max(self.warmup_steps, 1)
        decaying = 1.0 - ops.minimum((step - self.warmup_steps) / self.decay_steps, 1.0)
        return self.peak_learning_rate * ops.where(step < self.warmup_steps, warming, decaying)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps, "decay_steps": self.decay_steps}


def make_learning_rate(config: TrainConfig, steps_per_epoch: int, plateau_scale: float = 1.0):
    """The optimizer's `learning_rate` for `config`: a float or a per-step schedule (see module doc)."""
    if config.schedule == "constant":
        return config.peak_learning_rate
    if config.schedule == "step":
        return StepDecayWithPlateau(
            config.peak_learning_rate, step_boundaries_for(config, steps_per_epoch), STEP_FACTORS, plateau_scale
        )
    warmup_steps = warmup_steps_for(config, steps_per_epoch)
    # Keras refuses decay_steps 0; when the warmup fills the whole run the decay is never reached.
    decay_steps = max(config.epochs * steps_per_epoch - warmup_steps, 1)
    if config.schedule == "linear":
        return WarmupLinearDecay(config.peak_learning_rate, warmup_steps, decay_steps)
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(config.peak_learning_rate, decay_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps, warmup_target=config.peak_learning_rate, warmup_steps=warmup_steps
    )


def learning_rate_of_step(optimizer, step: int) -> float:
    """The rate `optimizer` uses at optimizer step `step` (0-based), as a Python float."""
    learning_rate = optimizer._learning_rate  # the schedule itself; `.learning_rate` evaluates it at the current step
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(learning_rate(step))
    return float(variable_value(optimizer.learning_rate))
