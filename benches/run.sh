#!/usr/bin/env bash
# Benchmarks evhost against PostgreSQL and NATS JetStream on this machine, and its plugins (the
# visit handler, the visits projection, replays and switches of their second versions, the
# projection stays in Rust, Python and JavaScript), in one run:
#
#   bash benches/run.sh [--quick] [more evhost-bench options, see --help]
#
#   --quick               one round, 3 s per timed workload (default: 3 rounds of 5 s)
#   --systems LIST        what to run, comma-separated, of evhost, postgres, nats, plugins,
#                         projections, versions, languages (default: all); PostgreSQL and NATS
#                         are installed and started only if listed, so `bash benches/run.sh
#                         --quick --systems plugins` runs just the handler benchmarks, in about
#                         half a minute once built, and `--systems projections` the projection's
#                         (filling its log of a million events takes about a minute; `versions`
#                         fills the same log and sends 100 000 commands more; `languages`
#                         installs the Python and JavaScript SDKs' tools with
#                         scripts/guest-tools.sh and builds stays-py, stays-js and ten copies of
#                         stays-py into target/bench-guests, minutes the first time)
#   --memory-events N     also fill a store with N events and report evhost's memory
#   --baseline BINARY     an earlier build of evhost takes the evhost, plugins and projections
#                         workloads too, in the same rounds, right after this build's
#   --systems cluster     the cluster benchmark alone (never part of the default set): evhost on
#                         PostgreSQL with 1 and 3 nodes against PostgreSQL alone (gapless and
#                         sequence), evhost on redb beside them, all on a PostgreSQL primary
#                         with a synchronous standby this script starts; appends, batches, the
#                         race, reading, visit commands and the visits projection's catch-up
#   --systems stress      the stress benchmark alone (never part of the default set): the worst
#                         loads of clients and plugins, and other clients' p99 under each; with
#                         --stress-baseline BINARY an earlier build takes the same loads too
#
# Installs PostgreSQL and nats-server from Debian's packages if they are missing, builds the
# release binaries and the visit and visits components (wasm32-wasip2, adding that target to the toolchain if
# needed), starts a throwaway PostgreSQL cluster and a NATS server on loopback, runs evhost-bench
# (which starts evhost itself), and stops and removes all of it on exit, failure included. The
# report is printed and written to target/bench-report.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}

log() { printf 'run.sh: %s\n' "$*" >&2; }

# The value of evhost-bench's --systems among this script's arguments; empty means all.
systems=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
    --systems=*) systems=${args[i]#--systems=} ;;
    --systems) systems=${args[i + 1]:-} ;;
    esac
done

# wants SYSTEM: whether this run benchmarks SYSTEM.
wants() { [ -z "$systems" ] || [[ ",$systems," == *",$1,"* ]]; }

# The cluster benchmark runs only when asked for by name; it needs PostgreSQL with a standby.
cluster=""
if [[ ",$systems," == *",cluster,"* ]]; then cluster=yes; fi
wants_postgres() { wants postgres || [ -n "$cluster" ]; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# PostgreSQL refuses to run as root, so as root its commands run as the postgres user.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The binaries of the newest PostgreSQL installed.
postgres_bin() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

install_missing() {
    local missing=()
    if wants_postgres; then postgres_bin >/dev/null || missing+=(postgresql); fi
    if wants nats; then command -v nats-server >/dev/null || missing+=(nats-server); fi
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists only if installing from the current ones fails.
    if ! as_root apt-get install -y "${missing[@]}"; then
        as_root apt-get update
        as_root apt-get install -y "${missing[@]}"
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        if ! port_open "$port"; then
            echo "$port"
            return
        fi
    done
    log "found no free port"
    return 1
}

# wait_for SECONDS COMMAND...: runs COMMAND every 100 ms until it succeeds or time is up.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
        sleep 0.1
    done
}

# stop_pid PID NAME: asks the process to exit, waits up to 10 s, then kills it.
stop_pid() {
    local pid=$1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    wait_for 10 bash -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null || true
}

work=""
bench_pid=""
nats_pid=""
postgres_started=""
standby_started=""
cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    [ -n "$bench_pid" ] && stop_pid "$bench_pid" evhost-bench
    local pid_file
    for pid_file in "$work"/evhost/evhost*.pid; do
        [ -f "$pid_file" ] && stop_pid "$(cat "$pid_file")" evhost
    done
    [ -n "$nats_pid" ] && stop_pid "$nats_pid" nats-server
    if [ -n "$standby_started" ]; then
        as_postgres "$postgres/pg_ctl" -D "$work/standby" -m fast -w -t 30 stop >/dev/null ||
            log "the standby did not stop; see $work/postgres-run/standby.log"
    fi
    if [ -n "$postgres_started" ]; then
        as_postgres "$postgres/pg_ctl" -D "$work/postgres" -m fast -w -t 30 stop >/dev/null ||
            log "PostgreSQL did not stop; see $work/postgres-run/postgres.log"
    fi
    [ -n "$work" ] && rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Where the Python and JavaScript components of the languages benchmark are built.
guests=$target/bench-guests

# fresh OUT INPUT...: whether OUT exists and no file of the INPUTs (files or directories) is
# newer, so that a component is built again only when its source, its SDK or its tools changed.
fresh() {
    local out=$1
    shift
    [ -f "$out" ] &&
        [ -z "$(find "$@" -name node_modules -prune -o -newer "$out" -print -quit 2>/dev/null)" ]
}

python_tools=$target/guest-tools/python

# build_python SOURCE OUT: builds a Python plugin with the Python SDK; a failed build leaves no
# OUT, so the benchmark reports it missing instead of measuring an old one.
build_python() {
    fresh "$2" "$1" sdk/python "$python_tools/bin/componentize-py" && return
    rm -f "$2"
    "$python_tools/bin/python" -m evhost build "$1" -o "$2" >/dev/null ||
        log "$1 did not build"
}

# build_javascript SOURCE OUT: the same with the JavaScript SDK.
build_javascript() {
    fresh "$2" "$1" sdk/js && return
    rm -f "$2"
    node sdk/js/bin/evhost-js.js build "$1" -o "$2" >/dev/null || log "$1 did not build"
}

# The components of the languages benchmark: stays-py, stays-js, and ten copies of stays-py
# named stays-py-1 … stays-py-10 (distinct plugins, for the memory of ten), built two at a time.
build_guests() {
    local n first second
    mkdir -p "$guests/ten"
    if ! bash scripts/guest-tools.sh; then
        log "the Python and JavaScript tools did not install; benchmarking Rust alone"
        rm -f "$guests"/*.wasm "$guests"/ten/*.wasm
        return
    fi
    log "building stays-py, stays-js and ten copies of stays-py into $guests"
    build_python plugins/python/stays/stays.py "$guests/stays-py.wasm" &
    first=$!
    build_javascript plugins/js/stays/stays.js "$guests/stays-js.wasm" &
    second=$!
    wait "$first" "$second"
    for n in $(seq 10); do
        mkdir -p "$guests/ten/$n"
        # Rewritten only when it changes, so that an unchanged copy is not built again.
        sed "s/\"stays-py\"/\"stays-py-$n\"/" plugins/python/stays/stays.py >"$guests/ten/$n/stays.py.new"
        if cmp -s "$guests/ten/$n/stays.py.new" "$guests/ten/$n/stays.py"; then
            rm "$guests/ten/$n/stays.py.new"
        else
            mv "$guests/ten/$n/stays.py.new" "$guests/ten/$n/stays.py"
        fi
    done
    for n in 1 3 5 7 9; do
        build_python "$guests/ten/$n/stays.py" "$guests/ten/stays-py-$n.wasm" &
        first=$!
        build_python "$guests/ten/$((n + 1))/stays.py" "$guests/ten/stays-py-$((n + 1)).wasm" &
        second=$!
        wait "$first" "$second"
    done
}

install_missing

log "building"
evhost_error=()
if ! cargo build --release -p evhost -p evhost-bench; then
    # Measure the others anyway; the report says why evhost is missing.
    log "evhost did not build; benchmarking the other systems"
    cargo build --release -p evhost-bench
    evhost_error=(--evhost-error "cargo build --release -p evhost failed")
fi
plugins_error=()
if wants plugins || wants projections || wants versions || [ -n "$cluster" ]; then
    # The toolchain is the one rust-toolchain.toml names; its wasm32-wasip2 target may be missing.
    toolchain=$(sed -n 's/^channel *= *"\(.*\)"$/\1/p' rust-toolchain.toml)
    build_visit=(cargo build --release --locked --target wasm32-wasip2 -p visit -p visits
        -p visit-v2 -p visits-v2)
    if ! { rustup target add wasm32-wasip2 --toolchain "$toolchain" && "${build_visit[@]}"; }; then
        log "the visit components did not build; benchmarking without them"
        plugins_error=(--plugins-error "${build_visit[*]} failed")
    fi
fi

# The stress benchmark runs only when asked for by name, with the hostile fixtures as its loads.
if [[ ",$systems," == *",stress,"* ]]; then
    toolchain=$(sed -n 's/^channel *= *"\(.*\)"$/\1/p' rust-toolchain.toml)
    rustup target add wasm32-wasip2 --toolchain "$toolchain"
    cargo build --release --locked --target wasm32-wasip2 -p fixture-hostile -p fixture-hostile-projection
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/evhost-bench.XXXXXX")
chmod 755 "$work"
mkdir "$work/postgres" "$work/postgres-run" "$work/nats" "$work/evhost"
if [ -n "$cluster" ]; then
    mkdir -m 700 "$work/standby"
fi
if [ "$(id -u)" -eq 0 ] && wants_postgres; then
    chown postgres: "$work/postgres" "$work/postgres-run"
    if [ -n "$cluster" ]; then chown postgres: "$work/standby"; fi
fi

# The servers evhost-bench is to reach, as its options.
services=()

if wants_postgres; then
    postgres=$(postgres_bin)
    postgres_port=$(free_port)
    log "starting PostgreSQL on 127.0.0.1:$postgres_port"
    as_postgres "$postgres/initdb" -D "$work/postgres" -U postgres -A trust -E UTF8 --no-locale \
        >"$work/initdb.log" 2>&1 || {
        cat "$work/initdb.log" >&2
        exit 1
    }
    postgres_started=yes
    as_postgres "$postgres/pg_ctl" -D "$work/postgres" -l "$work/postgres-run/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $postgres_port -c unix_socket_directories=$work/postgres-run -c fsync=on -c synchronous_commit=on" \
        start >/dev/null || {
        cat "$work/postgres-run/postgres.log" >&2
        exit 1
    }
    services+=(--postgres "host=127.0.0.1 port=$postgres_port user=postgres dbname=postgres")
    services+=(--postgres-url "postgres://postgres@127.0.0.1:$postgres_port/postgres")
fi

# The cluster benchmark's PostgreSQL has a synchronous standby: a copy of the primary taken with
# pg_basebackup, streaming from it, and named in synchronous_standby_names, so that every
# commit waits until the standby has it on disk.
if [ -n "$cluster" ]; then
    standby_port=$(free_port)
    log "starting a synchronous standby on 127.0.0.1:$standby_port"
    as_postgres "$postgres/pg_basebackup" -h 127.0.0.1 -p "$postgres_port" -U postgres \
        -D "$work/standby" -R -X stream >"$work/basebackup.log" 2>&1 || {
        cat "$work/basebackup.log" >&2
        exit 1
    }
    standby_started=yes
    as_postgres "$postgres/pg_ctl" -D "$work/standby" -l "$work/postgres-run/standby.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $standby_port -c unix_socket_directories=$work/postgres-run -c cluster_name=standby" \
        start >/dev/null || {
        cat "$work/postgres-run/standby.log" >&2
        exit 1
    }
    primary_sql() {
        as_postgres "$postgres/psql" -X -q -t -A -h 127.0.0.1 -p "$postgres_port" -U postgres \
            -d postgres -c "$1"
    }
    primary_sql "alter system set synchronous_standby_names = '*'" >/dev/null
    primary_sql "select pg_reload_conf()" >/dev/null
    synchronous() { [ "$(primary_sql "select count(*) from pg_stat_replication where sync_state = 'sync'")" = 1 ]; }
    wait_for 60 synchronous || {
        log "the standby did not become synchronous"
        exit 1
    }
fi

if wants nats; then
    nats_port=$(free_port)
    log "starting nats-server on 127.0.0.1:$nats_port"
    nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >"$work/nats.log" 2>&1 &
    nats_pid=$!
    wait_for 30 port_open "$nats_port" || {
        cat "$work/nats.log" >&2
        exit 1
    }
    services+=(--nats "127.0.0.1:$nats_port" --nats-pid "$nats_pid")
fi

languages_error=()
if wants languages; then
    if ! cargo build --release --locked --target wasm32-wasip2 -p stays; then
        log "the Rust stays did not build; benchmarking without the languages"
        languages_error=(--languages-error "cargo build --release --locked --target wasm32-wasip2 -p stays failed")
    else
        build_guests
    fi
fi

log "running evhost-bench"
"$target/release/evhost-bench" \
    --evhost "$target/release/evhost" \
    --visit-wasm "$target/wasm32-wasip2/release/visit.wasm" \
    --visits-wasm "$target/wasm32-wasip2/release/visits.wasm" \
    --work-dir "$work/evhost" \
    "${services[@]}" \
    --report "$target/bench-report.md" \
    --command "bash benches/run.sh${*:+ $*}" \
    "${evhost_error[@]}" \
    "${plugins_error[@]}" \
    --stays-wasm "$target/wasm32-wasip2/release/stays.wasm" \
    --stays-py-wasm "$guests/stays-py.wasm" \
    --stays-js-wasm "$guests/stays-js.wasm" \
    --stays-py-copies "$guests/ten" \
    "${languages_error[@]}" \
    "$@" &
bench_pid=$!
wait "$bench_pid"
