"""The settings of a pipeline: one frozen, validated object, built once per command from the flags
(pipeline/flags.py) and read by the wiring, the Pusher, the run summary and the report.

Every default lives in these classes (and in ImageSpec, TrainingConfig and ModelConfig): a flag that
neither the user nor a preset sets keeps it. It sits at the lowest layer because the components (the
Pusher records the thresholds) read it as well as the pipeline."""
import dataclasses
import os
from typing import Any, Dict, Tuple

from models import lite
from models.model import ModelConfig
from models.preprocessing import ImageSpec
from models.recipe import TrainingConfig

DEFAULT_MAX_IMAGE_PIXELS = 25_000_000  # decoding a larger image would take gigabytes (a decompression bomb)


def check_fraction(name: str, value) -> None:
    """A bound given as a number must be in [0, 1]; a Kubeflow run-time parameter is checked when read."""
    if isinstance(value, (int, float)) and not 0 <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def _fields(config) -> Dict[str, Any]:
    """A config's fields as they are (dataclasses.asdict deep-copies, which a RuntimeParameter refuses)."""
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """What the Evaluator needs to bless a model, recorded with every promotion."""
    min_accuracy: Any = 0.9         # eval accuracy; a float, or on Kubeflow a run-time parameter
    max_accuracy_drop: float = 0.01  # at most this far below the champion's accuracy on this run's eval split
    min_class_accuracy: float = 0.0  # every class's accuracy (0: no per-class floor)

    def __post_init__(self):
        for name, value in _fields(self).items():
            check_fraction(name, value)

    def as_dict(self) -> Dict[str, Any]:
        return _fields(self)


@dataclasses.dataclass(frozen=True)
class LiteBounds:
    """The TFLite files to make, and what one needs to be pushed beside the SavedModel."""
    max_accuracy_drop: float = 0.01  # at most this far below the SavedModel's eval accuracy
    min_agreement: float = 0.98      # top-1 answers the same as the SavedModel's on this share of eval images
    variants: Tuple[str, ...] = ()   # empty: all of lite.VARIANTS; float32 is always made

    def __post_init__(self):
        check_fraction("max_tflite_accuracy_drop", self.max_accuracy_drop)
        check_fraction("min_tflite_agreement", self.min_agreement)
        unknown = sorted(set(self.variants) - set(lite.VARIANTS))
        if unknown:
            raise ValueError(f"unknown TFLite variant(s) {unknown}: choose from {list(lite.VARIANTS)}")
        # in lite.VARIANTS' order, float32 always: the other files' sizes are given against it
        object.__setattr__(self, "variants", tuple(
            v for v in lite.VARIANTS if not self.variants or v in self.variants or v == "float32"))


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """How the images are split, checked and compared with the last accepted run."""
    eval_percent: int = 20          # eval share of a folder without train/ and test/ sub-folders
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images are rejected without being decoded
    max_class_drift: float = 0.05   # largest change of a class's share since the last accepted run
    strict: bool = False            # fail the run if any file is rejected

    def __post_init__(self):
        if not isinstance(self.eval_percent, int) or not 1 <= self.eval_percent <= 50:
            raise ValueError(f"eval_percent must be an integer from 1 to 50, got {self.eval_percent!r}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {self.max_image_pixels!r}")
        check_fraction("max_class_drift", self.max_class_drift)


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """Everything a run of the pipeline is told, besides its paths."""
    image: ImageSpec = dataclasses.field(default_factory=ImageSpec)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
    lite: LiteBounds = dataclasses.field(default_factory=LiteBounds)
    data: DataOptions = dataclasses.field(default_factory=DataOptions)
    warm_start: bool = False      # start from the champion's weights when it has the same network and classes
    retrain_always: bool = False  # train even when nothing changed since the champion

    def __post_init__(self):
        self._check_backbone()
        if self.training.quantization_aware_epochs and "int8" not in self.lite.variants:
            raise ValueError("--quantization-aware fine-tunes for the int8 TFLite file: add int8 to --tflite")

    def _check_backbone(self) -> None:
        from models.applications import check_input
        backbone, weights = self.model.backbone, self.training.backbone_weights
        check_input(backbone, self.image.shape)
        fine_tuning = self.training.fine_tune_epochs != TrainingConfig.fine_tune_epochs
        if backbone == "none" and (weights != "none" or fine_tuning):
            raise ValueError("--backbone-weights and --fine-tune-epochs need --backbone mobilenet_v2 or "
                             "efficientnet_b0")
        if self.model.architecture == "dense" and backbone == "none" and self.training.quantization_aware_epochs:
            raise ValueError("--quantization-aware works on the residual and classic networks: the dense network's "
                             "frozen whitening layer has no BatchNormalization to fold; post-training int8 applies")
        if backbone != "none" and self.training.quantization_aware_epochs:
            raise ValueError("--quantization-aware works on the custom CNN only: tensorflow-model-optimization "
                             "cannot quantize a Keras application nested in the model")
        if weights not in ("none", "imagenet") and "://" not in weights and not os.path.isfile(weights):
            raise ValueError(f"--backbone-weights {weights}: no such file (docs/transfer-learning.md)")

    def shaping_the_model(self) -> Dict[str, Any]:
        """The settings that shape the trained model or the validation of its data (the RetrainGate's
        key): not the thresholds that judge it, nor epochs, a run-time parameter the gate adds itself."""
        training = {k: v for k, v in dataclasses.asdict(self.training).items() if k != "epochs"}
        return {"image": dataclasses.asdict(self.image), "training": training,
                "model": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
                "tflite_variants": list(self.lite.variants), "warm_start": self.warm_start}


def build(parts: Dict[Any, Dict[str, Any]]) -> PipelineSettings:
    """PipelineSettings from the values given for each part ("image", "training", "model", "thresholds",
    "lite", "data"; None for its own fields); what is not given keeps its default."""
    classes = {"image": ImageSpec, "training": TrainingConfig, "model": ModelConfig, "thresholds": Thresholds,
               "lite": LiteBounds, "data": DataOptions}
    return PipelineSettings(**{part: cls(**parts.get(part, {})) for part, cls in classes.items()},
                            **parts.get(None, {}))
