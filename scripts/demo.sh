#!/usr/bin/env bash
# The main job, end to end: build evhost and the example handler, start the host on its embedded
# default (one redb file in a data directory), deploy the `visit` handler, drive hospital visits
# through commands (CLI and plain HTTP), show rejections, idempotent retries and the live log,
# restart the host to show the plugin coming back from its compiled cache, then stop cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
rustup target add wasm32-wasip2 --toolchain "$toolchain"
cargo build --release --locked -p evhost
cargo build --release --locked --target wasm32-wasip2 -p visit
evhost=target/release/evhost
plugin=target/wasm32-wasip2/release/visit.wasm
data=$(mktemp -d)
log="$data/host.log"
host=
tail_pid=
trap 'kill $tail_pid $host 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"' EXIT

start_host() {
  : > "$data/stdout"
  "$evhost" serve --data "$data/evhost-data" --listen 127.0.0.1:0 > "$data/stdout" 2>> "$log" &
  host=$!
  url=
  for _ in $(seq 300); do
    url=$(sed -n 's/^evhost listening on //p' "$data/stdout" 2>/dev/null || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { cat "$log"; echo "the host did not start" >&2; exit 1; }
  export EVHOST_URL=$url
}

# Runs a command that must be refused, and shows the refusal.
refused() {
  if "$@" 2> "$data/refusal"; then
    echo "expected a refusal: $*" >&2; exit 1
  fi
  sed 's/^/   refused: /' "$data/refusal"
}

start_host
echo "== evhost is listening on $EVHOST_URL"

echo "== deploy the visit handler ($(wc -c < "$plugin") bytes of WebAssembly)"
"$evhost" deploy "$plugin"
"$evhost" plugins

echo "== follow the live log of the visit category in the background"
"$evhost" tail --from 1 --category visit > "$data/tail" &
tail_pid=$!

echo "== Ana checks in: one command carries the whole visit, several events are appended at once"
"$evhost" command visit visit-1001 CheckIn --id checkin-1001 '{"patient_id": "p-1001",
  "patient_name": "Ana Lima", "complaint": "chest pain", "triage_level": 2, "room": "A-12",
  "physician": "dr-okafor", "tests": ["ecg", "troponin"]}'

echo "== a client retries the check-in with the same command id: the recorded outcome, nothing new"
"$evhost" command visit visit-1001 CheckIn --id checkin-1001 '{"patient_id": "p-1001",
  "patient_name": "Ana Lima", "complaint": "chest pain", "triage_level": 2, "room": "A-12",
  "physician": "dr-okafor", "tests": ["ecg", "troponin"]}'

echo "== the handler's rules refuse what makes no sense (422 command_rejected)"
refused "$evhost" command visit visit-1001 AssignRoom '{"room": "A-12"}'
refused "$evhost" command visit visit-1001 CheckOut '{"disposition": "discharged"}'
refused "$evhost" command visit visit-2002 RecordTest '{"test": "ecg", "result": "normal"}'

echo "== results come in, the patient moves and leaves"
"$evhost" command visit visit-1001 RecordTest '{"test": "ecg", "result": "ST elevation", "abnormal": true}'
"$evhost" command visit visit-1001 RecordTest '{"test": "troponin", "result": "0.9 ng/mL", "abnormal": true}'
"$evhost" command visit visit-1001 AssignRoom '{"room": "CATH-1"}'
"$evhost" command visit visit-1001 AddNote '{"author": "dr-okafor", "text": "STEMI; cath lab notified"}'
"$evhost" command visit visit-1001 CheckOut --metadata '{"correlation_id": "transfer-77"}' \
  '{"disposition": "admitted", "summary": "to cardiology"}'

echo "== a second visit, over plain HTTP"
curl -s -X POST "$EVHOST_URL/handlers/visit/commands" -H 'content-type: application/json' \
  -d '{"id": "checkin-1002", "stream": "visit-1002", "type": "CheckIn", "data": {"patient_id": "p-1002",
       "patient_name": "Bo Chen", "complaint": "sprained ankle", "triage_level": 4, "room": "C-2",
       "tests": ["x-ray"]}}'
echo
echo "== what the host recorded about the check-in command"
curl -s "$EVHOST_URL/commands/checkin-1002"; echo

echo "== visit-1001 as stored"
"$evhost" read visit-1001

echo "== restart the host: the handler comes back from its compiled cache, without compiling"
kill -TERM "$host"; wait "$host"
start_host
curl -s "$EVHOST_URL/metrics" | grep -E '^evhost_plugin_(compilations|cache_loads)_total'
"$evhost" command visit visit-1002 RecordTest '{"test": "x-ray", "result": "no fracture"}'
"$evhost" command visit visit-1002 CheckOut '{"disposition": "discharged"}'

echo "== the global log, check-ins only"
"$evhost" read --type PatientCheckedIn
echo "== the host's health"
curl -s "$EVHOST_URL/health"; echo

sleep 1
kill "$tail_pid" 2>/dev/null || true
echo "== what the live follower saw (category visit; it reconnected across the restart)"
cat "$data/tail"

echo "== stopping the host (SIGTERM: requests finish, the database closes cleanly)"
kill -TERM "$host"
wait "$host"
grep -E "stopped cleanly" "$log" | tail -1
