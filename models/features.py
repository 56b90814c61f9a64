"""Feature keys shared by ExampleGen, Transform, the Trainer and serving: one source of truth."""
import json
import os
from typing import Any, Dict

import tensorflow as tf

IMAGE_KEY = "image_raw"        # encoded image file contents (bytes)
LABEL_KEY = "label"            # int64 class id, index into the labels file
CLASS_NAME_KEY = "class_name"  # class folder name (bytes)
FILENAME_KEY = "filename"      # path relative to the data root (bytes)

LABELS_FILENAME = "labels.txt"  # one class name per line, line i is class id i
INGEST_REPORT_FILENAME = "ingest_report.json"


def transformed_name(key: str) -> str:
    return f"{key}_xf"


IMAGE_XF_KEY = transformed_name(IMAGE_KEY)


def read_ingest_report(examples_uri: str) -> Dict[str, Any]:
    """ExampleGen's account of the data (counts, rejected files, data fingerprint) beside its examples."""
    with tf.io.gfile.GFile(os.path.join(examples_uri, INGEST_REPORT_FILENAME)) as f:
        return json.load(f)
