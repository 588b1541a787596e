//! The loyalty engine's server: the `loyalty.v1` gRPC API over a [`loyalty_store::Store`].
//!
//! Components, from the socket inwards:
//! - [`server::serve`]: the tonic server (checkout and admin services, health, reflection) on a
//!   given listener.
//! - [`grpc`]: the gate every call passes ([`grpc::gate`]: API key, rate, deadline), request
//!   validation and wire conversion ([`grpc::convert`]), the one mapping of errors to gRPC statuses
//!   ([`grpc::status`]), and the handlers ([`grpc::service`], [`grpc::admin`]).
//! - [`auth`]: credentials, keys, rates and what each caller may do; the installed credentials
//!   ([`auth::registry::Access`]) are shared by the gate and the engine.
//! - [`engine::Engine`]: the parts the handlers call, over one shared [`context::Context`]:
//!   [`checkout`] (the till's receipt calls and reads), [`customers`] (enrolment, import, codes,
//!   profiles, cards, merges, erasure), [`credits`] and [`sweep`] (work behind the calls, run by
//!   [`background`]), [`rule_admin`] and [`sandbox`] (rules versions and test clocks, kept as
//!   [`documents`] like the credentials), [`reports`] (the programs' figures, folded from the
//!   outbox), [`segments`] (the customers' RFM segment counts, stored by each sweep as a document),
//!   [`whatif`] (a candidate rule set evaluated again on the receipts of the last days).
//! - [`accounts`]: identifier resolution, per-account locking and caching, the checked reads;
//!   [`commit`]: the one commit path every call's write takes, with its bounded retries.
//! - [`programs`]: each program's policy and compiled rules; [`config`]: file, flags and validation.
//! - [`clock`] and [`ids`]: the injected time and ID sources (the store is handed the same clock).
//! - [`drain`]: the calls inside the engine, so that a stopping engine shuts its store after the last.
//! - [`backups`]: online backups of the embedded store (`BackupStore`), pruned to the newest few.
//! - [`import`]: `loyalty-engine import`, a chain's customers loaded from a JSON-lines file.
//! - [`cli`] and [`telemetry`]: the binary's command line, logs and Prometheus metrics.
//! - [`tls`]: TLS and optional mutual TLS on the gRPC server, and the client-certificate fingerprint.
//! - [`error`]: the engine's typed errors, mapped to gRPC statuses in one place ([`grpc::status`]).

pub mod accounts;
pub mod auth;
pub mod background;
pub mod backups;
pub mod campaign_budgets;
pub mod checkout;
pub mod cli;
pub mod clock;
pub mod commit;
pub mod config;
pub mod context;
pub mod credits;
pub mod customers;
pub mod documents;
pub mod drain;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod ids;
pub mod import;
pub mod programs;
pub mod reports;
pub mod retention;
pub mod rule_admin;
pub mod sandbox;
pub mod segments;
pub mod server;
pub mod sweep;
pub mod telemetry;
pub mod tls;
pub mod whatif;
