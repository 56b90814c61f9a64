"""Feature keys shared by ExampleGen, Transform, the Trainer and serving: one source of truth."""
import os
from typing import Any, Dict

from models import files


IMAGE_KEY = "image_raw"        # encoded image file contents (bytes)
LABEL_KEY = "label"            # int64 class id, index into the labels file
CLASS_NAME_KEY = "class_name"  # class folder name (bytes)
FILENAME_KEY = "filename"      # path relative to the data root (bytes)

LABELS_FILENAME = "labels.txt"  # one class name per line, line i is class id i
INGEST_REPORT_FILENAME = "ingest_report.json"


def transformed_name(key: str) -> str:
    return f"{key}_xf"


IMAGE_XF_KEY = transformed_name(IMAGE_KEY)
# The dense network's whitening filters, when the Transform step computes them: the same for every
# example (an analyzer's result), read once by the Trainer (export.whitening_filters).
WHITENING_XF_KEY = "whitening_xf"


def read_ingest_report(examples_uri: str) -> Dict[str, Any]:
    """ExampleGen's account of the data (counts, rejected files, data fingerprint) beside its examples."""
    return files.read_json(os.path.join(examples_uri, INGEST_REPORT_FILENAME))


SPLIT_PREFIX = "Split-"


def split_dir(artifact_uri: str, split: str) -> str:
    """The folder of one split of an artifact with splits (examples, statistics, anomalies), by TFX's
    rule (artifact_utils.get_split_uri), for the URIs passed around without their artifacts; a test
    pins it against TFX's. split "*" makes a glob of every split's folder."""
    return os.path.join(artifact_uri, f"{SPLIT_PREFIX}{split}")


def split_of(folder: str) -> str:
    """The split whose folder this is (split_dir's inverse)."""
    return os.path.basename(folder.rstrip("/"))[len(SPLIT_PREFIX):]
