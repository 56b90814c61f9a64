#!/bin/sh
# The pipeline image's install steps (kubeflow/Dockerfile), run in the folder holding what it copies:
#   sh kubeflow/install.sh dependencies cpu|gpu PYTHON   every dependency, pinned by constraints.txt
#   sh kubeflow/install.sh project - PYTHON              this project as a package, nothing else
set -eu
usage="usage: install.sh dependencies cpu|gpu PYTHON | install.sh project - PYTHON"
step=${1:?$usage}
variant=${2:?$usage}
python=${3:?$usage}
case "$step" in
  dependencies)
    case "$variant" in
      cpu) extras=kubeflow ;;
      gpu) extras=kubeflow,gpu ;;
      *) echo "install.sh: variant must be cpu or gpu, got '$variant'" >&2; exit 2 ;;
    esac
    "$python" -m pip install --quiet --upgrade pip setuptools wheel
    # setup.py alone (no package folders yet): its requirements, and an empty package replaced below
    "$python" -m pip install --quiet -c constraints.txt ".[$extras]" ;;
  project)
    "$python" -m pip install --quiet --no-deps --no-build-isolation --force-reinstall . ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
