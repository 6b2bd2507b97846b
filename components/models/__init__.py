"""Model zoo: the classic CNNs of the seed documents, built with the Keras Functional API.

`MODELS` maps a model name to its `ModelSpec`; `build_model(name, input_shape, num_classes)` checks the
arguments and builds the network; `model_table()` lists every entry for `cnnpipe models`.
Each family module (lenet, alexnet, vgg, inception, resnet) registers its models with
`@register_model` on their builders; importing this package imports those modules, which import
Keras only when a model is built, so checking a model name costs no TensorFlow start-up.
Every model takes a float32 image batch (already scaled by the caller) and returns float32 softmax
probabilities (`common.softmax_classifier`), so it also works under the mixed_float16 policy.
To add a model, see "Adding a model" in the README.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from components import checks
from components.errors import UserError
from components.models.table import MODELS, ModelSpec, register_model

# Importing the family modules fills MODELS, in this order (the order `cnnpipe models` prints).
from components.models import lenet, alexnet, vgg, inception, resnet, fastnet  # noqa: F401  isort: skip

if TYPE_CHECKING:
    import keras

# Keras maps a Functional graph recursively, one Python frame per layer on the longest path;
# resnet1202_v1 has about 4,200 layers in a row, beyond Python's default limit of 1,000.
DEEP_GRAPH_RECURSION_LIMIT = 20_000

# Input used for the parameter counts of `model_table` and `ModelSpec.params`.
TABLE_INPUT_SHAPE = (32, 32, 3)
TABLE_NUM_CLASSES = 10


def allow_deep_graphs():
    """Raise Python's recursion limit (never lower it) so Keras can build the deepest models.

    Building needs it; loading and exporting call it too, as a cheap guard for resnet1202_v1.
    """
    if sys.getrecursionlimit() < DEEP_GRAPH_RECURSION_LIMIT:
        sys.setrecursionlimit(DEEP_GRAPH_RECURSION_LIMIT)


def get_spec(name: str) -> ModelSpec:
    """The zoo entry for `name`; UserError listing the choices if there is none."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)} (see `cnnpipe models`)")
    return MODELS[name]


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Build the registered model `name` for images of input_shape (H, W, C) and num_classes outputs.

    The model's input is float32, its output (None, num_classes) float32 softmax probabilities, and
    model.name == name. ValueError for an unknown name, a malformed shape or an image smaller than
    the model's min_input_size.
    """
    spec = get_spec(name)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(checks.is_integer(size) and size > 0 for size in input_shape):
        raise UserError(f"input_shape must be (height, width, channels), positive ints; got {input_shape!r}")
    checks.integer("num_classes", num_classes, minimum=2)
    input_shape = tuple(int(size) for size in input_shape)
    height, width, _ = input_shape
    if min(height, width) < spec.min_input_size:
        raise UserError(
            f"model {name!r} needs images of at least {spec.min_input_size}x{spec.min_input_size}, "
            f"got {height}x{width}; resize the images up first"
        )
    allow_deep_graphs()
    return spec.build(input_shape, int(num_classes))


def model_table() -> list[dict]:
    """One row per zoo entry: name, family, params (at 32x32x3, 10 classes), accuracies, min size."""
    return [
        {
            "name": spec.name,
            "family": spec.family,
            "params": spec.params,
            "reference_accuracy": spec.reference_accuracy,
            "seed_document_accuracy": spec.seed_document_accuracy,
            # Former key of seed_document_accuracy, kept for readers of `cnnpipe models --json`.
            "seed_accuracy": spec.seed_document_accuracy,
            "min_input_size": spec.min_input_size,
            "description": spec.description,
        }
        for spec in MODELS.values()
    ]
