//! Connections: framing, the handshake, and dispatch of requests to the executor.

use crate::cql::{self, Parsed};
use crate::error::CqlError;
use crate::exec::{self, BatchStatement, ColSpec, Counters, ExecConfig, Outcome, PreparedMeta, Request};
use crate::store::Store;
use crate::wire::{self, BatchItem, BatchRequest, QueryParams, Reader, Writer, flag, opcode};
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// How many executed statement texts are kept for [`crate::StandIn::statements`].
const LOG_CAPACITY: usize = 10_000;

#[derive(Debug)]
pub(crate) struct PreparedEntry {
    pub query: String,
    pub keyspace: Option<String>,
    pub parsed: Parsed,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub store: Store,
    pub prepared: HashMap<Vec<u8>, Arc<PreparedEntry>>,
    pub counters: Counters,
    pub log: VecDeque<String>,
    pub requests: u64,
    pub prepares: u64,
    pub unprepared: u64,
    pub errors: u64,
    pub connections: u64,
}

impl State {
    fn log(&mut self, q: &str) {
        if self.log.len() >= LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(q.to_owned());
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub exec: ExecConfig,
    pub credentials: Option<(String, String)>,
    pub conns: Mutex<HashMap<u64, AbortHandle>>,
    pub next_conn: AtomicU64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the stand-in; keep serving anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn lock_conns(&self) -> MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // Transient accept errors (e.g. too many open files): back off briefly.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        shared.lock().connections += 1;
        let mut conns = shared.lock_conns();
        let s = Arc::clone(&shared);
        let handle = tokio::spawn(async move {
            serve(stream, &s).await;
            s.lock_conns().remove(&id);
        });
        conns.insert(id, handle.abort_handle());
    }
}

#[derive(Debug, Default)]
struct Conn {
    started: bool,
    authenticated: bool,
    keyspace: Option<String>,
}

async fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut conn = Conn::default();
    loop {
        quickack(&rd);
        let mut header = [0u8; 9];
        if rd.read_exact(&mut header).await.is_err() {
            return;
        }
        quickack(&rd);
        let version = header[0];
        let flags = header[1];
        let stream_id = i16::from_be_bytes([header[2], header[3]]);
        let op = header[4];
        let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
        if version & 0x80 != 0 || len > wire::MAX_BODY {
            let e = CqlError::protocol("invalid frame (response direction bit set or body too large)");
            let _ = wr.write_all(&wire::frame(stream_id, opcode::ERROR, &e.body())).await;
            return;
        }
        let mut body = vec![0u8; len];
        if rd.read_exact(&mut body).await.is_err() {
            return;
        }
        let v = version & 0x7f;
        if v != 4 {
            // The driver speaks v4 only; a client trying another version (e.g. v5 first) gets the
            // error Cassandra sends, with the supported versions, and may retry with v4.
            let e = CqlError::protocol(format!("Invalid or unsupported protocol version ({v}); supported versions are (4/v4)"));
            let resp = wire::frame_with_version(0x84, stream_id, opcode::ERROR, &e.body());
            if wr.write_all(&resp).await.is_err() || !(3..=5).contains(&v) {
                return;
            }
            continue;
        }
        let (resp_op, resp_body) = match handle(shared, &mut conn, flags, op, &body) {
            Ok(r) => r,
            Err(e) => {
                shared.lock().errors += 1;
                (opcode::ERROR, e.body())
            }
        };
        if wr.write_all(&wire::frame(stream_id, resp_op, &resp_body)).await.is_err() {
            return;
        }
    }
}

/// Asks the kernel to acknowledge received data at once. A client that writes a frame header and
/// body in two segments without TCP_NODELAY (scylla-proxy does) would otherwise wait for the
/// delayed ACK of the header (~40 ms on Linux) before sending the body. Quick-ack mode does not
/// stick, so it is re-armed around every read.
fn quickack(rd: &BufReader<tokio::net::tcp::OwnedReadHalf>) {
    #[cfg(target_os = "linux")]
    {
        let stream: &TcpStream = rd.get_ref().as_ref();
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = rd;
}

fn supported() -> Vec<u8> {
    let mut out = Vec::new();
    out.put_short(2);
    out.put_string("CQL_VERSION");
    out.put_string_list(&["3.3.1"]);
    out.put_string("COMPRESSION");
    out.put_string_list(&[]);
    out
}

fn op_name(op: u8) -> &'static str {
    match op {
        opcode::QUERY => "QUERY",
        opcode::PREPARE => "PREPARE",
        opcode::EXECUTE => "EXECUTE",
        opcode::BATCH => "BATCH",
        opcode::REGISTER => "REGISTER",
        opcode::AUTH_RESPONSE => "AUTH_RESPONSE",
        _ => "request",
    }
}

fn handle(shared: &Shared, conn: &mut Conn, flags: u8, op: u8, body: &[u8]) -> Result<(u8, Vec<u8>), CqlError> {
    let mut r = Reader::new(body);
    if flags & flag::COMPRESSION != 0 {
        return Err(CqlError::protocol("compressed frame received, but no compression was negotiated (the stand-in supports none)"));
    }
    if flags & flag::CUSTOM_PAYLOAD != 0 {
        r.skip_bytes_map()?;
    }
    shared.lock().requests += 1;
    match op {
        opcode::OPTIONS => return Ok((opcode::SUPPORTED, supported())),
        opcode::STARTUP => {
            let options = r.string_map("STARTUP options")?;
            if let Some((_, c)) = options.iter().find(|(k, _)| k == "COMPRESSION")
                && !c.is_empty()
            {
                return Err(CqlError::protocol(format!("Unknown compression algorithm: {c} (the stand-in supports none)")));
            }
            conn.started = true;
            if shared.credentials.is_some() {
                let mut out = Vec::new();
                out.put_string("org.apache.cassandra.auth.PasswordAuthenticator");
                return Ok((opcode::AUTHENTICATE, out));
            }
            conn.authenticated = true;
            return Ok((opcode::READY, Vec::new()));
        }
        opcode::AUTH_RESPONSE => {
            let Some((user, pass)) = &shared.credentials else {
                return Err(CqlError::protocol("Unexpected AUTH_RESPONSE: authentication is not enabled"));
            };
            if !conn.started {
                return Err(CqlError::protocol("Unexpected message AUTH_RESPONSE, expecting STARTUP or OPTIONS"));
            }
            let token = r.bytes("auth token")?.unwrap_or_default();
            // SASL PLAIN: [authzid] 0x00 user 0x00 password
            let parts: Vec<&[u8]> = token.split(|&b| b == 0).collect();
            let (u, p) = match parts.as_slice() {
                [_, u, p] => (*u, *p),
                _ => return Err(CqlError::bad_credentials("Authentication failed: malformed PLAIN token")),
            };
            if u == user.as_bytes() && p == pass.as_bytes() {
                conn.authenticated = true;
                let mut out = Vec::new();
                out.put_bytes(None);
                return Ok((opcode::AUTH_SUCCESS, out));
            }
            return Err(CqlError::bad_credentials(format!(
                "Provided username {} and/or password are incorrect",
                String::from_utf8_lossy(u)
            )));
        }
        _ => {}
    }
    if !conn.started {
        return Err(CqlError::protocol(format!("Unexpected message {}, expecting STARTUP or OPTIONS", op_name(op))));
    }
    if !conn.authenticated {
        return Err(CqlError::protocol(format!("Unexpected message {}, expecting AUTH_RESPONSE", op_name(op))));
    }
    match op {
        opcode::REGISTER => {
            // Events are never sent (nothing in a single in-memory node changes on its own except
            // schema, which the driver also learns from SCHEMA_CHANGE results).
            r.string_list("event types")?;
            Ok((opcode::READY, Vec::new()))
        }
        opcode::QUERY => {
            let query = r.long_string("query string")?;
            let params = QueryParams::read(&mut r)?;
            let parsed = cql::parse(&query)?;
            let keyspace = conn.keyspace.clone();
            let mut st = shared.lock();
            st.log(&query);
            run(shared, &mut st, conn, keyspace.as_deref(), &parsed, &params)
        }
        opcode::PREPARE => {
            let query = r.long_string("query string")?;
            let parsed = cql::parse(&query)?;
            let mut st = shared.lock();
            let meta = exec::prepare(&st.store, &shared.exec, conn.keyspace.as_deref(), &parsed)?;
            let id = prepared_id(conn.keyspace.as_deref(), &query);
            st.prepares += 1;
            st.prepared.insert(id.clone(), Arc::new(PreparedEntry { query, keyspace: conn.keyspace.clone(), parsed }));
            Ok((opcode::RESULT, encode_prepared(&id, &meta)))
        }
        opcode::EXECUTE => {
            let id = r.short_bytes("prepared id")?;
            let params = QueryParams::read(&mut r)?;
            let mut st = shared.lock();
            let Some(entry) = st.prepared.get(&id).cloned() else {
                st.unprepared += 1;
                return Err(CqlError::unprepared(&id));
            };
            st.log(&entry.query);
            run(shared, &mut st, conn, entry.keyspace.as_deref(), &entry.parsed, &params)
        }
        opcode::BATCH => {
            let batch = BatchRequest::read(&mut r)?;
            execute_batch(shared, conn, &batch)
        }
        other => Err(CqlError::protocol(format!("Unknown or unexpected opcode 0x{other:02x}"))),
    }
}

fn run(
    shared: &Shared,
    st: &mut State,
    conn: &mut Conn,
    keyspace: Option<&str>,
    parsed: &Parsed,
    params: &QueryParams,
) -> Result<(u8, Vec<u8>), CqlError> {
    let req = Request {
        values: &params.values,
        page_size: params.page_size,
        paging_state: params.paging_state.as_deref(),
        consistency: params.consistency,
    };
    let State { store, counters, .. } = st;
    let outcome = exec::execute(store, &shared.exec, keyspace, parsed, &req, counters)?;
    if let Outcome::SetKeyspace(ks) = &outcome {
        conn.keyspace = Some(ks.clone());
    }
    Ok((opcode::RESULT, encode_outcome(&outcome)))
}

fn execute_batch(shared: &Shared, conn: &Conn, batch: &BatchRequest) -> Result<(u8, Vec<u8>), CqlError> {
    let mut st = shared.lock();
    // Parse / look up every statement first.
    let mut entries: Vec<(Option<String>, Arc<PreparedEntry>)> = Vec::new();
    for (item, _) in &batch.items {
        match item {
            BatchItem::Query(q) => {
                let parsed = cql::parse(q)?;
                let e = PreparedEntry { query: q.clone(), keyspace: conn.keyspace.clone(), parsed };
                entries.push((conn.keyspace.clone(), Arc::new(e)));
            }
            BatchItem::Prepared(id) => match st.prepared.get(id) {
                Some(e) => entries.push((e.keyspace.clone(), Arc::clone(e))),
                None => {
                    st.unprepared += 1;
                    return Err(CqlError::unprepared(id));
                }
            },
        }
    }
    for (_, e) in &entries {
        st.log(&e.query);
    }
    let items: Vec<BatchStatement<'_>> = entries
        .iter()
        .zip(&batch.items)
        .map(|((ks, e), (_, values))| BatchStatement { keyspace: ks.clone(), parsed: &e.parsed, values })
        .collect();
    let State { store, counters, .. } = &mut *st;
    let outcome = exec::execute_batch(store, &shared.exec, batch.kind, &items, batch.consistency, counters)?;
    Ok((opcode::RESULT, encode_outcome(&outcome)))
}

/// Like Cassandra, the ID depends on the statement text and the keyspace it was prepared in, so
/// re-preparing after a restart yields the same ID.
fn prepared_id(keyspace: Option<&str>, query: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    for salt in [0x51u8, 0xa7] {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, keyspace, query).hash(&mut h);
        out.extend_from_slice(&h.finish().to_be_bytes());
    }
    out
}

fn write_specs(out: &mut Vec<u8>, cols: &[ColSpec]) {
    let global = cols.first().filter(|f| cols.iter().all(|c| c.keyspace == f.keyspace && c.table == f.table));
    if let Some(g) = global {
        out.put_string(&g.keyspace);
        out.put_string(&g.table);
    }
    for c in cols {
        if global.is_none() {
            out.put_string(&c.keyspace);
            out.put_string(&c.table);
        }
        out.put_string(&c.name);
        c.typ.write_option(out);
    }
}

fn global_flag(cols: &[ColSpec]) -> i32 {
    let same = cols.first().is_some_and(|f| cols.iter().all(|c| c.keyspace == f.keyspace && c.table == f.table));
    i32::from(same)
}

fn encode_prepared(id: &[u8], meta: &PreparedMeta) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_int(0x0004);
    out.put_short_bytes(id);
    // Prepared (bind variable) metadata.
    out.put_int(global_flag(&meta.bind));
    out.put_int(meta.bind.len() as i32);
    out.put_int(meta.pk_indexes.len() as i32);
    for i in &meta.pk_indexes {
        out.put_short(*i);
    }
    write_specs(&mut out, &meta.bind);
    // Result metadata.
    match &meta.result {
        Some(cols) => {
            out.put_int(global_flag(cols));
            out.put_int(cols.len() as i32);
            write_specs(&mut out, cols);
        }
        None => {
            out.put_int(0x0004);
            out.put_int(0);
        }
    }
    out
}

fn encode_outcome(o: &Outcome) -> Vec<u8> {
    let mut out = Vec::new();
    match o {
        Outcome::Void => out.put_int(0x0001),
        Outcome::Rows(rows) => {
            out.put_int(0x0002);
            let mut flags = global_flag(&rows.columns);
            if rows.paging_state.is_some() {
                flags |= 0x0002;
            }
            out.put_int(flags);
            out.put_int(rows.columns.len() as i32);
            if let Some(ps) = &rows.paging_state {
                out.put_bytes(Some(ps));
            }
            write_specs(&mut out, &rows.columns);
            out.put_int(rows.rows.len() as i32);
            for row in &rows.rows {
                for cell in row {
                    out.put_bytes(cell.as_deref());
                }
            }
        }
        Outcome::SetKeyspace(ks) => {
            out.put_int(0x0003);
            out.put_string(ks);
        }
        Outcome::SchemaChange { change, target, keyspace, table } => {
            out.put_int(0x0005);
            out.put_string(change);
            out.put_string(target);
            out.put_string(keyspace);
            if let Some(t) = table {
                out.put_string(t);
            }
        }
    }
    out
}
