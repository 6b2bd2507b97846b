"""Model zoo: every registered model builds, predicts probabilities and matches its recorded figures.

The tests are parametrized over the zoo's table, so a model registered with `@register_model` is
tested the moment it exists. Each model is built once per test run for 32x32x3 images (the
`cifar_model` fixture) and the checks that need a build share it; building dominates this module's
time, and for the 1000-layer ResNets it is mostly the creation of some 7,000 weight variables: their
builds and those of the 110- and 164-layer ones are marked slow (the full suite runs them,
`make check` does not).
"""

import functools
import os
import pkgutil
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import components.models as models_package
from components.errors import UserError
from components.keras_setup import keras
from components.models import (
    MODELS,
    TABLE_INPUT_SHAPE,
    TABLE_NUM_CLASSES,
    build_model,
    model_table,
    register_model,
)
from components.models.common import layers, softmax_classifier

# Parameter counts in He et al. 2015, table 6 (CIFAR-10 ResNets).
PUBLISHED_V1_PARAMS = {
    "resnet20_v1": 0.27e6,
    "resnet32_v1": 0.46e6,
    "resnet44_v1": 0.66e6,
    "resnet56_v1": 0.85e6,
    "resnet110_v1": 1.7e6,
    "resnet1202_v1": 19.4e6,
}

ZOO = list(MODELS)


def is_deep_resnet(name: str) -> bool:
    """A CIFAR ResNet of 110 layers or more (resnet110_v1 ... resnet1202_v1): the 1000-layer ones
    take tens of seconds to build, more than the rest of the zoo together, and the 110- and
    164-layer ones seconds; the shallower ResNets of the same families run the same code."""
    depth = re.fullmatch(r"resnet(\d+)_v\d", name)
    return bool(depth) and int(depth.group(1)) >= 110


# The zoo for the tests that build each model: the deep ResNets marked slow.
ZOO_BUILDS = [pytest.param(name, marks=pytest.mark.slow) if is_deep_resnet(name) else name for name in ZOO]


@pytest.fixture(scope="session")
def cifar_model():
    """name -> the zoo model built for 32x32x3 images and 10 classes, once per test run."""
    return functools.cache(lambda name: build_model(name, TABLE_INPUT_SHAPE, TABLE_NUM_CLASSES))


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


def downsamples(layer) -> bool:
    """True for a layer with a stride above 1."""
    return max(getattr(layer, "strides", (1,))) > 1


def size_problem(model, size, channels=3):
    """What breaks when the model's graph is fed size x size images, or None if nothing does.

    Walks the built model's layers in graph order and computes each output shape with the layer's
    own compute_output_shape, as a build at that size would, without creating any weights. The
    two failures that define min_input_size: a layer left with an empty output, and a strided
    layer receiving a map smaller than 2x2.
    """
    shapes = {id(model.inputs[0]): (None, size, size, channels)}
    for layer in model.layers[1:]:
        node = layer._inbound_nodes[0]
        input_shapes = [shapes[id(tensor)] for tensor in node.input_tensors]
        spatial_size = min(input_shapes[0][1:3]) if len(input_shapes[0]) == 4 else None
        if downsamples(layer) and spatial_size < 2:
            return f"{layer.name} downsamples a {spatial_size}-pixel map"
        try:
            output_shape = layer.compute_output_shape(input_shapes if len(input_shapes) > 1 else input_shapes[0])
        except ValueError as error:  # an unpadded convolution refuses to produce a negative size
            return f"{layer.name}: {error}"
        if any(dimension is not None and dimension < 1 for dimension in output_shape):
            return f"{layer.name} outputs {output_shape}"
        shapes[id(node.output_tensors[0])] = output_shape
    return None


@pytest.mark.parametrize("name", ZOO_BUILDS)
def test_builds_for_cifar_images(name, cifar_model):
    model = cifar_model(name)
    assert model.name == name
    assert model.input.dtype == "float32"
    assert tuple(model.output.shape) == (None, TABLE_NUM_CLASSES)
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert_probabilities(predict_untrained(model, TABLE_INPUT_SHAPE), 2, TABLE_NUM_CLASSES)


@pytest.mark.parametrize("name", ZOO_BUILDS)
def test_recorded_parameter_count_is_the_built_one(name, cifar_model):
    built = cifar_model(name).count_params()
    assert MODELS[name].params == built, f"{name} has {built:_} parameters: record params={built:_}"


@pytest.mark.parametrize("name", ZOO_BUILDS)
def test_min_input_size_is_the_smallest_that_works(name, cifar_model):
    size = MODELS[name].min_input_size
    assert size_problem(cifar_model(name), size) is None
    assert size_problem(cifar_model(name), size - 1) is not None, f"{name} also works at {size - 1}x{size - 1}"


@pytest.mark.parametrize("name", ZOO_BUILDS)
def test_builds_for_grayscale_images_of_min_input_size(name):
    # Weights are left uninitialized (StatelessScope): creating them is most of a build's time, and
    # this build is about shapes; test_builds_for_cifar_images runs every model's weights.
    size = MODELS[name].min_input_size
    with keras.StatelessScope():
        model = build_model(name, (size, size, 1), 7)
    assert tuple(model.output.shape) == (None, 7)
    assert model.output.dtype == "float32"
    for layer in filter(downsamples, model.layers):
        assert min(layer.input.shape[1:3]) >= 2, f"{layer.name} downsamples a {layer.input.shape} map"


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("height_shortfall, width_shortfall", [(1, 1), (0, 1)], ids=["smaller", "narrower"])
def test_refuses_images_below_min_input_size(name, height_shortfall, width_shortfall):
    size = MODELS[name].min_input_size
    with pytest.raises(UserError, match=f"{name}.*at least {size}x{size}"):
        build_model(name, (size - height_shortfall, size - width_shortfall, 3), 10)


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(UserError, match="unknown model 'resnet21_v1'.*resnet20_v1"):
        build_model("resnet21_v1", (32, 32, 3), 10)


@pytest.mark.parametrize(
    "input_shape, num_classes",
    [((32, 32), 10), ((32, 32, 0), 10), ((32.0, 32, 3), 10), ((32, 32, 3), 1)],
)
def test_rejects_malformed_shapes_and_class_counts(input_shape, num_classes):
    with pytest.raises(UserError, match="got"):
        build_model("lenet5", input_shape, num_classes)


@pytest.mark.parametrize("name", sorted(PUBLISHED_V1_PARAMS))
def test_resnet_v1_parameter_counts_match_the_paper(name):
    # Seed 004 uses 1x1 projection shortcuts where the paper pads with zeros: a few hundred more weights.
    assert MODELS[name].params == pytest.approx(PUBLISHED_V1_PARAMS[name], rel=0.03)


def test_families_are_the_defining_modules():
    # Every module of the package but its two helpers is a family that registers at least one model.
    family_modules = {module.name for module in pkgutil.iter_modules(models_package.__path__)} - {"common", "table"}
    assert {spec.family for spec in MODELS.values()} == family_modules
    for spec in MODELS.values():
        assert spec.builder.__module__ == f"components.models.{spec.family}"
        assert spec.builder.__name__ == spec.name


def test_seed_document_accuracy_keeps_its_former_name():
    spec = MODELS["resnet20_v1"]
    assert (spec.reference_accuracy, spec.seed_document_accuracy) == (0.9125, 0.9216)
    assert spec.seed_accuracy == spec.seed_document_accuracy


def test_model_table_has_one_row_per_model():
    rows = model_table()
    assert [row["name"] for row in rows] == ZOO
    for row in rows:
        spec = MODELS[row["name"]]
        assert (row["family"], row["params"], row["min_input_size"]) == (spec.family, spec.params, spec.min_input_size)
        assert row["seed_document_accuracy"] == row["seed_accuracy"] == spec.seed_document_accuracy


@pytest.fixture
def restored_zoo():
    """Lets a test register models: the table is put back as it was afterwards."""
    saved = dict(MODELS)
    yield MODELS
    MODELS.clear()
    MODELS.update(saved)


def tiny_cnn(input_shape, num_classes, name):
    """Two layers: a 3x3 convolution and the zoo's softmax head over global average pooling."""
    inputs = keras.Input(shape=input_shape)
    features = layers.Conv2D(4, 3, activation="relu")(inputs)
    return softmax_classifier(inputs, layers.GlobalAveragePooling2D()(features), num_classes, name)


def test_a_model_registered_beside_its_builder_joins_the_zoo_and_trains(restored_zoo):
    from components.model_assembly import assemble_model

    # The README's recipe: decorate the builder; 4 * (3*3*3 + 1) + (4 + 1) * 3 = 127 parameters.
    register_model(min_input_size=3, params=127, description="two-layer test network")(tiny_cnn)
    spec = MODELS["tiny_cnn"]
    assert spec.family == __name__.rsplit(".", 1)[-1]
    assert model_table()[-1]["name"] == "tiny_cnn"
    assert build_model("tiny_cnn", TABLE_INPUT_SHAPE, 3).count_params() == spec.params

    model = assemble_model("tiny_cnn", (2, 2, 1), 3)  # smaller than min_input_size: resized inside
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, size=(4, 2, 2, 1)).astype("float32")
    weights_before = [weight.copy() for weight in model.get_weights()]
    history = model.fit(images, np.array([0, 1, 2, 0]), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(before, after) for before, after in zip(weights_before, model.get_weights()))


def test_zoo_refuses_a_taken_name_and_figures_out_of_range(restored_zoo):
    def lenet5(input_shape, num_classes, name):
        return tiny_cnn(input_shape, num_classes, name)

    with pytest.raises(UserError, match="'lenet5' is already registered by the lenet family"):
        register_model(min_input_size=3, params=127, description="a second lenet5")(lenet5)
    with pytest.raises(UserError, match="tiny_cnn: min_input_size must be an integer >= 1, got 0"):
        register_model(min_input_size=0, params=127, description="no size")(tiny_cnn)
    with pytest.raises(UserError, match="reference_accuracy .* got 92.5"):
        register_model(min_input_size=3, params=127, reference_accuracy=92.5, description="percent")(tiny_cnn)
    assert "tiny_cnn" not in MODELS


def test_mixed_precision_keeps_float32_probabilities():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model("resnet20_v1", (16, 16, 3), 10)
        assert model.get_layer("logits").compute_dtype == "float16"
        assert model.output.dtype == "float32"
        assert_probabilities(predict_random_batch(model, (16, 16, 3)), 2, 10)
    finally:
        keras.config.set_dtype_policy("float32")


def test_saved_model_round_trips(tmp_path):
    model = build_model("resnet20_v1", (16, 16, 1), 5)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.name == "resnet20_v1"
    np.testing.assert_allclose(
        predict_random_batch(restored, (16, 16, 1)), predict_random_batch(model, (16, 16, 1)), atol=1e-6
    )
