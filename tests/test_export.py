"""The exported SavedModel: three signatures, one model, the same outputs; loads with TensorFlow alone."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import export, features
from models.model import build_classifier
from tests.helpers import CONFIG, LABELS, SPEC, png

def _example(png: bytes) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))})).SerializeToString()


def test_the_three_signatures_give_the_same_outputs_for_the_same_images(exported):
    export_dir, pixels = exported
    signatures = tf.saved_model.load(export_dir).signatures
    pngs = [png(p) for p in pixels]
    outputs = {
        "serving_default": signatures["serving_default"](examples=tf.constant([_example(p) for p in pngs])),
        "serve_image_bytes": signatures["serve_image_bytes"](image_bytes=tf.constant(pngs)),
        "serve_images": signatures["serve_images"](images=tf.constant(pixels, tf.float32)),
    }
    reference = outputs["serve_image_bytes"]
    assert reference["probabilities"].shape == (6, 2)
    for name, output in outputs.items():
        np.testing.assert_allclose(output["probabilities"].numpy(), reference["probabilities"].numpy(),
                                   atol=1e-5, err_msg=name)
        assert output["class_id"].numpy().tolist() == reference["class_id"].numpy().tolist(), name
        assert output["class_name"].numpy().tolist() == [LABELS[i].encode() for i in reference["class_id"].numpy()]


_TENSORFLOW_ONLY = textwrap.dedent("""
    import json, sys
    for name in ("tensorflow_transform", "tfx", "tfx_bsl", "tf_keras", "tensorflow_model_analysis",
                 "tensorflow_data_validation", "apache_beam", "models", "components", "pipeline"):
        sys.modules[name] = None  # as if not installed: importing it fails, find_spec finds nothing
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    image = tf.io.encode_png(tf.zeros([12, 10, 3], tf.uint8))
    out = model.signatures["serve_image_bytes"](image_bytes=tf.reshape(image, [1]))
    print(json.dumps({"signatures": sorted(model.signatures), "class_name": out["class_name"].numpy()[0].decode()}))
""")


def test_the_saved_model_loads_and_serves_in_a_fresh_process_with_only_tensorflow(exported):
    export_dir, _ = exported
    result = subprocess.run([sys.executable, "-c", _TENSORFLOW_ONLY, export_dir], capture_output=True, text=True,
                            timeout=300, cwd="/", env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")})
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["signatures"] == ["explain_images", "serve_image_bytes", "serve_images", "serving_default"]
    assert loaded["class_name"] in LABELS


def test_the_saved_model_holds_the_signatures_functions_and_no_trace_of_each_layers_call(exported):
    """Keras' per-layer call traces made the export and every load of it several times slower, and
    nothing reads them (export.save)."""
    from tensorflow.core.protobuf import saved_model_pb2
    export_dir, _ = exported
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    names = [function.signature.name for function in saved.meta_graphs[0].graph_def.library.function]
    assert any(name.startswith("__inference_explain_images") for name in names), names
    assert not [name for name in names if "layer_call" in name]


def test_explain_images_gives_serve_images_outputs_and_a_heatmap_per_image(exported):
    export_dir, pixels = exported
    signatures = tf.saved_model.load(export_dir).signatures
    images = tf.constant(pixels, tf.float32)
    explained = signatures["explain_images"](images=images)
    served = signatures["serve_images"](images=images)
    np.testing.assert_allclose(explained["probabilities"].numpy(), served["probabilities"].numpy(), atol=1e-6)
    heatmap = explained["heatmap"].numpy()
    assert heatmap.shape == (len(pixels), SPEC.height, SPEC.width)
    assert heatmap.min() >= 0 and heatmap.max() <= 1 + 1e-6
    assert heatmap.reshape(len(pixels), -1).max(axis=1).min() > 0.5  # each scaled to its own peak
    assert not np.allclose(heatmap[0], heatmap[1])  # each image its own map


def _view(pixels: np.ndarray, dy: int, dx: int, mirror: bool, fill: float, pad_mode: str = "zero") -> np.ndarray:
    """pixels [N, H, W, C] with the pixel at (y + dy, x + dx) at (y, x), fill (or the image reflected)
    beyond the border."""
    pad = max(abs(dy), abs(dx))
    widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    padded = (np.pad(pixels.astype(np.float32), widths, mode="reflect") if pad_mode == "reflect" else
              np.pad(pixels.astype(np.float32), widths, constant_values=fill))
    view = padded[:, pad + dy:pad + dy + pixels.shape[1], pad + dx:pad + dx + pixels.shape[2]]
    return view[:, :, ::-1] if mirror else view


@pytest.mark.parametrize("views", [export.InferenceViews(flip=True), export.InferenceViews(shift=2),
                                   export.InferenceViews(flip=True, shift=1, pad_mode="reflect")],
                         ids=["flip", "shift", "flip+reflected shift"])
def test_with_test_time_views_every_entry_point_answers_the_mean_over_the_views(exported, tmp_path, views):
    from models import lite
    export_dir, pixels = exported
    keras.utils.set_random_seed(0)
    model = build_classifier(CONFIG)  # the exported network again: the same seed
    transform = tft.TFTransformOutput(os.path.join(os.path.dirname(export_dir), "transform"))
    export.export_serving_model(model, transform, LABELS, SPEC, str(tmp_path / "views"), views)
    plain = tf.saved_model.load(export_dir).signatures["serve_images"]
    mean_pixel, _ = export.normalization_constants(transform, SPEC)  # what zero means once normalized
    each = [plain(images=tf.constant(_view(pixels, dy, dx, mirror, mean_pixel, views.pad_mode)))["probabilities"]
            .numpy()
            for dy, dx in views.offsets() for mirror in ((False, True) if views.flip else (False,))]
    assert len(each) == views.count() == (2 if views.flip else 1) * (5 if views.shift else 1)
    expected = np.mean(each, axis=0)
    signatures = tf.saved_model.load(str(tmp_path / "views")).signatures
    pngs = [png(p) for p in pixels]
    outputs = {
        "serving_default": signatures["serving_default"](examples=tf.constant([_example(p) for p in pngs])),
        "serve_image_bytes": signatures["serve_image_bytes"](image_bytes=tf.constant(pngs)),
        "serve_images": signatures["serve_images"](images=tf.constant(pixels, tf.float32)),
        "explain_images": signatures["explain_images"](images=tf.constant(pixels, tf.float32)),
        "TFLite float32": {"probabilities": lite.LiteClassifier(lite.convert(str(tmp_path / "views"), "float32"))(
            pixels.astype(np.float32))},
    }
    assert not np.allclose(expected, each[0], atol=1e-4)
    for name, output in outputs.items():
        np.testing.assert_allclose(np.asarray(output["probabilities"]), expected, atol=1e-5, err_msg=name)
    assert outputs["serve_images"]["class_id"].numpy().tolist() == expected.argmax(axis=1).tolist()
    # and in int8
    int8 = lite.convert(str(tmp_path / "views"), "int8", representative_images=pixels.astype(np.float32))
    np.testing.assert_allclose(lite.LiteClassifier(int8)(pixels.astype(np.float32)), expected, atol=0.05)
