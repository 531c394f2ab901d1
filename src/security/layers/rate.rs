//! Each caller's request rate (a token bucket per principal): past it, RESOURCE_EXHAUSTED
//! with the delay until the next request is allowed.

use super::authenticate::exempt;
use super::Gate;
use crate::security::auth::{Authenticator, Principal};
use crate::security::limits::CallerRates;
use std::sync::Arc;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Clone, Debug)]
pub struct Rate {
    rates: CallerRates,
    auth: Arc<Authenticator>,
}

impl Rate {
    pub fn new(rates: CallerRates, auth: Arc<Authenticator>) -> Self {
        Self { rates, auth }
    }
}

impl Gate for Rate {
    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        if exempt(req.uri().path(), &self.auth) {
            return Ok(());
        }
        let Some(principal) = req.extensions().get::<Principal>() else {
            return Ok(());
        };
        self.rates.check(&principal.id).map_err(|wait| {
            tracing::debug!(principal = %principal.id, "caller over its request rate");
            Status::with_error_details(
                Code::ResourceExhausted,
                "this caller is over its request rate; retry after the delay",
                ErrorDetails::with_retry_info(Some(wait)),
            )
        })
    }
}
