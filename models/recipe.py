"""The training recipe: its settings (TrainingConfig), the learning-rate schedule, the loss and the
optimizer that compile a model for training."""
import dataclasses
import math

import tensorflow as tf
import tf_keras as keras

from models import export
from models.precision import PRECISIONS
from models.model import ModelConfig

@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 15
    batch_size: int = 32              # per replica; the global batch is this x replicas
    learning_rate: float = 5e-3       # peak, for one replica; scaled linearly with the replicas
    warmup_epochs: float = 1.0        # linear warm-up from 0 to the peak (at most half of the training)
    restarts: int = 2                 # cosine cycles after the warm-up: restarts + 1, each twice the one before
    label_smoothing: float = 0.1
    optimizer: str = "adam"           # adam (AdamW with decoupled weight decay) or sgd (Nesterov momentum)
    momentum: float = 0.9             # sgd's
    schedule: str = "cosine"          # after the warm-up: cosine decay with restarts, or linear decay
    ema: float = 0.0                  # momentum of an average of the weights, which is what is exported (0: off)
    lookahead: bool = False           # the records' average of the weights instead, BatchNorm statistics included
    bias_lr_scale: float = 1.0        # sgd's steps on BatchNorm offsets, x this (the records: 64)
    pad_mode: str = "zero"            # crop-pad's fill: zero (the mean pixel once normalized) or reflect
    validation_percent: int = 10      # of the training split (by file-name hash), watched by early stopping
    early_stopping_patience: int = 8  # epochs without a lower validation loss; 0 disables early stopping
    shift_rotate: bool = True         # small shifts and rotations, training only
    flip: bool = False                # mirror flips: off, since a flip changes what digits and text mean
    alternating_flip: bool = False    # with flip: each image mirrored every other epoch, from a random start
    crop_pad: int = 0                 # pad each side by this many pixels, then crop back at random (0: off)
    test_time_flip: bool = False      # the exported model answers with the mean for the image and its mirror
    test_time_shift: int = 0          # and for four copies shifted diagonally by this many pixels (0: off)
    seed: int = 0                     # weights, shuffling and augmentation
    quantization_aware_epochs: int = 0  # then fine-tunes a fake-quantized copy for the int8 TFLite file (0: off)
    backbone_weights: str = "none"    # with a Keras application backbone: none (random), imagenet or a file's path
    fine_tune_epochs: int = 5         # with a backbone: phase 2, its top layers unfrozen (0: the frozen phase alone)
    precision: str = "float32"        # or auto: mixed bfloat16 where the CPU has it (models/precision.py)
    profile: bool = False             # trace PROFILED_STEPS steps of the second epoch into the TensorBoard logs

    def __post_init__(self):
        for name, low in (("epochs", 1), ("batch_size", 1), ("restarts", 0), ("early_stopping_patience", 0),
                          ("crop_pad", 0), ("test_time_shift", 0), ("quantization_aware_epochs", 0),
                          ("fine_tune_epochs", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.alternating_flip and not self.flip:
            raise ValueError("alternating_flip needs flip: it says how images are mirrored")
        if self.test_time_flip and not self.flip:
            raise ValueError("test_time_flip needs flip: a model not trained on mirror images has not learnt them")
        if self.test_time_shift > self.crop_pad:
            raise ValueError(f"test_time_shift needs crop_pad of at least {self.test_time_shift}, got "
                             f"{self.crop_pad}: a model not trained on images shifted so far has not learnt them")
        if not self.backbone_weights:
            raise ValueError("backbone_weights must be none, imagenet or a path, got an empty string")
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                     ("pad_mode", self.pad_mode, PAD_MODES), ("precision", self.precision, PRECISIONS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if self.bias_lr_scale <= 0 or (self.bias_lr_scale != 1 and self.optimizer != "sgd"):
            raise ValueError(f"bias_lr_scale must be > 0, and is for sgd only (Adam's steps do not scale with the "
                             f"gradient), got {self.bias_lr_scale!r} with {self.optimizer}")
        if self.lookahead and self.ema:
            raise ValueError("lookahead and ema are two averages of the weights: choose one")
        if not 0 <= self.momentum < 1 or not 0 <= self.ema < 1:
            raise ValueError(f"momentum and ema must be in [0, 1), got {self.momentum!r} and {self.ema!r}")
        if not 0 <= self.validation_percent <= 50:
            raise ValueError(f"validation_percent must be from 0 to 50, got {self.validation_percent!r}")

    @property
    def inference_views(self) -> export.InferenceViews:
        return export.InferenceViews(flip=self.test_time_flip, shift=self.test_time_shift, pad_mode=self.pad_mode)


OPTIMIZERS, SCHEDULES, PAD_MODES = ("adam", "sgd"), ("cosine", "linear"), ("zero", "reflect")


@keras.utils.register_keras_serializable(package="image_cnn")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to peak, then linear decay to end x peak when the training ends (the CIFAR-10
    speed records' schedule)."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, end: float = 0.07):
        super().__init__()
        self.peak, self.end = float(peak), float(end)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warming = self.peak * (step + 1) / max(self.warmup_steps, 1)
        done = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return tf.where(step < self.warmup_steps, warming, self.peak * (1 - (1 - self.end) * tf.minimum(done, 1.0)))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps, "end": self.end}


@keras.utils.register_keras_serializable(package="image_cnn")
class WarmupCosineRestarts(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to peak, then cosine decay with restarts (SGDR): cycles double in length
    and the last one ends with the training."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, restarts: int, alpha: float = 0.01):
        super().__init__()
        self.peak, self.warmup_steps, self.total_steps = float(peak), int(warmup_steps), int(total_steps)
        self.restarts, self.alpha = int(restarts), float(alpha)
        # rounded up: rounded down, the cycles ended a few steps early and training ended back at the peak
        first_cycle = max(1, math.ceil((self.total_steps - self.warmup_steps) / (2 ** (self.restarts + 1) - 1)))
        self._cosine = keras.optimizers.schedules.CosineDecayRestarts(
            self.peak, first_decay_steps=first_cycle, t_mul=2.0, m_mul=1.0, alpha=self.alpha)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warming = self.peak * (step + 1) / max(self.warmup_steps, 1)
        return tf.where(step < self.warmup_steps, warming, self._cosine(step - self.warmup_steps))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "restarts": self.restarts, "alpha": self.alpha}


def smoothed_sparse_crossentropy(num_classes: int, label_smoothing: float):
    """Cross-entropy from logits on integer labels, with label smoothing (which Keras 2's sparse loss lacks)."""
    def loss(labels, logits):
        one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
        return keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True,
                                                     label_smoothing=label_smoothing)
    return loss


def schedule_for(training: TrainingConfig, steps_per_epoch: int, replicas: int):
    """Peak learning rate x replicas (the linear scaling rule); the warm-up takes at most half the training."""
    total_steps = training.epochs * steps_per_epoch
    warmup_steps = min(round(training.warmup_epochs * steps_per_epoch), total_steps // 2)
    if training.schedule == "linear":
        return WarmupLinearDecay(training.learning_rate * replicas, warmup_steps, total_steps)
    return WarmupCosineRestarts(training.learning_rate * replicas, warmup_steps=warmup_steps,
                                total_steps=total_steps, restarts=training.restarts)


def compile_model(model: keras.Model, model_config: ModelConfig, training: TrainingConfig,
                  steps_per_epoch: int, replicas: int, loss=None):
    """Optimizer, schedule, loss (by default, label-smoothed cross-entropy on the labels) and metric;
    returns the learning-rate schedule."""
    schedule = schedule_for(training, steps_per_epoch, replicas)
    model.compile(optimizer=optimizer_for(model_config, training, schedule),
                  loss=loss or smoothed_sparse_crossentropy(model_config.num_classes, training.label_smoothing),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return schedule


def optimizer_for(model_config: ModelConfig, training: TrainingConfig, learning_rate) -> keras.optimizers.Optimizer:
    """Adam, or SGD with Nesterov momentum; decoupled weight decay when the model asks for it (L2 mode
    lives in the layers); with training.ema, an average of the weights that fit writes into the model
    when it ends, so that the average is what is exported."""
    decay = model_config.weight_decay if model_config.weight_decay_mode == "decoupled" else 0.0
    average = {"use_ema": True, "ema_momentum": training.ema} if training.ema else {}
    if training.optimizer == "sgd":
        return NormBiasScaledSGD(learning_rate, momentum=training.momentum, nesterov=True, weight_decay=decay or None,
                                 bias_scale=training.bias_lr_scale, **average)
    if decay:
        return keras.optimizers.AdamW(learning_rate, weight_decay=decay, **average)
    return keras.optimizers.Adam(learning_rate, **average)


def is_norm_offset(variable: tf.Variable) -> bool:
    """A BatchNormalization layer's offset (beta)."""
    return variable.name.split("/")[-1].startswith("beta")


@keras.utils.register_keras_serializable(package="image_cnn")
class NormBiasScaledSGD(keras.optimizers.SGD):
    """SGD whose steps on BatchNorm offsets are bias_scale times larger. The records train these with
    64x the learning rate: after a BatchNorm without a scale, the convolutions' effective rate grows as
    weight decay shrinks their weights, and the offsets' does not. With momentum, a gradient x k is a
    step x k; the decoupled weight decay is applied apart and stays as it is, as the records keep it."""

    def __init__(self, *args, bias_scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bias_scale = float(bias_scale)

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        if self.bias_scale != 1.0:
            grads_and_vars = [(g * self.bias_scale if g is not None and is_norm_offset(v) else g, v)
                              for g, v in grads_and_vars]
        return super().apply_gradients(grads_and_vars, *args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "bias_scale": self.bias_scale}


class Lookahead(keras.callbacks.Callback):
    """The records' average of the weights (KellerJordan/cifar10-airbench, LookaheadState): every
    `every` steps the average moves toward the weights, BatchNorm statistics included, and the
    weights are set to it. Its decay grows as 0.95**every x (step / total)**3: early steps are hardly
    averaged, late ones much. When training ends, the weights are the average, and that is exported.
    A resumed training starts a new average from the restored weights."""

    def __init__(self, total_steps: int, every: int = 5):
        super().__init__()
        self.total_steps, self.every = total_steps, every
        self._average, self._step = [], 0

    def on_train_begin(self, logs=None):
        self._average = [w.numpy() for w in self.model.weights]
        self._step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every == 0:
            decay = 0.95 ** self.every * min(self._step / self.total_steps, 1.0) ** 3
            for index, weight in enumerate(self.model.weights):
                self._average[index] += (1.0 - decay) * (weight.numpy() - self._average[index])
                weight.assign(self._average[index])

    def on_train_end(self, logs=None):
        for weight, average in zip(self.model.weights, self._average):
            weight.assign(average)
