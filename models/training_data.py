"""The Trainer's data: the examples counted and split into training and validation slices by a hash
of each file's path, transformed, decoded, augmented and batched (run_fn in models/run_fn.py)."""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, List, Optional, Tuple

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio
from tensorflow_metadata.proto.v0 import schema_pb2

from models import features
from models.preprocessing import ImageSpec

if TYPE_CHECKING:
    from models.recipe import TrainingConfig

CACHE_BYTES = 2 << 30  # decoded training images up to this size stay in memory across epochs


def examples_root(split_file_pattern: str) -> str:
    """`<examples>/Split-train/*` -> `<examples>`, where ExampleGen wrote labels.txt."""
    return os.path.dirname(os.path.dirname(split_file_pattern))


def _in_validation_slice(filenames: tf.Tensor, validation_percent: int) -> tf.Tensor:
    """A stable slice of the training split, by a hash of each file's path."""
    return tf.strings.to_hash_bucket_fast(filenames, 100) < validation_percent


def count_examples(file_patterns: List[str], validation_percent: int) -> Tuple[int, int]:
    """(examples to train on, examples in the validation slice)."""
    files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
    filename_spec = {features.FILENAME_KEY: tf.io.FixedLenFeature([], tf.string)}
    dataset = (tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024)
               .map(lambda r: tf.io.parse_example(r, filename_spec)[features.FILENAME_KEY]))
    total, validation = 0, 0
    for filenames in dataset:
        total += int(tf.size(filenames))
        validation += int(tf.reduce_sum(tf.cast(_in_validation_slice(filenames, validation_percent), tf.int32)))
    return total - validation, validation


def augmenter(training: TrainingConfig, height: int, width: int) -> Optional[keras.Sequential]:
    """The training-only augmentation the config asks for, or None. Crop-pad is a shift of each image by
    a whole number of pixels, up to the pad, filled with zeros (the mean pixel once normalized) or
    reflected (pad_mode): Keras' RandomCrop would crop a whole batch at one offset."""
    layers = []
    if training.shift_rotate:
        layers += [keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
                   keras.layers.RandomRotation(0.04, fill_mode="nearest")]
    if training.crop_pad:
        fill = "reflect" if training.pad_mode == "reflect" else "constant"
        layers.append(keras.layers.RandomTranslation(training.crop_pad / height, training.crop_pad / width,
                                                     fill_mode=fill, fill_value=0.0, interpolation="nearest"))
    if training.flip and not training.alternating_flip:  # alternating flips are made per image: alternating_flips
        layers.append(keras.layers.RandomFlip("horizontal"))
    return keras.Sequential(layers, name="augment") if layers else None


def make_datasets(file_patterns: List[str], data_accessor: tfx.components.DataAccessor, schema_file: str,
                  tf_transform_output: tft.TFTransformOutput, spec: ImageSpec, counts: Tuple[int, int],
                  batch_size: int, training: TrainingConfig) -> Tuple[tf.data.Dataset, Optional[tf.data.Dataset]]:
    """Raw examples -> the Transform graph (as serving applies it) -> training_batches."""
    schema = tfx.utils.parse_pbtxt_file(schema_file, schema_pb2.Schema())
    raw = data_accessor.tf_dataset_factory(
        file_patterns, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=features.LABEL_KEY,
                                                      num_epochs=1, shuffle=False), schema)
    tft_layer = tf_transform_output.transform_features_layer()
    examples = raw.map(lambda x, y: (tft_layer(x)[features.IMAGE_XF_KEY], tf.reshape(y, [-1]), _in_validation_slice(
        tf.reshape(x[features.FILENAME_KEY], [-1]), training.validation_percent)),
        num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    return training_batches(examples, counts, spec.shape, batch_size, training)


def training_batches(examples: tf.data.Dataset, counts: Tuple[int, int], shape: Tuple[int, int, int], batch_size: int,
                     training: TrainingConfig, memory_bytes: int = CACHE_BYTES
                     ) -> Tuple[tf.data.Dataset, Optional[tf.data.Dataset]]:
    """(image, label, is_validation) examples, in ExampleGen's order (class by class) -> (repeated,
    shuffled, augmented training batches; validation batches, or None when the slice is empty).

    Images are decoded once and kept in memory when all fit in memory_bytes, and the shuffle buffer
    then holds the whole training set; otherwise every epoch decodes again and the buffer holds
    memory_bytes of images.
    """
    image_bytes = 4 * math.prod(shape)
    cache = sum(counts) * image_bytes <= memory_bytes

    def part(validation: bool) -> tf.data.Dataset:
        selected = examples.filter(lambda image, label, is_validation: is_validation == validation)
        selected = selected.map(lambda image, label, is_validation: (image, label))
        return selected.cache() if cache else selected

    shuffle_buffer = max(1, min(counts[0], memory_bytes // image_bytes))
    train = part(False)
    if training.alternating_flip:
        train = train.enumerate()
    train = train.shuffle(shuffle_buffer, seed=training.seed, reshuffle_each_iteration=True).repeat()
    if training.alternating_flip:
        train = alternating_flips(train, counts[0], training.seed)
    train = train.batch(batch_size)
    augment = augmenter(training, *shape[:2])
    if augment is not None:
        train = train.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    validation = part(True).batch(batch_size).prefetch(tf.data.AUTOTUNE) if counts[1] else None
    train = train.prefetch(tf.data.AUTOTUNE).with_options(_shard_by_element())
    return train, validation.with_options(_shard_by_element()) if validation is not None else None


def alternating_flips(numbered: tf.data.Dataset, count: int, seed: int) -> tf.data.Dataset:
    """Repeated (index, (image, label)) -> (image, label), each image mirrored in every other epoch:
    in even epochs as a coin tossed once for it says, in odd ones the other way. Every image is then
    seen both ways in any two epochs running, which random flips leave to chance (the records'
    alternating flip)."""
    def flip(position, numbered_example):
        index, (image, label) = numbered_example
        coin = tf.random.stateless_uniform([], seed=[seed, tf.cast(index, tf.int32)]) < 0.5
        odd_epoch = tf.equal((position // count) % 2, 1)
        return tf.cond(tf.not_equal(coin, odd_epoch), lambda: tf.reverse(image, axis=[1]), lambda: image), label
    return numbered.enumerate().map(flip, num_parallel_calls=tf.data.AUTOTUNE)


def _shard_by_element() -> tf.data.Options:
    """Several workers share the data by element, not by file: ExampleGen writes one file per split,
    and tf.data's default (by file) then stops a multi-worker run at its first step. Each worker
    reads the whole split in the same order (the shuffle's seed is fixed) and keeps its own share of
    each global batch. One worker ignores this."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options
