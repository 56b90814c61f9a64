"""The pipeline image's install step, run here: no container engine runs on these machines, so the
files the Dockerfile copies are copied into a folder, kubeflow/install.sh installs them into a fresh
virtualenv, and that virtualenv imports every class the compiled spec names and TFX's entrypoint."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline import kubeflow_runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def copied_by_dockerfile():
    """Sources of the build stage's COPY lines (not COPY --from)."""
    with open(os.path.join(REPO, "kubeflow", "Dockerfile")) as f:
        lines = [line.split()[1:] for line in f if re.match(r"COPY\s+(?!--from)", line)]
    return [source for *sources, _ in lines for source in sources]


def test_the_dockerfile_copies_what_the_package_needs():
    copied = copied_by_dockerfile()
    assert {"setup.py", "constraints.txt", "kubeflow/install.sh", "components", "models", "pipeline",
            "schemas"} <= set(copied)
    for source in copied:
        assert os.path.exists(os.path.join(REPO, source)), source


@pytest.mark.e2e
def test_the_image_install_step_provides_every_class_the_spec_names(tmp_path):
    context = tmp_path / "context"
    for source in copied_by_dockerfile():
        target = context / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(os.path.join(REPO, source)):
            shutil.copytree(os.path.join(REPO, source), target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(REPO, source), target)
    venv = tmp_path / "venv"
    base_python = os.path.realpath(sys.executable)  # the interpreter behind this virtualenv
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(["sh", "kubeflow/install.sh", "cpu", python], cwd=context, check=True, timeout=1800)

    spec_file = tmp_path / "pipeline.yaml"
    assert kubeflow_runner.main(["compile", "--output", str(spec_file)]) == 0
    with open(spec_file) as f:
        named = kubeflow_runner.named_classes(next(yaml.safe_load_all(f)))
    check = ("import importlib, sys\n"
             "from tfx.utils import import_utils\n"
             f"importlib.import_module({ENTRYPOINT!r})\n"
             "for path in sys.argv[1:]: import_utils.import_class_by_path(path)\n"
             "import components, pipeline\n"
             "print(components.__file__)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run([python, "-c", check, *named], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith(str(venv))  # the installed package, not this checkout
