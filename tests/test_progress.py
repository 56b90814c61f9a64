"""Progress lines: one per stage start and end, the end with the key figure the stage reported."""
import logging
import time

from components.progress import key_figure
from pipeline.local_runner import StageProgress


def _orchestrator(message: str, stage: str) -> None:
    logging.getLogger("absl").info(message, stage)


def test_a_stage_ends_with_its_key_figure_and_a_skipped_or_reused_stage_says_so(capsys):
    earlier = StageProgress(time.time())  # an earlier run's: detached, it prints nothing more
    earlier.attach()
    earlier.detach()
    progress = StageProgress(time.time())
    progress.attach()
    absl = logging.getLogger("absl")
    level, absl.level = absl.level, logging.INFO
    try:
        _orchestrator("Component %s is running.", "Evaluator")
        key_figure("accuracy 0.9800 (no champion yet); blessed: yes")
        _orchestrator("Component %s is finished.", "Evaluator")
        _orchestrator("Component %s is running.", "Transform")  # reports no figure: none is carried over
        _orchestrator("Component %s is finished.", "Transform")
        _orchestrator("Component %s is running.", "Pusher")
        absl.info("Skipping execution for %s", "Pusher")
        _orchestrator("Component %s is finished.", "Pusher")
        _orchestrator("Component %s is running.", "Trainer")
        absl.info("A cached execution %d is used.", 12)
        _orchestrator("Component %s is finished.", "Trainer")
    finally:
        progress.detach()
        absl.level = level
    lines = [line.split("] ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == "Evaluator started"
    assert lines[1].startswith("Evaluator finished in ") and lines[1].endswith(
        "s: accuracy 0.9800 (no champion yet); blessed: yes")
    assert lines[3].startswith("Transform finished in ") and lines[3].endswith("s")
    assert lines[5] == "Pusher skipped (its condition was not met)"
    assert lines[7].startswith("Trainer reused in ") and lines[7].endswith(
        "s: inputs, settings and code unchanged since an earlier run (--no-cache runs it)")
    assert len(lines) == 8
