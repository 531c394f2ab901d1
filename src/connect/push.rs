//! Push notifications for mobile apps: CreatePushNotificationRegistration and
//! DeletePushNotificationRegistration, signed with the gateway's own credentials (the connect
//! service, like StartChatContact).

use super::client::{Connect, Timed};
use super::error::UpstreamError;
use aws_sdk_connect::types as ct;

/// A device to register.
#[derive(Clone, Debug)]
pub struct PushRegistration {
    pub instance_id: String,
    pub contact_id: String,
    pub application_arn: String,
    pub device_token: String,
    pub device_type: ct::DeviceType,
    pub include_raw_message: bool,
    pub client_token: Option<String>,
}

impl Connect {
    pub async fn register_push(&self, r: PushRegistration) -> Result<String, UpstreamError> {
        let contact = ct::ContactConfiguration::builder()
            .contact_id(r.contact_id)
            .participant_role(ct::ParticipantRole::Customer)
            .include_raw_message(r.include_raw_message)
            .build()
            .map_err(|_| UpstreamError::Invalid {
                what: "ContactConfiguration",
            })?;
        let out = self
            .connect_client()
            .create_push_notification_registration()
            .instance_id(r.instance_id)
            .pinpoint_app_arn(r.application_arn)
            .device_token(r.device_token)
            .device_type(r.device_type)
            .contact_configuration(contact)
            .set_client_token(r.client_token)
            .send()
            .timed(self.metrics(), "CreatePushNotificationRegistration")
            .await?;
        Ok(out.registration_id)
    }

    pub async fn unregister_push(
        &self,
        instance_id: &str,
        contact_id: &str,
        registration_id: &str,
    ) -> Result<(), UpstreamError> {
        self.connect_client()
            .delete_push_notification_registration()
            .instance_id(instance_id)
            .contact_id(contact_id)
            .registration_id(registration_id)
            .send()
            .timed(self.metrics(), "DeletePushNotificationRegistration")
            .await?;
        Ok(())
    }
}
