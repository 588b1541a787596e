//! The gate every call of the checkout and admin services passes first. [`Gate`] is a tonic
//! interceptor: it runs on the request's metadata, before the body is decoded, so an
//! unauthenticated or over-rate caller costs a header parse and a hash, never a decode. It finds
//! the key's credential in the installed [`Access`], checks the digest, revocation and the client
//! certificate the key is bound to, takes a token from the credential's rate bucket, notes the
//! call's deadline (`grpc-timeout`), and hands the handler a [`Caller`]; the handler then checks
//! the call itself ([`Caller::authorize`]).
//!
//! Health and reflection are not behind the gate: they reveal no program data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::auth::Caller;
use crate::auth::keys;
use crate::auth::rate::RateLimiter;
use crate::auth::registry::Access;
use crate::error::{AuthFailure, EngineError, EngineResult};
use crate::grpc::status::to_status;

/// When the caller stops waiting (from `grpc-timeout`).
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

/// The interceptor (see the module documentation).
#[derive(Clone, Debug)]
pub struct Gate {
    access: Arc<Access>,
    limiter: Arc<RateLimiter>,
}

impl Gate {
    pub fn new(access: Arc<Access>) -> Self {
        Gate { access, limiter: Arc::new(RateLimiter::default()) }
    }

    fn admit(&self, request: &Request<()>) -> EngineResult<Caller> {
        let raw = presented_key(request.metadata()).ok_or(EngineError::Unauthenticated(AuthFailure::Missing))?;
        let parsed = keys::parse(raw).ok_or(EngineError::Unauthenticated(AuthFailure::Malformed))?;
        let credential = self
            .access
            .credential(parsed.program_id, parsed.credential_id)
            .filter(|credential| keys::same_digest(&credential.key_sha256, &parsed.digest()))
            .ok_or(EngineError::Unauthenticated(AuthFailure::Unknown))?;
        if credential.is_revoked() {
            return Err(EngineError::Unauthenticated(AuthFailure::Revoked));
        }
        if let Some(bound) = &credential.client_cert_sha256 {
            let presented = crate::tls::client_cert_fingerprint(request);
            if presented.as_deref() != Some(bound.as_str()) {
                return Err(EngineError::Unauthenticated(AuthFailure::CertificateMismatch));
            }
        }
        let defaults = self.access.rate_defaults();
        let rate = if credential.rate_per_second == 0 { defaults.per_second } else { credential.rate_per_second };
        let burst = if credential.burst == 0 { defaults.burst.max(rate) } else { credential.burst };
        let bucket = format!("{}/{}", parsed.program_id, credential.id);
        if let Err(retry_after) = self.limiter.take(&bucket, rate, burst, Instant::now()) {
            return Err(EngineError::RateLimited { credential_id: credential.id.clone(), retry_after });
        }
        Ok(Caller { program_id: parsed.program_id.to_owned(), credential })
    }
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.admit(&request) {
            Ok(caller) => {
                if let Some(timeout) = request.metadata().get("grpc-timeout").and_then(|value| value.to_str().ok()).and_then(grpc_timeout) {
                    request.extensions_mut().insert(Deadline(Instant::now() + timeout));
                }
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(error) => {
                let reason = match &error {
                    EngineError::Unauthenticated(failure) => failure.code(),
                    _ => "RATE_LIMITED",
                };
                metrics::counter!("loyalty_auth_refusals_total", "reason" => reason).increment(1);
                Err(to_status(&error))
            }
        }
    }
}

/// The key from `authorization: Bearer <key>` or `x-api-key: <key>`.
fn presented_key(metadata: &MetadataMap) -> Option<&str> {
    if let Some(value) = metadata.get("authorization").and_then(|value| value.to_str().ok()) {
        return value.strip_prefix("Bearer ").map(str::trim);
    }
    metadata.get("x-api-key").and_then(|value| value.to_str().ok()).map(str::trim)
}

/// A `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn grpc_timeout(raw: &str) -> Option<Duration> {
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("m"), None);
        assert_eq!(grpc_timeout("123456789m"), None);
        assert_eq!(grpc_timeout("10x"), None);
        assert_eq!(grpc_timeout(""), None);
    }
}
