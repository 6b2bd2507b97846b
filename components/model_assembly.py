"""The train step's model: built new from the zoo (assembled, compiled) or restored from a checkpoint.

`build_model` and `restore_model` are what components/train.py calls; the pieces below them
(preprocessing layers around a zoo body, the optimizer, weight decay, device settings) are
also used by benchmarks and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from components import models
from components.augmentation import training_model
from components.dataset import DatasetReader
from components.keras_setup import backend, gpu_compute_capabilities, keras
from components.recipe import TrainConfig

# Train images a data-fitted first layer is computed from (see ModelSpec.fit_to_images): enough
# for a stable patch covariance, a second or so to read; fewer for big images, whose bytes
# (uint8, before preprocessing makes them float32) are capped.
FIT_SAMPLE_IMAGES = 5000
FIT_SAMPLE_BYTES = 64 * 1024 * 1024


def build_model(model_name: str, reader: DatasetReader, config: TrainConfig, device: DeviceSettings, learning_rate,
                steps_per_epoch: int, replicas: int, augmentation: tuple[tuple[int, int], bool],
                train_images: np.ndarray | None = None) -> tuple[keras.Model, int]:
    """A new, compiled training model for a run that starts (components/augmentation.py: uint8
    images in, `augmentation` = (shift_pixels, flip) inside the step, the assembled zoo model
    after it); returns it with its steps_per_execution. `train_images`: the train split when it
    is in memory already.

    Call inside the distribution strategy's scope."""
    pixel_mean = reader.pixel_mean() if config.subtract_pixel_mean else None
    fits_stem = config.fit_stem_to_data and models.get_spec(model_name).fit_to_images
    sample = sample_train_images(reader, train_images) if fits_stem else None
    inference = assemble_model(model_name, reader.image_shape, reader.num_classes, pixel_mean, sample)
    shift_pixels, flip = augmentation
    # The augmentation's seed generator starts from the recipe's seed; checkpoints keep its state.
    model = training_model(inference, shift_pixels, flip, seed=config.seed)
    steps_per_execution = resolve_steps_per_execution(
        config.steps_per_execution, model.count_params(), steps_per_epoch, replicas
    )
    shorten_batch_norm_momentum(model, steps_per_epoch)
    compile_model(model, config, device.jit_compile, steps_per_execution, learning_rate)
    return model, steps_per_execution


def restore_model(checkpoint_path: str, config: TrainConfig, device: DeviceSettings, learning_rate,
                  steps_per_epoch: int, replicas: int) -> tuple[keras.Model, int]:
    """The checkpointed model of a run that resumes; returns it with its steps_per_execution.

    Keeps the restored optimizer (its step counter and moments) and the saved precision policy
    of the layers; the schedule is rebuilt, since --epochs may have grown, and the execution
    knobs follow this machine. Call inside the distribution strategy's scope."""
    models.allow_deep_graphs()
    model = keras.models.load_model(checkpoint_path)
    steps_per_execution = resolve_steps_per_execution(
        config.steps_per_execution, model.count_params(), steps_per_epoch, replicas
    )
    model.optimizer.learning_rate = learning_rate
    if config.weight_decay > 0 and not config.weight_decay_on_norm_and_bias:
        exclude_norm_and_bias_from_weight_decay(model)
    model.jit_compile = device.jit_compile
    model.steps_per_execution = steps_per_execution
    return model, steps_per_execution


def assemble_model(
    model_name: str,
    image_shape: Sequence[int],
    num_classes: int,
    pixel_mean: np.ndarray | None = None,
    sample_images: np.ndarray | None = None,
) -> keras.Model:
    """Wraps the zoo body in the preprocessing layers so the model takes raw uint8-valued images.

    raw float32 input -> /255 -> minus `pixel_mean` (an [H, W, C] image in [0, 1] units, if given)
    -> bilinear resize up to the architecture's min_input_size (only when the images are smaller)
    -> zoo body (ends in a float32 softmax). With `sample_images` (raw, [N, H, W, C]) a zoo
    entry that has fit_to_images sets its data-dependent weights from them, preprocessed as above.
    """
    spec = models.get_spec(model_name)
    height, width, channels = (int(size) for size in image_shape)
    inputs = keras.Input(shape=(height, width, channels), dtype="float32", name="images")
    features = keras.layers.Rescaling(1.0 / 255.0, name="scale_to_unit")(inputs)
    if pixel_mean is not None:
        mean_image = np.asarray(pixel_mean, dtype=np.float32)
        features = keras.layers.Rescaling(1.0, offset=-mean_image, name="subtract_pixel_mean")(features)
    if height < spec.min_input_size or width < spec.min_input_size:
        height, width = max(height, spec.min_input_size), max(width, spec.min_input_size)
        features = keras.layers.Resizing(height, width, interpolation="bilinear", name="resize_to_min_input")(features)
    body = models.build_model(model_name, (height, width, channels), num_classes)
    if spec.fit_to_images is not None and sample_images is not None:
        preprocess = keras.Model(inputs, features)
        spec.fit_to_images(body, preprocess.predict(np.asarray(sample_images, dtype=np.float32), batch_size=256, verbose=0))
    return keras.Model(inputs, body(features), name=model_name)


def mirror_images(width: int, name: str = "mirror_images") -> keras.Sequential:
    """A fixed layer stack that mirrors [batch, height, width, channels] images left-right.

    Built from stock Keras layers (a non-trainable Dense holding the anti-diagonal permutation,
    applied along the width axis) rather than a custom layer, so a model holding it still loads
    with plain `keras.models.load_model`.
    """
    reverse = keras.layers.Dense(width, use_bias=False, trainable=False, name=f"{name}_reverse_columns")
    stack = keras.Sequential(
        [keras.layers.Permute((1, 3, 2)), reverse, keras.layers.Permute((1, 3, 2))], name=name
    )
    reverse.build((None, None, None, width))
    reverse.kernel.assign(np.eye(width, dtype=np.float32)[::-1])
    return stack


def with_test_time_flip(model: keras.Model) -> keras.Model:
    """`model` averaging its class probabilities for each image and the image's mirror."""
    inputs = keras.Input(shape=model.input_shape[1:], dtype="float32", name="images")
    mirrored = mirror_images(int(model.input_shape[2]))(inputs)
    probabilities = keras.layers.Average(name="flip_averaged_probabilities")([model(inputs), model(mirrored)])
    return keras.Model(inputs, probabilities, name=model.name)


def make_optimizer(config: TrainConfig, learning_rate) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay) or Nesterov SGD at `learning_rate` (a float or a schedule),
    keeping a moving average of the weights when the recipe asks for one."""
    average = {"use_ema": True, "ema_momentum": config.weight_average_momentum} if config.weight_average_momentum else {}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=learning_rate,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay or None,
            **average,
        )
    if config.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay, **average)
    return keras.optimizers.Adam(learning_rate=learning_rate, **average)


def shorten_batch_norm_momentum(model: keras.Model, steps_per_epoch: int) -> None:
    """Shortens the window of every BatchNormalization's moving statistics.

    Keras' momentum 0.99 averages over the last ~100 steps. While the weights still move fast
    (a short run, a small dataset: 23 steps an epoch for the bundled digits) the statistics then
    describe older weights, and inference-mode accuracy stays near chance while training accuracy
    is high. 0.9 (PyTorch's default), or one epoch when that is shorter, keeps them current. The
    momentum is saved with the model, so a resumed run keeps it.
    """
    momentum = max(0.5, min(0.9, 1.0 - 1.0 / steps_per_epoch))
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > momentum:
            layer.momentum = momentum


def compile_model(model: keras.Model, config: TrainConfig, jit_compile: bool, steps_per_execution: int, learning_rate) -> None:
    """Compiles with categorical cross-entropy (label smoothing) and accuracy.

    The optimizer's slot variables are created here rather than inside the first train step:
    a tf.function that creates variables is traced twice, doubling the first epoch's graph building.
    """
    model.compile(
        optimizer=make_optimizer(config, learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    if config.weight_decay > 0 and not config.weight_decay_on_norm_and_bias:
        exclude_norm_and_bias_from_weight_decay(model)
    model.optimizer.build(model.trainable_variables)


def exclude_norm_and_bias_from_weight_decay(model: keras.Model) -> None:
    """Leaves batch-norm parameters and biases (every trainable variable of rank 0 or 1) out of
    the optimizer's weight decay, which then shrinks only kernels.

    Keras neither saves this choice with the optimizer nor accepts it once the optimizer is built
    (as a restored one is), so the exclusion set is written where `exclude_from_weight_decay`
    keeps it, and again on every resume.
    """
    optimizer = model.optimizer
    optimizer._exclude_from_weight_decay = {optimizer._var_key(variable) for variable in model.trainable_variables if len(variable.shape) <= 1}
    optimizer._exclude_from_weight_decay_pattern = None
    optimizer._exclude_from_weight_decay_cache = {}


@dataclass(frozen=True)
class DeviceSettings:
    """How this machine runs the model: resolved from the config's 'auto' values."""

    gpus: int
    mixed_precision: str
    jit_compile: bool


def resolve_device_settings(config: TrainConfig) -> DeviceSettings:
    """Resolves 'auto' precision and XLA for the visible devices.

    On GPU: XLA on, bfloat16 on compute capability >= 8 (no loss scaling needed), float16 before.
    On CPU: float32, and under TensorFlow no XLA (slower there for ResNet20, BENCHMARKS.md);
    JAX always compiles with XLA (without it, JAX runs the step op by op).
    """
    gpus = gpu_compute_capabilities()
    if config.mixed_precision != "auto":
        mixed_precision = config.mixed_precision
    elif not gpus:
        mixed_precision = "float32"
    else:
        mixed_precision = "mixed_bfloat16" if gpus[0] >= (8, 0) else "mixed_float16"
    if config.jit_compile == "auto":
        jit_compile = bool(gpus) or backend == "jax"
    else:
        jit_compile = bool(config.jit_compile)
    return DeviceSettings(gpus=len(gpus), mixed_precision=mixed_precision, jit_compile=jit_compile)


def resolve_steps_per_execution(setting: int | str, params: int, steps_per_epoch: int, replicas: int = 1) -> int:
    """Steps per compiled call: 'auto' is 32 for models under 1M parameters (where per-step
    dispatch dominates), 8 otherwise; never more than one epoch's steps.

    With several replicas (MirroredStrategy over GPUs) it is 1: Keras 3.15's multi-step loop
    fails on a distributed iterator that ends with the epoch (checked on two logical CPU devices
    in tests/test_device_paths.py), and the per-step dispatch it saves matters least there.
    """
    if replicas > 1:
        return 1
    if setting == "auto":
        setting = 32 if params < 1_000_000 else 8
    return max(1, min(int(setting), steps_per_epoch))


def sample_train_images(reader: DatasetReader, train_images: np.ndarray | None = None) -> np.ndarray:
    """Up to FIT_SAMPLE_IMAGES train images (FIT_SAMPLE_BYTES at most) spread evenly over the
    split (every k-th record, so a split stored class by class still gives every class), uint8
    [N, H, W, C]; taken from `train_images` when the split is in memory already."""
    if train_images is not None:
        return spread_sample(train_images)
    count = max(1, min(FIT_SAMPLE_IMAGES, FIT_SAMPLE_BYTES // int(np.prod(reader.image_shape))))
    stride = max(1, reader.count("train") // count)
    examples = reader.examples("train", ordered=True).shard(stride, 0).take(count).batch(count)
    images, _ = next(examples.as_numpy_iterator())
    return images


def spread_sample(images: np.ndarray) -> np.ndarray:
    """What sample_train_images takes from a split held in memory (every k-th image)."""
    count = max(1, min(FIT_SAMPLE_IMAGES, FIT_SAMPLE_BYTES // int(np.prod(images.shape[1:]))))
    return images[::max(1, len(images) // count)][:count]


def averaged_weights(checkpoint_path: str) -> list[np.ndarray]:
    """The checkpointed model's weights with the optimizer's moving average in place of each
    trainable variable (non-trainable ones, such as batch-norm statistics, as trained)."""
    model = keras.models.load_model(checkpoint_path)
    model.optimizer.finalize_variable_values(model.trainable_variables)
    return model.get_weights()
