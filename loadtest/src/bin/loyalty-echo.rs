//! `loyalty-echo`: the load tests' floor. A tonic server that answers every `Echo` call at once
//! with a payload of the requested size, on the same runtime and transport settings as the engine
//! (multi-threaded tokio, TCP_NODELAY), so that the engine's throughput and latency can be read as a
//! ratio to what gRPC itself costs here.

use clap::Parser;
use loyalty_proto::bench::echo_server::{Echo, EchoServer};
use loyalty_proto::bench::{EchoRequest, EchoResponse};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Largest answer the echo server will make.
const RESPONSE_BYTES_MAX: u32 = 1 << 20;

#[derive(Debug, Parser)]
#[command(name = "loyalty-echo", about = "Minimal gRPC echo server: the floor the load tests compare the engine to")]
struct Args {
    /// Listen address; port 0 picks one (printed on start).
    #[arg(long, default_value = "127.0.0.1:50052")]
    listen: std::net::SocketAddr,
}

#[derive(Debug, Default)]
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let wanted = request.get_ref().response_bytes;
        if wanted > RESPONSE_BYTES_MAX {
            return Err(Status::invalid_argument(format!("response_bytes: at most {RESPONSE_BYTES_MAX}")));
        }
        Ok(Response::new(EchoResponse { payload: vec![0x5a; wanted as usize] }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("loyalty-echo listening on {}", listener.local_addr()?);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
