# Shell helpers shared by .ci/run, bench/run.sh and loadtest/overload.sh (source it; bash).

# Waits for a server's "listening on" line in its output file: wait_listening PID FILE.
# Fails if the server exits or never gets there.
wait_listening() {
  for _ in $(seq 1 200); do
    grep -q "listening on" "$2" && return 0
    kill -0 "$1" 2>/dev/null || { echo "server $1 exited:" >&2; cat "$2" >&2; return 1; }
    sleep 0.05
  done
  echo "server $1 did not start:" >&2; cat "$2" >&2; return 1
}

# Makes a checkout key for a load driver: load_key BIN_DIR DIR PROGRAM ID.
# Exports LOYALTY_API_KEY (read by loyalty-load and the ghz configs) and writes the key's digest to
# DIR/credentials.toml for the engine's --credentials-file. One key carries all the load, so the
# engine's config should lift the per-key rate limit (load_engine_toml does).
load_key() {
  "$1/loyalty-engine" keygen --program "$3" --id "$4" --scopes checkout > "$2/keygen.out"
  LOYALTY_API_KEY=$(head -n 1 "$2/keygen.out")
  export LOYALTY_API_KEY
  tail -n +3 "$2/keygen.out" > "$2/credentials.toml"
}

# Writes an engine config for load tests: load_engine_toml FILE [LIMITS_LINES].
# Program "demo" with points spendable at once (the seeded customers can spend), the per-key rate
# limit lifted, and optional [limits] lines (printf %b escapes).
load_engine_toml() {
  printf '[[programs]]\nid = "demo"\npending = "none"\n[security]\nrate_per_second_default = 1000000\nburst_default = 1000000\n[limits]\n%b' "${2:-}" > "$1"
}

# Runs ghz and checks its JSON report: ghz_checked OUT.json EXPECTED GHZ_ARGS...
# Every call must be OK and, unless EXPECTED is "-", exactly EXPECTED calls counted. The ghz binary
# is $GHZ (default .tools/bin/ghz, installed by .ci/tools.sh). The report is kept without ghz's
# per-call "details" (a few MB per run, and the totals and distributions say all we read), so that
# results committed under bench/ stay small.
ghz_checked() {
  local out=$1 expected=$2
  shift 2
  "${GHZ:-.tools/bin/ghz}" "$@" -O json -o "$out"
  python3 - "$out" "$expected" <<'PY'
import json, sys
path, expected = sys.argv[1], sys.argv[2]
report = json.load(open(path))
if report.pop("details", None) is not None:
    with open(path, "w") as slim:
        json.dump(report, slim)
codes = report.get("statusCodeDistribution") or {}
ok = codes.get("OK", 0)
problems = []
if set(codes) != {"OK"}:
    problems.append(f"status codes {codes}, errors {report.get('errorDistribution')}")
if expected != "-" and (report.get("count") != int(expected) or ok != int(expected)):
    problems.append(f"{report.get('count')} calls counted, {ok} OK; expected {expected}")
p = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
print(f"ghz {path}: {report.get('count')} calls, {report.get('rps', 0):.0f} rps, p50 {p.get(50, float('nan')):.2f} ms, p99 {p.get(99, float('nan')):.2f} ms, codes {codes}")
if problems:
    sys.exit(f"ghz {path}: " + "; ".join(problems))
PY
}
