"""Named presets for a run, and how flags on the command line refine them.

A preset fixes everything a run needs (dataset, models, training recipe); flags override single
fields; the resolved result is saved next to the outputs as ``config.json`` so a run can be
repeated exactly. Presets hold plain values so that importing this module stays cheap (no
TensorFlow): the training recipe is validated by ``TrainConfig.from_dict`` when a run resolves.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping

from components import checks
from components.backends import BACKENDS, DEFAULT_BACKEND, check_workers
from components.errors import UserError


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str
    dataset: str
    models: tuple[str, ...]
    validation_fraction: float
    train: Mapping[str, Any]  # fields of components.recipe.TrainConfig


# The share of the training images every preset holds out to choose the epoch and steer the
# plateau schedule, so that nothing is chosen on the test split: 10 %, as the papers hold out
# 5,000 of CIFAR-10's 50,000 training images.
VALIDATION_FRACTION = 0.1


def _frozen(**values: Any) -> Mapping[str, Any]:
    return types.MappingProxyType(values)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description="about two minutes on a laptop CPU: the bundled digits and three architectures",
        dataset="digits",
        models=("alexnet8", "inception10", "resnet20_v1"),
        validation_fraction=VALIDATION_FRACTION,
        train=_frozen(
            epochs=3, batch_size=64, optimizer="adam", learning_rate=2e-3, schedule="cosine",
            warmup_epochs=0.5, shift_fraction=0.125, subtract_pixel_mean=True,
        ),
    ),
    "seed": Preset(
        name="seed",
        description="the seed documents' recipe for ResNet on CIFAR-10: adam 1e-3, step decay at 80/120/160/180, 200 epochs",
        dataset="cifar10",
        models=("resnet20_v1",),
        validation_fraction=VALIDATION_FRACTION,
        train=_frozen(
            epochs=200, batch_size=128, optimizer="adam", learning_rate=1e-3, schedule="step",
            warmup_epochs=0.0, label_smoothing=0.0, weight_decay=0.0, shift_fraction=0.1,
            subtract_pixel_mean=True,
        ),
    ),
    "fast": Preset(
        name="fast",
        description="minutes on a CPU: FastNet8 with a whitened stem, nesterov SGD with linear warmup and decay "
        "(learning rate per 512 images, scaled with the batch), label smoothing, weight decay on kernels only "
        "and flip-averaged predictions",
        dataset="cifar10",
        models=("fastnet8_small",),
        validation_fraction=VALIDATION_FRACTION,
        train=_frozen(
            epochs=10, batch_size=512, reference_batch_size=512, optimizer="sgd", learning_rate=0.8, momentum=0.9,
            schedule="linear", warmup_epochs=0.5, label_smoothing=0.1, weight_decay=5e-4,
            weight_decay_on_norm_and_bias=False, shift_fraction=0.0625, subtract_pixel_mean=True,
            fit_stem_to_data=True, test_time_flip=True,
        ),
    ),
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one pipeline run needs, after preset and flags are merged."""

    preset: str
    dataset: str
    models: tuple[str, ...]
    validation_fraction: float
    train: Mapping[str, Any]
    workers: int = 1  # processes training each model data-parallel
    image_size: int = 0  # side every image is resized to by prep; 0 keeps the source's size
    max_image_pixels: int = 0  # largest image prep decodes (width x height); 0: components' default
    backend: str = "tensorflow"  # Keras backend of training and evaluation (components/backends.py)

    @property
    def seed(self) -> int:
        """The recipe's random seed, also the random seed of the data splits."""
        return int(self.train.get("seed", 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "dataset": self.dataset,
            "models": list(self.models),
            "validation_fraction": self.validation_fraction,
            "train": dict(self.train),
            "workers": self.workers,
            "image_size": self.image_size,
            "max_image_pixels": self.max_image_pixels,
            "backend": self.backend,
        }


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def resolve(
    preset: str = "smoke",
    dataset: str | None = None,
    models: list[str] | tuple[str, ...] | None = None,
    validation_fraction: float | None = None,
    workers: int | None = None,
    image_size: int | None = None,
    max_image_pixels: int | None = None,
    backend: str | None = None,
    **train_overrides: Any,
) -> RunConfig:
    """Merge a preset with overrides (``None`` means "keep the preset's value") and validate it.

    Raises ``ValueError`` naming the bad value: unknown preset or model, an empty model list,
    or any training field that ``TrainConfig.from_dict`` refuses (for example ``epochs=0``).
    """
    from components.models import MODELS
    from components.recipe import TrainConfig

    base = get_preset(preset)
    chosen_models = tuple(models) if models is not None else base.models
    if not chosen_models:
        raise UserError("no models given; pass --models with at least one name from `cnnpipe models`")
    unknown = [name for name in chosen_models if name not in MODELS]
    if unknown:
        raise UserError(
            f"unknown model '{unknown[0]}'; choose from: {', '.join(MODELS)} (see `cnnpipe models`)"
        )
    if len(set(chosen_models)) != len(chosen_models):
        raise UserError(f"model list has duplicates: {','.join(chosen_models)}")
    fraction = checks.fraction(
        "--validation-fraction", base.validation_fraction if validation_fraction is None else validation_fraction)
    train = {**base.train, **{key: value for key, value in train_overrides.items() if value is not None}}
    # None means "decide from the data" (e.g. horizontal_flip); KFP parameters cannot hold None,
    # and from_dict restores the default when the key is absent.
    resolved_train = {key: value for key, value in TrainConfig.from_dict(train).to_dict().items() if value is not None}
    backend = checks.choice("--backend", backend or DEFAULT_BACKEND, BACKENDS)
    workers = checks.integer("--workers", 1 if workers is None else workers, minimum=1, why="1 = one process")
    check_workers(backend, workers)
    return RunConfig(
        preset=base.name,
        dataset=dataset or base.dataset,
        models=chosen_models,
        validation_fraction=fraction,
        train=types.MappingProxyType(resolved_train),
        workers=workers,
        image_size=checks.integer("--image-size", 0 if image_size is None else image_size, minimum=0,
                                  why="0 = keep the images' size"),
        max_image_pixels=checks.integer("--max-image-pixels", 0 if max_image_pixels is None else max_image_pixels,
                                        minimum=0, why="0 = the default, 64 Mi"),
        backend=backend,
    )
