"""Where the golden run's accuracy floor comes from (tests/golden.py ACCURACY_FLOOR).

    bin/in-env python bench/golden_floor.py [--repeats 3] [--floor 0.95]

Runs the golden run's recipe (default settings) on the embedded digits --repeats times, each from
nothing, then once per broken recipe, and prints the eval accuracy, the int8 TFLite file's agreement
with the SavedModel and wall time of each, with the CPU model. The floor must sit below every intact
run and above every broken one. The golden run adds an odd-file zoo to three training classes; its
files are rejected or few, and its eval split is the same 500 test digits, so the floor measured here
is the recipe's (bench/ does not import the tests' data maker).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402


BROKEN = {
    "peak learning rate x100": ["--learning-rate", "0.5"],
    "peak learning rate x10": ["--learning-rate", "0.05"],
}


def one_run(flags) -> dict:
    with tempfile.TemporaryDirectory() as output_dir:
        started = time.time()
        subprocess.run([sys.executable, "-m", "pipeline.local_runner", "--data-root", paths.EMBEDDED_DATA,
                        "--output-dir", output_dir, *flags], cwd=paths.REPO_ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        summary = paths.read_last_run(output_dir)
        int8 = ((summary.get("tflite") or {}).get("variants") or {}).get("int8") or {}
        return {"accuracy": (summary.get("evaluation") or {}).get("accuracy"), "status": summary["status"],
                "int8_agreement": int8.get("agreement"), "int8_weights": int8.get("weight_quantization"),
                "wall_s": round(time.time() - started), "trainer_s": summary["stage_seconds"].get("Trainer")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--floor", type=float, default=0.95, help="the floor to judge: tests/golden.py's")
    args = parser.parse_args()
    import table
    print(f"CPU: {table.cpu_kind()}, {os.cpu_count()} cores; floor {args.floor}")
    runs = [("intact", []) for _ in range(args.repeats)] + list(BROKEN.items())
    for name, flags in runs:
        result = one_run(flags)
        side = "above" if (result["accuracy"] or 0) >= args.floor else "below"
        print(f"{name:26s} accuracy {result['accuracy']}  ({side} the floor)  status {result['status']}  "
              f"int8 agreement {result['int8_agreement']} ({result['int8_weights']})  "
              f"wall {result['wall_s']} s, Trainer {result['trainer_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
