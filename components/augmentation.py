"""Training augmentation inside the compiled step: random whole-pixel shifts and horizontal flips.

The input pipeline hands the step uint8 batches and nothing else; the training model
(`training_model`) starts with `RandomShiftAndFlip`, written in `keras.ops` so the same code runs
under TensorFlow and JAX, with or without XLA, on whatever device runs the model. Doing it on the
accelerator keeps the host's work to copying bytes (an H200 trains ResNet20 at ~133k images/s,
far beyond what CPU-side augmentation keeps up with), and Keras' own RandomFlip and
RandomTranslation layers are no alternative: under JAX they switch XLA off for the whole model.

Randomness comes from a `keras.random.SeedGenerator` seeded by the recipe's seed: every image
gets its own shift and flip, a run is reproduced by its seed, and the generator's state is saved
in the training checkpoints, so a resumed run continues the same sequence of draws.

The model a training run saves for evaluation and serving is the inner inference model
(`inference_model`): it holds no augmentation and loads with plain Keras.
"""

from __future__ import annotations

from collections.abc import Sequence

from components.keras_setup import keras

ops = keras.ops


def shift_and_flip(images, row_offsets, column_offsets, flips):
    """Shifts each image by its own offsets (edge pixels fill the gap) and mirrors the flagged ones.

    The same as edge-padding each image, cropping the window that starts `offset` pixels from the
    unshifted position, then flipping; done as one gather of whole pixels (all channels at once)
    from the batch seen as a list of pixels, which on a CPU costs a quarter of a gather per
    channel value.

    Args:
        images: [batch, height, width, channels], any dtype (kept).
        row_offsets, column_offsets: int32 [batch]; output pixel (r, c) reads input pixel
            (r + row_offset, c + column_offset), clipped to the image.
        flips: bool [batch]; True mirrors the image left-right.
    """
    _, height, width, channels = images.shape
    # Positions count the batch's pixels: int32 holds them up to 2**31, i.e. batches of 2,048
    # images of a megapixel; larger images index with int64.
    index_dtype = "int32" if height * width <= 2**20 else "int64"
    rows = ops.clip(ops.arange(height, dtype="int32")[None, :] + row_offsets[:, None], 0, height - 1)
    columns = ops.clip(ops.arange(width, dtype="int32")[None, :] + column_offsets[:, None], 0, width - 1)
    columns = ops.where(flips[:, None], width - 1 - columns, columns)
    # Pixel (r, c) of image b reads pixel b * height * width + rows[b, r] * width + columns[b, c].
    first_pixels = ops.arange(ops.shape(images)[0], dtype=index_dtype)[:, None, None] * (height * width)
    positions = first_pixels + ops.cast(rows[:, :, None] * width + columns[:, None, :], index_dtype)
    pixels = ops.take(ops.reshape(images, (-1, channels)), ops.reshape(positions, (-1,)), axis=0)
    return ops.reshape(pixels, (-1, height, width, channels))


@keras.saving.register_keras_serializable(package="cnnpipe")
class RandomShiftAndFlip(keras.layers.Layer):
    """Shifts every image by up to `shift_pixels` whole pixels (edge fill) and, with `flip`, mirrors
    a random half of them; a different draw per image and per step. Only while training: at
    inference the images pass through unchanged.

    The seed documents' ImageDataGenerator(width/height_shift_range=0.1, fill_mode='nearest')
    shifted by fractional amounts with interpolation; whole-pixel shifts with the same edge fill
    need one gather instead.

    Args:
        shift_pixels: Largest shift in pixels as (rows, columns).
        flip: Whether to mirror a random half of the images left-right.
        seed: Seed of the draws (the recipe's seed).
    """

    def __init__(self, shift_pixels: Sequence[int] = (0, 0), flip: bool = False, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.shift_pixels = tuple(int(pixels) for pixels in shift_pixels)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="augmentation_seed")

    def call(self, images, training=False):
        if not training:
            return images
        batch = ops.shape(images)[0]
        row_shift, column_shift = self.shift_pixels
        row_offsets = keras.random.randint((batch,), -row_shift, row_shift + 1, dtype="int32", seed=self.seed_generator)
        column_offsets = keras.random.randint((batch,), -column_shift, column_shift + 1, dtype="int32", seed=self.seed_generator)
        if self.flip:
            flips = keras.random.uniform((batch,), seed=self.seed_generator) < 0.5
        else:
            flips = ops.zeros((batch,), dtype="bool")
        return shift_and_flip(images, row_offsets, column_offsets, flips)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "shift_pixels": list(self.shift_pixels), "flip": self.flip, "seed": self.seed}

    # Keras saves a layer's weights but not its seed generators' states (and this layer has no
    # weights); saving the state with the checkpoint lets a resumed run draw what the
    # uninterrupted run would have drawn.
    def save_own_variables(self, store):
        store["seed_state"] = self.seed_generator.state

    def load_own_variables(self, store):
        self.seed_generator.state.assign(store["seed_state"])


def shift_pixels_for(image_shape: Sequence[int], shift_fraction: float) -> tuple[int, int]:
    """Largest shift in (rows, columns) pixels: round(shift_fraction * size) per axis."""
    return round(shift_fraction * image_shape[0]), round(shift_fraction * image_shape[1])


def training_model(inference: keras.Model, shift_pixels: Sequence[int], flip: bool, seed: int) -> keras.Model:
    """The model `fit` trains: uint8 images in, augmented in the step (when there is anything to
    do), cast to float32, through `inference` (which shares its weights with this model)."""
    inputs = keras.Input(shape=inference.input_shape[1:], dtype="uint8", name="uint8_images")
    images = inputs
    if flip or any(shift_pixels):
        images = RandomShiftAndFlip(shift_pixels, flip, seed, name="augmentation")(images)
    outputs = inference(ops.cast(images, "float32"))
    return keras.Model(inputs, outputs, name=f"{inference.name}_training")


def inference_model(training: keras.Model) -> keras.Model:
    """The inference model inside a `training_model` (no augmentation; loads with plain Keras)."""
    return training.get_layer(training.name.removesuffix("_training"))
