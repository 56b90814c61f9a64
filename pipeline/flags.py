"""The pipeline flags both runners take (local_runner, and kubeflow_runner's compile, submit, schedule
and run-local): one definition each, and the PipelineSettings built from them (models/settings.py).

A flag left unset, and not set by a preset, keeps the default of the settings it feeds, so there is
one source for every default."""

import argparse
import os
from typing import Any, Dict

from models import settings
from models.settings import DataOptions, LiteBounds, Thresholds
from pipeline import configs


def at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_image_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=at_least(1), nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="default: ImageSpec's (28 28)")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="default: ImageSpec.channels (1)")


def add_optimizer_flags(parser: argparse.ArgumentParser) -> None:
    """The optimizer, its schedule and averages, and the arithmetic: part of add_training_flags."""
    parser.add_argument("--optimizer", choices=("adam", "sgd"),
                        help="adam (AdamW with --weight-decay; the default) or sgd (Nesterov, with --momentum)")
    parser.add_argument("--momentum", type=float, help="sgd's; default: TrainingConfig.momentum (0.9)")
    parser.add_argument("--bias-lr-scale", type=float, metavar="FACTOR",
                        help="sgd's steps on BatchNorm offsets x FACTOR (the CIFAR-10 records: 64; default 1)")
    parser.add_argument("--schedule", choices=("cosine", "linear"),
                        help="after the warm-up: cosine decay with --restarts (default), or linear decay to 0.07 of "
                             "the peak")
    parser.add_argument("--warmup-epochs", type=float, help="default: TrainingConfig.warmup_epochs (1)")
    parser.add_argument("--label-smoothing", type=float, help="default: TrainingConfig.label_smoothing (0.1)")
    parser.add_argument("--ema", type=float, metavar="MOMENTUM",
                        help="keep an exponential average of the weights (e.g. 0.99) and export it as the served "
                             "weights (default 0: off)")
    parser.add_argument("--lookahead", action=argparse.BooleanOptionalAction,
                        help="instead of --ema: every 5 steps, move an average toward the weights (BatchNorm "
                             "statistics included) and set the weights to it, averaging more as training ends; "
                             "the average is exported (the CIFAR-10 records'; default: off)")
    parser.add_argument("--precision", choices=("float32", "auto"),
                        help="the Trainer's arithmetic: auto trains in mixed bfloat16 where the CPU has bfloat16 "
                             "instructions (avx512_bf16, amx_bf16) and in float32 elsewhere; the exported model is "
                             "float32 either way (default float32)")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=at_least(1), help="default: TrainingConfig.epochs (15)")
    parser.add_argument("--batch-size", type=at_least(1), help="per replica; default: TrainingConfig.batch_size (32)")
    parser.add_argument("--learning-rate", type=float,
                        help="peak, for one replica (x replicas when several); default: TrainingConfig.learning_rate")
    parser.add_argument("--restarts", type=at_least(0),
                        help="cosine cycles after the warm-up, each twice as long as the one before; "
                             "default: TrainingConfig.restarts (2)")
    add_optimizer_flags(parser)
    parser.add_argument("--shift-rotate", action=argparse.BooleanOptionalAction,
                        help="augment with small shifts and rotations (default: on)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction,
                        help="augment with left-right mirror images (default: off: a flip changes digits and text)")
    parser.add_argument("--alternating-flip", action=argparse.BooleanOptionalAction,
                        help="with --flip: mirror each image every other epoch, from a random start, instead of at "
                             "random each time (default: off)")
    parser.add_argument("--test-time-flip", action=argparse.BooleanOptionalAction,
                        help="serve the mean of the answers for each image and its mirror (needs --flip; twice "
                             "the inference time; default: off)")
    parser.add_argument("--test-time-shift", type=at_least(0), metavar="PIXELS",
                        help="serve the mean of the answers for each image and four copies shifted diagonally by "
                             "PIXELS (with --test-time-flip, their mirrors too; needs --crop-pad of at least PIXELS; "
                             "five times the inference time; default 0: off)")
    parser.add_argument("--crop-pad", type=at_least(0), metavar="PIXELS",
                        help="augment by shifting each image up to this many pixels (default 0: off)")
    parser.add_argument("--pad-mode", choices=("zero", "reflect"),
                        help="what --crop-pad fills the uncovered border with: zeros (default) or the image reflected")
    parser.add_argument("--validation-percent", type=at_least(0), metavar="PERCENT",
                        help="share of the training images the Trainer holds out to watch each epoch and stop "
                             "early (0: train on all of them, no early stopping); default: "
                             "TrainingConfig.validation_percent (10)")
    parser.add_argument("--warm-start", action="store_true", default=None,
                        help="start from the champion's weights when it has the same network and classes "
                             "(otherwise from scratch, saying why); fewer epochs then reach its accuracy")
    parser.add_argument("--quantization-aware", type=at_least(1), nargs="?", const=configs.QUANTIZATION_AWARE_EPOCHS,
                        metavar="EPOCHS",
                        help="then fine-tune a fake-quantized copy for EPOCHS (default "
                             f"{configs.QUANTIZATION_AWARE_EPOCHS}) and measure its int8 TFLite file beside the "
                             "post-training one; the one that may be pushed and agrees best is kept")
    parser.add_argument("--profile", action="store_true", default=None,
                        help="trace 10 training steps of the second epoch into the Trainer's TensorBoard logs")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--architecture", choices=("residual", "classic", "dense"),
                        help="residual: depthwise-separable residual blocks (default); classic: Conv-BN-ReLU-Pool; "
                             "dense: a whitening layer the Transform step computes, dense 3x3 conv groups with "
                             "pooling and a max-pool head, the shape of the CIFAR-10 speed records (docs/model.md)")
    parser.add_argument("--group-filters", type=at_least(1), nargs="+", metavar="FILTERS",
                        help="dense: the conv groups' filters, one number per group (default 64 128 128, "
                             "airbench93's; 64 256 256 is airbench94's)")
    parser.add_argument("--attention", choices=("se", "cbam", "none"),
                        help="attention in residual blocks: squeeze-excite (default), CBAM or none")
    parser.add_argument("--width", type=positive,
                        help="multiplies the filters of every layer (default 1; the run prints the parameter count)")
    parser.add_argument("--depth", type=at_least(1), help="blocks per stage (default 1)")
    parser.add_argument("--backbone", choices=("mobilenet_v2", "efficientnet_b0", "none"),
                        help="a Keras application instead of the custom CNN, trained in two phases: frozen, then "
                             "its top layers fine-tuned (default none; images of at least 32x32)")
    parser.add_argument("--backbone-weights", metavar="PATH|imagenet|none",
                        help="the backbone's starting weights: a weights file without the top (docs/transfer-learning.md), "
                             "imagenet (downloaded by Keras) or none (random; the default)")
    parser.add_argument("--fine-tune-epochs", type=at_least(0),
                        help="with --backbone: epochs of the second phase, top layers unfrozen at a tenth of the "
                             "peak rate (default: TrainingConfig.fine_tune_epochs, 5)")
    parser.add_argument("--weight-decay", type=float, help="default 0 (off)")
    parser.add_argument("--weight-decay-mode", choices=("decoupled", "l2"), help="AdamW (default) or L2 in the loss")
    parser.add_argument("--bn-momentum", type=float,
                        help="of BatchNormalization's moving statistics; default: ModelConfig.bn_momentum (0.9)")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-percent", type=int,
                        help=f"eval share of a folder without train/ and test/ sub-folders (default {DataOptions.eval_percent})")
    parser.add_argument("--strict", action="store_true", default=None, help="fail the run if any file is rejected")
    parser.add_argument("--retrain-always", action="store_true", default=None,
                        help="train even when the data, settings and code are those the champion was trained on "
                             "(otherwise such a run ends `unchanged` after ingestion)")
    parser.add_argument("--max-class-drift", type=float,
                        help="largest change of a class's share of the images since the last accepted run "
                             f"(default {DataOptions.max_class_drift})")
    parser.add_argument("--max-image-pixels", type=at_least(1),
                        help=f"images with more pixels are rejected without being decoded (default {DataOptions.max_image_pixels})")


def add_threshold_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-accuracy", type=float,
                        help=f"eval accuracy a model needs to be blessed and pushed (default {Thresholds.min_accuracy})")
    parser.add_argument("--max-accuracy-drop", type=float,
                        help="how far below the champion's accuracy (on this run's eval split) a model may be "
                             f"(default {Thresholds.max_accuracy_drop})")
    parser.add_argument("--min-class-accuracy", type=float,
                        help="accuracy every class needs (default 0: no per-class floor)")
    parser.add_argument("--max-tflite-accuracy-drop", type=float,
                        help="a TFLite variant this far below the SavedModel's eval accuracy is not pushed "
                             f"(default {LiteBounds.max_accuracy_drop})")
    parser.add_argument("--tflite", nargs="+", metavar="VARIANT",
                        help="the TFLite files to make: float32, dynamic_range, float16, int8 (default: all; "
                             "float32 is always made, the others' sizes are given against it)")
    parser.add_argument("--min-tflite-agreement", type=float,
                        help="nor one whose top-1 answers agree with the SavedModel's on a smaller share of eval "
                             f"images (default {LiteBounds.min_agreement})")


def add_preset_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(configs.PRESETS),
                        help="flag values for a kind of images (docs/model.md: Presets); flags you give win over them")


def add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """Every choice of the pipeline's data, model, training and promotion."""
    for add in (add_preset_flag, add_image_flags, add_training_flags, add_model_flags, add_data_flags,
                add_threshold_flags):
        add(parser)


def with_preset(args: argparse.Namespace) -> argparse.Namespace:
    """args with every flag the user left unset taken from the preset, if one was given: both runners
    call it on their parsed flags. No flag of add_pipeline_flags has an argparse default, so a preset can
    set any of them; what neither sets stays None and keeps the default of the settings it feeds."""
    values = vars(args).copy()
    for name, value in configs.PRESETS.get(args.preset, {}).items():
        if values[name] is None:
            values[name] = value
    # a preset's value that needs a setting the user's flags turned off yields to them
    for name, needs in (("test_time_flip", values["flip"]), ("alternating_flip", values["flip"]),
                        ("lookahead", not values["ema"]), ("bias_lr_scale", values["optimizer"] == "sgd")):
        if getattr(args, name) is None and not needs:
            values[name] = None
    return argparse.Namespace(**values)


def _absolute(weights):
    """A local weights file's absolute path: the Trainer runs in another working directory."""
    if weights in (None, "none", "imagenet") or "://" in weights:
        return weights
    return os.path.abspath(weights)


# Where each flag of add_pipeline_flags lands in PipelineSettings: (part, field), part None for the
# settings' own fields. --image-size, whose two values are the ImageSpec's height and width, and --preset
# are read apart. A test fails when a flag is missing here, since its value would be ignored.
FLAG_FIELDS = {
    "channels": ("image", "channels"),
    **{name: ("training", name) for name in (
        "epochs", "batch_size", "learning_rate", "restarts", "shift_rotate", "flip", "test_time_flip",
        "test_time_shift", "crop_pad", "validation_percent", "profile", "fine_tune_epochs", "optimizer", "schedule",
        "warmup_epochs", "label_smoothing", "ema", "pad_mode", "momentum", "bias_lr_scale", "lookahead",
        "alternating_flip", "precision")},
    "quantization_aware": ("training", "quantization_aware_epochs"),
    "backbone_weights": ("training", "backbone_weights"),
    **{name: ("model", name) for name in (
        "architecture", "attention", "width", "depth", "backbone", "weight_decay", "weight_decay_mode",
        "bn_momentum", "group_filters")},
    **{name: ("data", name) for name in ("eval_percent", "strict", "max_class_drift", "max_image_pixels")},
    **{name: ("thresholds", name) for name in ("min_accuracy", "max_accuracy_drop", "min_class_accuracy")},
    "max_tflite_accuracy_drop": ("lite", "max_accuracy_drop"),
    "min_tflite_agreement": ("lite", "min_agreement"),
    "tflite": ("lite", "variants"),
    "warm_start": (None, "warm_start"),
    "retrain_always": (None, "retrain_always"),
}


def pipeline_settings(args: argparse.Namespace):
    """The PipelineSettings of the flags of add_pipeline_flags, as a runner's parse_args returns them
    (with_preset applied); flags left unset keep the settings' defaults. Raises ValueError (one line)
    for a value the settings refuse."""
    parts: Dict[str, Dict[str, Any]] = {"image": {}, "training": {}, "model": {}, "data": {}, "thresholds": {},
                                        "lite": {}, None: {}}
    for flag, (part, field) in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            parts[part][field] = value
    if args.image_size:
        parts["image"].update(height=args.image_size[0], width=args.image_size[1])
    if "backbone_weights" in parts["training"]:
        parts["training"]["backbone_weights"] = _absolute(parts["training"]["backbone_weights"])
    if "variants" in parts["lite"]:
        parts["lite"]["variants"] = tuple(parts["lite"]["variants"])
    return settings.build(parts)
