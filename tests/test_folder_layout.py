import os

import pytest

from components.image_example_gen import folder_layout
from tests.conftest import make_class_folder, write_image


def test_flat_folder_is_one_unsplit_split_with_sorted_classes(image_folder):
    layout = folder_layout.discover(image_folder)
    assert layout.splits == (("all", ""),)
    assert layout.class_names == ("blue", "green", "red")
    assert not layout.presplit


def test_presplit_folder_uses_train_and_test(tmp_path):
    make_class_folder(str(tmp_path / "train"), per_class=2)
    make_class_folder(str(tmp_path / "test"), per_class=1)
    (tmp_path / ".DS_Store").write_text("x")
    (tmp_path / "README.txt").write_text("x")
    layout = folder_layout.discover(str(tmp_path))
    assert layout.splits == (("train", "train"), ("eval", "test"))
    assert layout.class_names == ("blue", "green", "red")
    assert layout.stray_files == ("README.txt",)


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(folder_layout.ImageFolderError, match="does not exist"):
        folder_layout.discover(str(tmp_path / "nope"))


def test_empty_class_is_named(image_folder):
    os.makedirs(os.path.join(image_folder, "yellow"))
    with pytest.raises(folder_layout.ImageFolderError, match="'yellow' has no files"):
        folder_layout.discover(image_folder)


def test_eval_class_without_training_folder_is_an_error(tmp_path):
    make_class_folder(str(tmp_path / "train"), per_class=1)
    make_class_folder(str(tmp_path / "test"), per_class=1)
    write_image(str(tmp_path / "test" / "violet" / "a.png"), (100, 0, 100), (10, 10), seed=1)
    with pytest.raises(folder_layout.ImageFolderError, match="violet"):
        folder_layout.discover(str(tmp_path))


def test_single_class_is_rejected(tmp_path):
    write_image(str(tmp_path / "only" / "a.png"), (1, 2, 3), (10, 10), seed=1)
    with pytest.raises(folder_layout.ImageFolderError, match="at least 2"):
        folder_layout.discover(str(tmp_path))


def test_walk_files_recurses_and_skips_hidden(tmp_path):
    write_image(str(tmp_path / "a" / "nested" / "x.png"), (1, 2, 3), (10, 10), seed=1)
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    assert [os.path.relpath(p, tmp_path) for p in folder_layout.walk_files(str(tmp_path / "a"))] == \
        ["a/nested/x.png"]
