//! Refuses a request message larger than the gateway's limit with RESOURCE_EXHAUSTED (gRPC's
//! status guide names it for message sizes), read from the gRPC frame's length prefix before
//! the message is buffered. Tonic's own limit stays behind it as a backstop.

use bytes::{Buf, Bytes};
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;

#[derive(Clone, Debug)]
pub struct MessageSizeLayer {
    max: usize,
}

impl MessageSizeLayer {
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

impl<S> tower::Layer<S> for MessageSizeLayer {
    type Service = MessageSizeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageSizeService {
            inner,
            max: self.max,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MessageSizeService<S> {
    inner: S,
    max: usize,
}

impl<S, B> tower::Service<http::Request<B>> for MessageSizeService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let max = self.max;
        self.inner
            .call(req.map(|body| tonic::body::Body::new(Limited::new(body, max))))
    }
}

/// Length-prefixed gRPC messages: a flag byte and a 4-byte big-endian length, then the
/// message. Tracks where each prefix falls across the body's chunks.
#[derive(Debug, Default)]
struct Frames {
    prefix: [u8; 5],
    /// Bytes of the current prefix seen so far.
    have: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl Frames {
    /// Follows one chunk; the announced length of the first message over `max`, if any.
    fn follow(&mut self, mut chunk: &[u8], max: usize) -> Option<u64> {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(chunk.len() as u64);
                chunk.advance(skip as usize);
                self.remaining -= skip;
                continue;
            }
            let take = (5 - self.have).min(chunk.len());
            self.prefix[self.have..self.have + take].copy_from_slice(&chunk[..take]);
            self.have += take;
            chunk.advance(take);
            if self.have == 5 {
                self.have = 0;
                let len = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
                if len > max as u64 {
                    return Some(len);
                }
                self.remaining = len;
            }
        }
        None
    }
}

struct Limited<B> {
    inner: Pin<Box<B>>,
    max: usize,
    frames: Frames,
}

impl<B> Limited<B> {
    fn new(inner: B, max: usize) -> Self {
        Self {
            inner: Box::pin(inner),
            max,
            frames: Frames::default(),
        }
    }
}

impl<B> http_body::Body for Limited<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(len) = this.frames.follow(data, this.max) {
                        return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                            "the request message is {len} bytes, more than the gateway's \
                             limit of {} bytes",
                            this.max
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Status::from_error(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7, len as usize));
        m
    }

    #[test]
    fn prefixes_are_followed_across_chunks() {
        let mut stream = message(10);
        stream.extend(message(3));
        stream.extend(message(100));
        // Fed a byte at a time, the third message is the first over 50.
        let mut f = Frames::default();
        let mut over = None;
        for b in &stream {
            if let Some(len) = f.follow(std::slice::from_ref(b), 50) {
                over = Some(len);
                break;
            }
        }
        assert_eq!(over, Some(100));
        let mut f = Frames::default();
        assert_eq!(f.follow(&message(50), 50), None);
        assert_eq!(f.follow(&message(51)[..5], 50), Some(51));
    }
}
