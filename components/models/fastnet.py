"""FastNet family: a compact VGG-style network with batch norm, sized to train in minutes on a CPU.

The shape follows the networks of the fast-CIFAR-10 training literature (Page's 2018 ResNet-9
work and its successors): a 2x2 unpadded stem convolution, then three stages that each convolve,
max-pool by two, and convolve again, every convolution followed by batch norm and ReLU, and a
global max pool before the classifier. Pooling right after a stage's first convolution keeps
most of the compute at the two smaller resolutions, which is where the accuracy per FLOP is.
"""

import numpy as np

from components.models.common import keras, layers, softmax_classifier
from components.models.table import register_model

STEM_SIZE = 2
# Added to every eigenvalue, relative to the mean patch variance: keeps the faintest patch
# directions (mostly noise and JPEG artefacts) from being amplified as much as the real ones.
WHITENING_EPSILON = 5e-4
WHITENING_CHUNK_PATCHES = 1 << 20  # patches per step of the covariance sum (~100 MB as float64)
FEATURE_SCALE = 1.0 / 9.0  # see FastNet


def FastNet(input_shape, num_classes, widths=(64, 128, 256), name="fastnet"):
    """General FastNet: stem, one stage per entry of `widths`, global max pool, dense softmax.

    Batch norm has no scale (gamma): a ReLU network is invariant to it, and leaving it out saves
    the optimizer a parameter that weight decay would otherwise pull against.

    Args:
        input_shape: (height, width, channels) of the float32 input.
        num_classes: width of the softmax output.
        widths: filters of each stage's two convolutions.
        name: the model's name.
    """
    inputs = keras.Input(shape=input_shape)
    # Twice the values of a patch: whiten_stem fills them with each whitening filter and its negative.
    x = layers.Conv2D(2 * STEM_SIZE * STEM_SIZE * input_shape[-1], STEM_SIZE, name="stem")(inputs)
    x = layers.Activation("relu")(x)
    for stage, filters in enumerate(widths, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{stage}_conv1")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.BatchNormalization(scale=False)(x)
        x = layers.Activation("relu")(x)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{stage}_conv2")(x)
        x = layers.BatchNormalization(scale=False)(x)
        x = layers.Activation("relu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    # The pooled features are maxima of unit-variance maps, several units large; scaled down, the
    # first logits stay near zero and the classifier's early updates stay small beside them.
    x = layers.Rescaling(FEATURE_SCALE, name="scale_features")(x)
    return softmax_classifier(inputs, x, num_classes, name, use_bias=False)


def whiten_stem(model, images: np.ndarray) -> None:
    """Sets the stem to whitening filters of the images' 2x2 patches and freezes it.

    The second-moment matrix of every 2x2xC patch is eigen-decomposed; each eigenvector divided by
    the square root of its eigenvalue is one filter and its negative another, so the ReLU after
    the stem passes both signs. The network then receives decorrelated inputs of equal variance
    from its first step, which saves a good part of the first epochs of a short run; the stem stays
    fixed, since training could only undo that.

    Args:
        model: a FastNet (its first convolution is named "stem").
        images: [N, H, W, C] float images as the model receives them.
    """
    stem = model.get_layer("stem")
    size, _, channels, filters = stem.kernel.shape
    patch_values = size * size * channels
    moments = np.zeros((patch_values, patch_values))
    patch_count = 0
    chunk_images = max(1, WHITENING_CHUNK_PATCHES // (images.shape[1] * images.shape[2]))
    for start in range(0, len(images), chunk_images):
        chunk = np.asarray(images[start:start + chunk_images], dtype=np.float64)
        # [N, H', W', C, size, size] -> one row per patch in the kernel's (row, column, channel) order
        windows = np.lib.stride_tricks.sliding_window_view(chunk, (size, size), axis=(1, 2))
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, patch_values)
        moments += patches.T @ patches
        patch_count += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(moments / patch_count)
    epsilon = WHITENING_EPSILON * eigenvalues.mean()
    whitening = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + epsilon)  # one filter per column
    kernel = np.concatenate([whitening, -whitening], axis=1).reshape(size, size, channels, filters)
    stem.kernel.assign(kernel.astype(np.float32))
    stem.trainable = False


# The unpadded 2x2 stem takes one pixel and each of the three 2x2 pools needs a 2x2 map:
# 9 -> 8 -> 4 -> 2 -> 1; at 8 the last pool receives a 1x1 map.
@register_model(min_input_size=9, params=1_162_168, fit_to_images=whiten_stem,
                description="FastNet8: 2x2 stem, three conv-pool-conv stages (64/128/256) with BN, "
                            "global max pool; sized for minutes-long CPU runs")
def fastnet8(input_shape, num_classes, name):
    """Eight weight layers: the stem, three stages of two convolutions, the classifier."""
    return FastNet(input_shape, num_classes, widths=(64, 128, 256), name=name)


@register_model(min_input_size=9, params=295_544, fit_to_images=whiten_stem,
                description="FastNet8 at half width (32/64/128): a quarter of fastnet8's compute")
def fastnet8_small(input_shape, num_classes, name):
    """fastnet8 with half the filters in every stage."""
    return FastNet(input_shape, num_classes, widths=(32, 64, 128), name=name)
