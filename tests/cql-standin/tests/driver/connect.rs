//! Connection-level behaviour: authentication, restarts, the proxy, the binary, protocol versions.

use crate::common::*;
use cql_standin::StandIn;
use scylla::client::session_builder::SessionBuilder;
use scylla_proxy::{Node, Proxy, ShardAwareness};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_authentication() {
    let standin = StandIn::start_with_credentials(local(), "loyalty", "s3cret").await.expect("start");
    let session = SessionBuilder::new().known_node_addr(standin.addr()).user("loyalty", "s3cret").build().await.expect("right credentials");
    session.query_unpaged(KEYSPACE_NTS, ()).await.expect("query after login");

    let wrong = SessionBuilder::new().known_node_addr(standin.addr()).user("loyalty", "nope").build().await;
    let e = wrong.expect_err("wrong password must fail").to_string();
    assert!(e.contains("incorrect") || e.contains("Authentication"), "{e}");
    let none = SessionBuilder::new().known_node_addr(standin.addr()).build().await;
    assert!(none.is_err(), "no credentials must fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprepares_after_a_restart() {
    let (standin, session) = with_schema().await;
    let put = prepare(&session, "INSERT INTO credits (program_id, credit_id, credit) VALUES (?, ?, ?)").await;
    let get = prepare(&session, "SELECT credit FROM credits WHERE program_id = ? LIMIT ?").await;
    exec(&session, &put, ("p", "c1", vec![1u8])).await;

    // The node forgets its prepared statements: the driver gets Unprepared and re-prepares.
    standin.forget_prepared();
    exec(&session, &put, ("p", "c2", vec![2u8])).await;
    assert!(standin.stats().unprepared >= 1);
    let rows: Vec<(Vec<u8>,)> = collect(&session, &get, ("p", 10i32)).await;
    assert_eq!(rows.len(), 2);
    // Also inside a batch.
    standin.forget_prepared();
    let unprepared = standin.stats().unprepared;
    let mut batch = scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Logged);
    batch.append_statement(put.clone());
    session.batch(&batch, (("p", "c0", vec![0u8]),)).await.expect("batch after the node forgot the statement");
    assert!(standin.stats().unprepared > unprepared);
    exec(&session, &prepare(&session, "DELETE FROM credits WHERE program_id = ? AND credit_id = ?").await, ("p", "c0")).await;

    // A restart that also drops every connection: the driver reconnects.
    standin.simulate_restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match session.execute_unpaged(&put, ("p", "c3", vec![3u8])).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no reconnection after a restart: {e}"),
        }
    }
    let rows: Vec<(Vec<u8>,)> = collect(&session, &get, ("p", 10i32)).await;
    assert_eq!(rows.len(), 3, "data survives the simulated restart");
}

fn free_port(ip: IpAddr) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind a free port");
    l.local_addr().expect("local addr")
}

async fn through_proxy(standin: &StandIn, proxy_addr: SocketAddr) {
    let mut proxy = Proxy::builder()
        .with_node(Node::new(standin.addr(), proxy_addr, ShardAwareness::Unaware, None, None))
        .build()
        .run()
        .await
        .expect("run proxy");
    let session = session_for(proxy_addr).await;
    session.query_unpaged(KEYSPACE_NTS, ()).await.expect("keyspace");
    session
        .query_unpaged(
            "CREATE TABLE loyalty.credits (program_id text, credit_id text, credit blob, PRIMARY KEY ((program_id), credit_id))",
            (),
        )
        .await
        .expect("table");
    let put = prepare(&session, "INSERT INTO loyalty.credits (program_id, credit_id, credit) VALUES (?, ?, ?)").await;
    exec(&session, &put, ("p", "c", vec![1u8])).await;
    let get = prepare(&session, "SELECT credit FROM loyalty.credits WHERE program_id = ? LIMIT ?").await;
    let rows: Vec<(Vec<u8>,)> = collect(&session, &get, ("p", 10i32)).await;
    assert_eq!(rows, [(vec![1u8],)]);
    // The driver knows the node by the proxy's address, so all its traffic goes through the proxy.
    let nodes: Vec<SocketAddr> =
        session.get_cluster_state().get_nodes_info().iter().map(|n| SocketAddr::new(n.address.ip(), n.address.port())).collect();
    assert_eq!(nodes, [proxy_addr]);
    proxy.sanity_check().expect("no proxy error while the driver used it");
    // Not `proxy.finish()`: in scylla-proxy 0.0.8 it races with the connections it closes and
    // returns NodeDisconnected/DriverDisconnected or panics ("Worker await logic bug!"). Dropping
    // the handle stops the proxy too.
    drop(session);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_behind_scylla_proxy() {
    // Same IP: the advertised rpc_address already is the proxy's IP.
    let standin = standin().await;
    through_proxy(&standin, free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))).await;
    // Different IP: advertise the proxy's.
    let proxy_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let standin = StandIn::start_advertising(local(), proxy_ip).await.expect("start");
    assert_eq!(standin.advertised_ip(), proxy_ip);
    through_proxy(&standin, free_port(proxy_ip)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_until_killed() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cql-standin"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cql-standin");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).await.expect("read the first line");
    let addr: SocketAddr = line.trim().strip_prefix("listening on ").expect("listening on ADDR").parse().expect("an address");
    let session = session_for(addr).await;
    apply_schema(&session).await;
    child.kill().await.expect("kill");
}

async fn read_frame(s: &mut tokio::net::TcpStream) -> (u8, u8, Vec<u8>) {
    let mut h = [0u8; 9];
    s.read_exact(&mut h).await.expect("header");
    let len = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.expect("body");
    (h[0], h[4], body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_protocol_versions_get_a_protocol_error() {
    let standin = standin().await;
    let mut s = tokio::net::TcpStream::connect(standin.addr()).await.expect("connect");
    // A v5 OPTIONS (same header layout before STARTUP).
    s.write_all(&[0x05, 0, 0, 1, 0x05, 0, 0, 0, 0]).await.expect("write");
    let (version, op, body) = read_frame(&mut s).await;
    assert_eq!((version, op), (0x84, 0x00));
    assert_eq!(&body[..4], &0x000Ai32.to_be_bytes(), "ProtocolError");
    assert!(String::from_utf8_lossy(&body).contains("4/v4"));
    // The same connection then speaks v4.
    s.write_all(&[0x04, 0, 0, 2, 0x05, 0, 0, 0, 0]).await.expect("write");
    let (version, op, _) = read_frame(&mut s).await;
    assert_eq!((version, op), (0x84, 0x06), "SUPPORTED");
    // A request before STARTUP is refused.
    let mut q = Vec::new();
    let text = b"SELECT * FROM system.local";
    q.extend_from_slice(&(text.len() as i32).to_be_bytes());
    q.extend_from_slice(text);
    q.extend_from_slice(&[0, 1, 0]);
    let mut frame = vec![0x04, 0, 0, 3, 0x07];
    frame.extend_from_slice(&(q.len() as u32).to_be_bytes());
    frame.extend_from_slice(&q);
    s.write_all(&frame).await.expect("write");
    let (_, op, body) = read_frame(&mut s).await;
    assert_eq!(op, 0x00);
    assert_eq!(&body[..4], &0x000Ai32.to_be_bytes());
}
