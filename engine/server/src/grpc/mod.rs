//! The gRPC edge: wire conversions, the status mapping and the service implementation.

pub mod convert;
pub mod service;
pub mod status;
