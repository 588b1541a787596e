//! Assembles the gRPC server: the checkout and admin services, health and reflection, with message-size
//! limits and TLS when configured, on a listener the caller provides, until the shutdown future
//! resolves. Tests bind `127.0.0.1:0` and stop it cleanly; the binary binds the configured address
//! and stops on SIGTERM.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use loyalty_proto::admin::program_admin_server::{self, ProgramAdminServer};
use loyalty_proto::v1::loyalty_service_server::{self, LoyaltyServiceServer};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::config::LimitsConfig;
use crate::engine::Engine;
use crate::grpc::admin::AdminApi;
use crate::grpc::gate::Gate;
use crate::grpc::service::LoyaltyApi;

/// How often health follows the store's state.
const HEALTH_POLL: Duration = Duration::from_millis(500);

/// The services whose health follows the store's state.
const STORE_BACKED: [&str; 2] = [loyalty_service_server::SERVICE_NAME, program_admin_server::SERVICE_NAME];

/// Every service this server answers: what reflection lists.
const SERVED: [&str; 5] = [
    STORE_BACKED[0],
    STORE_BACKED[1],
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight calls finish. The
/// store is not shut down here: the caller does that once this returns, after the last call.
/// With `tls` (from [`crate::tls::TlsConfig::server_config`]) every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    limits: LimitsConfig,
    shutdown: impl Future<Output = ()>,
    tls: Option<ServerTlsConfig>,
) -> Result<(), tonic::transport::Error> {
    // First, so that a refused TLS configuration leaves no health watcher behind.
    let mut builder = match tls {
        Some(tls) => Server::builder().tls_config(tls)?,
        None => Server::builder(),
    }
    .layer(crate::grpc::size_limit::layer());
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in STORE_BACKED {
        reporter.set_service_status(service, ServingStatus::Serving).await;
    }
    let watcher = {
        let engine = Arc::clone(&engine);
        let reporter = reporter.clone();
        tokio::spawn(async move {
            let mut serving = true;
            loop {
                tokio::time::sleep(HEALTH_POLL).await;
                let writable = engine.is_writable();
                if writable != serving {
                    serving = writable;
                    let status = if writable { ServingStatus::Serving } else { ServingStatus::NotServing };
                    // The overall status ("") last: whoever sees it changed sees every service changed.
                    for service in STORE_BACKED.into_iter().chain([""]) {
                        reporter.set_service_status(service, status).await;
                    }
                    if !writable {
                        tracing::error!("store refuses writes: health is NOT_SERVING");
                    }
                }
            }
        })
    };
    // Both reflection versions: grpcurl and current ghz speak v1, older ghz builds only v1alpha.
    // The google.rpc descriptors let a client decode the error details (ErrorInfo, BadRequest)
    // with no .proto file; only the services this server answers are listed (not the echo floor).
    let reflection = || {
        SERVED.iter().fold(
            tonic_reflection::server::Builder::configure()
                // Both versions' descriptors in both, so that either describes every listed service.
                .include_reflection_service(false)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(loyalty_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET),
            |builder, service| builder.with_service_name(*service),
        )
    };
    let gate = Gate::new(Arc::clone(&engine.access));
    let checkout = LoyaltyApi::new(engine, limits.clone());
    // Rule documents may be larger than checkout calls: the admin service takes up to 16 MiB.
    let admin_bytes_max = limits.message_bytes_max.max(16 << 20);
    let admin = ProgramAdminServer::new(AdminApi::new(checkout.clone()))
        .max_decoding_message_size(admin_bytes_max)
        .max_encoding_message_size(admin_bytes_max);
    let api = LoyaltyServiceServer::new(checkout)
        .max_decoding_message_size(limits.message_bytes_max)
        .max_encoding_message_size(limits.message_bytes_max);
    // Every call of both services passes the gate before its body is decoded.
    let admin = InterceptedService::new(admin, gate.clone());
    let api = InterceptedService::new(api, gate);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = builder.add_service(health).add_service(api).add_service(admin);
    let router = match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => router.add_service(v1).add_service(v1alpha),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "server reflection unavailable");
            router
        }
    };
    let result = router.serve_with_incoming_shutdown(incoming, shutdown).await;
    watcher.abort();
    result
}
