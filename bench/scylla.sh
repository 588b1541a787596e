#!/usr/bin/env bash
# Regenerates bench/SCYLLA.md: what each call costs the ScyllaDB backend and how fast it answers, on
# the real 3-node Apache Cassandra 5.0 cluster of tests/cassandra (RF 3, LOCAL_QUORUM/LOCAL_SERIAL),
# beside the same runs on the CQL stand-in and on the embedded store, all on this one machine.
#
# Per store, one release engine, CUSTOMERS seeded customers, then per workload COUNT calls at 16
# clients (4 connections) with loyalty-load: throughput and latency from loyalty-load; requests and
# Paxos rounds per call from the engine's own counters (loyalty_scylla_requests_total,
# loyalty_scylla_lwt_total) and, on Cassandra, from each node's coordinator CAS counters (JMX
# ClientRequest CASWrite/CASRead, read with nodetool sjk: CQL exposes no CAS counter); engine CPU
# and cluster CPU per call from /proc. On Cassandra the Accrue and checkout runs are repeated with one node killed
# (-9) and then restarted. Raw results stay in bench/results-scylla/. About 10 minutes.
#   COUNT=2000 CUSTOMERS=2000 bash bench/scylla.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-2000}
CUSTOMERS=${CUSTOMERS:-2000}
results=bench/results-scylla
rm -rf "$results" && mkdir -p "$results"

cargo build --release --locked -p loyalty-engine -p loyalty-loadtest -p cql-standin
bin=./target/release
work=$(mktemp -d)
engine="" standin=""
cleanup() {
  [ -n "$engine" ] && kill "$engine" 2>/dev/null || true
  [ -n "$standin" ] && kill "$standin" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
source loadtest/lib.sh
bash tests/cassandra/cluster.sh up

{
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu:     $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "run:     COUNT=$COUNT CUSTOMERS=$CUSTOMERS, 16 clients, 4 connections"
  echo "cluster: $(bash tests/cassandra/cluster.sh status | tr '\n' ';')"
} > "$results/machine.txt"

load_key "$bin" "$work" demo scylla-bench
# Coordinator CAS counts summed over the three nodes: "writes reads" (Cassandra only).
cas_counts() {
  local writes=0 reads=0 n count
  for n in 1 2 3; do
    for scope in CASWrite CASRead; do
      count=$(bash tests/cassandra/cluster.sh nodetool "$n" sjk mx -b "org.apache.cassandra.metrics:type=ClientRequest,scope=$scope,name=Latency" -f Count --get 2>/dev/null | tail -n 1)
      [[ $count =~ ^[0-9]+$ ]] || count=0
      if [ $scope = CASWrite ]; then writes=$((writes + count)); else reads=$((reads + count)); fi
    done
  done
  echo "$writes $reads"
}
# What the engine and the cluster have counted so far: snapshot FILE STORE.
snapshot() {
  sleep 6 # the driver's counters are exported every 5 s; background relays finish
  {
    curl -sf http://127.0.0.1:50791/metrics | grep -E '^loyalty_scylla_(requests|lwt)_total' || true
    echo "cpu_ticks $(awk '{print $14 + $15}' /proc/$engine/stat)"
    if [ "$2" = cassandra ]; then
      echo "cas $(cas_counts)"
      # CPU of the three nodes (user + system ticks), what bounds the cluster on this machine.
      echo "cluster_ticks $(for n in 1 2 3; do awk '{print $14 + $15}' "/proc/$(cat "${CASSANDRA_WORK:-/tmp/loyalty-cassandra}/node$n/pid")/stat"; done | awk '{s += $1} END {print s}')"
    fi
  } > "$1"
}
run_store() {
  local store=$1 storage=$2
  load_engine_toml "$work/$store.toml" 'scheduling_delay_max_ms = 0\nin_flight_max = 4096\n'
  printf '%b' "$storage" >> "$work/$store.toml"
  if [ "$store" != embedded ]; then
    $bin/loyalty-engine --config "$work/$store.toml" migrate > /dev/null
  fi
  $bin/loyalty-engine --config "$work/$store.toml" --data-dir "$work/data-$store" --credentials-file "$work/credentials.toml" \
    --listen 127.0.0.1:50790 --metrics-listen 127.0.0.1:50791 --log warn > "$work/$store-engine.out" 2>&1 &
  engine=$!
  wait_listening $engine "$work/$store-engine.out"
  $bin/loyalty-load --target 127.0.0.1:50790 --customers "$CUSTOMERS" --seed --workload authorize --count 1 --warmup 0 > /dev/null
  # Warm the engine and the store's caches; not measured.
  $bin/loyalty-load --target 127.0.0.1:50790 --customers "$CUSTOMERS" --workload accrue --count 500 --warmup 0 > /dev/null
  for workload in authorize accrue redeem checkout; do
    snapshot "$results/$store-$workload.before" "$store"
    $bin/loyalty-load --target 127.0.0.1:50790 --customers "$CUSTOMERS" --workload $workload --count "$COUNT" --warmup 0 \
      --concurrency 16 --connections 4 --json "$results/$store-$workload.json" > /dev/null
    snapshot "$results/$store-$workload.after" "$store"
  done
  if [ "$store" = cassandra ]; then
    bash tests/cassandra/cluster.sh kill 3
    for workload in accrue checkout; do
      $bin/loyalty-load --target 127.0.0.1:50790 --customers "$CUSTOMERS" --workload $workload --count "$COUNT" --warmup 0 \
        --concurrency 16 --connections 4 --json "$results/$store-node-down-$workload.json" > /dev/null \
        || echo "$workload with node 3 down: some calls failed (see the report)"
    done
    bash tests/cassandra/cluster.sh restart 3
    bash tests/cassandra/cluster.sh check > /dev/null
  fi
  kill -TERM $engine
  wait $engine || true
  engine=""
}

scylla_toml() { # NODES KEYSPACE RF
  printf '[storage]\nbackend = "scylla"\n[storage.scylla]\nnodes = [%s]\nlocal_dc = "datacenter1"\nkeyspace = "%s"\nreplication = { datacenter1 = %s }\nrequest_timeout_ms = 5000\n' "$1" "$2" "$3"
}
run_store embedded ''
$bin/cql-standin --listen 127.0.0.1:59042 > "$work/standin.out" 2>&1 &
standin=$!
wait_listening $standin "$work/standin.out"
run_store standin "$(scylla_toml '"127.0.0.1:59042"' bench_standin 1)"
kill $standin && standin=""
run_store cassandra "$(scylla_toml '"127.0.0.1:9042", "127.0.0.2:9042", "127.0.0.3:9042"' "bench_$(date +%s)" 3)"

python3 bench/scylla_report.py "$results" > bench/SCYLLA.md
echo "bench/SCYLLA.md written"
