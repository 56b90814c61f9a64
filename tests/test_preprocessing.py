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
