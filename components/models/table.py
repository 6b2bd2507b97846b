"""The zoo's table: `MODELS` maps a model name to its `ModelSpec`, filled by `@register_model`.

A model is registered where its builder is defined: the decorator on the builder in its family
module records the builder function itself, the family (that module's name) and the figures
`cnnpipe models` prints. This module and the family modules import no TensorFlow, so reading
the table is instant; Keras is imported when a model is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from components import checks
from components.errors import UserError

if TYPE_CHECKING:
    import keras
    import numpy as np


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of the zoo.

    Attributes:
        name: the model's name in the zoo (its builder's function name); the built model carries it.
        family: the module that defines the builder (lenet, alexnet, vgg, inception, resnet ...).
        builder: (input_shape, num_classes, name) -> keras.Model, ending in a float32 softmax.
        min_input_size: smallest height and width accepted: the smallest size at which every layer
            has a non-empty output and every strided layer still receives a map of at least 2x2
            (one pixel less breaks one of the two). Training resizes smaller images up to it.
        params: count_params() at 32x32x3 with 10 classes; the tests build the model and compare.
        reference_accuracy: CIFAR-10 test accuracy published in the paper, as a fraction, or None.
        seed_document_accuracy: the CIFAR-10 figure the seed documents report for their own run of
            this network, as a fraction, or None.
        description: one line for `cnnpipe models`.
        fit_to_images: optional (model, images) -> None that sets weights from a sample of the
            training images, already scaled as the model receives them (e.g. a whitening stem);
            training calls it on a new model when the recipe's fit_stem_to_data is on.
    """

    name: str
    family: str
    builder: Callable[..., keras.Model]
    min_input_size: int
    params: int
    reference_accuracy: float | None
    seed_document_accuracy: float | None
    description: str
    fit_to_images: Callable[[keras.Model, np.ndarray], None] | None = None

    @property
    def seed_accuracy(self) -> float | None:
        """Former name of seed_document_accuracy, still read by evaluate, report and the CLI."""
        return self.seed_document_accuracy

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
        """The builder's model for input_shape and num_classes, named after the entry (no argument checks)."""
        return self.builder(input_shape, num_classes, name=self.name)


MODELS: dict[str, ModelSpec] = {}


def register_model(
    *,
    min_input_size: int,
    params: int,
    description: str,
    reference_accuracy: float | None = None,
    seed_document_accuracy: float | None = None,
    fit_to_images: Callable[..., None] | None = None,
):
    """Decorator that adds the builder below it to `MODELS` under the builder's function name.

    The builder takes (input_shape, num_classes, name) and returns a Functional model whose output
    is softmax_classifier's. UserError for a name already taken or a figure out of range.
    """

    def register(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        spec = ModelSpec(
            name=builder.__name__,
            family=builder.__module__.rsplit(".", 1)[-1],
            builder=builder,
            min_input_size=min_input_size,
            params=params,
            reference_accuracy=reference_accuracy,
            seed_document_accuracy=seed_document_accuracy,
            description=description,
            fit_to_images=fit_to_images,
        )
        check_spec(spec)
        MODELS[spec.name] = spec
        return builder

    return register


def check_spec(spec: ModelSpec) -> None:
    """UserError naming the field and value when a new entry cannot join the table."""
    if spec.name in MODELS:
        taken_by = MODELS[spec.name].family
        raise UserError(f"model name {spec.name!r} is already registered by the {taken_by} family; rename the builder")
    for field in ("min_input_size", "params"):
        value = getattr(spec, field)
        checks.integer(f"{spec.name}: {field}", value, minimum=1)
    for field in ("reference_accuracy", "seed_document_accuracy"):
        value = getattr(spec, field)
        if value is not None:
            checks.number(f"{spec.name}: {field}", value, above=0, below=1, hint="None where there is no figure")
    if not spec.description:
        raise UserError(f"{spec.name}: give a one-line description for `cnnpipe models`")
