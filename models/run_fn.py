"""TFX Trainer entry point (`run_fn`): a thin adapter from FnArgs to the model library."""
import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx

from models import applications, dense
from models import export, features, lite, precision, sources
from models import files
from models.distribution import is_chief, save_on_chief, tf_config, training_strategy
from models.labels import read_labels
from models.model import ModelConfig, build_classifier, write_facts
from models.preprocessing import ImageSpec
from models.recipe import Lookahead, TrainingConfig, compile_model
# make_datasets by module attribute: tests/two_workers.py records what run_fn passes it
from models.training_data import count_examples, examples_root, make_datasets
from models.warm_start import WARM_START_LEARNING_RATE, start_from_champion, warm_started



LEARNING_RATE_FILENAME = "learning_rate.json"


def write_learning_rates(schedule: keras.optimizers.schedules.LearningRateSchedule, steps_per_epoch: int,
                         log_dir: str) -> None:
    """<log_dir>/learning_rate.json: the rate of every training step, for the run report's curve."""
    rates = schedule(tf.range(schedule.total_steps)).numpy()
    tf.io.gfile.makedirs(log_dir)
    with tf.io.gfile.GFile(os.path.join(log_dir, LEARNING_RATE_FILENAME), "w") as f:
        json.dump({"steps_per_epoch": steps_per_epoch, "learning_rate": [round(float(r), 8) for r in rates]}, f)


THROUGHPUT_FILENAME = "throughput.json"


class ThroughputLogger(keras.callbacks.Callback):
    """Training images per second of every epoch (validation excluded), logged and written to
    <log_dir>/throughput.json."""

    def __init__(self, global_batch: int, steps_per_epoch: int, log_dir: str, write: bool = True):
        super().__init__()
        self._write = write
        self._images = global_batch * steps_per_epoch
        self._path = os.path.join(log_dir, THROUGHPUT_FILENAME)
        self._epochs: List[Dict[str, float]] = []
        self._started = self._last_batch_end = 0.0

    @property
    def epochs(self) -> List[Dict[str, float]]:
        """Each epoch's {"epoch", "seconds", "images_per_s"}, as throughput.json holds them."""
        return list(self._epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._last_batch_end - self._started
        self._epochs.append({"epoch": epoch, "seconds": round(seconds, 3), "images_per_s": round(self._images / seconds, 1)})
        logging.info("epoch %d: %.1f images/s", epoch, self._images / seconds)
        if self._write:  # the chief's alone: another worker reads it, and would read a half-written file
            files.write_json(self._path, self._epochs)


PROFILED_STEPS = 10


def profiled_batches(training: TrainingConfig, steps_per_epoch: int) -> Tuple[int, int]:
    """Keras' 1-based (first, last) global batch to trace: the second epoch's first steps, after
    tracing and caching; (0, 0) for none."""
    if not training.profile:
        return 0, 0
    first = steps_per_epoch + 1 if training.epochs > 1 else 1
    last = min(first + PROFILED_STEPS - 1, training.epochs * steps_per_epoch)
    return first, last


def fit(model: keras.Model, train: tf.data.Dataset, validation: Optional[tf.data.Dataset], training: TrainingConfig,
        steps_per_epoch: int, backup_dir: str, log_dir: str, global_batch: int = 0,
        extra_callbacks=()) -> keras.callbacks.History:
    """Trains with a checkpoint after every epoch in backup_dir: an interrupted fit started again with
    the same backup_dir resumes after the last finished epoch (and the backup is removed at the end)."""
    callbacks = [keras.callbacks.BackupAndRestore(backup_dir),
                 keras.callbacks.TensorBoard(log_dir=log_dir, profile_batch=profiled_batches(training, steps_per_epoch))]
    if global_batch:
        callbacks.append(ThroughputLogger(global_batch, steps_per_epoch, log_dir, write=is_chief(tf_config())))
    if training.lookahead:
        callbacks.append(Lookahead(training.epochs * steps_per_epoch))
    if validation is not None and training.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=training.early_stopping_patience,
                                                       restore_best_weights=True, verbose=1))
    return model.fit(train, epochs=training.epochs, steps_per_epoch=steps_per_epoch, validation_data=validation,
                     callbacks=callbacks + list(extra_callbacks), verbose=2)


def checkpoint_dir(root: str, fn_args: tfx.components.FnArgs, warm_start_version: Optional[int] = None) -> str:
    """Where this training's per-epoch checkpoints go: the same for a rerun on the same data (the
    ingested files' fingerprint), settings, code and starting weights (the champion version a warm
    start loaded), so an interrupted Trainer resumes; different otherwise, so a code change never
    restores a checkpoint into a different model.
    (The example files themselves differ between runs: Beam writes them in no fixed order.)"""
    fingerprint = features.read_ingest_report(examples_root(fn_args.train_files[0]))["data_fingerprint"]
    key_parts = [fingerprint, fn_args.custom_config, sources.sources_digest()]
    if warm_start_version is not None:
        key_parts.append({"warm_start_version": warm_start_version})
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True, default=str).encode())
    return os.path.join(root, key.hexdigest()[:16])


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    strategy = training_strategy()  # first: a multi-worker strategy must exist before other TF ops
    config: Dict[str, Any] = fn_args.custom_config
    spec = ImageSpec.from_config(config["image"])
    training = TrainingConfig(**config["training"])
    label_names = read_labels(os.path.join(examples_root(fn_args.train_files[0]), features.LABELS_FILENAME))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    keras.utils.set_random_seed(training.seed)
    keras.mixed_precision.set_global_policy(precision.training_policy(training.precision))
    replicas = strategy.num_replicas_in_sync
    global_batch = training.batch_size * replicas
    counts = count_examples(fn_args.train_files, training.validation_percent)
    steps_per_epoch = max(1, math.ceil(counts[0] / global_batch))
    logging.info("Training on %d examples (%d held out for early stopping), %d classes, %s with %d replica(s), "
                 "global batch %d, %d steps/epoch", counts[0], counts[1], len(label_names), type(strategy).__name__,
                 replicas, global_batch, steps_per_epoch)
    train, validation = make_datasets(fn_args.train_files, fn_args.data_accessor, fn_args.schema_file,
                                      tf_transform_output, spec, counts, global_batch, training)
    model_config = ModelConfig(**config["model"], input_shape=spec.shape, num_classes=len(label_names))
    # a backbone undoes the Transform graph's normalization; probed outside the scope, which would own its variables
    normalization = ((0.0, 1.0) if model_config.backbone == "none" else
                     export.normalization_constants(tf_transform_output, spec))
    whitening = export.whitening_filters(tf_transform_output, spec)
    with strategy.scope():
        model = build_network(model_config, training, normalization, train, whitening)
        # base_model is the champion when the pipeline was made with --warm-start, and None otherwise
        started_from = (None if fn_args.base_model is None else
                        start_from_champion(model, model_config, label_names, fn_args.base_model))
        warm = warm_started(started_from)
        if warm:
            training = dataclasses.replace(training, learning_rate=training.learning_rate * WARM_START_LEARNING_RATE)
        schedule = compile_model(model, model_config, training, steps_per_epoch, replicas)
    logging.info("%s: %d parameters; started from %s", model_config, model.count_params(), started_from or "scratch")
    write_facts(model, model_config, fn_args.model_run_dir, **run_facts(model_config, training, started_from))
    write_learning_rates(schedule, steps_per_epoch, fn_args.model_run_dir)
    checkpoints = checkpoint_dir(config["checkpoint_root"], fn_args, started_from["champion_version"] if warm else None)
    fit(model, train, validation, training, steps_per_epoch, checkpoints, fn_args.model_run_dir, global_batch=global_batch)
    if model_config.backbone != "none" and training.fine_tune_epochs:
        fine_tune_backbone(model, model_config, training, strategy, train, validation, steps_per_epoch, checkpoints,
                           fn_args.model_run_dir)
    with strategy.scope():
        model = precision.in_float32(model, lambda: build_classifier(model_config, normalization))

    def export_to(path: str) -> None:
        export.export_serving_model(model, tf_transform_output, label_names, spec, path, training.inference_views)
        # what a later --warm-start checks the network against, and which views it answers for
        write_facts(model, model_config, path, **inference_view_facts(training))
    save_on_chief(export_to, fn_args.serving_model_dir)
    if training.quantization_aware_epochs:
        quantization_aware = fine_tune_quantization_aware(model, model_config, training, strategy, train, validation,
                                                          steps_per_epoch, checkpoints, fn_args.model_run_dir)
        save_on_chief(lambda path: export.export_images_model(quantization_aware, tf_transform_output, label_names,
                                                              spec, path, training.inference_views),
                      export.quantization_aware_dir(fn_args.serving_model_dir))


CALIBRATION_BATCHES = 4  # of training images, for a random backbone's BatchNormalization statistics


def build_network(model_config: ModelConfig, training: TrainingConfig, normalization: Tuple[float, float],
                  train: tf.data.Dataset, whitening: Optional[np.ndarray] = None) -> keras.Model:
    """The classifier; the dense network's whitening filters set (the Transform step's); with a Keras
    application backbone, its starting weights loaded (random ones with BatchNormalization statistics
    from the training batches) and the backbone frozen for the first phase."""
    model = build_classifier(model_config, normalization)
    dense.set_whitening(model, whitening)
    if model_config.backbone != "none":
        applications.load_weights(model, model_config.backbone, training.backbone_weights)
        if training.backbone_weights == "none":
            applications.calibrate_batchnorm(model, tf.concat([x for x, _ in train.take(CALIBRATION_BATCHES)], 0))
        applications.freeze(model)
    return model


def run_facts(model_config: ModelConfig, training: TrainingConfig, started_from: Optional[Dict[str, Any]]
              ) -> Dict[str, Any]:
    """What model.json records of this run beside the network: for the Trainer's progress line and the report."""
    facts: Dict[str, Any] = {"started_from": started_from} if started_from else {}
    if keras.mixed_precision.global_policy().name != "float32":
        facts["trained_in"] = keras.mixed_precision.global_policy().name
    if training.quantization_aware_epochs:
        facts["quantization_aware_epochs"] = training.quantization_aware_epochs
    facts.update(inference_view_facts(training))
    if model_config.backbone != "none":
        facts.update(backbone_weights=training.backbone_weights, fine_tune_epochs=training.fine_tune_epochs)
    return facts


def inference_view_facts(training: TrainingConfig) -> Dict[str, Any]:
    """The test-time views the exported model averages, for model.json (none when it answers plainly)."""
    facts = {name: value for name, value in (("test_time_flip", training.test_time_flip),
                                             ("test_time_shift", training.test_time_shift)) if value}
    return {**facts, "test_time_pad_mode": training.pad_mode} if training.test_time_shift else facts


def fine_tune_backbone(model: keras.Model, model_config: ModelConfig, training: TrainingConfig,
                       strategy: tf.distribute.Strategy, train: tf.data.Dataset, validation: Optional[tf.data.Dataset],
                       steps_per_epoch: int, checkpoints: str, log_dir: str) -> None:
    """Phase 2 of transfer learning: the backbone's top layers unfrozen, trained with the head for the
    configured epochs, one cosine decay from FINE_TUNE_LEARNING_RATE x the peak."""
    fine_tuning = _fine_tuning(training, training.fine_tune_epochs, applications.FINE_TUNE_LEARNING_RATE)
    with strategy.scope():
        unfrozen = applications.unfreeze_top(model)
        compile_model(model, model_config, fine_tuning, steps_per_epoch, strategy.num_replicas_in_sync)
    logging.info("Fine-tuning the backbone's top %d layers with weights: %d epoch(s)", unfrozen, fine_tuning.epochs)
    fit(model, train, validation, fine_tuning, steps_per_epoch, os.path.join(checkpoints, "fine-tune"),
        os.path.join(log_dir, "fine_tune"))


def _fine_tuning(training: TrainingConfig, epochs: int, learning_rate_factor: float) -> TrainingConfig:
    """The settings of a fine-tuning phase after the main training: no warm-up, no restarts."""
    return dataclasses.replace(training, epochs=epochs, warmup_epochs=0, restarts=0, profile=False,
                               learning_rate=training.learning_rate * learning_rate_factor)


def fine_tune_quantization_aware(model: keras.Model, model_config: ModelConfig, training: TrainingConfig,
                                 strategy: tf.distribute.Strategy, train: tf.data.Dataset,
                                 validation: Optional[tf.data.Dataset], steps_per_epoch: int, checkpoints: str,
                                 log_dir: str) -> keras.Model:
    """The trained model's fake-quantized copy (models/quantization.py), fine-tuned for the configured
    epochs on the same batches to answer as the trained model does (Distilling): one cosine decay from
    QUANTIZATION_AWARE_LEARNING_RATE x the peak, no warm-up; its activation ranges calibrated first on
    as many training images as post-training int8 is calibrated on."""
    # here, not at the top: tensorflow-model-optimization takes a second to import, and only this flag needs it
    from models.quantization import (QUANTIZATION_AWARE_LEARNING_RATE, Distilling, calibrate_ranges,
                                     quantization_aware_copy)
    fine_tuning = dataclasses.replace(_fine_tuning(training, training.quantization_aware_epochs,
                                                   QUANTIZATION_AWARE_LEARNING_RATE), early_stopping_patience=0)
    with strategy.scope():
        quantization_aware = quantization_aware_copy(model, model_config)
        calibrate_ranges(quantization_aware, train.map(lambda images, labels: images).unbatch()
                         .take(lite.CALIBRATION_IMAGES).batch(250))
        distilling = Distilling(quantization_aware, model)
        compile_model(distilling, model_config, fine_tuning, steps_per_epoch, strategy.num_replicas_in_sync,
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))  # against the model's softmax
    logging.info("Quantization-aware fine-tuning on the trained model's answers: %d epoch(s)", fine_tuning.epochs)
    fit(distilling, train, validation, fine_tuning, steps_per_epoch,
        os.path.join(checkpoints, "quantization-aware"), os.path.join(log_dir, "quantization_aware"))
    return quantization_aware
