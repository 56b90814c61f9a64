"""`python -m pipeline.promote`: list, rollback and force, each leaving a line in the promotion log."""
import json
import os

import pytest

from models import promotion
from pipeline import paths, promote


def _publish(serving_dir: str, text: str, **entry) -> int:
    def write(folder):
        os.makedirs(folder)
        with open(os.path.join(folder, "saved_model.pb"), "w") as f:
            f.write(text)
    return promotion.publish(serving_dir, write, {"action": "blessed", **entry})


def _write_run(output_dir: str, run_id: str, **fields) -> None:
    os.makedirs(paths.runs_dir(output_dir), exist_ok=True)
    with open(paths.run_summary(output_dir, run_id), "w") as f:
        json.dump({"run_id": run_id, "status": "not_blessed", "blessed": False, "error": None, **fields}, f)


def test_list_marks_the_champion_and_shows_every_promotion(tmp_path, capsys):
    serving = paths.serving_dir(str(tmp_path))
    first = _publish(serving, "a", run_id="r1", metrics={"accuracy": 0.91})
    second = _publish(serving, "b", run_id="r2", metrics={"accuracy": 0.95})
    assert promote.main(["--output-dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"2 version(s), champion {second}")
    assert out[1].startswith(f"  {first}") and "run r1" in out[1] and "accuracy 0.9100" in out[1]
    assert out[2].startswith(f"* {second}")


def test_rollback_makes_an_old_version_the_champion_and_an_unknown_one_is_named(tmp_path, capsys):
    serving = paths.serving_dir(str(tmp_path))
    first = _publish(serving, "good", run_id="r1")
    _publish(serving, "bad", run_id="r2")
    assert promote.main(["--output-dir", str(tmp_path), "rollback", "--to", str(first), "--reason", "r2 is bad"]) == 0
    entry = promotion.promotion_log(serving)[-1]
    assert (entry["action"], entry["source_version"], entry["reason"]) == ("rollback", first, "r2 is bad")
    assert promotion.champion(serving)["version"] == entry["version"]
    assert promote.main(["--output-dir", str(tmp_path), "rollback", "--to", "7"]) == 2
    assert "no version 7 in" in capsys.readouterr().err
    assert len(promotion.promotion_log(serving)) == 3


def test_force_publishes_a_runs_trained_model_with_the_reason(tmp_path):
    model = tmp_path / "trained"
    model.mkdir()
    (model / "saved_model.pb").write_text("unblessed")
    _write_run(str(tmp_path), "2026-11-22T10:00:00.5", trained_model=str(model), data_fingerprint="f" * 64,
               evaluation={"accuracy": 0.88, "validation_failures": ["short by 0.02"]})
    assert promote.main(["--output-dir", str(tmp_path), "force", "--run", "2026-11-22T10:00:00.5",
                         "--reason", "hotfix for class 3"]) == 0
    serving = paths.serving_dir(str(tmp_path))
    entry, = promotion.promotion_log(serving)
    assert (entry["action"], entry["run_id"], entry["reason"], entry["blessed"]) == \
        ("forced", "2026-11-22T10:00:00.5", "hotfix for class 3", False)
    assert entry["metrics"]["accuracy"] == 0.88 and entry["data_fingerprint"] == "f" * 64
    with open(os.path.join(promotion.champion_dir(serving), "saved_model.pb")) as f:
        assert f.read() == "unblessed"


@pytest.mark.parametrize("run_id, fields, reason, message", [
    ("nope", None, "x", "no run 'nope' in"),
    ("r1", {}, "x", "run 'r1' has no trained model to publish (status not_blessed)"),
    ("r1", {"trained_model": "/does/not/exist"}, "  ", "force needs a --reason"),
])
def test_force_refuses_with_one_clear_line(tmp_path, capsys, run_id, fields, reason, message):
    if fields is not None:
        _write_run(str(tmp_path), "r1", **fields)
    assert promote.main(["--output-dir", str(tmp_path), "force", "--run", run_id, "--reason", reason]) == 2
    assert message in capsys.readouterr().err
    assert promotion.promotion_log(paths.serving_dir(str(tmp_path))) == []
