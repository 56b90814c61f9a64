"""The run report rendered from a run summary: sections, tables, embedded plots and PNG files."""
import json
import os

import pytest

from pipeline import paths, report, report_figures
from tests.helpers import SECTION_IDS, embedded_images, parse_page, table_rows

SUMMARY = {
    "run_id": "2026-11-22T10:00:00", "status": "not_blessed", "blessed": False, "error": None,
    "data_root": "/data/photos", "layout": "flat", "classes": ["cat", "dog", "eel"],
    "file_counts": {"seen": 33, "ingested": 30, "rejected": 2, "ignored": 1},
    "ingested_per_class": {"train": {"cat": 8, "dog": 8, "eel": 8}, "eval": {"cat": 2, "dog": 2, "eel": 2}},
    "rejected_files": [{"file": "cat/<script>.jpg", "reason": "not an image"},
                       {"file": "dog/big.png", "reason": "image 9000x9000 is over the limit"}],
    "ignored_files": [{"file": ".DS_Store", "reason": "hidden"}],
    "converted_files": [{"file": "cat/phone.jpg", "note": "EXIF orientation 6 applied, stored as PNG"}],
    "anomalies": {"eval": ["class_name: Examples contain values missing from the schema: fox"]},
    "thresholds": {"min_accuracy": 0.9, "max_accuracy_drop": 0.01, "min_class_accuracy": 0.5},
    "evaluation": {"accuracy": 0.5, "champion_accuracy": 0.8, "examples": 6,
                   "per_class": {"cat": {"accuracy": 1.0, "precision": 0.5, "recall": 1.0},
                                 "dog": {"accuracy": 0.5, "precision": 1.0, "recall": 0.5},
                                 "eel": {"accuracy": 0.0, "precision": None, "recall": 0.0}},
                   "confusion_matrix": [[2, 0, 0], [1, 1, 0], [1, 1, 0]],
                   "validation_failures": ["sparse_categorical_accuracy = 0.5000, needs >= 0.9000: short by 0.4000"]},
    "tflite": {"eval_images": 6, "saved_model_accuracy": 0.5, "max_accuracy_drop": 0.01, "variants": {
        "float32": {"size_bytes": 1000, "size_vs_float32": 1.0, "accuracy": 0.5, "agreement": 1.0,
                    "latency_ms_per_image": 0.2, "push": True},
        "int8": {"size_bytes": 320, "size_vs_float32": 0.32, "accuracy": 0.3, "agreement": 0.8,
                 "latency_ms_per_image": 0.3, "push": False, "reason": "accuracy 0.3000 is 0.2000 below",
                 "weight_quantization": "per-channel",
                 "other_attempts": [{"size_bytes": 330, "size_vs_float32": 0.33, "accuracy": 0.25, "agreement": 0.75,
                                     "latency_ms_per_image": 0.3, "push": False, "reason": "accuracy 0.2500",
                                     "weight_quantization": "quantization-aware"}]}}},
    "stage_seconds": {"ImageFolderExampleGen": 2.5, "Trainer": 40.0, "Evaluator": 9.0},
    "cached_stages": ["ImageFolderExampleGen"],
    "wall_seconds": 60.0, "artifacts": {},
}


def test_the_report_has_every_section_the_evaluators_counts_and_escapes_file_names(tmp_path):
    path = report.render(SUMMARY, str(tmp_path / "run"))
    with open(path) as f:
        page = f.read()
    assert all(f'<section id="{section}">' in page for section in SECTION_IDS)
    assert [[int(v) for v in row[1:]] for row in table_rows(page, "confusion-counts")] == \
        SUMMARY["evaluation"]["confusion_matrix"]
    assert "cat/&lt;script&gt;.jpg" in page and "<script>" not in page
    assert "fox" in page and "EXIF orientation 6 applied" in page  # the anomaly, the converted file
    per_class = {row[0]: row[1:] for row in table_rows(page, "per-class")}
    assert per_class["cat"][3] == f"{2 * 0.5 * 1.0 / 1.5:.4f}" and per_class["eel"][3] == ""  # F1; none without precision
    thresholds = {row[0]: [float(v) for v in row[1:]] for row in table_rows(page, "thresholds")}
    assert thresholds["accuracy ≥ min_accuracy"] == pytest.approx([0.9, 0.5, -0.4])
    assert thresholds["drop below the champion ≤ max_accuracy_drop"] == pytest.approx([0.01, 0.3, -0.29])
    assert thresholds["every class ≥ min_class_accuracy"] == pytest.approx([0.5, 0.0, -0.5])
    assert [row[0] for row in table_rows(page, "tflite")] == ["float32", "int8", "int8 (not kept)"]
    assert table_rows(page, "tflite")[1][-1].startswith("no: accuracy 0.3000")
    assert table_rows(page, "tflite")[2][1:3] + table_rows(page, "tflite")[2][-2:] == [
        "330", "0.3300", "quantization-aware", "no: the file above was kept"]  # the other int8 file, measured
    assert [(row[0], row[2]) for row in table_rows(page, "timings")] == [
        ("ImageFolderExampleGen", "cached: an earlier run's outputs reused"), ("Trainer", ""), ("Evaluator", ""),
        ("whole run", "")]


@pytest.mark.parametrize("blessed, says", [
    (False, "No TFLite variants were made: they are made only for a blessed model, which alone can be pushed."),
    (True, "No TFLite variants were made.")])
def test_the_tflite_section_says_why_there_are_no_files(tmp_path, blessed, says):
    summary = {key: value for key, value in SUMMARY.items() if key != "tflite"}
    with open(report.render({**summary, "blessed": blessed}, str(tmp_path / "run"))) as f:
        page = f.read()
    assert f"<p>{says}</p>" in page and "tflite" not in parse_page(page).tables


def test_every_plot_is_embedded_and_written_beside_the_report(tmp_path):
    run_dir, model_run = str(tmp_path / "run"), tmp_path / "model_run"
    model_run.mkdir()
    (model_run / "learning_rate.json").write_text(json.dumps({"steps_per_epoch": 2, "learning_rate": [0.1, 0.2, 0.1]}))
    with open(report.render({**SUMMARY, "artifacts": {"model_run": str(model_run)}}, run_dir)) as f:
        page = f.read()
    images = embedded_images(page)
    assert {"confusion_matrix.png", "learning_rate.png"} <= set(images)
    assert "learning-rate schedule" in page
    for name, png in images.items():
        assert png.startswith(b"\x89PNG")
        with open(os.path.join(run_dir, name), "rb") as f:
            assert f.read() == png


def test_most_confused_pairs_are_the_largest_off_diagonal_cells():
    assert report_figures.most_confused([[5, 3, 0], [1, 4, 3], [0, 2, 9]], limit=3) == [(0, 1, 3), (1, 2, 3), (2, 1, 2)]
    assert report_figures.most_confused([[4, 0], [0, 4]]) == []


def test_rerendering_names_a_missing_run(tmp_path, capsys):
    assert report.main([str(tmp_path / "runs" / "nope")]) == 2
    assert "no run summary" in capsys.readouterr().err


def test_rerendering_a_finished_run_writes_its_report_beside_its_summary(tmp_path, capsys):
    import json
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "2026-11-22T100000.json").write_text(json.dumps(SUMMARY))
    assert report.main([str(runs / "2026-11-22T100000") + "/"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {runs / '2026-11-22T100000' / report.REPORT_FILENAME}"
    assert paths.run_report_dir(str(tmp_path), "2026-11-22T10:00:00") == str(runs / "2026-11-22T100000")
    assert paths.run_summary(str(tmp_path), "2026-11-22T10:00:00") == str(runs / "2026-11-22T100000.json")


def test_chromium_sees_every_section_and_tells_a_broken_image(tmp_path):
    from tests.browser import open_page
    path = report.render(SUMMARY, str(tmp_path / "run"))
    seen = open_page(path, str(tmp_path / "ok.png"))
    assert seen == {"images": 1, "broken": [], "sections": list(SECTION_IDS)}  # the confusion matrix
    with open(path) as f:
        page = f.read()
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1))
    assert open_page(str(broken), str(tmp_path / "broken.png"))["broken"] == ["confusion_matrix.png"]


def test_grad_cam_samples_are_spread_over_the_class_ordered_split():
    assert report_figures.spread(list(range(100)), 6) == [0, 20, 40, 59, 79, 99]
    assert report_figures.spread([3, 8], 6) == [3, 8]


def test_identical_files_and_split_leaks_are_shown(tmp_path):
    groups = [{"files": ["test/cat/a.png", "train/cat/b.png"], "splits": ["eval", "train"]},
              {"files": ["train/dog/c.png", "train/dog/d.png"], "splits": ["train"]}]
    path = report.render({**SUMMARY, "identical_files": groups, "split_leaks": 1}, str(tmp_path / "run"))
    with open(path) as f:
        page = f.read()
    assert table_rows(page, "identical-files") == [["test/cat/a.png, train/cat/b.png", "eval, train"],
                                                    ["train/dog/c.png, train/dog/d.png", "train"]]
    assert "<strong>1 split leak(s)</strong>" in page
    with open(report.render(SUMMARY, str(tmp_path / "clean"))) as f:
        assert "identical-files" not in f.read()


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.parametrize("classes", [CIFAR_CLASSES, [f"class_with_a_long_name_{i}" for i in range(60)]],
                         ids=["cifar-names", "sixty-long-names"])
def test_no_two_class_names_of_the_confusion_matrix_overlap(classes):
    import matplotlib.pyplot as plt
    fig = report_figures.confusion_plot([[1] * len(classes)] * len(classes), classes)
    renderer = fig.canvas.get_renderer()
    left, right = fig.axes
    for axis in (left, right):
        for labels in (axis.get_xticklabels(), axis.get_yticklabels()):
            shown = [label for label in labels if label.get_visible()]
            assert len(shown) >= min(len(classes), 10), "too few names left to read the matrix by"
            boxes = [label.get_window_extent(renderer) for label in shown]
            assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), [
                label.get_text() for label in shown]
    # the right plot's row names sit between the two plots, clear of the left one
    left_plot = left.get_window_extent(renderer)
    assert all(not label.get_window_extent(renderer).overlaps(left_plot) for label in right.get_yticklabels())
    plt.close(fig)
