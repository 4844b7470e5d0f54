#!/usr/bin/env bash
# The main job on a fresh machine: install devbox, make sure a Docker engine runs, then bring up
# seed 001's two-host example (master and worker, one GPU each) in ./devbox-demo and prove it
# works. No image registry is reachable here, so the example's CUDA base is swapped for the
# local Debian base image that scripts/engine.sh builds; on a real GPU server keep the CUDA base.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
demo=${1:-$PWD/devbox-demo}

python -m pip install --quiet --root-user-action=ignore "$repo"
bash "$repo/scripts/engine.sh"

mkdir -p "$demo" && cd "$demo"
[ -f devbox.yaml ] || devbox init --project demo
# Small enough for a 2-core machine; the rest is the example as `devbox init` writes it.
sed -i \
  -e 's|base: nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04|base: devbox-test/bookworm:base|' \
  -e 's|limits: {cpus: 8, memory: 16000M}|limits: {cpus: 1, memory: 1g}|' \
  -e 's|reservations: {cpus: 4, memory: 8000M}|reservations: {cpus: 0.5, memory: 512m}|' \
  -e 's|limits: {memory: 64000M}|limits: {memory: 2g}|' \
  -e 's|reservations: {memory: 32000M}|reservations: {memory: 1g}|' \
  devbox.yaml
devbox validate
devbox up
devbox check
echo
echo "log in with: cd $demo && devbox ssh master   (password: .devbox/credentials.yaml)"
echo "tear down with: cd $demo && devbox down"
