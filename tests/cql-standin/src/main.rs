//! `cql-standin`: runs the test-only CQL stand-in until killed, so that engine processes started by
//! other tests can connect to it.
//!
//! ```text
//! cql-standin [--listen 127.0.0.1:9042] [--advertise IP] [--user U --password P]
//!             [--datacenter NAME] [--lwt-style scylla|cassandra]
//! ```
//!
//! Prints `listening on ADDR` on stdout once it accepts connections.

use cql_standin::{LwtStyle, StandIn};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

const USAGE: &str =
    "usage: cql-standin [--listen ADDR] [--advertise IP] [--user U --password P] [--datacenter NAME] [--lwt-style scylla|cassandra]";

fn parse_args() -> Result<(SocketAddr, cql_standin::Builder), String> {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9042));
    let mut builder = StandIn::builder();
    let mut user = None;
    let mut password = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--listen" => listen = value("--listen")?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--advertise" => {
                let ip: IpAddr = value("--advertise")?.parse().map_err(|e| format!("--advertise: {e}"))?;
                builder = builder.advertise(ip);
            }
            "--user" => user = Some(value("--user")?),
            "--password" => password = Some(value("--password")?),
            "--datacenter" => builder = builder.datacenter(value("--datacenter")?),
            "--lwt-style" => {
                let style = match value("--lwt-style")?.as_str() {
                    "scylla" => LwtStyle::Scylla,
                    "cassandra" => LwtStyle::Cassandra,
                    other => return Err(format!("--lwt-style: unknown style {other}\n{USAGE}")),
                };
                builder = builder.lwt_style(style);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    match (user, password) {
        (Some(u), Some(p)) => builder = builder.credentials(u, p),
        (None, None) => {}
        _ => return Err(format!("--user and --password go together\n{USAGE}")),
    }
    Ok((listen, builder))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (listen, builder) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let standin = match builder.start(listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cql-standin: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", standin.addr());
    let _ = out.flush();
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
