"""VGG family: stages of padded 3x3 convolutions, each closed by a 2x2 max pool, then dense layers.

Variants:
- `vgg13`: seed 002's CIFAR-10 VGG13 (no batch norm, dense 256 and 128).
- `vgg16`: seed 001's VGG16 with batch norm and dropout (dense 512 and 512).
- `vgg16_imagenet`: seed 003's configuration D (FC-4096, FC-4096) for 224x224 images.
"""

from components.models.common import keras, layers, min_size_for_downsamplings, softmax_classifier
from components.models.table import register_model

# (filters, convolutions) per stage.
VGG13_STAGES = ((64, 2), (128, 2), (256, 2), (512, 2), (512, 2))
VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def VGG(
    input_shape,
    num_classes,
    stages,
    dense_units,
    batch_norm=False,
    pool_dropout_rate=0.0,
    dense_dropout_rate=0.0,
    dense_bias_initializer="zeros",
    name="vgg",
):
    """General VGG: conv stages with 'same' 2x2 max pools, flatten, ReLU dense layers, softmax.

    Args:
        input_shape: (height, width, channels) of the float32 input.
        num_classes: width of the softmax output.
        stages: (filters, number of 3x3 convolutions) per stage.
        dense_units: widths of the hidden dense layers.
        batch_norm: conv-BN-ReLU instead of conv-ReLU.
        pool_dropout_rate: dropout after each max pool (0 = none).
        dense_dropout_rate: dropout after each hidden dense layer (0 = none).
        dense_bias_initializer: for the hidden dense layers (seed 003 starts them at 0.1).
        name: the model's name.
    """
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for filters, convolutions in stages:
        for _ in range(convolutions):
            x = layers.Conv2D(filters, 3, padding="same")(x)
            if batch_norm:
                x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        # 'same' padding rounds odd sizes up instead of dropping the last row and column.
        x = layers.MaxPooling2D(2, strides=2, padding="same")(x)
        if pool_dropout_rate:
            x = layers.Dropout(pool_dropout_rate)(x)
    x = layers.Flatten()(x)
    for units in dense_units:
        x = layers.Dense(units, activation="relu", bias_initializer=dense_bias_initializer)(x)
        if dense_dropout_rate:
            x = layers.Dropout(dense_dropout_rate)(x)
    return softmax_classifier(inputs, x, num_classes, name)


# Five 'same'-padded 2x2/2 max pools, one per stage.
VGG_MIN_INPUT_SIZE = min_size_for_downsamplings(5)


@register_model(min_input_size=VGG_MIN_INPUT_SIZE, params=9_570_506,
                description="VGG13 (seed 002): 10 convs without BN, dense 256-128")
def vgg13(input_shape, num_classes, name):
    """Seed 002's VGG13: ten convolutions (64..512) without batch norm, dense 256 and 128."""
    return VGG(input_shape, num_classes, VGG13_STAGES, dense_units=(256, 128), name=name)


@register_model(min_input_size=VGG_MIN_INPUT_SIZE, params=15_262_026, seed_document_accuracy=0.7891,
                description="VGG16 (seed 001): 13 convs with BN, dropout 0.2, dense 512-512; "
                            "seed 000's BN+dropout VGG16 reached 78.91% in 10 epochs")
def vgg16(input_shape, num_classes, name):
    """Seed 001's VGG16: thirteen conv-BN-ReLU layers, dropout 0.2 after pools and dense 512s."""
    return VGG(
        input_shape,
        num_classes,
        VGG16_STAGES,
        dense_units=(512, 512),
        batch_norm=True,
        pool_dropout_rate=0.2,
        dense_dropout_rate=0.2,
        name=name,
    )


@register_model(min_input_size=VGG_MIN_INPUT_SIZE, params=33_638_218,
                description="VGG16 configuration D (seed 003): 13 convs, FC-4096 x2 with dropout 0.5; "
                            "134M parameters at 224x224")
def vgg16_imagenet(input_shape, num_classes, name):
    """Seed 003's VGG16 (configuration D): thirteen conv-ReLU layers, FC-4096 twice with dropout 0.5.

    Seed 003 also applies ReLU to its last layer before the softmax; the logits here stay linear.
    """
    return VGG(
        input_shape,
        num_classes,
        VGG16_STAGES,
        dense_units=(4096, 4096),
        dense_dropout_rate=0.5,
        dense_bias_initializer=keras.initializers.Constant(0.1),
        name=name,
    )
