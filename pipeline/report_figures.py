"""The run report's parts below its sections: HTML tables, the confusion matrix plot, the most
confused pairs, rows of images with Grad-CAM heat maps, and the eval split they are drawn from
(pipeline/report.py lays them out)."""
import html
from typing import Any, List, Sequence, Tuple

CONFUSED_PAIRS = 5


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = "") -> str:
    def cell(value):
        if isinstance(value, float):
            return f'<td class="num">{value:.4f}</td>'
        if isinstance(value, int):
            return f'<td class="num">{value}</td>'
        return f"<td>{html.escape('' if value is None else str(value))}</td>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def confusion_plot(matrix: List[List[int]], classes: List[str]):
    """Counts and row-normalized rates side by side, every class name readable (keep_apart)."""
    import matplotlib.pyplot as plt
    import numpy as np
    counts = np.array(matrix, dtype=float)
    normalized = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for axis, values, title, fmt in ((axes[0], counts, "counts", "{:.0f}"), (axes[1], normalized, "normalized by true class", "{:.2f}")):
        axis.imshow(values, cmap="Blues")
        axis.set_title(title)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_xticks(range(len(classes)), classes)
        axis.set_yticks(range(len(classes)), classes)
        if len(classes) <= 20:
            for (i, j), value in np.ndenumerate(values):
                axis.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7,
                          color="white" if value > values.max() / 2 else "black")
        keep_apart(fig, axis.get_xticklabels(), rotate=True)
        keep_apart(fig, axis.get_yticklabels(), rotate=False)
    fig.tight_layout()  # room for the longest names, between the two plots too
    return fig


def keep_apart(fig, labels, rotate: bool, smallest_font: float = 5) -> None:
    """Tick labels that would overlap their neighbours are turned upright (x axis), then set smaller,
    then thinned to every n-th, until none overlap: class names of any length and count stay legible."""
    renderer = fig.canvas.get_renderer()

    def overlapping(shown) -> bool:
        boxes = [label.get_window_extent(renderer) for label in shown]
        return any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))

    if not labels or not overlapping(labels):
        return
    if rotate:
        for label in labels:
            label.set_rotation(90)
    size = labels[0].get_fontsize()
    while overlapping(labels) and size > smallest_font:
        size -= 1
        for label in labels:
            label.set_fontsize(size)
    step = 1
    while overlapping(labels[::step]):
        step += 1
    for index, label in enumerate(labels):
        label.set_visible(index % step == 0)


def most_confused(matrix: List[List[int]], limit: int = CONFUSED_PAIRS) -> List[Tuple[int, int, int]]:
    """(true id, predicted id, count) of the largest off-diagonal cells."""
    cells = [(count, i, j) for i, row in enumerate(matrix) for j, count in enumerate(row) if i != j and count]
    return [(i, j, count) for count, i, j in sorted(cells, key=lambda c: (-c[0], c[1], c[2]))[:limit]]


class EvalSplit:
    """The trained model on the eval split, streamed: every image's label and predicted class (one
    pass, a batch at a time), then only the images the report shows are decoded again and explained
    (Grad-CAM). Memory does not grow with the split."""

    def __init__(self, saved_model_dir: str, examples_uri: str):
        import numpy as np
        import tensorflow as tf
        from components.lite_models import split_batches
        from models import lite
        self._examples_uri = examples_uri
        self._model = lite.load(saved_model_dir)
        self._spec = lite.image_spec(self._model)
        serve = self._model.signatures["serve_images"]
        labels, predicted = [], []
        for images, batch_labels in split_batches(examples_uri, "eval", self._spec):
            labels.append(batch_labels)
            predicted.append(serve(images=tf.constant(images))["class_id"].numpy())
        self.labels = np.concatenate(labels) if labels else np.zeros([0], np.int64)
        self.predicted = np.concatenate(predicted) if predicted else np.zeros([0], np.int64)

    @property
    def explainable(self) -> bool:
        """Models exported before the explain_images signature existed have predictions only."""
        return "explain_images" in self._model.signatures

    def images(self, indices: List[int]):
        """The eval images at these positions, [len(indices), H, W, C] 0..255, in that order."""
        import numpy as np
        from components.lite_models import split_batches
        wanted, found, start = set(indices), {}, 0
        for images, _ in split_batches(self._examples_uri, "eval", self._spec):
            for offset in wanted & set(range(start, start + len(images))):
                found[offset] = images[offset - start]
            start += len(images)
            if len(found) == len(wanted):
                break
        return np.stack([found[i] for i in indices])

    def heatmaps(self, images):
        import tensorflow as tf
        return self._model.signatures["explain_images"](images=tf.constant(images))["heatmap"].numpy()


def spread(indices: List[int], count: int) -> List[int]:
    """count of the indices, evenly spaced: the eval split is in class order, so the first few would be one class."""
    if len(indices) <= count:
        return indices
    return [indices[round(k * (len(indices) - 1) / (count - 1))] for k in range(count)]


def image_row(images, titles, heatmaps=None):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(images), figsize=(1.8 * len(images), 2.1), squeeze=False)
    for index, (axis, image, title) in enumerate(zip(axes[0], images, titles)):
        pixels = image[..., 0] if image.shape[-1] == 1 else image / 255.0
        axis.imshow(pixels, cmap="gray" if image.shape[-1] == 1 else None)
        if heatmaps is not None:
            axis.imshow(heatmaps[index], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axis.set_title(title, fontsize=8)
        axis.axis("off")
    return fig
