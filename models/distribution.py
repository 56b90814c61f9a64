"""Which tf.distribute strategy the Trainer builds and compiles the model under, and who exports.

- several workers named in TF_CONFIG (a Kubeflow TFJob or a Vertex custom job sets it):
  MultiWorkerMirroredStrategy over every worker's devices; only the chief writes the model;
- else several GPUs (or several logical CPU devices, as tests configure): MirroredStrategy;
- else the default strategy: mirroring one CPU device only adds per-step overhead.
"""
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict

import tensorflow as tf


def tf_config() -> Dict[str, Any]:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def worker_count(config: Dict[str, Any]) -> int:
    cluster = config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def is_chief(config: Dict[str, Any]) -> bool:
    """The chief task, or worker 0 when the cluster has no chief, or the only process."""
    if worker_count(config) <= 1:
        return True
    task = config.get("task", {})
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and not config["cluster"].get("chief")


def training_strategy() -> tf.distribute.Strategy:
    """Call it before any other TensorFlow op: a multi-worker strategy configures collectives at start."""
    if worker_count(tf_config()) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def save_on_chief(save: Callable[[str], None], path: str) -> bool:
    """Every worker must take part in saving (variables may need collective reads), but only the chief's
    copy is kept at path; the others write to a temporary folder that is removed. True on the chief."""
    if is_chief(tf_config()):
        save(path)
        return True
    scratch = tempfile.mkdtemp(prefix="non-chief-export-")
    try:
        save(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return False
