//! The wire types of the loyalty engine's gRPC APIs, generated from the files under
//! `proto/loyalty/`: the checkout API `loyalty.v1` (`loyalty.proto`, and `errors.proto` with every
//! error reason), the admin API `loyalty.admin.v1`, and the load tests' echo service; and the
//! encoded file descriptor set for server reflection.
//!
//! Everything here is generated except `codec` (undecodable bodies are INVALID_ARGUMENT); the
//! conventions (decimal strings, idempotency keys, error details) are documented in the .proto
//! file itself so that client authors read them in one place.

pub mod codec;

/// The generated packages, nested as the .proto packages are (generated code refers to other
/// packages by relative paths such as `super::super::v1`).
pub mod loyalty {
    /// Package `loyalty.v1`: the checkout service and its messages.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("loyalty.v1");
    }

    pub mod admin {
        /// Package `loyalty.admin.v1`: program administration (rules, adjustments, the event outbox).
        pub mod v1 {
            #![allow(missing_docs, missing_debug_implementations, clippy::all)]
            tonic::include_proto!("loyalty.admin.v1");
        }
    }

    pub mod bench {
        /// Package `loyalty.bench.v1`: the echo service the load tests use as their floor.
        pub mod v1 {
            #![allow(missing_docs, missing_debug_implementations, clippy::all)]
            tonic::include_proto!("loyalty.bench.v1");
        }
    }
}

pub use loyalty::admin::v1 as admin;
pub use loyalty::bench::v1 as bench;
pub use loyalty::v1;

/// The encoded `FileDescriptorSet` of every file compiled here, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("loyalty_descriptor");
