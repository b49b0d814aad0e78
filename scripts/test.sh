#!/usr/bin/env bash
# Sets up what the tests need and runs them all: the Python and JavaScript SDKs' own tests
# (pytest, node's test runner), the Rust unit tests (among them the store's conformance suite on
# redb and on a throwaway PostgreSQL server), and the end-to-end tests that start the real
# evhost binary on a free port with a fresh data directory and deploy plugins built from this
# repository in Rust, Python and JavaScript (among them a run of scripts/demo.sh whose output is
# checked).
#
# The Rust code is compiled once: clippy's driver compiles the workspace's own crates for the
# tests and lints them on the way (dependencies are compiled once, not checked and then built).
# Suites that need nothing from that build (the guest tools' set-up and the SDKs' tests) run
# beside it, each with its output in target/test-logs/, shown if it fails. Every phase's time is
# printed at the end; the script fails, naming the suite, if any suite fails.
set -euo pipefail
cd "$(dirname "$0")/.."

logs=target/test-logs
rm -rf "$logs"
mkdir -p "$logs"
started=$SECONDS
failed=()
pending=()

# Sets cpu_now to the CPU time (user and system, whole seconds) this shell's finished children
# have used so far: beside the wall clock, it shows what a phase costs whatever else the machine
# is doing. (`times` must run in this shell, not in a command substitution.)
children_cpu() {
  local file="$logs/.times.$BASHPID"
  times > "$file"
  cpu_now=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/);
                           printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$file")
}

# phase NAME COMMAND...: runs a phase and records its time (marked & when it runs in the
# background, beside the main line of phases).
phase() {
  local name=$1 start=$SECONDS cpu status=0 mark=-
  shift
  [ "$BASHPID" = "$$" ] || mark="&"
  echo "==> $name"
  children_cpu
  cpu=$cpu_now
  "$@" || status=$?
  children_cpu
  echo "$mark $name $((SECONDS - start)) $((cpu_now - cpu)) $status" >> "$logs/timings"
  if [ "$status" -ne 0 ]; then
    echo "FAILED: $name (exit status $status)" >&2
    failed+=("$name")
  fi
  return "$status"
}

# in_background NAME COMMAND...: runs a phase beside the others, its output in $logs/NAME.log.
in_background() {
  local name=$1
  shift
  echo "==> $name (in the background; output in $logs/$name.log)"
  pending+=("$name")
  ( phase "$name" "$@" > "$logs/$name.log" 2>&1 ) &
  eval "pid_${name//-/_}=$!"
}

# await NAME: waits for a background phase; if it failed, shows its output and names it.
await() {
  local name=$1 pid_var="pid_${1//-/_}" status=0
  pending=("${pending[@]/$name/}")
  wait "${!pid_var}" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "----- output of $name -----" >&2
    cat "$logs/$name.log" >&2
    echo "----- FAILED: $name (exit status $status; output in $logs/$name.log) -----" >&2
    failed+=("$name")
  fi
  return 0
}

# Prints how long each phase took and what failed; the exit status says whether all passed.
report() {
  echo
  echo "Phase timings (wall clock, and CPU time used; & ran in the background):"
  while read -r mark name seconds cpu status; do
    printf '  %s %-18s %5ss  cpu %5ss%s\n' "${mark/-/ }" "$name" "$seconds" "$cpu" \
      "$([ "$status" -eq 0 ] || echo "  FAILED (exit status $status)")"
  done < "$logs/timings"
  printf '    %-18s %5ss\n' total "$((SECONDS - started))"
  if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
  fi
}
# After a failure, the phases still running in the background are waited for and reported too.
on_exit() {
  local status=$? name
  if [ "$status" -ne 0 ]; then
    for name in ${pending[@]+"${pending[@]}"}; do
      [ -z "$name" ] || await "$name"
    done
    report
  fi
  exit "$status"
}
trap on_exit EXIT

# The toolchain is pinned by rust-toolchain.toml; rustup installs it on first use. Plugins and
# the tests' guest fixtures are built for wasm32-wasip2, whose standard library rustup adds once
# (rust-toolchain.toml's `targets` does not install it into a toolchain that is already there).
cargo --version
phase wasm-target rustup target add wasm32-wasip2 \
  --toolchain "$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"

# componentize-py in a virtual environment and componentize-js from npm, for the Python and
# JavaScript plugins and SDKs; then the SDKs' own tests. The end-to-end tests need the tools too,
# and wait for this phase before they start.
sdk_tests() {
  phase guest-tools bash scripts/guest-tools.sh || return
  phase python-sdk target/guest-tools/python/bin/python -m pytest -q sdk/python/tests || return
  phase js-sdk bash -c 'cd sdk/js && npm test --silent'
}
in_background sdk-tests sdk_tests
# PostgreSQL's server binaries, from Debian, for the PostgreSQL backend's conformance suite and
# the end-to-end tests of hosts on PostgreSQL (each test run starts its own throwaway server).
in_background postgres-tools bash scripts/postgres-tools.sh

phase fmt cargo fmt --all -- --check

# Lints and builds in one go: the workspace's crates are compiled by clippy's driver (which
# compiles as rustc does, and lints), with warnings as errors, for every target `cargo clippy
# --all-targets` looks at; dependencies are compiled by rustc as usual. The same wrapper stays
# set for the run, so that cargo finds the build fresh; the tests' own nested builds (guests,
# the guides) leave it out.
export RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/clippy-rustc.sh"
phase clippy-and-build cargo test --workspace --all-targets --locked --no-run

await sdk-tests
await postgres-tools
[ "${#failed[@]}" -eq 0 ] || exit 1

# The end-to-end tests spend much of their time waiting for outcomes (timers, retries, restarts,
# a plugin's budget running out), so twice as many run at once as there are cores.
phase rust-tests cargo test --workspace --locked -- --test-threads "$(($(nproc) * 2))"
report
