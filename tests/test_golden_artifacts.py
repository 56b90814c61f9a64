"""Tests that read the golden run (tests/golden.py) without running the pipeline again: they read its
snapshot, never written once made, so they need not be in tests/test_e2e.py beside the scenarios,
and run on the other pytest worker while those do (conftest.golden_session shares the run)."""
import collections
import html
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models import promotion
from models import preprocessing
from models.model import ModelConfig
from models.preprocessing import ImageSpec
from pipeline import paths, report, score
from tests import two_workers
from tests.browser import open_page
from tests.golden import DIGIT_CLASSES
from tests.helpers import SECTION_IDS, embedded_images, expected_parameter_count, table_rows

pytestmark = pytest.mark.e2e


def test_the_golden_report_shows_every_section_names_every_bad_file_and_renders(golden_session, tmp_path):
    summary = golden_session.run.summary
    report_dir = golden_session.frozen(paths.run_report_dir(golden_session.workspace.output_dir, summary["run_id"]))
    with open(os.path.join(report_dir, report.REPORT_FILENAME)) as f:
        page = f.read()
    assert all(f'<section id="{section}">' in page for section in SECTION_IDS)
    assert [[int(v) for v in row[1:]] for row in table_rows(page, "confusion-counts")] == \
        summary["evaluation"]["confusion_matrix"]
    images = embedded_images(page)
    assert {"thumbnails.png", "training_curves.png", "learning_rate.png", "confusion_matrix.png",
            "grad_cam_correct.png"} <= set(images)
    assert sorted(images) == sorted(f for f in os.listdir(report_dir) if f.endswith(".png"))
    assert f"residual network, width 1, depth 1: {expected_parameter_count(ModelConfig()):,} parameters" in page
    bad = [e["file"] for outcome in ("rejected", "ignored") for e in summary[f"{outcome}_files"]]
    assert bad and all(html.escape(path) in page for path in bad)
    seen = open_page(os.path.join(report_dir, report.REPORT_FILENAME), str(tmp_path / "report.png"))
    assert seen == {"images": len(images), "broken": [], "sections": list(SECTION_IDS)}
    assert os.path.getsize(tmp_path / "report.png") > 50_000  # a screenshot of a rendered page, not a blank one


def test_the_golden_champion_is_published_and_serves_the_test_digits_as_the_evaluator_scored_them(
        golden_session, capsys):
    summary = golden_session.run.summary
    serving_dir = golden_session.frozen(golden_session.workspace.serving_dir)
    version_dir = golden_session.frozen(summary["pushed_paths"]["saved_model"])
    assert os.path.dirname(version_dir) == serving_dir and promotion.champion_dir(serving_dir) == version_dir
    promoted, = promotion.promotion_log(serving_dir)
    assert (promoted["action"], promoted["run_id"]) == ("blessed", summary["run_id"])
    assert promoted["metrics"]["accuracy"] == summary["evaluation"]["accuracy"]
    assert promoted["thresholds"] == {"min_accuracy": 0.9, "max_accuracy_drop": 0.01, "min_class_accuracy": 0.0}
    assert promoted["data_fingerprint"] == summary["data_fingerprint"]
    assert promotion.record(serving_dir, promoted["version"]) == promoted
    with open(os.path.join(version_dir, "labels.txt")) as f:
        assert f.read().split() == DIGIT_CLASSES

    # python -m pipeline.score, the README's client: every test file from its raw bytes
    data_root = golden_session.frozen(golden_session.workspace.data_root)
    assert score.main(["--model", version_dir, "--data-root", data_root, "--split", "test"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["images"] == 500 and scores["skipped"] == []
    assert scores["saved_model_accuracy"] == pytest.approx(summary["evaluation"]["accuracy"], abs=1e-6)
    assert scores["tflite"]["float32"]["agreement"] == 1.0

    import tensorflow as tf
    test_dir = os.path.join(data_root, "test")
    paths = [os.path.join(test_dir, d, sorted(os.listdir(os.path.join(test_dir, d)))[0]) for d in ("1", "4", "7")]
    pixels = np.stack([tf.io.decode_png(open(p, "rb").read(), channels=1).numpy() for p in paths]).astype(np.float32)
    heatmaps = tf.saved_model.load(version_dir).signatures["explain_images"](images=tf.constant(pixels))["heatmap"].numpy()
    assert heatmaps.shape == (3, 28, 28) and not any(np.allclose(heatmaps[0], h) for h in heatmaps[1:])


def test_the_golden_tflite_files_agree_with_the_saved_model_and_shrink_as_promised(golden_session):
    summary = golden_session.run.summary
    quality = summary["tflite"]["variants"]
    assert set(quality) == {"float32", "dynamic_range", "float16", "int8"}
    # pushed: each agrees with the SavedModel as the pipeline promises (LiteBounds.min_agreement). A bound of
    # 0.99 on the int8 file, tighter than the promise, failed an intact golden run by chance (bench/RESULTS.md).
    assert all(measured["push"] for measured in quality.values()), quality
    assert quality["float32"]["agreement"] == 1.0
    assert quality["int8"]["weight_quantization"] in ("per-tensor", "per-channel")
    sizes = {name: measured["size_bytes"] for name, measured in quality.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"] and sizes["dynamic_range"] < sizes["float32"]
    version_dir = golden_session.frozen(summary["pushed_paths"]["saved_model"])
    with open(os.path.join(version_dir, "tflite", "quality.json")) as f:
        assert json.load(f)["client_preprocessing"] == preprocessing.client_preprocessing(ImageSpec())
    assert sorted(os.listdir(os.path.join(version_dir, "tflite"))) == sorted(
        ["labels.txt", "quality.json"] + [f"{name}.tflite" for name in quality])
    assert promotion.promotion_log(golden_session.frozen(golden_session.workspace.serving_dir))[0]["tflite"] == quality


# LiteModels streams the eval split: the memory it takes while doing so must not grow with the split.
# Holding these digits whole as float32 adds at least 3.1 MB per 1,000 images (1,000 x 28 x 28 x 4
# bytes). The whole process's peak cannot show that (the converters' part of it varies by more from
# run to run), so the bench measures the rise of the resident set while the split streams past, after
# its first batch. That rise moves in the allocator's steps, so the large split is 20,000 images more
# than the small one: one step then stays under the bound per 1,000 images, and a split held whole
# goes over it (bench/RESULTS.md, "LiteModels' memory", measured as shipped and with --keep-batches).
# One variant is measured: every variant is scored in the same streaming pass, and the other four
# would add conversions and time, not memory.
SIZES = (1000, 21000)
MAX_GROWTH_MB_PER_1000 = 2.0


def test_lite_models_memory_while_streaming_does_not_grow_with_a_twenty_one_times_larger_eval_split(
        golden_session, tmp_path):
    small_size, large_size = SIZES
    run = golden_session.run.summary
    frozen = {"trained_model": golden_session.frozen(run["trained_model"]),
              "artifacts": {"examples": golden_session.frozen(run["artifacts"]["examples"])}}
    with open(tmp_path / "last_run.json", "w") as f:  # the bench's input: the golden run's, in the snapshot
        json.dump(frozen, f)
    result = subprocess.run([sys.executable, os.path.join(paths.REPO_ROOT, "bench", "lite_memory.py"),
                             "--output-dir", str(tmp_path), "--sizes", *map(str, SIZES), "--json",
                             "--variants", "float32"],
                            cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    small, large = measured[str(small_size)], measured[str(large_size)]
    assert large["eval_images"] == large_size and small["eval_images"] == small_size
    growth_per_1000 = (large["stream_growth_mb"] - small["stream_growth_mb"]) / (large_size - small_size) * 1000
    assert growth_per_1000 < MAX_GROWTH_MB_PER_1000, (
        f"streaming {large_size:,} eval images took {growth_per_1000:.2f} MB per 1,000 images more than "
        f"{small_size:,}: {measured}")


def test_the_trainer_runs_under_two_workers_on_the_golden_examples_on_disjoint_shards(golden_session, tmp_path):
    """The project's Trainer executor and run_fn, in two processes joined by TF_CONFIG on loopback, on
    the examples and Transform graph of the golden run (augmentation off, so images can be compared):
    in the first pass over the data no image is trained on by both workers, and the chief's exported
    model serves the test digits."""
    inputs, exec_properties = two_workers.golden_trainer_inputs(golden_session.frozen(
        golden_session.workspace.output_dir), golden_session.frozen)
    custom_config = json.loads(exec_properties["custom_config"])
    custom_config["training"]["shift_rotate"] = False
    custom_config["checkpoint_root"] = str(tmp_path / "checkpoints")
    exec_properties.update(custom_config=json.dumps(custom_config), epochs=2)
    outputs = {"model": str(tmp_path / "model"), "model_run": str(tmp_path / "model_run")}
    workers = [f"127.0.0.1:{port}" for port in two_workers.free_ports(2)]
    processes, records = [], [str(tmp_path / f"seen_{index}.json") for index in range(2)]
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        argument = json.dumps([inputs, outputs, exec_properties, records[index]])
        processes.append(subprocess.Popen([sys.executable, "-c", two_workers.TRAINER_WORKER, argument], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    recorded = []
    for record in records:
        with open(record) as f:
            recorded.append(json.load(f))
    steps = [worker["steps"] for worker in recorded]
    assert len(steps[0]) == len(steps[1]) > 0, "both workers run every step"
    from models.recipe import TrainingConfig
    per_replica = TrainingConfig(**custom_config["training"]).batch_size
    in_data = collections.Counter(recorded[0]["data"])
    first_pass = sum(in_data.values()) // (2 * per_replica)  # the whole global batches of one pass over the data
    trained = [collections.Counter(digest for step in worker[:first_pass] for digest in step) for worker in steps]
    assert [sum(t.values()) for t in trained] == [first_pass * per_replica] * 2
    too_often = trained[0] + trained[1] - in_data  # images trained on more often than the data holds them
    shared = set(trained[0]) & set(trained[1])
    assert not too_often, (f"in one pass, {sum(too_often.values())} images were trained on twice; "
                           f"{len(shared)} of them by both workers")

    serving_dirs = [d for d, _, files in os.walk(tmp_path) if "saved_model.pb" in files]
    assert serving_dirs == [os.path.join(outputs["model"], "Format-Serving")]  # the chief's, and only it
    test_dir = golden_session.frozen(os.path.join(golden_session.workspace.data_root, "test"))
    files = [(os.path.join(test_dir, d, name), d) for d in sorted(os.listdir(test_dir))
             for name in sorted(os.listdir(os.path.join(test_dir, d)))[:5]]
    import tensorflow as tf
    serve = tf.saved_model.load(serving_dirs[0]).signatures["serve_image_bytes"]
    names = serve(image_bytes=tf.constant([open(p, "rb").read() for p, _ in files]))["class_name"].numpy()
    accuracy = sum(n.decode() == d for n, (_, d) in zip(names, files)) / len(files)
    assert accuracy >= 0.5, f"the chief's model classifies {accuracy:.2f} of the test digits (chance is 0.1)"
