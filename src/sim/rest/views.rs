//! DescribeView (one sample view) and customer authentication: GetAuthenticationUrl (a page
//! of the simulator that redirects back) and CancelParticipantAuthentication.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::wire::{bearer, check_len, parse, required, run, ApiError};
use crate::sim::model::operation::Operation;
use crate::sim::model::registry::Shared;

/// The one view DescribeView knows.
pub const SAMPLE_VIEW_TOKEN: &str = "sample-view";

pub(super) async fn describe_view(
    State(shared): State<Arc<Shared>>,
    Path(view_token): Path<String>,
    headers: HeaderMap,
) -> Response {
    run(&shared, Operation::DescribeView, || {
        let chat = shared.authorize(bearer(&headers))?;
        check_len("ViewToken", &view_token, 1, 1000).map_err(ApiError::validation)?;
        if view_token != SAMPLE_VIEW_TOKEN {
            return Err(ApiError::not_found("The view does not exist"));
        }
        let arn = format!(
            "arn:aws:connect:us-east-1:000000000000:instance/{}/view/sample-view:1",
            chat.instance_id
        );
        Ok(json!({
            "View": {
                "Id": "sample-view",
                "Arn": arn,
                "Name": "Sample view",
                "Version": 1,
                "Content": {
                    "InputSchema": r#"{"type":"object","properties":{"Heading":{"type":"string"}}}"#,
                    "Template": r#"{"Head":{"Title":"Sample"},"Body":[{"_id":"Heading","Type":"Header","Props":{"Heading":{"_ref":"Heading"}}}]}"#,
                    "Actions": ["Submit", "Cancel"],
                },
            }
        }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AuthenticationRequest {
    session_id: Option<String>,
    redirect_uri: Option<String>,
}

pub(super) async fn get_authentication_url(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::GetAuthenticationUrl, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: AuthenticationRequest = parse(&body, ApiError::validation)?;
        let session =
            required("SessionId", &req.session_id, 36, 36).map_err(ApiError::validation)?;
        let redirect =
            required("RedirectUri", &req.redirect_uri, 1, 1024).map_err(ApiError::validation)?;
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("session_id", session)
            .append_pair("redirect_uri", redirect)
            .append_pair("contact_id", &chat.contact_id)
            .finish();
        Ok(
            json!({ "AuthenticationUrl": format!("{}/_sim/authenticate?{query}", shared.public_base) }),
        )
    })
}

/// Commits an `authentication.<state>` event naming its session, from the system.
pub(crate) fn authentication_event(
    shared: &Shared,
    chat: &crate::sim::model::chat::Chat,
    state: &str,
    session_id: &str,
) {
    let content = json!({ "SessionId": session_id }).to_string();
    let item = chat.item(
        "EVENT",
        &format!("application/vnd.amazonaws.connect.event.authentication.{state}"),
        Some(&content),
        None,
    );
    let mut st = chat.lock();
    if !st.ended {
        shared.commit(chat, &mut st, item, true);
    }
}

pub(super) async fn cancel_participant_authentication(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::CancelParticipantAuthentication, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: AuthenticationRequest = parse(&body, ApiError::validation)?;
        let session =
            required("SessionId", &req.session_id, 36, 36).map_err(ApiError::validation)?;
        authentication_event(&shared, &chat, "cancelled", session);
        Ok(json!({}))
    })
}
