"""Tests that read the golden run (tests/golden.py) without running the pipeline again: they read its
snapshot, never written once made, so they need not be in tests/test_e2e.py beside the scenarios,
and run on the other pytest worker while those do (conftest.golden_session shares the run)."""
import collections
import json
import os
import subprocess
import sys

import pytest

from pipeline import local_runner
from tests import two_workers

pytestmark = pytest.mark.e2e


# LiteModels streams the eval split: the memory it takes while doing so must not grow with the split.
# Holding these digits whole as float32 adds at least 3.1 MB per 1,000 images (1,000 x 28 x 28 x 4
# bytes). The whole process's peak cannot show that (the converters' part of it varies by more from
# run to run), so the bench measures the rise of the resident set while the split streams past, after
# its first batch. That rise moves in the allocator's steps, so the large split is 20,000 images more
# than the small one: one step then stays under the bound per 1,000 images, and a split held whole
# goes over it (bench/RESULTS.md, "LiteModels' memory", measured as shipped and with --keep-batches).
# One variant is measured: every variant is scored in the same streaming pass, and the other four
# would add conversions and time, not memory.
SIZES = (1000, 21000)
MAX_GROWTH_MB_PER_1000 = 2.0


def test_lite_models_memory_while_streaming_does_not_grow_with_a_twenty_one_times_larger_eval_split(
        golden_session, tmp_path):
    small_size, large_size = SIZES
    run = golden_session.run.summary
    frozen = {"trained_model": golden_session.frozen(run["trained_model"]),
              "artifacts": {"examples": golden_session.frozen(run["artifacts"]["examples"])}}
    with open(tmp_path / "last_run.json", "w") as f:  # the bench's input: the golden run's, in the snapshot
        json.dump(frozen, f)
    result = subprocess.run([sys.executable, os.path.join(local_runner.REPO_ROOT, "bench", "lite_memory.py"),
                             "--output-dir", str(tmp_path), "--sizes", *map(str, SIZES), "--json",
                             "--variants", "float32"],
                            cwd=local_runner.REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    small, large = measured[str(small_size)], measured[str(large_size)]
    assert large["eval_images"] == large_size and small["eval_images"] == small_size
    growth_per_1000 = (large["stream_growth_mb"] - small["stream_growth_mb"]) / (large_size - small_size) * 1000
    assert growth_per_1000 < MAX_GROWTH_MB_PER_1000, (
        f"streaming {large_size:,} eval images took {growth_per_1000:.2f} MB per 1,000 images more than "
        f"{small_size:,}: {measured}")


def test_the_trainer_runs_under_two_workers_on_the_golden_examples_on_disjoint_shards(golden_session, tmp_path):
    """The project's Trainer executor and run_fn, in two processes joined by TF_CONFIG on loopback, on
    the examples and Transform graph of the golden run (augmentation off, so images can be compared):
    in the first pass over the data no image is trained on by both workers, and the chief's exported
    model serves the test digits."""
    inputs, exec_properties = two_workers.golden_trainer_inputs(golden_session.frozen(
        golden_session.workspace.output_dir), golden_session.frozen)
    custom_config = json.loads(exec_properties["custom_config"])
    custom_config["training"]["augment"] = False
    custom_config["checkpoint_root"] = str(tmp_path / "checkpoints")
    exec_properties.update(custom_config=json.dumps(custom_config), epochs=2)
    outputs = {"model": str(tmp_path / "model"), "model_run": str(tmp_path / "model_run")}
    workers = [f"127.0.0.1:{port}" for port in two_workers.free_ports(2)]
    processes, records = [], [str(tmp_path / f"seen_{index}.json") for index in range(2)]
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        argument = json.dumps([inputs, outputs, exec_properties, records[index]])
        processes.append(subprocess.Popen([sys.executable, "-c", two_workers.TRAINER_WORKER, argument], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    recorded = []
    for record in records:
        with open(record) as f:
            recorded.append(json.load(f))
    steps = [worker["steps"] for worker in recorded]
    assert len(steps[0]) == len(steps[1]) > 0, "both workers run every step"
    from models.trainer import TrainingConfig
    per_replica = TrainingConfig(**custom_config["training"]).batch_size
    in_data = collections.Counter(recorded[0]["data"])
    first_pass = sum(in_data.values()) // (2 * per_replica)  # the whole global batches of one pass over the data
    trained = [collections.Counter(digest for step in worker[:first_pass] for digest in step) for worker in steps]
    assert [sum(t.values()) for t in trained] == [first_pass * per_replica] * 2
    too_often = trained[0] + trained[1] - in_data  # images trained on more often than the data holds them
    shared = set(trained[0]) & set(trained[1])
    assert not too_often, (f"in one pass, {sum(too_often.values())} images were trained on twice; "
                           f"{len(shared)} of them by both workers")

    serving_dirs = [d for d, _, files in os.walk(tmp_path) if "saved_model.pb" in files]
    assert serving_dirs == [os.path.join(outputs["model"], "Format-Serving")]  # the chief's, and only it
    test_dir = golden_session.frozen(os.path.join(golden_session.workspace.data_root, "test"))
    files = [(os.path.join(test_dir, d, name), d) for d in sorted(os.listdir(test_dir))
             for name in sorted(os.listdir(os.path.join(test_dir, d)))[:5]]
    import tensorflow as tf
    serve = tf.saved_model.load(serving_dirs[0]).signatures["serve_image_bytes"]
    names = serve(image_bytes=tf.constant([open(p, "rb").read() for p, _ in files]))["class_name"].numpy()
    accuracy = sum(n.decode() == d for n, (_, d) in zip(names, files)) / len(files)
    assert accuracy >= 0.5, f"the chief's model classifies {accuracy:.2f} of the test digits (chance is 0.1)"
