"""preprocessing_fn through real tf.Transform on Beam, on synthetic images of mixed sizes."""
import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from PIL import Image
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import features, preprocessing
from models.preprocessing import ImageSpec


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _raw_metadata():
    return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec({
        features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
        features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)}))


def test_preprocessing_fn_decodes_resizes_and_normalizes_with_training_statistics(tmp_path):
    rng = np.random.default_rng(0)
    spec = ImageSpec(height=16, width=12, channels=3)
    sizes = [(20, 30), (64, 48), (9, 9), (33, 17)]
    images = [rng.integers(0, 256, size + (3,), dtype=np.uint8) for size in sizes]
    images.append(rng.integers(0, 256, (25, 25), dtype=np.uint8))  # grayscale -> 3 channels
    raw = [{features.IMAGE_KEY: [_encoded(img, fmt)], features.LABEL_KEY: [i % 2]}
           for i, (img, fmt) in enumerate(zip(images, ["PNG", "JPEG", "PNG", "BMP", "PNG"]))]

    def fn(inputs):
        return preprocessing.preprocessing_fn(inputs, {"image": spec.to_config()})

    with tft_beam.Context(temp_dir=str(tmp_path), force_tf_compat_v1=False):
        (transformed, _), _ = ((raw, _raw_metadata()) | tft_beam.AnalyzeAndTransformDataset(fn))
    assert len(transformed) == 5
    stacked = np.stack([t[features.IMAGE_XF_KEY] for t in transformed])
    assert stacked.shape == (5, 16, 12, 3)
    assert abs(stacked.mean()) < 1e-3 and stacked.std() == pytest.approx(1.0, abs=1e-3)
    assert [int(t[features.LABEL_KEY]) for t in transformed] == [0, 1, 0, 1, 0]


def test_decode_image_converts_channels_and_keeps_pixel_range():
    rgb = np.full((10, 6, 3), (200, 100, 0), np.uint8)
    gray = preprocessing.decode_image(tf.constant(_encoded(rgb, "PNG")), ImageSpec(8, 8, 1))
    assert gray.shape == (8, 8, 1)
    assert 0 < float(tf.reduce_min(gray)) <= float(tf.reduce_max(gray)) < 255


@pytest.mark.parametrize("kwargs, message", [({"height": 4}, "height"), ({"channels": 2}, "channels"),
                                             ({"width": "28"}, "width")])
def test_image_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageSpec(**kwargs)


def _client_from_contract(image_bytes: bytes, contract) -> np.ndarray:
    """A TFLite client written from quality.json's client_preprocessing alone (RGB photos)."""
    image = tf.cast(tf.io.decode_image(image_bytes, channels=0, expand_animations=False), tf.float32)[..., :3]
    resize = contract["resize"]
    image = tf.image.resize(image, resize["size"], method=resize["method"], antialias=resize["antialias"])
    return tf.clip_by_value(image, 0.0, 255.0).numpy()


def test_a_client_following_the_recorded_preprocessing_feeds_the_model_exactly_what_training_saw():
    """quality.json records how images become the TFLite input; a client that follows it matches the
    model's own decoding to the bit, and one that resizes with tf.image.resize's defaults does not."""
    rng = np.random.default_rng(0)
    spec = ImageSpec(height=32, width=32, channels=3)
    contract = preprocessing.client_preprocessing(spec)
    assert contract["resize"]["size"] == [32, 32] and contract["channels"] == 3
    photo = _encoded(rng.integers(0, 256, (96, 80, 4), dtype=np.uint8), "PNG")  # RGBA, downscaled
    model_input = preprocessing.decode_image(tf.constant(photo), spec).numpy()
    np.testing.assert_array_equal(_client_from_contract(photo, contract), model_input)
    defaults = tf.image.resize(tf.cast(tf.io.decode_png(photo, channels=3), tf.float32), [32, 32]).numpy()
    assert np.abs(defaults - model_input).max() > 10


def test_the_whitening_filters_the_transform_step_computes_whiten_the_training_patches(tmp_path):
    """Images whose neighbouring pixels and channels are strongly correlated (smooth colour fields):
    through real tf.Transform, the dense network's filters, set into its frozen first layer, make the
    training patches' covariance the identity (up to the epsilon that keeps tiny directions finite)."""
    from models import dense
    from models.model import ModelConfig, build_classifier
    rng = np.random.default_rng(1)
    spec = ImageSpec(height=8, width=8, channels=3)
    base = rng.normal(0, 1, (40, 4, 4, 3)) @ np.array([[1.0, 0.8, 0.6], [0.0, 0.5, 0.3], [0.0, 0.0, 0.2]])
    smooth = np.kron(base, np.ones((1, 2, 2, 1))) + rng.normal(0, 0.3, (40, 8, 8, 3))
    pixels = np.clip(128 + 40 * smooth, 0, 255).astype(np.uint8)
    raw = [{features.IMAGE_KEY: [_encoded(p, "PNG")], features.LABEL_KEY: [0]} for p in pixels]

    def fn(inputs):
        return preprocessing.preprocessing_fn(inputs, {"image": spec.to_config(), "whitening_patch": 2})

    with tft_beam.Context(temp_dir=str(tmp_path), force_tf_compat_v1=False):
        (transformed, _), _ = ((raw, _raw_metadata()) | tft_beam.AnalyzeAndTransformDataset(fn))
    filters = np.asarray(transformed[0][features.WHITENING_XF_KEY]).reshape(12, 12)
    assert all(np.array_equal(t[features.WHITENING_XF_KEY], transformed[0][features.WHITENING_XF_KEY])
               for t in transformed), "an analyzer's result: the same for every example"
    images = np.stack([t[features.IMAGE_XF_KEY] for t in transformed]).astype(np.float32)
    model = build_classifier(ModelConfig(architecture="dense", input_shape=spec.shape, num_classes=2,
                                         group_filters=(4,)))
    dense.set_whitening(model, filters)
    conv = model.get_layer("whitening_conv")
    whitened = conv(images).numpy().reshape(-1, 24)[:, :12]  # the filters, without their negatives
    covariance = np.cov(whitened, rowvar=False)
    assert np.allclose(covariance, np.eye(12), atol=0.05), np.round(covariance, 2)
    raw_patches = tf.image.extract_patches(images, [1, 2, 2, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID").numpy()
    assert np.abs(np.corrcoef(raw_patches.reshape(-1, 12), rowvar=False) - np.eye(12)).max() > 0.5  # it had work
