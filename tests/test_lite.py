"""TFLite variants converted from the exported model, run as a client runs them, and measured."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from components.lite_models import QUANTIZATION_AWARE, _best, sample_split, variants_with_quality
from models import export, features, lite
from models.model import build_classifier
from models.recipe import TrainingConfig
from models.run_fn import fine_tune_quantization_aware
from tests.helpers import CONFIG, LABELS, SPEC, png


def _scale_counts(model: bytes):
    """How many scales each quantized tensor carries: one per tensor, or one per output channel."""
    return [len(t["quantization_parameters"]["scales"]) for t in tf.lite.Interpreter(model_content=model)
            .get_tensor_details() if len(t["quantization_parameters"]["scales"])]


def test_the_float32_variant_gives_the_savedmodels_probabilities(exported):  # noqa: F811
    export_dir, pixels = exported
    assert lite.image_spec(export_dir) == SPEC
    probabilities = lite.LiteClassifier(lite.convert(export_dir, "float32"))(pixels.astype(np.float32))
    saved = tf.saved_model.load(export_dir).signatures["serve_images"](images=tf.constant(pixels, tf.float32))
    np.testing.assert_allclose(probabilities, saved["probabilities"].numpy(), atol=1e-5)


def test_every_variant_converts_runs_and_is_measured(exported):  # noqa: F811
    export_dir, pixels = exported
    images = pixels.astype(np.float32)
    saved = tf.saved_model.load(export_dir).signatures["serve_images"](images=tf.constant(images))
    reference = saved["class_id"].numpy()
    for variant in lite.VARIANTS:
        model = lite.convert(export_dir, variant, representative_images=images)
        probabilities = lite.LiteClassifier(model)(images)
        assert probabilities.shape == (len(images), 2)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)  # int8: 1/256 steps
        labels = np.where(np.arange(len(reference)) % 3 == 0, 1 - reference, reference)  # a third mislabelled
        measured = lite.measure(model, images, labels, reference)
        assert set(measured) == {"size_bytes", "accuracy", "agreement", "latency_ms_per_image"}
        predicted = probabilities.argmax(axis=1)
        assert measured["accuracy"] == pytest.approx(np.mean(predicted == labels))   # against the labels
        assert measured["agreement"] == pytest.approx(np.mean(predicted == reference))  # against the SavedModel
        assert measured["size_bytes"] == len(model) and measured["latency_ms_per_image"] > 0
    interpreter = tf.lite.Interpreter(model_content=lite.convert(export_dir, "int8", representative_images=images))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8  # raw pixels in, as a microcontroller has them


def test_int8_needs_representative_images_and_unknown_variants_are_named(exported):  # noqa: F811
    export_dir, _ = exported
    with pytest.raises(ValueError, match="needs representative images"):
        lite.convert(export_dir, "int8")
    with pytest.raises(ValueError, match="variant must be one of"):
        lite.convert(export_dir, "int4")


@pytest.mark.parametrize("accuracy, expected", [
    (0.975, {"push": True}),
    (0.97, {"push": True}),
    (0.95, {"push": False, "reason": "accuracy 0.9500 is 0.0300 below the SavedModel's 0.9800 (allowed 0.0100)"}),
])
def test_a_variant_too_far_below_the_saved_model_is_not_pushed_and_says_why(accuracy, expected):
    from components.lite_models import push_decision
    assert push_decision(accuracy, saved_model_accuracy=0.98, max_accuracy_drop=0.01) == expected


@pytest.mark.parametrize("accuracy, agreement, expected", [
    (0.98, 0.98, {"push": True}),
    # the case that was pushed on real photos: accuracy within the drop, 23 % of answers different
    (0.975, 0.77, {"push": False, "reason": "agreement with the SavedModel 0.7700 is below 0.9800"}),
    (0.95, 0.90, {"push": False, "reason": "accuracy 0.9500 is 0.0300 below the SavedModel's 0.9800 (allowed "
                                           "0.0100); agreement with the SavedModel 0.9000 is below 0.9800"}),
])
def test_a_variant_that_agrees_too_rarely_with_the_saved_model_is_not_pushed(accuracy, agreement, expected):
    from components.lite_models import push_decision
    assert push_decision(accuracy, 0.98, 0.01, agreement=agreement, min_agreement=0.98) == expected


def test_int8_weights_per_tensor_carry_one_scale_each_and_make_a_smaller_file(exported):  # noqa: F811
    export_dir, pixels = exported
    images = pixels.astype(np.float32)
    per_channel = lite.convert(export_dir, "int8", images, weight_quantization="per-channel")
    per_tensor = lite.convert(export_dir, "int8", images, weight_quantization="per-tensor")
    assert max(_scale_counts(per_channel)) > 1
    assert set(_scale_counts(per_tensor)) == {1}
    assert len(per_tensor) < len(per_channel)
    with pytest.raises(ValueError, match="weight_quantization must be one of"):
        lite.convert(export_dir, "int8", images, weight_quantization="per-axis")


def _write_examples(examples_uri: str, pixels: np.ndarray, labels=None, splits=("train", "eval")) -> None:
    labels = [i % 2 for i in range(len(pixels))] if labels is None else labels
    for split in splits:
        os.makedirs(features.split_dir(examples_uri, split))
        path = os.path.join(features.split_dir(examples_uri, split), "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for image, label in zip(pixels, labels):
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png(image)])),
                    features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))})
                ).SerializeToString())


def test_the_calibration_sample_spans_a_class_sorted_split(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (400,) + SPEC.shape, dtype=np.uint8)
    labels = [i * 4 // 400 for i in range(400)]  # four classes, written one after the other as ExampleGen does
    _write_examples(str(tmp_path), pixels, labels, splits=("train",))
    images, sampled = sample_split(str(tmp_path), "train", SPEC, count=40)
    assert images.shape == (40,) + SPEC.shape and set(sampled) == {0, 1, 2, 3}
    assert max(np.bincount(sampled)) <= 20  # not dominated by one class
    assert len(sample_split(str(tmp_path), "train", SPEC, count=1000)[1]) == 400  # fewer: all of them
    assert (sample_split(str(tmp_path), "train", SPEC, count=40)[1] == sampled).all()  # seeded


def _recording_converter(monkeypatch):
    """The real converter, each int8 file it makes recorded as {quantization: bytes}."""
    int8_files, convert = {}, lite.convert

    def recording_convert(saved_model, variant, representative_images=None, weight_quantization="per-channel"):
        model = convert(saved_model, variant, representative_images, weight_quantization)
        if variant == "int8":
            source = getattr(saved_model, "source", "")
            int8_files[QUANTIZATION_AWARE if source == QUANTIZATION_AWARE else weight_quantization] = model
        return model
    monkeypatch.setattr(lite, "convert", recording_convert)
    real_load = lite.load

    def labelled_load(saved_model):  # tells the converter which SavedModel it was given
        loaded = real_load(saved_model)
        if isinstance(saved_model, str):
            loaded.source = QUANTIZATION_AWARE if export.QUANTIZATION_AWARE_FOLDER in saved_model else "saved_model"
        return loaded
    monkeypatch.setattr(lite, "load", labelled_load)
    return int8_files


@pytest.mark.parametrize("max_accuracy_drop, min_agreement, tried", [
    (1.0, 0.0, {"per-tensor"}),                  # per tensor may be pushed: kept
    (-1.0, 0.0, {"per-tensor", "per-channel"}),  # nothing may be pushed: both tried, the better one kept
    (1.0, 1.01, {"per-tensor", "per-channel"}),  # no agreement can reach the floor: the same, by agreement
])
def test_int8_falls_back_to_per_channel_weights_only_when_per_tensor_may_not_be_pushed(
        exported, tmp_path, monkeypatch, max_accuracy_drop, min_agreement, tried):  # noqa: F811
    export_dir, pixels = exported
    _write_examples(str(tmp_path / "examples"), pixels)
    int8_files = _recording_converter(monkeypatch)
    quality = variants_with_quality(export_dir, str(tmp_path / "examples"), str(tmp_path), max_accuracy_drop,
                                    min_agreement)
    assert set(int8_files) == tried  # per channel only when per tensor was not enough
    int8 = quality["variants"]["int8"]
    attempts = [int8, *int8.get("other_attempts", [])]
    assert {attempt["weight_quantization"] for attempt in attempts} == tried
    assert _best(attempts) == 0  # the one kept is the best of those measured
    assert int8["push"] == (max_accuracy_drop >= 0 and min_agreement <= 1)
    if min_agreement > 1:
        assert "agreement with the SavedModel" in int8["reason"] and quality["min_agreement"] == min_agreement
    with open(tmp_path / "int8.tflite", "rb") as f:
        kept = f.read()
    assert kept == int8_files[int8["weight_quantization"]]
    assert (set(_scale_counts(kept)) == {1}) == (int8["weight_quantization"] == "per-tensor")
    assert sorted(os.listdir(tmp_path)) == sorted(["examples"] + [f"{v}.tflite" for v in lite.VARIANTS])


@pytest.fixture(scope="module")
def dead_units(exported, tmp_path_factory):  # noqa: F811
    """The exported model again, its squeeze-excite units dead (a bias no input overcomes, as a too-high
    learning rate leaves them): their int8 range is empty, and XNNPACK refuses the scale it gets."""
    export_dir, _ = exported
    keras.utils.set_random_seed(0)
    model = build_classifier(CONFIG)
    for layer in model.layers:
        if layer.name.endswith("_se_reduce"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.full_like(bias, -100.0)])
    transform = tft.TFTransformOutput(os.path.join(os.path.dirname(export_dir), "transform"))
    path = str(tmp_path_factory.mktemp("dead") / "model")
    export.export_serving_model(model, transform, LABELS, SPEC, path)
    return path


def test_a_file_the_interpreter_cannot_run_is_not_pushed_says_why_and_the_others_go_on(
        exported, dead_units, tmp_path):  # noqa: F811
    _, pixels = exported
    _write_examples(str(tmp_path / "examples"), pixels)
    quality = variants_with_quality(dead_units, str(tmp_path / "examples"), str(tmp_path), 1.0, 0.0)
    int8 = quality["variants"]["int8"]
    for attempt in (int8, *int8["other_attempts"]):  # per tensor, then per channel: neither runs
        assert attempt["push"] is False and attempt["runs"] is False and attempt["agreement"] is None
        assert attempt["reason"].startswith("TensorFlow Lite's interpreter cannot run it: ")
        assert "XNNPACK" in attempt["reason"]
    assert {a["weight_quantization"] for a in (int8, *int8["other_attempts"])} == {"per-tensor", "per-channel"}
    for name in ("float32", "dynamic_range", "float16"):  # the float files of the same model run and are pushed
        measured = quality["variants"][name]
        assert measured["push"] is True and "runs" not in measured and 0 <= measured["agreement"] <= 1
    assert os.path.exists(tmp_path / "int8.tflite")  # kept for a look, not pushed


@pytest.fixture(scope="module")
def quantization_aware(exported, tmp_path_factory):  # noqa: F811
    """The exported model's quantization-aware copy, fine-tuned one epoch and exported as the Trainer does."""
    export_dir, pixels = exported
    transform = tft.TFTransformOutput(os.path.join(os.path.dirname(export_dir), "transform"))
    tmp = tmp_path_factory.mktemp("qat")
    keras.utils.set_random_seed(0)
    model = build_classifier(CONFIG)  # the exported weights: the same seed
    mean, std = export.normalization_constants(transform, SPEC)
    # one batch of all six: at batch 3, training this small network (float or not) crashes inside
    # TensorFlow 2.21's oneDNN kernels on AMD EPYC (heap corruption); the default networks do not
    batches = tf.data.Dataset.from_tensor_slices(((pixels.astype(np.float32) - mean) / std,
                                                  np.arange(len(pixels)) % 2)).batch(len(pixels)).repeat()
    copy = fine_tune_quantization_aware(model, CONFIG, TrainingConfig(quantization_aware_epochs=1, batch_size=6),
                                        tf.distribute.get_strategy(), batches, None, 2, str(tmp / "checkpoints"),
                                        str(tmp / "logs"))
    path = export.quantization_aware_dir(str(tmp / "Format-Serving"))
    export.export_images_model(copy, transform, LABELS, SPEC, path)
    return path


def test_the_quantization_aware_int8_file_is_measured_beside_the_post_training_one_and_the_better_kept(
        exported, quantization_aware, tmp_path, monkeypatch):  # noqa: F811
    export_dir, pixels = exported
    _write_examples(str(tmp_path / "examples"), pixels)
    int8_files = _recording_converter(monkeypatch)
    quality = variants_with_quality(export_dir, str(tmp_path / "examples"), str(tmp_path), 1.0, 0.0,
                                    variants=("float32", "int8"), quantization_aware_dir=quantization_aware)
    assert set(int8_files) == {"per-tensor", QUANTIZATION_AWARE}  # both may be pushed: no per-channel fallback
    assert int8_files["per-tensor"] != int8_files[QUANTIZATION_AWARE]
    int8 = quality["variants"]["int8"]
    (other,) = int8["other_attempts"]
    assert {int8["weight_quantization"], other["weight_quantization"]} == {"per-tensor", QUANTIZATION_AWARE}
    for measured in (int8, other):
        assert {"accuracy", "agreement", "size_bytes", "latency_ms_per_image", "size_vs_float32", "push"} <= set(measured)
    assert _best([int8, other]) == 0
    with open(tmp_path / "int8.tflite", "rb") as f:
        assert f.read() == int8_files[int8["weight_quantization"]]


@pytest.mark.parametrize("attempts, kept", [
    # may be pushed beats a better agreement that may not
    ([{"push": False, "agreement": 1.0, "accuracy": 0.9, "size_bytes": 1},
      {"push": True, "agreement": 0.99, "accuracy": 0.9, "size_bytes": 2}], 1),
    # among those that may: the better agreement, then accuracy, then the smaller file
    ([{"push": True, "agreement": 0.99, "accuracy": 0.9, "size_bytes": 1},
      {"push": True, "agreement": 0.995, "accuracy": 0.8, "size_bytes": 2}], 1),
    ([{"push": True, "agreement": 0.99, "accuracy": 0.91, "size_bytes": 2},
      {"push": True, "agreement": 0.99, "accuracy": 0.9, "size_bytes": 1}], 0),
    ([{"push": True, "agreement": 0.99, "accuracy": 0.9, "size_bytes": 2},
      {"push": True, "agreement": 0.99, "accuracy": 0.9, "size_bytes": 1}], 1),
    # none may: the better agreement all the same
    ([{"push": False, "agreement": 0.5, "accuracy": 0.9, "size_bytes": 1},
      {"push": False, "agreement": 0.7, "accuracy": 0.9, "size_bytes": 2}], 1),
])
def test_the_int8_file_kept_may_be_pushed_and_agrees_best(attempts, kept):
    assert _best(attempts) == kept
