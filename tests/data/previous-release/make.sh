#!/usr/bin/env bash
# Writes the data directory that `tests/all/compatibility.rs` opens: a host of the previous
# release (the binary given as $1) with the `visit` handler and the `visits` projection
# deployed, commands decided, plain appends and a projection caught up, stopped cleanly; then
# packs it as evhost-data.tar.gz beside this script, with what that host answered about it
# (the log, the projection's keys, a command's record) in log.json, visits.json and
# check-in-2.json. Run it once per release whose format the
# host must keep reading:
#
#   bash tests/data/previous-release/make.sh path/to/previous/evhost
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
old="$1"
cargo build --release --target wasm32-wasip2 -p visit -p visits --manifest-path "$root/Cargo.toml"
wasm="$root/target/wasm32-wasip2/release"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$old" serve --data "$work/evhost-data" --listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
pid=$!
until grep -q "listening on" "$work/out"; do sleep 0.1; done
url="$(sed -n 's/.*listening on //p' "$work/out")"
export EVHOST_URL="$url"
"$old" deploy "$wasm/visit.wasm"
"$old" deploy "$wasm/visits.wasm"
for n in 1 2 3; do
  curl -sf -X POST "$url/handlers/visit/commands" -H 'content-type: application/json' -d "{
    \"id\": \"check-in-$n\", \"stream\": \"visit-$n\", \"type\": \"CheckIn\",
    \"data\": {\"patient_id\": \"p-$n\", \"patient_name\": \"Patient $n\", \"complaint\": \"chest pain\",
               \"triage_level\": 2, \"room\": \"A-$n\", \"tests\": [\"ecg\"]}}" >/dev/null
done
# Rejected (its test has no result yet): a recorded rejection.
curl -s -o /dev/null -X POST "$url/handlers/visit/commands" -H 'content-type: application/json' -d '{
  "id": "check-out-1", "stream": "visit-1", "type": "CheckOut",
  "data": {"disposition": "discharged"}}'
for n in 1 2 3 4 5; do
  curl -sf -X POST "$url/streams/audit-$((n % 2))" -H 'content-type: application/json' \
    -d "{\"events\": [{\"id\": \"00000000-0000-4000-8000-00000000000$n\", \"type\": \"Noted\", \"data\": {\"n\": $n}}]}" >/dev/null
done
head="$(curl -sf "$url/events?limit=1" | sed -n 's/.*"head":\([0-9]*\).*/\1/p')"
# What the previous release answers, for the test to compare with.
curl -sf "$url/events?limit=1000" >"$here/log.json"
curl -sf "$url/projections/visits/keys?min_position=$head" >"$here/visits.json"
curl -sf "$url/commands/check-in-2" >"$here/check-in-2.json"
kill -TERM "$pid"
wait "$pid" || true
tar -C "$work" -czf "$here/evhost-data.tar.gz" evhost-data
ls -l "$here/evhost-data.tar.gz"
