#!/usr/bin/env bash
# A/B of engine settings on one release build: for each round, each variant in turn gets a fresh
# data directory and runs the closed model (16 clients, 4 connections, 2,000 customers) for each
# workload beside the echo floor, then optionally an open-model Accrue at OPEN_RPS calls/s, and
# records its store metrics. Alternating variants spreads this VM's drift over both.
#   bash bench/ab.sh OUT ROUNDS 'direct=journal = false\nquick_repair = false' 'pipeline='
# Each variant is NAME=[storage] lines (printf %b escapes), or NAME@DIR=... to run the binaries in
# DIR instead (two builds A/B: 'before@/tmp/old/release=' 'now='). WORKLOADS (accrue redeem
# checkout), OPEN_RPS (off), BIN (./target/release, built first unless set).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 rounds=$2
shift 2
if [ -z "${BIN:-}" ]; then cargo build --release --locked -p loyalty-engine -p loyalty-loadtest; fi
source loadtest/lib.sh
: > "$out"
summary() {
  python3 - "$@" <<'PY'
import json, sys
engine, floor, rnd, variant, workload = sys.argv[1:6]
e = json.load(open(engine))
er = sum(r['rps'] for r in e['rpcs'].values())
p99 = max(r['p99_us'] for r in e['rpcs'].values()) / 1000
p999 = max(r['p999_us'] for r in e['rpcs'].values()) / 1000
if floor == '-':
    print(f"round={rnd} variant={variant} workload={workload} model=open engine_rps={er:.0f} p99_ms={p99:.2f} p999_ms={p999:.2f} failed={e['failed']}")
else:
    fr = sum(r['rps'] for r in json.load(open(floor))['rpcs'].values())
    print(f"round={rnd} variant={variant} workload={workload} model=closed engine_rps={er:.0f} floor_rps={fr:.0f} ratio={er/fr:.3f} p99_ms={p99:.2f} p999_ms={p999:.2f} failed={e['failed']}")
PY
}
for round in $(seq 1 "$rounds"); do
  for variant in "$@"; do
    name=${variant%%=*} lines=${variant#*=} bin=${BIN:-./target/release}
    if [[ $name == *@* ]]; then bin=${name#*@} name=${name%%@*}; fi
    work=$(mktemp -d)
    load_engine_toml "$work/engine.toml" 'scheduling_delay_max_ms = 0\nin_flight_max = 4096\n'
    printf '[storage]\n%b\n' "$lines" >> "$work/engine.toml"
    load_key "$bin" "$work" demo bench-driver
    "$bin/loyalty-engine" --config "$work/engine.toml" --data-dir "$work/data" --credentials-file "$work/credentials.toml" \
      --listen 127.0.0.1:20720 --metrics-listen 127.0.0.1:20722 --log warn > "$work/engine.out" 2>&1 &
    engine=$!
    "$bin/loyalty-echo" --listen 127.0.0.1:20721 > "$work/echo.out" 2>&1 &
    echo_server=$!
    wait_listening $engine "$work/engine.out"
    wait_listening $echo_server "$work/echo.out"
    "$bin/loyalty-load" --target 127.0.0.1:20720 --customers 2000 --seed --workload authorize --count 1 --warmup 0 > /dev/null
    for workload in ${WORKLOADS:-accrue redeem checkout}; do
      common=(--customers 2000 --connections 4 --duration 8 --warmup 2 --workload "$workload" --concurrency 16)
      "$bin/loyalty-load" --target 127.0.0.1:20720 "${common[@]}" --json "$work/e.json" > /dev/null
      "$bin/loyalty-load" --target 127.0.0.1:20721 --floor "${common[@]}" --json "$work/f.json" > /dev/null
      summary "$work/e.json" "$work/f.json" "$round" "$name" "$workload" >> "$out"
    done
    if [ -n "${OPEN_RPS:-}" ]; then
      "$bin/loyalty-load" --target 127.0.0.1:20720 --customers 2000 --connections 4 --duration 20 --warmup 2 --workload accrue \
        --concurrency 256 --rps "$OPEN_RPS" --json "$work/o.json" > /dev/null
      summary "$work/o.json" - "$round" "$name" accrue >> "$out"
    fi
    echo "round=$round variant=$name metrics: $(curl -s 127.0.0.1:20722/metrics |
      grep -E '^loyalty_store_(checkpoint_seconds|commit_seconds|apply_seconds|apply_commits|batch_size)_(sum|count)' | tr '\n' ' ')" >> "$out"
    kill $engine $echo_server
    wait $engine $echo_server 2>/dev/null || true
    rm -rf "$work"
  done
done
cat "$out"
