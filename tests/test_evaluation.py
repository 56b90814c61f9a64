"""The Evaluator's absolute accuracy bound, applied at run time from its own parameter."""
import os

import pytest
import tensorflow_model_analysis as tfma

from components.evaluation import eval_config, with_min_accuracy


def _thresholds(config):
    (accuracy,) = [m for m in config.metrics_specs[0].metrics if m.class_name == "SparseCategoricalAccuracy"]
    return {("overall" if s.slicing_specs == [tfma.SlicingSpec()] else "per class"): s.threshold
            for s in accuracy.per_slice_thresholds}


def test_the_run_time_bound_goes_on_overall_accuracy_and_keeps_the_other_thresholds():
    config = eval_config(label_key="label", class_key="class_name", num_classes=3, max_accuracy_drop=0.02,
                         min_class_accuracy=0.5)
    assert not _thresholds(config)["overall"].HasField("value_threshold")
    bounded = _thresholds(with_min_accuracy(config, 0.93))
    assert bounded["overall"].value_threshold.lower_bound.value == pytest.approx(0.93)
    assert bounded["overall"].change_threshold.absolute.value == pytest.approx(-0.02)
    assert bounded["per class"].value_threshold.lower_bound.value == pytest.approx(0.5)
    assert not _thresholds(config)["overall"].HasField("value_threshold")  # the input is left as it was


def test_both_models_are_served_by_their_signature_named_not_probed_as_keras_models():
    """Left unset, TFMA loads each model as a Keras model first, only to decide how to call it."""
    import tensorflow_model_analysis as tfma
    config = eval_config(label_key="label", class_key="class_name", num_classes=3, max_accuracy_drop=0.01)
    assert [(spec.model_type, spec.signature_name) for spec in config.model_specs] == [
        (tfma.TF_GENERIC, "serving_default")] * 2


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_a_run_time_bound_out_of_range_names_itself(value):
    config = eval_config(label_key="label", class_key="class_name", num_classes=3, max_accuracy_drop=0.01)
    with pytest.raises(ValueError, match="min_accuracy must be between 0 and 1"):
        with_min_accuracy(config, value)


def test_the_champion_is_compared_only_when_its_class_list_is_this_runs(tmp_path):
    """Removing a class renumbers the others: the champion would be scored on relabelled data."""
    from tfx.utils import path_utils
    from components.evaluation import champion_mismatch
    from models import features
    from models.labels import write_labels
    champion, examples = tmp_path / "champion", tmp_path / "examples"
    os.makedirs(path_utils.serving_model_dir(str(champion)))
    os.makedirs(examples)
    write_labels(str(examples / features.LABELS_FILENAME), ["cat", "dog", "fox"])
    assert champion_mismatch(str(champion), str(examples)).startswith("not compared with the champion, whose no labels.txt")
    write_labels(os.path.join(path_utils.serving_model_dir(str(champion)), features.LABELS_FILENAME), ["cat", "dog", "fox"])
    assert champion_mismatch(str(champion), str(examples)) is None
    write_labels(str(examples / features.LABELS_FILENAME), ["cat", "fox"])
    assert champion_mismatch(str(champion), str(examples)) == (
        "not compared with the champion, whose classes ['cat', 'dog', 'fox'] differ from this run's ['cat', 'fox']: "
        "judged on the absolute bounds alone")
