"""TFLite variants of an exported model, and their measured quality.

Every variant is converted from the SavedModel's `serve_images` signature (float images [N, H, W, C]
in 0..255, the Transform normalization inside), so it needs no preprocessing a client must repeat:
  float32        as trained
  dynamic_range  int8 weights, float activations
  float16        float16 weights
  int8           integer weights and activations, uint8 pixels in, uint8 probabilities out
                 (calibrated on representative training images); weights quantized per tensor
                 or per output channel (WEIGHT_QUANTIZATIONS)
"""
import time
from typing import Any, Dict, Optional, Union

import numpy as np
import tensorflow as tf

from models.preprocessing import ImageSpec

VARIANTS = ("float32", "dynamic_range", "float16", "int8")
# int8 weight scales, smallest file first. Per channel, each output channel of every weight and bias
# carries a float32 scale and an int64 zero point: on the default network (depthwise 3x3 kernels, 9
# weights a channel) that is 36 KB of a 130 KB file; per tensor, 95 KB.
WEIGHT_QUANTIZATIONS = ("per-tensor", "per-channel")
CALIBRATION_IMAGES = 1000  # training images the int8 activation ranges are calibrated on
LATENCY_IMAGES = 200  # single-image invocations timed per variant (after a warm-up)


def load(saved_model: Union[str, Any]):
    """A loaded SavedModel: the one given, or the one at the path (each load takes seconds)."""
    return tf.saved_model.load(saved_model) if isinstance(saved_model, str) else saved_model


def _classify(loaded):
    """The concrete function images -> probabilities of a loaded SavedModel."""
    signature = loaded.signatures["serve_images"]
    spec = signature.structured_input_signature[1]["images"]

    @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape[1:]], tf.float32, name="images")])
    def classify(images):
        return {"probabilities": signature(images=images)["probabilities"]}

    return classify.get_concrete_function()


def image_spec(saved_model) -> ImageSpec:
    """The images the model takes; saved_model is a path or a loaded SavedModel."""
    shape = load(saved_model).signatures["serve_images"].structured_input_signature[1]["images"].shape[1:]
    return ImageSpec(*(int(d) for d in shape))


def _quantize_weights_per_tensor(converter: tf.lite.TFLiteConverter) -> None:
    # TF 2.21 offers this only as a private converter flag; an assignment to a vanished attribute
    # would silently give per-channel weights, so check that it is still there.
    if not hasattr(converter, "_experimental_disable_per_channel"):
        raise RuntimeError(f"TensorFlow {tf.__version__}'s TFLiteConverter no longer has "
                           "_experimental_disable_per_channel: per-tensor int8 weights cannot be made")
    converter._experimental_disable_per_channel = True


def convert(saved_model, variant: str, representative_images: Optional[np.ndarray] = None,
            weight_quantization: str = "per-channel") -> bytes:
    """The variant's .tflite bytes; saved_model is a path or a loaded SavedModel (load() it once to
    convert several variants); weight_quantization applies to int8 only."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if weight_quantization not in WEIGHT_QUANTIZATIONS:
        raise ValueError(f"weight_quantization must be one of {WEIGHT_QUANTIZATIONS}, got {weight_quantization!r}")
    loaded = load(saved_model)  # referenced until the end: the function reads its variables
    function = _classify(loaded)
    # The converter saves the object it is given, then converts the saved copy. Given the whole
    # SavedModel (four signatures) that took 4 of 6 s a variant; it needs only what the function reads.
    variables_read = tf.Module()
    variables_read.variables_list = list(function.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], variables_read)
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        if representative_images is None or not len(representative_images):
            raise ValueError("the int8 variant needs representative images")
        converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in representative_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        if weight_quantization == "per-tensor":
            _quantize_weights_per_tensor(converter)
    return converter.convert()


class LiteClassifier:
    """A TFLite model (on one thread unless told otherwise): float images in 0..255 -> float
    probabilities, whatever the variant's input and output types."""

    def __init__(self, model: bytes, num_threads: int = 1):
        self._interpreter = tf.lite.Interpreter(model_content=model, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._batch = None

    @property
    def image_spec(self) -> ImageSpec:
        """The images it takes."""
        return ImageSpec(*(int(d) for d in self._input["shape"][1:]))

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], [batch, *self._input["shape"][1:]])
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
            self._batch = batch

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self._resize(len(images))
        dtype = self._input["dtype"]
        if dtype == np.uint8:
            scale, zero_point = self._input["quantization"]
            images = np.clip(np.round(images / scale + zero_point), 0, 255)
        self._interpreter.set_tensor(self._input["index"], images.astype(dtype))
        self._interpreter.invoke()
        output = self._interpreter.get_tensor(self._output["index"])
        if self._output["dtype"] == np.uint8:
            scale, zero_point = self._output["quantization"]
            output = (output.astype(np.float32) - zero_point) * scale
        return output

    def top1(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The top class of each image."""
        return np.concatenate([self(images[i:i + batch_size]).argmax(axis=-1)
                               for i in range(0, len(images), batch_size)])

    def latency_ms(self, images: np.ndarray) -> float:
        """Median milliseconds per single-image invocation."""
        for image in images[:10]:
            self(image[None])
        timings = []
        for image in images[:LATENCY_IMAGES]:
            started = time.perf_counter()
            self(image[None])
            timings.append((time.perf_counter() - started) * 1000)
        return float(np.median(timings))


def measure(model: bytes, images: np.ndarray, labels: np.ndarray, reference_ids: np.ndarray) -> Dict[str, float]:
    """Size, top-1 accuracy, top-1 agreement with the reference (the SavedModel) and latency."""
    classifier = LiteClassifier(model)
    predicted = classifier.top1(images)
    return {"size_bytes": len(model), "accuracy": float(np.mean(predicted == labels)),
            "agreement": float(np.mean(predicted == reference_ids)),
            "latency_ms_per_image": round(classifier.latency_ms(images), 4)}
