#!/usr/bin/env bash
# The whole test suite on a fresh machine: install devbox (as `pip install .` does) with its test tools, make sure a
# Docker engine (with the GPU hook test double), Compose v2 and the local base image exist,
# then run the benchmark's smoke test and every test folder: tests/unit (pure, seconds), tests/tools
# (marker tools: ruff, mypy, shellcheck, hadolint, the wheel, compose config) and tests/e2e (marker
# e2e: the real engine). Under CI=true a missing tool or engine fails its tests, never skips them.
# Extra arguments go to pytest (e.g. -m tools, -m e2e, -k NAME).
set -euo pipefail
cd "$(dirname "$0")/.."

# Installed as users install it (not -e): the e2e tests run this install's `devbox` console script.
python -m pip install --quiet --root-user-action=ignore '.[test]'
bash scripts/engine.sh
ruff check devbox tests benchmarks
# The speed benchmark as a smoke test (N=2, cold and warm, against the seed-001 baseline): it
# fails when a login, a build or a no-op up misbehaves. The full run writes docs/benchmarks.md.
python benchmarks/bench.py --hosts 2 --repeats 1 --smoke
# pytest last, all three folders (testpaths): its summary closes the output
python -m pytest -q "$@"
