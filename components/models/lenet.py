"""LeNet family: seed 001's LeNet5 (sigmoid activations, unpadded 5x5 convolutions, 2x2 max pools)."""

from components.models.common import keras, layers, softmax_classifier
from components.models.table import register_model


def LeNet(
    input_shape,
    num_classes,
    conv_filters=(6, 16),
    dense_units=(120, 84),
    activation="sigmoid",
    name="lenet",
):
    """General LeNet: (unpadded 5x5 conv, 2x2/2 max pool) per entry of conv_filters, then dense layers.

    Args:
        input_shape: (height, width, channels) of the float32 input.
        num_classes: width of the softmax output.
        conv_filters: filters of each convolution stage.
        dense_units: widths of the hidden dense layers.
        activation: hidden activation; LeNet5 uses the sigmoid of the original paper.
        name: the model's name.
    """
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for filters in conv_filters:
        x = layers.Conv2D(filters, 5, activation=activation)(x)
        x = layers.MaxPooling2D(2, strides=2)(x)
    x = layers.Flatten()(x)
    for units in dense_units:
        x = layers.Dense(units, activation=activation)(x)
    return softmax_classifier(inputs, x, num_classes, name)


# Two (unpadded 5x5 conv, 2x2/2 pool) stages: 16 -> 12 -> 6 -> 2 -> 1; at 15 the second pool gets 1 pixel.
@register_model(min_input_size=16, params=62_006,
                description="LeNet5 (seed 001): two sigmoid 5x5 convs with 2x2 pools, dense 120-84")
def lenet5(input_shape, num_classes, name):
    """Seed 001's LeNet5: conv 6 and conv 16 (5x5), dense 120 and 84, all sigmoid."""
    return LeNet(input_shape, num_classes, name=name)
