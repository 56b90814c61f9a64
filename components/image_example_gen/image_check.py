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
from typing import List, Sequence, Set, Tuple

import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

from models.settings import DEFAULT_MAX_IMAGE_PIXELS

SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")  # what tf.io.decode_image reads
EXIF_ORIENTATION_TAG = 0x0112


def _decoder_message(error: Exception) -> str:
    """The decoder's own words, without TensorFlow's function-node and op decorations."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", message.splitlines()[0])
    return message.strip()


def _as_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):  # e.g. CMYK: PNG cannot hold it
        image = image.convert("RGB")
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _container_brand(data: bytes) -> str:
    """'HEIC' or 'AVIF' for phone formats PIL cannot open without plugins, else ''."""
    brand = data[8:12] if data[4:8] == b"ftyp" else b""
    if brand in (b"heic", b"heix", b"hevc", b"mif1", b"msf1"):
        return "HEIC"
    return "AVIF" if brand in (b"avif", b"avis") else ""


def _over_limit(pixels: int, max_pixels: int, size: str = "") -> str:
    return (f"image{size} of {pixels / 1e6:.1f} Mpx is over the {max_pixels / 1e6:g} Mpx limit; not decoded "
            f"(raise --max-image-pixels to accept it)")


def check_header(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Tuple[bytes, str, str, str]:
    """(bytes to decode, rejection reason, note, format) from the header alone; an EXIF-rotated
    photo is decoded by PIL and returned upright as PNG."""
    if not data:
        return b"", "empty file (0 bytes)", "", ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own bomb warning: our limit below is stricter
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)  # parses the header only
    except UnidentifiedImageError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                other = Image.open(io.BytesIO(data)).format
            except Exception:  # pylint: disable=broad-except
                other = None
        other = other or _container_brand(data)
        if other:
            return b"", f"unsupported image format {other}; supported: {', '.join(SUPPORTED_FORMATS)}", "", ""
        return b"", "not an image (no JPEG, PNG, BMP, GIF or WebP header)", "", ""
    except Image.DecompressionBombError as error:  # over PIL's own limit, far above ours
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        return b"", _over_limit(int(pixels.group(1)) if pixels else 0, max_pixels), "", ""
    except Exception as error:  # pylint: disable=broad-except  (any header the parser chokes on)
        return b"", f"unreadable image header: {_decoder_message(error)}", "", ""
    with image:
        width, height = image.size
        if width * height > max_pixels:
            return b"", _over_limit(width * height, max_pixels, f" {width}x{height}"), "", image.format
        try:  # EXIF sits in a JPEG's or WebP's header; a PNG's is read only if already parsed
            has_exif = image.format in ("JPEG", "WEBP") or "exif" in image.info
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1) if has_exif else 1
            if orientation not in (1, None):
                upright = _as_png(ImageOps.exif_transpose(image))
                return upright, "", f"EXIF orientation {orientation} applied, stored as PNG", image.format
        except Exception as error:  # pylint: disable=broad-except  (truncated data behind the header)
            return b"", f"cannot decode {image.format}: {_decoder_message(error)}", "", image.format
        return data, "", "", image.format


def _decode_error(data: bytes) -> str:
    try:
        tf.raw_ops.DecodeImage(contents=data, channels=0, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        return _decoder_message(error)
    return ""


def _decodable(images: Sequence[bytes]) -> Set[int]:
    """Indices of the images TensorFlow's decoder reads, decoded in parallel (C++, all cores)."""
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(list(images), tf.string)).enumerate()
    dataset = (dataset
               .map(lambda i, data: (i, tf.shape(tf.raw_ops.DecodeImage(contents=data, channels=0,
                                                                        expand_animations=False))),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors()
               .map(lambda i, _: i)
               .batch(len(images)))  # one step returns every decodable index
    for indices in dataset:
        return set(indices.numpy().tolist())
    return set()


def check_images(files: Sequence[bytes], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> List[Tuple[bytes, str, str]]:
    """check_image for many files at once: headers one by one, then one parallel decode."""
    headers = [check_header(data, max_pixels) for data in files]
    candidates = [i for i, header in enumerate(headers) if not header[1]]
    decoded = _decodable([headers[i][0] for i in candidates]) if candidates else set()
    decodable = {candidates[k] for k in decoded}
    results = []
    for i, (data, reason, note, image_format) in enumerate(headers):
        if not reason and i not in decodable:
            data, reason, note = b"", f"cannot decode {image_format}: {_decode_error(data)}", ""
        results.append((b"" if reason else data, reason, note))
    return results


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Tuple[bytes, str, str]:
    """(bytes to store, rejection reason, note). A rejected file has a reason and no bytes;
    the note says what was changed ('' when the original bytes are stored)."""
    return check_images([data], max_pixels)[0]
