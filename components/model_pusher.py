"""ModelPusher: publishes a blessed model as a new serving version, the champion, with a promotion
record (models/promotion.py). The pipeline runs it only for a blessed model (a tfx.dsl.Cond);
it refuses an unblessed one all the same.
"""
import dataclasses
import os
import re
from typing import Any, Callable, Dict, List, Tuple

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

from models import promotion
from components.artifacts import RetrainDecision, TFLiteModels, serving_model_path
from components.lite_models import QUALITY_FILENAME, read_quality
from models.progress import key_figure
from components.retrain_gate import RUN_FINGERPRINT_PROPERTY
from components.evaluation import COMPARED_WITH_PROPERTY, promotion_metrics, read_evaluation
from models import features
from models.labels import read_labels
from models.settings import Thresholds

THRESHOLD_NAMES = tuple(field.name for field in dataclasses.fields(Thresholds))

PUSHED_PROPERTY, VERSION_PROPERTY, DESTINATION_PROPERTY = "pushed", "pushed_version", "pushed_destination"
ALREADY_SERVING_PROPERTY = "already_serving"  # 1: the champion is this very model; nothing was pushed
HELD_PROPERTY = "held"  # 1: the champion is pinned (a rollback); nothing was pushed
SUPERSEDED_PROPERTY = "superseded"  # 1: another version became the champion after the comparison
TFLITE_DIR = "tflite"


def superseded_line(compared_with: int, champion_version: int) -> str:
    """One line naming the version the model was compared with and the one that serves instead."""
    compared = f"champion version {compared_with}" if compared_with else "no champion"
    return (f"superseded: this model was compared with {compared}, but version {champion_version} became the "
            f"champion since; nothing pushed (a new run compares with it)")


def model_content(model_path: str, entry: Dict[str, Any], lite_models_uri: str = ""
                  ) -> Tuple[Callable[[str], None], Dict[str, Any]]:
    """What publishing a trained model writes (see models.promotion): write(staging) fills a
    version with the SavedModel and, in tflite/, the TFLite variants whose quality allows it beside
    labels.txt and quality.json; and the promotion entry with that quality added."""
    quality = read_quality(lite_models_uri) if lite_models_uri else None

    def write(staging: str) -> None:
        io_utils.copy_dir(model_path, staging)
        if quality:
            lite_dir = os.path.join(staging, TFLITE_DIR)
            pushed = [f"{name}.tflite" for name, measured in quality["variants"].items() if measured["push"]]
            io_utils.copy_dir(lite_models_uri, lite_dir,
                              allow_regex_patterns=["/" + re.escape(name) + "$" for name in
                                                    pushed + [features.LABELS_FILENAME, QUALITY_FILENAME]])
    return write, ({**entry, "tflite": quality["variants"]} if quality else entry)


class ModelPusherSpec(types.ComponentSpec):
    PARAMETERS = {
        "serving_dir": ExecutionParameter(type=str),
        # the orchestrator's id of this run when it hands it over as a value (on Kubeflow: the KFP run's
        # id, from the driver's {{$.pipeline_job_uuid}}); empty: TFX's pipeline run id (local runs)
        "run_id": ExecutionParameter(type=str, optional=True),
        # recorded with the promotion; separate values, so that a run-time parameter can be one
        **{name: ExecutionParameter(type=float) for name in THRESHOLD_NAMES},
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "lite_models": ChannelParameter(type=TFLiteModels),
        # the RetrainGate's decision: its run fingerprint is recorded, so that the next run can tell
        # whether anything changed since this model was trained
        "decision": ChannelParameter(type=RetrainDecision),
    }
    OUTPUTS = {"pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        if blessing.get_int_custom_property("blessed") != 1:
            raise RuntimeError("refusing to push a model the Evaluator did not bless")
        model_path = serving_model_path(artifact_utils.get_single_instance(input_dict["model"]).uri)
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        evaluation = read_evaluation(artifact_utils.get_single_instance(input_dict["evaluation"]).uri,
                                     read_labels(os.path.join(examples.uri, features.LABELS_FILENAME)))
        run_id = exec_properties.get("run_id") or (self._context.pipeline_run_id if self._context else None)
        entry = {"action": "blessed", "run_id": run_id,
                 "metrics": promotion_metrics(evaluation),
                 "thresholds": Thresholds(**{name: float(exec_properties[name]) for name in THRESHOLD_NAMES}).as_dict(),
                 "data_fingerprint": features.read_ingest_report(examples.uri)["data_fingerprint"],
                 RUN_FINGERPRINT_PROPERTY: artifact_utils.get_single_instance(input_dict["decision"])
                 .get_string_custom_property(RUN_FINGERPRINT_PROPERTY),
                 "trained_model": model_path}
        serving_dir = exec_properties["serving_dir"]
        pushed = artifact_utils.get_single_instance(output_dict["pushed_model"])
        serving = promotion.champion(serving_dir)
        if serving and promotion.record(serving_dir, serving["version"]).get("trained_model") == model_path:
            # A rerun that reused the Trainer's output: a new version would be a copy of the champion.
            version = serving["version"]
            pushed.set_int_custom_property(PUSHED_PROPERTY, 0)
            pushed.set_int_custom_property(ALREADY_SERVING_PROPERTY, 1)
            key_figure(f"version {version} already serves this model; nothing pushed")
        else:
            lite_models = artifact_utils.get_single_instance(input_dict["lite_models"])
            compared_with = artifact_utils.get_single_instance(input_dict["evaluation"]).get_int_custom_property(
                COMPARED_WITH_PROPERTY)
            version, outcome = promotion.publish_if_still_champion(
                serving_dir, *model_content(model_path, entry, lite_models.uri), compared_with=compared_with)
            pushed.set_int_custom_property(PUSHED_PROPERTY, int(outcome == promotion.PUBLISHED))
            pushed.set_int_custom_property(HELD_PROPERTY, int(outcome == promotion.HELD))
            pushed.set_int_custom_property(SUPERSEDED_PROPERTY, int(outcome == promotion.SUPERSEDED))
            pushed.set_int_custom_property(COMPARED_WITH_PROPERTY, compared_with)
            key_figure({promotion.PUBLISHED: f"version {version} is the champion",
                        promotion.HELD: f"version {version} is pinned (a rollback); held, nothing pushed",
                        promotion.SUPERSEDED: superseded_line(compared_with, version)}[outcome])
        pushed.set_int_custom_property(VERSION_PROPERTY, version)
        pushed.set_string_custom_property(DESTINATION_PROPERTY, promotion.version_dir(serving_dir, version))


class ModelPusher(base_component.BaseComponent):
    SPEC_CLASS = ModelPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, *, model: types.BaseChannel, model_blessing: types.BaseChannel,
                 evaluation: types.BaseChannel, examples: types.BaseChannel, lite_models: types.BaseChannel,
                 decision: types.BaseChannel, serving_dir: str, thresholds: Thresholds, run_id: str = ""):
        """thresholds: recorded with the promotion (min_accuracy may be a RuntimeParameter of type float)."""
        super().__init__(spec=ModelPusherSpec(
            model=model, model_blessing=model_blessing, evaluation=evaluation, examples=examples,
            lite_models=lite_models, decision=decision, serving_dir=serving_dir, run_id=run_id or None,
            **thresholds.as_dict(),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
