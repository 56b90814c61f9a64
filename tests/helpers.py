"""Helpers the tests share: synthetic images, reading a rendered report, the small exported model,
and facts computed by hand that production code does not need (a network's parameter count, the
classes a compiled pipeline names, whether a serving folder is pinned). Fixtures are in conftest.py."""
import base64
import html.parser
import io
import os
from typing import Any, Dict, List, Sequence

import numpy as np
from PIL import Image

from models import promotion
from models.model import ModelConfig
from models.preprocessing import ImageSpec


# --- synthetic image folders (the network is closed: tests make their own data) -----------------

# Class -> the colour its images are made of (with noise); learnable in a few epochs.
COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 30)}


def write_image(path: str, colour: Sequence[int], size: Sequence[int], seed: int) -> str:
    """An RGB image of the given colour plus noise; the format follows the file extension."""
    rng = np.random.default_rng(seed)
    height, width = size
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (height, width, 3)), 0, 255)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def make_class_folder(root: str, per_class: int, seed: int = 0, colours: Dict = None) -> Dict[str, list]:
    """<root>/<class>/img_<i>.png|jpg in mixed sizes; returns {class: [paths]}."""
    files = {}
    for class_index, (name, colour) in enumerate(sorted((colours or COLOURS).items())):
        files[name] = []
        for i in range(per_class):
            size = (20 + (7 * i) % 41, 24 + (11 * i) % 37)
            ext = ".jpg" if i % 3 == 0 else ".png"
            files[name].append(write_image(os.path.join(root, name, f"img_{i:03d}{ext}"), colour, size,
                                           seed=seed * 100003 + class_index * 1009 + i))
    return files


# --- the run report's HTML ---------------------------------------------------------------------

SECTION_IDS = ("data", "validation", "training", "evaluation", "promotion", "tflite", "timings")


class _Parser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images, self._table, self._row, self._cell = {}, [], None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def parse_page(page: str) -> _Parser:
    parser = _Parser()
    parser.feed(page)
    return parser


def table_rows(page: str, table_id: str):
    """The body rows of the table with that id, as text cells (the header row left out)."""
    return parse_page(page).tables[table_id][1:]


def embedded_images(page: str):
    """{PNG file name: decoded bytes} of the page's images (each a data URI named by its title)."""
    return {img["title"]: base64.b64decode(img["src"].split(",", 1)[1]) for img in parse_page(page).images}


# --- the small model tests/test_export.py exports (conftest.exported) ------------------------------

SPEC = ImageSpec(height=12, width=10, channels=3)
LABELS = ["cat", "dog"]
CONFIG = ModelConfig(input_shape=SPEC.shape, num_classes=2, stage_filters=(8, 8), stage_strides=(1, 2))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --- facts computed by hand ---------------------------------------------------------------------

def _dense_parameter_count(config: ModelConfig) -> int:
    """The dense network: a bias-free whitening layer of 2 x patch^2 x channels filters; per group two 3x3
    convolutions without bias, each followed by BatchNormalization without scale (beta, moving mean and
    variance); a bias-free head."""
    channels = config.input_shape[-1]
    patch_values = config.whitening_patch ** 2 * channels
    total, channels = patch_values * 2 * patch_values, 2 * patch_values
    for filters in (config.scaled(f) for f in config.group_filters):
        total += 9 * channels * filters + 3 * filters + 9 * filters * filters + 3 * filters
        channels = filters
    return total + channels * config.num_classes


def expected_parameter_count(config: ModelConfig) -> int:
    """Parameter count computed by hand from the architecture (pinned by a test); the custom CNN's only."""
    if config.backbone != "none":
        raise ValueError("the parameter count of a Keras application is not computed by hand")
    if config.architecture == "dense":
        return _dense_parameter_count(config)
    batchnorm = 4  # gamma, beta, moving mean, moving variance per channel
    channels, stem = config.input_shape[-1], config.scaled(config.stem_filters)
    total = 9 * channels * stem + batchnorm * stem
    channels = stem
    for _, filters, stride, _ in config.blocks():
        if config.architecture == "classic":
            total += 9 * channels * filters + batchnorm * filters        # conv 3x3 + BN
            channels = filters
            continue
        total += 9 * channels + batchnorm * channels                 # depthwise + BN
        total += channels * filters + batchnorm * filters            # pointwise + BN
        if config.attention != "none":
            squeezed = max(1, int(filters * config.attention_ratio))
            total += filters * squeezed + squeezed + squeezed * filters + filters  # the (shared) MLP
            if config.attention == "cbam":
                total += 7 * 7 * 2 + 1                               # spatial gate
        if stride != 1 or channels != filters:
            total += channels * filters + batchnorm * filters        # projection + BN
        channels = filters
    return total + channels * config.num_classes + config.num_classes


def named_classes(pipeline_spec: Dict[str, Any]) -> List[str]:
    """Every class a step imports by name at run time: executors, and artifact types other than TFX's
    (whose schema title is the import path). The image must hold them all."""
    import yaml
    named = set()
    for executor in pipeline_spec["deploymentSpec"]["executors"].values():
        args = executor["container"].get("args", [])
        named.add(args[args.index("--executor_class_path") + 1])
    for component in pipeline_spec["components"].values():
        for side in ("inputDefinitions", "outputDefinitions"):
            for artifact in component.get(side, {}).get("artifacts", {}).values():
                title = yaml.safe_load(artifact["artifactType"]["instanceSchema"])["title"]
                if not title.startswith("tfx."):
                    named.add(title)
    return sorted(named)


def is_pinned(serving_dir: str) -> bool:
    return bool((promotion.champion(serving_dir) or {}).get("pinned"))
