"""End-to-end: the real pipeline (LocalDagRunner, Beam, MLMD on SQLite, TFLite) on the embedded digits.
The golden run (tests/golden.py) is trained once; each scenario starts from a copy of its state and
asserts exactly which stages ran again. What only reads the golden run (its report in Chromium, the
champion served and scored, the TFLite files) is tests/test_golden_artifacts.py, on the other worker."""
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from models import promotion
from models import sources
from models.model import ModelConfig
from models.run_fn import LEARNING_RATE_FILENAME
from models.warm_start import WARM_START_LEARNING_RATE
from pipeline import local_runner, paths, promote, report, schema
from tests.helpers import expected_parameter_count, make_class_folder, table_rows, write_image
from tests.golden import ACCURACY_FLOOR, ALWAYS_RUN, DIGIT_CLASSES, STAGES, WORSE
from tests.odd_files import INGESTED

pytestmark = pytest.mark.e2e

REUSABLE = STAGES - ALWAYS_RUN - {"Evaluator", "Pusher"}  # the Evaluator's champion input is new every run
BLESSED_ONLY = {"LiteModels", "Pusher"}  # run under the Evaluator's blessing: not for a worse model


def _tree_digest(root: str) -> dict:
    """Every file under root -> sha256 of its bytes."""
    return {os.path.relpath(os.path.join(d, f), root): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(root) for f in files}


@pytest.fixture
def golden(golden_session):
    """The golden run, with its workspace restored to the state the run left."""
    golden_session.workspace.restore("golden")
    return golden_session


@pytest.fixture(scope="module")
def worse(golden_session):
    """A run that cannot be blessed (tests/golden.py WORSE), made on the golden state: (the run, the
    serving folder's digest before it). Its state is the start of the cheap scenarios."""
    workspace = golden_session.workspace.restore("golden")
    serving_before = _tree_digest(workspace.serving_dir)
    run = workspace.run(*WORSE)
    workspace.snapshot("worse")
    return run, serving_before


@pytest.fixture
def after_worse(golden_session, worse):
    return golden_session.workspace.restore("worse")


# --- The golden run itself -------------------------------------------------------------------------------

def test_the_golden_run_clears_the_accuracy_floor_and_accounts_for_every_file(golden):
    run, summary = golden.run, golden.run.summary
    assert run.code == 0, summary.get("error") or run.err[-3000:]
    evaluation = summary["evaluation"]
    # before the blessing, which a broken recipe also loses (the Evaluator's bar is 0.9): the floor names the cause
    assert evaluation["accuracy"] >= ACCURACY_FLOOR, (
        f"eval accuracy {evaluation['accuracy']:.4f} on the digits is below the floor {ACCURACY_FLOOR}: "
        f"the training recipe is broken (tests/golden.py says how the floor was chosen)")
    assert summary["status"] == "pushed" and summary["blessed"]
    assert summary["classes"] == DIGIT_CLASSES
    zoo_ingested = sum(outcome == INGESTED for outcome, _ in golden.zoo.values())
    assert summary["examples_per_split"] == {"train": 2000 + zoo_ingested, "eval": 500}
    listed = {e["file"]: outcome for outcome in ("rejected", "ignored") for e in summary[f"{outcome}_files"]}
    assert listed == {path: outcome for path, (outcome, _) in golden.zoo.items() if outcome != INGESTED}
    reasons = {e["file"]: e["reason"] for outcome in ("rejected", "ignored") for e in summary[f"{outcome}_files"]}
    assert all(words in reasons[path] for path, (outcome, words) in golden.zoo.items() if outcome != INGESTED)
    counts = summary["file_counts"]
    assert counts["seen"] == counts["ingested"] + counts["rejected"] + counts["ignored"] == 2500 + len(golden.zoo)
    assert summary["split_leaks"] == 0
    assert summary["class_balance"]["drift"] is None  # first run: no baseline

    assert set(evaluation["per_class"]) == set(DIGIT_CLASSES)
    matrix = np.array(evaluation["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum(axis=1).tolist() == [50] * 10
    assert evaluation["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum(), abs=1e-6)
    assert evaluation["champion_accuracy"] is None  # first run: judged by the absolute bound alone
    assert run.ran == STAGES and not run.reused
    with open(paths.run_summary(golden.workspace.output_dir, summary["run_id"])) as f:
        assert json.load(f) == summary
    throughput, = glob.glob(os.path.join(golden.workspace.output_dir, "pipeline", "Trainer", "model_run", "*",
                                         "throughput.json"))
    with open(throughput) as f:
        epochs = json.load(f)
    assert 1 <= len(epochs) <= 15 and all(e["images_per_s"] > 0 for e in epochs)  # early stopping may end it sooner


def test_the_golden_run_prints_each_stage_start_and_end_with_its_key_figure(golden):
    lines = [line.split("] ", 1)[1] for line in golden.run.out.splitlines() if line.startswith("[")]
    for stage in STAGES:
        started = lines.index(f"{stage} started")
        finished = next(i for i, line in enumerate(lines) if line.startswith(f"{stage} finished in "))
        assert started < finished, stage
    evaluation = golden.run.summary["evaluation"]
    evaluator = next(line for line in lines if line.startswith("Evaluator finished in "))
    assert evaluator.endswith(f"s: accuracy {evaluation['accuracy']:.4f} (no champion yet); blessed: yes")
    trainer = next(line for line in lines if line.startswith("Trainer finished in "))
    parameters = expected_parameter_count(ModelConfig())  # the defaults the run used: 28x28x1, 10 digits
    assert f"s: {parameters:,} parameters, " in trainer and trainer.endswith(" images/s"), trainer
    report_path = os.path.join(paths.run_report_dir(golden.workspace.output_dir, golden.run.summary["run_id"]),
                               report.REPORT_FILENAME)
    assert golden.run.out.strip().splitlines()[-1] == f"report: {report_path}"


# --- Scenarios: which stages run again ------------------------------------------------------------------

def test_a_rerun_on_what_the_champion_was_trained_on_ends_unchanged_after_ingestion(golden):
    serving_before = _tree_digest(golden.workspace.serving_dir)
    rerun = golden.workspace.run("--min-accuracy", "0.9999")  # a threshold judges; it shapes nothing trained
    assert rerun.code == 0, rerun.summary["error"]
    assert rerun.summary["status"] == "unchanged" and not rerun.summary["pushed"]
    assert rerun.ran == {"RetrainGate"} and rerun.reused == {"ImageFolderExampleGen", "ImportSchemaGen"}
    version = promotion.champion(golden.workspace.serving_dir)["version"]
    reason = f"data, settings and code are those champion version {version} was trained on"
    assert "RetrainGate finished in " in rerun.out and f"unchanged: {reason}" in rerun.out
    assert "Trainer skipped (its condition was not met)" in rerun.out
    assert rerun.summary["retrain"]["reason"].startswith(reason)
    assert _tree_digest(golden.workspace.serving_dir) == serving_before


def test_an_unchanged_rerun_with_retrain_always_reuses_every_stage_and_keeps_serving_the_same_model(golden):
    serving_before = _tree_digest(golden.workspace.serving_dir)
    rerun = golden.workspace.run("--retrain-always")
    assert rerun.code == 0, rerun.summary["error"]
    assert rerun.reused == REUSABLE and rerun.ran == ALWAYS_RUN | {"Evaluator", "Pusher"}
    lines = [line.split("] ", 1)[1] for line in rerun.out.splitlines() if line.startswith("[")]
    assert sorted(line[:-len(" started")] for line in lines if line.endswith(" started")) == sorted(STAGES)  # once each
    assert [line for line in lines if line.startswith("Trainer ")][-1].endswith(
        ": inputs, settings and code unchanged since an earlier run (--no-cache runs it)")
    assert any(line.startswith("Pusher finished in ") for line in lines)
    assert rerun.summary["status"] == "already_serving" and rerun.summary["blessed"] and not rerun.summary["pushed"]
    assert rerun.summary["trained_model"] == golden.run.summary["trained_model"]
    assert _tree_digest(golden.workspace.serving_dir) == serving_before
    rerun_report = os.path.join(paths.run_report_dir(golden.workspace.output_dir, rerun.summary["run_id"]),
                                report.REPORT_FILENAME)
    with open(rerun_report) as f:
        marked = {row[0] for row in table_rows(f.read(), "timings") if row[2].startswith("cached")}
    assert marked == REUSABLE


def test_a_worse_model_is_not_blessed_against_both_bars_and_serving_is_left_byte_for_byte(golden_session, worse):
    run, serving_before = worse
    assert run.code == 0, run.summary["error"]
    assert run.reused == {"ImageFolderExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator", "Transform"}
    assert run.ran == ALWAYS_RUN | {"Trainer", "Evaluator"}  # the blessing's condition is false:
    assert all(f"{stage} skipped (its condition was not met)" in run.out for stage in BLESSED_ONLY)  # no TFLite files
    evaluation = run.summary["evaluation"]
    assert run.summary["status"] == "not_blessed" and not run.summary["pushed"]
    assert evaluation["champion_accuracy"] == pytest.approx(golden_session.run.summary["evaluation"]["accuracy"],
                                                            abs=1e-6)
    failures = evaluation["validation_failures"]
    assert any(failure.endswith(f"needs >= 0.9999: short by {0.9999 - evaluation['accuracy']:.4f}")
               for failure in failures)  # TFMA lists the failures in no fixed order
    below = [d for d in DIGIT_CLASSES if evaluation["per_class"][d]["accuracy"] < 0.99]
    assert below and all(any(f"class {d!r} sparse_categorical_accuracy" in f for f in failures) for d in below)
    assert any("below the champion's (allowed drop 0.0100)" in failure for failure in failures)
    assert len(failures) == 2 + len(below)
    assert _tree_digest(golden_session.workspace.serving_dir) == serving_before


def _replace_keeping_size_and_mtime(folder: str) -> tuple:
    """Overwrites one image with another of the same class and byte size, and gives it back its
    modification time: what `cp -p` or `rsync -a` of a re-exported file does."""
    by_size = {}
    for name in sorted(os.listdir(folder)):
        by_size.setdefault(os.path.getsize(os.path.join(folder, name)), []).append(os.path.join(folder, name))
    source, target = next(paths[:2] for paths in by_size.values() if len(paths) > 1)
    before = os.stat(target)
    with open(source, "rb") as f:
        data = f.read()
    assert data != open(target, "rb").read()
    with open(target, "wb") as f:
        f.write(data)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return source, target


def test_an_image_replaced_with_the_same_size_and_mtime_runs_example_gen_and_everything_after_it(
        after_worse, worse):
    source, target = _replace_keeping_size_and_mtime(os.path.join(after_worse.data_root, "test", "7"))
    run = after_worse.run(*WORSE)
    assert run.code == 0, run.summary["error"]
    assert run.reused == {"ImportSchemaGen"}  # the schema file is all it reads
    assert run.ran == STAGES - {"ImportSchemaGen"} - BLESSED_ONLY
    assert "ImageFolderExampleGen finished in " in run.out
    assert run.summary["data_fingerprint"] != worse[0].summary["data_fingerprint"]
    relative = sorted(os.path.relpath(p, after_worse.data_root) for p in (source, target))
    assert relative in [sorted(group["files"]) for group in run.summary["identical_files"]]  # same bytes: reported


# The stages up to the data gate, which --strict closes on the golden data's rejected files, so the run
# stops before Transform and the Trainer. That every stage after the gate is keyed by the same project
# fingerprint, and cached only when caching is on, is tests/test_caching.py's.
GATED_STAGES = {"ImageFolderExampleGen", "ImportSchemaGen", "RetrainGate", "ChampionModel", "StatisticsGen",
                "ExampleValidator", "DataGate"}


@pytest.mark.parametrize("change", ["code", "no_cache"])
def test_a_code_change_or_no_cache_runs_each_stage_again_instead_of_reusing_it(golden, monkeypatch, change):
    flags = ["--strict"]
    if change == "code":  # as if a file of models/ had been edited: the sources' digest changes
        edited = sources.update_with_sources

        def update_with_sources(digest, packages=sources.PROJECT_PACKAGES):
            return edited(digest, packages).update(b"# an edit") or digest
        monkeypatch.setattr(sources, "update_with_sources", update_with_sources)
    else:
        flags.append("--no-cache")
    run = golden.workspace.run(*flags)
    assert run.code == 1 and "strict mode: " in run.summary["error"], run.summary["error"]
    assert not run.reused and run.ran == GATED_STAGES
    assert "reused in" not in run.out


def test_a_rollback_pins_the_champion_so_a_blessed_run_holds_until_unpinned(after_worse, worse, capsys):
    serving_dir = after_worse.serving_dir
    golden_version = promotion.champion(serving_dir)["version"]
    assert promote.main(["--output-dir", after_worse.output_dir, "force", "--run", worse[0].summary["run_id"],
                         "--reason", "drill"]) == 0
    assert promote.main(["--output-dir", after_worse.output_dir, "rollback", "--to", str(golden_version)]) == 0
    capsys.readouterr()
    blessed, forced, rolled_back = promotion.promotion_log(serving_dir)
    assert (forced["action"], forced["reason"]) == ("forced", "drill")
    assert (rolled_back["action"], rolled_back["source_version"]) == ("rollback", blessed["version"])
    champion = promotion.champion(serving_dir)
    assert champion["version"] == rolled_back["version"] and champion["pinned"]

    # the golden settings, on the data the pinned champion was trained on: unchanged, unless told to train
    assert after_worse.run().summary["status"] == "unchanged"
    held = after_worse.run("--retrain-always")  # then blessed, and it would replace the forced model
    assert held.code == 0, held.summary["error"]
    assert held.summary["status"] == "held" and held.summary["blessed"] and not held.summary["pushed"]
    assert f"held: the champion {promotion.champion_dir(serving_dir)} is pinned by a rollback" in held.out
    assert promotion.champion(serving_dir) == champion
    assert promotion.promotion_log(serving_dir)[-1]["action"] == "held"
    assert promote.main(["--output-dir", after_worse.output_dir, "unpin"]) == 0
    assert not promotion.champion(serving_dir)["pinned"]


def test_a_warm_start_begins_at_the_champions_weights_and_says_where_it_started(after_worse, worse):
    """WORSE's learning rate learns nothing in its one epoch, so a model that starts from the
    champion's weights scores what the champion scores; one that starts from random weights would
    score near chance (the worse run's own accuracy)."""
    version = promotion.champion(after_worse.serving_dir)["version"]
    run = after_worse.run(*WORSE, "--warm-start")
    assert run.code == 0, run.summary["error"]
    assert "Trainer" in run.ran  # its input, the champion, is read anew by every run
    assert run.summary["started_from"]["champion_version"] == version
    assert f"warm-started from the champion, version {version}" in run.out
    with open(os.path.join(run.summary["artifacts"]["model_run"], LEARNING_RATE_FILENAME)) as f:
        assert max(json.load(f)["learning_rate"]) == pytest.approx(1e-7 * WARM_START_LEARNING_RATE)  # fine-tuning
    evaluation = run.summary["evaluation"]
    assert evaluation["accuracy"] == pytest.approx(evaluation["champion_accuracy"], abs=0.01)
    assert worse[0].summary["evaluation"]["accuracy"] < evaluation["accuracy"] - 0.3  # the same run from scratch


def _add_class(data_root: str, name: str, colour) -> None:
    for split, count in (("train", 12), ("test", 4)):
        for i in range(count):
            write_image(os.path.join(data_root, split, name, f"{i}.png"), colour, (28, 28), seed=i)


def test_a_new_class_stops_before_transform_and_once_accepted_is_judged_on_the_absolute_bounds(after_worse):
    _add_class(after_worse.data_root, "amber", (250, 190, 0))
    stopped = after_worse.run(*WORSE)
    assert stopped.code == 1 and stopped.summary["status"] == "failed"
    assert "DataGate" in stopped.summary["stage_seconds"] and "Transform" not in stopped.summary["stage_seconds"]
    assert "class folder(s) ['amber'] are not in the schema" in stopped.summary["error"]
    schema_file = os.path.join(after_worse.output_dir, "schema.pbtxt")
    command = f"python -m pipeline.schema --schema {schema_file} --data-root {after_worse.data_root}"
    assert command in stopped.err

    assert schema.main(["--schema", schema_file, "--data-root", after_worse.data_root]) == 0
    accepted = after_worse.run(*WORSE)
    assert accepted.code == 0, accepted.summary["error"]
    evaluation = accepted.summary["evaluation"]
    assert accepted.summary["classes"] == DIGIT_CLASSES + ["amber"]  # appended: every digit keeps its id
    assert evaluation["champion_accuracy"] is None
    assert evaluation["champion_skipped"].startswith(f"not compared with the champion, whose classes {DIGIT_CLASSES} "
                                                     f"differ from this run's {DIGIT_CLASSES + ['amber']}")
    assert evaluation["champion_skipped"] in accepted.out
    assert not any("champion" in failure for failure in evaluation["validation_failures"])


def test_a_removed_class_is_retired_keeping_every_id_and_the_champion_is_compared_on_the_rest(
        after_worse, golden_session):
    for split in ("train", "test"):
        shutil.rmtree(os.path.join(after_worse.data_root, split, "9"))
    schema_file = os.path.join(after_worse.output_dir, "schema.pbtxt")
    assert schema.main(["--schema", schema_file, "--data-root", after_worse.data_root]) == 0
    assert schema.retired_classes(schema.load(schema_file)) == ["9"]
    assert schema.class_names(schema.load(schema_file)) == DIGIT_CLASSES

    run = after_worse.run(*WORSE)
    assert run.code == 0, run.summary["error"]
    evaluation = run.summary["evaluation"]
    assert "champion_skipped" not in evaluation
    with open(os.path.join(run.summary["trained_model"], "labels.txt")) as f:
        assert f.read().split() == DIGIT_CLASSES  # the same ids as the champion's
    # The champion, unchanged, scored on the eval digits 0-8: exactly its golden confusion counts without row 9.
    golden_matrix = np.array(golden_session.run.summary["evaluation"]["confusion_matrix"])
    assert evaluation["champion_accuracy"] == pytest.approx(np.trace(golden_matrix[:9, :9]) / golden_matrix[:9].sum(),
                                                            abs=1e-6)
    champion = golden_session.run.summary["pushed_paths"]["saved_model"]
    assert promotion.champion_dir(after_worse.serving_dir) == champion


# --- Runs that stop, and a run killed mid-way ------------------------------------------------------------

def test_strict_mode_stops_the_golden_data_before_transform_and_keeps_the_report(golden):
    stopped = golden.workspace.run("--strict")
    assert stopped.code == 1
    rejected = golden.run.summary["file_counts"]["rejected"]
    expected = f"strict mode: {rejected} file(s) rejected: "
    assert expected in stopped.err and expected in stopped.summary["error"]
    assert stopped.summary["status"] == "failed"
    assert "DataGate" in stopped.ran and "Transform" not in stopped.summary["stage_seconds"]
    assert "ImageFolderExampleGen" in stopped.reused
    assert stopped.out.strip().splitlines()[-1].startswith("report: ")


def test_a_split_whose_files_are_all_unusable_stops_before_transform(tmp_path, capsys):
    data_root, output_dir = str(tmp_path / "data"), str(tmp_path / "out")
    make_class_folder(os.path.join(data_root, "train"), per_class=4)
    for name in ("blue", "green", "red"):
        os.makedirs(os.path.join(data_root, "test", name))
        open(os.path.join(data_root, "test", name, "x.png"), "wb").close()
    assert local_runner.main(["--data-root", data_root, "--output-dir", output_dir]) == 1
    expected = ("split 'eval' has no usable images (3 file(s) rejected; most common reasons: "
                "['empty file (0 bytes)'])")
    assert expected in capsys.readouterr().err
    with open(os.path.join(output_dir, "last_run.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "failed" and expected in summary["error"]
    assert "DataGate" in summary["stage_seconds"] and "Transform" not in summary["stage_seconds"]


def test_missing_data_root_fails_fast_with_one_clear_message(tmp_path, capsys):
    assert local_runner.main(["--data-root", str(tmp_path / "missing"), "--output-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_run_killed_in_the_trainer_resumes_when_rerun_and_serving_never_shows_a_partial_version(after_worse):
    """From the worse state every stage before the Trainer is reused, so the Trainer starts at once. The
    run is killed in a process of its own; the rerun, in this one, watched by a thread."""
    flags = ("--epochs", "2", "--tflite", "float32")  # killed after the first
    command = [sys.executable, "-m", "pipeline.local_runner", "--data-root", after_worse.data_root,
               "--output-dir", after_worse.output_dir, *flags]
    serving_dir = after_worse.serving_dir
    versions_before = promotion.versions(serving_dir)
    partial, watching = [], threading.Event()

    def watch_serving():  # what a model server polling the folder would see
        while not watching.is_set():
            for version in promotion.versions(serving_dir):
                folder = promotion.version_dir(serving_dir, version)
                if not {"saved_model.pb", "promotion.json", "labels.txt"} <= set(os.listdir(folder)):
                    partial.append(sorted(os.listdir(folder)))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_serving)
    watcher.start()
    try:
        first = subprocess.Popen(command, cwd=paths.REPO_ROOT, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a checkpoint counts once the checkpoint manager's state file names it (written after the
        # .index and data files): killed between the two, a rerun rightly starts from epoch 0
        checkpoints = os.path.join(after_worse.output_dir, "pipeline", "Trainer", "checkpoints", "*", "**",
                                   "checkpoint")
        existing = set(glob.glob(checkpoints, recursive=True))
        deadline = time.time() + 600
        while not set(glob.glob(checkpoints, recursive=True)) - existing and first.poll() is None \
                and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the run ended before an epoch was checkpointed"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert promotion.versions(serving_dir) == versions_before

        rerun = after_worse.run(*flags)
    finally:
        watching.set()
        watcher.join()
    assert rerun.code == 0, rerun.summary.get("error") or rerun.err[-2000:]
    assert "Trainer" in rerun.ran
    throughputs = sorted(glob.glob(os.path.join(after_worse.output_dir, "pipeline", "Trainer", "model_run", "*",
                                                "throughput.json")), key=os.path.getmtime)
    with open(throughputs[-1]) as f:
        assert json.load(f)[0]["epoch"] >= 1, "the rerun resumed after the checkpointed epoch"
    assert partial == []
