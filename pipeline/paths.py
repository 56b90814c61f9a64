"""Where things are: the repository's own folders, and the layout of a local run's --output-dir.
The runners, promote, the report, bench/ and tests/ take every path from here.

--output-dir holds:
  serving/<model>/<version>/   pushed models, champion.json, promotions.jsonl (models/promotion.py)
  last_run.json, runs/<run>.json, runs/<run>/report.html   each run's summary and report
  pipeline/                    every stage's artifacts (the pipeline root); metadata.sqlite (ML Metadata)
  schema.pbtxt                 the curated schema of a folder of the user's own (the first run writes it)
  last_run.log, .run.lock      what the libraries printed; the lock of the run using the folder
"""
import os
from typing import Any, Dict

from models import files
from pipeline import configs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED_DATA = os.path.join(REPO_ROOT, "data", "mnist-sample")
SCHEMAS_DIR = os.path.join(REPO_ROOT, "schemas")
EMBEDDED_SCHEMA = os.path.join(SCHEMAS_DIR, "mnist-sample.pbtxt")
DEFAULT_OUTPUT_DIR = os.path.join(REPO_ROOT, "outputs")


def serving_dir(output_dir: str) -> str:
    """The pushed model's folder: versions, champion.json, promotions.jsonl."""
    return os.path.join(output_dir, "serving", configs.MODEL_NAME)


def pipeline_root(output_dir: str) -> str:
    return os.path.join(output_dir, "pipeline")


def metadata_path(output_dir: str) -> str:
    return os.path.join(output_dir, "metadata.sqlite")


def user_schema(output_dir: str) -> str:
    """The schema of a folder other than the embedded digits, created from its classes by the first run."""
    return os.path.join(output_dir, "schema.pbtxt")


def last_run(output_dir: str) -> str:
    return os.path.join(output_dir, "last_run.json")


def library_log(output_dir: str) -> str:
    """What the libraries wrote to stderr, unless --verbose."""
    return os.path.join(output_dir, "last_run.log")


def run_lock(output_dir: str) -> str:
    """Held by the run using the folder (local_runner.one_run_at_a_time)."""
    return os.path.join(output_dir, ".run.lock")


def runs_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "runs")


def run_summary(output_dir: str, run_id: str) -> str:
    """runs/<run id without the colons of its time of day>.json"""
    return os.path.join(runs_dir(output_dir), run_id.replace(":", "") + ".json")


def run_report_dir(output_dir: str, run_id: str) -> str:
    """runs/<run>/, the folder of the run's report, beside its summary."""
    return os.path.splitext(run_summary(output_dir, run_id))[0]


def read_last_run(output_dir: str) -> Dict[str, Any]:
    """The last run's summary (last_run.json), as bench/ and tests/ read it after a run."""
    return files.read_json(last_run(output_dir))
