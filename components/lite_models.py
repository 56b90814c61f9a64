"""LiteModels: the trained model's TFLite variants (models/lite.py), each measured on the eval
split against the SavedModel: top-1 agreement, accuracy, file size, single-thread latency per image.
A variant whose accuracy is more than max_accuracy_drop below the SavedModel's, or whose answers agree
with the SavedModel's on fewer than min_agreement of the images, is marked not to be pushed, with the
reason: accuracy alone can hide a variant that is wrong on different images. So is a file that
TensorFlow Lite's interpreter cannot run (XNNPACK, its default delegate, refuses some int8 scales), and
the other variants go on. int8 weights are quantized per tensor, or per channel when per tensor may
not be pushed; when the Trainer fine-tuned a quantization-aware copy (--quantization-aware), its int8
file is measured beside the post-training one, and the int8 file pushed is the one of them that may be
pushed and agrees best with the SavedModel.
Every candidate file is converted first, then the eval split streams past all of them once, a batch
at a time, so memory does not grow with the split. Writes <variant>.tflite, labels.txt and quality.json.
"""
import json
import os
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx

from components.artifacts import TFLiteModels, serving_model_path
from models.progress import key_figure
from models import export, features, lite
from models.labels import read_labels, write_labels
from models import files
from models.preprocessing import ImageSpec, client_preprocessing, decode_images
from models.settings import LiteBounds

QUALITY_FILENAME = "quality.json"


def split_records(examples_uri: str, split: str) -> tf.data.TFRecordDataset:
    """The serialized examples ExampleGen wrote for a split, in file order."""
    return tf.data.TFRecordDataset(tf.io.gfile.glob(os.path.join(features.split_dir(examples_uri, split), "*")),
                                   compression_type="GZIP")


def _parse_and_decode_batches(records, spec: ImageSpec, batch_size: int = 256
                              ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(float images [B, H, W, C] in 0..255, decoded as Transform does; labels [B]) of serialized
    examples, a batch at a time: memory is one batch, whatever the split's size."""
    feature_spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
                    features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    def parse_and_decode(serialized):  # in tf.data, as a graph: decoded eagerly, a batch took seconds
        parsed = tf.io.parse_example(serialized, feature_spec)
        return decode_images(parsed[features.IMAGE_KEY], spec), parsed[features.LABEL_KEY]
    yield from records.batch(batch_size).map(parse_and_decode).as_numpy_iterator()


def split_batches(examples_uri: str, split: str, spec: ImageSpec) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """A split's examples, decoded a batch at a time (see _parse_and_decode_batches)."""
    return _parse_and_decode_batches(split_records(examples_uri, split), spec)


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
    images, labels = zip(*_parse_and_decode_batches(tf.data.Dataset.from_tensor_slices(reservoir), spec))
    return np.concatenate(images), np.concatenate(labels)


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


class _Scores:
    """One TFLite model's top-1 hits against the labels and against the SavedModel, counted batch by
    batch as the eval split streams past; or why TensorFlow Lite's interpreter cannot run it."""

    def __init__(self, model: bytes):
        self.model, self.seen, self.correct, self.agreeing = model, 0, 0, 0
        self.error: Optional[str] = None
        # every core to score the eval split; the latency is a single thread's (measured)
        self.classifier = self._running(lambda: lite.LiteClassifier(model, num_threads=os.cpu_count() or 1))

    def _running(self, call):
        """call's result, or None with the interpreter's error kept (RuntimeError: e.g. XNNPACK, the
        default delegate, refuses an int8 scale it cannot represent, which clients would meet too)."""
        try:
            return call()
        except RuntimeError as error:
            self.error = f"TensorFlow Lite's interpreter cannot run it: {str(error).strip().rstrip('.')}"
            return None

    def add(self, images: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> None:
        predicted = None if self.error else self._running(lambda: self.classifier.top1(images))
        if predicted is None:
            return
        self.seen += len(labels)
        self.correct += int(np.sum(predicted == labels))
        self.agreeing += int(np.sum(predicted == reference))

    def measured(self, latency_images: np.ndarray) -> Dict[str, Any]:
        single_thread = None if self.error else self._running(lambda: lite.LiteClassifier(self.model))
        latency = None if self.error else self._running(lambda: single_thread.latency_ms(latency_images))
        if self.error:
            return {"size_bytes": len(self.model), "accuracy": None, "agreement": None,
                    "latency_ms_per_image": None, "runs": False, "reason": self.error}
        return {"size_bytes": len(self.model), "accuracy": self.correct / self.seen,
                "agreement": self.agreeing / self.seen,
                "latency_ms_per_image": round(latency, 4)}


QUANTIZATION_AWARE = "quantization-aware"  # an int8 file converted from the Trainer's quantization-aware copy


def _first_tries(variant: str, quantization_aware: bool) -> Tuple[str, ...]:
    """The quantizations a variant is measured with in the first pass: int8 per tensor (the smaller
    file), and the quantization-aware copy's int8 file when there is one."""
    if variant != "int8":
        return ("per-channel",)
    return ("per-tensor",) + ((QUANTIZATION_AWARE,) if quantization_aware else ())


def _candidate(sources: Dict[str, Any], training_images: np.ndarray, variant: str, quantization: str) -> _Scores:
    """sources: the loaded SavedModel ("saved_model") and quantization-aware copy (QUANTIZATION_AWARE)."""
    if quantization == QUANTIZATION_AWARE:
        return _Scores(lite.convert(sources[QUANTIZATION_AWARE], variant, training_images, "per-channel"))
    return _Scores(lite.convert(sources["saved_model"], variant, training_images, quantization))


def _candidates(sources: Dict[str, Any], training_images: np.ndarray, variants: Sequence[str]
                ) -> Dict[Tuple[str, str], _Scores]:
    """The files of the first pass (the per-channel int8 fallback is converted when needed)."""
    return {(variant, quantization): _candidate(sources, training_images, variant, quantization)
            for variant in variants for quantization in _first_tries(variant, QUANTIZATION_AWARE in sources)}


def _best(attempts: Sequence[Dict[str, Any]]) -> int:
    """The index of the attempt to keep: of those that may be pushed (else of all), the one that
    agrees best with the SavedModel, then the more accurate, then the smaller file."""
    pool = [i for i, attempt in enumerate(attempts) if attempt["push"]] or range(len(attempts))
    return max(pool, key=lambda i: (attempts[i].get("runs", True), attempts[i]["agreement"] or 0.0,
                                    attempts[i]["accuracy"] or 0.0, -attempts[i]["size_bytes"]))


def _stream_eval(saved_model, examples_uri: str, spec: ImageSpec, candidates: Dict[Tuple[str, str], _Scores]
                 ) -> Tuple[float, int, np.ndarray]:
    """One pass over the eval split, a batch at a time: every candidate scored against the labels and
    the SavedModel. Returns the SavedModel's accuracy, the number of images, and the images timed."""
    serve_images = saved_model.signatures["serve_images"]
    seen = correct = 0
    latency_images = []
    for images, labels in split_batches(examples_uri, "eval", spec):
        reference = serve_images(images=tf.constant(images))["class_id"].numpy()
        seen, correct = seen + len(labels), correct + int(np.sum(reference == labels))
        for scores in candidates.values():
            scores.add(images, labels, reference)
        if sum(map(len, latency_images)) < lite.LATENCY_IMAGES:
            latency_images.append(images[:lite.LATENCY_IMAGES])
    if not seen:
        raise ValueError("the eval split has no examples: nothing to measure the TFLite models on")
    return correct / seen, seen, np.concatenate(latency_images)[:lite.LATENCY_IMAGES]


def _measured(candidates: Dict[Tuple[str, str], _Scores], key: Tuple[str, str], latency_images: np.ndarray,
              saved_model_accuracy: float, max_accuracy_drop: float, min_agreement: float) -> Dict[str, Any]:
    measured = candidates[key].measured(latency_images)
    decision = ({"push": False} if measured.get("runs") is False else
                push_decision(measured["accuracy"], saved_model_accuracy, max_accuracy_drop, measured["agreement"],
                              min_agreement))
    return {**measured, **decision, **({"weight_quantization": key[1]} if key[0] == "int8" else {})}


def variants_with_quality(saved_model_dir: str, examples_uri: str, output_dir: str,
                          max_accuracy_drop: float, min_agreement: float = 0.0,
                          variants: Sequence[str] = lite.VARIANTS,
                          quantization_aware_dir: Optional[str] = None) -> Dict[str, Any]:
    """Converts each of variants (float32 among them), measures it on the whole eval split against
    the SavedModel, and writes <variant>.tflite into output_dir; returns the quality record. With
    quantization_aware_dir, the int8 file is also converted from that SavedModel and measured."""
    # Kubeflow's launcher creates only the parent of an output artifact's folder (LocalDagRunner makes it)
    tf.io.gfile.makedirs(output_dir)
    saved_model = lite.load(saved_model_dir)  # once: every variant is converted from it
    sources = {"saved_model": saved_model,
               **({QUANTIZATION_AWARE: lite.load(quantization_aware_dir)} if quantization_aware_dir else {})}
    spec = lite.image_spec(saved_model)
    # drawn uniformly from the whole split: ExampleGen writes class by class, so the first 200 are one or
    # two classes (int8 agreement 0.988 vs 1.000)
    training_images, _ = sample_split(examples_uri, "train", spec, lite.CALIBRATION_IMAGES)
    candidates = _candidates(sources, training_images, variants)
    saved_model_accuracy, eval_images, latency_images = _stream_eval(saved_model, examples_uri, spec, candidates)
    quality: Dict[str, Any] = {"eval_images": eval_images, "saved_model_accuracy": saved_model_accuracy,
                               "max_accuracy_drop": max_accuracy_drop, "min_agreement": min_agreement,
                               "client_preprocessing": client_preprocessing(spec), "variants": {}}
    measure = lambda key: _measured(candidates, key, latency_images, saved_model_accuracy, max_accuracy_drop,
                                    min_agreement)
    for variant in variants:
        keys = [(variant, quantization) for quantization in _first_tries(variant, QUANTIZATION_AWARE in sources)]
        attempts = [measure(key) for key in keys]
        if variant == "int8" and not any(attempt["push"] for attempt in attempts):
            # per channel: a larger file, converted and streamed past only when nothing else may be pushed
            keys.append((variant, "per-channel"))
            candidates[keys[-1]] = _candidate(sources, training_images, *keys[-1])
            _stream_eval(saved_model, examples_uri, spec, {keys[-1]: candidates[keys[-1]]})
            attempts.append(measure(keys[-1]))
        chosen = _best(attempts)
        others = attempts[:chosen] + attempts[chosen + 1:]
        quality["variants"][variant] = {**attempts[chosen], **({"other_attempts": others} if others else {})}
        with tf.io.gfile.GFile(os.path.join(output_dir, f"{variant}.tflite"), "wb") as f:
            f.write(candidates[keys[chosen]].model)
    float32_size = quality["variants"]["float32"]["size_bytes"]
    for variant in quality["variants"].values():
        for measured in [variant, *variant.get("other_attempts", ())]:
            measured["size_vs_float32"] = round(measured["size_bytes"] / float32_size, 3)
    return quality


def read_quality(lite_models_uri: str) -> Dict[str, Any]:
    return files.read_json(os.path.join(lite_models_uri, QUALITY_FILENAME))


@tfx.dsl.components.component
def LiteModels(model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
               examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
               lite_models: tfx.dsl.components.OutputArtifact[TFLiteModels],
               max_accuracy_drop: tfx.dsl.components.Parameter[float] = 0.01,
               min_agreement: tfx.dsl.components.Parameter[float] = 0.0,
               variants: tfx.dsl.components.Parameter[str] = "") -> None:
    """variants: the comma-separated TFLite variants to make ("": all); float32 is always made."""
    quantization_aware = export.quantization_aware_dir(serving_model_path(model.uri))
    quality = variants_with_quality(serving_model_path(model.uri), examples.uri, lite_models.uri, max_accuracy_drop,
                                    min_agreement, LiteBounds(variants=tuple(variants.split(",") if variants else ())).variants,
                                    quantization_aware if tf.io.gfile.exists(quantization_aware) else None)
    write_labels(os.path.join(lite_models.uri, features.LABELS_FILENAME),
                 read_labels(os.path.join(examples.uri, features.LABELS_FILENAME)))
    with tf.io.gfile.GFile(os.path.join(lite_models.uri, QUALITY_FILENAME), "w") as f:
        json.dump(quality, f, indent=2)
    variants, int8 = quality["variants"], quality["variants"].get("int8")
    unrunnable = [name for name, v in variants.items() if v.get("runs") is False]
    key_figure(f"{sum(v['push'] for v in variants.values())} of {len(variants)} variants may be pushed"
               + (f"; int8 ({int8['weight_quantization']}) {int8['size_vs_float32']}x float32, "
                  f"agreement {int8['agreement']:.3f}" if int8 and int8.get("runs", True) else "")
               + (f"; {', '.join(unrunnable)} cannot run in TensorFlow Lite's interpreter (see quality.json)"
                  if unrunnable else ""))
