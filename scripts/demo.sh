#!/usr/bin/env bash
# The main job, end to end: build evhost and the example plugins, start the host on its embedded
# default (one redb file in a data directory), deploy the hospital (the `visit` handler, the
# `visits` and `rooms` projections, the `visit-survey` policy with the `survey` handler) and the
# loyalty saga (`order`, `loyalty`, `order-loyalty`), drive hospital visits through commands (CLI
# and plain HTTP), read the read models with reads that wait for the write before them, watch a
# policy's timer and its commands, see the saga compensate a rejection, restart the host to show
# the plugins coming back from their compiled cache, then stop cleanly. Beside the Rust plugins
# run plugins written in Python (the projection `stays-py`, the policy `returns-py`) and in
# JavaScript (`stays-js`, and `survey` again, deployed as the Rust survey's next version), built
# with their SDKs.
#
# The end-to-end tests run this demo and check what it prints, with what they built already:
# EVHOST_DEMO_BUILT names a directory holding an evhost binary and every component the demo
# deploys, in place of the builds below.
set -euo pipefail
cd "$(dirname "$0")/.."

built=${EVHOST_DEMO_BUILT:-}
plugins=(visit visits rooms survey visit-survey order loyalty order-loyalty)
if [ -z "$built" ]; then
  toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
  rustup target add wasm32-wasip2 --toolchain "$toolchain"
  cargo build --release --locked -p evhost
  # Second versions of visit and visits, deployed later in the demo.
  cargo build --release --locked --target wasm32-wasip2 $(printf -- '-p %s ' "${plugins[@]}") \
    -p stays -p visit-v2 -p visits-v2
fi
evhost=${built:-target/release}/evhost
wasm=${built:-target/wasm32-wasip2/release}
plugin=$wasm/visit.wasm
data=$(mktemp -d)
log="$data/host.log"
host=
tail_pid=
trap 'kill $tail_pid $host 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"' EXIT

sdk=${built:-$data}
if [ -z "$built" ]; then
  echo "== build the Python and JavaScript plugins with their SDKs (componentize-py, componentize-js)"
  bash scripts/guest-tools.sh
  python=target/guest-tools/python/bin/python
  "$python" -m evhost build plugins/python/stays/stays.py -o "$sdk/stays_py.wasm"
  "$python" -m evhost build plugins/python/returns/returns.py -o "$sdk/returns_py.wasm"
  node sdk/js/bin/evhost-js.js build plugins/js/stays/stays.js -o "$sdk/stays_js.wasm"
  node sdk/js/bin/evhost-js.js build plugins/js/survey/survey.js -o "$sdk/survey_js.wasm"
fi

# The first start picks a free port; a restart takes the same one, so that the live follower
# finds the host again where it was.
listen=127.0.0.1:0
start_host() {
  : > "$data/stdout"
  "$evhost" serve --data "$data/evhost-data" --listen "$listen" > "$data/stdout" 2>> "$log" &
  host=$!
  url=
  for _ in $(seq 1200); do
    url=$(sed -n 's/^evhost listening on //p' "$data/stdout" 2>/dev/null || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { cat "$log"; echo "the host did not start" >&2; exit 1; }
  export EVHOST_URL=$url
  listen=${url#http://}
}

# Waits until a command succeeds: an outcome the demo shows next (a policy's command, a timer, a
# switch). It is usually there in a moment; on a busy machine it may take longer, so the demo
# gives up only after two minutes.
wait_until() {
  local deadline=$((SECONDS + 120))
  until "$@" > /dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "gave up waiting for: $*" >&2; return 1; }
    sleep 0.1
  done
}

# stream_has STREAM TYPE: whether the stream holds an event of that type.
stream_has() {
  "$evhost" read "$1" | grep -q " $2 "
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

echo "== deploy the visit handler ($(wc -c < "$plugin") bytes of WebAssembly), then the rest"
"$evhost" deploy "$plugin"
for name in "${plugins[@]:1}"; do
  "$evhost" deploy "$wasm/${name//-/_}.wasm"
done
echo "== the average length of stay per hospital, as the same projection in Rust, Python and JavaScript"
echo "   (a Python or JavaScript component is some 15 MB: its first deploy compiles it, in seconds)"
"$evhost" deploy "$wasm/stays.wasm"
"$evhost" deploy "$sdk/stays_py.wasm"
"$evhost" deploy "$sdk/stays_js.wasm"
echo "== and a policy in Python: a patient back within 72 hours gets a note on the new visit"
"$evhost" deploy "$sdk/returns_py.wasm"
"$evhost" plugins

# get PATH: a read over HTTP, with the position the answer reflects and the version that answered.
get() {
  curl -s -D "$data/headers" "$EVHOST_URL$1"
  header() { sed -n "s/^$1: *//Ip" "$data/headers" | tr -d '\r'; }
  echo "   (Evhost-Position: $(header evhost-position), Evhost-Version: $(header evhost-version | cut -c1-12))"
}

echo "== follow the live log of the visit category in the background"
"$evhost" tail --from 1 --category visit > "$data/tail" &
tail_pid=$!

echo "== Ana checks in: one command carries the whole visit, several events are appended at once"
"$evhost" command visit visit-1001 CheckIn --id checkin-1001 '{"patient_id": "p-1001",
  "patient_name": "Ana Lima", "complaint": "chest pain", "triage_level": 2, "room": "A-12",
  "physician": "dr-okafor", "tests": ["ecg", "troponin"]}'

echo "== the visits projection, read with min_position: it waits until the check-in is applied"
position=$(curl -s "$EVHOST_URL/commands/checkin-1001" | sed -n 's/.*"position":\([0-9]*\).*/\1/p')
get "/projections/visits/keys/visit/1001?min_position=$position"

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

echo "== the policy saw the check-out: the survey handler prepared a survey (its command id names the cause)"
wait_until curl -sf "$EVHOST_URL/streams/survey-1001"
"$evhost" read survey-1001

echo "== a second visit, over plain HTTP, expected to stay 2 seconds"
answer=$(curl -s -X POST "$EVHOST_URL/handlers/visit/commands" -H 'content-type: application/json' \
  -d '{"id": "checkin-1002", "stream": "visit-1002", "type": "CheckIn", "data": {"patient_id": "p-1002",
       "patient_name": "Bo Chen", "complaint": "sprained ankle", "triage_level": 4, "room": "C-2",
       "hospital": "main", "tests": ["x-ray"], "expected_stay_seconds": 2}}')
echo "$answer"
position=$(echo "$answer" | sed -n 's/.*"position":\([0-9]*\)}$/\1/p')
echo "== who is in the hospital now, and its rooms (both read after the check-in)"
get "/projections/visits/query/in-hospital?hospital=main&min_position=$position"
get "/projections/rooms/query/rooms?hospital=main&min_position=$position"
echo "== the stay runs past 2 seconds: the policy's timer flags the visit overdue"
wait_until stream_has visit-1002 VisitOverdue
"$evhost" read visit-1002
echo "== what the host recorded about the check-in command"
curl -s "$EVHOST_URL/commands/checkin-1002"; echo

echo "== visit-1001 as stored"
"$evhost" read visit-1001

head=$(curl -s "$EVHOST_URL/health" | sed -n 's/.*"head":\([0-9]*\).*/\1/p')
echo "== restart the host at position $head: the handler comes back from its compiled cache, without compiling"
kill -TERM "$host"; wait "$host"
start_host
curl -s "$EVHOST_URL/metrics" | grep -E '^evhost_plugin_(compilations|cache_loads)_total'
"$evhost" command visit visit-1002 RecordTest '{"test": "x-ray", "result": "no fracture"}'
"$evhost" command visit visit-1002 CheckOut '{"disposition": "discharged"}'

echo "== the loyalty saga: Cy earns 50 points, orders with 30 (reserved, confirmed), then with 40 more"
"$evhost" command loyalty loyalty-cy EarnPoints '{"points": 50}'
"$evhost" command order order-501 PlaceOrder '{"customer_id": "cy", "total_cents": 2500, "points": 30}'
"$evhost" command order order-502 PlaceOrder '{"customer_id": "cy", "total_cents": 9000, "points": 40}'
wait_until stream_has order-502 OrderCancelled
echo "== order-501 was confirmed; order-502's reservation was rejected, so the policy cancelled it"
"$evhost" read order-501
"$evhost" read order-502
"$evhost" read loyalty-cy

echo "== a bug: version 1 of visit checks a patient out twice (visit-1002 was checked out above)"
"$evhost" command visit visit-1002 CheckOut --id checkout-again-1002 '{"disposition": "discharged"}'

echo "== the fix, visit v2, uploaded as a candidate: commands still go to v1 meanwhile"
"$evhost" deploy "$wasm/visit_v2.wasm" --promote manual
visit_v2=$(curl -s "$EVHOST_URL/plugins/visit" | sed -n 's/.*"candidate_version":"\([0-9a-f]*\)".*/\1/p')
echo "== dry run: v2 decides every recorded visit command again, on the stream as it was then"
"$evhost" replay visit --version "${visit_v2:0:12}"
echo "== switch to v2: now a repeated check-out is refused"
"$evhost" promote visit
refused "$evhost" command visit visit-1002 CheckOut '{"disposition": "discharged"}'

echo "== blue/green: visits v2 adds length_of_stay_seconds; it builds its state beside v1, which serves"
visits_v2=$("$evhost" deploy "$wasm/visits_v2.wasm" --json | sed -n 's/.*"version":"\([0-9a-f]*\)".*/\1/p')
active_is() {
  curl -s "$EVHOST_URL/plugins/$1" | grep -q "\"active_version\":\"$2\""
}
wait_until active_is visits "$visits_v2"
echo "== it caught up and took over by itself; v1 keeps running as the previous version"
"$evhost" plugins visits
get "/projections/visits/keys/visit/1002"
echo "== roll back: v1 answers again at once, from the state it kept current"
"$evhost" rollback visits
get "/projections/visits/keys/visit/1002"
"$evhost" promote visits --version "${visits_v2:0:12}"

echo "== Ana (p-1001) comes back: the Python policy returns-py notes the return on the new visit"
"$evhost" command visit visit-1003 CheckIn --id checkin-1003 '{"patient_id": "p-1001",
  "patient_name": "Ana Lima", "complaint": "chest pain again", "triage_level": 2, "room": "A-3",
  "hospital": "main"}'
wait_until stream_has visit-1003 NoteAdded
"$evhost" read visit-1003

echo "== the stays per hospital, from Rust, Python and JavaScript: the same answer, read after the last write"
head=$(curl -s "$EVHOST_URL/health" | sed -n 's/.*"head":\([0-9]*\).*/\1/p')
for name in stays stays-py stays-js; do
  echo "   $name: $(curl -s "$EVHOST_URL/projections/$name/query/hospitals?min_position=$head")"
done
grep -E "plugin stays-(py|js)@[0-9a-f]*: visit 1001" "$log" | sed 's/^/   log: /'

echo "== survey v2 is the survey handler ported to JavaScript: a dry run over every recorded survey command"
survey_js=$("$evhost" deploy "$sdk/survey_js.wasm" --promote manual --json | sed -n 's/.*"version":"\([0-9a-f]*\)".*/\1/p')
"$evhost" replay survey --version "${survey_js:0:12}"
"$evhost" promote survey
"$evhost" command survey survey-1001 SubmitSurvey '{"score": 5, "comment": "fast and kind"}'
refused "$evhost" command survey survey-1001 SubmitSurvey '{"score": 4}'

echo "== the plugins: status, and the position and lag of each projection and policy"
"$evhost" plugins

echo "== the global log, check-ins only"
"$evhost" read --type PatientCheckedIn
echo "== the host's health"
curl -s "$EVHOST_URL/health"; echo

# The follower is stopped once it has shown the last event of its category.
last_visit=$("$evhost" read --category visit --limit 10000 | sed -n 's/^ *\([0-9][0-9]*\)  .*/\1/p' | tail -1)
wait_until grep -q "^ *$last_visit " "$data/tail"
kill "$tail_pid" 2>/dev/null || true
echo "== what the live follower saw (category visit; it reconnected across the restart)"
cat "$data/tail"

echo "== stopping the host (SIGTERM: requests finish, the database closes cleanly)"
kill -TERM "$host"
wait "$host"
grep -E "stopped cleanly" "$log" | tail -1
