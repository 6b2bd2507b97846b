"""Inception family: seed 001's Inception10, GoogLeNet-style four-branch blocks on a small stem."""

from components.models.common import keras, layers, min_size_for_downsamplings, softmax_classifier
from components.models.table import register_model


def conv_bn_relu(x, filters, kernel_size=3, strides=1):
    """Padded convolution, batch norm, ReLU: the unit every Inception branch is built from.

    Seed 001 calls its batch norm with training=False even while fitting; here batch norm follows
    the usual Keras training flag so its statistics are learned.
    """
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same")(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def inception_block(x, filters, strides=1):
    """Four branches (1x1; 1x1-3x3; 1x1-5x5; 3x3 max pool-1x1) concatenated: 4 * filters channels."""
    branch_1x1 = conv_bn_relu(x, filters, 1, strides)
    branch_3x3 = conv_bn_relu(conv_bn_relu(x, filters, 1, strides), filters, 3)
    branch_5x5 = conv_bn_relu(conv_bn_relu(x, filters, 1, strides), filters, 5)
    branch_pool = layers.MaxPooling2D(3, strides=1, padding="same")(x)
    branch_pool = conv_bn_relu(branch_pool, filters, 1, strides)
    return layers.Concatenate()([branch_1x1, branch_3x3, branch_5x5, branch_pool])


def Inception(input_shape, num_classes, num_blocks=2, initial_filters=16, name="inception"):
    """General small Inception network: stem, `num_blocks` pairs of Inception blocks, global pooling.

    Each pair halves the resolution in its first block; the branch width doubles after each pair.

    Args:
        input_shape: (height, width, channels) of the float32 input.
        num_classes: width of the softmax output.
        num_blocks: number of block pairs.
        initial_filters: width of the stem and of each branch in the first pair.
        name: the model's name.
    """
    inputs = keras.Input(shape=input_shape)
    x = conv_bn_relu(inputs, initial_filters)
    filters = initial_filters
    for _ in range(num_blocks):
        x = inception_block(x, filters, strides=2)
        x = inception_block(x, filters, strides=1)
        filters *= 2
    x = layers.GlobalAveragePooling2D()(x)
    return softmax_classifier(inputs, x, num_classes, name)


# Two block pairs, each halving the resolution once with 'same'-padded stride-2 branches.
@register_model(min_input_size=min_size_for_downsamplings(2), params=121_418,
                description="Inception10 (seed 001): stem + 4 four-branch blocks, 16 then 32 filters per branch")
def inception10(input_shape, num_classes, name):
    """Seed 001's Inception10(num_blocks=2): stem plus four blocks, 16 then 32 filters per branch."""
    return Inception(input_shape, num_classes, num_blocks=2, initial_filters=16, name=name)
