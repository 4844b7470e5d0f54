#!/usr/bin/env bash
# A real three-node Docker swarm and a real image registry on this one machine, for
# devbox's multi-node e2e tests. Made and removed idempotently:
#
#   scripts/swarm.sh up                 make (or complete) the rig; prints `status`
#   scripts/swarm.sh down               remove everything `up` made (also after a half `up`)
#   scripts/swarm.sh status             one line per part; exit 1 if a part is missing
#   scripts/swarm.sh load IMAGE [NODE]  copy an image of the main engine to the nodes
#
# Layout (docs/multinode.md says why):
#   bridge dbxsw0 10.77.0.1/24 on the machine; the registry listens there only;
#   node nN = network namespace nN, address 10.77.0.(10+N), its own dockerd started with
#   `nsenter --net` (not `ip netns exec`: that remounts /sys and hides the cgroup mounts
#   dockerd needs) and `unshare --uts` (so each node has its own hostname, nN), socket
#   unix:///var/run/docker-nN.sock. n1 is the manager, n2 and n3 join as workers.
# The main engine (/var/run/docker.sock) is not part of the swarm: other tests use it at the
# same time and `docker swarm init`/`leave` it themselves (tests/e2e/test_swarm.py).
# Every wait is bounded; nothing listens outside loopback and 10.77.0.0/24.
set -euo pipefail
unset DOCKER_HOST

NODES=(n1 n2 n3)
MANAGER=n1
NET=10.77.0                                   # the rig's /24
BRIDGE=dbxsw0
MACHINE_IP=$NET.1
REGISTRY_PORT=${SWARM_REGISTRY_PORT:-5077}
REGISTRY=$MACHINE_IP:$REGISTRY_PORT
GPU_NODE=${SWARM_GPU_NODE:-n3}                # the one node advertising fake GPUs
GPU_COUNT=${SWARM_GPU_COUNT:-1}
STATE=/run/devbox-swarm
TAG=devbox-swarm                              # comment on every iptables rule made here
START=$SECONDS

say() { printf 'swarm.sh: %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

addr_of() { echo "$NET.$((10 + ${1#n}))"; }
host_of() { echo "unix:///var/run/docker-$1.sock"; }
veth_of() { echo "dbxsw-$1"; }

# The Debian client (20.10) matches the daemons; /usr/local/bin/docker (28) also talks to them.
DOCKER=$(command -v /usr/bin/docker || command -v docker || true)
on() {   # on NODE docker-args...: the docker CLI against that node's engine, bounded
  local node=$1; shift
  DOCKER_HOST=$(host_of "$node") timeout 60 "$DOCKER" "$@"
}
answers() { on "$1" info >/dev/null 2>&1; }
swarm_state() { on "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unreachable; }

# wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds, or fail naming WHAT
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 1
  done
  [ -n "$what" ] && say "$what after $((SECONDS - START)) s"
  return 0
}

# ---- iptables: bridged frames go through FORWARD (br_netfilter), whose policy is DROP ----
# Each rule is inserted at the top, in this order: the last one ends up first. The two INPUT
# rules keep the rig's addresses (the registry) to the machine itself and the rig's network.
RULES=(
  "filter INPUT -d $NET.0/24 ! -i $BRIDGE -j DROP"
  "filter INPUT -d $NET.0/24 -i lo -j ACCEPT"
  "filter FORWARD -i $BRIDGE -o $BRIDGE -j ACCEPT"
  "filter FORWARD -i $BRIDGE ! -o $BRIDGE -j ACCEPT"
  "filter FORWARD -o $BRIDGE -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
  "nat POSTROUTING -s $NET.0/24 ! -o $BRIDGE -j MASQUERADE"
)
rules_add() {
  local rule table chain spec
  for rule in "${RULES[@]}"; do
    read -r table chain spec <<<"$rule"
    # shellcheck disable=SC2086  # spec is a fixed list of iptables words, split on purpose
    iptables -w 10 -t "$table" -C "$chain" $spec -m comment --comment "$TAG" 2>/dev/null \
      || iptables -w 10 -t "$table" -I "$chain" 1 $spec -m comment --comment "$TAG"
  done
}
rules_del() {
  local rule table chain spec
  for rule in "${RULES[@]}"; do
    read -r table chain spec <<<"$rule"
    # shellcheck disable=SC2086  # as in rules_add
    while iptables -w 10 -t "$table" -D "$chain" $spec -m comment --comment "$TAG" 2>/dev/null; do :; done
  done
}

# ---- network: one bridge on the machine, one namespace + veth per node ----------------
bridge_up() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip -br addr show "$BRIDGE" | grep -qw "$MACHINE_IP/24" || ip addr add "$MACHINE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}
node_net_up() {
  local node=$1 addr veth
  addr=$(addr_of "$node"); veth=$(veth_of "$node")
  if ip netns list | grep -qw "^$node" && ip -n "$node" -br addr show eth0 2>/dev/null | grep -qw "$addr/24"; then
    return 0
  fi
  ip link delete "$veth" 2>/dev/null || true
  [ -e "/var/run/netns/$node" ] || ip netns add "$node"
  ip link add "$veth" type veth peer name eth0 netns "$node"
  ip link set "$veth" master "$BRIDGE" up
  ip -n "$node" link set lo up
  ip -n "$node" addr add "$addr/24" dev eth0
  ip -n "$node" link set eth0 up
  ip -n "$node" route add default via "$MACHINE_IP"
}

# ---- one dockerd per node ----------------------------------------------------------------
node_engine_start() {
  local node=$1 mtu
  if answers "$node"; then return 0; fi
  if [ -s "/var/run/docker-$node.pid" ] && kill -0 "$(cat "/var/run/docker-$node.pid")" 2>/dev/null; then
    return 0   # started, not answering yet: the caller waits
  fi
  mtu=$(cat "/sys/class/net/$(ip route show default | awk '{print $5; exit}')/mtu" 2>/dev/null || echo 1500)
  local args=(--data-root "/var/lib/docker-$node" --exec-root "/var/run/docker-$node"
    -H "$(host_of "$node")" --pidfile "/var/run/docker-$node.pid" --cgroup-parent "/docker-$node"
    --insecure-registry "$REGISTRY" --mtu "$mtu")
  if [ "$node" = "$GPU_NODE" ]; then
    local i
    for ((i = 0; i < GPU_COUNT; i++)); do
      args+=(--node-generic-resource "$(printf 'NVIDIA-GPU=GPU-fa4e0000-0000-0000-0000-%012d' $((${node#n} * 100 + i)))")
    done
  fi
  mkdir -p "$STATE"
  say "starting dockerd of $node ($(addr_of "$node")), log: $STATE/dockerd-$node.log"
  # setsid: outlive this script. unshare --uts: the node's own hostname (swarm node name).
  # shellcheck disable=SC2016  # $1 and $@ belong to the inner sh
  setsid nsenter --net="/var/run/netns/$node" unshare --uts \
    sh -c 'hostname "$1" && shift && exec "$@"' sh "$node" dockerd "${args[@]}" \
    </dev/null >>"$STATE/dockerd-$node.log" 2>&1 &
}
all_answer() { local n; for n in "${NODES[@]}"; do answers "$n" || return 1; done; }

# ---- the swarm ------------------------------------------------------------------------
swarm_up() {
  local state token node
  state=$(swarm_state "$MANAGER")
  if [ "$state" != active ]; then
    [ "$state" = inactive ] || on "$MANAGER" swarm leave --force >/dev/null 2>&1 || true
    on "$MANAGER" swarm init --advertise-addr "$(addr_of "$MANAGER")" \
      --listen-addr "$(addr_of "$MANAGER"):2377" >/dev/null
    say "swarm initialised on $MANAGER"
  fi
  [ "$(on "$MANAGER" info --format '{{.Swarm.ControlAvailable}}')" = true ] || die "$MANAGER is in a swarm but not its manager"
  token=$(on "$MANAGER" swarm join-token -q worker)
  for node in "${NODES[@]}"; do
    [ "$node" != "$MANAGER" ] || continue
    if [ "$(swarm_state "$node")" = active ] && node_ready "$node"; then continue; fi
    on "$node" swarm leave --force >/dev/null 2>&1 || true
    on "$MANAGER" node ls --format '{{.ID}} {{.Hostname}}' | awk -v n="$node" '$2 == n {print $1}' \
      | while read -r id; do on "$MANAGER" node rm --force "$id" >/dev/null; done
    on "$node" swarm join --token "$token" --advertise-addr "$(addr_of "$node")" \
      --listen-addr "$(addr_of "$node"):2377" "$(addr_of "$MANAGER"):2377" >/dev/null
    say "$node joined"
  done
}
node_ready() {   # the manager sees NODE ready and active
  on "$MANAGER" node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}' 2>/dev/null \
    | grep -qx "$1 Ready Active"
}
all_ready() { local n; for n in "${NODES[@]}"; do node_ready "$n" || return 1; done; }
label_nodes() {   # only where missing: a node update makes swarmkit reject the node's GPU tasks
  local node labels
  for node in "${NODES[@]}"; do
    [ "$(on "$MANAGER" node inspect -f '{{index .Spec.Labels "devbox.docker-host"}}' "$node" 2>/dev/null)" \
      != "unix:///var/run/docker-$node.sock" ] || continue
    # devbox.docker-host: where devbox reaches the node's engine (exec, check, down --volumes)
    labels=(--label-add "rig.node=$node" --label-add "devbox.docker-host=unix:///var/run/docker-$node.sock")
    [ "$node" != "$GPU_NODE" ] || labels+=(--label-add gpu=fake)
    on "$MANAGER" node update "${labels[@]}" "$node" >/dev/null
  done
}

# ---- the registry (Debian's docker-registry, distribution 2.8) ------------------------------
registry_answers() { curl -fsS -m 5 -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null; }
registry_up() {
  registry_answers && return 0
  command -v docker-registry >/dev/null || {
    say "installing docker-registry (apt)"
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
  }
  mkdir -p "$STATE"
  [ -s "$STATE/registry-dir" ] || mktemp -d /var/tmp/devbox-swarm-registry.XXXXXX >"$STATE/registry-dir"
  cat >"$STATE/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $(cat "$STATE/registry-dir")}
  delete: {enabled: true}
http: {addr: "$REGISTRY"}
EOF
  say "starting docker-registry on $REGISTRY, log: $STATE/registry.log"
  setsid docker-registry serve "$STATE/registry.yml" </dev/null >>"$STATE/registry.log" 2>&1 &
  echo $! >"$STATE/registry.pid"
  wait_for 30 "registry answers" registry_answers || { tail -n 20 "$STATE/registry.log" >&2; die "registry did not answer in 30 s"; }
}

# ---- down: kill by recorded pid, unmount, remove ---------------------------------------------
kill_pid() {   # kill_pid PID NAME-IN-CMDLINE: TERM, then KILL after 30 s; only if it is NAME
  local pid=$1 name=$2 i
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name" || return 0
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true
}
unmount_under() {   # lazily unmount everything mounted below a directory, deepest first
  awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
node_down() {
  local node=$1 pid ids exec_root=/var/run/docker-$1
  # containers first, killed: dockerd alone would give each one 10 s to stop
  ids=$(on "$node" ps -aq 2>/dev/null)
  # shellcheck disable=SC2086  # one word per container id
  [ -z "$ids" ] || on "$node" rm -f $ids >/dev/null 2>&1
  # and out of the swarm: a manager stopped while still in it takes ~10 s to give up its raft
  on "$node" swarm leave --force >/dev/null 2>&1
  pid=$(cat "/var/run/docker-$node.pid" 2>/dev/null || true)
  kill_pid "$pid" "docker-$node"
  # what dockerd leaves when killed: its containerd and the shims, found by their socket path
  # ([/]: the pattern does not match grep's own command line)
  grep -l -- "[/]${exec_root#/}/containerd" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 \
    | while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done || true
  unmount_under "$exec_root"; unmount_under "/var/lib/docker-$node"
  rm -rf "$exec_root" "/var/lib/docker-$node" "/var/run/docker-$node.sock" "/var/run/docker-$node.pid"
  ip link delete "$(veth_of "$node")" 2>/dev/null || true
  ip netns delete "$node" 2>/dev/null || true
}
down() {
  local node
  kill_pid "$(cat "$STATE/registry.pid" 2>/dev/null || true)" docker-registry
  [ ! -s "$STATE/registry-dir" ] || rm -rf "$(cat "$STATE/registry-dir")"
  # each part is removed even if another is already gone: no `set -e` while tearing down
  for node in "${NODES[@]}"; do (set +e; node_down "$node") & done
  wait
  rules_del
  ip link delete "$BRIDGE" 2>/dev/null || true
  rm -rf "$STATE"
  say "down in $((SECONDS - START)) s"
}

# ---- status ----------------------------------------------------------------------------------
status() {   # `node NAME ADDRESS DOCKER_HOST ROLE STATE` lines, then `registry ADDRESS STATE`
  local node ok=0 role state
  for node in "${NODES[@]}"; do
    role=worker; [ "$node" != "$MANAGER" ] || role=manager
    if node_ready "$node"; then state=ready; else state=missing; ok=1; fi
    echo "node $node $(addr_of "$node") $(host_of "$node") $role $state"
  done
  if registry_answers; then echo "registry $REGISTRY up"; else echo "registry $REGISTRY missing"; ok=1; fi
  echo "gpu $GPU_NODE NVIDIA-GPU $GPU_COUNT"
  return $ok
}

up() {
  [ "$(id -u)" = 0 ] || die "run as root (it makes namespaces, links and iptables rules)"
  local cmd
  for cmd in ip nsenter unshare dockerd iptables curl "$DOCKER"; do
    command -v "$cmd" >/dev/null || die "$cmd not found (scripts/engine.sh installs docker.io and iproute2)"
  done
  mkdir -p "$STATE"
  bridge_up
  rules_add
  local node
  for node in "${NODES[@]}"; do node_net_up "$node"; node_engine_start "$node"; done
  wait_for 90 "all node engines answer" all_answer \
    || die "node engines did not answer in 90 s (see $STATE/dockerd-*.log)"
  swarm_up
  wait_for 90 "all nodes ready" all_ready || { on "$MANAGER" node ls >&2 || true; die "nodes not ready in 90 s"; }
  label_nodes
  registry_up
  say "up in $((SECONDS - START)) s"
  status
}

load() {   # load IMAGE [NODE...]: docker save (main engine) | docker load (node), if missing there
  local image=${1:?usage: swarm.sh load IMAGE [NODE...]} id node targets; shift
  targets=("$@"); [ $# -gt 0 ] || targets=("${NODES[@]}")
  id=$(timeout 60 "$DOCKER" image inspect --format '{{.Id}}' "$image") || die "no image $image on the main engine"
  for node in "${targets[@]}"; do
    if [ "$(on "$node" image inspect --format '{{.Id}}' "$image" 2>/dev/null)" = "$id" ]; then continue; fi
    timeout 600 "$DOCKER" save "$image" | DOCKER_HOST=$(host_of "$node") timeout 600 "$DOCKER" load -q >/dev/null
    say "loaded $image on $node"
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  load) shift; load "$@" ;;
  *) echo "usage: $0 up|down|status|load IMAGE [NODE...]" >&2; exit 2 ;;
esac
