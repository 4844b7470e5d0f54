#!/usr/bin/env bash
# CI only: start the test run from an empty engine. A CI machine may hold what an earlier run
# left behind when it was stopped in the middle (containers still holding GPUs of the
# nvidia-smi double, the multi-node rig, a swarm, the GPU-less second dockerd); the GPU ledger
# reads every container on the engine, so such leftovers make the tests fail for reasons that
# are not in the code. This removes every container, every named volume and every user-made
# network of the local engine, and those extra engines; images (the base image, the build
# cache) are kept. It refuses to run outside CI: on anyone's machine it would delete their hosts.
set -euo pipefail
unset DOCKER_HOST
cd "$(dirname "$0")/.."

[ "${CI:-}" = true ] || { echo "ci-clean-engine.sh: CI=true only (it empties the engine)" >&2; exit 2; }
say() { printf 'ci-clean-engine.sh: %s\n' "$*"; }

# The multi-node rig (its own dockerds, namespaces and iptables rules) and the tests' extra dockerds.
bash scripts/swarm.sh down >/dev/null 2>&1 || say "swarm.sh down failed (continuing)"
for extra in /run/devbox-e2e-nogpu /run/devbox-e2e-idle /run/devbox-e2e-btrfs; do   # the e2e tests' own dockerds
  if [ -s "$extra/docker.pid" ]; then kill "$(cat "$extra/docker.pid")" 2>/dev/null || true; fi
done
# the disk budget test's btrfs loop filesystem (its dockerd is gone once the mount is free)
for _ in 1 2 3 4 5; do mountpoint -q /run/devbox-e2e-btrfs/data || break; umount /run/devbox-e2e-btrfs/data 2>/dev/null || sleep 2; done

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ]; then
  docker swarm leave --force >/dev/null && say "left the swarm"
fi
mapfile -t containers < <(docker ps -aq)
if [ ${#containers[@]} -gt 0 ]; then
  docker rm -f "${containers[@]}" >/dev/null && say "removed ${#containers[@]} containers"
fi
mapfile -t volumes < <(docker volume ls -q)
if [ ${#volumes[@]} -gt 0 ]; then
  docker volume rm -f "${volumes[@]}" >/dev/null && say "removed ${#volumes[@]} volumes"
fi
docker network prune -f >/dev/null
say "engine empty (images kept)"
