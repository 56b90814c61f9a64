"""pipeline.score's choice of files: what ingestion would accept is scored, and every other file is
listed with its reason."""
import os

import pytest

from pipeline import score
from tests.odd_files import INGESTED, REJECTED, make_messy_folder

CLASSES = ["blue", "green", "purple", "red"]  # purple: the messy folder's empty class


def test_every_file_is_scored_or_listed_with_the_reason_ingestion_gives(tmp_path):
    expected = make_messy_folder(str(tmp_path / "data"), per_class=3)
    files, skipped = score.labelled_files(str(tmp_path / "data"), CLASSES, batch_size=4)  # several batches
    scored = {os.path.relpath(path, tmp_path / "data"): name for path, name in files}
    reasons = {os.path.relpath(s["file"], tmp_path / "data"): s["reason"] for s in skipped}
    assert not set(scored) & set(reasons)
    for relative, (outcome, words) in expected.items():
        if outcome == INGESTED:
            assert scored[relative] == relative.split("/")[0], relative
        elif outcome == REJECTED:
            assert words in reasons[relative], (relative, reasons.get(relative))
    assert "hidden name" in reasons[".DS_Store"] and "hidden name" in reasons["red/.DS_Store"]
    assert sum(name == "red" for name in scored.values()) >= 3


def test_a_folder_with_nothing_to_score_is_refused_with_the_reason(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "labels.txt").write_text("cat\ndog\n")
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    (tmp_path / "photos" / "cat" / "notes.txt").write_text("not a photo")
    with pytest.raises(ValueError, match=r"no images under .*; 1 file\(s\) not scored, first .*notes.txt: not an image"):
        score.score(str(tmp_path / "model"), str(tmp_path / "photos"))


def test_a_data_root_without_the_split_folder_is_refused_naming_the_flag_that_scores_it_as_it_is(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    assert score.main(["--model", str(tmp_path / "model"), "--data-root", str(tmp_path / "photos")]) == 2
    error = capsys.readouterr().err
    assert f"image folder {str(tmp_path / 'photos' / 'test')!r} does not exist" in error
    assert "pass --split ''" in error
