"""TFX Trainer entry point (`run_fn`): a thin adapter from FnArgs to the model library."""
import dataclasses
import math
import os
from typing import Any, Dict, List

from absl import logging
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio
from tensorflow_metadata.proto.v0 import schema_pb2

from models import export, features
from models.distribution import training_strategy
from models.labels import read_labels
from models.model import ModelConfig, build_classifier
from models.preprocessing import ImageSpec


CACHE_BYTES = 2 << 30  # decoded training images up to this size stay in memory across epochs


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 20
    batch_size: int = 32          # per replica; the global batch is this x replicas
    learning_rate: float = 5e-3   # for one replica; scaled linearly with the replicas
    augment: bool = True          # small shifts and rotations, training only
    seed: int = 0                 # weights, shuffling and augmentation

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")


def examples_root(split_file_pattern: str) -> str:
    """`<examples>/Split-train/*` -> `<examples>`, where ExampleGen wrote labels.txt."""
    return os.path.dirname(os.path.dirname(split_file_pattern))


def count_examples(file_patterns: List[str]) -> int:
    files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def _augmenter() -> keras.Sequential:
    return keras.Sequential([keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
                             keras.layers.RandomRotation(0.04, fill_mode="nearest")], name="augment")


def make_dataset(file_patterns: List[str], data_accessor: tfx.components.DataAccessor, schema_file: str,
                 tf_transform_output: tft.TFTransformOutput, spec: ImageSpec, num_examples: int,
                 batch_size: int, augment: bool) -> tf.data.Dataset:
    """Raw examples -> the Transform graph (as serving applies it) -> repeated, shuffled (image, label) batches.

    Images are decoded once and cached in memory when they fit in CACHE_BYTES; otherwise every epoch
    decodes again.
    """
    schema = tfx.utils.parse_pbtxt_file(schema_file, schema_pb2.Schema())
    dataset = data_accessor.tf_dataset_factory(
        file_patterns, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=features.LABEL_KEY,
                                                      num_epochs=1, shuffle=False), schema)
    tft_layer = tf_transform_output.transform_features_layer()
    dataset = dataset.map(lambda x, y: (tft_layer(x)[features.IMAGE_XF_KEY], tf.reshape(y, [-1])),
                          num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if num_examples * 4 * spec.height * spec.width * spec.channels <= CACHE_BYTES:
        dataset = dataset.cache()
    dataset = dataset.shuffle(min(num_examples, 20_000), reshuffle_each_iteration=True).repeat().batch(batch_size)
    if augment:
        augmenter = _augmenter()
        dataset = dataset.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def optimizer_for(model_config: ModelConfig, learning_rate) -> keras.optimizers.Optimizer:
    """Adam; AdamW when the model asks for decoupled weight decay (L2 mode lives in the layers)."""
    if model_config.weight_decay and model_config.weight_decay_mode == "decoupled":
        return keras.optimizers.AdamW(learning_rate, weight_decay=model_config.weight_decay)
    return keras.optimizers.Adam(learning_rate)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    config: Dict[str, Any] = fn_args.custom_config
    spec = ImageSpec.from_config(config["image"])
    training = TrainingConfig(**config["training"])
    label_names = read_labels(os.path.join(examples_root(fn_args.train_files[0]), features.LABELS_FILENAME))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    keras.utils.set_random_seed(training.seed)
    strategy = training_strategy()
    replicas = strategy.num_replicas_in_sync
    global_batch = training.batch_size * replicas
    num_train = count_examples(fn_args.train_files)
    steps_per_epoch = max(1, math.ceil(num_train / global_batch))
    logging.info("Training on %d examples, %d classes, %s with %d replica(s), global batch %d, %d steps/epoch",
                 num_train, len(label_names), type(strategy).__name__, replicas, global_batch, steps_per_epoch)
    dataset = make_dataset(fn_args.train_files, fn_args.data_accessor, fn_args.schema_file, tf_transform_output,
                           spec, num_train, global_batch, training.augment)

    with strategy.scope():
        model_config = ModelConfig(**config.get("model", {}), input_shape=spec.shape, num_classes=len(label_names))
        model = build_classifier(model_config)
        schedule = keras.optimizers.schedules.CosineDecay(training.learning_rate * replicas,
                                                          decay_steps=steps_per_epoch * training.epochs)
        model.compile(optimizer=optimizer_for(model_config, schedule),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.fit(dataset, epochs=training.epochs, steps_per_epoch=steps_per_epoch, verbose=2,
              callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)])
    export.export_serving_model(model, tf_transform_output, label_names, spec, fn_args.serving_model_dir)
