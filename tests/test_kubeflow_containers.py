"""The compiled pipeline as open-source KFP v2 runs it: the image built here (bin/image), then every
step of the compiled spec in a container of it (kubeflow_runner run-local), on the embedded digits,
its artifacts in an S3 server on loopback as a cluster's are in its object store.

The test starts the container engine itself (bin/docker-up) and fails, not skips, without one."""
import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest
import yaml

from pipeline.kubeflow import compile as kfp_compile
from pipeline import kubeflow_runner, paths
from pipeline.kubeflow import local_run as kfp_local
from tests import helpers

STEPS_WITH_INPUTS = {"RetrainGate", "StatisticsGen", "ExampleValidator", "DataGate", "Transform", "Trainer",
                     "LiteModels", "ChampionModel", "Evaluator", "Pusher"}
# The test is about the containers, not the recipe (tests/golden.py trains that): a subset of the digits,
# one epoch, and no accuracy bar, so the model is blessed and the Pusher runs.
PER_CLASS = {"train": 30, "test": 10}
# One Beam worker process per Beam step rather than the compiled one per core: each worker process
# imports TensorFlow and TFX again, and the step shares this 2-core machine with the other pytest
# worker. The steps still run Beam in multi_processing mode, as compiled.
ONE_BEAM_WORKER = "--beam-arg=--direct_num_workers=1"


def _run(*command, timeout):
    result = subprocess.run(command, cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout.strip().splitlines()


@pytest.fixture(scope="module")
def image():
    """The engine (started here when none answers) and the image (built, or found cached)."""
    _run("bash", "bin/docker-up", timeout=600)
    return _run("bash", "bin/image", timeout=3600)[-1]


def _run_local(volume, image, *flags):
    started = time.time()
    code = kubeflow_runner.main(["run-local", "--image", image, "--volume", str(volume), "--gpus", "0",
                                 ONE_BEAM_WORKER, *flags])
    (run_dir,) = sorted((volume / "kfp-local").iterdir(), key=os.path.getmtime)[-1:]
    with open(run_dir / "run.json") as f:
        return code, {**json.load(f), "wall_seconds": time.time() - started}


def _tree_digest(folder) -> str:
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _handed_over(record, step_name):
    """The ExecutorInput the step was handed in the run, and the run's compiled pipeline spec."""
    (step,) = [s for s in record["steps"] if s["step"] == step_name]
    run_dir = os.path.dirname(step["log"])
    with open(os.path.join(run_dir, step_name, "executor_input.json")) as f:
        executor_input = json.load(f)
    with open(os.path.join(run_dir, "pipeline.yaml")) as f:
        return executor_input, next(yaml.safe_load_all(f))  # the pipeline spec; the platform spec follows


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    volume = tmp_path_factory.mktemp("volume")
    for split, count in PER_CLASS.items():
        for digit in sorted(os.listdir(os.path.join(paths.EMBEDDED_DATA, split))):
            os.makedirs(volume / "data" / split / digit)
            for name in sorted(os.listdir(os.path.join(paths.EMBEDDED_DATA, split, digit)))[:count]:
                shutil.copy(os.path.join(paths.EMBEDDED_DATA, split, digit, name), volume / "data" / split / digit)
    return volume


@pytest.fixture(scope="module")
def first_run(image, volume):
    # --warm-start: the Trainer takes the ChampionModel step's output, empty on a first run, as its base_model
    return _run_local(volume, image, "--run-epochs", "1", "--run-min-accuracy", "0", "--warm-start")


@pytest.fixture(scope="module")
def unchanged_run(first_run, image, volume):
    """The same images, settings and code again, with a bar no model meets: nothing is trained."""
    serving_before = _tree_digest(volume / "serving")
    code, record = _run_local(volume, image, "--run-epochs", "1", "--run-min-accuracy", "0.9999", "--warm-start")
    return code, record, serving_before


@pytest.mark.e2e
def test_the_image_holds_the_project_and_every_class_the_spec_names(image, tmp_path):
    spec_file = tmp_path / "pipeline.json"
    assert kubeflow_runner.main(["compile", "--output", str(spec_file), "--image", image]) == 0
    with open(spec_file) as f:
        named = helpers.named_classes(json.load(f))
    check = ("import importlib, sys\nfrom tfx.utils import import_utils\n"
             f"importlib.import_module({kfp_compile.TFX_ENTRYPOINT!r})\n"
             "for path in sys.argv[1:]: import_utils.import_class_by_path(path)\n"
             "import pipeline.kubeflow.entrypoint as e; print(e.__file__)\n")
    lines = _run("docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", check, *named,
                 timeout=300)
    assert lines[-1].startswith("/opt/venv/lib/")  # the installed package, not a copy of this checkout
    assert _run("docker", "run", "--rm", "--network", "none", "--entrypoint", "ls", image,
                kfp_compile.IMAGE_SCHEMAS_DIR, timeout=120) == sorted(os.listdir(paths.SCHEMAS_DIR))


@pytest.mark.e2e
def test_every_step_runs_in_a_container_and_the_model_is_pushed(first_run, volume):
    code, record = first_run
    assert code == 0, record["error"]
    assert [step["status"] for step in record["steps"]] == ["succeeded"] * 12
    assert {step["step"] for step in record["steps"]} == {"ImageFolderExampleGen", "ImportSchemaGen", *STEPS_WITH_INPUTS}
    assert record["status"] == "pushed"
    serving = volume / "serving" / "image_cnn"
    with open(serving / "champion.json") as f:
        version = json.load(f)["version"]
    assert (serving / str(version) / "saved_model.pb").exists()
    with open(serving / "promotions.jsonl") as f:
        (promotion,) = [json.loads(line) for line in f]
    assert (promotion["version"], promotion["run_id"]) == (version, record["run_id"])  # the KFP run's own id
    for step in record["steps"]:  # the direct runner's workers run in the step's own environment
        with open(step["log"]) as f:
            assert "Creating temporary sdist package" not in f.read(), step["step"]


@pytest.mark.e2e
def test_inputs_arrived_typed_system_and_each_step_says_so_in_its_log(first_run):
    _, record = first_run
    for step in record["steps"]:
        if step["step"] not in STEPS_WITH_INPUTS:
            continue
        assert step["input_types"] and all(t.startswith("system.") for t in step["input_types"].values()), step
        with open(step["log"]) as f:
            log = f.read()
        for name, title in step["input_types"].items():
            assert f"kfp_entrypoint: input '{name}' arrived as {title}; restored " in log, (step["step"], name)


@pytest.mark.e2e
def test_a_warm_starting_trainer_gets_the_champion_step_output_and_finds_no_champion_yet(first_run):
    _, record = first_run
    (trainer,) = [s for s in record["steps"] if s["step"] == "Trainer"]
    assert trainer["input_types"]["base_model"] == "system.Model"
    with open(trainer["log"]) as f:
        assert "trained from scratch (--warm-start: there is no champion yet)" in f.read()


@pytest.mark.e2e
def test_the_pushers_condition_reads_the_evaluators_blessing_as_the_driver_hands_it(first_run):
    """The compiled condition, evaluated with CEL on the ExecutorInput the Pusher really got: true for
    the blessing the Evaluator wrote in its container, false once that blessing says not blessed
    (a run that skips the step is kfp_local's unit test: tests/test_kubeflow.py)."""
    executor_input, spec = _handed_over(first_run[1], "Pusher")
    condition = spec["root"]["dag"]["tasks"]["Pusher"]["triggerPolicy"]["condition"]
    assert kfp_local.condition_holds(condition, executor_input)
    blessings = [a for artifacts in executor_input["inputs"]["artifacts"].values() for a in artifacts["artifacts"]
                 if "blessed" in a["metadata"]]
    assert len(blessings) == 1 and blessings[0]["metadata"]["blessed"] == 1.0
    blessings[0]["metadata"]["blessed"] = 0.0
    assert not kfp_local.condition_holds(condition, executor_input)


@pytest.mark.e2e
def test_without_the_project_entrypoint_tfx_fails_on_the_inputs_as_kfp_hands_them(first_run, image, volume):
    """The failure the project's entrypoint exists for, reproduced in the image: StatisticsGen's own
    ExecutorInput from the run, given to TFX's entrypoint directly."""
    _, record = first_run
    (step,) = [s for s in record["steps"] if s["step"] == "StatisticsGen"]
    step_dir = os.path.join(os.path.dirname(step["log"]), "StatisticsGen")
    with open(os.path.join(step_dir, "executor_input.json")) as f:
        executor_input = f.read()
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{volume}:/mnt/image-cnn", "--entrypoint", "python",
         image, "-m", kfp_compile.TFX_ENTRYPOINT, "--executor_class_path",
         "tfx.components.statistics_gen.executor.Executor", "--json_serialized_invocation_args", executor_input],
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "No module named 'system'" in result.stderr


@pytest.mark.e2e
def test_every_artifact_is_in_the_object_store_and_reaches_the_next_step_whole(first_run):
    """Every URI a step was handed or reported is minio://, as on a cluster whose pipeline root is KFP's
    default store; the model folder (TFX's Format-Serving/) makes the round trip through the store: each
    step after the Trainer downloads as many files as the Trainer uploaded."""
    _, record = first_run
    uris = [uri for step in record["steps"] for side in ("inputs", "outputs") for uri in step[side].values()]
    assert uris and all(uri.startswith("minio://mlpipeline/v2/artifacts/image-cnn/") for uri in uris), uris
    steps = {step["step"]: step for step in record["steps"]}
    model_files = steps["Trainer"]["uploaded_files"]["model"]
    assert model_files > 0
    for consumer in ("LiteModels", "Evaluator", "Pusher"):
        assert steps[consumer]["downloaded_files"]["model"] == model_files, consumer
    with open(steps["Trainer"]["log"]) as f:
        log = f.read()
    assert "kfp_entrypoint: output 'model' written to /minio/mlpipeline/v2/artifacts/image-cnn/" in log
    assert "; reported as minio://mlpipeline/v2/artifacts/image-cnn/" in log


@pytest.mark.e2e
def test_a_run_on_what_the_champion_was_trained_on_trains_nothing_and_leaves_serving_as_it_was(
        first_run, unchanged_run, volume):
    code, record, serving_before = unchanged_run
    assert code == 0, record["error"]
    assert record["status"] == "unchanged"
    assert "data, settings and code are those champion version" in record["reason"]
    statuses = {step["step"]: step["status"] for step in record["steps"]}
    assert {step for step, status in statuses.items() if status == "succeeded"} == {
        "ImageFolderExampleGen", "ImportSchemaGen", "RetrainGate"}
    assert statuses["Trainer"] == statuses["Pusher"] == "not_triggered"
    assert _tree_digest(volume / "serving") == serving_before
    assert record["wall_seconds"] < first_run[1]["wall_seconds"] / 3, (record["wall_seconds"],
                                                                       first_run[1]["wall_seconds"])


@pytest.mark.e2e
def test_without_the_project_entrypoint_tfx_cannot_write_its_output_to_the_object_store(first_run, image):
    """What broke first once the artifacts were in an object store: TFX's own entrypoint, handed the
    step's ExecutorInput with its minio:// URIs as KFP hands it, cannot write there (TensorFlow has no
    minio filesystem). ImportSchemaGen has no inputs, so no type needs restoring first."""
    executor_input, spec = _handed_over(first_run[1], "ImportSchemaGen")
    container = spec["deploymentSpec"]["executors"]["ImportSchemaGen_executor"]["container"]
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-m",
         kfp_compile.TFX_ENTRYPOINT, *kfp_local.substitute(container["args"], executor_input)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "File system scheme 'minio' not implemented" in result.stderr, result.stderr[-2000:]
