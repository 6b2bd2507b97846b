"""FastNet family: a compact VGG-style network with batch norm, sized to train in minutes on a CPU.

The shape follows the networks of the fast-CIFAR-10 training literature (Page's 2018 ResNet-9
work and its successors): a 2x2 unpadded stem convolution, then three stages that each convolve,
max-pool by two, and convolve again, every convolution followed by batch norm and ReLU, and a
global max pool before the classifier. Pooling right after a stage's first convolution keeps
most of the compute at the two smaller resolutions, which is where the accuracy per FLOP is.
"""

from components.models.common import keras, layers, softmax_classifier
from components.models.table import register_model

STEM_FILTERS = 24


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
    x = layers.Conv2D(STEM_FILTERS, 2, name="stem")(inputs)
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
    return softmax_classifier(inputs, x, num_classes, name, use_bias=False)


# The unpadded 2x2 stem takes one pixel and each of the three 2x2 pools needs a 2x2 map:
# 9 -> 8 -> 4 -> 2 -> 1; at 8 the last pool receives a 1x1 map.
@register_model(min_input_size=9, params=1_162_168,
                description="FastNet8: 2x2 stem, three conv-pool-conv stages (64/128/256) with BN, "
                            "global max pool; sized for minutes-long CPU runs")
def fastnet8(input_shape, num_classes, name):
    """Eight weight layers: the stem, three stages of two convolutions, the classifier."""
    return FastNet(input_shape, num_classes, widths=(64, 128, 256), name=name)


@register_model(min_input_size=9, params=295_544,
                description="FastNet8 at half width (32/64/128): a quarter of fastnet8's compute")
def fastnet8_small(input_shape, num_classes, name):
    """fastnet8 with half the filters in every stage."""
    return FastNet(input_shape, num_classes, widths=(32, 64, 128), name=name)
