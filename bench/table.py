"""`make bench`: every benchmark figure as a ratio against a peer measured in this same invocation.

    bin/in-env python bench/table.py [--epochs 15] [--copies 10] [--markdown]

In order, on the embedded sample:
- P1: the plain-Keras route (bench/plain_keras.py: image_dataset_from_directory, fit, SavedModel,
  TFLite), then the whole pipeline (python -m pipeline.local_runner, report included) in a fresh
  output dir, same data and epochs: wall time of each command;
- P6: the pipeline again, unchanged, in that output dir: its wall time over the first run's;
- P5: the TFLite variants the first run measured (size against float32, agreement, latency);
- P2: the first run's Trainer images/s (median epoch after the first) against Keras `fit` on the
  decoded images in memory (bench/trainer_vs_keras.py);
- P3: ImageFolderExampleGen against image_dataset_from_directory on the sample repeated --copies
  times (bench/ingest_vs_keras.py), images/s.
Prints the machine, then one table (--markdown: as bench/RESULTS.md holds it).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402
import ingest_vs_keras  # noqa: E402  (bench/ is not a package)
import trainer_vs_keras  # noqa: E402
from models.recipe import TrainingConfig  # noqa: E402


def timed(command) -> tuple:
    """(wall seconds, stdout) of a command run from the repository, which must succeed."""
    started = time.time()
    done = subprocess.run(command, cwd=paths.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          check=False)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.time() - started, done.stdout


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())


def machine() -> str:
    from importlib.metadata import version  # not importing TensorFlow: its start-up lines would go to stderr
    model = cpu_model()
    with open("/proc/meminfo") as f:
        memory_gb = int(f.readline().split()[1]) / 1024 ** 2
    return (f"{model}, {os.cpu_count()} cores, {memory_gb:.0f} GB, no GPU used; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, TensorFlow {version('tensorflow')}, TFX {version('tfx')}")


def cpu_kind() -> str:
    """The CPU kind as RESULTS.md names it: the model name, and whether it has AVX-512 (NOTES §8). AMD's
    Zen 5 is named apart: the same model name as the Zen 4 kind, twice its AVX-512 width."""
    with open("/proc/cpuinfo") as f:
        info = f.read()
    model = cpu_model()
    if trainer_vs_keras.amd_family(info) >= trainer_vs_keras.ZEN5_FAMILY:
        model += " Zen 5"
    return f"{model} with AVX-512" if " avx512f" in info else f"{model} with AVX2" if " avx2" in info else model


def pipeline_figures(epochs: int, work: str) -> dict:
    """P1, P6, P5 and the Trainer's rate of P2."""
    peer_dir, output_dir = os.path.join(work, "peer"), os.path.join(work, "pipeline")
    os.makedirs(peer_dir)
    peer_seconds, peer_out = timed([sys.executable, os.path.join(BENCH_DIR, "plain_keras.py"), "--data-root", paths.EMBEDDED_DATA,
                                    "--output-dir", peer_dir, "--epochs", str(epochs)])
    command = [sys.executable, "-m", "pipeline.local_runner", "--output-dir", output_dir, "--epochs", str(epochs)]
    first_seconds, _ = timed(command)
    first = paths.read_last_run(output_dir)
    rerun_seconds, _ = timed(command)
    rerun = paths.read_last_run(output_dir)
    with open(os.path.join(first["artifacts"]["model_run"], "throughput.json")) as f:
        trainer_rate = trainer_vs_keras.steady(json.load(f))
    return {"peer_seconds": peer_seconds, "peer_accuracy": json.loads(peer_out.strip().splitlines()[-1])["test_accuracy"],
            "first_seconds": first_seconds, "first": first, "rerun_seconds": rerun_seconds, "rerun": rerun,
            "trainer_images_per_s": trainer_rate}


def keras_fit_rate(work: str) -> float:
    _, out = timed([sys.executable, os.path.join(BENCH_DIR, "trainer_vs_keras.py"), "--child", "keras",
                    "--epochs", "5", "--work-dir", work])
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def ingest_figures(copies: int, work: str) -> dict:
    data_root = os.path.join(work, f"x{copies}")
    images = ingest_vs_keras.build_folder(data_root, copies)
    rates = {}
    for route in ("keras", "example_gen"):
        result = ingest_vs_keras.child(route, data_root, os.path.join(work, route))
        assert result["images"] == images, (route, result, images)
        rates[route] = result["images"] / result["seconds"]
    return {"images": images, **rates}


def rows(p: dict, fit_rate: float, ingest: dict, epochs: int) -> list:
    """(figure, ours, peer, ratio, goal) per line."""
    first, variants = p["first"], p["first"]["tflite"]["variants"]
    float32 = variants["float32"]["size_bytes"]
    ratio = lambda ours, peer: f"{ours / peer:.2f}×"  # noqa: E731
    table = [
        (f"P1 pipeline wall s ({epochs} epochs, report included; accuracy {first['evaluation']['accuracy']:.3f} "
         f"vs {p['peer_accuracy']:.3f}) / plain Keras", f"{p['first_seconds']:.0f}", f"{p['peer_seconds']:.0f}",
         ratio(p["first_seconds"], p["peer_seconds"]), "≤ 1.5×"),
        (f"P6 unchanged rerun wall s ({len(p['rerun']['cached_stages'])} stages reused, status "
         f"{p['rerun']['status']}) / first run", f"{p['rerun_seconds']:.0f}", f"{p['first_seconds']:.0f}",
         ratio(p["rerun_seconds"], p["first_seconds"]), "≤ 0.3×"),
        ("P2 Trainer images/s / Keras fit on in-memory arrays", f"{p['trainer_images_per_s']:.0f}", f"{fit_rate:.0f}",
         ratio(p["trainer_images_per_s"], fit_rate), "≥ 0.95×"),
        (f"P3 ExampleGen images/s / image_dataset_from_directory ({ingest['images']:,} images)",
         f"{ingest['example_gen']:.0f}", f"{ingest['keras']:.0f}", ratio(ingest["example_gen"], ingest["keras"]),
         "≥ 1.0×"),
    ]
    for name, measured in variants.items():
        table.append((f"P5 TFLite {name}: bytes / float32; agreement with SavedModel {measured['agreement']:.3f}; "
                      f"{measured['latency_ms_per_image']:.2f} ms/image", f"{measured['size_bytes']:,}", f"{float32:,}",
                      ratio(measured["size_bytes"], float32), "int8 ≤ 0.3×" if name == "int8" else ""))
    return table


def print_table(table: list, markdown: bool) -> None:
    header = ("figure", "ours", "peer", "ratio", "goal")
    if markdown:
        print("| " + " | ".join(header) + " |\n|---|---:|---:|---:|---|")
        for row in table:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(str(cell).ljust(w) if i in (0, 4) else str(cell).rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))))


def stage_lines(p: dict) -> list:
    """Where each pipeline run's wall time went: its stages, then the rest (start-up, summary, report)."""
    lines = []
    for name, seconds, run in (("first run", p["first_seconds"], p["first"]),
                               ("unchanged rerun", p["rerun_seconds"], p["rerun"])):
        stages, cached = run["stage_seconds"], set(run.get("cached_stages") or ())
        shown = [f"{stage} {t:.1f}" + (" (reused)" if stage in cached else "")
                 for stage, t in stages.items() if t >= 0.5 or stage in cached]
        lines.append(f"{name}, {seconds:.0f} s: {', '.join(shown)}; outside the stages (start-up, summary, report) "
                     f"{seconds - sum(stages.values()):.1f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs)
    parser.add_argument("--copies", type=int, default=10, help="P3: the sample repeated this many times")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        pipeline = pipeline_figures(args.epochs, work)
        fit_rate = keras_fit_rate(work)
        ingest = ingest_figures(args.copies, work)
    print(f"{started:%Y-%m-%d %H:%M} UTC; machine: {machine()}")
    print_table(rows(pipeline, fit_rate, ingest, args.epochs), args.markdown)
    print()
    for line in stage_lines(pipeline):
        print(("- " if args.markdown else "") + line)


if __name__ == "__main__":
    main()
