"""The codebase a newcomer meets: the README's order and length, its layout naming every module, the
docs it links, every flag documented, and the size limits of functions and files."""
import argparse
import ast
import os
import re

import pytest

from pipeline import paths

README = os.path.join(paths.REPO_ROOT, "README.md")
DOCS = os.path.join(paths.REPO_ROOT, "docs")
SECTIONS = ["The two commands", "Your own images", "Outputs", "Promotion", "Kubeflow", "What each stage does",
            "Project layout"]
CODE_FOLDERS = ("pipeline", "components", "models")
MAX_FUNCTION_LINES, MAX_FILE_LINES = 60, 400


def _readme() -> str:
    with open(README) as f:
        return f.read()


def _files(folder: str, suffixes=(".py",)):
    for directory, subfolders, names in os.walk(os.path.join(paths.REPO_ROOT, folder)):
        subfolders[:] = [s for s in subfolders if not s.startswith((".", "__"))]
        for name in sorted(names):
            if name.endswith(suffixes) and name != "__init__.py":
                yield os.path.join(directory, name)


def test_the_readme_fits_on_a_screen_and_tells_a_new_user_in_order():
    text = _readme()
    assert len(text.splitlines()) <= 250
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == SECTIONS
    assert not re.search(r"\bissue [A-Z]\b|NOTES §|§\d", text)


def test_the_layout_names_every_module():
    layout = _readme().split("## Project layout", 1)[1]
    named = set(re.findall(r"[\w.-]+\.(?:py|sh|md)\b|\b[\w-]+\b", layout))
    missing = []
    for folder in ("pipeline", "components", "models", "bench", "tests"):
        for path in _files(folder, (".py", ".sh")):
            name = os.path.basename(path)
            module = re.fullmatch(r"test_(\w+)\.py", name)
            if name in named or (module and f"{module.group(1)}.py" in named):
                continue  # a test module of a named module goes by the layout's rule: test_<module>.py
            missing.append(os.path.relpath(path, paths.REPO_ROOT))
    missing += [f"bin/{name}" for name in sorted(os.listdir(os.path.join(paths.REPO_ROOT, "bin"))) if name not in named]
    assert missing == [], "add them to README.md's Project layout"


def test_the_readme_links_every_doc_and_every_link_holds():
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", _readme()))
    present = {f"docs/{name}" for name in os.listdir(DOCS) if name.endswith(".md")}
    assert linked == present
    for name in os.listdir(DOCS):
        with open(os.path.join(DOCS, name)) as f:
            text = f.read()
        assert not re.search(r"\bissue [A-Z]\b|NOTES §|§\d", text), name
        for target in re.findall(r"\]\(([\w.-]+\.md)\)", text):
            assert os.path.exists(os.path.join(DOCS, target)), (name, target)


def _option_strings(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _option_strings(sub)
        else:
            yield from (o for o in action.option_strings if o not in ("-h", "--help"))


def test_every_flag_of_both_runners_is_in_docs_flags(monkeypatch):
    from pipeline import kubeflow_runner, local_runner
    captured = []

    def keep(parser, args=None, namespace=None):
        captured.append(parser)
        raise SystemExit(0)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", keep)
    with pytest.raises(SystemExit):
        local_runner.parse_args([])
    with open(os.path.join(DOCS, "flags.md")) as f:
        documented = set(re.findall(r"`(--[\w-]+)`", f.read()))
    flags = set(_option_strings(captured[0])) | set(_option_strings(kubeflow_runner._parser()))
    assert len(flags) > 60
    assert sorted(flags - documented) == []


def test_no_function_is_over_60_lines_and_no_file_over_400_in_the_code():
    long_files, long_functions = [], []
    for folder in CODE_FOLDERS:
        for path in _files(folder):
            with open(path) as f:
                source = f.read()
            where = os.path.relpath(path, paths.REPO_ROOT)
            if len(source.splitlines()) > MAX_FILE_LINES:
                long_files.append(where)
            long_functions += [f"{where}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
                               for node in ast.walk(ast.parse(source))
                               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                               and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert (long_files, long_functions) == ([], [])
