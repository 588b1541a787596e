//! End-to-end tests: a real tonic client over a real loopback socket against the real server on
//! the real embedded store (fsync on), and on the ScyllaDB backend over the CQL stand-in or a real
//! cluster (`scylla`), with replicas lost under load on three Cassandra nodes (`scylla_cluster`).
//! One binary, one module per concern.

mod backup;
mod campaign_budgets;
mod checkout_flow;
mod concurrency;
mod crash_recovery;
mod customers;
mod errors;
mod faults;
mod figures;
mod idempotency;
mod import;
mod offline;
mod retention;
mod rfm;
mod rules;
mod sandbox;
mod scylla;
mod scylla_cluster;
mod security;
mod time;
mod tls;
mod whatif;

use tonic::Code;
use tonic_types::StatusExt;

/// Starts the engine binary with `args` (plus a free loopback port, no metrics, warnings only) and
/// waits for its "listening on" line.
pub async fn spawn_engine<I, S>(args: I) -> (tokio::process::Child, std::net::SocketAddr)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let defaults = ["--metrics-listen", "off", "--log", "warn"];
    spawn_engine_with(args.into_iter().map(|arg| arg.as_ref().to_owned()).chain(defaults.map(Into::into)), std::process::Stdio::inherit())
        .await
}

/// Starts the engine binary with exactly `args` plus a free loopback port, its logs (stderr) sent
/// to `logs`, and waits for its "listening on" line.
pub async fn spawn_engine_with<I, S>(args: I, logs: std::process::Stdio) -> (tokio::process::Child, std::net::SocketAddr)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loyalty-engine-under-test"))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(logs)
        .kill_on_drop(true)
        .spawn()
        .expect("start the engine");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(addr) = line.strip_prefix("loyalty-engine listening on ") {
                return addr.parse().expect("address");
            }
        }
        panic!("engine exited before listening");
    })
    .await
    .expect("engine started in time");
    (child, addr)
}

/// Asserts a call failed with `code` and the ErrorInfo `reason`; returns the status.
pub fn expect_error<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>, code: Code, reason: &str) -> tonic::Status {
    let status = match result {
        Ok(response) => panic!("expected {code:?}/{reason}, got {:?}", response.into_inner()),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "status {status:?}");
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "status {status:?}");
    assert_eq!(info.domain, "loyalty.v1");
    status
}

/// The field named by a BadRequest detail.
pub fn bad_field(status: &tonic::Status) -> String {
    let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    bad.field_violations.first().map(|violation| violation.field.clone()).unwrap_or_default()
}
