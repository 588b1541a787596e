#!/usr/bin/env bash
# A real 3-node Apache Cassandra 5.0 cluster on one machine, from Maven Central only
# (the ccm way: nodes on 127.0.0.1/.2/.3, same ports, one seed). See README.md beside this file.
#
#   cluster.sh up            fetch jars if needed, start missing nodes, wait for CQL + ring
#   cluster.sh down          SIGTERM all nodes, kill -9 after CASSANDRA_STOP_TIMEOUT seconds
#   cluster.sh kill N        kill -9 node N
#   cluster.sh stop N        SIGSTOP node N (frozen: alive for the OS, dead for the cluster)
#   cluster.sh cont N        SIGCONT node N
#   cluster.sh restart N     (stop N if it runs) start N on its data dir, wait for CQL + ring
#   cluster.sh status        per node: pid state and whether CQL answers
#   cluster.sh check         CQL on every node, each live node sees the others UP, and a read
#                            at consistency ALL over a RF=3 keyspace succeeds (no cqlsh needed);
#                            exit 1 if any node is down or frozen
#   cluster.sh selftest      LWTs + kill -9 / restart / SIGSTOP walk-through (leaves it healthy)
#   cluster.sh cql N STMT..  run statements on node N (env CQL_CL, CQL_SERIAL set consistency)
#   cluster.sh nodetool N .. nodetool over node N's localhost JMX port (7198+N)
#   cluster.sh logs N        tail node N's system.log
#   cluster.sh wipe          down, then delete all node data (keeps the jar cache)
#
# Environment (all optional):
#   CASSANDRA_WORK          work dir for configs, data, logs, pids   (/tmp/loyalty-cassandra)
#   CASSANDRA_LIB           jar cache filled by Maven                ($CASSANDRA_WORK/lib)
#   CASSANDRA_NODES         number of nodes, 1..9                    (3)
#   CASSANDRA_IP_PREFIX     node N listens on ${prefix}N             (127.0.0.)
#   CASSANDRA_HEAP          -Xmx per node                            (512m)
#   CASSANDRA_HEAP_MIN      -Xms per node                            (128m)
#                           (Cassandra mlockall()s as root: an -Xms equal to -Xmx pins it all)
#   CASSANDRA_GC            GC flag                                  (-XX:+UseSerialGC)
#   CASSANDRA_JVM_OPTS      extra JVM flags, appended last
#   CASSANDRA_COMMITLOG_SYNC  batch | group | periodic               (batch: ack after fsync)
#   CASSANDRA_PAXOS_VARIANT v1 | v2                                  (v1, Cassandra's default)
#   CASSANDRA_YAML_EXTRA    extra cassandra.yaml lines, appended (a later key wins)
#   CASSANDRA_START_TIMEOUT seconds to wait per node for CQL         (180)
#   CASSANDRA_RING_TIMEOUT  seconds to wait for the ring views       (120)
#   CASSANDRA_STOP_TIMEOUT  seconds between SIGTERM and kill -9      (30)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${CASSANDRA_WORK:-/tmp/loyalty-cassandra}"
LIB="${CASSANDRA_LIB:-$WORK/lib}"
NODES="${CASSANDRA_NODES:-3}"
HEAP="${CASSANDRA_HEAP:-512m}"
HEAP_MIN="${CASSANDRA_HEAP_MIN:-128m}"
GC="${CASSANDRA_GC:--XX:+UseSerialGC}"
SYNC="${CASSANDRA_COMMITLOG_SYNC:-batch}"
PAXOS="${CASSANDRA_PAXOS_VARIANT:-v1}"
START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-180}"
RING_TIMEOUT="${CASSANDRA_RING_TIMEOUT:-120}"
STOP_TIMEOUT="${CASSANDRA_STOP_TIMEOUT:-30}"
CQLPING="$HERE/cqlping.py"
NATIVE_PORT=9042
STORAGE_PORT=7000

log() { printf '[cassandra %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ "$NODES" =~ ^[1-9]$ ]] || die "CASSANDRA_NODES must be 1..9"
node_ok() { [[ "${1:-}" =~ ^[1-9]$ ]] && (( $1 <= NODES )) || die "node number must be 1..$NODES"; }
addr() { echo "${CASSANDRA_IP_PREFIX:-127.0.0.}$1"; }
ndir() { echo "$WORK/node$1"; }
syslog() { echo "$WORK/node$1/logs/system.log"; }

pid_of() { local f; f="$(ndir "$1")/pid"; [[ -s "$f" ]] && cat "$f" || true; }
# alive: the pid exists and is our Cassandra JVM (guards against pid reuse)
alive() {
  local p c; p="$(pid_of "$1")"
  [[ -n "$p" && -r "/proc/$p/cmdline" ]] || return 1
  c="$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" || return 1
  [[ "$c" == *CassandraDaemon* && "$c" == *"-Dcassandra.storagedir=$(ndir "$1") "* ]]
}
frozen() { local p; p="$(pid_of "$1")"; [[ -n "$p" ]] && [[ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" == T ]]; }
cql_ok() { python3 "$CQLPING" -q -t "${2:-3}" -H "$(addr "$1")" -p "$NATIVE_PORT"; }

# ---------------------------------------------------------------- jars (Maven Central only)
fetch_lib() {
  local stamp="$LIB/.pom.sha256" want
  want="$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && compgen -G "$LIB/cassandra-all-*.jar" >/dev/null; then
    return
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  log "fetching Cassandra jars from Maven Central into $LIB"
  rm -rf "$LIB.tmp" && mkdir -p "$LIB.tmp"
  (cd "$HERE" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory="$LIB.tmp" >&2) \
    || die "maven could not fetch the Cassandra classpath"
  compgen -G "$LIB.tmp/jamm-*.jar" >/dev/null || die "jamm (the javaagent) is missing from the classpath"
  rm -rf "$LIB" && mv "$LIB.tmp" "$LIB" && echo "$want" >"$stamp"
}

check_java() {
  command -v java >/dev/null || die "java not found (Cassandra 5.0 needs Java 17)"
  local v; v="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  [[ "${v%%.*}" == 17 ]] || log "warning: Cassandra 5.0 supports Java 11/17; this is java $v"
}

# ---------------------------------------------------------------- per-node config
token_of() {  # Murmur3: spread tokens evenly over [-2^63, 2^63)
  python3 -c "import sys; n,i=int(sys.argv[1]),int(sys.argv[2]); print(-2**63 + (i-1)*(2**64//n))" "$NODES" "$1"
}

write_conf() {
  local n="$1" d; d="$(ndir "$n")"
  mkdir -p "$d/conf" "$d/triggers" "$d/data" "$d/commitlog" "$d/saved_caches" "$d/hints" "$d/cdc_raw" "$d/logs"
  local sync_opts=""
  case "$SYNC" in
    batch) ;;
    group) sync_opts="commitlog_sync_group_window: 2ms" ;;
    periodic) sync_opts="commitlog_sync_period: 10000ms" ;;
    *) die "CASSANDRA_COMMITLOG_SYNC must be batch, group or periodic" ;;
  esac
  cat >"$d/conf/cassandra.yaml" <<EOF
# generated by tests/cassandra/cluster.sh for node $n; rewritten on every start
cluster_name: loyalty-test
num_tokens: 1
initial_token: $(token_of "$n")
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
auto_bootstrap: false          # a brand-new empty cluster: join with the given token, no streaming

listen_address: $(addr "$n")
rpc_address: $(addr "$n")
storage_port: $STORAGE_PORT
native_transport_port: $NATIVE_PORT
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$(addr 1):$STORAGE_PORT"
endpoint_snitch: SimpleSnitch

data_file_directories: [$d/data]
commitlog_directory: $d/commitlog
saved_caches_directory: $d/saved_caches
hints_directory: $d/hints
cdc_raw_directory: $d/cdc_raw

# durability: with batch an acknowledged write is fsynced to the commit log (survives kill -9)
commitlog_sync: $SYNC
$sync_opts
commitlog_segment_size: 16MiB
commitlog_total_space: 256MiB
disk_failure_policy: stop
commit_failure_policy: stop

authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
network_authorizer: AllowAllNetworkAuthorizer

paxos_variant: $PAXOS

# keep it light: 2 cores shared by 3 JVMs and the Rust tests
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 4
concurrent_materialized_view_writes: 2
concurrent_compactors: 1
memtable_flush_writers: 1
native_transport_max_threads: 32
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 8MiB
row_cache_size: 0MiB
counter_cache_size: 0MiB
file_cache_size: 32MiB
networking_cache_size: 16MiB
index_summary_capacity: 8MiB
prepared_statements_cache_size: 8MiB
compaction_throughput: 64MiB/s
auto_snapshot: false
snapshot_before_compaction: false
incremental_backups: false
cdc_enabled: false
trickle_fsync: false
hinted_handoff_enabled: true
max_hint_window: 3h
gc_warn_threshold: 2000ms
block_for_peers_timeout_in_secs: 3   # on start, wait at most 3 s (not 10) for known peers to connect

# Three JVMs and the tests share 2 cores: a Paxos round under contention takes longer than the
# defaults allow (cas_contention_timeout 1 s, writes 2 s). Still below the tests' 5 s driver
# timeout, so the server answers a definite timeout before the client gives up.
cas_contention_timeout: 3000ms
write_request_timeout: 3000ms
read_request_timeout: 3000ms
range_request_timeout: 4000ms
counter_write_request_timeout: 3000ms
EOF
  [[ -n "${CASSANDRA_YAML_EXTRA:-}" ]] && printf '%s\n' "$CASSANDRA_YAML_EXTRA" >>"$d/conf/cassandra.yaml"
  cat >"$d/conf/logback.xml" <<EOF
<configuration scan="false">
  <!-- system.log only (INFO); plain FileAppender so byte offsets stay valid for cluster.sh -->
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.FileAppender">
    <file>\${cassandra.logdir}/system.log</file>
    <append>true</append>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="SYSTEMLOG"/></root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
EOF
}

jpms_opts() {  # conf/jvm17-server.options: JPMS exports/opens Cassandra needs on Java 17
  printf '%s\n' \
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
    --add-exports java.sql/java.sql=ALL-UNNAMED \
    --add-exports java.base/java.lang.ref=ALL-UNNAMED \
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED \
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED \
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED \
    --add-opens java.base/java.lang.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED \
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
    --add-opens java.base/java.io=ALL-UNNAMED \
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED \
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED \
    --add-opens java.base/java.lang=ALL-UNNAMED \
    --add-opens java.base/java.util=ALL-UNNAMED \
    --add-opens java.base/java.util.concurrent=ALL-UNNAMED --add-opens java.base/java.net=ALL-UNNAMED
}

jvm_opts() {
  local n="$1" d jamm; d="$(ndir "$n")"
  jamm="$(compgen -G "$LIB/jamm-*.jar" | head -1)"
  # shellcheck disable=SC2206
  local extra=(${CASSANDRA_JVM_OPTS:-})
  local -a jpms; mapfile -t jpms < <(jpms_opts | tr ' ' '\n')
  local opts=(
    "-Xms$HEAP_MIN" "-Xmx$HEAP" -Xss256k "$GC" -XX:+ExitOnOutOfMemoryError
    -XX:+UseThreadPriorities -XX:+PerfDisableSharedMem -XX:+UseTLAB -XX:+ResizeTLAB
    "-XX:ErrorFile=$d/logs/hs_err_%p.log"
    -Djava.net.preferIPv4Stack=true
    -Djdk.attach.allowAttachSelf=true
    "-javaagent:$jamm"
    "${jpms[@]}"
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    # Cassandra
    "-Dcassandra.config=file://$d/conf/cassandra.yaml"
    "-Dcassandra.storagedir=$d"
    "-Dcassandra.logdir=$d/logs"
    "-Dcassandra.triggers_dir=$d/triggers"
    "-Dlogback.configurationFile=$d/conf/logback.xml"
    -Dcassandra-foreground=yes
    "-Dcassandra.jmx.local.port=$((7198 + n))"
    # fast start, as ccm/dtests do
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    "-Dcassandra.ring_delay_ms=${CASSANDRA_RING_DELAY_MS:-1000}"
    # NOT -Dcassandra.superuser_setup_delay_ms=0: its retry loop then spins (GBs of log) while peers are down
    "${extra[@]}"
  )
  printf '%s\n' "${opts[@]}"
}

# ---------------------------------------------------------------- lifecycle
log_size() { local f; f="$(syslog "$1")"; [[ -f "$f" ]] && stat -c %s "$f" || echo 0; }

tail_log() {
  local n="$1" f; f="$(syslog "$n")"
  log "---- last lines of node $n's $f ----"
  [[ -f "$f" ]] && tail -n "${2:-40}" "$f" >&2
  if [[ -s "$(ndir "$n")/logs/stdout.log" ]]; then
    log "---- last lines of node $n's stdout.log ----"; tail -n 20 "$(ndir "$n")/logs/stdout.log" >&2
  fi
}

start_node() {
  local n="$1" d; d="$(ndir "$n")"
  if alive "$n"; then log "node $n already running (pid $(pid_of "$n"))"; return; fi
  write_conf "$n"
  # offsets[i] = size of node i's system.log when node n starts: ring checks read only newer lines
  local i offs=()
  for ((i = 1; i <= NODES; i++)); do offs+=("$(log_size "$i")"); done
  printf '%s\n' "${offs[@]}" >"$d/started_offsets"
  local -a opts
  mapfile -t opts < <(jvm_opts "$n")
  # own session (start_new_session): the node outlives this script and ignores its signals
  MALLOC_ARENA_MAX=2 python3 - "$d/logs/stdout.log" java "${opts[@]}" -cp "$LIB/*" \
      org.apache.cassandra.service.CassandraDaemon >"$d/pid" <<'PY'
import subprocess, sys
out = open(sys.argv[1], "ab")
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                     start_new_session=True)
print(p.pid)
PY
  log "node $n starting on $(addr "$n") (pid $(pid_of "$n"))"
}

wait_cql() {
  local n="$1" t0=$SECONDS
  while ! cql_ok "$n" 3; do
    if ! alive "$n"; then log "node $n died during startup"; tail_log "$n"; return 1; fi
    if (( SECONDS - t0 > START_TIMEOUT )); then
      log "node $n: CQL not answering after ${START_TIMEOUT}s"; tail_log "$n"; return 1
    fi
    sleep 0.5
  done
  grep -q "Starting listening for CQL clients on /$(addr "$n"):$NATIVE_PORT" "$(syslog "$n")" \
    || log "warning: node $n answers CQL but its log lacks 'Starting listening for CQL clients'"
  log "node $n answers CQL on $(addr "$n"):$NATIVE_PORT ($((SECONDS - t0))s)"
}

# does live node i see node j as UP? (the newest gossip verdict about j in i's log since both started)
sees_up() {
  local i="$1" j="$2" a b off
  a="$(sed -n "${i}p" "$(ndir "$i")/started_offsets" 2>/dev/null || echo 0)"
  b="$(sed -n "${i}p" "$(ndir "$j")/started_offsets" 2>/dev/null || echo 0)"
  off=$(( ${a:-0} > ${b:-0} ? ${a:-0} : ${b:-0} ))
  tail -c +"$((off + 1))" "$(syslog "$i")" 2>/dev/null \
    | grep -E "(InetAddress /$(addr "$j"):$STORAGE_PORT is now (UP|DOWN))|(Node /$(addr "$j"):$STORAGE_PORT has restarted, now UP)" \
    | tail -n 1 | grep -q "UP$"
}

live_nodes() { local i; for ((i = 1; i <= NODES; i++)); do alive "$i" && ! frozen "$i" && echo "$i"; done; true; }

wait_ring() {
  local t0=$SECONDS i j missing
  local -a live; mapfile -t live < <(live_nodes)
  while :; do
    missing=""
    for i in "${live[@]}"; do for j in "${live[@]}"; do
      [[ "$i" == "$j" ]] && continue
      sees_up "$i" "$j" || missing+=" $i->$j"
    done; done
    [[ -z "$missing" ]] && break
    if (( SECONDS - t0 > RING_TIMEOUT )); then
      log "ring not converged after ${RING_TIMEOUT}s; not yet UP (viewer->node):$missing"
      for i in "${live[@]}"; do tail_log "$i" 15; done
      return 1
    fi
    sleep 0.5
  done
  log "ring: nodes ${live[*]} all see each other UP ($((SECONDS - t0))s)"
}

# a read at consistency ALL over system_distributed (RF=3 SimpleStrategy) needs every replica
probe_all() {
  local n="$1" t0=$SECONDS out
  while ! out="$(python3 "$CQLPING" -t 10 --cl ALL -H "$(addr "$n")" \
      "SELECT * FROM system_distributed.view_build_status LIMIT 1" 2>&1)"; do
    if (( SECONDS - t0 > 60 )); then log "read at ALL via node $n failed: $out"; return 1; fi
    sleep 1
  done
  log "read at consistency ALL via node $n: ok"
}

cmd_up() {
  local t0=$SECONDS n
  check_java
  fetch_lib
  mkdir -p "$WORK"
  for ((n = 1; n <= NODES; n++)); do
    if alive "$n"; then
      frozen "$n" && die "node $n is SIGSTOPped; run: $0 cont $n"
      cql_ok "$n" 3 && { log "node $n already up"; continue; }
    else
      start_node "$n"
    fi
    wait_cql "$n" || exit 1
  done
  wait_ring || exit 1
  (( NODES == 3 )) && { probe_all 1 || exit 1; }
  log "cluster up: $NODES node(s) in $((SECONDS - t0))s"
  cmd_status
}

stop_pids() {  # SIGTERM (the drain hook flushes), then kill -9 after STOP_TIMEOUT
  local n p t0=$SECONDS
  local -a ns=("$@")
  for n in "${ns[@]}"; do
    alive "$n" || continue
    p="$(pid_of "$n")"; log "stopping node $n (pid $p)"
    kill -TERM "$p" 2>/dev/null || true
    kill -CONT "$p" 2>/dev/null || true
  done
  for n in "${ns[@]}"; do
    while alive "$n"; do
      if (( SECONDS - t0 > STOP_TIMEOUT )); then
        log "node $n still running after ${STOP_TIMEOUT}s: kill -9"; kill -KILL "$(pid_of "$n")" 2>/dev/null || true
        sleep 0.5
      fi
      sleep 0.2
    done
    rm -f "$(ndir "$n")/pid"
  done
  log "stopped in $((SECONDS - t0))s"
}

cmd_down() {
  local -a all=(); local n
  for ((n = 1; n <= 9; n++)); do [[ -d "$(ndir "$n")" ]] && all+=("$n"); done
  local NODES=9
  stop_pids "${all[@]}"
}

cmd_status() {
  local n p state cql
  for ((n = 1; n <= NODES; n++)); do
    p="$(pid_of "$n")"
    if alive "$n"; then
      if frozen "$n"; then state="STOPPED(SIGSTOP)"; else state="running"; fi
      local rss; rss="$(awk '/VmRSS/ {printf "%d MiB", $2/1024}' "/proc/$p/status" 2>/dev/null)"
      state+=" pid=$p rss=$rss"
    else
      state="down"; p=""
    fi
    if [[ "$state" == running* ]] && cql_ok "$n" 3; then cql="CQL up"; else cql="CQL no"; fi
    printf 'node%s %-10s %s, %s\n' "$n" "$(addr "$n")" "$state" "$cql"
  done
}

cmd_check() {
  local n j bad=0 rel peers
  local -a live; mapfile -t live < <(live_nodes)
  for ((n = 1; n <= NODES; n++)); do
    alive "$n" || { echo "node$n: DOWN"; bad=1; continue; }
    frozen "$n" && { echo "node$n: STOPPED (SIGSTOP)"; bad=1; }
  done
  (( ${#live[@]} )) || die "no live node"
  for n in "${live[@]}"; do
    if ! rel="$(python3 "$CQLPING" -t 5 -H "$(addr "$n")" 2>&1)"; then
      echo "node$n: CQL FAILED: $rel"; bad=1; continue
    fi
    peers="$(python3 "$CQLPING" -t 5 -H "$(addr "$n")" "SELECT peer FROM system.peers" 2>&1 | sed 's/peer=//' | sort | tr '\n' ' ')"
    local ups=""
    for j in "${live[@]}"; do [[ "$j" != "$n" ]] && { sees_up "$n" "$j" && ups+=" $j" || { ups+=" !$j"; bad=1; }; }; done
    echo "node$n: $rel; peers: $peers; sees UP:${ups:- (alone)}"
  done
  if (( ${#live[@]} == NODES && NODES == 3 )); then probe_all "${live[0]}" || bad=1; fi
  return $bad
}

cmd_restart() {
  local n="$1" t0=$SECONDS
  alive "$n" && stop_pids "$n"
  check_java; fetch_lib
  start_node "$n"
  wait_cql "$n" || exit 1
  wait_ring || exit 1
  log "node $n restarted in $((SECONDS - t0))s"
}

# LWT + fault walk-through on a healthy 3-node cluster; leaves it up and healthy
cmd_selftest() {
  (( NODES == 3 )) || die "selftest needs 3 nodes"
  local t0=$SECONDS ks=cluster_selftest
  q() { local n="$1" cl="$2"; shift 2; python3 "$CQLPING" -t 15 -H "$(addr "$n")" --cl "$cl" --serial SERIAL "$@"; }
  # retried for up to 60 s: right after a kill -9 / SIGSTOP a coordinator may still pick the dead
  # replica (until gossip convicts it) and time out; the notes say how long that took
  # WANT may list alternatives as "A||B": a timed-out LWT has an unknown outcome and may have
  # committed, so its retry may legitimately answer [applied]=False with the new value
  expect() { local want="$1" got tries=0 t=$SECONDS first="" w ok; shift
    while :; do
      got="$("$@" 2>&1)" || true; tries=$((tries + 1)); ok=""
      while IFS= read -r w; do [[ -n "$w" && "$got" == *"$w"* ]] && ok=1; done <<<"${want//||/$'\n'}"
      [[ -n "$ok" ]] && break
      [[ -z "$first" ]] && first="$got"
      (( SECONDS - t > 60 )) && die "selftest: expected '$want' from '$*', got: $got"
      sleep 1
    done
    echo "  ok: ${*: -1} -> $got${first:+  (after $tries tries, $((SECONDS - t))s; first answer: $first)}"; }
  cmd_check >/dev/null || die "selftest: cluster not healthy; run: $0 check"
  q 1 ONE "DROP KEYSPACE IF EXISTS $ks" \
    "CREATE KEYSPACE $ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}" \
    "CREATE TABLE $ks.t (id text PRIMARY KEY, v int)" >/dev/null
  expect "[applied]=True" q 1 QUORUM "INSERT INTO $ks.t (id, v) VALUES ('k', 1) IF NOT EXISTS"
  expect "[applied]=False, id=k, v=1" q 2 QUORUM "INSERT INTO $ks.t (id, v) VALUES ('k', 9) IF NOT EXISTS"
  kill -KILL "$(pid_of 2)"; echo "  node 2 killed (-9)"
  expect "OK" q 1 QUORUM "INSERT INTO $ks.t (id, v) VALUES ('w', 1)"
  expect "[applied]=True||[applied]=False, v=2" q 3 QUORUM "UPDATE $ks.t SET v = 2 WHERE id = 'k' IF v = 1"
  cmd_restart 2
  expect "id=k, v=2" q 2 SERIAL "SELECT * FROM $ks.t WHERE id = 'k'"
  kill -STOP "$(pid_of 3)"; echo "  node 3 frozen (SIGSTOP); waiting for node 1 to mark it DOWN"
  local t1=$SECONDS off; off="$(log_size 1)"
  until tail -c +"$((off + 1))" "$(syslog 1)" | grep -q "InetAddress /$(addr 3):$STORAGE_PORT is now DOWN"; do
    (( SECONDS - t1 > 90 )) && { kill -CONT "$(pid_of 3)"; die "selftest: node 3 never marked DOWN"; }
    sleep 1
  done
  echo "  node 3 marked DOWN after $((SECONDS - t1))s"
  expect "[applied]=True||[applied]=False, v=3" q 1 QUORUM "UPDATE $ks.t SET v = 3 WHERE id = 'k' IF v = 2"
  kill -CONT "$(pid_of 3)"; echo "  node 3 continued (SIGCONT)"
  t1=$SECONDS
  until cmd_check >/dev/null 2>&1; do (( SECONDS - t1 > 90 )) && die "selftest: cluster not healthy after SIGCONT"; sleep 1; done
  echo "  cluster healthy again $((SECONDS - t1))s after SIGCONT"
  expect "id=k, v=3" q 3 ALL "SELECT * FROM $ks.t WHERE id = 'k'"
  q 1 ONE "DROP KEYSPACE $ks" >/dev/null
  log "selftest passed in $((SECONDS - t0))s"
}

cmd_nodetool() {
  local n="$1"; shift
  fetch_lib
  local -a jpms; mapfile -t jpms < <(jpms_opts | tr ' ' '\n')
  mkdir -p "$WORK"
  cat >"$WORK/logback-tools.xml" <<'EOF'
<configuration><appender name="E" class="ch.qos.logback.core.ConsoleAppender"><target>System.err</target>
<encoder><pattern>%-5level %msg%n</pattern></encoder></appender><root level="WARN"><appender-ref ref="E"/></root></configuration>
EOF
  java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$LIB/*" "${jpms[@]}" \
    -Dcassandra.logdir="$(ndir "$n")/logs" -Dlogback.configurationFile="$WORK/logback-tools.xml" \
    org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p "$((7198 + n))" "$@"
}

sub="${1:-}"; shift || true
case "$sub" in
  up) cmd_up ;;
  down) cmd_down ;;
  kill) node_ok "${1:-}"; alive "$1" || die "node $1 is not running"
        kill -KILL "$(pid_of "$1")"; log "node $1 killed (-9)" ;;
  stop) node_ok "${1:-}"; alive "$1" || die "node $1 is not running"
        kill -STOP "$(pid_of "$1")"; log "node $1 frozen (SIGSTOP)" ;;
  cont) node_ok "${1:-}"; alive "$1" || die "node $1 is not running"
        kill -CONT "$(pid_of "$1")"; log "node $1 continued (SIGCONT)" ;;
  restart|start) node_ok "${1:-}"; cmd_restart "$1" ;;
  status) cmd_status ;;
  check) cmd_check ;;
  selftest) cmd_selftest ;;
  cql) node_ok "${1:-}"; n="$1"; shift
       python3 "$CQLPING" -H "$(addr "$n")" --cl "${CQL_CL:-ONE}" ${CQL_SERIAL:+--serial "$CQL_SERIAL"} "$@" ;;
  nodetool) node_ok "${1:-}"; cmd_nodetool "$@" ;;
  logs) node_ok "${1:-}"; tail -n "${2:-50}" "$(syslog "$1")" ;;
  wipe) cmd_down; rm -rf "$WORK"/node[1-9]; log "wiped node data under $WORK (jar cache kept)" ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
     [[ -z "$sub" || "$sub" == help || "$sub" == -h || "$sub" == --help ]] || exit 2 ;;
esac
