"""The GPU-side settings run here on CPU devices: bfloat16 mixed precision, XLA, and
MirroredStrategy over two logical CPU devices standing in for two GPUs."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from components.keras_setup import keras
from components.recipe import TrainConfig
from components.train import train
from tests.test_train import write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # A validation split, so each path's validation accuracy is a figure to check (none is taken
    # from the test split).
    return write_dataset(tmp_path_factory.mktemp("device_paths") / "dataset", validation_count=8)


class RecordModelSettings(keras.callbacks.Callback):
    """Notes what the model trained with: its layers' compute dtypes and whether XLA compiled it."""

    def on_train_end(self, logs=None):
        self.compute_dtypes = {layer.dtype_policy.compute_dtype for layer in self.model.layers if layer.weights}
        self.output_dtype = self.model.outputs[0].dtype
        self.jit_compile = self.model.jit_compile


def test_mixed_bfloat16_trains_with_a_float32_softmax(dataset, tmp_path):
    settings = RecordModelSettings()
    config = TrainConfig(epochs=1, batch_size=8, seed=1, mixed_precision="mixed_bfloat16")
    result = train(dataset, "resnet20_v1", str(tmp_path / "output"), config, callbacks=[settings])
    assert "bfloat16" in settings.compute_dtypes and settings.output_dtype == "float32"
    assert np.isfinite(result.best_validation_accuracy)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the step


def test_xla_compiled_training(dataset, tmp_path):
    settings = RecordModelSettings()
    config = TrainConfig(epochs=1, batch_size=8, seed=1, jit_compile=True, steps_per_execution=2)
    result = train(dataset, "lenet5", str(tmp_path / "output"), config, callbacks=[settings])
    assert settings.jit_compile is True
    assert result.optimizer_steps == 3 and np.isfinite(result.best_validation_accuracy)


def test_mirrored_strategy_over_two_logical_devices(dataset, tmp_path):
    """Two CPU replicas, as two GPUs would be: the model, its compile settings, the input pipeline,
    the moving average of the weights validated in place of the weights, and a checkpoint under
    MirroredStrategy (a new process: devices are fixed at TensorFlow's start)."""
    script = textwrap.dedent(f"""
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

        from components import checkpoints, model_assembly as training
        from components.augmentation import training_model
        from components.callbacks import ValidateAveragedWeights
        from components.dataset import open_dataset
        from components.input_pipeline import make_train_dataset, make_eval_dataset
        from components.recipe import TrainConfig
        from components.schedules import make_learning_rate

        reader = open_dataset({dataset!r})
        config = TrainConfig(epochs=2, batch_size=8, seed=1, schedule="cosine", warmup_epochs=1, weight_average_momentum=0.5)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            # Shift and flip inside the step: its seed generator's state is a mirrored variable too.
            model = training_model(training.assemble_model("resnet20_v1", reader.image_shape, reader.num_classes,
                                                           reader.pixel_mean()), (1, 1), flip=True, seed=1)
            steps_per_execution = training.resolve_steps_per_execution("auto", model.count_params(), 3,
                                                                       strategy.num_replicas_in_sync)
            training.compile_model(model, config, jit_compile=False, steps_per_execution=steps_per_execution,
                                   learning_rate=make_learning_rate(config, 3))
        history = model.fit(make_train_dataset(reader, 8, 1).take(3), validation_data=make_eval_dataset(reader, "test", 8),
                            epochs=2, verbose=0, callbacks=[ValidateAveragedWeights()])
        checkpoints.save_model_atomically(model, {str(tmp_path / "mirrored.keras")!r})
        averaged = training.averaged_weights({str(tmp_path / "mirrored.keras")!r})
        print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "steps": int(model.optimizer.iterations.numpy()),
                          "loss": history.history["loss"], "val_loss": history.history["val_loss"],
                          "averaged": len(averaged) == len(model.get_weights())}}))
    """)
    environment = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    outcome = json.loads(finished.stdout.strip().splitlines()[-1])
    assert outcome["replicas"] == 2 and outcome["steps"] == 6
    assert all(np.isfinite(outcome["loss"])) and all(np.isfinite(outcome["val_loss"])) and outcome["averaged"]
    restored = keras.models.load_model(tmp_path / "mirrored.keras", compile=False)
    assert restored.output_shape == (None, 3)
