# Shared by bin/setup-env and bin/in-env: where the project environment lives and how to enter it.
# shellcheck shell=bash

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV_DIR="${TFXENV_DIR:-$REPO_DIR/.tfxenv}"
ROOT_DIR="$ENV_DIR/root"
ROOT_VENV=/usr/local/tfx-venv         # path of the virtualenv inside the Debian 13 root
NATIVE_VENV="$ENV_DIR/venv"
MIN_GLIBC=2.39                   # ml-metadata / TFDV 1.21 wheels are manylinux_2_39
# Keras 2 (tf_keras) everywhere, as in the official TFX 1.21 image; see docs/running.md, "Keras".
export TF_USE_LEGACY_KERAS=1
# oneDNN kernels: TensorFlow leaves them off on non-Intel CPUs; ~18 % faster training on this AMD EPYC.
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-1}"

# Top-level host folders that stay the root's own; every other one is bind-mounted at the same path.
SYSTEM_DIRS=" bin boot dev etc lib lib32 lib64 libx32 lost+found proc run sbin sys usr var "

# A minimal Debian 13 root at $1 with the packages $3 (comma-separated), mmdebstrap's output in $2.
# mmdebstrap, not debootstrap: one apt run that downloads in parallel, in about half the time
# (bench/RESULTS.md, "The Debian root with mmdebstrap").
make_debian_root() {
  local root=$1 log=$2 packages=$3
  command -v mmdebstrap >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; }
  rm -rf "$root"
  mmdebstrap --variant=minbase --include="$packages" trixie "$root" http://deb.debian.org/debian >"$log" 2>&1
}

glibc_version() { getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}'; }

host_is_native() {
  [ -n "${TFXENV_FORCE_ROOT:-}" ] && return 1
  local have; have=$(glibc_version)
  [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$MIN_GLIBC" "$have" | sort -V | head -1)" = "$MIN_GLIBC" ]
}

# Runs "$@" inside the Debian 13 root. All mounts live in a private mount namespace that
# disappears with the command, even when it crashes, so nothing is ever left mounted on the host.
run_in_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "in-env: this host (glibc $(glibc_version)) needs a Debian 13 chroot, which needs root; re-run with sudo" >&2
    return 1
  fi
  local binds="" d name
  for d in /*/; do
    name=${d#/}; name=${name%/}
    case "$SYSTEM_DIRS" in *" $name "*) continue ;; esac
    [ -L "/$name" ] && continue
    binds="$binds /$name"
  done
  local cwd; cwd=$(pwd)
  # shellcheck disable=SC2016
  unshare --mount --propagation private env ROOT="$ROOT_DIR" BINDS="$binds" CWD="$cwd" \
    sh -c '
      set -e
      # the root as a mount point of its own: runc (docker run inside) cannot remount a plain folder
      mount --bind "$ROOT" "$ROOT"
      for b in $BINDS; do mkdir -p "$ROOT$b"; mount --rbind "$b" "$ROOT$b"; done
      mount -t proc proc "$ROOT/proc"
      mount --rbind /dev "$ROOT/dev"
      mount --rbind /sys "$ROOT/sys"
      exec chroot "$ROOT" /bin/sh -c "cd \"\$0\" 2>/dev/null || cd /; exec \"\$@\"" "$CWD" "$@"
    ' in-env env $(clean_env_args) TFXENV_INSIDE=1 PATH="$ROOT_VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_CONFIG_FILE=/dev/null "$@"
}

# Environment for commands inside: the host's variables, minus those that would point at host binaries.
clean_env_args() {
  echo -u LD_LIBRARY_PATH -u LD_PRELOAD -u PYTHONHOME -u PYTHONPATH -u VIRTUAL_ENV \
       -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_CONFIG_FILE -u PIP_EXTRA_INDEX_URL
}
