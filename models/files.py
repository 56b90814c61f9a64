"""Files other processes read: written whole or not at all, and JSON read back. The ground floor: every
layer above writes such files through here (run records, the champion pointer, the class-balance
baseline, the report, the schema, the Trainer's facts and throughput).

No TensorFlow at import: `python -m pipeline.promote list` reads the serving folder without it. Paths
with a scheme (gs://, …) go through TensorFlow's filesystems, imported when one is met.
"""
import json
import os
import uuid
from typing import Any


def _remote(path: str) -> bool:
    return "://" in path


def write_atomically(path: str, text: str) -> None:
    """path holds text, or what it held before: a reader never sees half of it. The text goes to a
    temporary file of its own beside path (two writers never share one; the folder is made if
    missing), is flushed to disk where the file is local, then renamed over path."""
    _make_parent(path)
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    if _remote(path):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        with tf.io.gfile.GFile(temporary, "w") as f:
            f.write(text)
        tf.io.gfile.rename(temporary, path, overwrite=True)
        return
    try:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_json(path: str, value: Any, **dump_options: Any) -> None:
    write_atomically(path, json.dumps(value, **dump_options))


def read_json(path: str) -> Any:
    """The JSON in path (a local path or a gs://, s3://... URI)."""
    if _remote(path):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    with open(path) as f:
        return json.load(f)


def read_json_if_exists(path: str, default: Any = None) -> Any:
    """The JSON in path, or default when there is no such file."""
    if _remote(path):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        exists = tf.io.gfile.exists(path)
    else:
        exists = os.path.exists(path)
    return read_json(path) if exists else default


def _make_parent(path: str) -> None:
    folder = os.path.dirname(path)
    if _remote(folder):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        tf.io.gfile.makedirs(folder)
    elif folder:
        os.makedirs(folder, exist_ok=True)
