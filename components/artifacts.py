"""Artifact types and layouts the project's components share."""
from tfx.types import artifact
from tfx.utils import path_utils


class TFLiteModels(artifact.Artifact):
    """A folder of <variant>.tflite files with labels.txt and quality.json (components/lite_models.py)."""
    # On Kubeflow the type name is the class's import path, one dot allowed: components/__init__.py
    # exports the class under it.
    TYPE_NAME = "components.TFLiteModels"


class RetrainDecision(artifact.Artifact):
    """Whether a run trains (components/retrain_gate.py): its custom properties, and decision.json."""
    TYPE_NAME = "components.RetrainDecision"  # importable as such, like TFLiteModels


def serving_model_path(model_uri: str) -> str:
    """Where the Trainer wrote the SavedModel of the Model artifact at model_uri."""
    return path_utils.serving_model_path(model_uri)
