"""What every family module shares: Keras imported on first use, the classifier head, the size rule.

The family modules are imported with the zoo's table, which `cnnpipe models` and every recipe check
read, so they must not start TensorFlow when imported. `keras` and `layers` here stand in for the
real modules and import them (through components.keras_setup) the first time one of their
attributes is read, that is when a model is first built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras as keras_module


class _KerasOnFirstUse:
    """Stands in for `keras` or one of its submodules; reading an attribute imports Keras."""

    def __init__(self, submodule: str | None = None):
        self._submodule = submodule

    def __getattr__(self, attribute: str):
        from components.keras_setup import keras as imported_keras

        module = getattr(imported_keras, self._submodule) if self._submodule else imported_keras
        return getattr(module, attribute)


keras = _KerasOnFirstUse()
layers = _KerasOnFirstUse("layers")


def softmax_classifier(inputs, features, num_classes: int, name: str, **logits_arguments) -> keras_module.Model:
    """The Functional model from `inputs` to class probabilities computed from `features`.

    The logits are a Dense layer named "logits" (logits_arguments go to it: kernel initializer,
    regularizer); the softmax, named "probabilities", runs in float32 so probabilities and the loss
    stay stable when the rest of the model computes in float16 under mixed precision.
    """
    logits = layers.Dense(num_classes, name="logits", **logits_arguments)(features)
    probabilities = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name=name)


def min_size_for_downsamplings(count: int) -> int:
    """Smallest image side at which each of `count` stride-2 'same'-padded layers gets a 2x2 map.

    'Same' padding rounds each halving up, so the last of them receives ceil(size / 2**(count - 1)),
    which is at least 2 exactly when size >= 2**(count - 1) + 1. Unpadded layers shrink maps by
    their kernel too; families that have them work their minimum out beside the builder.
    """
    return 2 ** (count - 1) + 1 if count > 0 else 1
