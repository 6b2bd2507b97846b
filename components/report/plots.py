"""The report's plots as PNG bytes. Figures are built with matplotlib.figure.Figure and rendered by
the Agg canvas directly, so no pyplot global state or backend switch leaks into whoever imports
this module, and each figure is freed as soon as its PNG bytes are taken."""

from __future__ import annotations

import io

from components.report.summary import ModelResult

# Beyond this many classes, per-cell counts in the confusion matrix become unreadable.
MAX_ANNOTATED_CLASSES = 20


# Beyond this many classes, tick labels overlap even at the smallest font.
MAX_LABELLED_CLASSES = 60


def new_figure(width: float, height: float):
    """A figure (inches) attached to the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure) -> bytes:
    """Render a figure to PNG bytes (100 dpi keeps the embedded page small)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    figure.clear()
    return buffer.getvalue()


def plot_training_curves(model: ModelResult) -> bytes:
    """Train/validation accuracy and loss, and the learning rate, over epochs for one model."""
    figure = new_figure(12, 3.4)
    accuracy_axes, loss_axes, rate_axes = figure.subplots(1, 3)
    history = model.history
    epochs = history.get("epoch") or list(range(1, 1 + max((len(values) for values in history.values()), default=0)))
    panels = ((accuracy_axes, "accuracy", "Accuracy (%)", 100), (loss_axes, "loss", "Loss", 1))
    for axes, metric, label, scale in panels:
        for column, line_label, style in ((metric, "train", "-o"), (f"val_{metric}", "validation", "--s")):
            values = history.get(column)
            if values:
                scaled = [value * scale for value in values]
                axes.plot(epochs[: len(values)], scaled, style, markersize=3, label=line_label)
        axes.set_title(label)
        finish_epoch_axes(axes, legend=True)
    plot_learning_rate(rate_axes, epochs, history.get("learning_rate"))
    figure.suptitle(model.name, parse_math=False)
    return figure_png(figure)


def plot_learning_rate(axes, epochs: list, rates: list | None) -> None:
    """The learning rate at the end of each epoch; log scale when it spans a decade or more."""
    if rates:
        axes.plot(epochs[: len(rates)], rates, "-o", markersize=3, color="#8250df")
        positive = [rate for rate in rates if rate > 0]
        if positive and max(positive) / min(positive) >= 10:
            axes.set_yscale("log")
    axes.set_title("Learning rate (end of epoch)")
    finish_epoch_axes(axes, legend=False)


def finish_epoch_axes(axes, legend: bool) -> None:
    """Epoch x-axis with whole-number ticks, a grid, and a note when nothing was plotted."""
    from matplotlib.ticker import MaxNLocator

    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    if not axes.lines:
        axes.text(0.5, 0.5, "no history recorded", ha="center", va="center", transform=axes.transAxes)
    elif legend:
        axes.legend(fontsize="small")


def plot_validation_overview(results: list[ModelResult]) -> bytes:
    """Validation accuracy over epochs of every model in one plot, for a side-by-side view."""
    figure = new_figure(7, 3.8)
    axes = figure.subplots()
    for model in results:
        values = model.history.get("val_accuracy")
        if values:
            epochs = model.history.get("epoch") or list(range(1, len(values) + 1))
            axes.plot(epochs[: len(values)], [value * 100 for value in values], "-o", markersize=3, label=model.name)
    axes.set_ylabel("validation accuracy (%)")
    finish_epoch_axes(axes, legend=True)
    return figure_png(figure)


def plot_accuracy_against_time(entries: list[dict]) -> bytes:
    """Scatter of test accuracy (%) against training time (s), each point labelled with its model."""
    figure = new_figure(7, 4.2)
    axes = figure.subplots()
    seconds = [max(float(entry["train_seconds"] or 0.0), 1e-3) for entry in entries]
    accuracies = [float(entry["test_accuracy"] or 0.0) * 100 for entry in entries]
    axes.scatter(seconds, accuracies, s=36, color="#0969da", zorder=3)
    for entry, x, y in zip(entries, seconds, accuracies):
        axes.annotate(entry["name"], (x, y), xytext=(5, 4), textcoords="offset points", fontsize=9, parse_math=False)
    # Training times of the zoo span orders of magnitude (LeNet seconds, VGG minutes).
    if max(seconds) / min(seconds) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("training time (s)")
    axes.set_ylabel("test accuracy (%)")
    axes.grid(alpha=0.3)
    axes.margins(x=0.15, y=0.15)
    return figure_png(figure)


def plot_confusion_matrix(confusion: list[list[int]], class_names: list[str], model_name: str) -> bytes:
    """Heatmap of the confusion matrix, coloured by row share (recall) and annotated with counts."""
    import numpy

    counts = numpy.asarray(confusion, dtype=float)
    class_count = counts.shape[0]
    names = class_names if len(class_names) == class_count else [str(index) for index in range(class_count)]
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = numpy.divide(counts, row_totals, out=numpy.zeros_like(counts), where=row_totals > 0)
    size = min(max(4.0, 0.45 * class_count + 2.0), 14.0)
    figure = new_figure(size + 1.0, size)
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of true class")
    if class_count <= MAX_LABELLED_CLASSES:
        # Class names come from users' folder names: parse_math=False keeps a '$' from becoming TeX.
        short_names = [name if len(name) <= 18 else name[:17] + "…" for name in names]
        font_size = 9 if class_count <= MAX_ANNOTATED_CLASSES else 7
        axes.set_xticks(range(class_count), short_names, rotation=45, ha="right", fontsize=font_size, parse_math=False)
        axes.set_yticks(range(class_count), short_names, fontsize=font_size, parse_math=False)
    if class_count <= MAX_ANNOTATED_CLASSES:
        for row in range(class_count):
            for column in range(class_count):
                color = "white" if shares[row, column] > 0.6 else "black"
                axes.text(column, row, f"{int(counts[row, column])}", ha="center", va="center", fontsize=8, color=color)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"Confusion matrix: {model_name}", parse_math=False)
    return figure_png(figure)
