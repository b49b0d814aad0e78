#!/usr/bin/env bash
# Faults of the PostgreSQL primary under load, against a cluster that `scripts/cluster.sh up`
# started, with what they cost and a check that they lost nothing:
#
#   bash benches/failover.sh [kill|sigstop-patroni] [SECONDS]
#
#   kill              kill -9 the primary's Patroni and postmaster (a crash of its machine)
#   sigstop-patroni   SIGSTOP the primary's Patroni (a primary that does not know it is
#                     deposed): another member takes over once the leader key expires; the
#                     stopped Patroni is continued once the new primary serves, finds itself
#                     deposed and demotes its PostgreSQL
#
# Four writers append one event at a time, each through the evhost nodes in turn, for SECONDS
# (default 60), the fault 5 s in. Then the whole log is read from the first node and checked:
# positions 1..head without a gap, every acknowledged append there, no event twice. Prints the
# longest time without an acknowledged append and the check's verdict; exits 1 if it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
fault=${1:-kill}
seconds=${2:-60}
dir=$(realpath -m "${EVHOST_CLUSTER_DIR:-target/cluster}")
base=${EVHOST_CLUSTER_PORT:-24000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

node_url() { echo "http://127.0.0.1:$((base + 300 + $1))"; }
patroni_url() { echo "http://127.0.0.1:$((base + 200 + $1))"; }
# The member whose Patroni says it is the primary (a stopped Patroni does not answer).
primary() {
  local i
  for i in 0 1 2; do
    if curl -fs -m 1 -o /dev/null "$(patroni_url "$i")/primary"; then echo "$i"; return; fi
  done
}

for i in 0 1 2; do
  curl -fsS -m 5 -o /dev/null "$(node_url "$i")/health" ||
    { echo "failover: evhost node $i does not answer; run scripts/cluster.sh up first" >&2; exit 1; }
done
old=$(primary)
[ -n "$old" ] || { echo "failover: no PostgreSQL primary" >&2; exit 1; }

# writer N: appends until the deadline; each acknowledged id goes to acked-N with the time.
writer() {
  local n=$1 count=0 deadline=$(($(date +%s) + seconds)) code id
  while [ "$(date +%s)" -lt "$deadline" ]; do
    count=$((count + 1))
    id="failover-$n-$count-$$"
    code=$(curl -s -m 35 -o /dev/null -w '%{http_code}' -X POST \
      "$(node_url $(((n + count) % 3)))/streams/failover-$n" \
      -d "{\"events\":[{\"id\":\"$id\",\"type\":\"Tick\",\"data\":{}}]}" || true)
    if [ "$code" = 201 ] || [ "$code" = 200 ]; then echo "$(date +%s%N) $id" >> "$work/acked-$n"; fi
  done
}
writers=()
for n in 0 1 2 3; do writer "$n" & writers+=($!); done

sleep 5
echo "failover: $fault of pg$old at $(date +%T.%N)"
case $fault in
  kill)
    kill -9 "$(cat "$dir/pids/patroni$old.pid")" "$(head -1 "$dir/pg$old/postmaster.pid")"
    ;;
  sigstop-patroni)
    kill -STOP "$(cat "$dir/pids/patroni$old.pid")"
    until new=$(primary) && [ -n "$new" ] && [ "$new" != "$old" ]; do sleep 0.2; done
    echo "failover: pg$new is the primary at $(date +%T.%N)"
    # Appends go on against the new primary before the old Patroni wakes.
    sleep 10
    kill -CONT "$(cat "$dir/pids/patroni$old.pid")"
    echo "failover: patroni$old continued at $(date +%T.%N)"
    ;;
  *) echo "failover: unknown fault $fault (kill or sigstop-patroni)" >&2; exit 1 ;;
esac
wait "${writers[@]}"
echo "failover: the primary is now pg$(primary)"

# Read the whole log and check it against what was acknowledged.
from=1
: > "$work/log"
while :; do
  curl -fsS -m 30 "$(node_url 0)/events?from=$from&limit=10000" > "$work/page"
  jq -c '.events[] | [.position, .id]' "$work/page" >> "$work/log"
  next=$(jq '.next' "$work/page")
  [ "$next" = null ] && break
  from=$next
done
cat "$work"/acked-* 2> /dev/null | sort -n > "$work/acked"
python3 - "$work/log" "$work/acked" <<'EOF'
import json, sys
log = [json.loads(line) for line in open(sys.argv[1])]
acked = [line.split() for line in open(sys.argv[2])]
positions = [position for position, _ in log]
ids = [event_id for _, event_id in log]
problems = []
if positions != list(range(1, len(log) + 1)):
    problems.append("positions are not 1..head without a gap")
if len(set(ids)) != len(ids):
    problems.append("an event is in the log twice")
stored = set(ids)
lost = [event_id for _, event_id in acked if event_id not in stored]
if lost:
    problems.append(f"{len(lost)} acknowledged appends are missing, e.g. {lost[:3]}")
times = [int(t) for t, _ in acked]
gap = max((b - a for a, b in zip(times, times[1:])), default=0) / 1e9
print(f"failover: {len(acked)} appends acknowledged, {len(log)} events in the log; "
      f"longest time without an acknowledged append: {gap:.1f} s")
if problems:
    print("failover: FAILED: " + "; ".join(problems))
    sys.exit(1)
print("failover: nothing lost, gapless, each event once")
EOF
