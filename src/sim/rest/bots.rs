//! CreateParticipant (`POST /contact/create-participant`, the connect service, SigV4): a
//! custom bot joins a live chat with its own participant token, which it then uses like the
//! customer's (CreateParticipantConnection, its own socket, the participant operations).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::wire::{optional, parse, required, run, ApiError};
use crate::sim::model::operation::Operation;
use crate::sim::model::registry::{AddBotError, Shared};
use crate::sim::model::time::format_after;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ParticipantDetailsToAdd {
    participant_role: Option<String>,
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateParticipantRequest {
    instance_id: Option<String>,
    contact_id: Option<String>,
    client_token: Option<String>,
    participant_details: Option<ParticipantDetailsToAdd>,
}

/// How long a bot's participant token may open connections (as the customer's).
const TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub(super) async fn create_participant(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    run(&shared, Operation::CreateParticipant, || {
        let bad = ApiError::invalid_request;
        let req: CreateParticipantRequest = parse(&body, bad)?;
        let instance_id = required("InstanceId", &req.instance_id, 1, 100).map_err(bad)?;
        let contact_id = required("ContactId", &req.contact_id, 1, 256).map_err(bad)?;
        optional("ClientToken", &req.client_token, 0, 500).map_err(bad)?;
        let details = req
            .participant_details
            .as_ref()
            .ok_or_else(|| bad("ParticipantDetails is required".into()))?;
        match details.participant_role.as_deref() {
            Some("CUSTOM_BOT") => {}
            Some(other) => {
                return Err(bad(format!(
                    "ParticipantRole must be CUSTOM_BOT for a chat contact, not {other:?}"
                )))
            }
            None => return Err(bad("ParticipantDetails.ParticipantRole is required".into())),
        }
        optional("DisplayName", &details.display_name, 1, 256).map_err(bad)?;
        let display_name = details.display_name.as_deref().unwrap_or("BOT");
        let client_token = req.client_token.as_deref().filter(|t| !t.is_empty());
        let added = shared
            .add_bot(instance_id, contact_id, display_name, client_token)
            .map_err(|e| match e {
                AddBotError::NotFound => {
                    ApiError::not_found("The contact does not exist in this instance")
                }
                AddBotError::Ended => ApiError::conflict("The contact has ended"),
                AddBotError::Quota => {
                    ApiError::quota("The chat has the most custom bot participants allowed")
                }
            })?;
        Ok(json!({
            "ParticipantId": added.participant_id,
            "ParticipantCredentials": {
                "ParticipantToken": added.participant_token,
                "Expiry": format_after(TOKEN_LIFETIME),
            },
        }))
    })
}
