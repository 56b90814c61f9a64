"""The Kubeflow pipeline: compiled as KFP and Vertex run it, every named class importable here, and
submitted and scheduled through kfp.Client against a local fake of the KFP API (tests/fake_kfp.py)."""
import datetime
import json
import socket
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.utils import import_utils

from pipeline.kubeflow import compile as kfp_compile
from pipeline import configs, kubeflow_runner, paths
from pipeline.kubeflow import local_run as kfp_local
from tests.fake_kfp import API, FakeKfp
from tests import helpers

STEPS = {"ImageFolderExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator", "DataGate", "RetrainGate",
         "Transform", "Trainer", "LiteModels", "ChampionModel", "Evaluator", "Pusher"}
# producer -> consumer edges that make the order ExampleGen -> validation -> Transform -> Trainer ->
# Evaluator -> gated LiteModels -> gated Pusher, with the champion step feeding the Evaluator
ORDER = [("ImageFolderExampleGen", "StatisticsGen"), ("StatisticsGen", "ExampleValidator"),
         ("ExampleValidator", "DataGate"), ("DataGate", "Transform"), ("Transform", "Trainer"),
         ("Trainer", "Evaluator"), ("ChampionModel", "Evaluator"), ("Evaluator", "Pusher"), ("Evaluator", "LiteModels"),
         ("LiteModels", "Pusher"),
         ("ImageFolderExampleGen", "RetrainGate"), ("RetrainGate", "StatisticsGen"), ("RetrainGate", "Trainer"),
         ("RetrainGate", "Pusher")]


def _compile(tmp_path, name: str, *flags: str):
    output = str(tmp_path / name)
    assert kubeflow_runner.main(["compile", "--output", output, *flags]) == 0
    with open(output) as f:
        return list(yaml.safe_load_all(f))


@pytest.fixture(scope="module")
def kfp_documents(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("kfp"), "pipeline.yaml", "--image", "registry.example/image-cnn:1",
                    "--gpus", "2", "--volume", "models-claim", "--mount-path", "/mnt/models")


@pytest.fixture(scope="module")
def kfp_spec(kfp_documents):
    return json_format.ParseDict(kfp_documents[0], pipeline_spec_pb2.PipelineSpec())


@pytest.fixture(scope="module")
def executors(kfp_spec):
    """The deployment config (a Struct in PipelineSpec), parsed with its own proto."""
    return json_format.ParseDict(json_format.MessageToDict(kfp_spec.deployment_spec),
                                 pipeline_spec_pb2.PipelineDeploymentConfig()).executors


def _dependencies(spec: pipeline_spec_pb2.PipelineSpec):
    return {name: set(task.dependent_tasks) for name, task in spec.root.dag.tasks.items()}


def _reaches(dependencies, source: str, target: str) -> bool:
    pending, seen = [target], set()
    while pending:
        step = pending.pop()
        if step == source:
            return True
        if step not in seen:
            seen.add(step)
            pending += dependencies[step]
    return False


def test_kfp_spec_parses_and_holds_the_steps_in_order(kfp_spec):
    dependencies = _dependencies(kfp_spec)
    assert set(dependencies) == STEPS
    for producer, consumer in ORDER:
        assert _reaches(dependencies, producer, consumer), f"{producer} does not run before {consumer}"
    assert not _reaches(dependencies, "Pusher", "Evaluator")


def test_kfp_spec_has_no_resolver_only_containers(kfp_spec, executors):
    for label, executor in executors.items():
        assert executor.WhichOneof("spec") == "container", label
    assert not any("resolver" in label.lower() for label in executors)


@pytest.mark.parametrize("task, decision, blessing", [
    ("Pusher", "decision", "model_blessing"),  # inputs it declares
    # A model the Evaluator does not bless cannot be pushed: its TFLite files are not converted at all.
    ("LiteModels", "_RetrainGate.decision", "_Evaluator.blessing"),  # inputs TFX adds for the conditions
])
def test_the_stages_that_push_run_only_for_a_blessed_model(kfp_spec, task, decision, blessing):
    stage = kfp_spec.root.dag.tasks[task]
    assert stage.trigger_policy.condition == \
        f"(inputs.artifacts['{decision}'].artifacts[0].metadata['retrain'] == 1.0) && " \
        f"(inputs.artifacts['{blessing}'].artifacts[0].metadata['blessed'] == 1.0)"
    assert stage.inputs.artifacts[blessing].task_output_artifact.producer_task == "Evaluator"
    assert stage.inputs.artifacts[decision].task_output_artifact.producer_task == "RetrainGate"


def test_every_step_after_the_retrain_gate_runs_only_when_something_changed(kfp_spec):
    """Validation, Transform and everything after them are conditioned on the gate's decision, each through an input
    it really has (the driver evaluates a condition over the step's own inputs)."""
    conditioned = {name: task for name, task in kfp_spec.root.dag.tasks.items() if task.trigger_policy.condition}
    assert set(conditioned) == {"StatisticsGen", "ExampleValidator", "DataGate", "Transform", "Trainer", "LiteModels",
                                "ChampionModel", "Evaluator", "Pusher"}
    for name, task in conditioned.items():
        if name in ("Pusher", "LiteModels"):
            continue
        assert task.trigger_policy.condition == \
            "(inputs.artifacts['_RetrainGate.decision'].artifacts[0].metadata['retrain'] == 1.0)"
        assert task.inputs.artifacts["_RetrainGate.decision"].task_output_artifact.producer_task == "RetrainGate"


def test_run_time_parameters_exist_and_reach_their_steps(kfp_spec):
    parameters = kfp_spec.root.input_definitions.parameters
    assert {name: (pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(p.parameter_type),
                   json_format.MessageToDict(p.default_value)) for name, p in parameters.items()} == {
        "data_root": ("STRING", "/mnt/models/data"), "min_accuracy": ("NUMBER_DOUBLE", 0.9),
        "epochs": ("NUMBER_INTEGER", 15), "retrain_always": ("NUMBER_INTEGER", 0)}  # KFP takes no runtimeConfig
    uses = {(step, key): value.component_input_parameter for step, task in kfp_spec.root.dag.tasks.items()
            for key, value in task.inputs.parameters.items() if value.component_input_parameter}
    assert uses == {("ImageFolderExampleGen", "input_base"): "data_root", ("DataGate", "data_root"): "data_root",
                    ("Evaluator", "min_accuracy"): "min_accuracy", ("Pusher", "min_accuracy"): "min_accuracy",
                    ("Trainer", "epochs"): "epochs", ("RetrainGate", "epochs"): "epochs",
                    ("RetrainGate", "retrain_always"): "retrain_always"}


def test_the_trainer_alone_requests_gpus_and_memory(kfp_spec, executors):
    requested = {label: executor.container.resources for label, executor in executors.items()
                 if executor.container.HasField("resources")}
    assert list(requested) == ["Trainer_executor"]
    resources = requested["Trainer_executor"]
    assert (resources.accelerator.type, resources.accelerator.count) == ("nvidia.com/gpu", 2)
    assert resources.memory_limit == 16.0


def test_every_step_runs_the_image_and_mounts_the_volume(kfp_spec, kfp_documents, executors):
    platform = json_format.ParseDict(kfp_documents[1], pipeline_spec_pb2.PlatformSpec())
    mounts = json_format.MessageToDict(platform.platforms["kubernetes"])["deploymentSpec"]["executors"]
    assert set(mounts) == set(executors)
    for label, executor in executors.items():
        assert executor.container.image == "registry.example/image-cnn:1"
        assert mounts[label] == {"pvcMount": [{"constant": "models-claim", "mountPath": "/mnt/models"}]}
    pusher = kfp_spec.root.dag.tasks["Pusher"].inputs.parameters["serving_dir"].runtime_value.constant
    assert pusher.string_value == "/mnt/models/serving/image_cnn"
    schema = kfp_spec.root.dag.tasks["ImportSchemaGen"].inputs.parameters["schema_file"].runtime_value.constant
    assert schema.string_value == "/opt/image-cnn/schemas/mnist-sample.pbtxt"


def test_every_class_the_spec_names_imports_here(kfp_documents):
    named = helpers.named_classes(kfp_documents[0])
    assert {"components.image_example_gen.executor.Executor", "components.trainer.Executor",
            "components.evaluation._Executor", "components.TFLiteModels"} <= set(named)
    for class_path in named:
        import_utils.import_class_by_path(class_path)


def test_json_output_is_the_bare_spec_and_says_the_mount_needs_yaml(tmp_path, capsys):
    documents = _compile(tmp_path, "p.json", "--target", "kfp")
    assert len(documents) == 1 and "deploymentSpec" in documents[0] and "pipelineSpec" not in documents[0]
    json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    assert "without the volume mount" in capsys.readouterr().err


def test_vertex_target_is_a_pipeline_job_on_gcs(tmp_path, capsys):
    (job,) = _compile(tmp_path, "job.json", "--target", "vertex", "--pipeline-root", "gs://bucket/root")
    json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/root"
    assert job["runtimeConfig"]["parameterValues"] == {"data_root": "/mnt/image-cnn/data", "min_accuracy": 0.9,
                                                       "epochs": 15, "retrain_always": 0}
    assert set(job["pipelineSpec"]["root"]["dag"]["tasks"]) == STEPS
    with pytest.raises(SystemExit):
        kubeflow_runner.main(["compile", "--output", str(tmp_path / "x.json"), "--target", "vertex"])
    assert "needs --pipeline-root gs://" in capsys.readouterr().err


def test_the_direct_target_names_the_engine_the_tests_run(kfp_spec, executors):
    """Beam's DirectRunner would try Prism first, which downloads a binary at run time."""
    args = list(executors["StatisticsGen_executor"].container.args)
    assert "--runner=FnApiRunner" in args and not any(arg.startswith("--runner=Direct") for arg in args)
    assert "--direct_running_mode=multi_processing" in args
    assert "--sdk_container_image=unused-by-the-direct-runner" in args  # no sdist of TFX per Beam step


def test_beam_targets_and_no_gpu_option(tmp_path, capsys):
    (spec,) = _compile(tmp_path, "dataflow.json", "--beam-target", "dataflow", "--image", "img:2", "--gpus", "0",
                       "--pipeline-root", "gs://bucket/root", "--beam-sdk-image", "beam-sdk-img:2",
                       "--beam-arg=--project=p", "--beam-arg=--region=europe-west4")
    args = spec["deploymentSpec"]["executors"]["Transform_executor"]["container"]["args"]
    assert {"--runner=DataflowRunner", "--sdk_container_image=beam-sdk-img:2", "--project=p",
            "--region=europe-west4", "--temp_location=gs://bucket/root/beam-tmp"} <= set(args)
    assert not any("accelerator" in e["container"].get("resources", {}) for e in spec["deploymentSpec"]["executors"].values())
    (spec,) = _compile(tmp_path, "flink.json", "--beam-target", "flink", "--beam-master", "flink-job-server:8099",
                       "--beam-worker-pool", "localhost:50000")
    args = spec["deploymentSpec"]["executors"]["StatisticsGen_executor"]["container"]["args"]
    assert {"--runner=PortableRunner", "--job_endpoint=flink-job-server:8099", "--environment_type=EXTERNAL",
            "--environment_config=localhost:50000"} <= set(args)
    capsys.readouterr()
    for flags, message in ((["--beam-target", "spark", "--beam-master", "spark:8099"], "needs --beam-worker-pool"),
                           (["--beam-target", "dataflow"], "needs a gs:// --pipeline-root"),
                           (["--beam-target", "dataflow", "--pipeline-root", "gs://b/r"], "Beam SDK boot binary")):
        assert kubeflow_runner.main(["compile", "--output", str(tmp_path / "s.json"), *flags]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("root, reason", [("/mnt/image-cnn/pipeline", "is a path"),
                                          ("file:///mnt/image-cnn/pipeline", "refuses file://"),
                                          ("hdfs://nn/pipeline", "refuses hdfs://")])
def test_a_pipeline_root_kfp_refuses_is_refused_at_compile_time(tmp_path, capsys, root, reason):
    with pytest.raises(SystemExit) as stop:
        kubeflow_runner.main(["compile", "--output", str(tmp_path / "p.yaml"), "--pipeline-root", root])
    assert stop.value.code == 2
    assert reason in capsys.readouterr().err


def test_a_schema_the_image_does_not_hold_is_refused(tmp_path, capsys):
    schema = tmp_path / "mine.pbtxt"
    schema.write_text(open(paths.EMBEDDED_SCHEMA).read())
    assert kubeflow_runner.main(["compile", "--output", str(tmp_path / "p.yaml"), "--schema", str(schema)]) == 2
    assert "the pipeline image holds only the files of" in capsys.readouterr().err
    (spec, _) = _compile(tmp_path, "p.yaml", "--schema", str(schema), "--schema-in-pipeline", "/mnt/image-cnn/mine.pbtxt")
    assert spec["root"]["dag"]["tasks"]["ImportSchemaGen"]["inputs"]["parameters"]["schema_file"] == \
        {"runtimeValue": {"constant": "/mnt/image-cnn/mine.pbtxt"}}


def _runtime_parameters(body):
    return body.get("runtime_config", {}).get("parameters", {})


def test_submit_and_schedule_through_the_kfp_client(kfp_documents, tmp_path, capsys):
    package = str(tmp_path / "pipeline.yaml")
    with open(package, "w") as f:
        yaml.safe_dump_all(kfp_documents, f)
    with FakeKfp() as kfp:
        assert kubeflow_runner.main(["submit", "--host", kfp.host, "--package", package,
                                     "--run-epochs", "3", "--run-min-accuracy", "0.95"]) == 0
        (run,) = kfp.runs.values()
        assert _runtime_parameters(run) == {"epochs": 3, "min_accuracy": 0.95}
        assert run["pipeline_spec"]["platform_spec"] == kfp_documents[1]  # the volume mount goes along
        assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "image-cnn"
        assert f"run started: {run['run_id']}" in capsys.readouterr().out

        assert run["runtime_config"]["pipeline_root"] == "minio://mlpipeline/v2/artifacts/image-cnn"
        scheduled = []
        for cron in ("0 0 3 * * *", "0 0 4 * * *"):  # rescheduling replaces: KFP cannot update one in place
            assert kubeflow_runner.main(["schedule", "--host", kfp.host, "--package", package, "--cron", cron,
                                         "--run-data-root", "/mnt/image-cnn/photos"]) == 0
            scheduled.append(list(kfp.recurring_runs))
        assert len(scheduled[0]) == 1 and scheduled[0] != scheduled[1]
        assert f"DELETE /recurringruns/{scheduled[0][0]}" in kfp.calls()
        (recurring,) = kfp.recurring_runs.values()
        assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * *"
        assert recurring["runtime_config"]["pipeline_root"] == "minio://mlpipeline/v2/artifacts/image-cnn"
        assert int(recurring["max_concurrency"]) == 1 and recurring["display_name"] == "image-cnn-nightly"
        assert _runtime_parameters(recurring) == {"data_root": "/mnt/image-cnn/photos"}
        assert kfp.calls().count("POST /recurringruns") == 2

        assert kubeflow_runner.main(["unschedule", "--host", kfp.host]) == 0
        assert kfp.recurring_runs == {}
        assert "deleted recurring run(s)" in capsys.readouterr().out
        assert kubeflow_runner.main(["unschedule", "--host", kfp.host]) == 0
        assert "no recurring run named 'image-cnn-nightly'" in capsys.readouterr().out
        for request in kfp.requests:  # credentials never travel as parameters
            assert set(_runtime_parameters(request["body"] or {})) <= set(kfp_compile.RUN_PARAMETERS)


def test_an_unreachable_host_is_one_line_and_exit_1(kfp_documents, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    package = str(tmp_path / "pipeline.yaml")
    with open(package, "w") as f:
        yaml.safe_dump_all(kfp_documents, f)
    assert kubeflow_runner.main(["submit", "--host", f"http://127.0.0.1:{port}", "--package", package]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: Kubeflow Pipelines at http://127.0.0.1:{port}")


def test_a_compiled_step_runs_through_the_project_entrypoint(kfp_documents, executors, tmp_path):
    """ChampionModel as its pod runs it: the spec's command and arguments (the project's entrypoint,
    then TFX's), its ExecutorInput built as the KFP v2 driver builds it (pipeline/kfp_local.py)."""
    spec = kfp_documents[0]
    assert spec["defaultPipelineRoot"] == "minio://mlpipeline/v2/artifacts/image-cnn"
    container = executors["ChampionModel_executor"].container
    assert list(container.command) == ["python", "-m", kfp_compile.PROJECT_ENTRYPOINT]
    defaults = {name: p["defaultValue"] for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    decision = {"name": "1", "uri": str(tmp_path / "decision"), "type": {"schemaTitle": "system.Artifact"},
                "metadata": {"retrain": 1.0}}  # the RetrainGate's, as the driver reads it back
    executor_input = kfp_local.executor_input("ChampionModel", spec, str(tmp_path / "run"), defaults,
                                              {"RetrainGate": {"decision": decision}})
    executor_input["outputs"]["outputFile"] = str(tmp_path / "executor_output.json")
    assert executor_input["inputs"]["parameterValues"] == {"serving_dir": "/mnt/models/serving/image_cnn"}
    args = kfp_local.substitute(list(container.args), executor_input)
    command = [sys.executable if part == "python" else part for part in container.command]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "executor_output.json") as f:
        (champion,) = json.load(f)["artifacts"]["champion"]["artifacts"]
    assert champion["metadata"]["champion_version"] == 0.0  # no champion on an empty volume: no baseline


def _constant(spec, task, parameter):
    return spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"][parameter]["runtimeValue"]["constant"]


def test_the_local_runners_model_training_and_data_choices_compile_into_the_steps(tmp_path):
    """The shared flags (pipeline/flags.py) reach the same step settings on Kubeflow as locally, a
    preset's too, with the flags given beside it winning."""
    (spec,) = _compile(tmp_path, "p.json", "--preset", "photos", "--width", "2", "--architecture", "classic", "--attention", "cbam", "--batch-size", "64",
                       "--learning-rate", "0.002", "--weight-decay", "0.0001", "--weight-decay-mode", "l2",
                       "--image-size", "32", "40", "--channels", "3", "--eval-percent", "25", "--strict",
                       "--max-accuracy-drop", "0.02", "--min-class-accuracy", "0.5", "--epochs", "7",
                       "--warm-start", "--tflite", "int8", "--quantization-aware")
    trainer = json.loads(_constant(spec, "Trainer", "custom_config"))
    assert trainer["image"] == {"height": 32, "width": 40, "channels": 3}
    assert {k: trainer["model"][k] for k in ("architecture", "attention", "weight_decay", "weight_decay_mode")} == {
        "architecture": "classic", "attention": "cbam", "weight_decay": 0.0001, "weight_decay_mode": "l2"}
    assert (trainer["training"]["batch_size"], trainer["training"]["learning_rate"]) == (64, 0.002)
    assert trainer["training"]["quantization_aware_epochs"] == configs.QUANTIZATION_AWARE_EPOCHS
    assert (trainer["model"]["width"], trainer["training"]["flip"], trainer["training"]["crop_pad"]) == (2.0, True, 2)
    assert trainer["training"]["test_time_flip"] is True  # the preset's: the exported model answers for mirrors too
    assert spec["root"]["inputDefinitions"]["parameters"]["epochs"]["defaultValue"] == 7
    splits = json.loads(_constant(spec, "ImageFolderExampleGen", "output_config"))["split_config"]["splits"]
    assert [s["hash_buckets"] for s in splits] == [75, 25]
    assert _constant(spec, "DataGate", "strict") == 1
    assert spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["artifacts"]["base_model"]["taskOutputArtifact"] == {
        "producerTask": "ChampionModel", "outputArtifactKey": "champion"}  # --warm-start
    assert _constant(spec, "LiteModels", "variants") == "float32,int8"
    assert (_constant(spec, "Pusher", "max_accuracy_drop"), _constant(spec, "Pusher", "min_class_accuracy")) == (0.02, 0.5)


def test_a_backbone_and_its_weights_compile_into_the_trainer(tmp_path):
    (spec,) = _compile(tmp_path, "p.json", "--backbone", "efficientnet_b0", "--backbone-weights", "gs://bucket/b0.h5",
                       "--fine-tune-epochs", "3", "--image-size", "96", "96", "--channels", "3")
    trainer = json.loads(_constant(spec, "Trainer", "custom_config"))
    assert trainer["model"]["backbone"] == "efficientnet_b0"
    assert (trainer["training"]["backbone_weights"], trainer["training"]["fine_tune_epochs"]) == ("gs://bucket/b0.h5", 3)


@pytest.mark.parametrize("flags", [["--epochs", "0"], ["--batch-size", "0"]])
def test_a_value_the_trainer_cannot_use_is_refused_at_compile_time(tmp_path, capsys, flags):
    """--epochs 0 used to compile silently into 15 epochs."""
    with pytest.raises(SystemExit) as stop:
        kubeflow_runner.main(["compile", "--output", str(tmp_path / "p.json"), *flags])
    assert stop.value.code == 2
    assert f"argument {flags[0]}: must be >= 1, got 0" in capsys.readouterr().err


def test_unschedule_finds_the_pipelines_recurring_runs_on_every_page(capsys):
    """A server that lists two recurring runs a page: the ones named for the pipeline on the second and
    third pages are deleted too, and the others are kept."""
    with FakeKfp(max_page_size=2) as kfp:
        experiment_id = kfp.handle("POST", f"{API}/experiments", {}, {"display_name": "image-cnn"})[1]["experiment_id"]
        names = ["other", "image-cnn-nightly", "other", "other", "image-cnn-nightly"]
        for name in names:
            kfp.handle("POST", f"{API}/recurringruns", {}, {"display_name": name, "experiment_id": experiment_id})
        assert kubeflow_runner.main(["unschedule", "--host", kfp.host]) == 0
        assert sorted(r["display_name"] for r in kfp.recurring_runs.values()) == ["other"] * 3
        listed = [r["query"].get("page_token", [""])[0] for r in kfp.requests
                  if r["method"] == "GET" and r["path"].endswith("/recurringruns")]
        assert listed == ["", "2", "4"]
        assert "deleted recurring run(s)" in capsys.readouterr().out


def test_schedule_takes_kfps_six_field_cron_and_prints_the_next_runs(kfp_documents, tmp_path, capsys):
    package = str(tmp_path / "pipeline.yaml")
    with open(package, "w") as f:
        yaml.safe_dump_all(kfp_documents, f)
    with FakeKfp() as kfp:
        assert kubeflow_runner.main(["schedule", "--host", kfp.host, "--package", package, "--cron", "0 0 3 * * *"]) == 0
        out = capsys.readouterr().out.splitlines()
        runs = [datetime.datetime.strptime(line.split(": ", 1)[1], "%Y-%m-%d %H:%M:%S UTC")
                for line in out if line.startswith("  next run: ")]
        assert len(runs) == 3 and all(run.strftime("%H:%M:%S") == "03:00:00" for run in runs)
        assert [later - earlier for earlier, later in zip(runs, runs[1:])] == [datetime.timedelta(days=1)] * 2
        with pytest.raises(SystemExit) as stop:  # a 5-field cron is never passed through as it is
            kubeflow_runner.main(["schedule", "--host", kfp.host, "--package", package, "--cron", "0 3 * * *"])
        assert stop.value.code == 2
        assert "write the 6 fields '0 0 3 * * *'" in capsys.readouterr().err
        assert [r["body"]["trigger"]["cron_schedule"]["cron"] for r in kfp.requests
                if r["method"] == "POST" and r["path"].endswith("/recurringruns")] == ["0 0 3 * * *"]


@pytest.mark.parametrize("cron, accepted", [("0 0 3 * * *", True), ("0 3 * * *", True), ("@daily", True),
                                            ("1 * *", False), ("0 0 3 * * * *", False), ("0 61 3 * * *", False)])
def test_the_fake_kfp_api_parses_cron_as_kfp_does(cron, accepted):
    """robfig/cron v1's Parse: 5 or 6 fields, seconds first (a 5-field one is accepted, and read so)."""
    with FakeKfp() as kfp:
        status, answer = kfp.handle("POST", f"{API}/recurringruns", {},
                                    {"display_name": "x", "trigger": {"cron_schedule": {"cron": cron}}})
    assert (status == 200) is accepted, answer


def test_the_pusher_records_the_kfp_runs_own_id_as_the_driver_fills_it(kfp_documents):
    """The Pusher's run_id is the driver's {{$.pipeline_job_uuid}}: its promotion line names the KFP
    run, and run-local's driver fills it with its own run id as KFP's does (driver/resolve.go)."""
    spec = kfp_documents[0]
    assert _constant(spec, "Pusher", "run_id") == "{{$.pipeline_job_uuid}}"
    values = kfp_local.parameter_values(spec["root"]["dag"]["tasks"]["Pusher"], {"min_accuracy": 0.9}, "run-7")
    assert values["run_id"] == "run-7" and values["serving_dir"] == "/mnt/models/serving/image_cnn"
