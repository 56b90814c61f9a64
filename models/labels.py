"""The labels file: one class name per line, line i is class id i. Written once by ExampleGen."""
from typing import List, Sequence

import tensorflow as tf


def write_labels(path: str, label_names: Sequence[str]) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(f"{name}\n" for name in label_names))


def read_labels(path: str) -> List[str]:
    with tf.io.gfile.GFile(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]
