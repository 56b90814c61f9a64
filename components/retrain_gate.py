"""RetrainGate: a run whose data, settings and code are those the champion was trained on ends after
ingestion, with nothing trained and nothing pushed (status `unchanged`).

On Kubeflow a nightly run cannot reuse earlier steps (KFP's cache key sees neither the volume nor the
data), so without this gate unchanged images would be trained on from scratch every night. The gate
compares two fingerprints with those the champion's promotion record holds:
- the data: ExampleGen's fingerprint of every ingested file's path and bytes;
- the run: the fingerprint of the code and of the settings that shape the trained model or the
  validation of its data, fixed when the pipeline was built, with the run-time parameter that does
  too (epochs) added here, at run time.
  The thresholds that judge a model (min_accuracy and the others) are not in it: they do not change
  what would be trained, and a run refused by a stricter bar leaves the champion as it was.
The steps after it (validation included: the data is the champion's, validated when it was trained)
run under a condition on the decision's `retrain` property, so the same wiring stops a local run and
a Kubeflow run alike, right after ingestion; `retrain_always` turns the gate off.
"""
import hashlib
import json
import os
from typing import Any, Dict, Optional, Tuple

from tfx import v1 as tfx

from models import promotion
from components.artifacts import RetrainDecision
from models.progress import key_figure
from models import features

RETRAIN_PROPERTY = "retrain"            # 1: train; 0: unchanged since the champion
REASON_PROPERTY = "reason"              # one line: why
RUN_FINGERPRINT_PROPERTY = "run_fingerprint"  # the code and the settings that shape the trained model
DATA_FINGERPRINT_PROPERTY = "data_fingerprint"
DECISION_FILENAME = "decision.json"     # the same facts as a file, so the artifact's folder is never empty


def run_fingerprint(settings_fingerprint: str, epochs: int) -> str:
    """The settings and code fingerprint with the run-time parameter that shapes the model added."""
    text = json.dumps({"settings": settings_fingerprint, "epochs": int(epochs)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def decide(serving_dir: str, data_fingerprint: str, fingerprint: str, retrain_always: bool) -> Tuple[bool, str]:
    """(retrain?, one line saying why)."""
    if retrain_always:
        return True, "retrain_always is set"
    pointer = promotion.champion(serving_dir)
    if not pointer:
        return True, "there is no champion yet"
    champion_record = _record_or_none(serving_dir, pointer["version"])
    if champion_record is None:
        return True, f"champion version {pointer['version']} has no readable promotion record"
    changed = [what for what, ours, theirs in (
        ("the data", data_fingerprint, champion_record.get(DATA_FINGERPRINT_PROPERTY)),
        ("the settings or code", fingerprint, champion_record.get(RUN_FINGERPRINT_PROPERTY)))
        if ours != theirs]
    if changed:
        return True, f"{' and '.join(changed)} changed since champion version {pointer['version']} was trained"
    return False, (f"data, settings and code are those champion version {pointer['version']} was trained on: "
                   f"nothing to train (--retrain-always trains anyway)")


def _record_or_none(serving_dir: str, version: int) -> Optional[Dict[str, Any]]:
    try:
        return promotion.record(serving_dir, version)
    except promotion.PromotionError:
        return None


@tfx.dsl.components.component
def RetrainGate(examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
                decision: tfx.dsl.components.OutputArtifact[RetrainDecision],
                serving_dir: tfx.dsl.components.Parameter[str],
                settings_fingerprint: tfx.dsl.components.Parameter[str],
                epochs: tfx.dsl.components.Parameter[int],
                retrain_always: tfx.dsl.components.Parameter[int]) -> None:
    """Decides whether this run trains: see the module's docstring."""
    data_fingerprint = features.read_ingest_report(examples.uri)["data_fingerprint"]
    fingerprint = run_fingerprint(settings_fingerprint, epochs)
    retrain, reason = decide(serving_dir, data_fingerprint, fingerprint, bool(retrain_always))
    decision.set_int_custom_property(RETRAIN_PROPERTY, int(retrain))
    decision.set_string_custom_property(REASON_PROPERTY, reason)
    decision.set_string_custom_property(RUN_FINGERPRINT_PROPERTY, fingerprint)
    decision.set_string_custom_property(DATA_FINGERPRINT_PROPERTY, data_fingerprint)
    os.makedirs(decision.uri, exist_ok=True)
    with open(os.path.join(decision.uri, DECISION_FILENAME), "w") as f:
        json.dump({"retrain": retrain, "reason": reason, "run_fingerprint": fingerprint,
                   "data_fingerprint": data_fingerprint}, f)
    key_figure(("retrain: " if retrain else "unchanged: ") + reason)
