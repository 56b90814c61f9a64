"""The curated schema: the embedded one matches its data, and accepting classes keeps ids."""
import os
import shutil

from components.image_example_gen import folder_layout
from pipeline import paths, schema
from tests.helpers import make_class_folder, write_image

EMBEDDED_DATA = paths.EMBEDDED_DATA


def test_embedded_schema_lists_the_embedded_classes_and_is_what_the_command_would_write():
    curated = schema.load(paths.EMBEDDED_SCHEMA)
    classes = schema.class_names(curated)
    assert classes == list(folder_layout.discover(EMBEDDED_DATA).class_names)
    assert schema.with_classes(curated, classes) == curated
    image = next(f for f in curated.feature if f.name == "image_raw")
    assert image.HasField("image_domain") and image.shape.dim[0].size == 1
    label = next(f for f in curated.feature if f.name == "label")
    assert (label.int_domain.min, label.int_domain.max) == (0, 9)


def test_accepting_classes_appends_new_ones_and_retires_removed_ones_which_keep_their_ids(tmp_path):
    data = str(tmp_path / "data")
    make_class_folder(data, per_class=1)
    path = str(tmp_path / "schema.pbtxt")
    assert schema.accept_classes(path, data) == (["blue", "green", "red"], [])
    write_image(os.path.join(data, "amber", "a.png"), (250, 190, 0), (10, 10), seed=1)
    shutil.rmtree(os.path.join(data, "green"))
    assert schema.accept_classes(path, data) == (["amber"], ["green"])
    updated = schema.load(path)
    assert schema.class_names(updated) == ["blue", "green", "red", "amber"]  # red is still 2: ids keep their meaning
    assert schema.retired_classes(updated) == ["green"]
    label = next(f for f in updated.feature if f.name == "label")
    assert label.int_domain.max == 3
    assert open(path).read().startswith("# Curated schema")
    # the folder the ExampleGen sees numbers its classes by the schema, the retired one included
    layout = folder_layout.discover(data, schema.class_names(updated))
    assert list(layout.class_names) == ["blue", "green", "red", "amber"]

    make_class_folder(data, per_class=1, colours={"green": (40, 200, 60)})  # back again: same id, not retired
    assert schema.accept_classes(path, data) == ([], [])
    assert schema.class_names(schema.load(path)) == ["blue", "green", "red", "amber"]
    assert schema.retired_classes(schema.load(path)) == []


def test_command_reports_a_bad_folder_in_one_line(tmp_path, capsys):
    assert schema.main(["--schema", str(tmp_path / "s.pbtxt"), "--data-root", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
