//! URLs the REST operations hand out and the simulator serves itself: attachment upload (PUT,
//! like a pre-signed S3 URL) and download (GET), and the customer authentication page that
//! redirects to the caller's RedirectUri.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use subtle::ConstantTimeEq as _;
use tokio::time::Instant;

use super::model::registry::Shared;

use crate::connect::attachment::MAX_ATTACHMENT_BYTES;

pub fn router(shared: Arc<Shared>) -> Router {
    let body_limit = usize::try_from(MAX_ATTACHMENT_BYTES)
        .unwrap_or(usize::MAX)
        .saturating_add(1024);
    Router::new()
        .route(
            "/_sim/files/{contact_id}/{attachment_id}",
            put(upload)
                .get(download)
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        // ChatJS in a page uploads and downloads attachments at these URLs cross-origin.
        .layer(super::rest::cors(&shared.config.approved_origins))
        .route("/_sim/authenticate", get(authenticate))
        .with_state(shared)
}

/// URL path of an attachment (upload or download; the token says which).
pub fn attachment_url(
    shared: &Shared,
    contact_id: &str,
    attachment_id: &str,
    token: &str,
) -> String {
    format!(
        "{}/_sim/files/{contact_id}/{attachment_id}?token={token}",
        shared.public_base
    )
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn fail(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path((contact_id, attachment_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = query_param(query.as_deref(), "token") else {
        return fail(StatusCode::FORBIDDEN, "Missing token");
    };
    let Some(chat) = shared.find_chat(&contact_id) else {
        return fail(StatusCode::FORBIDDEN, "Access denied");
    };
    let mut st = chat.lock();
    let Some(att) = st.attachments.get_mut(&attachment_id) else {
        return fail(StatusCode::FORBIDDEN, "Access denied");
    };
    if !same(&att.upload_token, &token) {
        return fail(StatusCode::FORBIDDEN, "Access denied");
    }
    if Instant::now() >= att.upload_expires {
        return fail(StatusCode::FORBIDDEN, "Request has expired");
    }
    if att.completed {
        return fail(StatusCode::CONFLICT, "The upload was already completed");
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some(att.content_type.as_str()) {
        return fail(
            StatusCode::FORBIDDEN,
            "Content-Type must match the HeadersToInclude of the upload URL",
        );
    }
    if body.len() as u64 > att.size {
        return fail(
            StatusCode::BAD_REQUEST,
            "Body is larger than AttachmentSizeInBytes",
        );
    }
    att.data = Some(body);
    StatusCode::OK.into_response()
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path((contact_id, attachment_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(token) = query_param(query.as_deref(), "token") else {
        return fail(StatusCode::FORBIDDEN, "Missing token");
    };
    let Some(chat) = shared.find_chat(&contact_id) else {
        return fail(StatusCode::FORBIDDEN, "Access denied");
    };
    let st = chat.lock();
    let Some(att) = st.attachments.get(&attachment_id) else {
        return fail(StatusCode::FORBIDDEN, "Access denied");
    };
    let now = Instant::now();
    let Some((_, _, disposition)) = att.downloads.iter().find(|(t, _, _)| same(t, &token)) else {
        return fail(StatusCode::FORBIDDEN, "Access denied");
    };
    if !att
        .downloads
        .iter()
        .any(|(t, exp, _)| same(t, &token) && now < *exp)
    {
        return fail(StatusCode::FORBIDDEN, "Request has expired");
    }
    let Some(data) = att.data.clone() else {
        return fail(StatusCode::NOT_FOUND, "No data");
    };
    let kind = if disposition.as_deref() == Some("INLINE") {
        "inline"
    } else {
        "attachment"
    };
    let safe_name: String = att
        .name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
        .collect();
    let disposition = HeaderValue::from_str(&format!("{kind}; filename=\"{safe_name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let content_type = HeaderValue::from_str(&att.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    drop(st);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        data,
    )
        .into_response()
}

/// The page behind GetAuthenticationUrl: "authenticates" at once (the chat receives
/// authentication.succeeded) and redirects back.
async fn authenticate(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let Some(redirect) = query_param(query.as_deref(), "redirect_uri") else {
        return fail(StatusCode::BAD_REQUEST, "Missing redirect_uri");
    };
    let session = query_param(query.as_deref(), "session_id").unwrap_or_default();
    let Ok(mut target) = url::Url::parse(&redirect) else {
        return fail(StatusCode::BAD_REQUEST, "redirect_uri is not a URL");
    };
    if let Some(chat) =
        query_param(query.as_deref(), "contact_id").and_then(|c| shared.find_chat(&c))
    {
        super::rest::authentication_event(&shared, &chat, "succeeded", &session);
    }
    target.query_pairs_mut().append_pair("session_id", &session);
    match HeaderValue::from_str(target.as_str()) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => fail(
            StatusCode::BAD_REQUEST,
            "redirect_uri is not a valid header value",
        ),
    }
}
