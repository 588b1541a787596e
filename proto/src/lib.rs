//! The wire types of the loyalty engine's gRPC API (`loyalty.v1`), generated from
//! `proto/loyalty/v1/loyalty.proto`, and the encoded file descriptor set for server reflection.
//!
//! Everything here is generated; the conventions (decimal strings, idempotency keys, error details)
//! are documented in the .proto file itself so that client authors read them in one place.

/// Package `loyalty.v1`: the checkout service and its messages.
pub mod v1 {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("loyalty.v1");
}

/// Package `loyalty.bench.v1`: the echo service the load tests use as their floor.
pub mod bench {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("loyalty.bench.v1");
}

/// The encoded `FileDescriptorSet` of every file compiled here, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("loyalty_descriptor");
