"""Augmentation inside the compiled step: per-image shifts and flips in keras.ops, reproducible
from the seed, resumed from a checkpoint, compiled with XLA under TensorFlow and JAX."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from components.augmentation import RandomShiftAndFlip, inference_model, shift_and_flip, shift_pixels_for, training_model
from components.keras_setup import keras

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def edge_pad_crop(image, row_offset, column_offset, pad):
    """Reference: numpy edge-pad by `pad`, crop the window shifted by the offsets."""
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    height, width = image.shape[:2]
    return padded[pad + row_offset : pad + row_offset + height, pad + column_offset : pad + column_offset + width]


def shifts_and_flips_found(images, augmented, pad):
    """For each image, the first (row, column, flip) whose reference matches the augmented image."""
    found = []
    for image, result in zip(images, augmented):
        matches = [
            (row, column, flip)
            for row in range(-pad, pad + 1)
            for column in range(-pad, pad + 1)
            for flip in (False, True)
            if np.array_equal(result, (lambda crop: crop[:, ::-1] if flip else crop)(edge_pad_crop(image, row, column, pad)))
        ]
        assert matches, "every augmented image is some shift (and maybe flip) of its source"
        found.append(matches[0])
    return found


def tiny_classifier(image_shape=(6, 6, 3), num_classes=3):
    inputs = keras.Input(image_shape, dtype="float32", name="images")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs)))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(features), name="tiny")


def random_images(count=64, shape=(6, 6, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def test_shift_and_flip_matches_edge_padded_crops_for_known_offsets():
    images = np.arange(3 * 5 * 6 * 2, dtype=np.uint8).reshape(3, 5, 6, 2)
    shifted = keras.ops.convert_to_numpy(shift_and_flip(
        keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor([1, -2, 0], "int32"),
        keras.ops.convert_to_tensor([-1, 2, 0], "int32"), keras.ops.convert_to_tensor([False, False, True]),
    ))
    assert shifted.dtype == np.uint8
    np.testing.assert_array_equal(shifted[0], edge_pad_crop(images[0], 1, -1, pad=2))
    np.testing.assert_array_equal(shifted[1], edge_pad_crop(images[1], -2, 2, pad=2))
    np.testing.assert_array_equal(shifted[2], images[2][:, ::-1])


def test_each_image_gets_its_own_shift_and_flip_within_range_while_training_only():
    images = random_images()
    layer = RandomShiftAndFlip((1, 1), flip=True, seed=3)
    augmented = keras.ops.convert_to_numpy(layer(images, training=True))
    assert augmented.shape == images.shape and augmented.dtype == np.uint8
    found = shifts_and_flips_found(images, augmented, pad=1)
    assert len({match[:2] for match in found}) > 4 and {match[2] for match in found} == {False, True}
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)


def test_draws_follow_the_seed_and_change_every_step():
    images = random_images(16, (8, 8, 1))

    def two_steps(seed):
        layer = RandomShiftAndFlip((2, 1), flip=True, seed=seed)
        return [keras.ops.convert_to_numpy(layer(images, training=True)) for _ in range(2)]

    first, second = two_steps(5)
    np.testing.assert_array_equal(first, two_steps(5)[0])
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, two_steps(6)[0])


def test_shift_pixels_round_the_fraction_of_each_side():
    assert shift_pixels_for((32, 32, 3), 0.1) == (3, 3)
    assert shift_pixels_for((8, 28, 1), 0.1) == (1, 3)


def test_a_checkpointed_training_model_resumes_the_sequence_of_draws(tmp_path):
    """The seed generator's state travels in the .keras file, so the draw after a reload is the
    draw the uninterrupted model makes; the inference model inside holds no augmentation."""
    images = random_images()
    model = training_model(tiny_classifier(), (1, 1), flip=True, seed=9)
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
    model.fit(images, np.eye(3)[np.arange(64) % 3], batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "checkpoint.keras")
    restored = keras.models.load_model(tmp_path / "checkpoint.keras")
    next_draw = keras.ops.convert_to_numpy(model.get_layer("augmentation")(images, training=True))
    restored_draw = keras.ops.convert_to_numpy(restored.get_layer("augmentation")(images, training=True))
    np.testing.assert_array_equal(restored_draw, next_draw)
    inference = inference_model(restored)
    assert not any(isinstance(layer, RandomShiftAndFlip) for layer in inference.layers)
    assert inference.input.dtype == "float32"


def test_the_saved_inference_model_loads_with_plain_keras_in_a_fresh_process(tmp_path):
    model = training_model(tiny_classifier(), (1, 1), flip=True, seed=0)
    inference_model(model).save(tmp_path / "model.keras")
    script = f"import keras; print(keras.models.load_model({str(tmp_path / 'model.keras')!r}).name)"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert loaded.stdout.strip() == "tiny"


def test_training_model_without_shift_or_flip_only_casts():
    model = training_model(tiny_classifier(), (0, 0), flip=False, seed=0)
    assert model.input.dtype == "uint8"
    assert not any(isinstance(layer, RandomShiftAndFlip) for layer in model.layers)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_step_compiles_with_xla_and_draws_the_same_images_each_run(backend):
    """A jit-compiled fit on each backend, twice from the same seed: same augmented draws (the
    seed generator's state advanced three draws per step) and same weights."""
    script = textwrap.dedent("""
        import numpy as np
        from components.keras_setup import keras
        from components.augmentation import training_model
        from tests.test_augmentation import random_images, tiny_classifier

        def run():
            keras.utils.set_random_seed(1)
            model = training_model(tiny_classifier(), (1, 1), flip=True, seed=4)
            model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True, steps_per_execution=2)
            model.fit(random_images(), np.eye(3)[np.arange(64) % 3], batch_size=16, epochs=1, verbose=0, shuffle=False)
            state = keras.ops.convert_to_numpy(model.get_layer("augmentation").seed_generator.state)
            return state, model.get_weights()

        (state, weights), (again, weights_again) = run(), run()
        assert state.tolist() == [4, 12], state
        for first, second in zip(weights, weights_again):
            np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
        print(keras.backend.backend(), "ok")
    """)
    environment = dict(os.environ, KERAS_BACKEND=backend)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPOSITORY, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == [backend, "ok"]
