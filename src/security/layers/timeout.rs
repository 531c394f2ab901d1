//! Bounds how long a unary call (or a stream's opening) may take: past the gateway's
//! request timeout the call is answered DEADLINE_EXCEEDED. SendAttachment, whose length is
//! its file's, times each chunk instead.

use super::BoxFuture;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::Status;

#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TimeoutService<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> tower::Service<http::Request<B>> for TimeoutService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // An upload's length is the file's: its chunks are timed one by one instead.
        if req.uri().path().ends_with("/SendAttachment") {
            return Box::pin(self.inner.call(req));
        }
        let timeout = self.timeout;
        let answer = tokio::time::timeout(timeout, self.inner.call(req));
        Box::pin(async move {
            match answer.await {
                Ok(answer) => answer,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call took longer than the gateway's request timeout ({})",
                    humantime::format_duration(timeout)
                ))
                .into_http()),
            }
        })
    }
}
