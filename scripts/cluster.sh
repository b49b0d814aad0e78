#!/usr/bin/env bash
# A local evhost cluster on loopback: 3 etcd members, 3 PostgreSQL servers under Patroni with
# synchronous replication, and 3 evhost nodes sharing the database, with the example hospital
# plugins deployed. For trying the cluster out and for fault tests on one machine: every server
# trusts loopback connections without a password, so never expose it.
#
#   scripts/cluster.sh up       installs what is missing (Debian's postgresql, patroni, etcd),
#                               builds evhost and the plugins, starts everything, deploys
#   scripts/cluster.sh status   the evhost nodes (evhost cluster) and the PostgreSQL members
#   scripts/cluster.sh down     stops everything it started, by PID (data is kept)
#   scripts/cluster.sh clean    down, then removes the cluster's directory
#
# EVHOST_CLUSTER_DIR (default target/cluster) holds the data, logs and PID files;
# EVHOST_CLUSTER_PORT (default 24000) is the first of the ports it uses: etcd clients at
# PORT+0..2 and peers at PORT+10..12, PostgreSQL at PORT+100..102, Patroni's REST API at
# PORT+200..202, evhost at PORT+300..302.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath -m "${EVHOST_CLUSTER_DIR:-target/cluster}")
base=${EVHOST_CLUSTER_PORT:-24000}
pids=$dir/pids
nodes=(0 1 2)

log() { echo "cluster: $*"; }

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)

# The server's binaries, newest first (Debian's layout).
pg_bin() { find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1; }

install_missing() {
  local missing=()
  [ -n "$(pg_bin)" ] || missing+=(postgresql)
  command -v patroni > /dev/null || missing+=(patroni)
  command -v etcd > /dev/null || missing+=(etcd-server etcd-client)
  [ "${#missing[@]}" -eq 0 ] && return
  log "installing ${missing[*]} from Debian"
  local policy=/usr/sbin/policy-rc.d created=
  # The packages' scripts would start system services; nothing here needs them.
  if [ ! -e "$policy" ]; then
    "${as_root[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
    created=yes
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" > /dev/null
  [ -z "$created" ] || "${as_root[@]}" rm -f "$policy"
}

# As root, PostgreSQL (and so Patroni) must run as the postgres user: setpriv becomes it and
# then executes the program, so the PID recorded is the program's.
as_postgres=()
[ "$(id -u)" -ne 0 ] || as_postgres=(setpriv --reuid postgres --regid postgres --init-groups --)

# start NAME COMMAND...: runs COMMAND (a program, not a shell function, so that the PID is the
# program's) in the background, its output in logs/NAME.log, its PID in pids/NAME.pid.
start() {
  local name=$1
  shift
  "$@" > "$dir/logs/$name.log" 2>&1 &
  echo $! > "$pids/$name.pid"
}

running() { [ -f "$pids/$1.pid" ] && kill -0 "$(cat "$pids/$1.pid")" 2> /dev/null; }

# wait_for WHAT COMMAND...: until COMMAND succeeds, for at most two minutes.
wait_for() {
  local what=$1 deadline=$((SECONDS + 120))
  shift
  until "$@" > /dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "cluster: gave up waiting for $what" >&2; exit 1; }
    sleep 0.2
  done
}

etcd_hosts() { local i; for i in "${nodes[@]}"; do printf '127.0.0.1:%s,' $((base + i)); done | sed 's/,$//'; }
store_url() {
  local hosts i
  hosts=$(for i in "${nodes[@]}"; do printf '127.0.0.1:%s,' $((base + 100 + i)); done | sed 's/,$//')
  echo "postgres://postgres@$hosts/postgres?target_session_attrs=read-write&connect_timeout=5"
}

start_etcd() {
  local i cluster
  cluster=$(for i in "${nodes[@]}"; do printf 'e%s=http://127.0.0.1:%s,' "$i" $((base + 10 + i)); done | sed 's/,$//')
  for i in "${nodes[@]}"; do
    running "etcd$i" && continue
    start "etcd$i" etcd --name "e$i" --data-dir "$dir/etcd$i" \
      --listen-client-urls "http://127.0.0.1:$((base + i))" \
      --advertise-client-urls "http://127.0.0.1:$((base + i))" \
      --listen-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token evhost
  done
  wait_for "etcd" env ETCDCTL_API=3 etcdctl --endpoints "$(etcd_hosts)" endpoint health
}

patroni_config() {
  local i=$1 bin
  bin=$(pg_bin)
  cat <<EOF
scope: evhost
name: pg$i
restapi:
  listen: 127.0.0.1:$((base + 200 + i))
  connect_address: 127.0.0.1:$((base + 200 + i))
etcd3:
  hosts: $(etcd_hosts)
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
    - encoding: UTF8
    - no-locale
  pg_hba:
    - local all all trust
    - host replication all 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$((base + 100 + i))
  connect_address: 127.0.0.1:$((base + 100 + i))
  data_dir: $dir/pg$i
  bin_dir: $bin
  pgpass: $dir/pg$i.pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
  parameters:
    unix_socket_directories: $dir/sockets
    fsync: "on"
EOF
}

start_patroni() {
  local i
  for i in "${nodes[@]}"; do
    running "patroni$i" && continue
    patroni_config "$i" > "$dir/patroni$i.yml"
    start "patroni$i" "${as_postgres[@]}" patroni "$dir/patroni$i.yml"
  done
  wait_for "a PostgreSQL primary" primary_port
  wait_for "a synchronous standby" sync_standby
}

# The port of the member Patroni says is the primary.
primary_port() {
  local i
  for i in "${nodes[@]}"; do
    if curl -fsS -o /dev/null "http://127.0.0.1:$((base + 200 + i))/primary"; then
      echo $((base + 100 + i))
      return 0
    fi
  done
  return 1
}

sync_standby() {
  local i
  for i in "${nodes[@]}"; do
    curl -fsS -o /dev/null "http://127.0.0.1:$((base + 200 + i))/sync" && return 0
  done
  return 1
}

start_evhost() {
  local i
  for i in "${nodes[@]}"; do
    running "evhost$i" && continue
    start "evhost$i" target/release/evhost serve --store "$(store_url)" \
      --data "$dir/evhost$i" --listen "127.0.0.1:$((base + 300 + i))"
  done
  for i in "${nodes[@]}"; do
    wait_for "evhost node $i" curl -fsS "http://127.0.0.1:$((base + 300 + i))/health"
  done
}

deploy_plugins() {
  local plugin
  for plugin in visit visits rooms survey visit-survey; do
    target/release/evhost deploy --url "http://127.0.0.1:$((base + 300))" \
      "target/wasm32-wasip2/release/${plugin//-/_}.wasm" > /dev/null
  done
}

up() {
  install_missing
  toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
  rustup target add wasm32-wasip2 --toolchain "$toolchain" > /dev/null
  cargo build --release --locked -p evhost
  cargo build --release --locked --target wasm32-wasip2 \
    -p visit -p visits -p rooms -p survey -p visit-survey
  mkdir -p "$dir/logs" "$pids" "$dir/sockets"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$dir" "$dir/sockets"
  log "starting 3 etcd members"
  start_etcd
  log "starting 3 PostgreSQL servers under Patroni (synchronous mode)"
  start_patroni
  log "starting 3 evhost nodes"
  start_evhost
  log "deploying the hospital plugins"
  deploy_plugins
  status
}

status() {
  local i
  echo "PostgreSQL (Patroni):"
  for i in "${nodes[@]}"; do
    printf '  pg%s 127.0.0.1:%s  %s\n' "$i" $((base + 100 + i)) \
      "$(curl -fsS "http://127.0.0.1:$((base + 200 + i))/patroni" 2> /dev/null |
        sed -n 's/.*"role": *"\([a-z_]*\)".*/\1/p' || echo down)"
  done
  echo "evhost nodes: http://127.0.0.1:$((base + 300)), :$((base + 301)), :$((base + 302))"
  echo "  their store: $(store_url)"
  target/release/evhost cluster --url "http://127.0.0.1:$((base + 300))" 2> /dev/null ||
    echo "  (node 0 does not answer)"
}

# Stops, in order, the evhost nodes, Patroni (which stops its PostgreSQL) and etcd, each by its
# PID: SIGTERM, then SIGKILL after 30 s.
down() {
  local name pid deadline
  for name in evhost0 evhost1 evhost2 patroni0 patroni1 patroni2 etcd0 etcd1 etcd2; do
    [ -f "$pids/$name.pid" ] || continue
    pid=$(cat "$pids/$name.pid")
    if kill -0 "$pid" 2> /dev/null; then
      kill -TERM "$pid" 2> /dev/null || true
      deadline=$((SECONDS + 30))
      while kill -0 "$pid" 2> /dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
      kill -KILL "$pid" 2> /dev/null || true
      log "stopped $name ($pid)"
    fi
    rm -f "$pids/$name.pid"
  done
  # Patroni's PostgreSQL outlives a Patroni that was killed: stop what is left by its postmaster PID.
  for i in "${nodes[@]}"; do
    if [ -f "$dir/pg$i/postmaster.pid" ]; then
      pid=$(head -n 1 "$dir/pg$i/postmaster.pid")
      kill -0 "$pid" 2> /dev/null && kill -INT "$pid" 2> /dev/null && log "stopped PostgreSQL pg$i ($pid)"
    fi
  done
  return 0
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  down) down ;;
  clean) down; rm -rf "$dir" ;;
  *) echo "usage: scripts/cluster.sh up|status|down|clean" >&2; exit 2 ;;
esac
