#!/usr/bin/env bash
# Overload: what the admitted calls get at twice the sustainable rate, with the engine's shedding
# (the defaults) and without it, and with another process taking the engine's CPU, beside the echo
# floor at the same rates. Writes
# loadtest/OVERLOAD.md; raw JSON in loadtest/results/. About 5 minutes.
#
# Open model only (latency from each call's intended start, so queueing counts). With two or more
# cores, the engine (and the floor) run on core 1 and the driver on core 0 (`taskset`), so that
# the driver's own work does not eat the capacity being measured.
#   RATES="1500 2000 2500 3000 3500 4000" P99_TARGET_MS=5 DURATION=8 bash loadtest/overload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES:-"1500 2000 2500 3000 3500 4000"}
# The checkout target: low single-digit milliseconds at p99.
P99_TARGET_MS=${P99_TARGET_MS:-5}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CUSTOMERS=${CUSTOMERS:-2000}
results=loadtest/results
# The commit measured, taken before this script rewrites its own output files.
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
rm -rf "$results" && mkdir -p "$results"

cargo build --release --locked -p loyalty-engine -p loyalty-loadtest
bin=$PWD/target/release
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  on_server="taskset -c 1" on_driver="taskset -c 0" pinning="engine and floor on core 1, driver on core 0"
else
  on_server="" on_driver="" pinning="not pinned (one core, or no taskset)"
fi

# wait_listening, load_key (a checkout key: LOYALTY_API_KEY and its credentials file), load_engine_toml.
source loadtest/lib.sh
load_key "$bin" "$work" demo overload-driver

# Starts a fresh engine with the given [limits] lines and seeds it; sets $server.
start_engine() {
  rm -rf "$work/data"
  load_engine_toml "$work/engine.toml" "$1"
  $on_server $bin/loyalty-engine --config "$work/engine.toml" --data-dir "$work/data" --credentials-file "$work/credentials.toml" \
    --listen 127.0.0.1:50750 --metrics-listen off --log warn > "$work/engine.out" 2>&1 &
  server=$!
  wait_listening $server "$work/engine.out"
  $on_driver $bin/loyalty-load --target 127.0.0.1:50750 --customers "$CUSTOMERS" --seed --workload accrue --count 1 --warmup 0 > /dev/null
}
stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }

# One open-model run: name, rate, extra flags. Failed calls are expected here: they are the shed ones.
run() {
  local name=$1 rate=$2; shift 2
  $on_driver $bin/loyalty-load --customers "$CUSTOMERS" --workload accrue --rps "$rate" --concurrency 8192 --connections 4 \
    --duration "$DURATION" --warmup "$WARMUP" --json "$results/$name.json" "$@" > "$results/$name.txt" 2>&1 || true
  grep -v '^$' "$results/$name.txt" | grep -v '^Error\|^Stack\|^ *[0-9]*: \|^ *at ' || true
}

p99_ms() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['rpcs'].get('Accrue',{}).get('p99_us',10**9)/1000)" "$1"; }

# 1. The sustainable rate: the highest of RATES whose p99 meets the target, with nothing refused
#    (the engine on its defaults).
start_engine ""
sustainable=""
for rate in $RATES; do
  run "sustain-$rate" "$rate" --target 127.0.0.1:50750
  failed=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sum(v for k,v in r['codes'].items() if k!='Ok'))" "$results/sustain-$rate.json")
  if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)" "$(p99_ms "$results/sustain-$rate.json")" "$P99_TARGET_MS" && [ "$failed" = 0 ]; then
    sustainable=$rate
  else
    break
  fi
done
stop_server
[ -n "$sustainable" ] || { echo "no rate in RATES met p99 <= ${P99_TARGET_MS} ms" >&2; exit 1; }
double=$((2 * sustainable))
echo "sustainable: $sustainable/s; overload runs at $double/s"

# 2. Twice that, under each admission setting.
declare -a settings=(
  "defaults|"
  "no CPU shedding (scheduling_delay_max_ms = 0)|scheduling_delay_max_ms = 0\n"
  "before this change (in_flight_max = 1024, admission_wait_ms = 20, no CPU shedding)|in_flight_max = 1024\nadmission_wait_ms = 20\nscheduling_delay_max_ms = 0\n"
  "tighter (in_flight_max = 16, admission_wait_ms = 1, scheduling_delay_max_ms = 2)|in_flight_max = 16\nadmission_wait_ms = 1\nscheduling_delay_max_ms = 2\n"
)
index=0
for setting in "${settings[@]}"; do
  index=$((index + 1))
  echo "${setting%%|*}" > "$results/setting-$index.name"
  start_engine "${setting#*|}"
  run "sustained-$index" "$sustainable" --target 127.0.0.1:50750
  run "double-$index" "$double" --target 127.0.0.1:50750
  stop_server
done

# 3. Another process taking the engine's CPU (a busy loop on its core), with the defaults: at half
#    the sustainable rate the engine is not overloaded and must refuse nothing; at twice it, what
#    the admitted calls get.
half=$((sustainable / 2))
start_engine ""
$on_server sh -c 'while :; do :; done' &
hog=$!
run "hog-half" "$half" --target 127.0.0.1:50750
run "hog-double" "$double" --target 127.0.0.1:50750
kill "$hog"; wait "$hog" 2>/dev/null || true
stop_server

# 4. The floor at the three rates.
$on_server $bin/loyalty-echo --listen 127.0.0.1:50751 > "$work/echo.out" 2>&1 &
server=$!
wait_listening $server "$work/echo.out"
run floor-half "$half" --target 127.0.0.1:50751 --floor
run floor-sustained "$sustainable" --target 127.0.0.1:50751 --floor
run floor-double "$double" --target 127.0.0.1:50751 --floor
stop_server

python3 - "$results" "$sustainable" "$double" "$P99_TARGET_MS" "$DURATION" "$pinning" "$index" "$commit" > loadtest/OVERLOAD.md <<'EOF'
import json, os, sys, datetime
results, sustainable, double, target, duration, pinning, settings, commit = sys.argv[1:9]
def load(name):
    return json.load(open(os.path.join(results, name + ".json")))
def ms(us):
    return f"{us / 1000:.1f}"
def row(label, run, floor):
    ok = run["rpcs"].get("Accrue", {"count": 0, "rps": 0, "p50_us": 0, "p99_us": 0, "p999_us": 0})
    failed = run.get("failed", {}).get("Accrue", {"count": 0, "p50_us": 0, "p99_us": 0})
    offered = ok["count"] + failed["count"]
    shed = 100.0 * run["codes"].get("ResourceExhausted", 0) / offered if offered else 0.0
    other = {code: count for code, count in run["codes"].items() if code not in ("Ok", "ResourceExhausted")}
    if other:
        others.append(f"{label} at {run['rps_target']:.0f}/s: {other}")
    floor_p99 = floor["rpcs"]["Accrue"]["p99_us"]
    return (f"| {label} | {run['rps_target']:.0f} | {ok['rps']:.0f} | {shed:.1f}% | {ms(ok['p50_us'])} | {ms(ok['p99_us'])} | "
            f"{ms(ok['p999_us'])} | {ms(failed['p50_us']) if failed['count'] else '-'} | {ms(failed['p99_us']) if failed['count'] else '-'} | "
            f"{ms(floor_p99)} | {ok['p99_us'] / max(floor_p99, 1):.1f}x |")
print("# Overload: admitted calls at twice the sustainable rate\n")
print("Regenerate with `bash loadtest/overload.sh` (about 5 minutes). Everything below is from one run of it.\n")
print("```")
print(f"date:     {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
print(f"cores:    {os.cpu_count()} ({pinning})")
print(f"commit:   {commit}")
print(f"workload: Accrue (durable: fsync before every answer), open model, {duration} s measured per run, 4 connections")
print("```\n")
print(f"**Sustainable rate: {sustainable}/s**, the highest tried whose p99 stayed within {target} ms with nothing refused. "
      f"The overload runs offer **{double}/s**. Latency counts from each call's intended start, so time queued anywhere counts. "
      "*Admitted* are the calls that succeeded; *shed* the share refused with RESOURCE_EXHAUSTED (OVERLOADED); "
      "*refused* latencies cover every failed call (failures other than RESOURCE_EXHAUSTED are listed under the table). "
      "The floor is `loyalty-echo` at the same rate, same message sizes.\n")
others = []
print("| engine limits | offered /s | served /s | shed | admitted p50 ms | admitted p99 ms | admitted p99.9 ms | refused p50 ms | refused p99 ms | floor p99 ms | p99 / floor |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
floor_sustained, floor_double = load("floor-sustained"), load("floor-double")
for index in range(1, int(settings) + 1):
    name = open(os.path.join(results, f"setting-{index}.name")).read().strip()
    print(row(name, load(f"sustained-{index}"), floor_sustained))
    print(row(name, load(f"double-{index}"), floor_double))
print()
print("**With another process on the engine's core** (a shell busy loop pinned beside it), engine on its defaults: "
      "shedding must wait for the engine's own calls to pile up (`limits.shed_in_flight_min`), so at half the sustainable "
      "rate nothing is refused.\n")
print("| engine limits | offered /s | served /s | shed | admitted p50 ms | admitted p99 ms | admitted p99.9 ms | refused p50 ms | refused p99 ms | floor p99 ms | p99 / floor |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
print(row("defaults, CPU hog", load("hog-half"), load("floor-half")))
print(row("defaults, CPU hog", load("hog-double"), floor_double))
print()
print("Failures other than RESOURCE_EXHAUSTED: " + ("; ".join(others) if others else "none") + ".\n")
floor_double_p99 = floor_double["rpcs"]["Accrue"]["p99_us"] / 1000
if floor_double_p99 > float(target):
    print(f"**Caution:** the floor's own p99 at {double}/s is {floor_double_p99:.1f} ms: the driver is saturated at that rate, "
          "so the overload rows measure it as much as the engine.\n")
print("Defaults: `limits.in_flight_max = 256`, `admission_wait_ms = 2`, `scheduling_delay_max_ms = 3`, `shed_in_flight_min = 16` "
      "(`deploy/loyalty.toml` explains each). Raw JSON and summaries: `loadtest/results/`.")
EOF
echo "wrote loadtest/OVERLOAD.md"
