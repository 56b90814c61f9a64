"""End-to-end: the real pipeline (LocalDagRunner, Beam, MLMD on SQLite, TFLite) on a synthetic RGB folder."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models.preprocessing import ImageSpec, decode_image
from pipeline import local_runner
from tests.conftest import make_class_folder

pytestmark = pytest.mark.e2e
SPEC = ImageSpec(height=32, width=32, channels=3)


def _tflite_top1(tflite_path: str, image_paths) -> list:
    interpreter = tf.lite.Interpreter(model_path=tflite_path)
    interpreter.allocate_tensors()
    (input_detail,), (output_detail,) = interpreter.get_input_details(), interpreter.get_output_details()
    top1 = []
    for path in image_paths:
        image = decode_image(tf.io.read_file(path), SPEC).numpy()[None]  # float H x W x C in 0..255
        interpreter.set_tensor(input_detail["index"], image)
        interpreter.invoke()
        top1.append(int(np.argmax(interpreter.get_tensor(output_detail["index"])[0])))
    return top1


def test_pipeline_pushes_a_model_that_classifies_held_out_images(tmp_path):
    data_root, output_dir = str(tmp_path / "data"), str(tmp_path / "out")
    make_class_folder(data_root, per_class=24)
    (tmp_path / "data" / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    held_out = make_class_folder(str(tmp_path / "held_out"), per_class=4, seed=7)

    exit_code = local_runner.main(["--data-root", data_root, "--output-dir", output_dir, "--epochs", "8", "--batch-size", "8",
                                   "--image-size", "32", "32", "--channels", "3", "--min-accuracy", "0.8"])

    with open(os.path.join(output_dir, "last_run.json")) as f:
        summary = json.load(f)
    assert exit_code == 0, summary["error"]
    assert summary["status"] == "pushed" and summary["blessed"]
    assert summary["classes"] == ["blue", "green", "red"]
    assert sum(summary["examples_per_split"].values()) == 72
    assert [r["file"] for r in summary["rejected_files"]] == ["red/corrupt.jpg"]
    assert set(summary["evaluation"]["per_class_accuracy"]) == {"blue", "green", "red"}
    assert set(summary["stage_seconds"]) >= {"ImageFolderExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"}
    with open(os.path.join(output_dir, "runs", f"{summary['run_id']}.json")) as f:
        assert json.load(f) == summary

    version_dir = summary["pushed_paths"]["saved_model"]
    assert os.path.dirname(version_dir) == os.path.join(output_dir, "serving", "image_cnn")
    with open(os.path.join(version_dir, "labels.txt")) as f:
        assert f.read() == "blue\ngreen\nred\n"

    paths = [p for name in sorted(held_out) for p in held_out[name]]
    expected = [name for name in sorted(held_out) for _ in held_out[name]]
    serving = tf.saved_model.load(version_dir).signatures["serve_image_bytes"]
    predictions = serving(image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
    assert [n.decode() for n in predictions["class_name"].numpy()] == expected
    assert predictions["probabilities"].shape == (len(paths), 3)
    np.testing.assert_allclose(predictions["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)

    assert _tflite_top1(os.path.join(version_dir, "model.tflite"), paths) == \
        predictions["class_id"].numpy().tolist()


def test_missing_data_root_fails_fast_with_one_clear_message(tmp_path, capsys):
    assert local_runner.main(["--data-root", str(tmp_path / "missing"), "--output-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
