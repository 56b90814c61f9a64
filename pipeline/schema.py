"""The curated schema's class list, and the one command that changes it on purpose.

    bin/in-env python -m pipeline.schema --schema FILE --data-root DIR

makes FILE's classes those of DIR: known classes keep their ids, new ones are appended (sorted),
classes without a folder are dropped. FILE is created from the embedded dataset's curated schema
when it does not exist. Every other part of the schema (features, image domain, constraints) is
the curated one in schemas/.
"""
import argparse
import os
import sys
from typing import List, Optional, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED_SCHEMA = os.path.join(REPO_ROOT, "schemas", "mnist-sample.pbtxt")
CLASS_DOMAIN = "class_name"
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


def with_classes(schema, classes: List[str]):
    """A copy of schema whose class-name domain and label range are exactly classes."""
    from models import features
    updated = type(schema)()
    updated.CopyFrom(schema)
    domain = next(d for d in updated.string_domain if d.name == CLASS_DOMAIN)
    del domain.value[:]
    domain.value.extend(classes)
    label = next(f for f in updated.feature if f.name == features.LABEL_KEY)
    label.int_domain.min, label.int_domain.max = 0, len(classes) - 1
    return updated


def write(schema, path: str) -> None:
    from google.protobuf import text_format
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(_HEADER.format(path=path) + text_format.MessageToString(schema))
    os.replace(path + ".tmp", path)


def accept_classes(schema_path: str, data_root: str) -> Tuple[List[str], List[str]]:
    """Sets the schema's classes to the folder's; returns (added, removed)."""
    from components.image_example_gen import folder_layout
    folder_classes = folder_layout.discover(data_root).class_names
    template = schema_path if os.path.exists(schema_path) else EMBEDDED_SCHEMA
    schema = load(template)
    known = class_names(schema) if template == schema_path else []
    kept = [c for c in known if c in folder_classes]
    classes = list(folder_layout.class_order(kept, folder_classes))
    write(with_classes(schema, classes), schema_path)
    return [c for c in classes if c not in known], [c for c in known if c not in classes]


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
    print(f"{args.schema}: classes {class_names(load(args.schema))}; added {added}, removed {removed}")
    return 0


if __name__ == "__main__":
    from pipeline.quiet import run_quietly
    run_quietly(main)
