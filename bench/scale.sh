#!/usr/bin/env bash
# The scale benchmark: the durable calls with 10,000, 100,000 and 1,000,000 customers in the store.
# For each size, on a fresh data directory: the customers are loaded by `loyalty-engine import`
# (each with BUCKETS buckets, so BUCKETS opening ledger entries: 10M at 1M customers), then the
# release engine (embedded store, fsync) serves Authorize, Accrue, Redeem and the checkout at 16
# clients beside the echo floor in the same run; then the engine is killed with -9 mid-Accrue and
# restarted, timed to its "listening" line. The calls are measured once the engine's start-up sweep
# over every account is done (its time is recorded: the sweep runs hourly, and checkout shares the
# cores with it meanwhile). Records import time, bytes on disk per customer and per Accrue, the
# engine's RSS, and the recovery time. Raw results: bench/results-scale/.
#   SIZES="10000 100000 1000000" DURATION=8 bash bench/scale.sh      (about 15 minutes)
# STORAGE_LINES adds [storage] settings for the engine (e.g. 'quick_repair = true\n'); RESULTS
# names another results folder; KEEP_WORK=1 keeps the last data directory (for profiling).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"10000 100000 1000000"}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
BUCKETS=${BUCKETS:-10}
STORAGE_LINES=${STORAGE_LINES:-}
results=${RESULTS:-bench/results-scale}
rm -rf "$results" && mkdir -p "$results"

cargo build --release --locked -p loyalty-engine -p loyalty-loadtest
bin=./target/release
work=$(mktemp -d "${SCALE_WORK:-/tmp}/scale.XXXXXX")
engine="" echo_server=""
cleanup() {
  [ -n "$engine" ] && kill -9 "$engine" 2>/dev/null || true
  [ -n "$echo_server" ] && kill "$echo_server" 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
source loadtest/lib.sh
load_engine_toml "$work/engine.toml" 'scheduling_delay_max_ms = 0\nin_flight_max = 4096\n'
printf '[storage]\n%b' "$STORAGE_LINES" >> "$work/engine.toml"
load_key "$bin" "$work" demo bench-driver
$bin/loyalty-echo --listen 127.0.0.1:20711 > "$work/echo.out" 2>&1 &
echo_server=$!
wait_listening "$echo_server" "$work/echo.out"
{
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu:     $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "run:     SIZES=\"$SIZES\" DURATION=$DURATION WARMUP=$WARMUP BUCKETS=$BUCKETS STORAGE_LINES=\"$STORAGE_LINES\""
} > "$results/machine.txt"

start_engine() {
  $bin/loyalty-engine --config "$work/engine.toml" --data-dir "$work/data" --credentials-file "$work/credentials.toml" \
    --listen 127.0.0.1:20710 --metrics-listen off --log info > "$work/engine.out" 2>&1 &
  engine=$!
}

for size in $SIZES; do
  rm -rf "$work/data" "$work/customers.jsonl"
  $bin/loyalty-load --write-import "$work/customers.jsonl" --customers "$size" --buckets "$BUCKETS" 2>/dev/null
  import_started=$(date +%s.%N)
  $bin/loyalty-engine --config "$work/engine.toml" --data-dir "$work/data" --log warn \
    import --program demo "$work/customers.jsonl" > "$results/import-$size.txt"
  import_seconds=$(python3 -c "import time; print(round(time.time() - $import_started, 1))")
  grep -q " $size imported, 0 imported before, 0 rejected" "$results/import-$size.txt" || { cat "$results/import-$size.txt"; exit 1; }
  bytes_after_import=$(du -sb "$work/data" | cut -f1)

  start_engine
  started=$(date +%s.%N)
  wait_listening "$engine" "$work/engine.out"
  open_seconds=$(python3 -c "import time; print(round(time.time() - $started, 2))")
  # The engine sweeps every account once at start (schedule awards, expiry notices, RFM counts,
  # retention), then hourly: the calls are measured after it, and how long it took is recorded.
  for _ in $(seq 1 6000); do grep -q "sweep done" "$work/engine.out" && break; sleep 0.1; done
  grep -q "sweep done" "$work/engine.out" || { echo "no sweep within 600 s" >&2; exit 1; }
  sweep_seconds=$(python3 -c "import time; print(round(time.time() - $started, 1))")
  load() { $bin/loyalty-load --customers "$size" --connections 4 --concurrency 16 --duration "$DURATION" --warmup "$WARMUP" "$@"; }
  for workload in authorize accrue redeem checkout; do
    io_before=$(awk '/^write_bytes/ {print $2}' "/proc/$engine/io")
    load --target 127.0.0.1:20710 --workload $workload --json "$results/$workload-$size.json"
    io_after=$(awk '/^write_bytes/ {print $2}' "/proc/$engine/io")
    echo "${workload}_write_bytes=$((io_after - io_before))" >> "$results/disk-$size.txt"
    load --target 127.0.0.1:20711 --floor --workload $workload --json "$results/floor-$workload-$size.json"
  done
  rss_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$engine/status")
  bytes_after_load=$(du -sb "$work/data" | cut -f1)

  # kill -9 in the middle of an Accrue run, then the time until the restarted engine listens.
  $bin/loyalty-load --target 127.0.0.1:20710 --customers "$size" --workload accrue --concurrency 16 --duration 30 --warmup 0 \
    > /dev/null 2>&1 &
  driver=$!
  sleep 2
  kill -9 "$engine"
  wait "$engine" 2>/dev/null || true
  wait "$driver" 2>/dev/null || true
  start_engine
  started=$(date +%s.%N)
  for _ in $(seq 1 6000); do
    grep -q "listening on" "$work/engine.out" && break
    kill -0 "$engine" 2>/dev/null || { cat "$work/engine.out"; exit 1; }
    sleep 0.01
  done
  recovery_seconds=$(python3 -c "import time; print(round(time.time() - $started, 2))")
  grep -q "listening on" "$work/engine.out" || { echo "no restart within 60 s" >&2; exit 1; }
  kill "$engine" && wait "$engine" 2>/dev/null || true
  engine=""
  {
    echo "customers=$size"
    echo "ledger_entries_imported=$((size * BUCKETS))"
    echo "import_seconds=$import_seconds"
    echo "bytes_after_import=$bytes_after_import"
    echo "bytes_after_load=$bytes_after_load"
    echo "open_seconds=$open_seconds"
    echo "startup_sweep_seconds=$sweep_seconds"
    echo "recovery_seconds=$recovery_seconds"
    echo "rss_peak_kib=$rss_kib"
    echo "load_seconds=$((DURATION + WARMUP))"
  } >> "$results/disk-$size.txt"
  cat "$results/disk-$size.txt"
done
echo "scale results in $results (rendered into bench/RESULTS.md by loyalty-report)"
