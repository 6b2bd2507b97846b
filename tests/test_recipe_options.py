"""Recipe options of the fast preset: the linear schedule, weight decay on kernels only, the
whitened stem, the flip-averaging saved model, and the moving average of the weights."""

import json
import os

import numpy as np
import pytest

from components.keras_setup import keras
from components.model_assembly import assemble_model, compile_model, with_test_time_flip
from components.recipe import TrainConfig
from components.train import train
from schedule_reference import learning_rate_at, learning_rate_at_step
from test_train import quick_config, read_history, write_dataset


def test_linear_schedule_warms_up_then_falls_in_a_straight_line_to_zero():
    config = TrainConfig(schedule="linear", learning_rate=0.4, epochs=10, warmup_epochs=2)
    assert learning_rate_at(1.0, config) == pytest.approx(0.2)
    assert learning_rate_at(2.0, config) == pytest.approx(0.4)
    assert learning_rate_at(6.0, config) == pytest.approx(0.2)
    assert learning_rate_at(10.0, config) == pytest.approx(0.0)
    steps_per_epoch = 5
    rates = [learning_rate_at_step(step, steps_per_epoch, config) for step in range(10 * steps_per_epoch + 1)]
    decay = np.diff(rates[2 * steps_per_epoch:])
    assert np.allclose(decay, decay[0]) and decay[0] < 0  # one constant slope after the warmup
    assert rates[-1] == pytest.approx(0.0)


def test_new_fields_at_their_defaults_keep_older_fingerprints():
    config = TrainConfig()
    inputs = config.fingerprint_inputs("resnet20_v1", "abc")
    assert not {"test_time_flip", "weight_decay_on_norm_and_bias", "fit_stem_to_data"} & set(inputs)
    changed = TrainConfig(test_time_flip=True, weight_decay_on_norm_and_bias=False, fit_stem_to_data=True)
    assert changed.fingerprint("resnet20_v1", "abc") != config.fingerprint("resnet20_v1", "abc")


@pytest.mark.parametrize("on_norm_and_bias", [True, False])
def test_weight_decay_on_kernels_only_leaves_norm_and_bias_variables_alone(on_norm_and_bias):
    config = TrainConfig(optimizer="sgd", momentum=0.0, learning_rate=1.0, weight_decay=0.5,
                         weight_decay_on_norm_and_bias=on_norm_and_bias, schedule="constant")
    model = assemble_model("fastnet8_small", (12, 12, 3), 3)
    compile_model(model, config, jit_compile=False, steps_per_execution=1, learning_rate=config.learning_rate)
    variables = model.trainable_variables
    for variable in variables:  # nonzero everywhere, so decay shows on every variable
        variable.assign(np.ones(variable.shape, dtype=np.float32))
    model.optimizer.apply_gradients([(np.zeros(variable.shape, dtype=np.float32), variable) for variable in variables])
    for variable in variables:
        decayed = not np.allclose(variable.numpy(), 1.0)
        kernel = len(variable.shape) > 1
        assert decayed == (kernel or on_norm_and_bias), variable.path
    assert any(len(variable.shape) <= 1 for variable in variables)  # the model has norm or bias variables


def test_flip_averaged_model_equals_the_mean_of_both_views_and_loads_with_plain_keras(tmp_path):
    model = assemble_model("fastnet8_small", (16, 16, 3), 4)
    averaged = with_test_time_flip(model)
    images = np.random.default_rng(0).uniform(0, 255, size=(5, 16, 16, 3)).astype(np.float32)
    expected = (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(averaged.predict(images, verbose=0), expected, atol=1e-6)
    path = os.path.join(tmp_path, "model.keras")
    averaged.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert loaded.name == model.name
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)


@pytest.fixture(scope="module")
def flip_and_stem_runs(tmp_path_factory):
    """horizontal_flip -> the output directory of a one-epoch run of fastnet8_small with
    test_time_flip on; the run with flips also fits its stem to the data, the other does not.
    Two runs serve both tests below: each training run costs seconds."""
    root = tmp_path_factory.mktemp("flip_and_stem")
    dataset = write_dataset(root / "dataset", image_shape=(12, 12, 3))
    outputs = {}
    for horizontal_flip in (True, False):
        outputs[horizontal_flip] = root / f"flip-{horizontal_flip}"
        config = quick_config(epochs=1, test_time_flip=True, horizontal_flip=horizontal_flip, fit_stem_to_data=horizontal_flip)
        train(dataset, "fastnet8_small", str(outputs[horizontal_flip]), config)
    return outputs


def find_layer(model, name):
    """The layer called `name` in `model` or in the models nested in it."""
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            found = find_layer(layer, name)
            if found is not None:
                return found
    return None


def test_test_time_flip_is_saved_only_where_flips_keep_the_class(flip_and_stem_runs):
    images = np.random.default_rng(1).uniform(0, 255, size=(3, 12, 12, 3)).astype(np.float32)
    for horizontal_flip, output in flip_and_stem_runs.items():
        model = keras.models.load_model(output / "model.keras", compile=False)
        symmetric = np.allclose(model.predict(images, verbose=0), model.predict(images[:, :, ::-1], verbose=0), atol=1e-6)
        assert symmetric == horizontal_flip
        with open(output / "train_result.json") as result_file:
            assert json.load(result_file)["config"]["test_time_flip"] is True


def test_whitened_stem_decorrelates_patches_and_stays_fixed():
    from components.models import build_model
    from components.models.fastnet import whiten_stem

    generator = np.random.default_rng(2)
    # Strongly correlated neighbouring pixels and channels, like photos.
    base = generator.normal(size=(200, 1, 1, 1)) + 0.3 * generator.normal(size=(200, 12, 12, 3))
    images = (base + 0.05 * generator.normal(size=base.shape)).astype(np.float32)
    model = build_model("fastnet8_small", (12, 12, 3), 4)
    whiten_stem(model, images)
    stem = model.get_layer("stem")
    assert not stem.trainable
    responses = keras.Model(model.input, stem.output).predict(images, verbose=0)
    positive_half = responses[..., : responses.shape[-1] // 2].reshape(-1, responses.shape[-1] // 2)
    moments = positive_half.T @ positive_half / len(positive_half)
    off_diagonal = moments - np.diag(np.diag(moments))
    assert np.abs(off_diagonal).max() < 0.05
    assert np.allclose(np.diag(moments), 1.0, atol=0.05)  # unit variance along every direction


def test_training_fits_the_stem_only_when_the_recipe_asks(flip_and_stem_runs):
    stems = {}
    for fit, output in flip_and_stem_runs.items():  # the run with flips fitted its stem
        with open(output / "train_result.json") as result_file:
            assert json.load(result_file)["config"]["fit_stem_to_data"] is fit
        model = keras.models.load_model(output / "model.keras", compile=False)
        stems[fit] = find_layer(model, "stem")
    assert not stems[True].trainable and stems[False].trainable


def test_the_report_states_the_recipe_in_one_line():
    from components.report.markdown import recipe_line

    line = recipe_line(TrainConfig(
        optimizer="sgd", learning_rate=0.4, reference_batch_size=512, batch_size=512, schedule="linear",
        warmup_epochs=1, epochs=10, label_smoothing=0.2, weight_decay=5e-4, weight_decay_on_norm_and_bias=False,
        shift_fraction=0.0625, weight_average_momentum=0.99, test_time_flip=True,
    ).to_dict())
    assert line == (
        "sgd, peak learning rate 0.4 per 512 images (linear schedule, 1 warmup epoch), batch 512, 10 epochs, "
        "label smoothing 0.2, weight decay 0.0005 on kernels only, shifts up to 6.25 % of a side, "
        "weights averaged with momentum 0.99, flip-averaged predictions"
    )
    assert "flip" not in recipe_line(TrainConfig().to_dict()) and "averaged" not in recipe_line(TrainConfig().to_dict())


def test_weight_averaging_validates_and_saves_the_average_and_checkpoints_both(tmp_path):
    from components import checkpoints
    from components.dataset import open_dataset
    from components.model_assembly import averaged_weights

    dataset = write_dataset(tmp_path / "dataset", image_shape=(12, 12, 3), validation_count=12)
    checkpoint_dir = str(tmp_path / "checkpoint")
    config = quick_config(epochs=3, optimizer="sgd", learning_rate=0.2, weight_average_momentum=0.6)
    result = train(dataset, "fastnet8_small", str(tmp_path / "model"), config, checkpoint_dir)

    state = checkpoints.load(checkpoint_dir)
    saved = keras.models.load_model(tmp_path / "model" / "model.keras", compile=False)
    trained = keras.models.load_model(state["best_checkpoint_path"], compile=False)
    average = averaged_weights(state["best_checkpoint_path"])
    for saved_value, average_value in zip(saved.get_weights(), average):
        np.testing.assert_array_equal(saved_value, average_value)
    assert any(not np.allclose(value, average_value) for value, average_value in zip(trained.get_weights(), average))

    # The best epoch's validation loss and accuracy are the averaged model's, as saved, not the
    # trained weights'.
    images, labels = open_dataset(dataset).arrays("validation")
    best_row = read_history(tmp_path / "model")[result.best_epoch - 1]

    def loss_and_accuracy(model):
        probabilities = model.predict(images.astype(np.float32), verbose=0)
        loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
        return loss, np.mean(probabilities.argmax(axis=1) == labels)

    saved_loss, saved_accuracy = loss_and_accuracy(saved)
    assert saved_loss == pytest.approx(float(best_row["val_loss"]), rel=1e-5)
    assert saved_accuracy == pytest.approx(result.best_validation_accuracy)
    assert loss_and_accuracy(trained)[0] != pytest.approx(saved_loss, rel=1e-3)
    assert result.config["weight_average_momentum"] == 0.6
