"""The training step on Keras' JAX backend: no TensorFlow imported, a killed run resumes to the
very model an uninterrupted run trains, and epochs, per-step learning rates and files are those
of the TensorFlow backend.

Each run is a process of its own, since a process has one Keras backend (components/backends.py).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from components.recipe import TrainConfig
from schedule_reference import learning_rate_at_step
from test_train import kill_after_first_checkpoint, read_history, read_result, write_dataset

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Shifts, flips and a cosine schedule with warmup: everything a resumed run has to continue.
CONFIG = {"epochs": 4, "batch_size": 8, "steps_per_execution": 2, "seed": 3, "schedule": "cosine",
          "warmup_epochs": 1, "horizontal_flip": True, "shift_fraction": 0.25}
TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from components.keras_setup import keras
    from components.recipe import TrainConfig
    from components.train import train

    class Slow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(float(sys.argv[5]))  # leaves time to kill the process between checkpoints

    dataset, output, checkpoints, fields = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    train(dataset, "lenet5", output, TrainConfig.from_dict(fields), checkpoint_dir=checkpoints,
          tensorboard_dir=checkpoints + "-tensorboard", callbacks=[Slow()])
    print("tensorflow imported:", "tensorflow" in sys.modules)
""")


def start_training(backend, dataset, root, name, pause_seconds=0.0):
    """The training process (`backend`) writing root/name and root/name-checkpoints."""
    command = [sys.executable, "-c", TRAIN_SCRIPT, dataset, str(root / name), str(root / f"{name}-checkpoints"),
               json.dumps(CONFIG), str(pause_seconds)]
    environment = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPOSITORY)
    return subprocess.Popen(command, cwd=REPOSITORY, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted JAX run, a JAX run killed after a checkpoint and then resumed, and a
    TensorFlow run of the same recipe: {name: output directory}."""
    root = tmp_path_factory.mktemp("backends")
    dataset = write_dataset(root / "dataset")
    uninterrupted = start_training("jax", dataset, root, "jax")
    tensorflow = start_training("tensorflow", dataset, root, "tensorflow")
    killed = start_training("jax", dataset, root, "resumed", pause_seconds=2.0)
    killed_at = kill_after_first_checkpoint(killed, str(root / "resumed-checkpoints"))
    assert 1 <= killed_at < CONFIG["epochs"]
    resumed = start_training("jax", dataset, root, "resumed")
    outputs = {"jax": finish(uninterrupted), "tensorflow": finish(tensorflow), "resumed": finish(resumed)}
    return {name: {"dir": root / name, "stdout": stdout, "killed_at": killed_at} for name, stdout in outputs.items()}


@pytest.mark.slow
def test_the_jax_step_imports_no_tensorflow(runs):
    assert "tensorflow imported: False" in runs["jax"]["stdout"]
    assert "tensorflow imported: False" in runs["resumed"]["stdout"]
    assert "tensorflow imported: True" in runs["tensorflow"]["stdout"]  # the check can fail


@pytest.mark.slow
def test_a_killed_jax_run_resumes_to_the_model_of_an_uninterrupted_run(runs):
    """Same batches, same augmentation draws, same optimizer state: the resumed run's epochs after
    the kill and its final model match the uninterrupted run's."""
    resumed, uninterrupted = runs["resumed"], runs["jax"]
    assert read_result(resumed["dir"])["resumed_from_epoch"] == resumed["killed_at"]
    for column in ("loss", "val_loss", "val_accuracy", "learning_rate"):
        np.testing.assert_allclose([float(row[column]) for row in read_history(resumed["dir"])],
                                   [float(row[column]) for row in read_history(uninterrupted["dir"])], rtol=1e-4, err_msg=column)
    from components.keras_setup import keras

    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 1)).astype(np.float32)
    predictions = [keras.models.load_model(run["dir"] / "model.keras").predict(images, verbose=0) for run in (resumed, uninterrupted)]
    np.testing.assert_allclose(*predictions, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_both_backends_run_the_same_epochs_rates_and_files(runs):
    jax_history, tensorflow_history = read_history(runs["jax"]["dir"]), read_history(runs["tensorflow"]["dir"])
    jax_result, tensorflow_result = read_result(runs["jax"]["dir"]), read_result(runs["tensorflow"]["dir"])
    steps_per_epoch = jax_result["steps_per_epoch"]
    assert steps_per_epoch == tensorflow_result["steps_per_epoch"] > 1
    expected_rates = [learning_rate_at_step(epoch * steps_per_epoch - 1, steps_per_epoch, TrainConfig.from_dict(CONFIG))
                      for epoch in range(1, CONFIG["epochs"] + 1)]
    for history in (jax_history, tensorflow_history):
        assert [int(row["steps"]) for row in history] == [steps_per_epoch] * CONFIG["epochs"]
        assert [float(row["learning_rate"]) for row in history] == pytest.approx(expected_rates, rel=1e-5)
    assert (jax_result["backend"], tensorflow_result["backend"]) == ("jax", "tensorflow")
    assert set(jax_result) == set(tensorflow_result)
    assert sorted(os.listdir(runs["jax"]["dir"])) == sorted(os.listdir(runs["tensorflow"]["dir"]))
    for run in ("jax", "tensorflow"):
        tensorboard = f"{runs[run]['dir']}-checkpoints-tensorboard"
        assert sorted(os.listdir(tensorboard)) == ["train", "validation"]
        assert all(name.startswith("events.out.tfevents.") for name in os.listdir(os.path.join(tensorboard, "train")))


EXPORT_SCRIPT = textwrap.dedent("""
    import sys
    if sys.argv[3] == "without-tensorflow":
        sys.modules["tensorflow"] = None  # an import of it fails, as on a machine with JAX alone
    from components.errors import UserError
    from components.publish import export_saved_model
    try:
        export_saved_model(sys.argv[1], sys.argv[2])
    except UserError as error:
        print("refused:", error)
""")


def export_under_jax(model_path, export_dir, tensorflow="with-tensorflow"):
    environment = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=REPOSITORY)
    done = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(model_path), str(export_dir), tensorflow],
                          cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_a_jax_model_is_published_as_a_saved_model_that_serves_its_predictions(runs, tmp_path):
    import tensorflow as tf

    from components.keras_setup import keras

    model_path = runs["jax"]["dir"] / "model.keras"
    export_under_jax(model_path, tmp_path / "saved_model")
    images = np.random.default_rng(1).integers(0, 256, size=(5, 8, 8, 1)).astype(np.float32)
    saved_model = tf.saved_model.load(str(tmp_path / "saved_model"))  # held: its variables live with it
    served = saved_model.serve(tf.constant(images)).numpy()
    np.testing.assert_allclose(served, keras.models.load_model(model_path).predict(images, verbose=0), rtol=1e-4, atol=1e-6)


def test_publishing_without_tensorflow_is_refused_in_one_line(tmp_path):
    output = export_under_jax(tmp_path / "model.keras", tmp_path / "saved_model", tensorflow="without-tensorflow")
    assert output.strip() == ("refused: publishing writes a TensorFlow SavedModel and TensorFlow is not installed here; "
                              "install tensorflow (the project image has it) or leave out --registry")
    assert not (tmp_path / "saved_model").exists()


def test_several_workers_are_refused_under_jax_in_one_line(tmp_path):
    dataset = write_dataset(tmp_path / "dataset")
    script = textwrap.dedent(f"""
        from components.errors import UserError
        from components.recipe import TrainConfig
        from components.train import train
        try:
            train({dataset!r}, "lenet5", {str(tmp_path / 'out')!r}, TrainConfig(epochs=1, batch_size=8))
        except UserError as error:
            print("refused:", error)
    """)
    tf_config = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}})
    environment = dict(os.environ, KERAS_BACKEND="jax", TF_CONFIG=tf_config, PYTHONPATH=REPOSITORY)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300)
    assert "refused: --workers 2 needs --backend tensorflow: the jax backend trains in one process" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
def test_a_killed_jax_pipeline_run_resumes_and_reports_its_backend(tmp_path):
    """`cnnpipe run --backend jax` end to end through the KFP local runner: killed (the whole
    process group, as a lost machine) once the first epoch is checkpointed, the same command
    resumes from that epoch, and the records name the backend."""
    output = tmp_path / "run"
    command = [sys.executable, "-m", "pipeline.cli", "run", "--backend", "jax", "--models", "lenet5", "--output", str(output)]
    run = subprocess.Popen([*command, "--epochs", "400"], cwd=REPOSITORY, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    state = output / "checkpoints" / "local" / "lenet5" / "state.json"
    try:
        deadline = time.monotonic() + 600
        while not state.exists():
            assert run.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    killed_at = json.loads(state.read_text())["epoch"]
    again = subprocess.run([*command, "--epochs", str(killed_at + 1)], cwd=REPOSITORY, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    result = json.loads(next((output / "pipeline").rglob("train_result.json")).read_text())
    assert result["resumed_from_epoch"] == killed_at and result["epochs"] == killed_at + 1 and result["backend"] == "jax"
    summary = json.loads((output / "summary.json").read_text())
    assert [model["backend"] for model in summary["models"]] == ["jax"]
    assert json.loads((output / "config.json").read_text())["backend"] == "jax"


FEEDER_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from components import fit
    from components.input_pipeline import ArrayBatches, split_arrays
    from components.dataset import open_dataset
    from components.recipe import TrainConfig
    from components.train import train

    served = []

    class RecordedBatches(ArrayBatches):
        def __getitem__(self, index):
            batch = super().__getitem__(index)
            served.append(batch[0])
            return batch

    fit.ArrayBatches = RecordedBatches
    dataset, output, fields = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    config = TrainConfig.from_dict(fields)
    train(dataset, "lenet5", output, config, checkpoint_dir=output + "-checkpoints")
    images, _ = split_arrays(open_dataset(dataset), "train")
    passes = np.concatenate([np.random.default_rng([config.seed, number]).permutation(len(images)) for number in range(4)])
    print(json.dumps({"served": [batch.tolist() for batch in served], "stream": images[passes].tolist()}))
""")


def test_jax_fit_trains_on_the_batch_stream_from_its_first_position(tmp_path):
    """Optimizer step k of a JAX run takes stream positions k*batch .. (k+1)*batch - 1 (the order
    that a resumed run continues): Keras reads one batch and ends an epoch of the PyDataset before
    training to build the metrics, which must not move the stream one epoch ahead."""
    dataset = write_dataset(tmp_path / "dataset")
    fields = dict(CONFIG, epochs=2)
    command = [sys.executable, "-c", FEEDER_SCRIPT, dataset, str(tmp_path / "run"), json.dumps(fields)]
    environment = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=REPOSITORY)
    done = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    steps = read_result(tmp_path / "run")["optimizer_steps"]
    batch_size = CONFIG["batch_size"]
    trained = np.asarray(record["served"][-steps:])  # after the batch read to build the metrics
    stream = np.asarray(record["stream"])
    assert steps == 2 * read_result(tmp_path / "run")["steps_per_epoch"]
    np.testing.assert_array_equal(trained.reshape(stream[:steps * batch_size].shape), stream[:steps * batch_size])


STEP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from components.augmentation import training_model
    from components.dataset import open_dataset
    from components.input_pipeline import split_arrays, steps_per_epoch_for
    from components.keras_setup import backend, keras
    from components.model_assembly import assemble_model, compile_model, shorten_batch_norm_momentum
    from components.recipe import TrainConfig
    from components.schedules import make_learning_rate

    dataset, weights_file, config = sys.argv[1], sys.argv[2], TrainConfig.from_dict(json.loads(sys.argv[3]))
    reader = open_dataset(dataset)
    images, labels = split_arrays(reader, "train")
    test_images, test_labels = split_arrays(reader, "test")
    steps_per_epoch = steps_per_epoch_for(len(labels), config.batch_size)
    keras.utils.set_random_seed(config.seed)
    model = training_model(assemble_model("resnet20_v1", reader.image_shape, reader.num_classes, reader.pixel_mean()),
                           (0, 0), False, config.seed)
    shorten_batch_norm_momentum(model, steps_per_epoch)
    if os.path.exists(weights_file):  # the other backend's initial weights
        model.set_weights(list(np.load(weights_file).values()))
    else:
        np.savez(weights_file, *model.get_weights())
    compile_model(model, config, backend == "jax", 1, make_learning_rate(config, steps_per_epoch))
    one_hot = np.eye(reader.num_classes, dtype=np.float32)
    history = model.fit(images, one_hot[labels], batch_size=config.batch_size, epochs=config.epochs, shuffle=False,
                        validation_data=(test_images, one_hot[test_labels]), verbose=0)
    moving_variances = [variable for variable in model.non_trainable_variables if "moving_variance" in variable.path]
    print(json.dumps({**history.history, "moving_variance": keras.ops.convert_to_numpy(moving_variances[-1]).tolist(),
                      "learning_rate": float(model.optimizer.learning_rate)}))
""")


@pytest.mark.slow
def test_the_training_step_is_the_same_on_both_backends(tmp_path):
    """From the same initial weights on the same batches (no augmentation: its draws are the
    backend's own), TensorFlow's and JAX's steps give the same losses, accuracies, batch-norm
    statistics and learning rate: loss, label smoothing, AdamW with weight decay on kernels alone,
    the warmup-and-cosine schedule and the shortened batch-norm momentum are the same code on both."""
    dataset = write_dataset(tmp_path / "dataset")
    fields = {"epochs": 2, "batch_size": 8, "seed": 1, "schedule": "cosine", "warmup_epochs": 1, "label_smoothing": 0.1,
              "weight_decay": 0.05, "weight_decay_on_norm_and_bias": False, "augment": False}
    weights_file = str(tmp_path / "initial_weights.npz")
    results = {}
    for backend in ("tensorflow", "jax"):  # TensorFlow writes the initial weights, JAX reads them
        environment = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPOSITORY)
        done = subprocess.run([sys.executable, "-c", STEP_SCRIPT, dataset, weights_file, json.dumps(fields)], cwd=REPOSITORY,
                              env=environment, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["tensorflow"]["loss"][0] != results["tensorflow"]["loss"][1]  # it trained
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "moving_variance", "learning_rate"):
        np.testing.assert_allclose(results["jax"][key], results["tensorflow"][key], rtol=2e-3, atol=1e-5, err_msg=key)
