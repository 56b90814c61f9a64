"""TFLite variants converted from the exported model, run as a client runs them, and measured."""
import numpy as np
import pytest
import tensorflow as tf

from models import lite
from tests.test_export import SPEC, exported  # noqa: F401  (the module-scoped fixture)


def test_the_float32_variant_gives_the_savedmodels_probabilities(exported):  # noqa: F811
    export_dir, pixels = exported
    assert lite.image_shape(export_dir) == SPEC.shape
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
        measured = lite.measure(model, images, reference, reference)
        assert set(measured) == {"size_bytes", "accuracy", "agreement", "latency_ms_per_image"}
        assert measured["accuracy"] == measured["agreement"] and measured["latency_ms_per_image"] > 0
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
