#!/usr/bin/env bash
# Checks bin/in-env from the host side: cwd and host paths unchanged, exit codes kept, the Keras
# choice set, and no mount left behind on the host after a command is killed.
set -uo pipefail
IN_ENV="$(cd "$(dirname "$0")/.." && pwd)/bin/in-env"
. "$(dirname "$IN_ENV")/env-lib.sh"
passed=0 failed=0
check() {  # check NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok   $1"
  else failed=$((failed + 1)); echo "FAIL $1: expected [$2], got [$3]"; fi
}
scratch=$(mktemp -d /tmp/in-env-test.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
echo hello > "$scratch/in.txt"

check "keeps the working directory" "$scratch" "$(cd "$scratch" && "$IN_ENV" pwd)"
check "reads host paths unchanged" "hello" "$("$IN_ENV" cat "$scratch/in.txt")"
"$IN_ENV" sh -c "echo written > '$scratch/out.txt'"
check "writes host paths unchanged" "written" "$(cat "$scratch/out.txt" 2>/dev/null)"
check "uses Keras 2 everywhere" "1" "$("$IN_ENV" sh -c 'echo $TF_USE_LEGACY_KERAS')"
check "turns on oneDNN kernels" "1" "$("$IN_ENV" sh -c 'echo $TF_ENABLE_ONEDNN_OPTS')"
"$IN_ENV" sh -c 'exit 3'; check "passes the exit code through" "3" "$?"
( "$IN_ENV" sh -c 'kill -KILL $$' ) 2>/dev/null; code=$?
check "a killed command fails" "1" "$([ "$code" -ne 0 ] && echo 1 || echo 0)"
check "a nested call runs the command as it is" "nested 1" "$("$IN_ENV" "$IN_ENV" sh -c 'echo nested $TFXENV_INSIDE')"
if host_is_native; then leftover=0; else leftover=$(grep -cE " $ROOT_DIR[ /]" /proc/self/mounts || true); fi
check "no mount left on the host" "0" "$leftover"
# A disk too small for the environment: one message naming the cause, before anything is built.
small=$(unshare --mount sh -c "mount -t tmpfs -o size=16m tmpfs '$scratch' && \
  TFXENV_DIR='$scratch/env' bash '$REPO_DIR/bin/setup-env' 2>&1; echo \"exit \$? left: \$(ls -A '$scratch/env')\"")
check "setup-env on a full disk names the cause" "1" \
  "$(echo "$small" | grep -c '^\[setup-env\] not enough disk space: the environment needs about 5 GB in ')"
check "and fails, leaving only its lock" "exit 1 left: .lock" "$(echo "$small" | tail -1)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
