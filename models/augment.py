"""Training-time augmentation as Keras layers (inactive at inference)."""
import math

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="image_cnn")
class RandomShiftRotate(keras.layers.Layer):
    """A random shift (up to max_shift of the height and width) and rotation (up to max_degrees)
    about the centre, as ONE projective transform per image: half the work of Keras'
    RandomTranslation followed by RandomRotation. Edges are filled with the nearest pixel."""

    def __init__(self, max_shift: float = 0.1, max_degrees: float = 14.4, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.max_shift, self.max_degrees, self.seed = float(max_shift), float(max_degrees), seed
        self._generator = (tf.random.Generator.from_seed(seed) if seed is not None
                           else tf.random.Generator.from_non_deterministic_state())

    def call(self, images, training=None):
        if not training:
            return images
        shape = tf.shape(images)
        batch, height, width = shape[0], tf.cast(shape[1], tf.float32), shape[2]
        width_f = tf.cast(width, tf.float32)
        angle = self._generator.uniform([batch], -1.0, 1.0) * self.max_degrees * math.pi / 180
        dx = self._generator.uniform([batch], -1.0, 1.0) * self.max_shift * width_f
        dy = self._generator.uniform([batch], -1.0, 1.0) * self.max_shift * height
        cx, cy = (width_f - 1) / 2, (height - 1) / 2
        cos, sin = tf.cos(angle), tf.sin(angle)
        # Maps each output pixel (x, y) to its input pixel: rotate back about the centre, then unshift.
        transforms = tf.stack([cos, sin, cx - cos * (cx + dx) - sin * (cy + dy),
                               -sin, cos, cy + sin * (cx + dx) - cos * (cy + dy),
                               tf.zeros([batch]), tf.zeros([batch])], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="NEAREST")

    def get_config(self):
        return {**super().get_config(), "max_shift": self.max_shift, "max_degrees": self.max_degrees,
                "seed": self.seed}


def augmenter(flip: bool, seed=None) -> keras.Sequential:
    layers = [RandomShiftRotate(seed=seed, name="shift_rotate")]
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, name="flip"))
    return keras.Sequential(layers, name="augment")
