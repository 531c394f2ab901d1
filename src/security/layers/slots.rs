//! Bounds the calls (streams included) open at once on one connection: past the limit a
//! call is answered RESOURCE_EXHAUSTED at once instead of waiting unseen behind HTTP/2's
//! stream limit. A call's slot is held until its answer's body is finished or dropped.

use super::BoxFuture;
use crate::security::limits::{CallSlot, SlotBody};
use crate::security::tls::ConnInfo;
use std::task::{Context, Poll};
use tonic::Status;

#[derive(Clone, Debug)]
pub struct SlotsLayer {
    max: usize,
}

impl SlotsLayer {
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

impl<S> tower::Layer<S> for SlotsLayer {
    type Service = SlotsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SlotsService {
            inner,
            max: self.max,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SlotsService<S> {
    inner: S,
    max: usize,
}

impl<S, B> tower::Service<http::Request<B>> for SlotsService<S>
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
        let slot = match req.extensions().get::<ConnInfo>() {
            Some(conn) => match CallSlot::take(&conn.open_calls, self.max) {
                Some(slot) => Some(slot),
                None => {
                    let status = Status::resource_exhausted(format!(
                        "this connection has {} calls open, the most allowed; \
                         wait for one to end or open another connection",
                        self.max
                    ));
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            },
            None => None,
        };
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(match slot {
                Some(slot) => response.map(|body| SlotBody::wrap(body, slot)),
                None => response,
            })
        })
    }
}
