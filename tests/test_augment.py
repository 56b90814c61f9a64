import numpy as np
import pytest

from models.augment import RandomShiftRotate, augmenter


def _square(size=21):
    image = np.zeros((1, size, size, 1), np.float32)
    image[0, 8:13, 8:13, 0] = 1.0  # a 5x5 square in the middle
    return image


def test_inactive_at_inference_and_identity_with_zero_ranges():
    images = np.random.default_rng(0).normal(size=(4, 12, 10, 3)).astype(np.float32)
    np.testing.assert_array_equal(augmenter(flip=False)(images, training=False), images)
    np.testing.assert_allclose(RandomShiftRotate(0.0, 0.0, seed=1)(images, training=True), images, atol=1e-5)


def test_shift_moves_the_content_and_rotation_keeps_the_centre():
    shifted = RandomShiftRotate(max_shift=0.2, max_degrees=0.0, seed=3)(_square(), training=True).numpy()[0, ..., 0]
    rows, cols = np.nonzero(shifted > 0.5)
    assert shifted.sum() == pytest.approx(25, abs=3), "a shift moves the square without changing it"
    assert (rows.mean(), cols.mean()) != (10.0, 10.0)
    rotated = RandomShiftRotate(max_shift=0.0, max_degrees=45.0, seed=3)(_square(), training=True).numpy()[0, ..., 0]
    rows, cols = np.nonzero(rotated > 0.5)
    assert (rows.mean(), cols.mean()) == pytest.approx((10.0, 10.0), abs=0.3)
    assert not np.allclose(rotated, _square()[0, ..., 0], atol=0.1)


def test_each_image_of_a_batch_gets_its_own_transform():
    batch = np.repeat(_square(), 8, axis=0)
    out = RandomShiftRotate(seed=5)(batch, training=True).numpy()
    assert len({out[i].tobytes() for i in range(8)}) == 8
