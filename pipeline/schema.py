"""The curated schema's class list, and the one command that changes it on purpose.

    bin/in-env python -m pipeline.schema --schema FILE --data-root DIR

makes FILE's classes those of DIR: known classes keep their ids, new ones are appended (sorted).
A class without a folder is retired, not dropped: it keeps its id, so every other class keeps its
meaning (a model trained before still reads the same ids), and it may come back. FILE is created from the embedded dataset's curated schema
when it does not exist. Every other part of the schema (features, image domain, constraints) is
the curated one in schemas/.
"""
import argparse
import os
import sys
from typing import List, Optional, Tuple

from models import files
from pipeline import paths

CLASS_DOMAIN = "class_name"
RETIRED_DOMAIN = "retired_class_name"  # the classes of CLASS_DOMAIN whose folders were removed on purpose
_HEADER = ("# Curated schema of an image folder (see schemas/mnist-sample.pbtxt). Change its classes with:\n"
           "#   bin/in-env python -m pipeline.schema --schema {path} --data-root <data root>\n")


def load(path: str):
    """The schema in path; ValueError (one line, naming the file) when it cannot be read as one."""
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format
    try:
        return tfdv.load_schema_text(path)
    except text_format.ParseError as error:
        raise ValueError(f"schema {path} is not a TFDV schema in text format: {error}") from error
    except OSError as error:
        raise ValueError(f"schema {path} cannot be read: {error}") from error


def class_names(schema) -> List[str]:
    for domain in schema.string_domain:
        if domain.name == CLASS_DOMAIN:
            return list(domain.value)
    raise ValueError(f"the schema has no string_domain {CLASS_DOMAIN!r} listing the classes")


def retired_classes(schema) -> List[str]:
    for domain in schema.string_domain:
        if domain.name == RETIRED_DOMAIN:
            return list(domain.value)
    return []


def with_classes(schema, classes: List[str], retired: List[str] = ()):
    """A copy of schema whose class-name domain and label range are exactly classes, retired ones
    (a subset) listed as such."""
    from models import features
    updated = type(schema)()
    updated.CopyFrom(schema)
    domain = next(d for d in updated.string_domain if d.name == CLASS_DOMAIN)
    del domain.value[:]
    domain.value.extend(classes)
    for index in reversed(range(len(updated.string_domain))):
        if updated.string_domain[index].name == RETIRED_DOMAIN:
            del updated.string_domain[index]
    if retired:
        updated.string_domain.add(name=RETIRED_DOMAIN, value=list(retired))
    label = next(f for f in updated.feature if f.name == features.LABEL_KEY)
    label.int_domain.min, label.int_domain.max = 0, len(classes) - 1
    return updated


def write(schema, path: str) -> None:
    from google.protobuf import text_format
    files.write_atomically(path, _HEADER.format(path=path) + text_format.MessageToString(schema))


def accept_classes(schema_path: str, data_root: str) -> Tuple[List[str], List[str]]:
    """Sets the schema's classes to the folder's: new ones appended, those without a folder retired
    (kept, with their ids); returns (added, retired by this call)."""
    from components.image_example_gen import folder_layout
    folder_classes = folder_layout.discover(data_root).class_names
    template = schema_path if os.path.exists(schema_path) else paths.EMBEDDED_SCHEMA
    schema = load(template)
    known = class_names(schema) if template == schema_path else []
    classes = list(folder_layout.class_order(known, folder_classes))
    retired = [c for c in classes if c not in folder_classes]
    already = retired_classes(schema) if template == schema_path else []
    write(with_classes(schema, classes, retired), schema_path)
    return [c for c in classes if c not in known], [c for c in retired if c not in already]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.schema", description=__doc__.splitlines()[0])
    parser.add_argument("--schema", required=True, help="schema file to update (created if missing)")
    parser.add_argument("--data-root", required=True, help="image folder whose classes the schema accepts")
    args = parser.parse_args(argv)
    from components.image_example_gen.folder_layout import ImageFolderError
    try:
        added, removed = accept_classes(args.schema, args.data_root)
    except (ImageFolderError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    updated = load(args.schema)
    print(f"{args.schema}: classes {class_names(updated)} (retired, keeping their ids: {retired_classes(updated)}); "
          f"added {added}, retired {removed}")
    return 0


if __name__ == "__main__":
    from pipeline.quiet import run_quietly
    run_quietly(main)
