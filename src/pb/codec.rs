//! The protobuf codec of the public API: prost, with smaller buffers than tonic's default.
//!
//! Tonic allocates a call's encode buffer up front, 8 KiB by default, and keeps it for the
//! call's life, however far it grew. A gateway holds thousands of mostly idle `Subscribe`
//! streams whose events are a few hundred bytes, so that buffer would be a large share of
//! each chat's memory. Here it starts at 512 B, and each encoded message is handed to HTTP/2
//! on its own: gathered with the messages ready beside it (a subscriber's backlog, a burst),
//! the buffer grew to the burst and kept that size for the stream's life. The price is paid
//! in bursts: HTTP/2 copies messages up to 256 B into its write buffer, but sends a larger
//! one as it is, so a burst of large events on one stream takes a write each instead of one
//! for up to 32 KiB.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};

/// The encode buffer's first size.
pub const ENCODE_BUFFER_BYTES: usize = 512;
/// Encoded bytes gathered before they are handed to HTTP/2: every message on its own.
pub const YIELD_THRESHOLD: usize = 1;
/// The decode buffer's first size and growth step.
pub const DECODE_BUFFER_BYTES: usize = 1024;

/// `tonic_prost::ProstCodec` with the buffers above.
#[derive(Debug, Clone)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER_BYTES, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        // The decoder does not yield; the threshold is tonic's default, unused.
        tonic_prost::ProstDecoder::new(BufferSettings::new(DECODE_BUFFER_BYTES, 32 * 1024))
    }
}
