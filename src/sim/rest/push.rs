//! Push notifications for mobile apps (connect service, SigV4): CreatePushNotificationRegistration
//! and DeletePushNotificationRegistration, kept per contact.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::wire::{parse, required, run, ApiError};
use crate::sim::model::chat::Chat;
use crate::sim::model::operation::Operation;
use crate::sim::model::registry::Shared;

const DEVICE_TYPES: [&str; 3] = ["APNS", "APNS_SANDBOX", "GCM"];

/// The contact of the instance, or ResourceNotFoundException.
fn contact(shared: &Shared, instance_id: &str, contact_id: &str) -> Result<Arc<Chat>, ApiError> {
    shared
        .find_chat(contact_id)
        .filter(|c| c.instance_id == instance_id)
        .ok_or_else(|| ApiError::not_found("The contact does not exist in this instance"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContactConfiguration {
    contact_id: Option<String>,
    participant_role: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    client_token: Option<String>,
    pinpoint_app_arn: Option<String>,
    device_token: Option<String>,
    device_type: Option<String>,
    contact_configuration: Option<ContactConfiguration>,
}

pub(super) async fn create_push_notification_registration(
    State(shared): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
    body: Bytes,
) -> Response {
    run(
        &shared,
        Operation::CreatePushNotificationRegistration,
        || {
            let bad = ApiError::invalid_parameter;
            let req: CreateRequest = parse(&body, ApiError::invalid_request)?;
            let arn = required("PinpointAppArn", &req.pinpoint_app_arn, 1, 1024).map_err(bad)?;
            if !arn.starts_with("arn:") {
                return Err(bad("PinpointAppArn must be an ARN".into()));
            }
            required("DeviceToken", &req.device_token, 1, 500).map_err(bad)?;
            let device_type = required("DeviceType", &req.device_type, 1, 20).map_err(bad)?;
            if !DEVICE_TYPES.contains(&device_type) {
                return Err(bad(format!(
                    "DeviceType must be APNS, APNS_SANDBOX or GCM, not {device_type:?}"
                )));
            }
            let config = req
                .contact_configuration
                .as_ref()
                .ok_or_else(|| bad("ContactConfiguration is required".into()))?;
            let contact_id = required("ContactConfiguration.ContactId", &config.contact_id, 1, 256)
                .map_err(bad)?;
            if let Some(role) = config.participant_role.as_deref() {
                if role != "CUSTOMER" {
                    return Err(bad(
                        "ContactConfiguration.ParticipantRole must be CUSTOMER".into()
                    ));
                }
            }
            let chat = contact(&shared, &instance_id, contact_id)?;
            let client_token = req.client_token.clone().unwrap_or_default();
            let mut st = chat.lock();
            if st.ended {
                return Err(bad("The contact has ended".into()));
            }
            let existing = (!client_token.is_empty())
                .then(|| {
                    st.push_registrations
                        .find(|(_, token)| *token == client_token)
                })
                .flatten();
            let id = match existing {
                Some(id) => id,
                None => {
                    let id = uuid::Uuid::new_v4().to_string();
                    st.push_registrations
                        .insert(id.clone(), (device_type.to_owned(), client_token));
                    id
                }
            };
            Ok(json!({ "RegistrationId": id }))
        },
    )
}

#[derive(Deserialize)]
pub(super) struct DeleteQuery {
    #[serde(rename = "contactId")]
    contact_id: Option<String>,
}

pub(super) async fn delete_push_notification_registration(
    State(shared): State<Arc<Shared>>,
    Path((instance_id, registration_id)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> Response {
    run(
        &shared,
        Operation::DeletePushNotificationRegistration,
        || {
            let bad = ApiError::invalid_parameter;
            let contact_id = required("contactId", &query.contact_id, 1, 256).map_err(bad)?;
            let chat = contact(&shared, &instance_id, contact_id)?;
            let mut st = chat.lock();
            st.push_registrations
                .remove(&registration_id)
                .ok_or_else(|| ApiError::not_found("The registration does not exist"))?;
            Ok(json!({}))
        },
    )
}
