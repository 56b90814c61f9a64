"""End-to-end: the real pipeline (LocalDagRunner, Beam, MLMD on SQLite, TFLite) on a synthetic RGB folder."""
import glob
import hashlib
import html
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from components import promotion
from pipeline import local_runner, promote, report, score
from tests.conftest import make_class_folder, write_image
from tests.odd_files import INGESTED, make_messy_folder
from tests.browser import open_page
from tests.test_report import SECTION_IDS, embedded_images, table_rows

pytestmark = pytest.mark.e2e


def _tree_digest(root: str) -> dict:
    """Every file under root -> sha256 of its bytes."""
    return {os.path.relpath(os.path.join(d, f), root): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(root) for f in files}


def test_a_messy_folder_pushes_a_model_that_classifies_held_out_images_then_a_new_class_stops(tmp_path, capsys):
    data_root, output_dir = str(tmp_path / "data"), str(tmp_path / "out")
    expected = make_messy_folder(data_root, per_class=24)
    held_out = make_class_folder(str(tmp_path / "held_out"), per_class=4, seed=7)

    exit_code = local_runner.main(["--data-root", data_root, "--output-dir", output_dir, "--epochs", "8", "--batch-size", "8",
                                   "--image-size", "32", "32", "--channels", "3", "--min-accuracy", "0.8"])
    printed = capsys.readouterr().out

    with open(os.path.join(output_dir, "last_run.json")) as f:
        summary = json.load(f)
    assert exit_code == 0, summary["error"]
    assert summary["status"] == "pushed" and summary["blessed"]
    assert summary["classes"] == ["blue", "green", "red"]
    ingested = 72 + sum(outcome == INGESTED for outcome, _ in expected.values())
    assert sum(summary["examples_per_split"].values()) == ingested
    listed = {e["file"]: outcome for outcome in ("rejected", "ignored") for e in summary[f"{outcome}_files"]}
    assert listed == {path: outcome for path, (outcome, _) in expected.items() if outcome != INGESTED}
    counts = summary["file_counts"]
    assert counts["seen"] == counts["ingested"] + counts["rejected"] + counts["ignored"] == ingested + len(listed)
    assert summary["class_balance"] == {"drift": None, "shares": {}, "bound": 0.05}  # first run: no baseline
    evaluation = summary["evaluation"]
    assert set(evaluation["per_class"]) == {"blue", "green", "red"}
    assert all(set(m) == {"accuracy", "precision", "recall"} for m in evaluation["per_class"].values())
    matrix = np.array(evaluation["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == summary["examples_per_split"]["eval"]
    assert evaluation["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum(), abs=1e-6)
    assert evaluation["champion_accuracy"] is None  # first run: judged by the absolute bound alone
    assert set(summary["stage_seconds"]) >= {"ImageFolderExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"}
    with open(os.path.join(output_dir, "runs", local_runner.run_filename(summary["run_id"]))) as f:
        assert json.load(f) == summary
    throughput, = glob.glob(os.path.join(output_dir, "pipeline", "Trainer", "model_run", "*", "throughput.json"))
    with open(throughput) as f:
        epochs = json.load(f)
    assert 1 <= len(epochs) <= 8 and all(e["images_per_s"] > 0 for e in epochs)  # early stopping may end it sooner

    # The run report: every section, the Evaluator's counts, every image embedded and beside it as a PNG
    report_dir = report.run_dir_of(output_dir, local_runner.run_filename(summary["run_id"]))
    assert printed.strip().splitlines()[-1] == f"report: {os.path.join(report_dir, report.REPORT_FILENAME)}"
    with open(os.path.join(report_dir, report.REPORT_FILENAME)) as f:
        page = f.read()
    assert all(f'<section id="{section}">' in page for section in SECTION_IDS)
    assert [[int(v) for v in row[1:]] for row in table_rows(page, "confusion-counts")] == evaluation["confusion_matrix"]
    images = embedded_images(page)
    assert {"thumbnails.png", "training_curves.png", "learning_rate.png", "confusion_matrix.png",
            "grad_cam_correct.png"} <= set(images)
    assert sorted(images) == sorted(f for f in os.listdir(report_dir) if f.endswith(".png"))
    assert all(html.escape(path) in page for path in listed)  # rejected and ignored files are named
    seen = open_page(os.path.join(report_dir, report.REPORT_FILENAME), str(tmp_path / "report.png"))
    assert seen == {"images": len(images), "broken": [], "sections": list(SECTION_IDS)}
    assert os.path.getsize(tmp_path / "report.png") > 50_000  # a screenshot of a rendered page, not a blank one

    version_dir = summary["pushed_paths"]["saved_model"]
    serving_dir = os.path.join(output_dir, "serving", "image_cnn")
    assert os.path.dirname(version_dir) == serving_dir
    pixels = np.stack([np.asarray(tf.image.resize(tf.io.decode_image(open(p, "rb").read(), channels=3), (32, 32)))
                       for p in held_out["red"][:2] + held_out["blue"][:2]])
    heatmaps = tf.saved_model.load(version_dir).signatures["explain_images"](images=tf.constant(pixels))["heatmap"].numpy()
    assert heatmaps.shape == (4, 32, 32) and not any(np.allclose(heatmaps[0], h) for h in heatmaps[1:])  # Grad-CAM per image
    assert promotion.champion_dir(serving_dir) == version_dir
    promoted, = promotion.promotion_log(serving_dir)
    assert (promoted["action"], promoted["run_id"]) == ("blessed", summary["run_id"])
    assert promoted["metrics"]["accuracy"] == evaluation["accuracy"]
    assert promoted["thresholds"] == {"min_accuracy": 0.8, "max_accuracy_drop": 0.01, "min_class_accuracy": 0.0}
    assert len(promoted["data_fingerprint"]) == 64 and promotion.record(serving_dir, promoted["version"]) == promoted
    with open(os.path.join(version_dir, "labels.txt")) as f:
        assert f.read() == "blue\ngreen\nred\n"

    paths = [p for name in sorted(held_out) for p in held_out[name]]
    serving = tf.saved_model.load(version_dir).signatures["serve_image_bytes"]
    predictions = serving(image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
    assert predictions["probabilities"].shape == (len(paths), 3)
    np.testing.assert_allclose(predictions["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)

    assert score.main(["--model", version_dir, "--data-root", str(tmp_path), "--split", "held_out"]) == 0
    scores = json.loads(capsys.readouterr().out)  # the README's `python -m pipeline.score` command
    assert scores["images"] == 12
    assert scores["saved_model_accuracy"] == 1.0   # every held-out file classified from its raw bytes
    quality = summary["tflite"]["variants"]
    assert set(quality) == {"float32", "dynamic_range", "float16", "int8"}
    assert set(scores["tflite"]) == {name for name, measured in quality.items() if measured["push"]} >= {"float32"}
    assert scores["tflite"]["float32"]["agreement"] == 1.0  # same top-1 as the SavedModel on each file
    assert quality["float32"]["agreement"] == 1.0 and quality["int8"]["agreement"] >= 0.99
    assert quality["int8"]["weight_quantization"] in ("per-tensor", "per-channel")
    sizes = {name: measured["size_bytes"] for name, measured in quality.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"] and sizes["dynamic_range"] < sizes["float32"]
    assert sorted(os.listdir(os.path.join(version_dir, "tflite"))) == sorted(
        ["labels.txt", "quality.json"] + [f"{name}.tflite" for name in scores["tflite"]])
    assert promoted["tflite"] == quality

    # Unchanged, run again: the stages are reused, and the champion already serves this very model.
    serving_before = _tree_digest(os.path.join(output_dir, "serving"))
    assert local_runner.main(["--data-root", data_root, "--output-dir", output_dir, "--epochs", "8", "--batch-size", "8",
                              "--image-size", "32", "32", "--channels", "3", "--min-accuracy", "0.8"]) == 0
    rerun_printed = capsys.readouterr().out
    with open(os.path.join(output_dir, "last_run.json")) as f:
        rerun = json.load(f)
    assert set(rerun["cached_stages"]) == {"ImageFolderExampleGen", "ImportSchemaGen", "StatisticsGen",
                                           "ExampleValidator", "Transform", "Trainer", "LiteModels"}
    assert "Trainer reused in " in rerun_printed and "Pusher finished" in rerun_printed
    assert rerun["status"] == "already_serving" and rerun["blessed"] and not rerun["pushed"]
    assert rerun["trained_model"] == summary["trained_model"]
    assert rerun["pushed_paths"]["saved_model"] == version_dir
    assert _tree_digest(os.path.join(output_dir, "serving")) == serving_before
    rerun_report = os.path.join(report.run_dir_of(output_dir, local_runner.run_filename(rerun["run_id"])),
                                report.REPORT_FILENAME)
    with open(rerun_report) as f:
        marked = {row[0] for row in table_rows(f.read(), "timings") if row[2].startswith("cached")}
    assert marked == set(rerun["cached_stages"])

    # A worse model on the same data: not blessed, against both bars, and serving/ is left byte for byte.
    assert local_runner.main(["--data-root", data_root, "--output-dir", output_dir, "--epochs", "1",
                              "--batch-size", "8", "--image-size", "32", "32", "--channels", "3",
                              "--learning-rate", "1e-7", "--min-accuracy", "0.9999"]) == 0
    capsys.readouterr()
    with open(os.path.join(output_dir, "last_run.json")) as f:
        worse = json.load(f)
    assert worse["status"] == "not_blessed" and not worse["pushed"]
    assert worse["evaluation"]["champion_accuracy"] == pytest.approx(evaluation["accuracy"], abs=1e-6)
    absolute, against_champion = worse["evaluation"]["validation_failures"]
    assert absolute.endswith(f"needs >= 0.9999: short by {0.9999 - worse['evaluation']['accuracy']:.4f}")
    assert "below the champion's (allowed drop 0.0100)" in against_champion
    assert _tree_digest(os.path.join(output_dir, "serving")) == serving_before

    # An operator forces that run's model out anyway, then rolls back to the blessed one.
    assert promote.main(["--output-dir", output_dir, "force", "--run", worse["run_id"], "--reason", "drill"]) == 0
    assert promote.main(["--output-dir", output_dir, "rollback", "--to", str(promoted["version"])]) == 0
    capsys.readouterr()
    blessed, forced, rolled_back = promotion.promotion_log(serving_dir)
    assert (forced["action"], forced["run_id"], forced["reason"]) == ("forced", worse["run_id"], "drill")
    assert (rolled_back["action"], rolled_back["source_version"]) == ("rollback", blessed["version"])
    assert promotion.champion(serving_dir)["version"] == rolled_back["version"]
    def model_files(folder):
        return {name: digest for name, digest in _tree_digest(folder).items() if name != "promotion.json"}
    assert model_files(promotion.champion_dir(serving_dir)) == model_files(version_dir)

    # The rollback pinned the champion: a blessed run holds (status held, a line in the log), and no
    # version is added, until the operator unpins it.
    champion_before = promotion.champion(serving_dir)
    versions_before = promotion.versions(serving_dir)
    assert champion_before["pinned"]
    assert local_runner.main(["--data-root", data_root, "--output-dir", output_dir, "--epochs", "8", "--batch-size", "8",
                              "--image-size", "32", "32", "--channels", "3", "--min-accuracy", "0.8"]) == 0
    held_printed = capsys.readouterr().out
    with open(os.path.join(output_dir, "last_run.json")) as f:
        held = json.load(f)
    assert held["status"] == "held" and held["blessed"] and not held["pushed"]
    assert f"held: the champion {promotion.champion_dir(serving_dir)} is pinned by a rollback" in held_printed
    assert promotion.champion(serving_dir) == champion_before and promotion.versions(serving_dir) == versions_before
    assert promotion.promotion_log(serving_dir)[-1]["action"] == "held"
    assert promote.main(["--output-dir", output_dir, "unpin"]) == 0
    assert not promotion.champion(serving_dir)["pinned"]

    # The same output dir (its schema now lists blue, green, red) with a new class folder: stopped
    # before Transform, with the class named, and the command that accepts it.
    write_image(os.path.join(data_root, "amber", "a.png"), (250, 190, 0), (20, 20), seed=1)
    write_image(os.path.join(data_root, "amber", "b.png"), (250, 190, 0), (20, 20), seed=2)
    assert local_runner.main(["--data-root", data_root, "--output-dir", output_dir, "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    with open(os.path.join(output_dir, "last_run.json")) as f:
        stopped = json.load(f)
    assert stopped["status"] == "failed" and "DataGate" in stopped["stage_seconds"]
    assert "Transform" not in stopped["stage_seconds"]
    assert "class folder(s) ['amber'] are not in the schema" in stopped["error"]
    assert "Examples contain values missing from the schema: amber" in stopped["error"]
    assert f"python -m pipeline.schema --schema {output_dir}/schema.pbtxt --data-root {data_root}" in err


def test_a_model_below_the_accuracy_bar_is_not_pushed_and_the_reason_is_recorded(tmp_path, capsys):
    same_colour = {"left": (120, 120, 120), "right": (120, 120, 120)}  # nothing to learn: about 50 %
    make_class_folder(str(tmp_path / "data"), per_class=30, colours=same_colour)
    output_dir = str(tmp_path / "out")

    exit_code = local_runner.main(["--data-root", str(tmp_path / "data"), "--output-dir", output_dir,
                                   "--epochs", "1", "--batch-size", "8", "--min-accuracy", "0.99",
                                   "--min-class-accuracy", "0.99"])

    with open(os.path.join(output_dir, "last_run.json")) as f:
        summary = json.load(f)
    assert exit_code == 0, summary["error"]
    assert summary["status"] == "not_blessed" and not summary["blessed"] and not summary["pushed"]
    assert summary["evaluation"]["accuracy"] < 0.99
    accuracy, per_class = summary["evaluation"]["accuracy"], summary["evaluation"]["per_class"]
    failures = summary["evaluation"]["validation_failures"]
    assert f"sparse_categorical_accuracy = {accuracy:.4f}, needs >= 0.9900: short by {0.99 - accuracy:.4f}" in failures
    below_floor = [name for name in ("left", "right") if per_class[name]["accuracy"] < 0.99]
    assert below_floor, "two classes of the same colour cannot both be learned"
    for name in below_floor:
        assert (f"class {name!r} sparse_categorical_accuracy = {per_class[name]['accuracy']:.4f}, needs >= 0.9900"
                in " ".join(failures))
    assert len(failures) == 1 + len(below_floor)
    assert not os.path.exists(os.path.join(output_dir, "serving"))
    out = capsys.readouterr().out
    assert "threshold not met: sparse_categorical_accuracy" in out
    assert "Pusher skipped (its condition was not met)" in out and "Pusher finished" not in out


def test_missing_data_root_fails_fast_with_one_clear_message(tmp_path, capsys):
    assert local_runner.main(["--data-root", str(tmp_path / "missing"), "--output-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def _messy(root):
    make_messy_folder(root, per_class=6)


def _test_split_all_empty_files(root):
    make_class_folder(os.path.join(root, "train"), per_class=4)
    for name in ("blue", "green", "red"):
        os.makedirs(os.path.join(root, "test", name))
        open(os.path.join(root, "test", name, "x.png"), "wb").close()


@pytest.mark.parametrize("make_data,extra_flags,expected", [
    (_messy, ["--strict"], "strict mode: 13 file(s) rejected: "),
    (_test_split_all_empty_files, [],
     "split 'eval' has no usable images (3 file(s) rejected; most common reasons: ['empty file (0 bytes)'])"),
], ids=["strict", "empty_split"])
def test_data_that_must_not_reach_training_stops_before_transform_and_keeps_the_report(
        tmp_path, capsys, make_data, extra_flags, expected):
    data_root, output_dir = str(tmp_path / "data"), str(tmp_path / "out")
    make_data(data_root)
    assert local_runner.main(["--data-root", data_root, "--output-dir", output_dir, *extra_flags]) == 1
    assert expected in capsys.readouterr().err
    with open(os.path.join(output_dir, "last_run.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "failed" and expected in summary["error"]
    assert "DataGate" in summary["stage_seconds"] and "Transform" not in summary["stage_seconds"]
    assert summary["file_counts"]["rejected"] == len(summary["rejected_files"]) > 0


def test_a_run_killed_in_the_trainer_resumes_when_rerun_and_serving_never_shows_a_partial_version(tmp_path):
    data_root, output_dir = str(tmp_path / "data"), str(tmp_path / "out")
    make_class_folder(data_root, per_class=30)
    command = [sys.executable, "-m", "pipeline.local_runner", "--data-root", data_root, "--output-dir", output_dir,
               "--epochs", "40", "--batch-size", "8", "--image-size", "32", "32", "--channels", "3",
               "--min-accuracy", "0.5"]
    serving_dir = local_runner.serving_dir_of(output_dir)
    partial, watching = [], threading.Event()

    def watch_serving():  # what a model server polling the folder would see
        while not watching.is_set():
            for version in promotion.versions(serving_dir):
                folder = promotion.version_dir(serving_dir, version)
                if not {"saved_model.pb", "promotion.json", "labels.txt"} <= set(os.listdir(folder)):
                    partial.append(sorted(os.listdir(folder)))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_serving)
    watcher.start()
    try:
        first = subprocess.Popen(command, cwd=local_runner.REPO_ROOT, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a checkpoint counts once the checkpoint manager's state file names it (written after the
        # .index and data files): killed between the two, a rerun rightly starts from epoch 0
        checkpoints = os.path.join(output_dir, "pipeline", "Trainer", "checkpoints", "*", "**", "checkpoint")
        deadline = time.time() + 600
        while not glob.glob(checkpoints, recursive=True) and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the run ended before an epoch was checkpointed"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert promotion.versions(serving_dir) == []

        rerun = subprocess.run(command, cwd=local_runner.REPO_ROOT, capture_output=True, text=True, timeout=900)
    finally:
        watching.set()
        watcher.join()
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    with open(os.path.join(output_dir, "last_run.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "pushed"
    throughputs = sorted(glob.glob(os.path.join(output_dir, "pipeline", "Trainer", "model_run", "*",
                                                "throughput.json")), key=os.path.getmtime)
    with open(throughputs[-1]) as f:
        assert json.load(f)[0]["epoch"] >= 1, "the rerun resumed after the checkpointed epoch"
    assert len(promotion.versions(serving_dir)) == 1 and partial == []
