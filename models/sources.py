"""A digest of the project's own Python sources: local runs' stage reuse (components/caching.py) and
the Trainer's checkpoint folder (models/run_fn.py) are both keyed on it, so a code change never
reuses an output, nor restores a checkpoint into a different model."""
import hashlib
import importlib
import os
from typing import Iterable, List, Tuple

PROJECT_PACKAGES = ("components", "models")  # the code that runs inside the stages; pipeline/ only wires them


def source_files(packages: Iterable[str] = PROJECT_PACKAGES) -> List[Tuple[str, str]]:
    """(name within the project, path) of every Python file of the packages, sorted."""
    files = []
    for package in packages:
        folder = os.path.dirname(importlib.import_module(package).__file__)
        for directory, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            files += [(os.path.relpath(os.path.join(directory, n), os.path.dirname(folder)), os.path.join(directory, n))
                      for n in sorted(names) if n.endswith(".py")]
    return files


def update_with_sources(digest, packages: Iterable[str] = PROJECT_PACKAGES):
    """Feeds every source file's name and content hash into a hashlib digest; returns it."""
    for name, path in source_files(packages):
        digest.update(name.encode())
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest


def sources_digest(packages: Iterable[str] = PROJECT_PACKAGES) -> str:
    return update_with_sources(hashlib.sha256(), packages).hexdigest()
