//! The protobuf codec of the public API: prost, with smaller buffers than tonic's default.
//!
//! Tonic allocates a call's encode buffer up front, 8 KiB by default, and keeps it for the
//! call's life. A gateway holds thousands of mostly idle `Subscribe` streams whose events are a
//! few hundred bytes, so that buffer would be a large share of each chat's memory. Here it
//! starts at 1 KiB and grows in 1 KiB steps when an event (or a burst of them) needs more.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};

/// Initial size and growth step of the encode and decode buffers.
pub const BUFFER_BYTES: usize = 1024;
/// Encoded events gathered before they are handed to HTTP/2 in one write (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// `tonic_prost::ProstCodec` with [`BUFFER_BYTES`] buffers.
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
        tonic_prost::ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(settings())
    }
}
