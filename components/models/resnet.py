"""ResNet family: one general builder (`ResNet`) and the residual units of the seed documents.

Builders (the registered model names in parentheses):
- `resnet_v1`: the CIFAR-10 ResNets of seed 004 (He et al. 2015), depth 6n+2, three stages of
  basic blocks with 16/32/64 filters and a 1x1 projection where the shape changes
  (resnet20_v1 ... resnet1202_v1).
- `resnet_v2`: the pre-activation bottleneck ResNets of seed 004 (He et al. 2016), depth 9n+2
  (resnet56_v2 ... resnet1001_v2).
- `resnet18`: seed 001's ResNet18, four stages of two basic blocks with 64..512 filters.
- `resnet_blocks10`: seed 000's stem, ten 64-filter residual blocks and a dense head.

Seed 004 pools with AveragePooling2D(pool_size=8), which only fits 32x32 inputs; global average
pooling gives the same result there and works for any input size.
"""

import functools

from components.errors import UserError
from components.models.common import keras, layers, min_size_for_downsamplings, softmax_classifier
from components.models.table import register_model

# Weight decay of seed 004's convolutions (L2 factor on the kernel, per weight).
SEED_004_WEIGHT_DECAY = 1e-4


def he_l2_conv(filters, kernel_size=3, strides=1):
    """Seed 004's convolution: 'same' padding, he_normal kernels, L2 weight decay, with bias."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(SEED_004_WEIGHT_DECAY),
    )


def no_bias_conv(filters, kernel_size=3, strides=1):
    """Seed 001's convolution: 'same' padding and no bias, since batch norm follows."""
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False)


def plain_conv(filters, kernel_size=3, strides=1):
    """Seed 000's convolution: Keras defaults with 'same' padding."""
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same")


def conv_bn_relu_stem(x, filters, conv=he_l2_conv):
    """One 3x3 convolution, batch norm and ReLU before the first stage."""
    x = conv(filters, 3, 1)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def valid_conv_pool_stem(x):
    """Seed 000's stem: two unpadded 3x3 convolutions (32, 64 filters) and a 3x3 max pool."""
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    return layers.MaxPooling2D(3)(x)


def basic_block(x, filters, strides=1, conv=he_l2_conv, shortcut_batch_norm=False):
    """Post-activation residual unit: conv-BN-ReLU, conv-BN, add the shortcut, ReLU.

    The shortcut is the identity unless the block changes resolution or width; then it is a
    1x1 convolution (followed by batch norm in seed 001, bare in seed 004).
    """
    residual = conv(filters, 3, strides)(x)
    residual = layers.BatchNormalization()(residual)
    residual = layers.Activation("relu")(residual)
    residual = conv(filters, 3, 1)(residual)
    residual = layers.BatchNormalization()(residual)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, 1, strides)(x)
        if shortcut_batch_norm:
            shortcut = layers.BatchNormalization()(shortcut)
    x = layers.Add()([shortcut, residual])
    return layers.Activation("relu")(x)


def activation_first_block(x, filters):
    """Seed 000's residual unit: conv-ReLU-BN, conv-BN, add the identity, ReLU."""
    residual = plain_conv(filters)(x)
    residual = layers.Activation("relu")(residual)
    residual = layers.BatchNormalization()(residual)
    residual = plain_conv(filters)(residual)
    residual = layers.BatchNormalization()(residual)
    x = layers.Add()([x, residual])
    return layers.Activation("relu")(x)


def bn_relu_conv(x, filters, kernel_size=3, strides=1, preactivate=True):
    """Pre-activation layer of seed 004 v2: batch norm and ReLU (optional), then the convolution."""
    if preactivate:
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    return he_l2_conv(filters, kernel_size, strides)(x)


def preact_bottleneck_block(x, filters, filters_out, strides=1, first_in_network=False):
    """Pre-activation bottleneck unit of seed 004 v2: (1x1, 3x3, 1x1) BN-ReLU-conv, plus shortcut.

    The network's first unit skips its first BN-ReLU because the stem has just applied one.
    A 1x1 projection shortcut is used where the width or resolution changes.
    """
    residual = bn_relu_conv(x, filters, 1, strides, preactivate=not first_in_network)
    residual = bn_relu_conv(residual, filters, 3)
    residual = bn_relu_conv(residual, filters_out, 1)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters_out:
        shortcut = he_l2_conv(filters_out, 1, strides)(x)
    return layers.Add()([shortcut, residual])


def basic_stack(x, filters_per_stage, blocks_per_stage, conv=he_l2_conv, shortcut_batch_norm=False):
    """Stages of basic blocks; every stage after the first halves the resolution in its first block."""
    for stage, (filters, blocks) in enumerate(zip(filters_per_stage, blocks_per_stage)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, filters, strides, conv, shortcut_batch_norm)
    return x


def bottleneck_stack(x, blocks_per_stage, bottleneck_filters=(16, 64, 128)):
    """Seed 004 v2 stages: bottleneck width w per stage, output width 4w in stage 0 and 2w after."""
    for stage, filters in enumerate(bottleneck_filters):
        filters_out = filters * 4 if stage == 0 else filters * 2
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            first_in_network = stage == 0 and block == 0
            x = preact_bottleneck_block(x, filters, filters_out, strides, first_in_network)
    return x


def activation_first_stack(x, blocks=10, filters=64):
    """Seed 000's body: `blocks` identity residual units, then an unpadded 3x3 convolution."""
    for _ in range(blocks):
        x = activation_first_block(x, filters)
    return layers.Conv2D(filters, 3, activation="relu")(x)


def ResNet(
    input_shape,
    num_classes,
    stem_fn,
    stack_fn,
    preact=False,
    hidden_units=0,
    dropout_rate=0.0,
    classifier_initializer="glorot_uniform",
    classifier_regularizer=None,
    name="resnet",
):
    """General ResNet: stem, residual stack, global average pooling, optional hidden layer, softmax.

    Args:
        input_shape: (height, width, channels) of the float32 input.
        num_classes: width of the softmax output.
        stem_fn: tensor -> tensor, the layers before the first residual stage.
        stack_fn: tensor -> tensor, the residual stages.
        preact: True for pre-activation stacks, whose last unit ends on an addition, so one
            more BN-ReLU is needed before pooling.
        hidden_units: width of a ReLU dense layer after pooling (0 = none).
        dropout_rate: dropout after that hidden layer.
        classifier_initializer, classifier_regularizer: for the output dense layer.
        name: the model's name.
    """
    inputs = keras.Input(shape=input_shape)
    x = stem_fn(inputs)
    x = stack_fn(x)
    if preact:
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    if hidden_units:
        x = layers.Dense(hidden_units, activation="relu")(x)
        x = layers.Dropout(dropout_rate)(x)
    return softmax_classifier(
        inputs,
        x,
        num_classes,
        name,
        kernel_initializer=classifier_initializer,
        kernel_regularizer=classifier_regularizer,
    )


def resnet_v1(input_shape, num_classes, depth, name=None):
    """Seed 004 ResNet v1 of depth 6n+2 (20, 32, 44, 56, 110, 164, 1202)."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise UserError(f"ResNet v1 depth must be 6n+2 with n >= 1 (20, 32, 56, ...), got {depth}")
    blocks = (depth - 2) // 6
    return ResNet(
        input_shape,
        num_classes,
        stem_fn=functools.partial(conv_bn_relu_stem, filters=16),
        stack_fn=functools.partial(
            basic_stack, filters_per_stage=(16, 32, 64), blocks_per_stage=(blocks,) * 3
        ),
        classifier_initializer="he_normal",
        name=name or f"resnet{depth}_v1",
    )


def resnet_v2(input_shape, num_classes, depth, name=None):
    """Seed 004 pre-activation bottleneck ResNet v2 of depth 9n+2 (56, 110, 164, 1001).

    Seed 004's stages are wider than the paper's (bottlenecks of 16, 64, 128 filters with outputs
    64, 128, 256), so resnet164_v2 has 5.0M parameters where the paper's ResNet-164 has 1.7M.
    """
    if depth < 11 or (depth - 2) % 9 != 0:
        raise UserError(f"ResNet v2 depth must be 9n+2 with n >= 1 (56, 110, 164, ...), got {depth}")
    blocks = (depth - 2) // 9
    return ResNet(
        input_shape,
        num_classes,
        stem_fn=functools.partial(conv_bn_relu_stem, filters=16),
        stack_fn=functools.partial(bottleneck_stack, blocks_per_stage=blocks),
        preact=True,
        classifier_initializer="he_normal",
        name=name or f"resnet{depth}_v2",
    )


# Stages 2 to 4 each halve the resolution once, with 'same' padding.
@register_model(min_input_size=min_size_for_downsamplings(3), params=11_183_562,
                description="ResNet18 (seed 001): [2, 2, 2, 2] basic blocks of 64-512 filters")
def resnet18(input_shape, num_classes, name):
    """Seed 001's ResNet18: bias-free convolutions, [2, 2, 2, 2] basic blocks of 64..512 filters."""
    return ResNet(
        input_shape,
        num_classes,
        stem_fn=functools.partial(conv_bn_relu_stem, filters=64, conv=no_bias_conv),
        stack_fn=functools.partial(
            basic_stack,
            filters_per_stage=(64, 128, 256, 512),
            blocks_per_stage=(2, 2, 2, 2),
            conv=no_bias_conv,
            shortcut_batch_norm=True,
        ),
        # Seed 001 regularizes the classifier with Keras' default L2 factor (0.01).
        classifier_regularizer=keras.regularizers.L2(0.01),
        name=name,
    )


# Unpadded stem (two 3x3 convs, 3x3/3 pool) and a last unpadded 3x3 conv: 13 -> 9 -> 3 -> 1;
# at 12 the last conv gets a 2x2 map, smaller than its kernel.
@register_model(min_input_size=13, params=819_210, seed_document_accuracy=0.7845,
                description="Seed 000's ResNet: conv32-conv64-pool, 10 residual blocks of 64, conv64, "
                            "dense 256 + dropout 0.5")
def resnet_blocks10(input_shape, num_classes, name):
    """Seed 000's network: valid-conv stem, ten 64-filter residual units, dense 256 with dropout."""
    return ResNet(
        input_shape,
        num_classes,
        stem_fn=valid_conv_pool_stem,
        stack_fn=activation_first_stack,
        hidden_units=256,
        dropout_rate=0.5,
        name=name,
    )


# Seed 004's CIFAR-10 ResNets (v1 and v2) halve the resolution twice, with 'same' padding.
CIFAR_RESNET_MIN_INPUT_SIZE = min_size_for_downsamplings(2)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=274_442,
                reference_accuracy=0.9125, seed_document_accuracy=0.9216,
                description="ResNet20 v1 (seed 004, n=3): basic blocks of 16-32-64 filters, he_normal, L2 1e-4")
def resnet20_v1(input_shape, num_classes, name):
    return resnet_v1(input_shape, num_classes, depth=20, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=470_218,
                reference_accuracy=0.9249, seed_document_accuracy=0.9246,
                description="ResNet32 v1 (seed 004, n=5)")
def resnet32_v1(input_shape, num_classes, name):
    return resnet_v1(input_shape, num_classes, depth=32, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=665_994,
                reference_accuracy=0.9283, seed_document_accuracy=0.925,
                description="ResNet44 v1 (seed 004, n=7)")
def resnet44_v1(input_shape, num_classes, name):
    return resnet_v1(input_shape, num_classes, depth=44, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=861_770,
                reference_accuracy=0.9303, seed_document_accuracy=0.9271,
                description="ResNet56 v1 (seed 004, n=9)")
def resnet56_v1(input_shape, num_classes, name):
    return resnet_v1(input_shape, num_classes, depth=56, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=1_742_762,
                reference_accuracy=0.9339, seed_document_accuracy=0.9265,
                description="ResNet110 v1 (seed 004, n=18)")
def resnet110_v1(input_shape, num_classes, name):
    return resnet_v1(input_shape, num_classes, depth=110, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=2_623_754,
                reference_accuracy=0.9407,
                description="ResNet164 v1 (seed 004, n=27 basic blocks; the paper's ResNet-164 uses bottlenecks)")
def resnet164_v1(input_shape, num_classes, name):
    return resnet_v1(input_shape, num_classes, depth=164, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=19_558_378,
                reference_accuracy=0.9207,
                description="ResNet1202 v1 (seed 004, n=200): the paper's 19.4M-parameter, 7.93%-error network")
def resnet1202_v1(input_shape, num_classes, name):
    return resnet_v1(input_shape, num_classes, depth=1202, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=1_673_738,
                seed_document_accuracy=0.9301,
                description="ResNet56 v2 (seed 004, n=6): pre-activation bottlenecks, 64-128-256 outputs")
def resnet56_v2(input_shape, num_classes, name):
    return resnet_v2(input_shape, num_classes, depth=56, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=3_323_210,
                reference_accuracy=0.9363, seed_document_accuracy=0.9315,
                description="ResNet110 v2 (seed 004, n=12): pre-activation bottlenecks")
def resnet110_v2(input_shape, num_classes, name):
    return resnet_v2(input_shape, num_classes, depth=110, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=4_972_682,
                reference_accuracy=0.9454,
                description="ResNet164 v2 (seed 004, n=18): pre-activation bottlenecks")
def resnet164_v2(input_shape, num_classes, name):
    return resnet_v2(input_shape, num_classes, depth=164, name=name)


@register_model(min_input_size=CIFAR_RESNET_MIN_INPUT_SIZE, params=30_539_498,
                reference_accuracy=0.9508,
                description="ResNet1001 v2 (seed 004, n=111): pre-activation bottlenecks, paper error 4.92%")
def resnet1001_v2(input_shape, num_classes, name):
    return resnet_v2(input_shape, num_classes, depth=1001, name=name)
