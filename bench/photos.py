"""The photo recipe on real CIFAR-10: held-out accuracy, wall time per stage, and the Trainer's
images/s beside plain Keras `fit` of the same network for the same epochs.

    bin/in-env python bench/photos.py [--per-class 5000] [--epochs N] [--preset photos|none]
                                      [--keras-epochs N] [--archive PATH] [-- RUNNER FLAGS, e.g. --batch-size 64]
    bin/in-env python bench/photos.py --plot

Each full run (--per-class 5000) is added to bench/photos_runs.json: network, epochs, held-out accuracy,
the Trainer's minutes, the CPU. --plot draws them, held-out accuracy against training minutes for each
network, into bench/photos_accuracy.png (the runs there were made on different CPU kinds; each point
names its own). Runs of the records' own code on the same split are added to the file by hand, each
with a "record" field naming the record (bench/RESULTS.md, "The records' own code on these photos", says
how they were made); they are drawn dashed, as they are not pipeline runs.

Reads ../shared/datasets/cifar10-train.tar.gz (the 50,000 CIFAR-10 training photos as JPEG class
folders); without it, says so and exits 0. Holds out a tenth of each class (a fixed shuffle: 45,000
train / 5,000 held out with the default 5,000 per class) as the test/ folder, so the Evaluator's
accuracy is on photos the Trainer never saw. Runs `python -m pipeline.local_runner --image-size 32 32
--channels 3 --preset photos` on it, then plain Keras `fit` on the same training photos decoded
into memory, with the network, optimizer and schedule the pipeline built from the same flags (no
augmentation: the fastest route Keras has), and its accuracy on the same held-out photos.
Prints the CPU, each figure, and the Trainer's share of the CPU's fp32 peak.
"""
import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402

ARCHIVE = os.path.join(os.path.dirname(paths.REPO_ROOT), "shared", "datasets", "cifar10-train.tar.gz")
HELD_OUT = 0.1
RUNS = os.path.join(BENCH_DIR, "photos_runs.json")
PLOT = os.path.join(BENCH_DIR, "photos_accuracy.png")
GOAL = 0.93  # issue 34's held-out accuracy for --preset photos, drawn as a line


def split_folder(archive: str, root: str, per_class: int, seed: int = 0, held_out: float = HELD_OUT) -> dict:
    """<root>/train/<class>/ and <root>/test/<class>/ from the archive's train/<class>/ folders: per_class
    photos of each class, a fixed share of them (a tenth by default) held out. Returns {split: images}."""
    unpacked = os.path.join(root, "unpacked")
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    counts = {"train": 0, "test": 0}
    for class_dir in sorted(glob.glob(os.path.join(unpacked, "train", "*"))):
        files = sorted(os.listdir(class_dir))
        random.Random(seed).shuffle(files)
        files = files[:per_class]
        held = max(1, round(len(files) * held_out))
        for split, chosen in (("test", files[:held]), ("train", files[held:])):
            target = os.path.join(root, "photos", split, os.path.basename(class_dir))
            os.makedirs(target, exist_ok=True)
            for name in chosen:
                os.link(os.path.join(class_dir, name), os.path.join(target, name))
            counts[split] += len(chosen)
    return counts


def pipeline_flags(args) -> list:
    flags = ["--image-size", "32", "32", "--channels", "3", "--min-accuracy", "0"]
    if args.preset != "none":
        flags += ["--preset", args.preset]
    return flags + (["--epochs", str(args.epochs)] if args.epochs else []) + list(args.flags)  # after --: any flag


def run_pipeline(data_root: str, output_dir: str, flags: list) -> dict:
    started = time.time()
    subprocess.run([sys.executable, "-m", "pipeline.local_runner", "--data-root", data_root,
                    "--output-dir", output_dir, *flags], check=True, cwd=paths.REPO_ROOT, stdout=subprocess.DEVNULL)
    summary = paths.read_last_run(output_dir)
    summary["bench_wall_seconds"] = round(time.time() - started, 1)
    return summary


def load_split(folder: str):
    import numpy as np
    from PIL import Image
    classes = sorted(os.listdir(folder))
    paths = [(p, i) for i, c in enumerate(classes) for p in sorted(glob.glob(os.path.join(folder, c, "*")))]
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p, _ in paths])
    return images, np.array([i for _, i in paths])


def run_keras(data_root: str, flags: list, epochs: int, work_dir: str) -> dict:
    """Plain Keras fit on decoded arrays, the network and schedule the pipeline's flags give."""
    import tf_keras as keras
    import trainer_vs_keras
    from models.model import ModelConfig, build_classifier
    from models import precision
    from models.recipe import compile_model
    from models.run_fn import THROUGHPUT_FILENAME, ThroughputLogger
    from pipeline import flags as pipeline_flags_module, local_runner
    settings = pipeline_flags_module.pipeline_settings(local_runner.parse_args(flags))
    training = settings.training
    train_x, train_y = load_split(os.path.join(data_root, "train"))
    test_x, test_y = load_split(os.path.join(data_root, "test"))
    mean, std = train_x.mean(), train_x.std()
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    config = ModelConfig(**settings.model.options(), input_shape=train_x.shape[1:], num_classes=int(train_y.max()) + 1)
    steps = -(-len(train_x) // training.batch_size)
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision.training_policy(training.precision))  # as the Trainer does
    model = build_classifier(config)
    compile_model(model, config, training, steps_per_epoch=steps, replicas=1)
    started = time.time()
    model.fit(train_x, train_y, batch_size=training.batch_size, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[ThroughputLogger(training.batch_size, steps, work_dir)])
    seconds = time.time() - started
    with open(os.path.join(work_dir, THROUGHPUT_FILENAME)) as f:
        rate = trainer_vs_keras.steady(json.load(f))
    accuracy = float((model.predict(test_x, batch_size=256, verbose=0).argmax(-1) == test_y).mean())
    return {"images_per_s": rate, "seconds": round(seconds, 1), "epochs": epochs, "accuracy": round(accuracy, 4),
            "policy": keras.mixed_precision.global_policy().name,
            "training_mflops_per_image": trainer_vs_keras.training_flops_per_image(config) / 1e6,
            "parameters": model.count_params()}


def report(counts: dict, flags: list, summary: dict, keras_result: dict) -> None:
    import table
    import trainer_vs_keras
    from components.trainer import steady_images_per_s
    with open(os.path.join(summary["artifacts"]["model_run"], "throughput.json")) as f:
        epochs = json.load(f)
    trainer_rate, peak = steady_images_per_s(epochs), trainer_vs_keras.cpu_peak_flops()
    flops = keras_result["training_mflops_per_image"] * 1e6
    print(f"machine: {table.machine()}; fp32 peak {peak / 1e9:.0f} GFLOP/s")
    print(f"data: {counts['train']:,} training photos, {counts['test']:,} held out; flags: {' '.join(flags)}")
    print(f"pipeline: held-out accuracy {summary['evaluation']['accuracy']:.4f}, {summary['bench_wall_seconds']:.0f} s "
          f"wall; stages (s): " + ", ".join(f"{s} {t:.0f}" for s, t in summary["stage_seconds"].items()))
    print(f"Trainer: {len(epochs)} epochs, {trainer_rate:.0f} images/s (median epoch after the first), "
          f"{trainer_rate * flops / peak:.1%} of fp32 peak at {flops / 1e6:.1f} MFLOP per training image")
    print(f"Keras fit ({keras_result['epochs']} epochs, {keras_result['parameters']:,} parameters, "
          f"{keras_result['policy']}): "
          f"{keras_result['images_per_s']:.0f} images/s, {keras_result['images_per_s'] * flops / peak:.1%} of peak, "
          f"held-out accuracy {keras_result['accuracy']:.4f}")
    print(f"Trainer / Keras fit images/s: {trainer_rate / keras_result['images_per_s']:.2f}x")
    tflite = {name: {key: variant.get(key) for key in ("agreement", "push", "latency_ms_per_image")}
              for name, variant in (summary.get("tflite") or {}).get("variants", {}).items()}
    print("TFLite agreement with the SavedModel: " + ", ".join(  # no agreement: the interpreter cannot run it
        f"{name} {v['agreement'] if v['agreement'] is None else format(v['agreement'], '.4f')} "
        f"({'may be pushed' if v['push'] else 'not pushed'})" for name, v in tflite.items()))
    print(json.dumps({"accuracy": summary["evaluation"]["accuracy"], "stage_seconds": summary["stage_seconds"],
                      "tflite": tflite,
                      "wall_seconds": summary["bench_wall_seconds"], "trainer_images_per_s": trainer_rate,
                      "keras": keras_result, "peak_gflops": round(peak / 1e9, 1)}))


def _commit() -> str:
    """HEAD's short hash, read from .git: the environment root has no git."""
    git = os.path.join(paths.REPO_ROOT, ".git")
    try:
        with open(os.path.join(git, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref: "):
            return head[:7]
        ref = head[5:]
        if os.path.exists(os.path.join(git, ref)):
            with open(os.path.join(git, ref)) as f:
                return f.read().strip()[:7]
        with open(os.path.join(git, "packed-refs")) as f:
            return next(line.split()[0][:7] for line in f if line.strip().endswith(" " + ref))
    except (OSError, StopIteration):
        return "unknown"


def record_run(flags: list, summary: dict, epochs: int, path: str = RUNS) -> None:
    """Adds this full run (epochs: the Trainer's) to the runs --plot draws."""
    import table
    from models import files
    from models.model import read_facts
    commit = _commit()
    runs = files.read_json_if_exists(path) or []
    network = read_facts(summary["artifacts"]["model_run"])["config"]["architecture"]
    preset = flags[flags.index("--preset") + 1] if "--preset" in flags else "no preset"
    runs.append({"network": network, "recipe": f"{network}, --preset {preset}",
                 "flags": " ".join(flags), "epochs": epochs, "accuracy": summary["evaluation"]["accuracy"],
                 "trainer_minutes": round(summary["stage_seconds"]["Trainer"] / 60, 1),
                 "cpu": table.cpu_kind(), "commit": commit, "date": time.strftime("%Y-%m-%d")})
    files.write_json(path, runs, indent=1)  # a line per field: each run reads as one hunk in a diff


def plot(runs_path: str = RUNS, png: str = PLOT) -> None:
    """Held-out accuracy against the Trainer's minutes, a line per recipe (network and preset), each
    point labelled with its epochs and CPU kind."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from models import files
    runs = files.read_json(runs_path)
    figure, axes = plt.subplots(figsize=(8, 7))
    for recipe in sorted({run["recipe"] for run in runs}):
        points = sorted((run for run in runs if run["recipe"] == recipe), key=lambda run: run["trainer_minutes"])
        style = "s--" if "record" in points[0] else "o-"
        axes.plot([p["trainer_minutes"] for p in points], [p["accuracy"] for p in points], style, label=recipe)
        for p in points:
            # a reference run's CPU is in its recipe's name: the label stays short where the points crowd
            label = f"{p['record']}, {p['epochs']} epochs" if "record" in p else f"{p['epochs']} epochs, {p['cpu']}"
            axes.annotate(label, (p["trainer_minutes"], p["accuracy"]), textcoords="offset points", xytext=(4, -12),
                          fontsize=7)
    axes.axhline(GOAL, color="grey", linestyle=":", label=f"issue 34's goal, {GOAL}")
    axes.set_xlabel("Trainer, minutes (CIFAR-10, 45,000 photos trained on)")
    axes.set_ylabel("held-out accuracy (5,000 photos)")
    axes.set_title("bench/photos.py: held-out accuracy against training time")
    axes.grid(alpha=0.3)
    axes.margins(x=0.25, y=0.1)
    # below the axes: inside, it covered points wherever it went
    axes.legend(title="network, recipe", fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    print(f"bench/photos.py: {len(runs)} runs drawn into {png}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=ARCHIVE)
    parser.add_argument("--per-class", type=int, default=5000, help="photos of each class used (5,000: all)")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--preset", default="photos", help="'none': the flags' defaults")
    parser.add_argument("--keras-epochs", type=int, help="default: the pipeline's epochs")
    parser.add_argument("--plot", action="store_true", help=f"draw {os.path.basename(RUNS)} into "
                                                            f"{os.path.basename(PLOT)} and exit")
    parser.add_argument("--child-keras", nargs=3, metavar=("DATA", "EPOCHS", "WORK"), help=argparse.SUPPRESS)
    parser.add_argument("flags", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keras_epochs is not None and args.keras_epochs < 2:
        parser.error("--keras-epochs must be >= 2: images/s is taken from the epochs after the first")
    if args.plot:
        plot()
        return 0
    if args.child_keras:
        data_root, epochs, work = args.child_keras
        print(json.dumps(run_keras(data_root, args.flags, int(epochs), work)))
        return 0
    if not os.path.exists(args.archive):
        print(f"bench/photos.py: skipped, {args.archive} is not here")
        return 0
    flags = pipeline_flags(args)
    with tempfile.TemporaryDirectory(prefix="photos-bench-") as work:
        counts = split_folder(args.archive, work, args.per_class)
        data_root = os.path.join(work, "photos")
        summary = run_pipeline(data_root, os.path.join(work, "out"), flags)
        print(json.dumps({"pipeline": summary}, default=str), flush=True)  # first: what follows may fail
        with open(os.path.join(summary["artifacts"]["model_run"], "throughput.json")) as f:
            trained_epochs = len(json.load(f))
        if args.per_class == 5000:
            record_run(flags, summary, trained_epochs)
        epochs = args.keras_epochs or trained_epochs
        child = subprocess.run([sys.executable, __file__, "--child-keras", data_root, str(epochs), work, "--", *flags],
                               capture_output=True, text=True, cwd=paths.REPO_ROOT)
        if child.returncode:
            print(f"bench/photos.py: the Keras fit failed; the end of its stderr:\n{child.stderr[-3000:]}", file=sys.stderr)
            return 1
        out = child.stdout
        report(counts, flags, summary, json.loads(out.strip().splitlines()[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
