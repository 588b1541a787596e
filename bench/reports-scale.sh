#!/usr/bin/env bash
# Reports at scale (issue 17): ReadFigures and WhatIf against a store of SIZE customers with
# BUCKETS opening ledger entries each (loaded by `loyalty-engine import`: 10,000,000 entries at the
# default million) plus DURATION seconds of Accrue at 16 clients (the receipts the what-if
# evaluates). Release build, embedded store with fsync. Records how long each call took and the
# engine's resident memory before and after, in RESULTS (bench/results-reports/).
#   SIZE=1000000 DURATION=60 bash bench/reports-scale.sh      (about 10 minutes at a million)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1000000}
BUCKETS=${BUCKETS:-10}
DURATION=${DURATION:-60}
results=${RESULTS:-bench/results-reports}
rm -rf "$results" && mkdir -p "$results"

cargo build --release --locked -p loyalty-engine -p loyalty-loadtest
[ -x .tools/bin/grpcurl ] || bash .ci/tools.sh
bin=./target/release
work=$(mktemp -d "${SCALE_WORK:-/tmp}/reports.XXXXXX")
engine=""
cleanup() {
  [ -n "$engine" ] && kill -9 "$engine" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
source loadtest/lib.sh
load_engine_toml "$work/engine.toml" 'scheduling_delay_max_ms = 0\nin_flight_max = 4096\n'
"$bin/loyalty-engine" keygen --program demo --id bench-reports --scopes checkout,admin > "$work/keygen.out"
LOYALTY_API_KEY=$(head -n 1 "$work/keygen.out")
export LOYALTY_API_KEY
tail -n +3 "$work/keygen.out" > "$work/credentials.toml"
auth="authorization: Bearer $LOYALTY_API_KEY"
now() { python3 -c 'import time; print(time.time())'; }
since() { python3 -c "import time; print(round(time.time() - $1, 2))"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$engine/status"; }

$bin/loyalty-load --write-import "$work/customers.jsonl" --customers "$SIZE" --buckets "$BUCKETS" 2>/dev/null
started=$(now)
$bin/loyalty-engine --config "$work/engine.toml" --data-dir "$work/data" --log warn \
  import --program demo "$work/customers.jsonl" > "$results/import.txt"
import_seconds=$(since "$started")
grep -q " $SIZE imported, 0 imported before, 0 rejected" "$results/import.txt" || { cat "$results/import.txt"; exit 1; }

$bin/loyalty-engine --config "$work/engine.toml" --data-dir "$work/data" --credentials-file "$work/credentials.toml" \
  --listen 127.0.0.1:20720 --metrics-listen off --log warn > "$work/engine.out" 2>&1 &
engine=$!
wait_listening "$engine" "$work/engine.out"
$bin/loyalty-load --target 127.0.0.1:20720 --customers "$SIZE" --workload accrue --connections 4 --concurrency 16 \
  --duration "$DURATION" --warmup 0 --json "$results/accrue.json" > /dev/null
rss_before=$(rss_kib)

grpc() { .tools/bin/grpcurl -plaintext -max-time 900 -H "$auth" "$@"; }
started=$(now)
grpc -d '{"program_id":"demo","from":"2020-01-01","to":"2029-12-31"}' 127.0.0.1:20720 \
  loyalty.admin.v1.ProgramAdmin/ReadFigures > "$results/figures.json"
figures_seconds=$(since "$started")

# The candidate: cashback 2% instead of 1%, and a new rule for receipts of 5,000 or more.
candidate=$(python3 -c 'import json; print(json.dumps("""
[[rules]]
id = "base"
name = "cashback 2%"
effect = { kind = "percent_of_lines", percent = "2" }

[[rules]]
id = "big-receipt"
name = "100 points on receipts of 5,000 or more"
stacking = "always"
when.receipt = { min_total = "5000" }
effect = { kind = "fixed_points", points = "100" }
"""))')
started=$(now)
grpc -d "{\"program_id\":\"demo\",\"format\":\"DOCUMENT_FORMAT_TOML\",\"document\":$candidate,\"days\":30,\"max_seconds\":600,\"max_receipts\":10000000}" \
  127.0.0.1:20720 loyalty.admin.v1.ProgramAdmin/WhatIf > "$results/whatif.json"
whatif_seconds=$(since "$started")
rss_after=$(rss_kib)
rss_peak=$(awk '/^VmHWM/ {print $2}' "/proc/$engine/status")
kill "$engine" && wait "$engine" 2>/dev/null || true
engine=""
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "customers=$SIZE"
  echo "ledger_entries_imported=$((SIZE * BUCKETS))"
  echo "import_seconds=$import_seconds"
  echo "accrue_seconds=$DURATION"
  echo "read_figures_seconds=$figures_seconds"
  echo "whatif_seconds=$whatif_seconds"
  echo "rss_kib_before=$rss_before"
  echo "rss_kib_after=$rss_after"
  echo "rss_kib_peak=$rss_peak"
  python3 - "$results/whatif.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
decoder, messages, at = json.JSONDecoder(), [], 0
while at < len(text):
    while at < len(text) and text[at].isspace():
        at += 1
    if at >= len(text):
        break
    message, at = decoder.raw_decode(text, at)
    messages.append(message)
report = messages[-1].get("report", {})
print(f"whatif_messages={len(messages)}")
for key in ("accountsScanned", "receiptsEvaluated", "completed", "stoppedBy", "givenTotal", "candidateTotal", "liabilityChange"):
    print(f"whatif_{key}={report.get(key)}")
PY
} > "$results/summary.txt"
cat "$results/summary.txt"
