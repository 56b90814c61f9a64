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


def _to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """[H, W, 1|2|3|4] (gray, gray+alpha, RGB, RGBA) -> [H, W, channels]; alpha is dropped.

    TensorFlow's decoders convert some formats themselves (PNG, JPEG) but refuse others (BMP and
    GIF to grayscale), so every image is decoded as it is and converted here, the same way."""
    is_colour = tf.shape(image)[-1] >= 3
    if channels == 3:
        return tf.cond(is_colour, lambda: image[..., :3], lambda: tf.image.grayscale_to_rgb(image[..., :1]))
    return tf.cond(is_colour, lambda: tf.image.rgb_to_grayscale(image[..., :3]), lambda: image[..., :1])


# How every image becomes the model's input, in training, in serve_image_bytes and in LiteModels'
# measurements. A TFLite client must do the same: a client resizing with tf.image.resize's defaults
# (no antialiasing) disagrees with the model on a share of photos. client_preprocessing() writes
# these into quality.json, so the contract shipped with a model is the code that made it.
RESIZE_METHOD = "bilinear"
RESIZE_ANTIALIAS = True


def client_preprocessing(spec: ImageSpec) -> Dict[str, Any]:
    """The exact steps from image bytes to a TFLite model's input, for quality.json and docs/tflite.md."""
    return {
        "decode": "tf.io.decode_image(bytes, channels=0, expand_animations=False): the file's own "
                  "channels; a GIF's first frame; EXIF orientation is not applied",
        "channels": spec.channels,
        "channel_conversion": "to RGB: gray is repeated, alpha dropped; to gray: tf.image.rgb_to_grayscale "
                              "of RGB (0.2989 R + 0.587 G + 0.114 B), alpha dropped; in float32",
        "resize": {"size": [spec.height, spec.width], "method": RESIZE_METHOD, "antialias": RESIZE_ANTIALIAS,
                   "call": f"tf.image.resize(image, [{spec.height}, {spec.width}], method='{RESIZE_METHOD}', "
                           f"antialias={RESIZE_ANTIALIAS}) on float32 0..255 after the channel conversion, "
                           "then clipped to 0..255, not rounded"},
        "input": {"float32, float16, dynamic_range": "float32 [N, H, W, C], pixel values 0..255",
                  "int8": "uint8 [N, H, W, C]: round(pixel / scale + zero_point) with the input's "
                          "quantization parameters"},
        "reference_client": "models.preprocessing.decode_image (pipeline.score scores folders with it)",
    }


def decode_image(image_bytes: tf.Tensor, spec: ImageSpec) -> tf.Tensor:
    """One encoded image (JPEG/PNG/BMP/GIF/WebP, any mode) -> float32 [H, W, C] in 0..255."""
    image = tf.io.decode_image(image_bytes, channels=0, expand_animations=False)  # first frame of a GIF
    image = _to_channels(tf.cast(image, tf.float32), spec.channels)
    image = tf.image.resize(image, [spec.height, spec.width], method=RESIZE_METHOD, antialias=RESIZE_ANTIALIAS)
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


def whitening_filters(images: tf.Tensor, patch: int, epsilon: float = 5e-4) -> tf.Tensor:
    """[n, n] (n = patch * patch * channels): a row per filter that whitens the images' patches, the
    eigenvectors of the patches' covariance over the training split (tft.covariance) divided by the square
    root of their eigenvalues, largest first. A patch's values are in (row, column, channel) order."""
    patches = tf.image.extract_patches(images, sizes=[1, patch, patch, 1], strides=[1, 1, 1, 1],
                                       rates=[1, 1, 1, 1], padding="VALID")
    covariance = tft.covariance(tf.reshape(patches, [-1, patches.shape[-1]]), tf.float32)
    eigenvalues, eigenvectors = tf.linalg.eigh(covariance)  # ascending; eigenvectors in columns
    return tf.reverse(tf.transpose(eigenvectors) / tf.sqrt(eigenvalues + epsilon)[:, None], axis=[0])


def preprocessing_fn(inputs: Dict[str, Any], custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """tf.Transform entry point. Normalization statistics are computed over the training split, and so
    are the dense network's whitening filters when custom_config asks for them (whitening_patch)."""
    spec = ImageSpec.from_config(custom_config["image"])
    images = decode_images(_as_vector(inputs[features.IMAGE_KEY]), spec)
    normalized = normalize(images, tft.mean(images), tft.var(images))
    outputs = {features.IMAGE_XF_KEY: normalized, features.LABEL_KEY: _as_vector(inputs[features.LABEL_KEY])}
    if custom_config.get("whitening_patch"):
        filters = tf.reshape(whitening_filters(normalized, int(custom_config["whitening_patch"])), [1, -1])
        outputs[features.WHITENING_XF_KEY] = tf.tile(filters, [tf.shape(normalized)[0], 1])
    return outputs
