//! The gRPC edge: the gate every call passes, wire conversions, the status mapping, and the
//! checkout and admin services.

pub mod admin;
pub mod convert;
pub mod gate;
pub mod log_limit;
pub mod runtime_lag;
pub mod security;
pub mod service;
pub mod size_limit;
pub mod status;
