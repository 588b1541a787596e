//! A request larger than `limits.message_bytes_max` is refused by tonic before it is decoded, with
//! OUT_OF_RANGE and a bare message. gRPC's status codes give such a message RESOURCE_EXHAUSTED
//! ("sent or received message larger than configured limit"), and a till needs to tell "your
//! basket is too big" from a field out of range: this layer answers it as
//! [`EngineError::MessageTooLarge`] through [`to_status`], with `ErrorInfo` like every other
//! refusal. It rewrites only that one answer of tonic's; every other response passes untouched.

use tower::util::MapResponseLayer;

use crate::error::EngineError;
use crate::grpc::status::to_status;

/// The start of tonic's message for a request body over the decoding limit (its `codec::decode`),
/// as it appears percent-encoded in `grpc-message`.
const DECODE_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// The response mapping as a layer for `Server::builder().layer(..)`.
pub type SizeLimitLayer = MapResponseLayer<fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>>;

/// The layer that gives an oversized request its status.
pub fn layer() -> SizeLimitLayer {
    MapResponseLayer::new(oversized_request_is_resource_exhausted)
}

fn oversized_request_is_resource_exhausted<B: Default>(response: http::Response<B>) -> http::Response<B> {
    match too_large(response.headers()) {
        Some((bytes, limit)) => to_status(&EngineError::MessageTooLarge { bytes, limit }).into_http(),
        None => response,
    }
}

/// The sizes in tonic's refusal of an oversized request, if this is one (a trailers-only answer
/// with OUT_OF_RANGE and tonic's message).
fn too_large(headers: &http::HeaderMap) -> Option<(usize, usize)> {
    if headers.get("grpc-status")?.as_bytes() != b"11" {
        return None;
    }
    let message = headers.get("grpc-message")?.to_str().ok()?.replace("%20", " ");
    let sizes = message.strip_prefix(DECODE_TOO_LARGE)?;
    // "N bytes, the limit is: M bytes"
    let (bytes, rest) = sizes.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((bytes.parse().ok()?, limit.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tonic_answer(status: tonic::Status) -> http::Response<tonic::body::Body> {
        status.into_http()
    }

    #[test]
    fn tonics_oversized_request_answer_becomes_resource_exhausted_with_its_sizes() {
        let refused = tonic::Status::out_of_range("Error, decoded message length too large: found 5000 bytes, the limit is: 4096 bytes");
        let answer = oversized_request_is_resource_exhausted(tonic_answer(refused));
        let status = tonic::Status::from_header_map(answer.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "the request is 5000 bytes, more than the 4096 bytes this engine accepts");
    }

    #[test]
    fn every_other_answer_passes_untouched() {
        for status in [
            tonic::Status::out_of_range("a field out of range"),
            tonic::Status::out_of_range("Error, encoded message length too large: found 5000 bytes, the limit is: 4096 bytes"),
            tonic::Status::invalid_argument("Error, decoded message length too large: found 5000 bytes, the limit is: 4096 bytes"),
        ] {
            let code = status.code();
            let answer = oversized_request_is_resource_exhausted(tonic_answer(status));
            assert_eq!(tonic::Status::from_header_map(answer.headers()).expect("a status").code(), code);
        }
        let ok = http::Response::new(tonic::body::Body::default());
        assert!(oversized_request_is_resource_exhausted(ok).headers().is_empty());
    }
}
