"""Each way open-source KFP v2 hands TFX its inputs, on its own: what TFX's entrypoint does with it
unaided, and what the project's entrypoint (pipeline/kubeflow/entrypoint.py) makes of it: types and
local paths. Then the launcher's and driver's side (pipeline/kubeflow/launcher.py, object_store.py,
local_run.py): URI mapping, the store's copies, inputs read back, the CEL condition, the task order."""
import json
import subprocess
import sys

import pytest
from kfp.pipeline_spec import pipeline_spec_pb2
from google.protobuf import json_format
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types import standard_artifacts

from pipeline.kubeflow import entrypoint as kfp_entrypoint
from pipeline.kubeflow import launcher, object_store
from pipeline.kubeflow import local_run as kfp_local

EXAMPLES_SCHEMA = "title: tfx.Examples\ntype: object\n"
MODEL_SCHEMA = "title: tfx.Model\ntype: object\n"
BLESSING_CONDITION = "(inputs.artifacts['model_blessing'].artifacts[0].metadata['blessed'] == 1.0)"


def _produced(name, schema, metadata):
    """An upstream step's output as its executor reported it."""
    return {"name": name, "uri": f"/mnt/v/pipeline/run/{name}", "type": {"instanceSchema": schema}, "metadata": metadata}


def _executor_input(mode):
    """A Trainer-like step's inputs as the v2 driver hands them over: examples and a base model."""
    examples = kfp_local.as_read_back(_produced("examples", EXAMPLES_SCHEMA, {"split_names": '["train","eval"]',
                                                                              "span": 0}), 7, mode)
    model = kfp_local.as_read_back(_produced("model", MODEL_SCHEMA, {}), 8, mode)
    return {"inputs": {"artifacts": {"examples": {"artifacts": [examples]}, "base_model": {"artifacts": [model]}}}}


def _tfx_parse(executor_input):
    proto = json_format.ParseDict(executor_input, pipeline_spec_pb2.ExecutorInput())
    return kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(proto.inputs.artifacts)


DECLARED = {"examples": {"instanceSchema": EXAMPLES_SCHEMA}, "base_model": {"instanceSchema": MODEL_SCHEMA}}


def test_system_titles_break_tfx_and_are_restored_from_the_input_definitions():
    executor_input = _executor_input("system")
    types = {name: lst["artifacts"][0]["type"] for name, lst in executor_input["inputs"]["artifacts"].items()}
    assert types == {"examples": {"schemaTitle": "system.Dataset"}, "base_model": {"schemaTitle": "system.Model"}}
    with pytest.raises(ImportError):  # TFX imports the class the title names: there is no module `system`
        _tfx_parse(executor_input)
    lines = kfp_entrypoint.restore_input_types(executor_input, DECLARED)
    assert "input 'examples' arrived as system.Dataset; restored tfx.Examples from the step's input definitions" in lines
    parsed = _tfx_parse(executor_input)
    (examples,), (model,) = parsed["examples"], parsed["base_model"]
    assert isinstance(examples, standard_artifacts.Examples) and isinstance(model, standard_artifacts.Model)
    assert examples.split_names == '["train","eval"]' and examples.span == 0  # metadata kept, doubles back to int
    assert examples.uri == "/mnt/v/pipeline/run/examples"


def test_an_empty_instance_schema_breaks_tfx_and_is_restored():
    executor_input = _executor_input("empty")
    assert executor_input["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"] == {"instanceSchema": ""}
    with pytest.raises(Exception):  # yaml of "" is None: TFX's `.get('title')` fails
        _tfx_parse(executor_input)
    kfp_entrypoint.restore_input_types(executor_input, DECLARED)
    assert isinstance(_tfx_parse(executor_input)["examples"][0], standard_artifacts.Examples)


def test_collapsed_titles_are_told_apart_by_the_definitions_then_by_metadata_else_a_clear_error():
    dataset = {"instanceSchema": "title: tfx.Dataset\ntype: object\n"}
    executor_input = {"inputs": {"artifacts": {
        name: {"artifacts": [{"name": "1", "uri": f"/u/{name}", "type": {"schemaTitle": "system.Dataset"},
                              "metadata": {}}]} for name in ("examples", "dataset")}}}
    kfp_entrypoint.restore_input_types(executor_input, {"examples": DECLARED["examples"], "dataset": dataset})
    titles = {name: kfp_entrypoint.type_title(lst["artifacts"][0]["type"])
              for name, lst in executor_input["inputs"]["artifacts"].items()}
    assert titles == {"examples": "tfx.Examples", "dataset": "tfx.Dataset"}

    undeclared = _executor_input("system")
    lines = kfp_entrypoint.restore_input_types(undeclared, {"base_model": DECLARED["base_model"]})
    assert "input 'examples' arrived as system.Dataset; restored tfx.Examples from its metadata" in lines
    with pytest.raises(kfp_entrypoint.UntypedInputError, match="input 'base_model' arrived typed system.Model"):
        kfp_entrypoint.restore_input_types(_executor_input("system"), {})


def test_the_entrypoint_command_rewrites_only_the_invocation_and_reports_each_input(tmp_path):
    """The module as the image runs it, up to the point where it hands over to TFX."""
    executor_input = _executor_input("system")
    spec = json.dumps({"artifacts": {name: {"artifactType": t} for name, t in DECLARED.items()}})
    argv = ["--executor_class_path", "x.Y", "--json_serialized_invocation_args", json.dumps(executor_input),
            f"--json_serialized_inputs_spec_args={spec}", "--runner=DirectRunner"]
    rewritten, lines, _, _ = kfp_entrypoint.rewrite_arguments(argv)
    assert rewritten[:3] + rewritten[4:] == argv[:3] + argv[4:]
    restored = json.loads(rewritten[3])["inputs"]["artifacts"]["examples"]["artifacts"][0]
    assert restored["type"] == DECLARED["examples"] and restored["metadata"]["span"] == 0.0
    assert len([line for line in lines if " arrived as " in line]) == 2
    broken = ["--executor_class_path", "x.Y", "--json_serialized_invocation_args", json.dumps(_executor_input("system"))]
    result = subprocess.run([sys.executable, "-m", "pipeline.kubeflow.entrypoint", *broken], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("kfp_entrypoint: error: input 'base_model' arrived typed")


@pytest.mark.parametrize("blessed, expected", [(1, True), (1.0, True), (0, False)])
def test_the_pusher_condition_is_evaluated_with_cel_on_the_read_back_metadata(blessed, expected):
    """The Evaluator reports `blessed` as an integer; read back from ML Metadata it is a double, which
    the compiled condition compares with 1.0."""
    blessing = kfp_local.as_read_back(_produced("blessing", "title: tfx.ModelBlessing\n", {"blessed": blessed}), 3,
                                      "system")
    executor_input = {"inputs": {"artifacts": {"model_blessing": {"artifacts": [blessing]}}}, "outputs": {}}
    assert kfp_local.condition_holds(BLESSING_CONDITION, executor_input) is expected


def test_a_condition_over_missing_metadata_is_an_error_not_a_silent_false():
    blessing = kfp_local.as_read_back(_produced("blessing", "title: tfx.ModelBlessing\n", {}), 3, "system")
    executor_input = {"inputs": {"artifacts": {"model_blessing": {"artifacts": [blessing]}}}, "outputs": {}}
    with pytest.raises(kfp_local.StepFailed, match="evaluation error"):
        kfp_local.condition_holds(BLESSING_CONDITION, executor_input)


def test_tasks_run_after_what_they_depend_on_and_a_cycle_is_refused():
    spec = {"root": {"dag": {"tasks": {"c": {"dependentTasks": ["a", "b"]}, "b": {"dependentTasks": ["a"]}, "a": {}}}}}
    assert kfp_local.task_order(spec) == ["a", "b", "c"]
    spec["root"]["dag"]["tasks"]["a"]["dependentTasks"] = ["c"]
    with pytest.raises(kfp_local.StepFailed, match="cycle"):
        kfp_local.task_order(spec)


def test_run_local_without_a_container_engine_is_one_line(tmp_path, capsys, monkeypatch):
    from pipeline import kubeflow_runner
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker to be found
    assert kubeflow_runner.main(["run-local", "--image", "x:1", "--volume", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no container engine: 'docker' is not installed (bin/in-env bash bin/docker-up installs "
                   "and starts one)"]


@pytest.mark.parametrize("make_data, flags, message", [
    (False, [], "is /VOLUME/data here, which is not a folder: put the images there, or pass --run-data-root"),
    (True, ["--run-data-root", "/elsewhere/images"], "/elsewhere/images is not on the volume (mounted at /mnt/image-cnn)"),
])
def test_run_local_names_a_data_root_it_cannot_mount(tmp_path, capsys, make_data, flags, message):
    from pipeline import kubeflow_runner
    if make_data:
        (tmp_path / "data").mkdir()
    assert kubeflow_runner.main(["run-local", "--image", "x:1", "--volume", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.replace("/VOLUME", str(tmp_path)) in err[0]


def test_a_step_skipped_by_its_condition_skips_the_steps_after_it(tmp_path):
    """No container is started: the first step's condition is false, so the second has no inputs."""
    spec = {"pipelineInfo": {"name": "p"}, "defaultPipelineRoot": "/mnt/v/pipeline",
            "root": {"dag": {"tasks": {
                "gate": {"componentRef": {"name": "c"}, "triggerPolicy": {"condition": "1 == 2"}},
                "after": {"componentRef": {"name": "c"}, "dependentTasks": ["gate"]}}}},
            "components": {"c": {"executorLabel": "e"}},
            "deploymentSpec": {"executors": {"e": {"container": {"image": "none", "command": ["false"]}}}}}
    run = kfp_local.Run(spec, {}, volumes={}, parameters={}, log_root=str(tmp_path), pipeline_root="minio://b/p", docker="/nonexistent/docker")
    lines = []
    record = run.run(say=lines.append)
    assert [(step["step"], step["status"]) for step in record] == [("gate", "not_triggered"), ("after", "not_triggered")]
    assert lines[1].endswith("after not triggered: ['gate'] did not run")


def test_independent_steps_run_together_and_after_a_failure_no_step_starts(tmp_path):
    """The engine is a script standing in for `docker run` (the containers' own run is
    tests/test_kubeflow_containers.py): it logs each step's start and end. By handshakes, not sleeps:
    b fails only once a has started, and a ends only once the runner has collected b's exit (a zombie
    answers kill -0 until it is reaped). So a and b must run together (one at a time, b would wait in
    vain and fail with code 9); c, after a, never starts; a is waited for; b's failure is raised."""
    events, b_pid = tmp_path / "events", tmp_path / "b.pid"
    engine = tmp_path / "engine"
    engine.write_text('#!/bin/sh\nname=$(echo "$@" | sed "s/.*--name kfp-[^-]*-\\([a-z]*\\).*/\\1/")\n'
                      f'echo "start $name" >> {events}\n'
                      f'wait_for() {{ i=0; until eval "$1"; do i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.05; done; }}\n'
                      f'if [ "$name" = b ]; then echo $$ > {b_pid}; wait_for "grep -qx \'start a\' {events}"; '
                      f'echo "end $name" >> {events}; exit 3; fi\n'
                      f'wait_for "grep -qx \'end b\' {events} && ! kill -0 $(cat {b_pid}) 2>/dev/null"; '
                      f'echo "end $name" >> {events}\n')
    engine.chmod(0o755)
    spec = {"pipelineInfo": {"name": "p"}, "defaultPipelineRoot": "/mnt/v/pipeline",
            "root": {"dag": {"tasks": {"a": {"componentRef": {"name": "c"}}, "b": {"componentRef": {"name": "c"}},
                                       "c": {"componentRef": {"name": "c"}, "dependentTasks": ["a"]}}}},
            "components": {"c": {"executorLabel": "e"}},
            "deploymentSpec": {"executors": {"e": {"container": {"image": "none", "command": ["run"]}}}}}
    run = kfp_local.Run(spec, {}, volumes={}, parameters={}, log_root=str(tmp_path), pipeline_root="minio://b/p", docker=str(engine))
    with pytest.raises(kfp_local.StepFailed, match="step b exited with code 3"):
        run.run(say=lambda line: None, parallel=2)
    lines = events.read_text().splitlines()
    assert sorted(lines[:2]) == ["start a", "start b"]  # together: both started before either ended
    assert lines[2:] == ["end b", "end a"]  # c never started; a was waited for
    assert [(step["step"], step["status"]) for step in run.record] == [("a", "succeeded"), ("b", "failed")]


def test_of_steps_that_ended_together_the_failed_one_is_taken_first():
    """Else the success beside it would start the next steps before the failure is seen."""
    import subprocess
    running = {name: (subprocess.Popen(["sh", "-c", f"exit {code}"]),) for name, code in (("a", 0), ("b", 3), ("c", 0))}
    for process, in running.values():
        process.wait()
    assert kfp_local.Run._wait_for_one(running) == "b"


@pytest.mark.parametrize("uri, local", [("minio://mlpipeline/v2/a/b", "/minio/mlpipeline/v2/a/b"),
                                        ("s3://bucket/k", "/s3/bucket/k"), ("gs://bucket/k", "/gcs/bucket/k"),
                                        ("/mnt/volume/k", None), ("file:///k", None)])
def test_local_path_for_uri_is_the_launchers(uri, local):
    assert launcher.local_path_for_uri(uri) == local
    if local:
        assert launcher.remote_uri_for_local_path(local) == uri


def test_the_entrypoint_hands_tfx_local_paths_and_reports_the_remote_uris_back(tmp_path, monkeypatch):
    """Inputs and outputs under minio:// become /minio/... for TFX; an input with no objects gets its
    folder back; afterwards the executor output names the remote URIs again, and says which empty
    folders the launcher will not upload."""
    monkeypatch.setattr(launcher, "LOCAL_ROOTS", {"minio://": f"{tmp_path}/minio/"})
    present = tmp_path / "minio" / "b" / "run" / "examples"
    present.mkdir(parents=True)
    executor_input = {
        "inputs": {"artifacts": {"examples": {"artifacts": [{"uri": "minio://b/run/examples"}]},
                                 "base_model": {"artifacts": [{"uri": "minio://b/run/empty"}]}}},
        "outputs": {"artifacts": {"model": {"artifacts": [{"uri": "minio://b/run/model"}]}},
                    "outputFile": str(tmp_path / "output_metadata.json")}}
    remote_of, lines = kfp_entrypoint.localize_uris(executor_input)
    assert executor_input["inputs"]["artifacts"]["examples"]["artifacts"][0]["uri"] == str(present)
    assert (tmp_path / "minio" / "b" / "run" / "empty").is_dir()
    assert lines == [f"input 'base_model': no objects under minio://b/run/empty (an empty artifact); made its "
                     f"folder {tmp_path}/minio/b/run/empty"]
    model = tmp_path / "minio" / "b" / "run" / "model"
    (model / "Format-Serving" / "assets").mkdir(parents=True)
    (model / "Format-Serving" / "saved_model.pb").write_bytes(b"x")
    with open(executor_input["outputs"]["outputFile"], "w") as f:  # as TFX's entrypoint writes it
        json.dump({"artifacts": {"model": {"artifacts": [{"uri": str(model), "metadata": {"a": 1}}]}}}, f)
    lines = kfp_entrypoint.restore_remote_uris(executor_input["outputs"]["outputFile"], remote_of)
    with open(executor_input["outputs"]["outputFile"]) as f:
        assert json.load(f) == {"artifacts": {"model": {"artifacts": [{"uri": "minio://b/run/model",
                                                                       "metadata": {"a": 1}}]}}}
    assert lines == [f"output 'model' written to {model}; reported as minio://b/run/model",
                     "output 'model': 1 empty folder(s) will not reach the store (the launcher uploads files "
                     "only): Format-Serving/assets"]


def test_a_path_uri_is_left_as_it_is_and_said_so():
    executor_input = {"inputs": {"artifacts": {"x": {"artifacts": [{"uri": "/mnt/v/x"}]}}}, "outputs": {}}
    remote_of, lines = kfp_entrypoint.localize_uris(executor_input)
    assert remote_of == {} and executor_input["inputs"]["artifacts"]["x"]["artifacts"][0]["uri"] == "/mnt/v/x"
    assert lines == ["input 'x' at '/mnt/v/x' has no object-store scheme; left as it is (the launcher neither "
                     "downloads nor uploads it)"]


def test_the_store_copies_files_only_by_prefix_and_refuses_a_key_that_escapes(tmp_path):
    """DownloadBlob lists the prefix and skips a sibling that only shares its start; UploadBlob uploads
    files, so an empty folder does not make the trip."""
    source = tmp_path / "source"
    (source / "Format-Serving" / "variables").mkdir(parents=True)
    (source / "Format-Serving" / "assets").mkdir()
    (source / "Format-Serving" / "saved_model.pb").write_bytes(b"graph")
    (source / "Format-Serving" / "variables" / "variables.index").write_bytes(b"index")
    with object_store.S3Server(buckets=["mlpipeline"]) as server:
        store = object_store.Store(server.client())
        assert store.upload_blob(str(source), "minio://mlpipeline/run/model") == 2
        assert store.upload_blob(str(source / "Format-Serving" / "saved_model.pb"),
                                 "minio://mlpipeline/run/model_run/x") == 1  # a sibling sharing the prefix
        assert store.download_blob("minio://mlpipeline/run/model", str(tmp_path / "copy")) == 2
        assert store.download_blob("minio://mlpipeline/run/nothing", str(tmp_path / "none")) == 0
    copied = sorted(str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert copied == ["Format-Serving/saved_model.pb", "Format-Serving/variables/variables.index"]
    assert not (tmp_path / "copy" / "Format-Serving" / "assets").exists() and not (tmp_path / "none").exists()
    with pytest.raises(object_store.ObjectStoreError, match="path traversal"):
        object_store.sanitize_download_path(str(tmp_path), "run/model", "run/model/../../etc/passwd")


@pytest.mark.parametrize("root, message", [("/mnt/image-cnn/pipeline", "is a path"),
                                           ("mem://bucket/root", "refuses mem://"), ("minio:///root", "names no bucket")])
def test_a_pipeline_root_the_launcher_refuses_is_named(root, message):
    with pytest.raises(ValueError, match=message):
        launcher.check_pipeline_root(root)
