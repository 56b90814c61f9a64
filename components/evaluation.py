"""Model evaluation against absolute bounds and the champion.

- eval_config: TFMA settings. Overall and per-class accuracy (slices by class name) and a
  confusion matrix (read_evaluation derives top-1 precision and recall per class). Blessing needs
  overall accuracy >= min_accuracy, no more than max_accuracy_drop below the champion's on the
  same eval split, and optionally every class's accuracy >= min_class_accuracy.
- ChampionModel: a component that copies the serving folder's champion into a Model artifact, the
  Evaluator's baseline (open-source Kubeflow cannot run TFX's Resolver, so the lookup is a step of
  its own). With no champion yet the artifact is empty and marked so.
- ChampionEvaluator: TFX's Evaluator, except that an empty champion means "no baseline": a first
  run is judged by the absolute thresholds alone; and that the absolute bound on accuracy is a
  parameter of its own (a Kubeflow run-time parameter must be a top-level value, not inside a proto).
- read_evaluation: the evaluation artifact as plain JSON for run summaries and promotion records.
"""
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.proto import config_pb2  # tfma lists PerSliceMetricThreshold but does not export it
from tfx import types
from tfx import v1 as tfx
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import io_utils, json_utils, path_utils, proto_utils

from models import promotion
from models.progress import key_figure
from models import features
from models.labels import read_labels
from models.settings import check_fraction

ACCURACY = "sparse_categorical_accuracy"
CANDIDATE, BASELINE = "candidate", "champion"
CHAMPION_VERSION_PROPERTY = "champion_version"  # 0: there is no champion
CHAMPION_SKIPPED_PROPERTY = "champion_skipped"  # on the evaluation: why the champion was not compared
# on the evaluation: the champion version serving when the run looked (0: none), compared or not; the
# Pusher publishes only if it still serves (models/promotion.py publish_if_still_champion)
COMPARED_WITH_PROPERTY = "champion_version_seen"
MIN_ACCURACY_KEY = "min_accuracy"


def eval_config(*, label_key: str, class_key: str, num_classes: int,
                max_accuracy_drop: float, min_class_accuracy: float = 0.0) -> tfma.EvalConfig:
    """The evaluation, without the absolute bound on overall accuracy (with_min_accuracy adds it)."""
    for name, value in (("max_accuracy_drop", max_accuracy_drop), ("min_class_accuracy", min_class_accuracy)):
        check_fraction(name, value)
    overall, per_class = tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[class_key])
    accuracy_thresholds = [config_pb2.PerSliceMetricThreshold(
        slicing_specs=[overall], threshold=tfma.MetricThreshold(
            change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                                         absolute={"value": -max_accuracy_drop})))]
    if min_class_accuracy:
        accuracy_thresholds.append(config_pb2.PerSliceMetricThreshold(
            slicing_specs=[per_class], threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_class_accuracy}))))
    # The model type named, not inferred: TFMA would otherwise try to load each model as a Keras one
    # first, a full Keras revive, only to serve it by its signature anyway (TF_GENERIC).
    model_spec = dict(signature_name="serving_default", label_key=label_key, prediction_key="probabilities",
                      model_type=tfma.TF_GENERIC)
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(name=CANDIDATE, **model_spec),
                     tfma.ModelSpec(name=BASELINE, is_baseline=True, **model_spec)],
        slicing_specs=[overall, per_class],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(class_name="SparseCategoricalAccuracy", per_slice_thresholds=accuracy_thresholds),
            tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot")])])


@tfx.dsl.components.component
def ChampionModel(champion: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
                  serving_dir: tfx.dsl.components.Parameter[str]) -> None:
    """The serving folder's champion, copied as a Model artifact (empty when there is none)."""
    pointer = promotion.champion(serving_dir)
    if pointer:
        io_utils.copy_dir(promotion.version_dir(serving_dir, pointer["version"]),
                          path_utils.serving_model_dir(champion.uri))
    champion.set_int_custom_property(CHAMPION_VERSION_PROPERTY, pointer["version"] if pointer else 0)


def with_min_accuracy(config: tfma.EvalConfig, min_accuracy: float) -> tfma.EvalConfig:
    """The config with overall accuracy >= min_accuracy added to its overall accuracy threshold."""
    check_fraction("min_accuracy", min_accuracy)
    config = type(config).FromString(config.SerializeToString())
    for metrics_spec in config.metrics_specs:
        for metric in metrics_spec.metrics:
            for per_slice in metric.per_slice_thresholds:
                if metric.class_name == "SparseCategoricalAccuracy" and per_slice.slicing_specs == [tfma.SlicingSpec()]:
                    per_slice.threshold.value_threshold.lower_bound.value = min_accuracy
                    return config
    raise ValueError("the eval config has no overall SparseCategoricalAccuracy threshold to bound")


def champion_mismatch(champion_uri: str, examples_uri: str) -> Optional[str]:
    """Why the champion cannot be compared with this run's model, or None. A class id means what the
    class list says: with another list, the champion would be scored on relabelled data."""
    theirs_path = os.path.join(path_utils.serving_model_dir(champion_uri), features.LABELS_FILENAME)
    ours = read_labels(os.path.join(examples_uri, features.LABELS_FILENAME))
    theirs = read_labels(theirs_path) if tf.io.gfile.exists(theirs_path) else None
    if theirs == ours:
        return None
    said = f"classes {theirs}" if theirs is not None else f"no {features.LABELS_FILENAME}"
    return (f"not compared with the champion, whose {said} differ from this run's {ours}: judged on the "
            f"absolute bounds alone")


class _Executor(evaluator_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties):
        baseline = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
        examples = input_dict[standard_component_specs.EXAMPLES_KEY][0]
        skipped = None
        if baseline and baseline[0].get_int_custom_property(CHAMPION_VERSION_PROPERTY):
            skipped = champion_mismatch(baseline[0].uri, examples.uri)
        if baseline and (skipped or not baseline[0].get_int_custom_property(CHAMPION_VERSION_PROPERTY)):
            input_dict = {k: v for k, v in input_dict.items() if k != standard_component_specs.BASELINE_MODEL_KEY}
        exec_properties = dict(exec_properties)
        config = proto_utils.json_to_proto(exec_properties[standard_component_specs.EVAL_CONFIG_KEY], tfma.EvalConfig())
        exec_properties[standard_component_specs.EVAL_CONFIG_KEY] = proto_utils.proto_to_json(
            with_min_accuracy(config, float(exec_properties.pop(MIN_ACCURACY_KEY))))
        super().Do(input_dict, output_dict, exec_properties)
        evaluation_artifact = output_dict[standard_component_specs.EVALUATION_KEY][0]
        if skipped:
            evaluation_artifact.set_string_custom_property(CHAMPION_SKIPPED_PROPERTY, skipped)
        evaluation_artifact.set_int_custom_property(
            COMPARED_WITH_PROPERTY, baseline[0].get_int_custom_property(CHAMPION_VERSION_PROPERTY) if baseline else 0)
        evaluation = read_evaluation(evaluation_artifact.uri,
                                     read_labels(os.path.join(examples.uri, features.LABELS_FILENAME)))
        blessed = output_dict[standard_component_specs.BLESSING_KEY][0].get_int_custom_property("blessed") == 1
        champion = evaluation["champion_accuracy"]
        key_figure(f"accuracy {evaluation['accuracy']:.4f}"
                   + (f" (champion {champion:.4f})" if champion is not None else
                      f" ({skipped})" if skipped else " (no champion yet)")
                   + f"; blessed: {'yes' if blessed else 'no'}")


class ChampionEvaluatorSpec(standard_component_specs.EvaluatorSpec):
    PARAMETERS = {**standard_component_specs.EvaluatorSpec.PARAMETERS,
                  MIN_ACCURACY_KEY: ExecutionParameter(type=float)}


class ChampionEvaluator(tfx.components.Evaluator):
    SPEC_CLASS = ChampionEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(_Executor)

    def __init__(self, *, examples: types.BaseChannel, model: types.BaseChannel, baseline_model: types.BaseChannel,
                 eval_config: tfma.EvalConfig, min_accuracy):
        """min_accuracy: a float, or a RuntimeParameter of type float."""
        check_fraction("min_accuracy", min_accuracy)
        spec = ChampionEvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model, eval_config=eval_config,
            fairness_indicator_thresholds=json_utils.dumps(None), example_splits=json_utils.dumps(None),
            min_accuracy=min_accuracy, evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing))
        # Evaluator.__init__ builds its own spec; this one adds a parameter.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)  # pylint: disable=non-parent-init-called


def _slice_name(slice_key) -> str:
    """() -> "" (overall); ((class_name, b"7"),) -> "7"."""
    if not slice_key:
        return ""
    value = slice_key[0][1]
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(failure, slice_name: str) -> str:
    """One threshold failure, with the bound and by how much it was missed."""
    where = f"class {slice_name!r} " if slice_name else ""
    value = failure.metric_value.double_value.value
    threshold = failure.metric_threshold
    if failure.metric_key.is_diff:
        allowed = threshold.change_threshold.absolute.value
        return (f"{where}{failure.metric_key.name} is {-value:.4f} below the champion's "
                f"(allowed drop {-allowed:.4f}): {allowed - value:.4f} too far")
    bound = threshold.value_threshold.lower_bound.value
    return f"{where}{failure.metric_key.name} = {value:.4f}, needs >= {bound:.4f}: short by {bound - value:.4f}"


def _candidate_result(evaluation_uri: str):
    """With a champion, the candidate's metrics are under its name; alone, TFMA drops the name."""
    named = tfma.load_eval_result(evaluation_uri, model_name=CANDIDATE)
    return named if named.slicing_metrics else tfma.load_eval_result(evaluation_uri)


def read_evaluation(evaluation_uri: str, class_names: List[str]) -> Dict[str, Any]:
    """Overall and per-class metrics of the candidate (accuracy per class slice; top-1 precision and
    recall from TFMA's confusion matrix), the champion's accuracy when there was one, the confusion
    matrix (rows: true class, columns: predicted, in class-id order) and every threshold failure."""
    num_classes = len(class_names)
    result = _candidate_result(evaluation_uri)
    summary: Dict[str, Any] = {"accuracy": None, "per_class": {}, "champion_accuracy": None}
    for slice_key, outputs in result.slicing_metrics:
        metrics = outputs[""]
        name = _slice_name(slice_key)
        top = metrics.get("", {})
        if name:
            summary["per_class"].setdefault(name, {})["accuracy"] = top.get(ACCURACY, {}).get("doubleValue")
            continue
        summary["accuracy"] = top.get(ACCURACY, {}).get("doubleValue")
        summary["examples"] = int(top.get("example_count", {}).get("doubleValue", 0))
        diff = top.get(f"{ACCURACY}_diff", {}).get("doubleValue")
        if diff is not None:
            summary["champion_accuracy"] = summary["accuracy"] - diff
    matrix = _confusion_matrix(result, num_classes)
    summary["confusion_matrix"] = matrix
    for class_id, (name, row) in enumerate(zip(class_names, matrix)):
        predicted = sum(r[class_id] for r in matrix)
        summary["per_class"].setdefault(name, {}).update(
            precision=row[class_id] / predicted if predicted else None,
            recall=row[class_id] / sum(row) if sum(row) else None)
    validation = tfma.load_validation_result(evaluation_uri)
    summary["validation_failures"] = [_describe(failure, _slice_name(tfma.slicer.deserialize_slice_key(v.slice_key)))
                                      for v in validation.metric_validations_per_slice for failure in v.failures]
    return summary


def _confusion_matrix(result, num_classes: int) -> List[List[int]]:
    grid = [[0] * num_classes for _ in range(num_classes)]
    for slice_key, plots in result.plots or []:
        if slice_key:
            continue
        matrix = plots.get("", {}).get("", {}).get("multiClassConfusionMatrixAtThresholds", {})
        for entry in matrix.get("matrices", [{}])[0].get("entries", []):  # zero ids are left out
            grid[entry.get("actualClassId", 0)][entry.get("predictedClassId", 0)] = int(entry["numWeightedExamples"])
    return grid


def promotion_metrics(evaluation: Dict[str, Any]) -> Dict[str, Any]:
    """What a promotion record keeps of read_evaluation's summary."""
    return {key: evaluation.get(key) for key in ("accuracy", "champion_accuracy", "examples", "per_class")}
