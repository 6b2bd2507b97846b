"""Training step: config validation, schedules, augmentation, and real short Keras runs with checkpoints."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from components import data_prep
from components import train as train_module
from components.checkpoints import load as load_checkpoint
from components.keras_setup import keras, tf
from components.recipe import (
    PLATEAU_MIN_LEARNING_RATE,
    PLATEAU_PATIENCE,
    PlateauState,
    TrainConfig,
    update_plateau,
)
from components.schedules import make_learning_rate
from components.dataset import load_split, open_dataset
from components.input_pipeline import make_train_dataset, steps_per_epoch_for
from components.model_assembly import make_optimizer
from components.train import train
from schedule_reference import cosine_learning_rate, learning_rate_at, learning_rate_at_step, step_learning_rate

TINY_SHAPE = (8, 8, 1)
TINY_CLASSES = 3


def write_dataset(
    directory, train_count=24, test_count=12, image_shape=TINY_SHAPE, num_classes=TINY_CLASSES, seed=0, validation_count=0
):
    """Prepares a dataset artifact from a generated PNG folder: each class is a bright square at
    its own position on noise, so a tiny model can learn something. Returns the directory."""
    generator = np.random.default_rng(seed)
    height, width, channels = image_shape
    source = f"{directory}-source"
    counts = {"train": train_count + validation_count, "test": test_count}
    for split, count in counts.items():
        for index in range(count):
            label = index % num_classes
            image = generator.integers(0, 60, size=(height, width, channels), dtype=np.uint8)
            top = (label * height // num_classes) % (height - 2)
            image[top : top + 3, 1:4, :] = 250
            class_dir = os.path.join(source, split, f"class{label}")
            os.makedirs(class_dir, exist_ok=True)
            Image.fromarray(image.squeeze(-1) if channels == 1 else image).save(os.path.join(class_dir, f"{index:04d}.png"))
    validation_fraction = validation_count / counts["train"]
    data_prep.prepare(source, str(directory), validation_fraction=validation_fraction, seed=seed)
    shutil.rmtree(source)
    return str(directory)


def quick_config(**overrides):
    """A config that trains in seconds on the tiny dataset."""
    values = dict(epochs=2, batch_size=8, learning_rate=1e-3, steps_per_execution=1, seed=1)
    values.update(overrides)
    return TrainConfig(**values)


def read_history(output_dir):
    with open(os.path.join(output_dir, "history.csv")) as history_file:
        return list(csv.DictReader(history_file))


def read_result(output_dir):
    with open(os.path.join(output_dir, "train_result.json")) as result_file:
        return json.load(result_file)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("tiny_dataset"))


# --- TrainConfig ---------------------------------------------------------------------------


def test_default_config_is_the_seed_recipe():
    config = TrainConfig()
    assert (config.optimizer, config.learning_rate, config.schedule, config.batch_size) == ("adam", 1e-3, "step", 128)
    assert (config.shift_fraction, config.horizontal_flip, config.subtract_pixel_mean, config.epochs) == (0.1, None, True, 200)


def test_config_round_trips_through_dict():
    config = TrainConfig(epochs=3, optimizer="sgd", schedule="cosine", warmup_epochs=0.5, horizontal_flip=False, jit_compile=True)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "epochs must be an integer >= 1, got 0"),
        ("epochs", 2.5, "epochs must be an integer >= 1, got 2.5"),
        ("batch_size", True, "batch_size must be an integer >= 1, got True"),
        ("optimizer", "rmsprop", "optimizer must be one of adam, sgd, got 'rmsprop'"),
        ("learning_rate", 0, "learning_rate must be a number > 0, got 0"),
        ("learning_rate", float("nan"), "learning_rate must be a number > 0, got nan"),
        ("momentum", 1.0, "momentum must be a fraction in [0, 1), got 1.0"),
        ("weight_decay", -1e-4, "weight_decay must be a number >= 0, got -0.0001"),
        ("schedule", "exponential", "schedule must be one of step, cosine, linear, constant, got 'exponential'"),
        ("warmup_epochs", -1, "warmup_epochs must be a number >= 0, got -1"),
        ("label_smoothing", 1.0, "label_smoothing must be a fraction in [0, 1), got 1.0"),
        ("augment", "yes", "augment must be true or false, got 'yes'"),
        ("horizontal_flip", 1, "horizontal_flip must be true, false or null (follow the dataset), got 1"),
        ("shift_fraction", 0.5, "shift_fraction must be a number in [0, 0.5), got 0.5"),
        ("subtract_pixel_mean", None, "subtract_pixel_mean must be true or false, got None"),
        ("seed", -1, "seed must be an integer >= 0, got -1"),
        ("steps_per_execution", "8", "steps_per_execution must be an integer >= 1 or 'auto', got '8'"),
        ("steps_per_execution", 0, "steps_per_execution must be an integer >= 1 or 'auto', got 0"),
        ("jit_compile", "on", "jit_compile must be true, false or 'auto', got 'on'"),
        (
            "mixed_precision",
            "float16",
            "mixed_precision must be one of auto, float32, mixed_float16, mixed_bfloat16, got 'float16'",
        ),
    ],
)
def test_from_dict_rejects_bad_values_with_one_line_message(field, value, message):
    with pytest.raises(ValueError) as error:
        TrainConfig.from_dict({field: value})
    assert str(error.value) == message


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown train config field.*learnin_rate.*known fields"):
        TrainConfig.from_dict({"learnin_rate": 0.1})


def test_fingerprint_ignores_epochs_and_execution_knobs_but_not_the_recipe():
    base = TrainConfig().fingerprint("lenet5", "abc")
    assert TrainConfig(epochs=3, steps_per_execution=4, jit_compile=True).fingerprint("lenet5", "abc") == base
    assert TrainConfig(learning_rate=0.01).fingerprint("lenet5", "abc") != base
    assert TrainConfig().fingerprint("resnet20_v1", "abc") != base
    assert TrainConfig().fingerprint("lenet5", "abd") != base


# --- learning-rate schedules ------------------------------------------------------------------


@pytest.mark.parametrize(
    "epoch, factor",
    [(0, 1), (80, 1), (81, 1e-1), (120, 1e-1), (121, 1e-2), (161, 1e-3), (180, 1e-3), (181, 0.5e-3), (199, 0.5e-3)],
)
def test_step_schedule_matches_the_seed_at_200_epochs(epoch, factor):
    assert step_learning_rate(epoch, 1e-3, 200) == pytest.approx(1e-3 * factor)


def test_step_schedule_milestones_scale_with_a_shorter_run():
    # 10 epochs: milestones at 4, 6, 8, 9; like the seed, a drop applies to 0-based epochs strictly after.
    rates = [step_learning_rate(epoch, 1.0, 10) for epoch in range(10)]
    assert rates == pytest.approx([1, 1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.001])


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    assert cosine_learning_rate(0.5, 0.1, 10, warmup_epochs=2) == pytest.approx(0.025)
    assert cosine_learning_rate(2.0, 0.1, 10, warmup_epochs=2) == pytest.approx(0.1)
    assert cosine_learning_rate(6.0, 0.1, 10, warmup_epochs=2) == pytest.approx(0.05)
    assert cosine_learning_rate(10.0, 0.1, 10, warmup_epochs=2) == pytest.approx(0.0)
    rates = [cosine_learning_rate(epoch / 4, 0.1, 10, 2) for epoch in range(41)]
    peak = rates.index(max(rates))
    assert all(a < b for a, b in zip(rates[:peak], rates[1 : peak + 1]))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :]))


def test_learning_rate_at_dispatches_on_the_schedule():
    assert learning_rate_at(7.9, TrainConfig(schedule="constant", learning_rate=0.2, epochs=10)) == 0.2
    assert learning_rate_at(5.5, TrainConfig(schedule="step", learning_rate=1.0, epochs=10)) == pytest.approx(0.1)
    assert learning_rate_at(5.0, TrainConfig(schedule="cosine", learning_rate=1.0, epochs=10)) == pytest.approx(0.5)


def test_learning_rate_scales_linearly_with_the_batch_when_a_reference_batch_is_set():
    fast = dict(schedule="constant", learning_rate=0.4, reference_batch_size=512)
    assert TrainConfig(batch_size=512, **fast).peak_learning_rate == pytest.approx(0.4)
    assert learning_rate_at(3.0, TrainConfig(batch_size=128, **fast)) == pytest.approx(0.1)
    assert learning_rate_at(3.0, TrainConfig(batch_size=1024, **fast)) == pytest.approx(0.8)
    assert TrainConfig(batch_size=128, learning_rate=0.4).peak_learning_rate == 0.4  # no reference: as given
    with pytest.raises(ValueError, match="reference_batch_size must be an integer >= 1 or null, got 0"):
        TrainConfig(reference_batch_size=0)


def test_plateau_scale_multiplies_the_step_rate_but_not_below_the_minimum():
    config = TrainConfig(learning_rate=1e-3, epochs=200)
    assert learning_rate_at(0, config, plateau_scale=0.1) == pytest.approx(1e-4)
    assert learning_rate_at(0, config, plateau_scale=1e-9) == pytest.approx(PLATEAU_MIN_LEARNING_RATE)


def test_plateau_reduces_after_patience_epochs_without_improvement_and_resets_on_improvement():
    state = update_plateau(PlateauState(), validation_loss=1.0, learning_rate=1e-3)
    assert state == PlateauState(scale=1.0, best_validation_loss=1.0, wait=0)
    for _ in range(PLATEAU_PATIENCE - 1):
        state = update_plateau(state, 1.0, 1e-3)
    assert state.scale == 1.0 and state.wait == PLATEAU_PATIENCE - 1
    state = update_plateau(state, 1.0, 1e-3)
    assert state.scale == pytest.approx(math.sqrt(0.1)) and state.wait == 0
    state = update_plateau(state, 0.5, 1e-3)
    assert state == PlateauState(scale=pytest.approx(math.sqrt(0.1)), best_validation_loss=0.5, wait=0)


def test_plateau_does_not_reduce_an_already_minimal_rate():
    state = PlateauState(scale=0.5, best_validation_loss=1.0, wait=PLATEAU_PATIENCE - 1)
    assert update_plateau(state, 2.0, PLATEAU_MIN_LEARNING_RATE).scale == 0.5


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_a_split_smaller_than_one_batch_fills_the_batch_from_further_passes(cache, tmp_path):
    reader = open_dataset(write_dataset(tmp_path / "dataset", train_count=3, test_count=3))
    batches = list(make_train_dataset(reader, batch_size=8, seed=0, cache=cache).take(2))
    assert [batch[0].shape[0] for batch in batches] == [8, 8]
    assert steps_per_epoch_for(3, 8) == 1


# --- real training runs ---------------------------------------------------------------------------


class StopBeforeEpoch(keras.callbacks.Callback):
    """Interrupts training as a preemption would: at the start of (0-based) epoch `epoch`."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"preempted before epoch {epoch + 1}")


@pytest.fixture(scope="module")
def trained_run(tiny_dataset, tmp_path_factory):
    """One two-epoch lenet5 run with a checkpoint directory: (output_dir, checkpoint_dir, result)."""
    root = tmp_path_factory.mktemp("trained_run")
    output_dir, checkpoint_dir = str(root / "output"), str(root / "checkpoints")
    result = train(tiny_dataset, "lenet5", output_dir, quick_config(), checkpoint_dir=checkpoint_dir)
    return output_dir, checkpoint_dir, result


def test_train_writes_model_history_and_result(trained_run, tiny_dataset):
    output_dir, _, result = trained_run
    assert sorted(os.listdir(output_dir)) == ["history.csv", "model.keras", "train_result.json"]
    assert read_result(output_dir) == result.to_dict()
    history = read_history(output_dir)
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert list(history[0]) == list(train_module.HISTORY_COLUMNS)
    # The tiny dataset has no validation split: nothing is validated (the test split is never looked at).
    assert all(math.isnan(float(row["val_accuracy"])) and float(row["loss"]) > 0 and float(row["seconds"]) > 0
               for row in history)
    assert result.name == "lenet5" and result.family == "lenet" and result.epochs == 2
    assert result.resumed_from_epoch == 0
    assert result.optimizer_steps == 2 * math.ceil(24 / 8)
    assert result.train_seconds == pytest.approx(sum(float(row["seconds"]) for row in history))
    assert result.train_images_per_second == pytest.approx(2 * 24 / result.train_seconds)
    assert result.best_validation_accuracy is None and result.best_epoch == 2 and result.epoch_chosen_by == "last"
    assert result.config == quick_config().to_dict() and result.validation_split is None


def test_saved_model_takes_raw_uint8_images_and_includes_preprocessing(trained_run, tiny_dataset, tmp_path):
    output_dir, _, result = trained_run
    model = keras.models.load_model(os.path.join(output_dir, "model.keras"), compile=False)
    assert model.count_params() == result.params
    layer_names = [layer.name for layer in model.layers]
    assert layer_names[1:4] == ["scale_to_unit", "subtract_pixel_mean", "resize_to_min_input"]
    assert model.input_shape == (None, *TINY_SHAPE)
    images, _ = load_split(tiny_dataset, "test")
    probabilities = model.predict(images.astype(np.float32), verbose=0)
    assert probabilities.shape == (12, TINY_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    train_images, _ = load_split(tiny_dataset, "train")
    mean_layer = model.get_layer("subtract_pixel_mean")
    np.testing.assert_allclose(-np.asarray(mean_layer.offset), train_images.mean(axis=0) / 255.0, rtol=1e-5)


def test_rerun_with_more_epochs_resumes_and_continues_the_optimizer(trained_run, tiny_dataset, tmp_path):
    _, checkpoint_dir, first = trained_run
    extended_checkpoints = str(tmp_path / "checkpoints")
    shutil.copytree(checkpoint_dir, extended_checkpoints)
    output_dir = str(tmp_path / "output")
    result = train(tiny_dataset, "lenet5", output_dir, quick_config(epochs=3), checkpoint_dir=extended_checkpoints)
    assert result.resumed_from_epoch == 2 and result.epochs == 3
    assert result.optimizer_steps == 3 * math.ceil(24 / 8), "the restored optimizer kept counting"
    history = read_history(output_dir)
    assert [row["epoch"] for row in history] == ["1", "2", "3"]
    assert [row["seconds"] for row in history[:2]] == [str(row["seconds"]) for row in load_checkpoint(checkpoint_dir)["history"]]
    assert result.train_seconds > first.train_seconds
    state = load_checkpoint(extended_checkpoints)
    # (Hidden files are the lock files of the run's lease.)
    visible = [name for name in os.listdir(extended_checkpoints) if not name.startswith(".")]
    assert state["epoch"] == 3 and sorted(visible) == sorted(
        {"state.json", state["checkpoint"], state["best_checkpoint"]}
    )
    restored = keras.models.load_model(state["checkpoint_path"])
    assert int(restored.optimizer.iterations.numpy()) == 9


def test_rerun_when_all_epochs_are_done_only_writes_outputs(trained_run, tiny_dataset, tmp_path):
    _, checkpoint_dir, first = trained_run
    before = load_checkpoint(checkpoint_dir)
    result = train(tiny_dataset, "lenet5", str(tmp_path / "again"), quick_config(), checkpoint_dir=checkpoint_dir)
    assert result.resumed_from_epoch == 2 and result.train_seconds == first.train_seconds
    assert load_checkpoint(checkpoint_dir) == before
    assert os.path.exists(tmp_path / "again" / "model.keras")


def test_checkpoint_of_a_different_configuration_is_refused(trained_run, tiny_dataset, tmp_path):
    _, checkpoint_dir, _ = trained_run
    expected = r"different configuration \(changed: learning_rate 0.001 -> 0.01\); use a new --checkpoint-root or delete it"
    with pytest.raises(ValueError, match=expected):
        train(tiny_dataset, "lenet5", str(tmp_path / "out"), quick_config(learning_rate=0.01), checkpoint_dir=checkpoint_dir)
    assert not os.path.exists(tmp_path / "out" / "train_result.json")


def test_interrupted_run_resumes_at_the_next_epoch(tiny_dataset, tmp_path):
    checkpoint_dir, output_dir = str(tmp_path / "checkpoints"), str(tmp_path / "output")
    config = quick_config(epochs=2, schedule="cosine", warmup_epochs=1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_dataset, "lenet5", output_dir, config, checkpoint_dir=checkpoint_dir, callbacks=[StopBeforeEpoch(1)])
    assert load_checkpoint(checkpoint_dir)["epoch"] == 1
    assert not os.path.exists(os.path.join(output_dir, "train_result.json"))
    result = train(tiny_dataset, "lenet5", output_dir, config, checkpoint_dir=checkpoint_dir)
    assert result.resumed_from_epoch == 1 and result.epochs == 2 and result.optimizer_steps == 6
    history = read_history(output_dir)
    # The resumed run continues the same per-step curve: each row holds its epoch's last step's rate.
    expected = [learning_rate_at_step(step, 3, config) for step in (2, 5)]
    assert [float(row["learning_rate"]) for row in history] == pytest.approx(expected, rel=1e-5)
    assert [int(row["steps"]) for row in history] == [3, 3]


class PoisonWeightsAtEpoch(keras.callbacks.Callback):
    """Sets the classifier's kernel to NaN at the start of (0-based) epoch `epoch`, as a blown-up update would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = [weight for weight in self.model.trainable_weights if len(weight.shape) == 2][-1]
            kernel.assign(np.full(kernel.shape, np.nan, dtype=np.float32))


def test_divergence_stops_with_a_one_line_error(tiny_dataset, tmp_path):
    config = quick_config(epochs=3, optimizer="sgd", learning_rate=0.05)
    with pytest.raises(ValueError, match=r"^training diverged: loss became nan at epoch 2; lower --learning-rate \(the peak rate was 0.05\)"):
        train(tiny_dataset, "lenet5", str(tmp_path / "output"), config, callbacks=[PoisonWeightsAtEpoch(1)])
    assert os.listdir(tmp_path) == ["output"] and os.listdir(tmp_path / "output") == []


def test_train_without_checkpoint_dir_removes_its_temporary_checkpoints_and_uses_validation_split(tmp_path):
    dataset = write_dataset(tmp_path / "dataset", validation_count=6)
    result = train(dataset, "lenet5", str(tmp_path / "output"), quick_config(epochs=1, steps_per_execution="auto"))
    assert sorted(os.listdir(tmp_path)) == ["dataset", "output"]
    assert result.validation_split == "validation" and result.epochs == 1


def test_without_a_validation_split_the_plateau_schedule_watches_the_training_loss(tiny_dataset, tmp_path):
    checkpoint_dir = str(tmp_path / "checkpoints")
    result = train(tiny_dataset, "lenet5", str(tmp_path / "output"), quick_config(schedule="step"),
                   checkpoint_dir=checkpoint_dir)
    losses = [float(row["loss"]) for row in read_history(str(tmp_path / "output"))]
    assert result.epoch_chosen_by == "last" and result.best_epoch == 2
    watched = load_checkpoint(checkpoint_dir)["plateau"]["best_validation_loss"]  # the lowest loss it saw
    assert watched is not None and any(watched == pytest.approx(loss) for loss in losses)


def test_unknown_model_is_refused_before_any_work(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="unknown model 'lenet6'; choose one of: .*lenet5"):
        train(tiny_dataset, "lenet6", str(tmp_path / "output"), quick_config())
    assert not os.path.exists(tmp_path / "output")


def kill_after_first_checkpoint(process: subprocess.Popen, checkpoint_dir: str) -> int:
    """SIGKILLs a training process, as a lost machine would, once its first checkpoint is in
    `checkpoint_dir`; returns that checkpoint's epoch."""
    try:
        deadline = time.monotonic() + 600
        while load_checkpoint(checkpoint_dir) is None:
            assert process.poll() is None, "training exited before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.2)
    finally:
        process.kill()  # also when the wait failed: no training left behind
        process.communicate()
    return load_checkpoint(checkpoint_dir)["epoch"]


@pytest.mark.slow
def test_killed_process_resumes_from_its_last_checkpoint(tiny_dataset, tmp_path):
    """A real preemption: SIGKILL the training process once a checkpoint exists, then rerun."""
    checkpoint_dir, output_dir = str(tmp_path / "checkpoints"), str(tmp_path / "output")
    script = textwrap.dedent(f"""
        import time, keras
        from components.recipe import TrainConfig
        from components.train import train

        class Slow(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                time.sleep(1)  # leaves time to kill the process between checkpoints

        config = TrainConfig(epochs=6, batch_size=8, steps_per_execution=1, seed=1, schedule="cosine")
        train({tiny_dataset!r}, "lenet5", {output_dir!r}, config, checkpoint_dir={checkpoint_dir!r}, callbacks=[Slow()])
    """)
    environment = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    process = subprocess.Popen(
        [sys.executable, "-c", script], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killed_at = kill_after_first_checkpoint(process, checkpoint_dir)
    assert 1 <= killed_at < 6 and not os.path.exists(os.path.join(output_dir, "train_result.json"))
    config = TrainConfig(epochs=6, batch_size=8, steps_per_execution=1, seed=1, schedule="cosine")
    result = train(tiny_dataset, "lenet5", output_dir, config, checkpoint_dir=checkpoint_dir)
    assert result.resumed_from_epoch == killed_at and result.epochs == 6
    assert [row["epoch"] for row in read_history(output_dir)] == [str(epoch) for epoch in range(1, 7)]


# ---- epochs and per-step learning rates ---------------------------------------------------------


@pytest.mark.parametrize("image_count, batch_size, steps_per_execution", [
    (24, 8, 1),    # 3 steps an epoch, one per call
    (40, 4, 4),    # 10 steps an epoch in calls of 4, 4, 2
    (23, 5, 3),    # a partial last pass (5 steps) in calls of 3, 2
    (12, 8, 32),   # fewer steps than one call would run
])
def test_an_epoch_is_exactly_one_pass_of_optimizer_steps(image_count, batch_size, steps_per_execution, tmp_path):
    dataset = write_dataset(tmp_path / "dataset", train_count=image_count)
    config = quick_config(epochs=2, batch_size=batch_size, steps_per_execution=steps_per_execution)
    result = train(dataset, "lenet5", str(tmp_path / "output"), config)
    steps_per_epoch = math.ceil(image_count / batch_size)
    assert result.optimizer_steps == 2 * steps_per_epoch == 2 * result.steps_per_epoch
    assert result.images_seen == 2 * steps_per_epoch * batch_size
    history = read_history(str(tmp_path / "output"))
    assert [int(row["steps"]) for row in history] == [steps_per_epoch] * 2
    assert [int(row["images"]) for row in history] == [steps_per_epoch * batch_size] * 2


SCHEDULE_CONFIGS = [
    dict(schedule="cosine", warmup_epochs=2, epochs=6),
    dict(schedule="cosine", warmup_epochs=0, epochs=3),
    dict(schedule="cosine", warmup_epochs=5, epochs=2),  # the warmup never ends
    dict(schedule="linear", warmup_epochs=1.5, epochs=4),
    dict(schedule="linear", warmup_epochs=0, epochs=3),
    dict(schedule="linear", warmup_epochs=5, epochs=2),
    dict(schedule="step", epochs=10),
    dict(schedule="constant", epochs=2),
]


@pytest.mark.parametrize("recipe", SCHEDULE_CONFIGS)
def test_keras_schedule_equals_the_recipe_at_every_step(recipe):
    config = TrainConfig(learning_rate=0.1, **recipe)
    steps_per_epoch = 7
    schedule = make_learning_rate(config, steps_per_epoch)
    for step in range(config.epochs * steps_per_epoch + 2):
        expected = learning_rate_at_step(step, steps_per_epoch, config)
        actual = float(schedule(step)) if callable(schedule) else schedule
        assert actual == pytest.approx(expected, rel=1e-5, abs=1e-9), f"step {step}"


def test_plateau_scale_reaches_the_step_schedule_without_rebuilding_it():
    config = TrainConfig(learning_rate=1e-3, schedule="step", epochs=10)
    schedule = make_learning_rate(config, 5)
    schedule.plateau_scale.assign(0.1)
    assert float(schedule(0)) == pytest.approx(learning_rate_at_step(0, 5, config, plateau_scale=0.1))
    assert float(schedule(49)) == pytest.approx(learning_rate_at_step(49, 5, config, plateau_scale=0.1))


@pytest.mark.parametrize("recipe", [dict(schedule="cosine", warmup_epochs=1, epochs=4), dict(schedule="step", epochs=4)])
def test_the_optimizer_uses_the_scheduled_rate_at_every_step_inside_compiled_calls(recipe):
    """loss = w, so plain SGD moves w by exactly -rate each step: after the run, w = 1 - sum of the
    rates of every step taken, whatever steps_per_execution groups them into."""
    config = TrainConfig(learning_rate=0.01, optimizer="sgd", momentum=0.0, **recipe)
    steps_per_epoch = 5
    inputs = keras.Input(shape=(1,))
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=make_optimizer(config, make_learning_rate(config, steps_per_epoch)),
        loss=lambda y_true, y_pred: tf.reduce_mean(y_pred),
        steps_per_execution=3,  # does not divide the epoch's 5 steps
    )
    ones = tf.data.Dataset.from_tensors((tf.ones([1, 1]), tf.zeros([1, 1]))).repeat().take(steps_per_epoch)
    model.fit(ones, epochs=config.epochs, verbose=0, shuffle=False)  # fit shuffles arrays, not datasets
    steps = config.epochs * steps_per_epoch
    assert int(model.optimizer.iterations) == steps
    expected = 1.0 - sum(learning_rate_at_step(step, steps_per_epoch, config) for step in range(steps))
    assert float(model.get_weights()[0][0, 0]) == pytest.approx(expected, rel=1e-5)


def test_a_retry_of_a_diverged_run_stops_at_once_with_the_same_message(tiny_dataset, tmp_path):
    config = quick_config(epochs=3, optimizer="sgd", learning_rate=0.05)
    checkpoint_dir = str(tmp_path / "checkpoints")
    with pytest.raises(ValueError, match="training diverged"):
        train(tiny_dataset, "lenet5", str(tmp_path / "output"), config, checkpoint_dir=checkpoint_dir,
              callbacks=[PoisonWeightsAtEpoch(1)])
    with pytest.raises(ValueError, match="training diverged.*stopped the same way before"):
        train(tiny_dataset, "lenet5", str(tmp_path / "output"), config, checkpoint_dir=checkpoint_dir)
    assert not os.path.exists(tmp_path / "output" / "train_result.json")
    # Another recipe in the same place is the user's change: the old record no longer applies,
    # and the old checkpoint is refused as usual (which is then what a retry would repeat).
    with pytest.raises(ValueError, match="different configuration"):
        train(tiny_dataset, "lenet5", str(tmp_path / "output"), quick_config(epochs=3, optimizer="sgd", learning_rate=0.01),
              checkpoint_dir=checkpoint_dir)
    with open(os.path.join(checkpoint_dir, "failed.json")) as record:
        assert "different configuration" in json.load(record)["message"]
