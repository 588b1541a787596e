#!/usr/bin/env bash
# Regenerates bench/RESULTS.md and bench/plots/ from one run on this machine: every workload at 1, 16
# and 64 clients and at half its peak rate against the release engine (embedded store, fsync on),
# each beside the echo floor measured the same way in the same run; Authorize, Accrue and Redeem under
# ghz too, beside ghz against the floor; criterion; PostgreSQL via pgbench; peak RSS. About 15-20
# minutes (Go builds ghz once, with .ci/tools.sh). Raw results stay in bench/results/.
#   DURATION=10 WARMUP=2 CUSTOMERS=2000 bash bench/run.sh
# Then the scale run (bench/scale.sh). SKIP_PG=1, SKIP_CRITERION=1 and SKIP_SCALE=1 leave those parts
# out (for a quick check of the pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CUSTOMERS=${CUSTOMERS:-2000}
results=bench/results
rm -rf "$results" && mkdir -p "$results"

cargo build --release --locked -p loyalty-engine -p loyalty-loadtest
bin=./target/release
work=$(mktemp -d)
engine="" echo_server=""
cleanup() {
  [ -n "$engine" ] && kill "$engine" 2>/dev/null || true
  [ -n "$echo_server" ] && kill "$echo_server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_listening, load_key (a checkout key: LOYALTY_API_KEY and its credentials file), load_engine_toml.
source loadtest/lib.sh
# Capacity, not admission: CPU-saturation shedding (measured by loadtest/overload.sh) is off, since
# the closed-model runs saturate the cores on purpose and any refused call ends the run; the
# in-flight bound is lifted too (a stall of the open-model runs queued past 256 calls and was shed).
load_engine_toml "$work/engine.toml" 'scheduling_delay_max_ms = 0\nin_flight_max = 4096\n'
load_key "$bin" "$work" demo bench-driver
$bin/loyalty-engine --config "$work/engine.toml" --data-dir "$work/data" --credentials-file "$work/credentials.toml" \
  --listen 127.0.0.1:50700 --metrics-listen off --log warn > "$work/engine.out" 2>&1 &
engine=$!
$bin/loyalty-echo --listen 127.0.0.1:50701 > "$work/echo.out" 2>&1 &
echo_server=$!
wait_listening "$engine" "$work/engine.out"
wait_listening "$echo_server" "$work/echo.out"

{
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu:     $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "memory:  $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel:  $(uname -r)"
  echo "rustc:   $(rustc --version)"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "run:     DURATION=$DURATION WARMUP=$WARMUP CUSTOMERS=$CUSTOMERS"
} > "$results/machine.txt"

load() { $bin/loyalty-load --customers "$CUSTOMERS" --connections 4 --duration "$DURATION" --warmup "$WARMUP" "$@"; }

$bin/loyalty-load --target 127.0.0.1:50700 --customers "$CUSTOMERS" --seed --workload authorize --count 1 --warmup 0 > /dev/null
# Accrue before the spending workloads, so that hot customers have points to spend.
for workload in authorize accrue redeem checkout; do
  for clients in 1 16 64; do
    io_before=$(awk '/^write_bytes/ {print $2}' /proc/$engine/io)
    load --target 127.0.0.1:50700 --workload $workload --concurrency $clients --json "$results/$workload-c$clients.json"
    if [ "$workload" = accrue ] && [ "$clients" = 16 ]; then
      # Write amplification: what the engine process wrote (/proc/PID/io write_bytes counts every
      # page it dirtied, a page dirtied again after writeback counted again) per acknowledged Accrue.
      calls=$(python3 -c "import json; print(sum(r['count'] for r in json.load(open('$results/accrue-c16.json'))['rpcs'].values()))")
      echo "accrue_c16_calls=$calls accrue_c16_write_bytes=$(( $(awk '/^write_bytes/ {print $2}' /proc/$engine/io) - io_before ))" > "$results/disk.txt"
    fi
    load --target 127.0.0.1:50701 --floor --workload $workload --concurrency $clients --json "$results/floor-$workload-c$clients.json"
  done
  peak=$(python3 -c "import json,sys; print(max(max(r['rps'] for r in json.load(open(f'$results/$workload-c{c}.json'))['rpcs'].values()) for c in (1,16,64)))")
  rate=$(python3 -c "print(round($peak / 2, 1))")
  load --target 127.0.0.1:50700 --workload $workload --rps "$rate" --concurrency 1024 --json "$results/$workload-open.json"
  load --target 127.0.0.1:50701 --floor --workload $workload --rps "$rate" --concurrency 1024 --json "$results/floor-$workload-open.json"
done

# ghz: Authorize, Accrue and Redeem from a driver we did not write (the loadtest/ghz configs), each
# beside ghz against the echo floor with the same request and answer sizes. A warm-up run first.
tools=$(bash .ci/tools.sh)
export GHZ="$tools/ghz"
for workload in authorize accrue redeem; do
  floor_data=$($bin/loyalty-load --echo-request --workload $workload)
  for clients in 1 16 64; do
    connections=$((clients < 4 ? clients : 4))
    # --duration-stop wait: calls in flight when the time is up finish and count, rather than fail
    # with "use of closed network connection" (the configs say so too; the floor has no config).
    engine_args=(--config "loadtest/ghz/$workload.json" -c "$clients" --connections "$connections" --duration-stop wait 127.0.0.1:50700)
    floor_args=(--insecure --proto proto/loyalty/bench/v1/echo.proto --import-paths proto --call loyalty.bench.v1.Echo/Echo
      -d "$floor_data" -c "$clients" --connections "$connections" --duration-stop wait 127.0.0.1:50701)
    ghz_checked "$work/warmup.json" - "${engine_args[@]}" -z "${WARMUP}s" > /dev/null
    ghz_checked "$results/ghz-$workload-c$clients.json" - "${engine_args[@]}" -z "${DURATION}s"
    ghz_checked "$work/warmup.json" - "${floor_args[@]}" -z "${WARMUP}s" > /dev/null
    ghz_checked "$results/ghz-floor-$workload-c$clients.json" - "${floor_args[@]}" -z "${DURATION}s"
  done
done

echo "$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$engine/status)" > "$results/rss.txt"
kill -TERM "$engine"; wait "$engine" || true; engine=""
# Bytes on disk after a clean stop (database file and journal), beside what the run stored.
echo "data_dir_bytes=$(du -sb "$work/data" | cut -f1) journal_bytes=$(cat "$work"/data/loyalty.journal* 2>/dev/null | wc -c)" >> "$results/disk.txt"
$bin/loyalty-engine --config "$work/engine.toml" --data-dir "$work/data" verify | tee "$results/verify.txt"

if [ -z "${SKIP_CRITERION:-}" ]; then
  cargo bench --locked -p loyalty-bench --bench hot_paths --bench rules -- --warm-up-time 1 --measurement-time 3
fi
if [ -z "${SKIP_PG:-}" ]; then bash bench/pg/run.sh "$results/pg.json"; fi
# The scale run (10,000 to 1,000,000 customers; about 15 minutes, 10 GB of disk at its largest)
# into bench/results-scale/. SKIP_SCALE=1 keeps the last one's results.
if [ -z "${SKIP_SCALE:-}" ]; then bash bench/scale.sh; fi
$bin/loyalty-report --results "$results" --out bench/RESULTS.md --plots bench/plots
