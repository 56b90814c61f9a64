"""What --warm-start buys a retraining: epochs to reach the first run's accuracy.

    bin/in-env python bench/warm_start.py [--data-root data/mnist-sample] [--warm-epochs 7 3]

One run from scratch with the default epochs makes the champion. Then, on the same data, runs
warm-started from it with fewer epochs, and the same runs from scratch. Later runs are given
--min-accuracy 1 so that none is pushed and every warm start begins at the first run's champion.
Prints each run's eval accuracy, its validation accuracy per epoch, and the Trainer's time.
"""
import argparse
import os
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402
from bench.table import machine  # noqa: E402
from pipeline.report_training import epoch_scalars  # noqa: E402


def one_run(data_root: str, output_dir: str, flags) -> dict:
    subprocess.run([sys.executable, "-m", "pipeline.local_runner", "--data-root", data_root,
                    "--output-dir", output_dir, *flags], cwd=paths.REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = paths.read_last_run(output_dir)
    validation = epoch_scalars(os.path.join(summary["artifacts"]["model_run"], "validation")).get("epoch_accuracy", {})
    return {"accuracy": (summary.get("evaluation") or {}).get("accuracy"), "status": summary["status"],
            "trainer_s": summary["stage_seconds"].get("Trainer"), "started_from": summary.get("started_from"),
            "validation": [round(validation[epoch], 4) for epoch in sorted(validation)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=paths.EMBEDDED_DATA)
    parser.add_argument("--warm-epochs", type=int, nargs="+", default=[7, 3])
    args = parser.parse_args()
    print(f"{machine()}; data {args.data_root}")
    with tempfile.TemporaryDirectory() as output_dir:
        first = one_run(args.data_root, output_dir, [])
        print(f"{'scratch, default epochs':28s} accuracy {first['accuracy']:.4f}  Trainer {first['trainer_s']:.0f} s  "
              f"{first['status']}  validation by epoch {first['validation']}", flush=True)
        for epochs in args.warm_epochs:
            for name, flags in ((f"warm start, {epochs} epochs", ["--warm-start"]), (f"scratch, {epochs} epochs", [])):
                run = one_run(args.data_root, output_dir, [*flags, "--epochs", str(epochs), "--min-accuracy", "1"])
                started = run["started_from"]
                note = "" if not flags else (f"  from version {started['champion_version']}" if started and
                                             started["champion_version"] else f"  NOT warm-started: {started}")
                print(f"{name:28s} accuracy {run['accuracy']:.4f} ({run['accuracy'] - first['accuracy']:+.4f})  "
                      f"Trainer {run['trainer_s']:.0f} s{note}  validation by epoch {run['validation']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
