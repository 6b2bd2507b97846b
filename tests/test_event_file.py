"""TensorBoard event files written without TensorFlow, read back by TensorBoard's own reader."""

from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

from components.event_file import ScalarWriter


def test_scalars_read_back_as_tensorboard_scalars_and_a_second_writer_continues_the_curve(tmp_path):
    first = ScalarWriter(str(tmp_path / "train"))
    first.scalar("epoch_loss", 1.5, step=1)
    first.scalar("epoch_accuracy", 0.25, step=1)
    first.close()
    resumed = ScalarWriter(str(tmp_path / "train"))  # a resumed run writes a file of its own
    resumed.scalar("epoch_loss", 0.75, step=2)
    resumed.close()
    runs = EventMultiplexer()  # what the TensorBoard server reads event files with
    runs.AddRunsFromDirectory(str(tmp_path))
    runs.Reload()
    assert runs.PluginRunToTagToContent("scalars") == {"train": {"epoch_loss": b"", "epoch_accuracy": b""}}

    def curve(tag):
        return [(event.step, event.tensor_proto.float_val[0]) for event in runs.Tensors("train", tag)]

    assert curve("epoch_loss") == [(1, 1.5), (2, 0.75)]
    assert curve("epoch_accuracy") == [(1, 0.25)]
