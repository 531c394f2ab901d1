//! The restJson1 routes of both services: `PUT /contact/chat` (connect) and `/participant/...`
//! (connectparticipant), one file per operation group. Each handler counts the call, applies
//! an injected fault, checks the bearer token, validates the body as the model does, and
//! answers with the SDK's shapes and error codes ([`wire`]).

pub mod attachments;
pub mod connect;
pub mod participant;
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
use views::{cancel_participant_authentication, describe_view, get_authentication_url};
use wire::ApiError;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/contact/chat", put(start_chat_contact))
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
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            answer_delay,
        ))
        .with_state(shared)
}

/// Holds every operation back by the configured answer delay: a slow Connect.
async fn answer_delay(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let delay = shared.knobs.answer_delay();
    if !delay.is_zero() {
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
