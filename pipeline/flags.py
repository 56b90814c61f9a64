"""The pipeline flags both runners take (local_runner, and kubeflow_runner's compile, submit, schedule
and run-local): one definition each, and the settings of create_pipeline built from them.

A flag left unset keeps the default of the config it feeds (ImageSpec, TrainingConfig, ModelConfig),
so there is one source for every default."""
import argparse
import os
from typing import Any, Dict

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


def _given(**values) -> Dict[str, Any]:
    """The flags the user set; the rest keep the configs' defaults."""
    return {key: value for key, value in values.items() if value is not None}


def add_image_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=at_least(1), nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="default: ImageSpec's (28 28)")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="default: ImageSpec.channels (1)")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=at_least(1), help="default: TrainingConfig.epochs (15)")
    parser.add_argument("--batch-size", type=at_least(1), help="per replica; default: TrainingConfig.batch_size (32)")
    parser.add_argument("--learning-rate", type=float,
                        help="peak, for one replica (x replicas when several); default: TrainingConfig.learning_rate")
    parser.add_argument("--restarts", type=at_least(0),
                        help="cosine cycles after the warm-up, each twice as long as the one before; "
                             "default: TrainingConfig.restarts (2)")
    parser.add_argument("--shift-rotate", action=argparse.BooleanOptionalAction,
                        help="augment with small shifts and rotations (default: on)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction,
                        help="augment with left-right mirror images (default: off: a flip changes digits and text)")
    parser.add_argument("--test-time-flip", action=argparse.BooleanOptionalAction,
                        help="serve the mean of the answers for each image and its mirror (needs --flip; twice "
                             "the inference time; default: off)")
    parser.add_argument("--test-time-shift", type=at_least(0), metavar="PIXELS",
                        help="serve the mean of the answers for each image and four copies shifted diagonally by "
                             "PIXELS (with --test-time-flip, their mirrors too; needs --crop-pad of at least PIXELS; "
                             "five times the inference time; default 0: off)")
    parser.add_argument("--crop-pad", type=at_least(0), metavar="PIXELS",
                        help="augment by shifting each image up to this many pixels, zero-filled (default 0: off)")
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
    parser.add_argument("--architecture", choices=("residual", "classic"),
                        help="residual: depthwise-separable residual blocks (default); classic: Conv-BN-ReLU-Pool")
    parser.add_argument("--attention", choices=("se", "cbam", "none"),
                        help="attention in residual blocks: squeeze-excite (default), CBAM or none")
    parser.add_argument("--width", type=positive,
                        help="multiplies the filters of every layer (default 1; the run prints the parameter count)")
    parser.add_argument("--depth", type=at_least(1), help="blocks per stage (default 1)")
    parser.add_argument("--backbone", choices=("mobilenet_v2", "efficientnet_b0", "none"),
                        help="a Keras application instead of the custom CNN, trained in two phases: frozen, then "
                             "its top layers fine-tuned (default none; images of at least 32x32)")
    parser.add_argument("--backbone-weights", metavar="PATH|imagenet|none",
                        help="the backbone's starting weights: a weights file without the top (README: Transfer "
                             "learning), imagenet (downloaded by Keras) or none (random; the default)")
    parser.add_argument("--fine-tune-epochs", type=at_least(0),
                        help="with --backbone: epochs of the second phase, top layers unfrozen at a tenth of the "
                             "peak rate (default: TrainingConfig.fine_tune_epochs, 5)")
    parser.add_argument("--weight-decay", type=float, help="default 0 (off)")
    parser.add_argument("--weight-decay-mode", choices=("decoupled", "l2"), help="AdamW (default) or L2 in the loss")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-percent", type=int,
                        help=f"eval share of a folder without train/ and test/ sub-folders (default {configs.EVAL_PERCENT})")
    parser.add_argument("--strict", action="store_true", default=None, help="fail the run if any file is rejected")
    parser.add_argument("--retrain-always", action="store_true", default=None,
                        help="train even when the data, settings and code are those the champion was trained on "
                             "(otherwise such a run ends `unchanged` after ingestion)")
    parser.add_argument("--max-class-drift", type=float,
                        help="largest change of a class's share of the images since the last accepted run "
                             f"(default {configs.MAX_CLASS_DRIFT})")
    parser.add_argument("--max-image-pixels", type=at_least(1),
                        help="images with more pixels are rejected without being decoded (default 25000000)")


def add_threshold_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-accuracy", type=float,
                        help=f"eval accuracy a model needs to be blessed and pushed (default {configs.MIN_ACCURACY})")
    parser.add_argument("--max-accuracy-drop", type=float,
                        help="how far below the champion's accuracy (on this run's eval split) a model may be "
                             f"(default {configs.MAX_ACCURACY_DROP})")
    parser.add_argument("--min-class-accuracy", type=float,
                        help="accuracy every class needs (default 0: no per-class floor)")
    parser.add_argument("--max-tflite-accuracy-drop", type=float,
                        help="a TFLite variant this far below the SavedModel's eval accuracy is not pushed "
                             f"(default {configs.MAX_TFLITE_ACCURACY_DROP})")
    parser.add_argument("--tflite", nargs="+", metavar="VARIANT",
                        help="the TFLite files to make: float32, dynamic_range, float16, int8 (default: all; "
                             "float32 is always made, the others' sizes are given against it)")
    parser.add_argument("--min-tflite-agreement", type=float,
                        help="nor one whose top-1 answers agree with the SavedModel's on a smaller share of eval "
                             f"images (default {configs.MIN_TFLITE_AGREEMENT})")


def add_preset_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(configs.PRESETS),
                        help="flag values for a kind of images (README: Presets); flags you give win over them")


def add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """Every choice of the pipeline's data, model, training and promotion."""
    for add in (add_preset_flag, add_image_flags, add_training_flags, add_model_flags, add_data_flags,
                add_threshold_flags):
        add(parser)


# No flag of add_pipeline_flags has an argparse default, so that a preset can set any of them (with_preset
# fills only what is None); these are the defaults of those the configs do not default themselves, taken
# when neither the user nor the preset gives a value.
PRESETTABLE_DEFAULTS = {"min_accuracy": configs.MIN_ACCURACY, "min_tflite_agreement": configs.MIN_TFLITE_AGREEMENT,
                        "max_accuracy_drop": configs.MAX_ACCURACY_DROP, "min_class_accuracy": 0.0,
                        "max_tflite_accuracy_drop": configs.MAX_TFLITE_ACCURACY_DROP,
                        "eval_percent": configs.EVAL_PERCENT, "max_class_drift": configs.MAX_CLASS_DRIFT,
                        "strict": False, "warm_start": False, "retrain_always": False}


def with_preset(args: argparse.Namespace) -> argparse.Namespace:
    """args with every flag the user left unset taken from the preset, if one was given, then the
    defaults of PRESETTABLE_DEFAULTS: both runners call it on their parsed flags."""
    values = vars(args).copy()
    for name, value in configs.PRESETS.get(args.preset, {}).items():
        if values[name] is None:
            values[name] = value
    if args.test_time_flip is None and not values["flip"]:  # a preset's answers for mirrors yield to --no-flip
        values["test_time_flip"] = None
    for name, default in PRESETTABLE_DEFAULTS.items():
        if values[name] is None:
            values[name] = default
    return argparse.Namespace(**values)


def _tflite_variants(names, quantization_aware) -> tuple:
    from components.lite_models import chosen_variants  # raises ValueError for an unknown name
    variants = chosen_variants(names or ())
    if quantization_aware and "int8" not in variants:
        raise ValueError("--quantization-aware fine-tunes for the int8 TFLite file: add int8 to --tflite")
    return variants


def _check_backbone(args: argparse.Namespace, image_spec) -> None:
    from models.applications import check_input
    backbone = args.backbone or "none"
    check_input(backbone, image_spec.shape)
    if backbone == "none" and (args.backbone_weights not in (None, "none") or args.fine_tune_epochs is not None):
        raise ValueError("--backbone-weights and --fine-tune-epochs need --backbone mobilenet_v2 or efficientnet_b0")
    if backbone != "none" and args.quantization_aware:
        raise ValueError("--quantization-aware works on the custom CNN only: tensorflow-model-optimization cannot "
                         "quantize a Keras application nested in the model")
    weights = args.backbone_weights
    if weights not in (None, "none", "imagenet") and "://" not in weights and not os.path.isfile(weights):
        raise ValueError(f"--backbone-weights {weights}: no such file (README: Transfer learning)")


def _absolute(weights):
    """A local weights file's absolute path: the Trainer runs in another working directory."""
    if weights in (None, "none", "imagenet") or "://" in weights:
        return weights
    return os.path.abspath(weights)


def pipeline_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """create_pipeline's keyword arguments for the flags of add_pipeline_flags, as a runner's parse_args
    returns them (with_preset applied). Raises ValueError (one line) for a value the configs refuse."""
    from models.model import ModelConfig
    from models.preprocessing import ImageSpec
    from models.recipe import TrainingConfig
    height, width = args.image_size or (None, None)
    image_spec = ImageSpec(**_given(height=height, width=width, channels=args.channels))
    _check_backbone(args, image_spec)
    return dict(
        image_spec=image_spec,
        training=TrainingConfig(**_given(epochs=args.epochs, batch_size=args.batch_size,
                                         learning_rate=args.learning_rate, restarts=args.restarts,
                                         shift_rotate=args.shift_rotate, flip=args.flip, crop_pad=args.crop_pad,
                                         test_time_flip=args.test_time_flip, test_time_shift=args.test_time_shift,
                                         validation_percent=args.validation_percent,
                                         profile=args.profile, quantization_aware_epochs=args.quantization_aware,
                                         backbone_weights=_absolute(args.backbone_weights),
                                         fine_tune_epochs=args.fine_tune_epochs)),
        model=ModelConfig(**_given(backbone=args.backbone, architecture=args.architecture, attention=args.attention,
                                   width=args.width, depth=args.depth, weight_decay=args.weight_decay,
                                   weight_decay_mode=args.weight_decay_mode)),
        min_accuracy=args.min_accuracy, max_accuracy_drop=args.max_accuracy_drop,
        min_class_accuracy=args.min_class_accuracy, max_tflite_accuracy_drop=args.max_tflite_accuracy_drop,
        min_tflite_agreement=args.min_tflite_agreement,
        eval_percent=args.eval_percent, max_class_drift=args.max_class_drift, strict=args.strict,
        warm_start=args.warm_start, tflite_variants=_tflite_variants(args.tflite, args.quantization_aware),
        **_given(max_image_pixels=args.max_image_pixels))
