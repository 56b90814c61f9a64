"""Runs that meet on one output dir or one serving folder, each a real local runner in a process of its
own, on a small folder of synthetic photos (three colours, 16x16, 1-2 epochs):

1. two runs with different settings, the second started once the first holds the lock: the second
   waits for the first, naming it; each records and prints its own run, and serving/ holds what their
   records say they pushed;
2. the same settings and images as the champion's: `unchanged`, nothing trained or pushed;
3. one image rewritten, and while that run is in its Trainer another process publishes a version: the
   run trains, but publishes nothing (`superseded`), naming both versions.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from models import promotion
from pipeline import paths
from tests.helpers import make_class_folder, write_image

SMALL = ("--image-size", "16", "16", "--channels", "3", "--min-accuracy", "0", "--max-accuracy-drop", "1",
         "--tflite", "float32")


class Workspace:
    def __init__(self, base):
        self.data_root, self.output_dir = str(base / "data"), str(base / "out")
        self.serving_dir = paths.serving_dir(self.output_dir)

    def start(self, *flags):
        return subprocess.Popen([sys.executable, "-m", "pipeline.local_runner", "--data-root", self.data_root,
                                 "--output-dir", self.output_dir, *SMALL, *flags], cwd=paths.REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_until_holding_the_lock(self, process, timeout=120):
        """Until the run lock names `process`: started a fixed time apart, the second run, not yet
        slowed by imports, can take the lock first on a loaded machine."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            try:
                with open(paths.run_lock(self.output_dir)) as f:
                    if f"by process {process.pid}" in f.read():
                        return
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"process {process.pid} did not take the run lock in {timeout} s")

    def record_of(self, out: str) -> dict:
        """The run's own record, runs/<run>.json, found from the report path it printed last."""
        report = out.strip().splitlines()[-1]
        assert report.startswith("report: "), out[-2000:]
        with open(os.path.dirname(report[len("report: "):]) + ".json") as f:
            return json.load(f)


def _finish(process, timeout=900):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    workspace = Workspace(tmp_path_factory.mktemp("overlap"))
    workspace.files = make_class_folder(workspace.data_root, per_class=10)
    return workspace


@pytest.fixture(scope="module")
def two_runs(workspace):
    first = workspace.start("--epochs", "1")
    workspace.wait_until_holding_the_lock(first)
    second = workspace.start("--epochs", "2")
    outs = [_finish(first), _finish(second)]
    return [(process, out, workspace.record_of(out)) for process, out in zip((first, second), outs)]


@pytest.mark.e2e
def test_a_second_run_on_the_same_output_dir_waits_naming_the_first(two_runs):
    (first, first_out, _), (_, second_out, _) = two_runs
    waiting = [line for line in second_out.splitlines() if line.startswith("waiting: ")]
    assert len(waiting) == 1 and re.fullmatch(
        rf"waiting: the run started \S+ by process {first.pid} is using .*/out; this run starts when it ends",
        waiting[0]), waiting
    assert not any(line.startswith("waiting: ") for line in first_out.splitlines())


@pytest.mark.e2e
def test_each_run_prints_and_records_its_own_figures_and_status(two_runs):
    (_, first_out, first), (_, second_out, second) = two_runs
    assert first["run_id"] != second["run_id"]
    for out, record, epochs in ((first_out, first, 1), (second_out, second, 2)):
        assert f"eval accuracy {record['evaluation']['accuracy']:.4f}; blessed: {record['blessed']}" in out
        assert f"status: {record['status']} in " in out
        assert "Trainer finished in " in out and f", {epochs} epoch" in out
        assert record["status"] == "pushed"  # each compared with the champion it saw, and blessed
    assert first["evaluation"]["champion_accuracy"] is None  # it saw no champion
    assert second["evaluation"]["champion_accuracy"] == pytest.approx(first["evaluation"]["accuracy"])


@pytest.mark.e2e
def test_serving_holds_what_the_records_say_was_pushed_and_each_promotion_names_its_run(two_runs, workspace):
    records = [record for _, _, record in two_runs]
    pushed = {int(os.path.basename(r["pushed_paths"]["saved_model"])): r["run_id"] for r in records if r["pushed"]}
    assert set(promotion.versions(workspace.serving_dir)) == set(pushed)
    log = promotion.promotion_log(workspace.serving_dir)
    assert {entry["version"]: entry["run_id"] for entry in log} == pushed


@pytest.fixture(scope="module")
def unchanged_run(two_runs, workspace):
    out = _finish(workspace.start("--epochs", "2"))  # the champion's settings and images
    return out, workspace.record_of(out)


@pytest.mark.e2e
def test_the_champions_images_and_settings_again_train_nothing(unchanged_run, two_runs, workspace):
    out, record = unchanged_run
    assert record["status"] == "unchanged" and not record["pushed"]
    assert "Trainer" not in record["stage_seconds"] and "Transform" not in record["stage_seconds"]
    champion = promotion.champion(workspace.serving_dir)["version"]
    assert f"unchanged: data, settings and code are those champion version {champion} was trained on" in out
    assert len(promotion.versions(workspace.serving_dir)) == len([r for _, _, r in two_runs if r["pushed"]])


@pytest.fixture(scope="module")
def superseded_run(unchanged_run, workspace):
    """One image rewritten; once the run's Trainer has started, this process publishes a version."""
    write_image(workspace.files["red"][0], (90, 200, 30), (20, 24), seed=12345)  # same name, other pixels
    before = promotion.champion(workspace.serving_dir)["version"]
    process = workspace.start("--epochs", "2")
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "] Trainer started" in line:
            break
    published = promotion.publish(workspace.serving_dir, lambda staging: os.makedirs(staging),
                                  {"action": "forced", "run_id": "another-process", "reason": "a test"})
    out = "".join(lines) + _finish(process)
    return out, workspace.record_of(out), before, published


@pytest.mark.e2e
def test_a_run_whose_champion_changed_before_its_pusher_publishes_nothing_and_names_both(superseded_run, workspace):
    out, record, compared, published = superseded_run
    assert record["retrain"]["reason"].startswith("the data changed since champion version")
    assert record["status"] == "superseded" and not record["pushed"]
    line = (f"superseded: this model was compared with champion version {compared}, but version {published} became "
            f"the champion since; nothing pushed (a new run compares with it)")
    assert line in out.splitlines() and record["superseded"] == line
    assert promotion.champion(workspace.serving_dir)["version"] == published
    assert promotion.versions(workspace.serving_dir)[-1] == published
    last = promotion.promotion_log(workspace.serving_dir)[-1]
    assert (last["action"], last["run_id"], last["compared_with"], last["version"]) == (
        "superseded", record["run_id"], compared, published)
