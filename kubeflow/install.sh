#!/bin/sh
# The pipeline image's install step (kubeflow/Dockerfile), also run by tests/test_image_install.py:
# the project as a package, its dependencies pinned by constraints.txt.
#   sh kubeflow/install.sh cpu|gpu PYTHON     (run in the folder holding what the Dockerfile copies)
set -eu
variant=${1:?usage: install.sh cpu|gpu PYTHON}
python=${2:?usage: install.sh cpu|gpu PYTHON}
case "$variant" in
  cpu) extras=kubeflow ;;
  gpu) extras=kubeflow,gpu ;;
  *) echo "install.sh: variant must be cpu or gpu, got '$variant'" >&2; exit 2 ;;
esac
"$python" -m pip install --quiet --upgrade pip setuptools wheel
"$python" -m pip install --quiet -c constraints.txt ".[$extras]"
