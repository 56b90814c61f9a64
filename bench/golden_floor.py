"""Where the golden run's accuracy floor comes from (tests/golden.py ACCURACY_FLOOR).

    bin/in-env python bench/golden_floor.py [--repeats 3]

Runs the golden run (the embedded digits plus the odd-file zoo, default settings) --repeats times,
each from nothing, then once per broken recipe, and prints the eval accuracy, the int8 TFLite file's
agreement with the SavedModel and wall time of each, with the CPU model. The floor must sit below every intact run and above every broken one.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.golden import ACCURACY_FLOOR, REPO, make_golden_data  # noqa: E402

BROKEN = {
    "peak learning rate x100": ["--learning-rate", "0.5"],
    "peak learning rate x10": ["--learning-rate", "0.05"],
}


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")


def one_run(flags) -> dict:
    with tempfile.TemporaryDirectory() as base:
        data_root, output_dir = os.path.join(base, "data"), os.path.join(base, "out")
        make_golden_data(data_root)
        started = time.time()
        subprocess.run([sys.executable, "-m", "pipeline.local_runner", "--data-root", data_root,
                        "--output-dir", output_dir, *flags], cwd=REPO, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(os.path.join(output_dir, "last_run.json")) as f:
            summary = json.load(f)
        int8 = ((summary.get("tflite") or {}).get("variants") or {}).get("int8") or {}
        return {"accuracy": (summary.get("evaluation") or {}).get("accuracy"), "status": summary["status"],
                "int8_agreement": int8.get("agreement"), "int8_weights": int8.get("weight_quantization"),
                "wall_s": round(time.time() - started), "trainer_s": summary["stage_seconds"].get("Trainer")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; floor {ACCURACY_FLOOR}")
    runs = [("intact", []) for _ in range(args.repeats)] + list(BROKEN.items())
    for name, flags in runs:
        result = one_run(flags)
        side = "above" if (result["accuracy"] or 0) >= ACCURACY_FLOOR else "below"
        print(f"{name:26s} accuracy {result['accuracy']}  ({side} the floor)  status {result['status']}  "
              f"int8 agreement {result['int8_agreement']} ({result['int8_weights']})  "
              f"wall {result['wall_s']} s, Trainer {result['trainer_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
