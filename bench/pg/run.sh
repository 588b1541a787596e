#!/usr/bin/env bash
# PostgreSQL baseline for the loyalty engine: the same durable accrue/redeem transactions
# (idempotency row + balance update + ledger row, fsync before the answer) driven by pgbench on
# loopback. See README.md.
#
#   bash bench/pg/run.sh [RESULTS_JSON]        (default: bench/pg/results.json)
#
# Environment: DURATION (seconds per measured run, default 10), WARMUP (seconds of unlogged
# warm-up before each run, default 2), CUSTOMERS (default 2000), PGPORT (first port tried,
# default 55432), CLIENTS (default "1 16 64"), WORKLOADS (default "accrue redeem").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/results.json}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CUSTOMERS="${CUSTOMERS:-2000}"
PGPORT="${PGPORT:-55432}"
CLIENTS="${CLIENTS:-1 16 64}"
WORKLOADS="${WORKLOADS:-accrue redeem}"
HOT=$(( CUSTOMERS < 10 ? CUSTOMERS : 10 ))
started_at=$SECONDS

log() { printf '[pg-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer"
[[ "$CUSTOMERS" =~ ^[1-9][0-9]*$ ]] || die "CUSTOMERS must be a positive integer"
[[ "$PGPORT" =~ ^[1-9][0-9]*$ ]] || die "PGPORT must be a port number"
for w in $WORKLOADS; do [[ -f "$here/$w.sql" ]] || die "no script $here/$w.sql"; done

# --- 1. PostgreSQL binaries -------------------------------------------------------------------
find_bindir() {
    local d
    # Newest major version first.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
        [[ -x "$d/initdb" ]] && { echo "$d"; return 0; }
    done
    return 1
}
if ! bindir="$(find_bindir)"; then
    log "PostgreSQL not found; installing the Debian package"
    [[ $EUID -eq 0 ]] || die "PostgreSQL is missing and installing it needs root"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bindir="$(find_bindir)" || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
fi
pgbench_bin="$bindir/pgbench"; [[ -x "$pgbench_bin" ]] || pgbench_bin="$(command -v pgbench)"
psql_bin="$bindir/psql"; [[ -x "$psql_bin" ]] || psql_bin="$(command -v psql)"
log "using $bindir ($("$bindir/postgres" --version))"

# --- 2. A throwaway cluster ---------------------------------------------------------------------
# postgres refuses to run as root: run the server as an unprivileged user.
as_db=()
if [[ $EUID -eq 0 ]]; then
    if id -u postgres >/dev/null 2>&1; then
        dbuser=postgres
    else
        id -u pgbench >/dev/null 2>&1 || useradd -m -s /bin/bash pgbench
        dbuser=pgbench
    fi
    as_db=(runuser -u "$dbuser" --)
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/pg-baseline.XXXXXX")"
data="$tmp/data"
mkdir -p "$tmp/logs"
[[ ${#as_db[@]} -eq 0 ]] || chown "$dbuser" "$tmp"
chmod 755 "$tmp"

server_started=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $server_started -eq 1 ]]; then
        "${as_db[@]}" "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || "${as_db[@]}" "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ $rc -ne 0 && -f "$tmp/server.log" ]]; then
        log "failed (exit $rc); last lines of the server log:"
        tail -n 20 "$tmp/server.log" >&2 || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port="$PGPORT"
for _ in $(seq 1 50); do port_busy "$port" || break; port=$((port + 1)); done
port_busy "$port" && die "no free port in $PGPORT..$port"

log "initdb in $tmp"
"${as_db[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; die "initdb failed"; }

# Durability as the engine's: every commit waits for its WAL fsync. Everything else is default
# (wal_sync_method, full_page_writes, commit_delay = 0, checkpoints), except the sizes below.
server_opts="-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$tmp"
server_opts+=" -c fsync=on -c synchronous_commit=on -c max_connections=200 -c shared_buffers=256MB"
"${as_db[@]}" "$bindir/pg_ctl" -D "$data" -l "$tmp/server.log" -o "$server_opts" -w -t 60 start >/dev/null
server_started=1
log "server on 127.0.0.1:$port"

export PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
psql_q() { "$psql_bin" -X -q -v ON_ERROR_STOP=1 "$@"; }

pg_version="$(psql_q -At -c 'SHOW server_version')"
settings_json="$(psql_q -At -c "SELECT json_object_agg(name, current_setting(name) ORDER BY name) FROM pg_settings
    WHERE name IN ('fsync','synchronous_commit','wal_sync_method','full_page_writes','commit_delay',
                   'shared_buffers','max_connections','wal_level','max_wal_size','checkpoint_timeout')")"
log "settings: $settings_json"

# --- 3. Schema and seed -------------------------------------------------------------------------
log "schema, $CUSTOMERS customers with 1000 points each"
psql_q -v customers="$CUSTOMERS" -f "$here/schema.sql" >/dev/null

# --- 4/5. Runs ----------------------------------------------------------------------------------
# Percentiles by nearest rank over every transaction of the run (the 3rd column of pgbench's
# per-transaction log is its latency in microseconds).
latency_stats() {  # files... -> "n avg p50 p90 p99 p999 max"
    awk '{ print $3 }' "$@" | sort -n | awk '
        { v[NR] = $1; s += $1 }
        function rank(p,   k) { k = int(p * NR); if (k < p * NR) k++; if (k < 1) k = 1; return v[k] }
        END {
            if (NR == 0) { print "0 0 0 0 0 0 0"; exit }
            printf "%d %.1f %d %d %d %d %d\n", NR, s / NR, rank(0.50), rank(0.90), rank(0.99), rank(0.999), v[NR]
        }'
}

rows="$tmp/rows.tsv"; : >"$rows"
for w in $WORKLOADS; do
    for c in $CLIENTS; do
        j=$(( c < 2 ? c : 2 ))
        tag="${w:0:1}$c"
        # Start each run from a clean slate: no dead tuples, no dirty buffers, fresh checkpoint.
        psql_q -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
        common=(-n -M prepared -c "$c" -j "$j" -f "$here/$w.sql"
                -D customers="$CUSTOMERS" -D hot="$HOT")
        if [[ $WARMUP -gt 0 ]]; then
            "$pgbench_bin" "${common[@]}" -D run="warm-$tag" -T "$WARMUP" >"$tmp/warm-$tag.out" 2>&1 \
                || { cat "$tmp/warm-$tag.out" >&2; die "pgbench warm-up $w c=$c failed"; }
        fi
        log "$w: $c clients, $j threads, ${DURATION}s"
        prefix="$tmp/logs/$w-$c"
        if ! "$pgbench_bin" "${common[@]}" -D run="$tag" -T "$DURATION" \
                --log --log-prefix="$prefix" >"$tmp/$tag.out" 2>&1; then
            cat "$tmp/$tag.out" >&2; die "pgbench $w c=$c failed"
        fi
        tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$tmp/$tag.out")"
        [[ -n "$tps" ]] || { cat "$tmp/$tag.out" >&2; die "no tps in pgbench output"; }
        failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$tmp/$tag.out")"
        shopt -s nullglob; files=("$prefix".*); shopt -u nullglob
        [[ ${#files[@]} -gt 0 ]] || die "no pgbench log for $w c=$c"
        read -r n avg p50 p90 p99 p999 max < <(latency_stats "${files[@]}")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
            "$w" "$c" "$j" "$tps" "$n" "${failed:-0}" "$avg" "$p50" "$p90" "$p99" "$p999" "$max" >>"$rows"
        rm -f "${files[@]}"
    done
done

# --- Sanity: every ledger sums to its balance; one ledger row per applied receipt ----------------
bad="$(psql_q -At -c "SELECT count(*) FROM accounts a
    LEFT JOIN (SELECT account_id, sum(amount) s FROM ledger GROUP BY account_id) l USING (account_id)
    WHERE a.balance <> coalesce(l.s, 0)")"
counts="$(psql_q -At -F ' ' -c "SELECT (SELECT count(*) FROM receipts),
    (SELECT count(*) FROM receipts WHERE response ? 'error'),
    (SELECT count(*) FROM ledger WHERE kind <> 'seed')")"
read -r n_receipts n_refused n_ledger <<<"$counts"
[[ "$bad" == 0 ]] || die "$bad accounts whose ledger does not sum to the balance"
[[ $((n_receipts - n_refused)) -eq "$n_ledger" ]] \
    || die "receipts ($n_receipts, $n_refused refused) and ledger rows ($n_ledger) disagree"
log "check: $n_receipts receipts ($n_refused refused for insufficient points), $n_ledger ledger rows, every ledger sums to its balance"

# --- 6. Results -----------------------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
python3 - "$rows" "$out" "$pg_version" "$settings_json" "$DURATION" "$WARMUP" "$CUSTOMERS" "$(nproc)" \
    "$n_receipts" "$n_refused" <<'PY'
import json, sys, datetime
rows, out, version, settings, duration, warmup, customers, cpus, n_receipts, n_refused = sys.argv[1:]
workloads = {}
for line in open(rows):
    w, c, j, tps, n, failed, avg, p50, p90, p99, p999, mx = line.rstrip("\n").split("\t")
    workloads.setdefault(w, {})[c] = {
        "tps": round(float(tps), 1), "p50_us": int(p50), "p90_us": int(p90), "p99_us": int(p99),
        "p999_us": int(p999), "avg_us": round(float(avg), 1), "max_us": int(mx),
        "transactions": int(n), "failed": int(failed), "threads": int(j),
    }
result = {
    "postgres_version": version,
    "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "duration_s": int(duration), "warmup_s": int(warmup), "customers": int(customers),
    "cpus": int(cpus), "driver": "pgbench -M prepared, loopback TCP", "settings": json.loads(settings),
    "receipts_written": int(n_receipts), "redeems_refused": int(n_refused),
    "workloads": workloads,
}
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(f"PostgreSQL {version}: {duration}s per run, {customers} customers, {cpus} CPUs, latency in microseconds")
print(f"{'workload':<9}{'clients':>8}{'tps':>11}{'avg':>9}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>9}")
for w, by_c in workloads.items():
    for c, r in by_c.items():
        print(f"{w:<9}{c:>8}{r['tps']:>11,.1f}{r['avg_us']:>9,.0f}{r['p50_us']:>8,}{r['p90_us']:>8,}"
              f"{r['p99_us']:>8,}{r['p999_us']:>8,}{r['max_us']:>9,}")
PY
log "results in $out; total $((SECONDS - started_at))s"
