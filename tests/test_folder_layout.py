import os

import pytest

from components.image_example_gen import folder_layout
from tests.helpers import make_class_folder, write_image


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
    assert [(os.path.basename(e.path), e.kind) for e in layout.outside_classes] == [
        (".DS_Store", "ignored"), ("README.txt", "rejected")]


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(folder_layout.ImageFolderError, match="does not exist"):
        folder_layout.discover(str(tmp_path / "nope"))


def test_an_empty_folder_is_not_a_class_and_is_listed_as_ignored(image_folder):
    os.makedirs(os.path.join(image_folder, "yellow", "sub"))
    (open(os.path.join(image_folder, "yellow", ".DS_Store"), "w")).close()
    layout = folder_layout.discover(image_folder)
    assert layout.class_names == ("blue", "green", "red")
    assert folder_layout.Entry(os.path.join(image_folder, "yellow"), folder_layout.IGNORED,
                               "folder without files (not a class)") in layout.outside_classes


def test_known_classes_keep_their_ids_and_new_ones_follow_sorted(image_folder):
    os.makedirs(os.path.join(image_folder, "amber"))
    write_image(os.path.join(image_folder, "amber", "a.png"), (250, 190, 0), (10, 10), seed=1)
    layout = folder_layout.discover(image_folder, known_classes=["red", "gone", "blue", "green"])
    assert layout.class_names == ("red", "gone", "blue", "green", "amber")
    assert layout.new_classes == ("amber",)
    assert folder_layout.discover(image_folder).new_classes == ()


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


def test_walk_lists_nested_files_and_says_why_it_skips_entries(tmp_path):
    root = tmp_path / "root"
    write_image(str(root / "a" / "nested" / "x.png"), (1, 2, 3), (10, 10), seed=1)
    (root / "a" / ".hidden.png").write_bytes(b"")
    (root / "a" / "Thumbs.db").write_bytes(b"")
    (root / "a" / "__MACOSX").mkdir()
    (tmp_path / "outside.png").write_bytes(b"x")
    os.symlink(root / "a" / "nested" / "x.png", root / "a" / "inside.png")
    os.symlink(tmp_path / "outside.png", root / "a" / "outside.png")
    os.symlink(root / "missing.png", root / "a" / "broken.png")
    os.symlink(root / "a", root / "a" / "nested" / "loop")
    found = {os.path.relpath(e.path, root): (e.kind, e.reason) for e in folder_layout.walk(str(root / "a"), str(root))}
    assert found == {
        "a/nested/x.png": ("file", ""),
        "a/inside.png": ("file", ""),
        "a/.hidden.png": ("ignored", "hidden name (starts with '.')"),
        "a/Thumbs.db": ("ignored", "operating-system metadata"),
        "a/__MACOSX": ("ignored", "operating-system metadata"),
        "a/outside.png": ("rejected", f"symlink to {tmp_path / 'outside.png'}, outside the data root "
                                      "(only links inside it are followed)"),
        "a/broken.png": ("rejected", f"broken symlink (target {str(root / 'missing.png')!r} does not exist)"),
        "a/nested/loop": ("ignored", f"folder already read as {root / 'a'} (symlink)"),
    }


def test_tree_fingerprint_sees_any_change_of_content_deep_in_the_tree_and_nothing_else(tmp_path):
    make_class_folder(str(tmp_path / "train"), per_class=2)
    make_class_folder(str(tmp_path / "test"), per_class=1)
    root = str(tmp_path)
    first = folder_layout.tree_fingerprint(root)
    assert first.startswith("files:9,") and folder_layout.tree_fingerprint(root) == first

    added = tmp_path / "train" / "red" / "nested" / "new.png"
    write_image(str(added), (200, 0, 0), (8, 8), seed=3)   # deep below a class folder: the root's mtime stays
    with_added = folder_layout.tree_fingerprint(root)
    assert with_added.startswith("files:10,") and with_added != first

    stat = os.stat(added)
    os.utime(added, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000))   # same bytes, touched: the same data
    assert folder_layout.tree_fingerprint(root) == with_added

    # other bytes of the same size, with the old modification time put back (as `cp -p` or `rsync -a` do)
    stat = os.stat(added)
    data = bytearray(added.read_bytes())
    data[-1] ^= 0xFF
    added.write_bytes(bytes(data))
    os.utime(added, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(added).st_size == stat.st_size and os.stat(added).st_mtime_ns == stat.st_mtime_ns
    with_replaced = folder_layout.tree_fingerprint(root)
    assert with_replaced != with_added

    os.symlink(str(tmp_path / "gone.png"), str(tmp_path / "train" / "red" / "broken.png"))
    assert folder_layout.tree_fingerprint(root).startswith("files:10,")   # rejected by ingest, listed here too
    assert folder_layout.tree_fingerprint(root) != with_replaced
