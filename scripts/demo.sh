#!/usr/bin/env bash
# The main job, end to end: build evhost, start it on its embedded default (one redb file in a
# data directory), drive the example domain (hospital visits) through the CLI and the HTTP API,
# follow the live log, then stop the host cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p evhost
evhost=target/release/evhost
data=$(mktemp -d)
log="$data/host.log"
trap 'kill "$host" 2>/dev/null || true; wait "$host" 2>/dev/null || true; rm -rf "$data"' EXIT

"$evhost" serve --data "$data/evhost-data" --listen 127.0.0.1:0 > "$data/stdout" 2> "$log" &
host=$!
for _ in $(seq 100); do
  url=$(sed -n 's/^evhost listening on //p' "$data/stdout" 2>/dev/null || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "the host did not start" >&2; exit 1; }
export EVHOST_URL=$url
echo "== evhost is listening on $url"

echo "== follow the live log of the visit category in the background"
"$evhost" tail --from 1 --category visit > "$data/tail" &
tail_pid=$!

echo "== a patient checks in, is triaged and seen; a second visit starts"
"$evhost" append visit-1001 --type PatientCheckedIn --expected-version no_stream \
  --data '{"patient":"P-77","reason":"chest pain","arrived_at":"2026-11-23T08:02:00Z"}'
"$evhost" append visit-1001 --type TriageAssigned --expected-version 1 --data '{"level":2,"nurse":"N-4"}'
"$evhost" append visit-1001 --type PhysicianSeen --expected-version 2 --data '{"physician":"D-9"}'
"$evhost" append visit-1002 --type PatientCheckedIn --expected-version no_stream \
  --data '{"patient":"P-78","reason":"sprained ankle","arrived_at":"2026-11-23T08:05:00Z"}'
"$evhost" append billing-1001 --type InvoiceOpened --data '{"visit":"visit-1001"}'

echo "== a stale writer is refused: the stream moved on (409 wrong_expected_version)"
if "$evhost" append visit-1001 --type PatientDischarged --expected-version 1 --data '{}'; then
  echo "expected a conflict" >&2; exit 1
fi

echo "== a retried append with the same event id is answered with the original result"
"$evhost" append visit-1002 --type TriageAssigned --id triage-1002 --data '{"level":4,"nurse":"N-2"}'
"$evhost" append visit-1002 --type TriageAssigned --id triage-1002 --data '{"level":4,"nurse":"N-2"}'

echo "== visit-1001, forward"
"$evhost" read visit-1001
echo "== the global log, check-ins only"
"$evhost" read --type PatientCheckedIn
echo "== the host's health"
curl -s "$url/health"; echo

sleep 1
kill "$tail_pid" 2>/dev/null || true
echo "== what the live follower saw (category visit)"
cat "$data/tail"

echo "== stopping the host (SIGTERM: requests finish, the database closes cleanly)"
kill -TERM "$host"
wait "$host"
grep -E "stopped cleanly" "$log"
