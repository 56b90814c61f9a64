"""The serving folder: atomic versions, champion pointer, append-only log, rollback."""
import os

import pytest

from models import promotion
from tests import helpers


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
    assert sorted(os.listdir(serving)) == sorted([str(first), str(second), "champion.json", "promotions.jsonl", ".lock"])


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


_CONCURRENT_PUBLISHES = 100


def _publish_many(serving: str, name: str, count: int, start) -> None:
    """One publisher process: `count` publishes, each a multi-file version that takes a few
    milliseconds to write (a SavedModel copy takes longer), so the two processes overlap."""
    import time

    def write(folder):
        os.makedirs(os.path.join(folder, "variables"))
        for part in ("saved_model.pb", "variables/variables.index", "variables/variables.data"):
            with open(os.path.join(folder, part), "w") as f:
                f.write(f"{name} {part}")
            time.sleep(0.002)
    start.wait()
    for i in range(count):
        promotion.publish(serving, write, {"action": "blessed", "run_id": f"{name}-{i}"})


def test_two_processes_publishing_at_once_never_collide_lose_or_move_the_champion_back(tmp_path):
    import multiprocessing
    serving = str(tmp_path / "serving")
    context = multiprocessing.get_context("spawn")  # real separate processes, as two pipeline runs are
    start = context.Barrier(2)  # both begin at once
    publishers = [context.Process(target=_publish_many, args=(serving, name, _CONCURRENT_PUBLISHES // 2, start))
                  for name in ("a", "b")]
    for process in publishers:
        process.start()
    for process in publishers:
        process.join(timeout=300)
    assert [process.exitcode for process in publishers] == [0, 0]  # no traceback: a collision raised OSError
    versions = promotion.versions(serving)
    assert len(versions) == _CONCURRENT_PUBLISHES
    for version in versions:  # every version complete
        folder = promotion.version_dir(serving, version)
        assert sorted(os.listdir(folder)) == ["promotion.json", "saved_model.pb", "variables"]
        assert len(os.listdir(os.path.join(folder, "variables"))) == 2
    assert promotion.champion(serving)["version"] == versions[-1]
    assert not [name for name in os.listdir(serving) if name.startswith(".staging-")]
    log = promotion.promotion_log(serving)
    assert sorted(entry["version"] for entry in log) == versions
    assert [entry["version"] for entry in log] == versions  # logged in publish order: the pointer only moves up


def test_a_rollback_pins_the_champion_a_run_then_holds_and_unpin_releases_it(tmp_path):
    serving = str(tmp_path / "serving")
    good = promotion.publish(serving, _write_model("good"), {"action": "blessed", "run_id": "r1"})
    promotion.publish(serving, _write_model("bad"), {"action": "blessed", "run_id": "r2"})
    pinned = promotion.rollback(serving, good, "r2 misbehaves")
    assert helpers.is_pinned(serving)
    version, outcome = promotion.publish_if_still_champion(serving, _write_model("next"),
                                                           {"action": "blessed", "run_id": "r3"}, compared_with=pinned)
    assert (version, outcome) == (pinned, promotion.HELD)
    assert promotion.champion(serving)["version"] == pinned and promotion.versions(serving)[-1] == pinned
    assert promotion.promotion_log(serving)[-1] == {**promotion.promotion_log(serving)[-1], "action": "held",
                                                    "run_id": "r3", "version": pinned}
    assert promotion.unpin(serving) == pinned and not helpers.is_pinned(serving)
    version, outcome = promotion.publish_if_still_champion(serving, _write_model("next"),
                                                           {"action": "blessed", "run_id": "r4"}, compared_with=pinned)
    assert outcome == promotion.PUBLISHED and version > pinned and promotion.champion(serving)["version"] == version


@pytest.mark.parametrize("compared_with", ["none", "older"])
def test_a_model_compared_with_another_champion_than_the_one_serving_is_not_published(tmp_path, compared_with):
    """Between a run's ChampionModel step and its Pusher, another version became the champion: the
    run publishes nothing, and the log names the run, the version it was compared with and the one
    that serves. 'none': the run saw no champion at all."""
    serving = str(tmp_path / "serving")
    older = promotion.publish(serving, _write_model("older"), {"action": "blessed", "run_id": "r1"}) \
        if compared_with == "older" else 0
    newer = promotion.publish(serving, _write_model("newer"), {"action": "forced", "run_id": "r2"})
    version, outcome = promotion.publish_if_still_champion(serving, _write_model("late"),
                                                           {"action": "blessed", "run_id": "r3"}, compared_with=older)
    assert (version, outcome) == (newer, promotion.SUPERSEDED)
    assert promotion.champion(serving)["version"] == newer and promotion.versions(serving)[-1] == newer
    last = promotion.promotion_log(serving)[-1]
    assert (last["action"], last["run_id"], last["version"], last["compared_with"]) == ("superseded", "r3", newer, older)
    said = f"version {older}" if older else "no champion"
    assert last["reason"] == f"compared with {said}, but version {newer} became the champion since"


@pytest.mark.parametrize("name, content, message", [
    (promotion.CHAMPION_FILENAME, "{not json", "is not a champion pointer"),
    (promotion.CHAMPION_FILENAME, '{"since": "x"}', "is not a champion pointer"),
    (promotion.LOG_FILENAME, '{"version": 1}\n{broken\n', "line 2, is not JSON"),
])
def test_a_corrupt_pointer_or_log_is_one_clear_error(tmp_path, name, content, message):
    serving = str(tmp_path / "serving")
    os.makedirs(serving)
    with open(os.path.join(serving, name), "w") as f:
        f.write(content)
    with pytest.raises(promotion.PromotionError, match=message):
        promotion.champion(serving) if name == promotion.CHAMPION_FILENAME else promotion.promotion_log(serving)


def test_a_version_without_its_record_is_one_clear_error(tmp_path):
    serving = str(tmp_path / "serving")
    version = promotion.publish(serving, _write_model("a"), {"action": "blessed"})
    os.remove(os.path.join(promotion.version_dir(serving, version), promotion.RECORD_FILENAME))
    with pytest.raises(promotion.PromotionError, match=f"version {version} has no readable promotion.json"):
        promotion.rollback(serving, version, "")
