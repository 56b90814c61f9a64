"""Serving artifacts: a SavedModel whose signatures embed the Transform graph, and labels.

Signatures of the SavedModel (TF-Serving style), all with the same outputs:
  serving_default(examples: serialized tf.Example [N])          -> probabilities, class_id, class_name
  serve_image_bytes(image_bytes: encoded images [N])            -> ...
  serve_images(images: float32 [N, H, W, C], pixel values 0..255) -> ...
  explain_images(images: as serve_images)                        -> ..., heatmap [N, H, W]: Grad-CAM in 0..1
The TFLite variants (models/lite.py) take the same float images; normalization is inside every entry point.
With test-time views (InferenceViews), every entry point answers with the mean of the probabilities for
each image and its left-right mirror, and copies of it shifted diagonally (a model trained on such
images; the inference arithmetic times the views).
"""
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import features
from models.labels import write_labels
from models.preprocessing import ImageSpec

_RAW_KEYS_NOT_SERVED = (features.LABEL_KEY, features.CLASS_NAME_KEY, features.FILENAME_KEY)
# Grad-CAM looks at the input of the head's pooling: the feature maps of the last convolutional block.
GRAD_CAM_LAYER = "head_pool"


def raw_image_features(image_bytes: tf.Tensor, tf_transform_output: tft.TFTransformOutput) -> Dict[str, tf.Tensor]:
    """Encoded images [N] -> the raw feature dict the Transform graph expects."""
    image_spec = tf_transform_output.raw_feature_spec()[features.IMAGE_KEY]
    return {features.IMAGE_KEY: tf.reshape(image_bytes, [-1] + list(image_spec.shape))}


def _predictions(probabilities: tf.Tensor, label_names: tf.Tensor) -> Dict[str, tf.Tensor]:
    class_id = tf.argmax(probabilities, axis=-1)
    return {"probabilities": probabilities, "class_id": class_id, "class_name": tf.gather(label_names, class_id)}


@dataclasses.dataclass(frozen=True)
class InferenceViews:
    """The views of each image whose probabilities serving averages: the image, its left-right mirror
    (flip) and, with shift, four copies shifted diagonally by that many pixels, filled as crop-pad
    training fills them (pad_mode: zeros, the mean pixel once normalized, or the image reflected); and
    the mirror of each copy."""
    flip: bool = False
    shift: int = 0
    pad_mode: str = "zero"  # what shifted copies are filled with: zeros or the image reflected, as training's

    def offsets(self) -> List[Tuple[int, int]]:
        s = self.shift
        return [(0, 0)] + ([(s, s), (-s, -s), (s, -s), (-s, s)] if s else [])

    def count(self) -> int:
        return len(self.offsets()) * (2 if self.flip else 1)


def _shifted(normalized: tf.Tensor, dy: int, dx: int, pad_mode: str = "zero") -> tf.Tensor:
    """Images [N, H, W, C] with the pixel at (y + dy, x + dx) at (y, x), zeros (or the image reflected)
    beyond the border."""
    if not (dy or dx):
        return normalized
    pad, height, width = max(abs(dy), abs(dx)), normalized.shape[1], normalized.shape[2]
    padded = tf.pad(normalized, [[0, 0], [pad, pad], [pad, pad], [0, 0]],
                    mode="REFLECT" if pad_mode == "reflect" else "CONSTANT")
    return padded[:, pad + dy:pad + dy + height, pad + dx:pad + dx + width, :]


def view_images(normalized: tf.Tensor, views: InferenceViews) -> List[tf.Tensor]:
    """Normalized images [N, H, W, C] as each view shows them, views.count() of them, in the order
    answer averages them."""
    moved = [_shifted(normalized, dy, dx, views.pad_mode) for dy, dx in views.offsets()]
    return moved + ([tf.reverse(x, axis=[2]) for x in moved] if views.flip else [])


def answer(model: keras.Model, normalized: tf.Tensor, views: InferenceViews, logits: tf.Tensor = None) -> tf.Tensor:
    """The probabilities serving answers with for normalized images [N, H, W, C] (logits: the model's,
    when already computed). With several views, the mean of those for every view, run as one batch:
    not turned back into logits, whose log of probabilities near 0 made the int8 converter abort a
    photo run ("scale out of expressed type range")."""
    if views.count() == 1:
        return tf.nn.softmax(model(normalized, training=False) if logits is None else logits)
    probabilities = tf.nn.softmax(model(tf.concat(view_images(normalized, views), axis=0), training=False))
    return tf.reduce_mean(tf.reshape(probabilities, [views.count(), -1, probabilities.shape[-1]]), axis=0)


def serving_signatures(model: keras.Model, tf_transform_output: tft.TFTransformOutput, label_names: Sequence[str],
                       spec: ImageSpec, views: InferenceViews = InferenceViews()
                       ) -> Dict[str, tf.types.experimental.PolymorphicFunction]:
    mean, std = normalization_constants(tf_transform_output, spec)
    model.tft_layer = tf_transform_output.transform_features_layer()  # tracked, so it is saved
    model.label_names = tf.Variable(list(label_names), trainable=False, name="label_names")
    raw_spec = {k: v for k, v in tf_transform_output.raw_feature_spec().items() if k not in _RAW_KEYS_NOT_SERVED}

    def predict(raw_features):
        transformed = model.tft_layer(raw_features)
        return _predictions(answer(model, transformed[features.IMAGE_XF_KEY], views), model.label_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        return predict(tf.io.parse_example(examples, raw_spec))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_image_bytes(image_bytes):
        return predict(raw_image_features(image_bytes, tf_transform_output))

    serve_images = _serve_images(model, mean, std, spec, views)
    feature_model = keras.Model(model.inputs, [model.get_layer(GRAD_CAM_LAYER).input, model.output])

    @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape], tf.float32, name="images")])
    def explain_images(images):
        """serve_images' outputs and the Grad-CAM heatmap of the predicted class: the last block's
        feature maps (of the image as given) weighted by the mean gradient of the class logit, ReLU,
        scaled to 0..1."""
        with tf.GradientTape() as tape:
            feature_maps, logits = feature_model((images - mean) / std, training=False)
            answered = answer(model, (images - mean) / std, views, logits)
            score = tf.gather(logits, tf.argmax(answered, axis=-1), batch_dims=1)
        weights = tf.reduce_mean(tape.gradient(score, feature_maps), axis=[1, 2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(tf.cast(weights * feature_maps, tf.float32), axis=-1, keepdims=True))
        cam /= tf.reduce_max(cam, axis=[1, 2, 3], keepdims=True) + 1e-8
        return {**_predictions(answered, model.label_names), "heatmap": tf.image.resize(cam, spec.shape[:2])[..., 0]}

    # The functions themselves, not their concrete functions: a model trained under
    # MultiWorkerMirroredStrategy has distributed variables, and TensorFlow cannot save a concrete
    # function that reads them (tests/test_distribution.py exports one).
    return {"serving_default": serve_examples, "serve_image_bytes": serve_image_bytes,
            "serve_images": serve_images, "explain_images": explain_images}


def _serve_images(model: keras.Model, mean: float, std: float, spec: ImageSpec,
                  views: InferenceViews = InferenceViews()) -> tf.types.experimental.PolymorphicFunction:
    """float images [N, H, W, C] in 0..255 -> the predictions (model.label_names must be set)."""
    @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape], tf.float32, name="images")])
    def serve_images(images):
        return _predictions(answer(model, (images - mean) / std, views), model.label_names)
    return serve_images


def _transform_probe(tf_transform_output: tft.TFTransformOutput, spec: ImageSpec, pixel: int) -> Dict[str, tf.Tensor]:
    """The Transform graph's outputs for one image whose every pixel is `pixel`."""
    png = tf.io.encode_png(tf.fill(spec.shape, tf.constant(pixel, tf.uint8)))
    return tf_transform_output.transform_features_layer()(raw_image_features(tf.reshape(png, [1]), tf_transform_output))


def normalization_constants(tf_transform_output: tft.TFTransformOutput, spec: ImageSpec) -> Tuple[float, float]:
    """(mean, std) of the Transform graph's pixel normalization, read by probing it.

    The graph maps pixel p to (p - mean) / std; transforming an all-0 and an all-255 image
    recovers both constants exactly, so TFLite applies the very normalization serving applies.
    """
    low, high = (float(tf.reduce_mean(_transform_probe(tf_transform_output, spec, value)[features.IMAGE_XF_KEY]))
                 for value in (0, 255))
    std = 255.0 / (high - low)
    return -low * std, std


def whitening_filters(tf_transform_output: tft.TFTransformOutput, spec: ImageSpec) -> Optional[np.ndarray]:
    """The dense network's whitening filters [n, n] the Transform step computed (the same for any
    image: one probe reads them), or None when it computed none."""
    if features.WHITENING_XF_KEY not in tf_transform_output.transformed_feature_spec():
        return None
    flat = _transform_probe(tf_transform_output, spec, 0)[features.WHITENING_XF_KEY].numpy()[0]
    size = int(round(len(flat) ** 0.5))
    return flat.reshape(size, size)


def save(model: keras.Model, export_dir: str, signatures: Dict[str, tf.types.experimental.PolymorphicFunction]) -> None:
    """The SavedModel of model with these signatures, without a trace of every Keras layer's call:
    everything that reads it (TFMA, TFLite, the report, pipeline.score, a model server) calls the
    signatures, and a warm start reads the variables. The traces made the export and every load
    several times slower (bench/RESULTS.md, "Export without layer traces")."""
    model.save(export_dir, save_format="tf", save_traces=False, signatures=signatures)


def export_serving_model(model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                         label_names: Sequence[str], spec: ImageSpec, export_dir: str,
                         views: InferenceViews = InferenceViews()) -> None:
    """Writes the SavedModel and labels.txt into export_dir (TFLite variants: models/lite.py)."""
    save(model, export_dir, serving_signatures(model, tf_transform_output, label_names, spec, views))
    write_labels(os.path.join(export_dir, features.LABELS_FILENAME), label_names)


# Beside the Trainer's Format-Serving folder in its Model artifact: the quantization-aware copy, which
# LiteModels converts to int8 (the Evaluator and the Pusher read Format-Serving alone).
QUANTIZATION_AWARE_FOLDER = "Format-QuantizationAware"


def quantization_aware_dir(serving_model_dir: str) -> str:
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), QUANTIZATION_AWARE_FOLDER)


def export_images_model(model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                        label_names: Sequence[str], spec: ImageSpec, export_dir: str,
                        views: InferenceViews = InferenceViews()) -> None:
    """A SavedModel with the serve_images signature alone: all TFLite conversion reads. For the
    quantization-aware copy, whose layers carry other names than Grad-CAM looks for."""
    mean, std = normalization_constants(tf_transform_output, spec)
    model.label_names = tf.Variable(list(label_names), trainable=False, name="label_names")
    save(model, export_dir, {"serve_images": _serve_images(model, mean, std, spec, views)})
