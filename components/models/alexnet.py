"""AlexNet family: seed 001's AlexNet8, a CIFAR-sized AlexNet with batch norm and 3x3 kernels."""

from components.models.common import keras, layers, softmax_classifier
from components.models.table import register_model


def AlexNet(input_shape, num_classes, dense_units=2048, dropout_rate=0.5, name="alexnet"):
    """General AlexNet: two unpadded conv-BN-ReLU-pool stages, three padded convs, two dense layers.

    Args:
        input_shape: (height, width, channels) of the float32 input.
        num_classes: width of the softmax output.
        dense_units: width of the two hidden dense layers (4096 in the ImageNet original).
        dropout_rate: dropout after each hidden dense layer.
        name: the model's name.
    """
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for filters in (96, 256):
        x = layers.Conv2D(filters, 3)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(3, strides=2)(x)
    for filters in (384, 384, 256):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = layers.Flatten()(x)
    for _ in range(2):
        x = layers.Dense(dense_units, activation="relu")(x)
        x = layers.Dropout(dropout_rate)(x)
    return softmax_classifier(inputs, x, num_classes, name)


# Two (unpadded 3x3 conv, 3x3/2 pool) stages and a last 3x3/2 pool: 21 -> 19 -> 9 -> 7 -> 3 -> 1;
# at 20 the last pool gets a 2x2 map, smaller than its window.
@register_model(min_input_size=21, params=9_639_178, seed_document_accuracy=0.70,
                description="AlexNet8 (seed 001): 5 convs with BN, dense 2048-2048 with dropout; "
                            "seed 000's AlexNet reached 70% in 10 epochs")
def alexnet8(input_shape, num_classes, name):
    """Seed 001's AlexNet8: five convolutions and three dense layers (2048, 2048, classes)."""
    return AlexNet(input_shape, num_classes, name=name)
