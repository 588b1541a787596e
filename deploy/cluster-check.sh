#!/usr/bin/env bash
# Runs the storage conformance suite against a real ScyllaDB cluster, then the load test against
# the engines running on it (deploy/docker-compose.yml starts both):
#
#   SCYLLA_NODES=127.0.0.1:9042 bash deploy/cluster-check.sh
#
# SCYLLA_NODES   contact points of the cluster (required)
# SCYLLA_DC      its data center [datacenter1]; SCYLLA_RF replicas for the test keyspaces [3]
# ENGINES        engines to load, comma-separated [127.0.0.1:50051,127.0.0.1:50052]
# DURATION       seconds of load per engine [60]; CONCURRENCY workers per engine [32]
# Results: load-results/ (JSON per engine; `loyalty-report` renders them).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SCYLLA_NODES:?set SCYLLA_NODES to the contact points of the cluster, e.g. 127.0.0.1:9042}"
ENGINES=${ENGINES:-127.0.0.1:50051,127.0.0.1:50052}
DURATION=${DURATION:-60}
CONCURRENCY=${CONCURRENCY:-32}

echo "== storage conformance suite on $SCYLLA_NODES"
SCYLLA_NODES=$SCYLLA_NODES cargo test --release -p loyalty-tests --test conformance -- --test-threads 1

echo "== load test on $ENGINES (program loadtest: points spendable at once)"
cargo build --release -p loyalty-loadtest
mkdir -p load-results
IFS=, read -ra targets <<< "$ENGINES"
./target/release/loyalty-load --target "${targets[0]}" --program loadtest --customers 2000 --seed \
  --workload authorize --count 1 --warmup 0 > /dev/null
pids=()
for target in "${targets[@]}"; do
  ./target/release/loyalty-load --target "$target" --program loadtest --customers 2000 --workload checkout \
    --concurrency "$CONCURRENCY" --duration "$DURATION" --json "load-results/checkout-${target//[:.]/_}.json" &
  pids+=($!)
  sleep 1   # the driver names its receipts after the start time in milliseconds
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "== done: load-results/"
