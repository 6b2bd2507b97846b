"""Model zoo: a plain registry of the classic CNNs of the seed documents, built with the Keras Functional API.

`MODELS` maps a registry key to its `ModelSpec`; `build_model(name, input_shape, num_classes)` checks the
arguments and builds the network; `model_table()` lists every entry with its size for `cnnpipe models`.
The registry itself is plain data: a family's module (and with it Keras) is imported when one of its
models is first built, so checking a model name costs no TensorFlow start-up.
Every model takes a float32 image batch (already scaled by the caller) and returns float32 softmax
probabilities, so it also works under the mixed_float16 policy.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import numbers
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from components.errors import UserError

if TYPE_CHECKING:
    import keras

# Keras maps a Functional graph recursively, one Python frame per layer on the longest path;
# resnet1202_v1 has about 4,200 layers in a row, beyond Python's default limit of 1,000.
DEEP_GRAPH_RECURSION_LIMIT = 20_000

# Input used for the parameter counts of `model_table` and `ModelSpec.params`.
TABLE_INPUT_SHAPE = (32, 32, 3)
TABLE_NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    Attributes:
        name: registry key; the built model carries it as its name.
        family: lenet, alexnet, vgg, inception or resnet: also the module of its builder.
        build: (input_shape, num_classes) -> keras.Model.
        min_input_size: smallest height and width accepted: the smallest size at which every layer
            has a non-empty output and every strided layer still receives a map of at least 2x2
            (one pixel less breaks one of the two). Training resizes smaller images up to it.
        reference_accuracy: CIFAR-10 test accuracy published in the paper, as a fraction, or None.
        seed_accuracy: the seed document's own CIFAR-10 figure, as a fraction, or None.
        description: one line for `cnnpipe models`.
        params: count_params() at 32x32x3 with 10 classes, recorded because building every model
            takes minutes (tests rebuild each one and compare); None means `model_table` builds to count.
    """

    name: str
    family: str
    build: Callable[[tuple[int, int, int], int], keras.Model]
    min_input_size: int
    reference_accuracy: float | None
    seed_accuracy: float | None
    description: str
    params: int | None = None


def _build_with(family, builder, input_shape, num_classes, **arguments):
    """Calls `builder` of module components.models.<family>, importing it on first use."""
    module = importlib.import_module(f"components.models.{family}")
    return getattr(module, builder)(input_shape, num_classes, **arguments)


def _entry(name, family, builder, builder_arguments=None, **spec_fields):
    """A ModelSpec whose build function names the model after its registry key."""
    build = functools.partial(_build_with, family, builder, name=name, **(builder_arguments or {}))
    return ModelSpec(name=name, family=family, build=build, **spec_fields)


_ENTRIES = (
    _entry("lenet5", "lenet", "lenet5", min_input_size=16, params=62_006,
           reference_accuracy=None, seed_accuracy=None,
           description="LeNet5 (seed 001): two sigmoid 5x5 convs with 2x2 pools, dense 120-84"),
    _entry("alexnet8", "alexnet", "alexnet8", min_input_size=21, params=9_639_178,
           reference_accuracy=None, seed_accuracy=0.70,
           description="AlexNet8 (seed 001): 5 convs with BN, dense 2048-2048 with dropout; "
                       "seed 000's AlexNet reached 70% in 10 epochs"),
    _entry("vgg13", "vgg", "vgg13", min_input_size=17, params=9_570_506,
           reference_accuracy=None, seed_accuracy=None,
           description="VGG13 (seed 002): 10 convs without BN, dense 256-128"),
    _entry("vgg16", "vgg", "vgg16", min_input_size=17, params=15_262_026,
           reference_accuracy=None, seed_accuracy=0.7891,
           description="VGG16 (seed 001): 13 convs with BN, dropout 0.2, dense 512-512; "
                       "seed 000's BN+dropout VGG16 reached 78.91% in 10 epochs"),
    _entry("vgg16_imagenet", "vgg", "vgg16_imagenet", min_input_size=17, params=33_638_218,
           reference_accuracy=None, seed_accuracy=None,
           description="VGG16 configuration D (seed 003): 13 convs, FC-4096 x2 with dropout 0.5; "
                       "134M parameters at 224x224"),
    _entry("inception10", "inception", "inception10", min_input_size=3, params=121_418,
           reference_accuracy=None, seed_accuracy=None,
           description="Inception10 (seed 001): stem + 4 four-branch blocks, 16 then 32 filters per branch"),
    _entry("resnet18", "resnet", "resnet18", min_input_size=5, params=11_183_562,
           reference_accuracy=None, seed_accuracy=None,
           description="ResNet18 (seed 001): [2, 2, 2, 2] basic blocks of 64-512 filters"),
    _entry("resnet_blocks10", "resnet", "resnet_blocks10", min_input_size=13, params=819_210,
           reference_accuracy=None, seed_accuracy=0.7845,
           description="Seed 000's ResNet: conv32-conv64-pool, 10 residual blocks of 64, conv64, "
                       "dense 256 + dropout 0.5"),
    _entry("resnet20_v1", "resnet", "resnet_v1", {"depth": 20}, min_input_size=3, params=274_442,
           reference_accuracy=0.9125, seed_accuracy=0.9216,
           description="ResNet20 v1 (seed 004, n=3): basic blocks of 16-32-64 filters, he_normal, L2 1e-4"),
    _entry("resnet32_v1", "resnet", "resnet_v1", {"depth": 32}, min_input_size=3, params=470_218,
           reference_accuracy=0.9249, seed_accuracy=0.9246,
           description="ResNet32 v1 (seed 004, n=5)"),
    _entry("resnet44_v1", "resnet", "resnet_v1", {"depth": 44}, min_input_size=3, params=665_994,
           reference_accuracy=0.9283, seed_accuracy=0.9250,
           description="ResNet44 v1 (seed 004, n=7)"),
    _entry("resnet56_v1", "resnet", "resnet_v1", {"depth": 56}, min_input_size=3, params=861_770,
           reference_accuracy=0.9303, seed_accuracy=0.9271,
           description="ResNet56 v1 (seed 004, n=9)"),
    _entry("resnet110_v1", "resnet", "resnet_v1", {"depth": 110}, min_input_size=3, params=1_742_762,
           reference_accuracy=0.9339, seed_accuracy=0.9265,
           description="ResNet110 v1 (seed 004, n=18)"),
    _entry("resnet164_v1", "resnet", "resnet_v1", {"depth": 164}, min_input_size=3, params=2_623_754,
           reference_accuracy=0.9407, seed_accuracy=None,
           description="ResNet164 v1 (seed 004, n=27 basic blocks; the paper's ResNet-164 uses bottlenecks)"),
    _entry("resnet1202_v1", "resnet", "resnet_v1", {"depth": 1202}, min_input_size=3, params=19_558_378,
           reference_accuracy=0.9207, seed_accuracy=None,
           description="ResNet1202 v1 (seed 004, n=200): the paper's 19.4M-parameter, 7.93%-error network"),
    _entry("resnet56_v2", "resnet", "resnet_v2", {"depth": 56}, min_input_size=3, params=1_673_738,
           reference_accuracy=None, seed_accuracy=0.9301,
           description="ResNet56 v2 (seed 004, n=6): pre-activation bottlenecks, 64-128-256 outputs"),
    _entry("resnet110_v2", "resnet", "resnet_v2", {"depth": 110}, min_input_size=3, params=3_323_210,
           reference_accuracy=0.9363, seed_accuracy=0.9315,
           description="ResNet110 v2 (seed 004, n=12): pre-activation bottlenecks"),
    _entry("resnet164_v2", "resnet", "resnet_v2", {"depth": 164}, min_input_size=3, params=4_972_682,
           reference_accuracy=0.9454, seed_accuracy=None,
           description="ResNet164 v2 (seed 004, n=18): pre-activation bottlenecks"),
    _entry("resnet1001_v2", "resnet", "resnet_v2", {"depth": 1001}, min_input_size=3, params=30_539_498,
           reference_accuracy=0.9508, seed_accuracy=None,
           description="ResNet1001 v2 (seed 004, n=111): pre-activation bottlenecks, paper error 4.92%"),
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _ENTRIES}


def allow_deep_graphs():
    """Raise Python's recursion limit (never lower it) so Keras can build the deepest models.

    Building needs it; loading and exporting call it too, as a cheap guard for resnet1202_v1.
    """
    if sys.getrecursionlimit() < DEEP_GRAPH_RECURSION_LIMIT:
        sys.setrecursionlimit(DEEP_GRAPH_RECURSION_LIMIT)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; ValueError listing the choices if there is none."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)} (see `cnnpipe models`)")
    return MODELS[name]


def _is_positive_int(value) -> bool:
    """True for Python or NumPy integers above zero (bools excluded)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Build the registered model `name` for images of input_shape (H, W, C) and num_classes outputs.

    The model's input is float32, its output (None, num_classes) float32 softmax probabilities, and
    model.name == name. ValueError for an unknown name, a malformed shape or an image smaller than
    the model's min_input_size.
    """
    spec = get_spec(name)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(_is_positive_int(size) for size in input_shape):
        raise UserError(f"input_shape must be (height, width, channels), positive ints; got {input_shape!r}")
    if not _is_positive_int(num_classes) or num_classes < 2:
        raise UserError(f"num_classes must be an int >= 2, got {num_classes!r}")
    input_shape = tuple(int(size) for size in input_shape)
    height, width, _ = input_shape
    if min(height, width) < spec.min_input_size:
        raise UserError(
            f"model {name!r} needs images of at least {spec.min_input_size}x{spec.min_input_size}, "
            f"got {height}x{width}; resize the images up first"
        )
    allow_deep_graphs()
    return spec.build(input_shape, int(num_classes))


_PARAMETER_COUNTS: dict[str, int] = {}


def parameter_count(name: str) -> int:
    """count_params() of model `name` at 32x32x3 with 10 classes: recorded, or built once and cached."""
    spec = get_spec(name)
    if spec.params is not None:
        return spec.params
    if name not in _PARAMETER_COUNTS:
        _PARAMETER_COUNTS[name] = build_model(name, TABLE_INPUT_SHAPE, TABLE_NUM_CLASSES).count_params()
    return _PARAMETER_COUNTS[name]


def model_table() -> list[dict]:
    """One row per registry entry: name, family, params (at 32x32x3, 10 classes), accuracies, min size."""
    return [
        {
            "name": spec.name,
            "family": spec.family,
            "params": parameter_count(spec.name),
            "reference_accuracy": spec.reference_accuracy,
            "seed_accuracy": spec.seed_accuracy,
            "min_input_size": spec.min_input_size,
            "description": spec.description,
        }
        for spec in MODELS.values()
    ]
