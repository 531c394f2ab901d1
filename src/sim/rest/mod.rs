//! The restJson1 routes of both services: `PUT /contact/chat` (connect) and `/participant/...`
//! (connectparticipant), one file per operation group. Each handler counts the call, applies
//! an injected fault, checks the bearer token, validates the body as the model does, and
//! answers with the SDK's shapes and error codes ([`wire`]).

pub mod attachments;
mod bots;
pub mod connect;
pub mod participant;
mod push;
pub mod transcript;
pub mod views;
pub mod wire;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use crate::sim::model::registry::Shared;
use attachments::{complete_attachment_upload, get_attachment, start_attachment_upload};
use connect::start_chat_contact;
use participant::{
    create_participant_connection, disconnect_participant, send_event, send_message,
};
use transcript::get_transcript;
pub(crate) use views::authentication_event;
use views::{cancel_participant_authentication, describe_view, get_authentication_url};
use wire::ApiError;

pub fn router(shared: Arc<Shared>) -> Router {
    let participant = Router::new()
        .route(
            "/participant/connection",
            post(create_participant_connection),
        )
        .route("/participant/message", post(send_message))
        .route("/participant/event", post(send_event))
        .route("/participant/transcript", post(get_transcript))
        .route("/participant/disconnect", post(disconnect_participant))
        .route(
            "/participant/start-attachment-upload",
            post(start_attachment_upload),
        )
        .route(
            "/participant/complete-attachment-upload",
            post(complete_attachment_upload),
        )
        .route("/participant/attachment", post(get_attachment))
        .route("/participant/views/{view_token}", get(describe_view))
        .route(
            "/participant/authentication-url",
            post(get_authentication_url),
        )
        .route(
            "/participant/cancel-authentication",
            post(cancel_participant_authentication),
        )
        // Browsers call the participant service cross-origin (the connect service is signed
        // with AWS credentials and never called from a page).
        .layer(cors(&shared.config.approved_origins));
    Router::new()
        .route("/contact/chat", put(start_chat_contact))
        .route(
            "/contact/create-participant",
            post(bots::create_participant),
        )
        .route(
            "/push-notification/{instance_id}/registrations",
            put(push::create_push_notification_registration),
        )
        .route(
            "/push-notification/{instance_id}/registrations/{registration_id}",
            axum::routing::delete(push::delete_push_notification_registration),
        )
        .merge(participant)
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            answer_delay,
        ))
        .with_state(shared)
}

/// Headers ChatJS and the AWS SDK for JavaScript send on participant calls.
const ALLOWED_HEADERS: [&str; 10] = [
    "authorization",
    "content-type",
    "x-amz-bearer",
    "x-amz-date",
    "x-amz-user-agent",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "x-amz-client-token",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
];

/// Headers a page may read from the answers (the request id and error shape).
const EXPOSED_HEADERS: [&str; 4] = [
    "x-amzn-requestid",
    "x-amzn-errortype",
    "x-amzn-errormessage",
    "date",
];

/// Whether `origin` is an approved origin: one of `approved`, or with none configured, any
/// loopback origin.
pub fn origin_approved(origin: &str, approved: &[String]) -> bool {
    if !approved.is_empty() {
        return approved
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    }
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https")
        && match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

/// CORS as Connect answers it: preflights and answers carry `Access-Control-Allow-Origin`
/// for approved origins only. The attachment URLs get the same (Connect's attachment bucket
/// lets the pages of approved origins upload and download).
pub(crate) fn cors(approved: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let approved = approved.to_vec();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|o| origin_approved(o, &approved))
        }))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(std::time::Duration::from_secs(600))
}

/// Holds every operation back by the configured answer delay: a slow Connect.
async fn answer_delay(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let delay = shared.knobs.answer_delay();
    if !delay.is_zero() {
        let _held = shared.knobs.hold_answer();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    next.run(request).await
}

/// Any route no operation matches.
pub async fn unknown_operation() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "Unknown operation",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_are_approved_by_default_and_configured_ones_replace_them() {
        for o in [
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "https://localhost",
            "http://[::1]:5173",
        ] {
            assert!(origin_approved(o, &[]), "{o}");
        }
        for o in [
            "https://example.com",
            "http://10.0.0.1:3000",
            "null",
            "file://",
        ] {
            assert!(!origin_approved(o, &[]), "{o}");
        }
        let approved = vec!["https://app.example.com/".to_owned()];
        assert!(origin_approved("https://app.example.com", &approved));
        assert!(!origin_approved("http://localhost:3000", &approved));
    }
}
