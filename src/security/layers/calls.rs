//! Counts every call to the public API once, outermost, with the code it was answered
//! with: `grpc_calls_total{method,code}`. A call refused or failed before its answer began
//! carries its status in the answer's headers (a trailers-only answer); any other call
//! answered OK. A Subscribe stream counts its opening.

use super::{method_label, BoxFuture};
use crate::ops::metrics::Metrics;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::{Code, Status};

#[derive(Clone, Debug)]
pub struct CallsLayer {
    metrics: Arc<Metrics>,
}

impl CallsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for CallsLayer {
    type Service = CallsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CallsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for CallsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let answer = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = answer.await?;
            if let Some(method) = method {
                let code =
                    Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code());
                metrics.grpc_call(method, code);
            }
            Ok(response)
        })
    }
}
