//! The loyalty engine's server: the `loyalty.v1` gRPC API over a [`loyalty_store::Store`].
//!
//! Components, from the socket inwards:
//! - [`server::serve`]: the tonic server (checkout service, health, reflection) on a given listener.
//! - [`grpc`]: request validation and wire conversion ([`grpc::convert`]), the one mapping of errors
//!   to gRPC statuses ([`grpc::status`]), and the handlers ([`grpc::service`]).
//! - [`engine::Engine`]: identity resolution, per-account locking and caching ([`accounts`]),
//!   idempotent replays, the domain operation, and the conditional commit.
//! - [`programs`]: each program's policy and earning rule; [`config`]: file, flags and validation.
//! - [`clock`] and [`ids`]: the injected time and ID sources.
//! - [`drain`]: the calls inside the engine, so that a stopping engine shuts its store after the last.
//! - [`backups`]: online backups of the embedded store (`BackupStore`), pruned to the newest few.
//! - [`sandbox`]: test clocks for sandbox programs (`Engine::now_in`, `AdvanceClock`).
//! - [`cli`] and [`telemetry`]: the binary's command line, logs and Prometheus metrics.
//! - [`tls`]: TLS and optional mutual TLS on the gRPC server, and the client-certificate fingerprint.

pub mod accounts;
pub mod auth;
pub mod backups;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credits;
pub mod customers;
pub mod drain;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod ids;
pub mod import;
pub mod programs;
pub mod rule_admin;
pub mod sandbox;
pub mod server;
pub mod sweep;
pub mod telemetry;
pub mod tls;
