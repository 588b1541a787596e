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
