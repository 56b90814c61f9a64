"""What pipeline/kubeflow/Dockerfile copies exists, and .dockerignore lets it into the build context. The
image itself is built and run in tests/test_kubeflow_containers.py."""
import os
import re
from pipeline import paths



def copied_by_dockerfile():
    """Sources of the COPY lines that read the build context (not COPY --from)."""
    with open(os.path.join(paths.REPO_ROOT, "pipeline", "kubeflow", "Dockerfile")) as f:
        lines = [line.split()[1:] for line in f if re.match(r"COPY\s+(?!--from)", line)]
    return [source for *sources, _ in lines for source in sources]


def test_the_dockerfile_copies_what_the_package_needs_and_the_context_admits_it():
    copied = copied_by_dockerfile()
    assert {"setup.py", "constraints.txt", "pipeline/kubeflow/install.sh", "components", "models", "pipeline",
            "schemas"} <= set(copied)
    with open(os.path.join(paths.REPO_ROOT, ".dockerignore")) as f:
        admitted = {line[1:].strip() for line in f if line.startswith("!")}
    for source in copied:
        assert os.path.exists(os.path.join(paths.REPO_ROOT, source)), source
        assert source in admitted, f"{source} is copied but .dockerignore keeps it out of the build context"
