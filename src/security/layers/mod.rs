//! The tower layers in front of every service, outermost first, each in its own file:
//! [`calls`] counts every call once with the code it was answered with; [`authenticate`]
//! finds the caller; [`rate`] applies its request rate; [`slots`] bounds the calls open on
//! one connection; [`timeout`] bounds a call; [`message_size`] refuses an over-size request
//! message with RESOURCE_EXHAUSTED before it is buffered.

pub mod authenticate;
pub mod calls;
pub mod message_size;
pub mod rate;
pub mod slots;
pub mod timeout;

use crate::ops::metrics::Metrics;
use crate::security::auth::Authenticator;
use crate::security::limits::{CallerRates, Limits};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use tonic::Status;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The public API's method names, read from its descriptor set (written once, in the proto).
static METHODS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    use prost::Message;
    let Ok(set) = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    set.file
        .iter()
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter())
        .filter_map(|m| m.name.clone())
        // A handful of names, leaked once: metric labels are static strings.
        .map(|n| &*Box::leak(n.into_boxed_str()))
        .collect()
});

/// The metric label of a call to the public API (other services are not counted).
pub fn method_label(path: &str) -> Option<&'static str> {
    let name = path
        .strip_prefix('/')?
        .strip_prefix(crate::pb::chat_gateway_server::SERVICE_NAME)?
        .strip_prefix('/')?;
    METHODS.iter().copied().find(|m| *m == name)
}

/// A check a request must pass before it goes further in; a refusal is answered at once.
pub trait Gate: Clone + Send + Sync + 'static {
    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status>;
}

/// A layer applying a [`Gate`].
#[derive(Clone, Debug)]
pub struct GateLayer<G>(pub G);

impl<S, G: Gate> tower::Layer<S> for GateLayer<G> {
    type Service = GateService<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GateService<S, G> {
    inner: S,
    gate: G,
}

impl<S, G, B> tower::Service<http::Request<B>> for GateService<S, G>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    G: Gate,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, std::future::Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.gate.admit(&mut req) {
            Ok(()) => futures::future::Either::Left(self.inner.call(req)),
            Err(status) => {
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The whole stack, outermost first (see the module's documentation).
#[derive(Clone, Debug)]
pub struct SecurityLayer {
    metrics: Arc<Metrics>,
    auth: Arc<Authenticator>,
    rates: CallerRates,
    limits: Limits,
}

impl SecurityLayer {
    pub fn new(auth: Arc<Authenticator>, limits: &Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            rates: CallerRates::new(limits),
            auth,
            limits: limits.clone(),
        }
    }
}

pub type SecurityService<S> = calls::CallsService<
    GateService<
        GateService<
            slots::SlotsService<timeout::TimeoutService<message_size::MessageSizeService<S>>>,
            rate::Rate,
        >,
        authenticate::Authenticate,
    >,
>;

impl<S> tower::Layer<S> for SecurityLayer {
    type Service = SecurityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = message_size::MessageSizeLayer::new(self.limits.max_message_bytes).layer(inner);
        let inner = timeout::TimeoutLayer::new(self.limits.request_timeout).layer(inner);
        let inner =
            slots::SlotsLayer::new(self.limits.max_concurrent_streams as usize).layer(inner);
        let inner = GateLayer(rate::Rate::new(self.rates.clone(), self.auth.clone())).layer(inner);
        let inner = GateLayer(authenticate::Authenticate::new(self.auth.clone())).layer(inner);
        calls::CallsLayer::new(self.metrics.clone()).layer(inner)
    }
}
