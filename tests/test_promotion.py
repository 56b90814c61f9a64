"""The serving folder: atomic versions, champion pointer, append-only log, rollback."""
import os

import pytest

from components import promotion


def _write_model(text: str):
    def write(folder: str) -> None:
        os.makedirs(folder)
        with open(os.path.join(folder, "saved_model.pb"), "w") as f:
            f.write(text)
    return write


def _tree(root: str) -> dict:
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def test_a_publish_adds_a_version_makes_it_the_champion_and_logs_it(tmp_path):
    serving = str(tmp_path / "serving")
    first = promotion.publish(serving, _write_model("a"), {"action": "blessed", "run_id": "r1", "metrics": {"accuracy": 0.9}})
    second = promotion.publish(serving, _write_model("b"), {"action": "blessed", "run_id": "r2"})
    assert promotion.versions(serving) == [first, second] and second > first
    assert promotion.champion(serving)["version"] == second
    log = promotion.promotion_log(serving)
    assert [(e["version"], e["run_id"]) for e in log] == [(first, "r1"), (second, "r2")]
    assert log[0]["metrics"] == {"accuracy": 0.9} and log[0]["time"].endswith("Z")
    assert promotion.record(serving, first)["run_id"] == "r1"
    assert sorted(os.listdir(serving)) == sorted([str(first), str(second), "champion.json", "promotions.jsonl"])


def test_a_publish_that_fails_while_writing_leaves_the_serving_folder_unchanged(tmp_path):
    serving = str(tmp_path / "serving")
    promotion.publish(serving, _write_model("a"), {"action": "blessed"})
    before = _tree(serving)

    def half_written(folder):
        _write_model("partial")(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        promotion.publish(serving, half_written, {"action": "blessed"})
    assert _tree(serving) == before


def test_a_staging_folder_left_by_a_killed_publisher_is_never_a_version_and_is_cleaned(tmp_path):
    serving = str(tmp_path / "serving")
    promotion.publish(serving, _write_model("a"), {"action": "blessed"})
    _write_model("partial")(os.path.join(serving, ".staging-123-dead"))
    assert len(promotion.versions(serving)) == 1
    promotion.publish(serving, _write_model("b"), {"action": "blessed"})
    assert not [name for name in os.listdir(serving) if name.startswith(".staging-")]


def test_rollback_republishes_the_old_version_as_the_newest_and_logs_why(tmp_path):
    serving = str(tmp_path / "serving")
    old = promotion.publish(serving, _write_model("good"), {"action": "blessed", "run_id": "r1",
                                                            "metrics": {"accuracy": 0.99}})
    promotion.publish(serving, _write_model("bad"), {"action": "blessed", "run_id": "r2"})
    restored = promotion.rollback(serving, old, reason="r2 misclassifies sevens")
    assert promotion.champion(serving)["version"] == restored == promotion.versions(serving)[-1]
    with open(os.path.join(serving, str(restored), "saved_model.pb")) as f:
        assert f.read() == "good"
    entry = promotion.promotion_log(serving)[-1]
    assert (entry["action"], entry["source_version"], entry["run_id"], entry["reason"]) == \
        ("rollback", old, "r1", "r2 misclassifies sevens")
    assert entry["metrics"] == {"accuracy": 0.99}


def test_rollback_to_an_unknown_version_names_the_published_ones(tmp_path):
    serving = str(tmp_path / "serving")
    version = promotion.publish(serving, _write_model("a"), {"action": "blessed"})
    with pytest.raises(promotion.PromotionError, match=f"no version 42 .*published versions: \\[{version}\\]"):
        promotion.rollback(serving, 42, reason="x")
    assert len(promotion.promotion_log(serving)) == 1


def test_an_empty_serving_folder_has_no_champion(tmp_path):
    serving = str(tmp_path / "nothing-yet")
    assert promotion.versions(serving) == [] and promotion.champion(serving) is None
    assert promotion.champion_dir(serving) is None and promotion.promotion_log(serving) == []
