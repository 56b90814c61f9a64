"""check_image on each kind of file a real folder holds: what is stored, or why it is rejected."""
import numpy as np
import pytest
import tensorflow as tf

from components.image_example_gen.image_check import check_image
from models.preprocessing import ImageSpec, decode_image
from tests import odd_files

RED = (220, 40, 30)


@pytest.mark.parametrize("make", [odd_files.cmyk_jpeg, odd_files.png_16bit_gray, odd_files.rgba_png,
                                  odd_files.palette_png, odd_files.grayscale_jpeg, odd_files.bmp,
                                  odd_files.animated_gif])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_and_format_is_kept_as_is_and_decodes_to_the_configured_channels(make, channels):
    data = make(RED)
    stored, reason, note = check_image(data)
    assert (stored, reason, note) == (data, "", "")
    image = decode_image(tf.constant(stored), ImageSpec(height=16, width=16, channels=channels)).numpy()
    assert image.shape == (16, 16, channels)
    if channels == 3 and make is not odd_files.png_16bit_gray and make is not odd_files.grayscale_jpeg:
        assert image[..., 0].mean() > image[..., 2].mean() + 80, "red must stay red"
    assert 30 < image.mean() < 230


def test_exif_orientation_is_applied_and_the_image_stored_upright():
    sideways = np.zeros((30, 40, 3), np.uint8)
    sideways[:, :20] = 255  # left half white as stored; EXIF 6 turns it 90° clockwise: top half white
    stored, reason, note = check_image(odd_files.exif_rotated_jpeg(sideways, orientation=6))
    assert reason == "" and "EXIF orientation 6 applied" in note
    upright = tf.io.decode_image(stored).numpy()
    assert upright.shape == (40, 30, 3)
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file (0 bytes)"),
    (b"just some text\n", "not an image"),
    (odd_files.truncated_jpeg(RED), "cannot decode JPEG"),
    (odd_files.truncated_png(RED), "cannot decode PNG"),
    (odd_files.tiff(RED), "unsupported image format TIFF; supported: JPEG, PNG, BMP, GIF, WEBP"),
    (odd_files.heic_like(), "unsupported image format HEIC"),
])
def test_bad_files_are_rejected_with_the_reason(data, reason):
    stored, found, _ = check_image(data)
    assert stored == b"" and reason in found


def test_an_image_over_the_pixel_limit_is_rejected_from_its_header_without_decoding():
    bomb = odd_files.png_bomb(100_000, 100_000)  # would need 30 GB decoded
    assert len(bomb) < 2000
    stored, reason, _ = check_image(bomb)
    assert stored == b"" and reason.startswith("image of 10000.0 Mpx is over the 25 Mpx limit; not decoded")
    scan = odd_files.large_scan()
    assert check_image(scan)[1].startswith("image 6000x6000 of 36.0 Mpx is over the 25 Mpx limit")
    assert check_image(scan, max_pixels=40_000_000)[:2] == (scan, "")
