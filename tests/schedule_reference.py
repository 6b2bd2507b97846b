"""The learning-rate schedules as plain Python, written from their definitions: the reference the
optimizer's Keras schedules (components/schedules.py) are tested against, step by step.

Step (the seed documents' milestones times the reduce-on-plateau scale), cosine and linear (a
linear warmup from 0 joined to a decay to 0 at the last step) and constant. The milestones,
factors, warmup steps and plateau floor are the recipe's own (components/recipe.py).
"""

from __future__ import annotations

import math

from components.recipe import (
    PLATEAU_MIN_LEARNING_RATE,
    STEP_FACTORS,
    STEP_MILESTONE_FRACTIONS,
    TrainConfig,
    warmup_steps_for,
)


def step_learning_rate(epoch: int, learning_rate: float, epochs: int) -> float:
    """The seed documents' step schedule with milestones scaled to `epochs` (0-based epoch index).

    For 200 epochs this is the seed documents' schedule exactly: x1, then x0.1 after epoch 80, x0.01 after 120,
    x0.001 after 160 and x0.0005 after 180.
    """
    factor = 1.0
    for fraction, milestone_factor in zip(STEP_MILESTONE_FRACTIONS, STEP_FACTORS):
        if epoch > fraction * epochs:
            factor = milestone_factor
    return learning_rate * factor


# The fraction of the peak rate left after the warmup, at progress 0..1 through the decay.
DECAY_SHAPES = {
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "linear": lambda progress: 1.0 - progress,
}


def warmup_then_decay(epoch_float: float, learning_rate: float, epochs: int, warmup_epochs: float, shape: str) -> float:
    """Linear warmup from 0 to `learning_rate` over `warmup_epochs`, then DECAY_SHAPES[shape] down
    to 0 at `epochs`. `epoch_float` is the fractional position in the run (2.5 = half way through
    the third epoch)."""
    if epoch_float < warmup_epochs:
        return learning_rate * epoch_float / warmup_epochs
    decay_epochs = epochs - warmup_epochs
    if decay_epochs <= 0:
        return learning_rate
    progress = min(max((epoch_float - warmup_epochs) / decay_epochs, 0.0), 1.0)
    return learning_rate * DECAY_SHAPES[shape](progress)


def cosine_learning_rate(epoch_float: float, learning_rate: float, epochs: int, warmup_epochs: float) -> float:
    """The cosine schedule: see warmup_then_decay."""
    return warmup_then_decay(epoch_float, learning_rate, epochs, warmup_epochs, "cosine")


def learning_rate_at_step(step: int, steps_per_epoch: int, config: TrainConfig, plateau_scale: float = 1.0) -> float:
    """The learning rate of optimizer step `step` (0-based): the reference the optimizer's
    per-step schedule (components.schedules.make_learning_rate) is tested against.

    Cosine warms up linearly from 0 over `warmup_steps_for` steps (step 0 trains at rate 0, as
    Keras' CosineDecay does), then decays to 0 at the run's last step; the step schedule changes
    at epoch boundaries and follows the reduce-on-plateau scale.
    The linear schedule warms up the same way, then falls in a straight line to 0 at the last step.
    """
    if config.schedule == "constant":
        return config.peak_learning_rate
    if config.schedule == "step":
        return learning_rate_at(step // steps_per_epoch, config, plateau_scale)
    warmup_steps = warmup_steps_for(config, steps_per_epoch)
    if step < warmup_steps:
        return config.peak_learning_rate * step / warmup_steps
    decay_steps = max(config.epochs * steps_per_epoch - warmup_steps, 1)
    progress = min(step - warmup_steps, decay_steps) / decay_steps
    return config.peak_learning_rate * DECAY_SHAPES[config.schedule](progress)


def learning_rate_at(epoch_float: float, config: TrainConfig, plateau_scale: float = 1.0) -> float:
    """Learning rate at a fractional epoch position under `config`'s schedule.

    The step schedule is multiplied by the reduce-on-plateau `plateau_scale`, which never takes it
    below PLATEAU_MIN_LEARNING_RATE (nor raises it above the step value). The seed documents ran Keras'
    LearningRateScheduler and ReduceLROnPlateau side by side, so the scheduler overwrote each
    reduction at the next epoch; multiplying makes both take effect.
    """
    if config.schedule == "constant":
        return config.peak_learning_rate
    if config.schedule in DECAY_SHAPES:
        return warmup_then_decay(epoch_float, config.peak_learning_rate, config.epochs, config.warmup_epochs, config.schedule)
    scheduled = step_learning_rate(math.floor(epoch_float), config.peak_learning_rate, config.epochs)
    return max(scheduled * plateau_scale, min(scheduled, PLATEAU_MIN_LEARNING_RATE))
