//! Who may call the engine, and what each caller may do.
//!
//! Tills sit in stores on shared networks and partners call from outside, so every call of the
//! checkout and admin services is authenticated by an API key (`keys`) that belongs to one
//! program's credential (`credential`), checked at the gate (`grpc::gate`) before the body is
//! decoded, and authorised by the handler against the program, store and call the body names
//! (`caller`). Keys are stored only as digests in each program's versioned access document
//! (`registry`), revocable at run time; each credential has its own rate limit (`rate`). The
//! threat model is in `docs/security.md`. Nothing here depends on the engine: the gate and the
//! engine both hold the one [`registry::Access`].

pub mod caller;
pub mod credential;
pub mod keys;
pub mod rate;
pub mod registry;
pub mod seed;

pub use caller::{Caller, Needs, RateDefaults};
pub use credential::{AccessDocument, Credential, Scope};
