#!/usr/bin/env bash
# Make this machine look like a GPU server to the test suite: put test doubles of NVIDIA's
# nvidia-container-runtime-hook and nvidia-smi in a system folder on PATH (a GPU server has the real
# ones in /usr/bin), so CI proves that no test depends on the machine lacking them (issue 30).
#
#   scripts/gpu-doubles.sh install [DIR]   default DIR: /usr/local/bin
#   scripts/gpu-doubles.sh remove [DIR]    removes only the doubles this script wrote
#
# The nvidia-smi double describes a one-GPU server (tests/doubles/machines/one.json), or the machine
# file DEVBOX_SYSTEM_GPUS names at install. Like a real nvidia-smi it ignores DEVBOX_TEST_NVIDIA_SMI
# (a test that wants other GPUs puts its own double in front). A one-GPU machine is the case that
# differs most from the tests' own doubles: init's example has two GPU hosts. A real tool already in
# DIR is never replaced.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
action=${1:-}
dir=${2:-/usr/local/bin}
machine=${DEVBOX_SYSTEM_GPUS:-$repo/tests/doubles/machines/one.json}
MARK="devbox test double (scripts/gpu-doubles.sh)"

ours() { [ -f "$1" ] && grep -qF "$MARK" "$1"; }

write() {  # write NAME CONTENT: refuse to shadow a real tool
  local target=$dir/$1
  if [ -e "$target" ] && ! ours "$target"; then
    echo "gpu-doubles.sh: $target exists and is not a devbox double; left as it is" >&2
    return 0
  fi
  printf '%s' "$2" >"$target.tmp" && chmod 755 "$target.tmp" && mv "$target.tmp" "$target"
  echo "gpu-doubles.sh: wrote $target"
}

case $action in
  install)
    [ -f "$machine" ] || { echo "gpu-doubles.sh: $machine: no such machine file" >&2; exit 2; }
    machine=$(cd "$(dirname "$machine")" && pwd)/$(basename "$machine")
    mkdir -p "$dir"
    write nvidia-container-runtime-hook "#!/bin/sh
# $MARK: accept the OCI prestart hook call, do nothing.
cat >/dev/null
exit 0
"
    write nvidia-smi "#!/bin/sh
# $MARK: the machine $machine describes, whatever the caller's environment says.
DEVBOX_TEST_NVIDIA_SMI='$machine' exec python3 '$repo/tests/doubles/nvidia-smi' \"\$@\"
"
    ;;
  remove)
    for name in nvidia-container-runtime-hook nvidia-smi; do
      if ours "$dir/$name"; then rm -f "$dir/$name" && echo "gpu-doubles.sh: removed $dir/$name"; fi
    done
    ;;
  *) echo "usage: scripts/gpu-doubles.sh install|remove [DIR]" >&2; exit 2 ;;
esac
