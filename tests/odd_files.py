"""Files of every kind a real image folder holds, made by the tests (the network is closed).

make_messy_folder() builds a class-per-folder tree that mixes good images with each odd or bad
kind, and returns what the pipeline must do with every file: ingest, reject or ignore it.
"""
import io
import os
import struct
import zlib
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

from tests.helpers import COLOURS, make_class_folder


def _pixels(colour, size=(24, 32), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour)[None, None, :] + rng.normal(0, 20, size + (3,)), 0, 255).astype(np.uint8)


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def cmyk_jpeg(colour) -> bytes:
    return encode(Image.fromarray(_pixels(colour)).convert("CMYK"), "JPEG")


def png_16bit_gray(colour) -> bytes:
    gray = _pixels(colour).mean(axis=2).astype(np.uint16) * 257
    return encode(Image.fromarray(gray), "PNG")  # mode I;16


def rgba_png(colour) -> bytes:
    return encode(Image.fromarray(_pixels(colour)).convert("RGBA"), "PNG")


def palette_png(colour) -> bytes:
    return encode(Image.fromarray(_pixels(colour)).convert("P"), "PNG")


def grayscale_jpeg(colour) -> bytes:
    return encode(Image.fromarray(_pixels(colour)).convert("L"), "JPEG")


def bmp(colour) -> bytes:
    return encode(Image.fromarray(_pixels(colour)), "BMP")


def animated_gif(colour) -> bytes:
    frames = [Image.fromarray(_pixels(colour, seed=s)).convert("P") for s in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def exif_rotated_jpeg(pixels: np.ndarray, orientation: int = 6, mode: str = "RGB") -> bytes:
    """A JPEG stored sideways whose EXIF says how to turn it upright (6: rotate 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(pixels).convert(mode), "JPEG", exif=exif.tobytes(), quality=95)


def heic_like() -> bytes:
    """The first bytes of an iPhone HEIC photo (an ISO media file of brand 'heic')."""
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


def tiff(colour) -> bytes:
    return encode(Image.fromarray(_pixels(colour)), "TIFF")


def truncated_jpeg(colour) -> bytes:
    data = encode(Image.fromarray(_pixels(colour, size=(64, 64))), "JPEG")
    return data[: len(data) // 2]


def truncated_png(colour) -> bytes:
    data = encode(Image.fromarray(_pixels(colour, size=(64, 64))), "PNG")
    return data[: len(data) // 2]


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 1 KB PNG whose header claims width x height pixels (decoding would need ~30 GB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def large_scan(size: Tuple[int, int] = (6000, 6000)) -> bytes:
    """A real 6000x6000 image (36 Mpx), cheap to store because it is flat."""
    return encode(Image.new("L", size, 200), "PNG")


INGESTED, REJECTED, IGNORED = "ingested", "rejected", "ignored"


def make_messy_folder(root: str, per_class: int = 8, seed: int = 0) -> Dict[str, Tuple[str, str]]:
    """Good images of 3 colour classes plus one file of each odd kind (add_odd_files)."""
    make_class_folder(root, per_class=per_class, seed=seed)
    return add_odd_files(root)


def add_odd_files(root: str, classes: Sequence[str] = ("red", "green", "blue"), prefix: str = ""
                  ) -> Dict[str, Tuple[str, str]]:
    """One file of each odd or bad kind, in three existing class folders of root/prefix (named for
    the colours the images take: red, green, blue), plus an empty class folder and a stray file.

    Returns {path relative to root: (ingested|rejected|ignored, words of the reason)} for each.
    """
    red, green, blue = COLOURS["red"], COLOURS["green"], COLOURS["blue"]
    folder = dict(zip(("red", "green", "blue"), classes))
    expected = {}

    def put(relative: str, data: bytes, outcome: str, reason: str = "") -> None:
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        expected[relative] = (outcome, reason)

    put(f"{prefix}{folder['red']}/cmyk.jpg", cmyk_jpeg(red), INGESTED)
    put(f"{prefix}{folder['red']}/gray16.png", png_16bit_gray(red), INGESTED)
    put(f"{prefix}{folder['red']}/rgba.png", rgba_png(red), INGESTED)
    put(f"{prefix}{folder['green']}/palette.png", palette_png(green), INGESTED)
    put(f"{prefix}{folder['green']}/gray.jpeg", grayscale_jpeg(green), INGESTED)
    put(f"{prefix}{folder['green']}/screenshot.bmp", bmp(green), INGESTED)
    put(f"{prefix}{folder['blue']}/animation.gif", animated_gif(blue), INGESTED)
    put(f"{prefix}{folder['blue']}/phone.JPG", exif_rotated_jpeg(_pixels(blue, size=(30, 40))), INGESTED, "EXIF orientation 6")
    put(f"{prefix}{folder['red']}/phone_cmyk.jpg", exif_rotated_jpeg(_pixels(red, size=(30, 40)), mode="CMYK"), INGESTED, "EXIF")
    put(f"{prefix}{folder['blue']}/nested/deeper/inner.png", encode(Image.fromarray(_pixels(blue)), "PNG"), INGESTED)
    put(f"{prefix}{folder['red']}/png_named.jpg", encode(Image.fromarray(_pixels(red)), "PNG"), INGESTED)

    put(f"{prefix}{folder['red']}/notes.txt", b"shopping list\n", REJECTED, "not an image")
    put(f"{prefix}{folder['green']}/fake.jpg", b"<html>not a picture</html>", REJECTED, "not an image")
    put(f"{prefix}{folder['green']}/zero.png", b"", REJECTED, "empty file (0 bytes)")
    put(f"{prefix}{folder['blue']}/truncated.jpg", truncated_jpeg(blue), REJECTED, "cannot decode JPEG")
    put(f"{prefix}{folder['red']}/truncated.png", truncated_png(red), REJECTED, "cannot decode PNG")
    put(f"{prefix}{folder['red']}/scan.tiff", tiff(red), REJECTED, "unsupported image format TIFF")
    put(f"{prefix}{folder['green']}/bomb.png", png_bomb(), REJECTED, "Mpx limit")
    put(f"{prefix}{folder['blue']}/scan_6000.png", large_scan(), REJECTED, "image 6000x6000 of 36.0 Mpx")
    put(f"{prefix}{folder['green']}/IMG_0001.HEIC", heic_like(), REJECTED, "unsupported image format HEIC")
    put(f"{prefix}stray.jpg", encode(Image.fromarray(_pixels(red)), "JPEG"), REJECTED, "outside any class folder")

    put(f"{prefix}.DS_Store", b"\x00\x00\x00\x01Bud1", IGNORED, "hidden name")
    put(f"{prefix}{folder['red']}/.DS_Store", b"\x00\x00\x00\x01Bud1", IGNORED, "hidden name")
    put(f"{prefix}{folder['green']}/._palette.png", b"\x00\x05\x16\x07", IGNORED, "hidden name")
    put(f"{prefix}{folder['blue']}/Thumbs.db", b"\xd0\xcf\x11\xe0", IGNORED, "operating-system metadata")
    here = os.path.join(root, prefix)
    red_dir, green_dir, blue_dir = (f"{prefix}{folder[c]}" for c in ("red", "green", "blue"))
    os.makedirs(os.path.join(here, "purple"))  # an accidentally empty class
    expected[f"{prefix}purple"] = (IGNORED, "folder without files")

    first_red = sorted(f for f in os.listdir(os.path.join(root, red_dir)) if f.endswith(".png"))[0]
    os.symlink(os.path.join(root, red_dir, first_red), os.path.join(root, red_dir, "link_inside.png"))
    # a second path to a file read anyway: one file is one example, in one split
    expected[f"{red_dir}/link_inside.png"] = (IGNORED, f"the same file as {red_dir}/{first_red} (reached through a symlink)")
    outside = os.path.join(os.path.dirname(root.rstrip("/")), "outside.png")
    with open(outside, "wb") as f:
        f.write(encode(Image.fromarray(_pixels(green)), "PNG"))
    os.symlink(outside, os.path.join(root, green_dir, "link_outside.png"))
    expected[f"{green_dir}/link_outside.png"] = (REJECTED, "outside the data root")
    os.symlink(os.path.join(root, "nowhere.png"), os.path.join(root, blue_dir, "link_broken.png"))
    expected[f"{blue_dir}/link_broken.png"] = (REJECTED, "broken symlink")
    os.mkfifo(os.path.join(root, red_dir, "pipe.png"))  # reading it would block forever
    expected[f"{red_dir}/pipe.png"] = (REJECTED, "not a regular file")
    os.symlink(os.path.join(root, blue_dir), os.path.join(root, blue_dir, "nested", "loop"))
    expected[f"{blue_dir}/nested/loop"] = (IGNORED, "already read")
    return expected
