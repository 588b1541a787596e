//! The stand-in driven by the real `scylla` driver over TCP.

mod common;
mod connect;
mod lwt;
mod paging;
mod schema;
mod statements;
mod unsupported;
