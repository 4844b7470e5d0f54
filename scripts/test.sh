#!/usr/bin/env bash
# The whole test suite on a fresh machine: install devbox with its test tools, make sure a
# Docker engine (with the GPU hook test double), Compose v2 and the local base image exist,
# then run unit and end-to-end tests. Extra arguments go to pytest (e.g. -k, -x).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --root-user-action=ignore -e '.[test]'
bash scripts/engine.sh
ruff check devbox tests benchmarks
exec python -m pytest -q "$@"
