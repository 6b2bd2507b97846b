"""Model zoo: every registered model builds, predicts probabilities and matches its registry entry."""

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from components.keras_setup import keras
from components.models import (
    MODELS,
    TABLE_INPUT_SHAPE,
    TABLE_NUM_CLASSES,
    build_model,
    model_table,
    parameter_count,
)

# Networks that take from several seconds to over a minute to build on a 2-core CPU; resnet20_v1,
# resnet32_v1 and resnet56_v2 cover their building blocks in the fast runs.
SLOW_TO_BUILD = {
    "resnet44_v1",
    "resnet56_v1",
    "resnet110_v1",
    "resnet164_v1",
    "resnet1202_v1",
    "resnet110_v2",
    "resnet164_v2",
    "resnet1001_v2",
}

# A minute or more per build; only their 32x32 build is tested, since their blocks are those of
# resnet20_v1 and resnet56_v2, which are tested at every input size.
VERY_DEEP = {"resnet1202_v1", "resnet1001_v2"}

# Parameter counts in He et al. 2015, table 6 (CIFAR-10 ResNets).
PUBLISHED_V1_PARAMS = {
    "resnet20_v1": 0.27e6,
    "resnet32_v1": 0.46e6,
    "resnet44_v1": 0.66e6,
    "resnet56_v1": 0.85e6,
    "resnet110_v1": 1.7e6,
    "resnet1202_v1": 19.4e6,
}


def every_model(skip=()):
    """Registry keys (but those in skip) as pytest params, the slow-to-build ones marked slow."""
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW_TO_BUILD else name
        for name in MODELS
        if name not in skip
    ]


@pytest.fixture(autouse=True)
def fresh_keras_session():
    """Free the previous test's models so the big ones do not pile up in memory."""
    yield
    keras.backend.clear_session()


def predict_random_batch(model, input_shape, batch_size=2, training=False):
    """Probabilities for a batch of uniform random images in [0, 1]."""
    images = np.random.default_rng(0).uniform(size=(batch_size, *input_shape)).astype("float32")
    return model(images, training=training).numpy()


def predict_untrained(model, input_shape):
    """Probabilities from an untrained model, with batch norm normalizing by batch statistics.

    In inference mode batch norm uses its initial moving statistics (mean 0, variance 1), which do
    not normalize anything: activations then grow with depth and overflow in the 1000-layer ResNets.
    """
    return predict_random_batch(model, input_shape, training=True)


def assert_probabilities(probabilities, batch_size, num_classes):
    """Each row is a probability distribution over num_classes classes."""
    assert probabilities.shape == (batch_size, num_classes)
    assert probabilities.dtype == np.float32
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def strided_layer_input_sizes(model):
    """(layer name, input height, input width) of every layer that downsamples with stride > 1."""
    sizes = []
    for layer in model.layers:
        strides = getattr(layer, "strides", (1, 1))
        if max(strides) > 1:
            sizes.append((layer.name, *layer.input.shape[1:3]))
    return sizes


@pytest.mark.parametrize("name", every_model())
def test_builds_for_cifar_images(name):
    model = build_model(name, TABLE_INPUT_SHAPE, TABLE_NUM_CLASSES)
    assert model.name == name
    assert model.input.dtype == "float32"
    assert tuple(model.output.shape) == (None, TABLE_NUM_CLASSES)
    assert model.count_params() == MODELS[name].params
    assert_probabilities(predict_untrained(model, TABLE_INPUT_SHAPE), 2, TABLE_NUM_CLASSES)


@pytest.mark.parametrize("name", every_model(skip=VERY_DEEP))
def test_builds_for_grayscale_28_pixel_images(name):
    model = build_model(name, (28, 28, 1), 7)
    assert tuple(model.output.shape) == (None, 7)
    assert_probabilities(predict_untrained(model, (28, 28, 1)), 2, 7)


@pytest.mark.parametrize("name", every_model(skip=VERY_DEEP))
def test_builds_at_min_input_size(name):
    size = MODELS[name].min_input_size
    model = build_model(name, (size, size, 3), 4)
    assert_probabilities(predict_untrained(model, (size, size, 3)), 2, 4)
    for layer_name, height, width in strided_layer_input_sizes(model):
        assert min(height, width) >= 2, f"{layer_name} downsamples a {height}x{width} map"


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("height_shortfall, width_shortfall", [(1, 1), (0, 1)], ids=["smaller", "narrower"])
def test_refuses_images_below_min_input_size(name, height_shortfall, width_shortfall):
    size = MODELS[name].min_input_size
    with pytest.raises(ValueError, match=f"{name}.*at least {size}x{size}"):
        build_model(name, (size - height_shortfall, size - width_shortfall, 3), 10)


@pytest.mark.parametrize("name", [name for name in MODELS if name not in SLOW_TO_BUILD])
def test_min_input_size_is_the_smallest_that_works(name):
    # The slow ResNets are skipped: they have the strides of resnet20_v1 and resnet56_v2.
    size = MODELS[name].min_input_size - 1
    try:
        model = MODELS[name].build((size, size, 1), 10)
    except ValueError:
        return  # an unpadded layer has no output left
    smallest_strided_input = min(min(height, width) for _, height, width in strided_layer_input_sizes(model))
    assert smallest_strided_input < 2


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet21_v1'.*resnet20_v1"):
        build_model("resnet21_v1", (32, 32, 3), 10)


@pytest.mark.parametrize(
    "input_shape, num_classes",
    [((32, 32), 10), ((32, 32, 0), 10), ((32.0, 32, 3), 10), ((32, 32, 3), 1)],
)
def test_rejects_malformed_shapes_and_class_counts(input_shape, num_classes):
    with pytest.raises(ValueError, match="got"):
        build_model("lenet5", input_shape, num_classes)


@pytest.mark.parametrize("name", sorted(PUBLISHED_V1_PARAMS))
def test_resnet_v1_parameter_counts_match_the_paper(name):
    # Seed 004 uses 1x1 projection shortcuts where the paper pads with zeros: a few hundred more weights.
    assert parameter_count(name) == pytest.approx(PUBLISHED_V1_PARAMS[name], rel=0.03)


def test_registry_entries_are_consistent():
    for name, spec in MODELS.items():
        assert spec.name == name
        assert spec.family in {"lenet", "alexnet", "vgg", "inception", "resnet"}
        assert spec.description
        assert spec.min_input_size >= 1
        for accuracy in (spec.reference_accuracy, spec.seed_accuracy):
            assert accuracy is None or 0.0 < accuracy < 1.0
    assert MODELS["resnet20_v1"].reference_accuracy == 0.9125
    assert MODELS["resnet20_v1"].seed_accuracy == 0.9216


def test_model_table_has_one_row_per_model():
    rows = model_table()
    assert [row["name"] for row in rows] == list(MODELS)
    expected_fields = {"name", "family", "params", "reference_accuracy", "seed_accuracy", "min_input_size"}
    for row in rows:
        assert expected_fields <= set(row)
        assert row["params"] == MODELS[row["name"]].params


def test_unrecorded_parameter_count_is_built_and_cached(monkeypatch):
    import components.models as models

    spec = MODELS["lenet5"]
    monkeypatch.setitem(models.MODELS, "lenet5", dataclasses.replace(spec, params=None))
    monkeypatch.setattr(models, "_PARAMETER_COUNTS", {})
    assert parameter_count("lenet5") == spec.params
    assert models._PARAMETER_COUNTS == {"lenet5": spec.params}


def test_mixed_precision_keeps_float32_probabilities():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model("resnet20_v1", (16, 16, 3), 10)
        assert model.get_layer("logits").compute_dtype == "float16"
        assert model.output.dtype == "float32"
        assert_probabilities(predict_random_batch(model, (16, 16, 3)), 2, 10)
    finally:
        keras.config.set_dtype_policy("float32")


# Keras' own saving code converts variables with a numpy 1.x call that numpy 2 warns about.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_saved_model_round_trips(tmp_path):
    model = build_model("resnet20_v1", (16, 16, 1), 5)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.name == "resnet20_v1"
    np.testing.assert_allclose(
        predict_random_batch(restored, (16, 16, 1)), predict_random_batch(model, (16, 16, 1)), atol=1e-6
    )
