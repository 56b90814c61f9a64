#!/bin/sh
# The pipeline image's install steps (pipeline/kubeflow/Dockerfile), run in the folder holding what it copies:
#   sh pipeline/kubeflow/install.sh dependencies cpu|gpu PYTHON3  a virtualenv /opt/venv with every dependency,
#                                                        pinned by constraints.txt
#   sh pipeline/kubeflow/install.sh project - VENV_PYTHON         this project as a package, nothing else
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
    # pyfarmhash (a TFDV dependency) builds from source: a compiler and Python's headers, while needed
    include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    added=""
    if ! command -v g++ >/dev/null || [ ! -f "$include/Python.h" ]; then
      added="g++ python3-dev"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $added >/dev/null
    fi
    "$python" -m venv /opt/venv
    /opt/venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
    # setup.py alone (no package folders yet): its requirements, and an empty package replaced later
    /opt/venv/bin/python -m pip install --quiet -c constraints.txt ".[$extras]"
    if [ -n "$added" ]; then
      apt-get purge -y -qq --auto-remove $added >/dev/null && rm -rf /var/lib/apt/lists/*
    fi ;;
  project)
    "$python" -m pip install --quiet --no-deps --no-build-isolation --force-reinstall . ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
