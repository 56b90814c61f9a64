"""Warm start (--warm-start): a new model starts from the champion's weights instead of random ones,
so a scheduled retraining on grown data converges in fewer epochs.

The champion is the serving folder's current version, handed to the Trainer as TFX's base_model
(the ChampionModel stage's copy). Its weights are read from its SavedModel's variables, whose
object graph is the Keras model the Trainer exported: a model built from the same ModelConfig has
the same graph. The champion's model.json (models.model.write_facts) and labels.txt say whether it
does; when they differ, or there is no champion yet, training starts from scratch and says why.
"""
import dataclasses
import json
import os
from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from models import features, files, promotion
from models.labels import read_labels
from models.model import ModelConfig, build_classifier, read_facts

# A warm-started training fine-tunes: its peak learning rate is the configured one times this. At the
# full peak, the first epoch threw the champion's weights far from where they were (bench/RESULTS.md,
# "Warm start"), and the epochs saved went into climbing back.
WARM_START_LEARNING_RATE = 0.1



def _normalized(config: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(config))  # tuples as lists, as model.json holds them


def mismatch(champion_dir: Optional[str], config: ModelConfig, label_names: Sequence[str]) -> Optional[str]:
    """Why the champion's weights cannot start this model, or None when they can."""
    if not champion_dir or not tf.io.gfile.exists(os.path.join(champion_dir, "saved_model.pb")):
        return "there is no champion yet"
    labels_path = os.path.join(champion_dir, features.LABELS_FILENAME)
    theirs = read_labels(labels_path) if tf.io.gfile.exists(labels_path) else None
    if theirs != list(label_names):
        return f"the champion's classes {theirs} differ from this run's {list(label_names)}"
    facts = read_facts(champion_dir)
    if facts is None:
        return "the champion has no model.json (it was exported before warm starts), so its network is unknown"
    ours = _normalized(dataclasses.asdict(config))
    differing = sorted(k for k in set(ours) | set(facts["config"]) if ours.get(k) != facts["config"].get(k))
    if differing:
        return "the champion's network differs from this run's in " + ", ".join(
            f"{k} ({facts['config'].get(k)!r} there, {ours.get(k)!r} here)" for k in differing)
    return None


def champion_version(champion_dir: str) -> Optional[int]:
    record = files.read_json_if_exists(os.path.join(champion_dir, promotion.RECORD_FILENAME))
    return record and record.get("version")


def restore_weights(model: keras.Model, saved_model_dir: str) -> None:
    """Every weight of model (trainable or not: batch-norm statistics too) from the SavedModel's
    variables. Raises when one of them is not there or has another shape."""
    # Keras' own read of a TensorFlow checkpoint, whose root is the model (a tf.train.Checkpoint would
    # add a save counter of its own, which no SavedModel holds)
    status = model.load_weights(os.path.join(saved_model_dir, "variables", "variables"))
    status.expect_partial()  # the SavedModel also holds the Transform layer and the label names
    status.assert_existing_objects_matched()


def start_from_champion(model: keras.Model, config: ModelConfig, label_names: Sequence[str],
                        champion_dir: Optional[str]) -> Dict[str, Any]:
    """Sets model's weights to the champion's when they fit it; returns what training starts from, for
    model.json: {"champion_version": N, "champion_dir": ...} or {"champion_version": None, "reason": ...}.

    The weights are restored into a fresh copy of the network and then copied: restored into model
    itself, its optimizer would later be restored too (its step count with it, which would skip the
    warm-up), and a restore that fails half-way would leave some weights changed."""
    reason = mismatch(champion_dir, config, label_names)
    if reason is None:
        try:
            source = build_classifier(config)
            restore_weights(source, champion_dir)
            model.set_weights(source.get_weights())
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            reason = f"the champion's weights do not fit this network ({type(error).__name__}: {error})"
    if reason is not None:
        return {"champion_version": None, "reason": reason}
    return {"champion_version": champion_version(champion_dir), "champion_dir": champion_dir}


def warm_started(started_from: Optional[Dict[str, Any]]) -> bool:
    """Whether start_from_champion (whose result this is, or None when no warm start was asked for)
    loaded the champion's weights."""
    return bool(started_from) and "reason" not in started_from
