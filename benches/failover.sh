#!/usr/bin/env bash
# Run against a cluster that scripts/cluster.sh up started.
# Appends one event every 20 ms to node 1 while the PostgreSQL primary (Patroni and postmaster)
# is killed with -9; prints the longest gap between acknowledged appends.
dir=${EVHOST_CLUSTER_DIR:-$(dirname "$0")/../target/cluster}
base=${EVHOST_CLUSTER_PORT:-24000}
url=http://127.0.0.1:$((base + 301))
stop=$(( $(date +%s) + 60 ))
( last=$(date +%s%N); worst=0; n=0
  while [ "$(date +%s)" -lt "$stop" ]; do
    n=$((n+1))
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/streams/fail-1" -d "{\"events\":[{\"id\":\"f-$n-$RANDOM\",\"type\":\"Tick\",\"data\":{}}]}")
    now=$(date +%s%N)
    if [ "$code" = 201 ]; then gap=$(( (now-last)/1000000 )); [ $gap -gt $worst ] && worst=$gap; last=$now; fi
    sleep 0.02
  done; echo "longest gap between acknowledged appends: $worst ms" ) &
loader=$!
sleep 5
primary=$(for i in 0 1 2; do curl -fs -o /dev/null http://127.0.0.1:$((base+200+i))/primary && echo $i; done)
echo "killing pg$primary at $(date +%T.%N)"
kill -9 "$(cat $dir/pids/patroni$primary.pid)" "$(head -1 $dir/pg$primary/postmaster.pid)"
wait $loader
for i in 0 1 2; do curl -fs -o /dev/null http://127.0.0.1:$((base+200+i))/primary && echo "new primary pg$i"; done
