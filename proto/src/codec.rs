//! The protobuf codec every generated client and server uses: prost's, except that a body that
//! does not decode as its message type is the caller's fault, not the server's.
//!
//! Why: tonic-prost answers an undecodable request with INTERNAL (as gRPC's status-code table
//! suggests), which tells a till integrator that the engine broke and an operator to page someone.
//! This happens before any handler runs, so the engine's one mapping of errors to statuses
//! (`loyalty_engine::grpc::status`) never sees it; the status is made here instead, in the same
//! shape: INVALID_ARGUMENT with `google.rpc.ErrorInfo` (reason `MALFORMED_MESSAGE`, domain
//! `loyalty.v1`) and prost's description of what did not decode. The generated clients share the
//! codec, so an answer that does not decode reaches a Rust caller in the same shape.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.reason` of a body that does not decode.
pub const MALFORMED_MESSAGE: &str = "MALFORMED_MESSAGE";
/// The `ErrorInfo.domain` of every loyalty error.
pub const ERROR_DOMAIN: &str = "loyalty.v1";

/// prost encoding; decoding failures answered as INVALID_ARGUMENT `MALFORMED_MESSAGE`.
#[derive(Debug, Clone)]
pub struct WireCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        WireCodec(PhantomData)
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(ProstDecoder::default())
    }
}

/// prost's decoder with its failures made INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct WireDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| malformed_message_status(status.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The status of a body that does not decode; `why` is prost's description, which names the
/// message and field ("AccrueRequest.lines: BasketLine.sku: invalid string value ...").
pub fn malformed_message_status(why: &str) -> Status {
    let details = ErrorDetails::with_error_info(MALFORMED_MESSAGE, ERROR_DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(Code::InvalidArgument, format!("the message body does not decode: {why}"), details)
}
