//! Finds the caller: API key, JWT bearer token or client certificate, and records its
//! [`Principal`] in the request's extensions. Health (and, unless configured otherwise,
//! reflection) stays open.

use super::Gate;
use crate::security::auth::{Authenticator, Principal};
use crate::security::tls::ConnInfo;
use std::sync::Arc;
use tonic::Status;

#[derive(Clone, Debug)]
pub struct Authenticate {
    auth: Arc<Authenticator>,
}

impl Authenticate {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

/// Whether a gRPC path is exempt from authentication.
pub fn exempt(path: &str, auth: &Authenticator) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || (!auth.reflection_requires_auth && path.starts_with("/grpc.reflection."))
}

impl Gate for Authenticate {
    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        if exempt(req.uri().path(), &self.auth) {
            return Ok(());
        }
        let cert = req
            .extensions()
            .get::<ConnInfo>()
            .and_then(|i| i.client_certificate.as_ref());
        match self.auth.authenticate(req.headers(), cert) {
            Ok(principal) => {
                req.extensions_mut().insert::<Principal>(principal);
                Ok(())
            }
            Err(e) => {
                tracing::info!(path = %req.uri().path(), reason = %e, "caller refused");
                Err(e.into())
            }
        }
    }
}
