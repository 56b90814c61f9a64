"""Checks one image file before it becomes an example: what is stored, or why it is rejected.

The header is read first (format, size, EXIF orientation), so an image over the pixel limit is
rejected without being decoded. Then the bytes must decode with TensorFlow's decoder, the one
Transform and the serving signature use, so whatever is ingested also decodes at serving time.
The original bytes are kept, except that a photo with an EXIF rotation is stored upright (as PNG),
because TensorFlow's decoder ignores EXIF.
"""
import io
import re
import warnings
from typing import Tuple

import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")  # what tf.io.decode_image reads
EXIF_ORIENTATION_TAG = 0x0112
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000


def _decoder_message(error: Exception) -> str:
    """The decoder's own words, without TensorFlow's function-node and op decorations."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", message.splitlines()[0])
    return message.strip()


def _as_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _over_limit(pixels: int, max_pixels: int, size: str = "") -> str:
    return (f"image{size} of {pixels / 1e6:.1f} Mpx is over the {max_pixels / 1e6:g} Mpx limit; not decoded "
            f"(raise --max-image-pixels to accept it)")


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Tuple[bytes, str, str]:
    """(bytes to store, rejection reason, note). A rejected file has a reason and no bytes;
    the note says what was changed ('' when the original bytes are stored)."""
    if not data:
        return b"", "empty file (0 bytes)", ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own bomb warning: our limit below is stricter
            image = Image.open(io.BytesIO(data))  # parses the header only
    except UnidentifiedImageError:
        return b"", "not an image (no JPEG, PNG, BMP, GIF or WebP header)", ""
    except Image.DecompressionBombError as error:  # over PIL's own limit, far above ours
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        return b"", _over_limit(int(pixels.group(1)) if pixels else 0, max_pixels), ""
    except Exception as error:  # pylint: disable=broad-except  (any header the parser chokes on)
        return b"", f"unreadable image header: {_decoder_message(error)}", ""
    with image:
        if image.format not in SUPPORTED_FORMATS:
            return b"", f"unsupported image format {image.format}; supported: {', '.join(SUPPORTED_FORMATS)}", ""
        width, height = image.size
        if width * height > max_pixels:
            return b"", _over_limit(width * height, max_pixels, f" {width}x{height}"), ""
        image_format, note = image.format, ""
        try:
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
            if orientation not in (1, None):
                data = _as_png(ImageOps.exif_transpose(image))
                note = f"EXIF orientation {orientation} applied, stored as PNG"
        except Exception as error:  # pylint: disable=broad-except  (truncated data behind the header)
            return b"", f"cannot decode {image.format}: {_decoder_message(error)}", ""
    try:
        tf.io.decode_image(data, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        return b"", f"cannot decode {image_format}: {_decoder_message(error)}", ""
    return data, "", note
