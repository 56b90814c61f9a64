"""Ingest speed and memory: ImageFolderExampleGen against Keras' image_dataset_from_directory.

    bin/in-env python bench/ingest_vs_keras.py [--copies 10]

Builds the embedded sample repeated --copies times (x1 and x10 by default: 2,500 and 25,000 PNGs),
then, each in its own process so peak memory is its own, in one invocation:
- keras: image_dataset_from_directory reads and decodes every image of train/ and test/ (28x28 gray);
- example_gen: the real ImageFolderExampleGen component (LocalDagRunner, Beam, MLMD on SQLite)
  lists, reads, checks and writes every image as tf.Examples.
Prints one JSON line per measurement and the ratios: images/s of ExampleGen over Keras (goal >= 1.0),
the same for the images added between x1 and xN (start-up cost left out), and each route's peak
memory at xN over x1 (flat memory: close to 1).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402


def build_folder(root: str, copies: int) -> int:
    """<root>/{train,test}/<class>/c<k>_<file>: the sample repeated; returns the number of images."""
    count = 0
    for split in ("train", "test"):
        for class_name in sorted(os.listdir(os.path.join(paths.EMBEDDED_DATA, split))):
            source, target = os.path.join(paths.EMBEDDED_DATA, split, class_name), os.path.join(root, split, class_name)
            os.makedirs(target)
            for name in sorted(os.listdir(source)):
                for k in range(copies):
                    shutil.copyfile(os.path.join(source, name), os.path.join(target, f"c{k}_{name}"))
                    count += 1
    return count


def run_keras(data_root: str) -> int:
    import tensorflow as tf
    import tf_keras as keras
    images = 0
    for split in ("train", "test"):
        dataset = keras.utils.image_dataset_from_directory(
            os.path.join(data_root, split), image_size=(28, 28), color_mode="grayscale", batch_size=32,
            shuffle=False)
        for batch, _ in dataset.prefetch(tf.data.AUTOTUNE):
            images += int(batch.shape[0])
    return images


def run_example_gen(data_root: str, work_dir: str) -> int:
    from tfx import v1 as tfx
    from components.image_example_gen.component import ImageFolderExampleGen
    from pipeline import configs, schema
    example_gen = ImageFolderExampleGen(input_base=data_root,
                                        known_classes=schema.class_names(schema.load(schema.EMBEDDED_SCHEMA)))
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="ingest-bench", pipeline_root=os.path.join(work_dir, "root"), components=[example_gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(work_dir, "metadata.sqlite")),
        beam_pipeline_args=list(configs.BEAM_PIPELINE_ARGS)))
    report_path = next(os.path.join(d, "ingest_report.json") for d, _, files in os.walk(work_dir)
                       if "ingest_report.json" in files)
    with open(report_path) as f:
        return json.load(f)["counts"]["ingested"]


def measure(route: str, data_root: str, work_dir: str) -> None:
    """Child process: runs one route and prints {"images", "seconds", "peak_rss_mb"}."""
    from pipeline import quiet
    quiet.quiet_logs(verbose=False)
    import tensorflow  # noqa: F401  (imported before the clock starts, as both routes need it)
    started = time.time()
    images = run_keras(data_root) if route == "keras" else run_example_gen(data_root, work_dir)
    seconds = time.time() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": images, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb)}))


def child(route: str, data_root: str, work_dir: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, __file__, "--child", route, data_root, work_dir], env=env,
                          check=False, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{route} on {data_root} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--child", nargs=3, metavar=("ROUTE", "DATA_ROOT", "WORK_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        results = {}
        for copies in sorted({1, args.copies}):
            data_root = os.path.join(tmp, f"x{copies}")
            images = build_folder(data_root, copies)
            for route in ("keras", "example_gen"):
                result = child(route, data_root, os.path.join(tmp, f"{route}-x{copies}"))
                assert result["images"] == images, (route, result, images)
                result["images_per_s"] = round(result["images"] / result["seconds"], 1)
                results[(route, copies)] = result
                print(json.dumps({"route": route, "copies": copies, **result}), flush=True)
        n = args.copies

        def marginal(route):  # images/s once started: the extra images over the extra seconds
            big, small = results[(route, n)], results[(route, 1)]
            return (big["images"] - small["images"]) / max(big["seconds"] - small["seconds"], 1e-3)
        print(json.dumps({
            f"marginal_ratio_x1_to_x{n}": round(marginal("example_gen") / marginal("keras"), 2) if n > 1 else None,
            f"ingest_ratio_x{n}": round(results[("example_gen", n)]["images_per_s"]
                                        / results[("keras", n)]["images_per_s"], 2),
            "ingest_ratio_x1": round(results[("example_gen", 1)]["images_per_s"]
                                     / results[("keras", 1)]["images_per_s"], 2),
            f"example_gen_peak_rss_x{n}_over_x1": round(results[("example_gen", n)]["peak_rss_mb"]
                                                        / results[("example_gen", 1)]["peak_rss_mb"], 2),
            f"keras_peak_rss_x{n}_over_x1": round(results[("keras", n)]["peak_rss_mb"]
                                                  / results[("keras", 1)]["peak_rss_mb"], 2),
        }))


if __name__ == "__main__":
    main()
