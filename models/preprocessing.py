"""tf.Transform preprocessing: decode, resize, convert channels and normalize images.

Everything here is embedded in the exported model, so clients send raw image bytes.
"""
import dataclasses
from typing import Any, Dict, Mapping

import tensorflow as tf
import tensorflow_transform as tft

from models import features

_VARIANCE_EPSILON = 1e-6


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """The size and channels every image is converted to."""
    height: int = 28
    width: int = 28
    channels: int = 1

    def __post_init__(self):
        for field in ("height", "width"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 8:
                raise ValueError(f"image {field} must be an integer >= 8, got {value!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"image channels must be 1 (grayscale) or 3 (RGB), got {self.channels!r}")

    @property
    def shape(self):
        return (self.height, self.width, self.channels)

    def to_config(self) -> Dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ImageSpec":
        return cls(**{f.name: int(config[f.name]) for f in dataclasses.fields(cls)})


def decode_image(image_bytes: tf.Tensor, spec: ImageSpec) -> tf.Tensor:
    """One encoded image (JPEG/PNG/BMP/GIF) -> float32 [H, W, C] in 0..255."""
    image = tf.io.decode_image(image_bytes, channels=spec.channels, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), [spec.height, spec.width], antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, spec.shape)


def decode_images(image_bytes: tf.Tensor, spec: ImageSpec) -> tf.Tensor:
    """A batch [N] of encoded images of mixed sizes -> float32 [N, H, W, C] in 0..255."""
    return tf.map_fn(lambda b: decode_image(b, spec), image_bytes,
                     fn_output_signature=tf.TensorSpec(spec.shape, tf.float32))


def normalize(images: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor) -> tf.Tensor:
    return (images - mean) / tf.sqrt(variance + _VARIANCE_EPSILON)


def _as_vector(tensor) -> tf.Tensor:
    """Raw features arrive as [N, 1] dense tensors (fixed-length schema) or sparse; make them [N]."""
    if isinstance(tensor, tf.SparseTensor):
        tensor = tf.sparse.to_dense(tensor)
    return tf.reshape(tensor, [-1])


def preprocessing_fn(inputs: Dict[str, Any], custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """tf.Transform entry point. Normalization statistics are computed over the training split."""
    spec = ImageSpec.from_config(custom_config["image"])
    images = decode_images(_as_vector(inputs[features.IMAGE_KEY]), spec)
    return {
        features.IMAGE_XF_KEY: normalize(images, tft.mean(images), tft.var(images)),
        features.LABEL_KEY: _as_vector(inputs[features.LABEL_KEY]),
    }
