"""LiteModels: the trained model's TFLite variants (models/lite.py), each measured on the eval
split against the SavedModel: top-1 agreement, accuracy, file size, single-thread latency per image.
A variant whose accuracy is more than max_accuracy_drop below the SavedModel's, or whose answers agree
with the SavedModel's on fewer than min_agreement of the images, is marked not to be pushed, with the
reason: accuracy alone can hide a variant that is wrong on different images. int8 weights are quantized per tensor, or per channel when per tensor is
too inaccurate to push. Writes <variant>.tflite, labels.txt and quality.json.
"""
import json
import os
from typing import Any, Dict, Tuple

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx

from components.artifacts import TFLiteModels, serving_model_path
from components.progress import key_figure
from models import features, lite
from models.labels import read_labels, write_labels
from models.preprocessing import ImageSpec, decode_images

QUALITY_FILENAME = "quality.json"
# Training images that calibrate the int8 variant, drawn uniformly from the whole split: ExampleGen
# writes class by class, so the first 200 are one or two classes (int8 agreement 0.988 vs 1.000).
REPRESENTATIVE_IMAGES = 1000


def split_records(examples_uri: str, split: str) -> tf.data.TFRecordDataset:
    """The serialized examples ExampleGen wrote for a split, in file order."""
    return tf.data.TFRecordDataset(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")),
                                   compression_type="GZIP")


def _parse_and_decode(records, spec: ImageSpec) -> Tuple[np.ndarray, np.ndarray]:
    """(float images [N, H, W, C] in 0..255, decoded as Transform does; labels [N]) of serialized examples."""
    feature_spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
                    features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    def parse_and_decode(serialized):  # in tf.data, as a graph: decoded eagerly, a batch took seconds
        parsed = tf.io.parse_example(serialized, feature_spec)
        return decode_images(parsed[features.IMAGE_KEY], spec), parsed[features.LABEL_KEY]

    images, labels = [], []
    for image_batch, label_batch in records.batch(256).map(parse_and_decode).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    return np.concatenate(images), np.concatenate(labels)


def read_split(examples_uri: str, split: str, spec: ImageSpec) -> Tuple[np.ndarray, np.ndarray]:
    """Every example of a split, decoded (see _parse_and_decode)."""
    return _parse_and_decode(split_records(examples_uri, split), spec)


def sample_split(examples_uri: str, split: str, spec: ImageSpec, count: int, seed: int = 0
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """A uniform sample of count examples of a split (all of them when it has fewer), decoded; the
    split is streamed once and only the sample is decoded (reservoir sampling)."""
    rng = np.random.default_rng(seed)
    reservoir = []
    for seen, record in enumerate(split_records(examples_uri, split).as_numpy_iterator()):
        if seen < count:
            reservoir.append(record)
        elif (slot := rng.integers(0, seen + 1)) < count:
            reservoir[slot] = record
    return _parse_and_decode(tf.data.Dataset.from_tensor_slices(reservoir), spec)


def push_decision(accuracy: float, saved_model_accuracy: float, max_accuracy_drop: float,
                  agreement: float = 1.0, min_agreement: float = 0.0) -> Dict[str, Any]:
    """{"push": True}, or {"push": False, "reason": …} for a variant too far below the SavedModel's
    accuracy, or agreeing with it too rarely."""
    reasons = []
    drop = round(saved_model_accuracy - accuracy, 9)  # 0.98 - 0.97 is 0.010000000000000009 in floats
    if drop > max_accuracy_drop:
        reasons.append(f"accuracy {accuracy:.4f} is {drop:.4f} below the SavedModel's "
                       f"{saved_model_accuracy:.4f} (allowed {max_accuracy_drop:.4f})")
    if round(agreement, 9) < min_agreement:
        reasons.append(f"agreement with the SavedModel {agreement:.4f} is below {min_agreement:.4f}")
    return {"push": True} if not reasons else {"push": False, "reason": "; ".join(reasons)}


def variants_with_quality(saved_model_dir: str, examples_uri: str, output_dir: str,
                          max_accuracy_drop: float, min_agreement: float = 0.0) -> Dict[str, Any]:
    # Kubeflow's launcher creates only the parent of an output artifact's folder (LocalDagRunner makes it)
    tf.io.gfile.makedirs(output_dir)
    saved_model = lite.load(saved_model_dir)  # once: every variant is converted from it
    spec = ImageSpec(*(int(d) for d in lite.image_shape(saved_model)))
    images, labels = read_split(examples_uri, "eval", spec)
    training_images, _ = sample_split(examples_uri, "train", spec, REPRESENTATIVE_IMAGES)
    serve_images = saved_model.signatures["serve_images"]
    reference = np.concatenate([serve_images(images=tf.constant(images[i:i + 256]))["class_id"].numpy()
                                for i in range(0, len(images), 256)])
    saved_model_accuracy = float(np.mean(reference == labels))
    quality: Dict[str, Any] = {"eval_images": len(images), "saved_model_accuracy": saved_model_accuracy,
                               "max_accuracy_drop": max_accuracy_drop, "min_agreement": min_agreement,
                               "variants": {}}
    for variant in lite.VARIANTS:
        # int8: the smallest weight quantization whose accuracy may be pushed; the others are recorded
        attempts = []
        for weight_quantization in lite.WEIGHT_QUANTIZATIONS if variant == "int8" else ("per-channel",):
            model = lite.convert(saved_model, variant, training_images, weight_quantization)
            measured = lite.measure(model, images, labels, reference)
            attempts.append({**measured, **push_decision(measured["accuracy"], saved_model_accuracy,
                                                         max_accuracy_drop, measured["agreement"], min_agreement)})
            if variant == "int8":
                attempts[-1]["weight_quantization"] = weight_quantization
            if attempts[-1]["push"]:
                break
        quality["variants"][variant] = {**attempts[-1], **({"earlier_attempts": attempts[:-1]} if len(attempts) > 1
                                                           else {})}
        with tf.io.gfile.GFile(os.path.join(output_dir, f"{variant}.tflite"), "wb") as f:
            f.write(model)
    float32_size = quality["variants"]["float32"]["size_bytes"]
    for measured in quality["variants"].values():
        measured["size_vs_float32"] = round(measured["size_bytes"] / float32_size, 3)
    return quality


def read_quality(lite_models_uri: str) -> Dict[str, Any]:
    with tf.io.gfile.GFile(os.path.join(lite_models_uri, QUALITY_FILENAME)) as f:
        return json.load(f)


@tfx.dsl.components.component
def LiteModels(model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
               examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
               lite_models: tfx.dsl.components.OutputArtifact[TFLiteModels],
               max_accuracy_drop: tfx.dsl.components.Parameter[float] = 0.01,
               min_agreement: tfx.dsl.components.Parameter[float] = 0.0) -> None:
    quality = variants_with_quality(serving_model_path(model.uri), examples.uri, lite_models.uri, max_accuracy_drop,
                                    min_agreement)
    write_labels(os.path.join(lite_models.uri, features.LABELS_FILENAME),
                 read_labels(os.path.join(examples.uri, features.LABELS_FILENAME)))
    with tf.io.gfile.GFile(os.path.join(lite_models.uri, QUALITY_FILENAME), "w") as f:
        json.dump(quality, f, indent=2)
    variants, int8 = quality["variants"], quality["variants"]["int8"]
    key_figure(f"{sum(v['push'] for v in variants.values())} of {len(variants)} variants may be pushed; int8 "
               f"{int8['size_vs_float32']}x float32, agreement {int8['agreement']:.3f}")
