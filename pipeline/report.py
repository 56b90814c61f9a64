"""The run report: one self-contained HTML page per run (images embedded, so it can be attached to a
ticket), at <output-dir>/runs/<run>/report.html, with every plot also a PNG file beside it.

  python -m pipeline.report RUN_DIR      re-renders it from a finished run (RUN_DIR: runs/<run>/)

Sections: data, validation, training, evaluation (confusion matrix, per-class precision/recall/F1,
most-confused pairs, Grad-CAM), promotion, TFLite, timings. Everything comes from the run summary
(runs/<run>.json) and the artifacts it names.
"""
import argparse
import base64
import glob
import html
import io
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from models import files
from pipeline.report_figures import EvalSplit, confusion_plot, image_row, most_confused, spread, table
from pipeline.report_training import training_section

REPORT_FILENAME = "report.html"
THUMBNAILS_PER_CLASS = 8
EXAMPLES_PER_PAIR = 4
GRAD_CAM_IMAGES = 6  # correct ones and as many wrong ones
LISTED_FILES = 200   # rejected/ignored files listed in the page; the summary has them all


class Page:
    """Sections of HTML; figures saved as PNG files in the run folder and embedded as data URIs."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.sections: List[Tuple[str, str, str]] = []  # (id, title, body)
        self.images: List[str] = []

    def image(self, name: str, png: bytes, alt: str) -> str:
        with open(os.path.join(self.run_dir, f"{name}.png"), "wb") as f:
            f.write(png)
        self.images.append(f"{name}.png")
        data = base64.b64encode(png).decode()
        return f'<img class="plot" src="data:image/png;base64,{data}" alt="{html.escape(alt)}" title="{name}.png">'

    def figure(self, name: str, fig, alt: str) -> str:
        import matplotlib.pyplot as plt
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        return self.image(name, buffer.getvalue(), alt)

    def add(self, section_id: str, title: str, body: str) -> None:
        self.sections.append((section_id, title, body))

    def html(self, heading: str) -> str:
        nav = " · ".join(f'<a href="#{i}">{html.escape(t)}</a>' for i, t, _ in self.sections)
        body = "\n".join(f'<section id="{i}"><h2>{html.escape(t)}</h2>\n{b}\n</section>' for i, t, b in self.sections)
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(heading)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; }}
th {{ background: #f3f3f3; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ok {{ color: #176f2c; font-weight: bold; }} .bad {{ color: #b00020; font-weight: bold; }}
img.plot {{ max-width: 100%; display: block; margin: .5em 0; }} section {{ margin-bottom: 2em; }}
</style></head><body>
<h1>{html.escape(heading)}</h1>
<nav>{nav}</nav>
{body}
</body></html>
"""


def _file_list(entries: List[Dict[str, str]], what: str, detail: str = "reason") -> str:
    if not entries:
        return f"<p>No {what} files.</p>"
    listed = table(["file", detail], [(e["file"], e[detail]) for e in entries[:LISTED_FILES]])
    more = f"<p>… and {len(entries) - LISTED_FILES} more in the run summary.</p>" if len(entries) > LISTED_FILES else ""
    return f"<p>{len(entries)} {what} file(s):</p>{listed}{more}"


# --- data ----------------------------------------------------------------------------------------

def _identical_files(groups: List[Dict[str, Any]], leaks: int) -> str:
    """Files of the same bytes; a group across splits is an image both trained on and evaluated on."""
    rows = [(", ".join(group["files"]), ", ".join(group["splits"])) for group in groups[:LISTED_FILES]]
    more = f"<p>… and {len(groups) - LISTED_FILES} more in the run summary.</p>" if len(groups) > LISTED_FILES else ""
    leak_text = (f"<strong>{leaks} split leak(s)</strong>: the same image in more than one split, so the eval "
                 f"accuracy counts images the model was trained on." if leaks else "No split leak.")
    return (f"<h3>Identical files</h3><p>{len(groups)} group(s) of files with the same bytes. {leak_text}</p>"
            + table(["files", "splits"], rows, table_id="identical-files") + more)


def _examples(examples_uri: str, split: str):
    """(image bytes, label) of a split's examples, in file order."""
    import tensorflow as tf
    from components.lite_models import split_records
    from models import features
    for record in split_records(examples_uri, split).as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        yield (example.features.feature[features.IMAGE_KEY].bytes_list.value[0],
               example.features.feature[features.LABEL_KEY].int64_list.value[0])


def thumbnail_grid(examples_uri: str, classes: List[str], per_class: int = THUMBNAILS_PER_CLASS,
                   size: int = 48) -> Optional[bytes]:
    """A PNG: one row of thumbnails per class, from the training split."""
    from PIL import Image, ImageDraw, ImageOps
    rows: Dict[int, List] = {label: [] for label in range(len(classes))}
    for image_bytes, label in _examples(examples_uri, "train"):
        if label in rows and len(rows[label]) < per_class:
            rows[label].append(ImageOps.contain(Image.open(io.BytesIO(image_bytes)).convert("RGB"), (size, size)))
        if all(len(images) == per_class for images in rows.values()):
            break
    if not any(rows.values()):
        return None
    label_width = 90
    grid = Image.new("RGB", (label_width + per_class * (size + 4), len(classes) * (size + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for label, images in rows.items():
        y = label * (size + 4)
        draw.text((4, y + size // 2 - 6), classes[label][:14], fill="black")
        for i, image in enumerate(images):
            grid.paste(image, (label_width + i * (size + 4), y))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


def data_section(page: Page, summary: Dict[str, Any]) -> None:
    classes = summary.get("classes") or []
    per_class = summary.get("ingested_per_class") or {}
    splits = sorted(per_class, key=lambda split: (split != "train", split))
    counts = summary.get("file_counts") or {}
    body = [f"<p>Data root <code>{html.escape(summary.get('data_root', ''))}</code> "
            f"(layout: {html.escape(str(summary.get('layout', '?')))}). Files: {counts.get('seen', '?')} seen = "
            f"{counts.get('ingested', '?')} ingested + {counts.get('rejected', '?')} rejected + "
            f"{counts.get('ignored', '?')} ignored.</p>"]
    if classes:
        rows = [[name] + [per_class[split].get(name, 0) for split in splits] for name in classes]
        rows.append(["total"] + [sum(per_class[split].values()) for split in splits])
        body.append(table(["class"] + splits, rows, table_id="class-counts"))
    body.append("<h3>Rejected</h3>" + _file_list(summary.get("rejected_files") or [], "rejected"))
    body.append("<h3>Ignored</h3>" + _file_list(summary.get("ignored_files") or [], "ignored"))
    if summary.get("converted_files"):
        body.append("<h3>Converted</h3>" + _file_list(summary["converted_files"], "converted", detail="note"))
    if summary.get("identical_files"):
        body.append(_identical_files(summary["identical_files"], summary.get("split_leaks", 0)))
    examples_uri = summary.get("artifacts", {}).get("examples")
    if examples_uri and classes:
        grid = thumbnail_grid(examples_uri, classes)
        if grid:
            body.append("<h3>Training images, per class</h3>" + page.image("thumbnails", grid, "thumbnails per class"))
    page.add("data", "Data", "\n".join(body))


# --- validation ----------------------------------------------------------------------------------

def statistics_rows(statistics_uri: str) -> List[List[Any]]:
    """[split, feature, type, present, summary] per feature of TFDV's statistics."""
    import tensorflow_data_validation as tfdv
    rows = []
    from models.features import split_dir, split_of
    for path in sorted(glob.glob(os.path.join(split_dir(statistics_uri, "*"), "FeatureStats.pb"))):
        split = split_of(os.path.dirname(path))
        dataset = tfdv.load_stats_binary(path).datasets[0]
        for feature in dataset.features:
            kind = feature.WhichOneof("stats")
            stats = getattr(feature, kind)
            if kind == "num_stats":
                detail = f"min {stats.min:g}, mean {stats.mean:.3g}, max {stats.max:g}"
            elif kind == "string_stats":
                top = ", ".join(f"{v.value} ({int(v.frequency)})" for v in stats.top_values[:3])
                detail = f"{stats.unique} unique; top {top}"
            elif kind == "bytes_stats":  # TFDV leaves unique at 0 for image bytes
                detail = f"{stats.avg_num_bytes:.0f} bytes on average, {stats.max_num_bytes:.0f} at most"
            else:
                detail = ""
            common = stats.common_stats
            rows.append([split, feature.path.step[0] if feature.path.step else feature.name,
                         kind.replace("_stats", ""), int(common.num_non_missing), detail])
        rows.append([split, "(examples)", "", int(dataset.num_examples), ""])
    return rows


def validation_section(page: Page, summary: Dict[str, Any]) -> None:
    anomalies = summary.get("anomalies") or {}
    body = []
    if anomalies:
        body.append(table(["split", "anomaly"], [(split, line) for split, lines in anomalies.items() for line in lines]))
    else:
        body.append('<p class="ok">No anomalies against the schema.</p>')
    balance = summary.get("class_balance") or {}
    if balance.get("drift") is not None:
        body.append(f"<p>Class-balance drift since the last accepted run: {balance['drift']:.3f} "
                    f"(bound {balance.get('bound')}).</p>")
    if summary.get("error") and "data validation" in summary["error"]:
        body.append(f'<p class="bad">{html.escape(summary["error"])}</p>')
    statistics_uri = summary.get("artifacts", {}).get("statistics")
    if statistics_uri:
        body.append("<h3>TFDV statistics</h3>" + table(["split", "feature", "type", "present", "summary"],
                                                       statistics_rows(statistics_uri), table_id="statistics"))
    page.add("validation", "Validation", "\n".join(body))


# --- training ------------------------------------------------------------------------------------

def confusion_figure(page: Page, matrix: List[List[int]], classes: List[str]) -> str:
    return page.figure("confusion_matrix", confusion_plot(matrix, classes), "confusion matrix")


def evaluation_section(page: Page, summary: Dict[str, Any]) -> None:
    evaluation = summary.get("evaluation")
    classes = summary.get("classes") or []
    if not evaluation:
        page.add("evaluation", "Evaluation", "<p>The Evaluator did not run.</p>")
        return
    matrix = evaluation["confusion_matrix"]
    body = [f"<p>Eval accuracy <b>{evaluation['accuracy']:.4f}</b> on {evaluation.get('examples')} images"
            + (f"; champion {evaluation['champion_accuracy']:.4f}" if evaluation.get("champion_accuracy") is not None
               else "; no champion yet") + ".</p>",
            confusion_figure(page, matrix, classes),
            "<h3>Confusion matrix (counts; rows: true class, columns: predicted)</h3>",
            table([""] + classes, [[name] + row for name, row in zip(classes, matrix)], table_id="confusion-counts")]
    rows = []
    for name in classes:
        measured = evaluation["per_class"].get(name, {})
        precision, recall = measured.get("precision"), measured.get("recall")
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
        rows.append([name, measured.get("accuracy"), precision, recall, f1])
    body.append("<h3>Per class</h3>" + table(["class", "accuracy", "precision", "recall", "F1"], rows,
                                             table_id="per-class"))
    model_dir, examples_uri = summary.get("trained_model"), summary.get("artifacts", {}).get("examples")
    if model_dir and examples_uri:
        body += _examples_shown(page, EvalSplit(model_dir, examples_uri), matrix, classes)
    page.add("evaluation", "Evaluation", "\n".join(body))


def _examples_shown(page: Page, split: "EvalSplit", matrix: List[List[int]], classes: List[str]) -> List[str]:
    """The most confused pairs' images, and Grad-CAM of a few correct and wrong predictions."""
    labels, predicted = split.labels, split.predicted
    pairs = most_confused(matrix)
    body = ["<h3>Most confused pairs</h3>"] if pairs else []
    for true_id, predicted_id, count in pairs:
        chosen = [i for i in range(len(labels)) if labels[i] == true_id and predicted[i] == predicted_id]
        body.append(f"<p>{html.escape(classes[true_id])} taken for {html.escape(classes[predicted_id])}: "
                    f"{count} image(s)</p>")
        if chosen:
            shown = chosen[:EXAMPLES_PER_PAIR]
            body.append(page.figure(f"confused_{true_id}_as_{predicted_id}",
                                    image_row(split.images(shown), [f"{classes[true_id]} → {classes[predicted_id]}"]
                                               * len(shown)),
                                    f"{classes[true_id]} predicted as {classes[predicted_id]}"))
    body.append("<h3>Grad-CAM: where the model looks (last convolutional block)</h3>")
    if not split.explainable:
        return body + ["<p>Not available: the model has no explain_images signature (exported before it existed).</p>"]
    correct = spread([i for i in range(len(labels)) if labels[i] == predicted[i]], GRAD_CAM_IMAGES)
    wrong = spread([i for i in range(len(labels)) if labels[i] != predicted[i]], GRAD_CAM_IMAGES)
    for name, chosen in (("correct", correct), ("wrong", wrong)):
        if chosen:
            images = split.images(chosen)
            titles = [f"{classes[labels[i]]} → {classes[predicted[i]]}" for i in chosen]
            body.append(f"<p>{name.capitalize()} predictions (true → predicted):</p>"
                        + page.figure(f"grad_cam_{name}", image_row(images, titles, split.heatmaps(images)),
                                      f"Grad-CAM of {name} predictions"))
    return body


# --- promotion, TFLite, timings -------------------------------------------------------------------

def threshold_rows(summary: Dict[str, Any]) -> List[List[Any]]:
    """[threshold, bound, value, margin (>= 0: met)] for each threshold that applied."""
    evaluation = summary.get("evaluation") or {}
    accuracy = evaluation.get("accuracy")
    if accuracy is None or not summary.get("thresholds"):
        return []
    from models.settings import Thresholds  # TensorFlow, only when there is a model to judge
    bounds = Thresholds(**summary["thresholds"])
    rows = [["accuracy ≥ min_accuracy", bounds.min_accuracy, accuracy, accuracy - bounds.min_accuracy]]
    champion = evaluation.get("champion_accuracy")
    if champion is not None:
        drop = champion - accuracy
        rows.append(["drop below the champion ≤ max_accuracy_drop", bounds.max_accuracy_drop, drop,
                     bounds.max_accuracy_drop - drop])
    worst = min((m.get("accuracy") for m in evaluation.get("per_class", {}).values()
                 if m.get("accuracy") is not None), default=None)
    if bounds.min_class_accuracy and worst is not None:
        rows.append(["every class ≥ min_class_accuracy", bounds.min_class_accuracy, worst,
                     worst - bounds.min_class_accuracy])
    return rows


def promotion_section(page: Page, summary: Dict[str, Any]) -> None:
    blessed = summary.get("blessed")
    good = summary.get("status") in ("pushed", "already_serving")
    body = [f'<p>Status: <span class="{"ok" if good else "bad"}">'
            f'{html.escape(str(summary.get("status")))}</span>; blessed: {blessed}.</p>']
    rows = threshold_rows(summary)
    if rows:
        body.append(table(["threshold", "bound", "value", "margin"], rows, table_id="thresholds"))
    for failure in (summary.get("evaluation") or {}).get("validation_failures", []):
        body.append(f'<p class="bad">not met: {html.escape(failure)}</p>')
    if summary.get("pushed_paths"):
        body.append(table(["pushed" if summary.get("pushed") else "serving", "path"],
                          sorted(summary["pushed_paths"].items())))
    if summary.get("error"):
        body.append(f'<p class="bad">error: {html.escape(summary["error"])}</p>')
    page.add("promotion", "Promotion", "\n".join(body))


def tflite_section(page: Page, summary: Dict[str, Any]) -> None:
    quality = summary.get("tflite")
    if not quality:
        why = "" if summary.get("blessed") else ": they are made only for a blessed model, which alone can be pushed"
        page.add("tflite", "TFLite", f"<p>No TFLite variants were made{why}.</p>")
        return
    def row(name: str, m: Dict[str, Any], pushed: str) -> list:
        return [name, m["size_bytes"], m["size_vs_float32"], m["accuracy"], m["agreement"], m["latency_ms_per_image"],
                m.get("weight_quantization", ""), pushed]
    rows = []
    for name, m in quality["variants"].items():
        rows.append(row(name, m, "yes" if m["push"] else f"no: {m.get('reason', '')}"))
        # the int8 files measured and not kept: another weight quantization, or the quantization-aware copy's
        rows += [row(f"{name} (not kept)", other, f"no: {other['reason']}" if other.get("runs") is False
                     else "no: the file above was kept") for other in m.get("other_attempts", ())]
    page.add("tflite", "TFLite", f"<p>On {quality['eval_images']} eval images; SavedModel accuracy "
                                 f"{quality['saved_model_accuracy']:.4f}.</p>" + table(
        ["variant", "bytes", "× float32", "accuracy", "agreement with SavedModel", "ms/image (1 thread)",
         "weights", "pushed"], rows, table_id="tflite"))


def timings_section(page: Page, summary: Dict[str, Any]) -> None:
    stages, cached = summary.get("stage_seconds") or {}, set(summary.get("cached_stages") or ())
    rows = [[name, float(seconds), "cached: an earlier run's outputs reused" if name in cached else ""]
            for name, seconds in stages.items()]
    rows.append(["whole run", float(summary.get("wall_seconds") or 0.0), ""])
    page.add("timings", "Timings", table(["stage", "seconds", ""], rows, table_id="timings"))


SECTIONS = (data_section, validation_section, training_section, evaluation_section, promotion_section,
            tflite_section, timings_section)


def render(summary: Dict[str, Any], run_dir: str) -> str:
    """Writes report.html and its PNG files into run_dir; returns the report's path."""
    import matplotlib
    matplotlib.use("Agg")
    os.makedirs(run_dir, exist_ok=True)
    page = Page(run_dir)
    for section in SECTIONS:
        section(page, summary)
    path = os.path.join(run_dir, REPORT_FILENAME)
    files.write_atomically(path, page.html(f"Run {summary.get('run_id')}: {summary.get('status')}"))
    return path


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="<output-dir>/runs/<run>/ (or its summary, <output-dir>/runs/<run>.json)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.rstrip("/")
    summary_path = run_dir if run_dir.endswith(".json") else run_dir + ".json"
    if not os.path.exists(summary_path):
        print(f"error: no run summary {summary_path}: RUN_DIR is <output-dir>/runs/<run>/", file=sys.stderr)
        return 2
    summary = files.read_json(summary_path)
    print(f"report: {render(summary, os.path.splitext(summary_path)[0])}")
    return 0


if __name__ == "__main__":
    from pipeline.quiet import run_quietly
    run_quietly(main)
