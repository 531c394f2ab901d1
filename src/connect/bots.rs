//! Custom bots: CreateParticipant with role CUSTOM_BOT, signed with the gateway's own
//! credentials (the connect service, like StartChatContact). The bot's participant token then
//! serves like a customer's: CreateParticipantConnection, its socket, the participant calls.

use super::client::{Connect, StartedChat, Timed};
use super::error::UpstreamError;
use crate::security::secret::Secret;
use aws_sdk_connect::types as ct;

/// A bot to add to a live chat.
#[derive(Clone, Debug)]
pub struct NewBot {
    pub instance_id: String,
    pub contact_id: String,
    pub display_name: String,
    pub client_token: Option<String>,
}

impl Connect {
    /// Adds a custom bot to the chat; its participant id and token, as a chat start gives
    /// them for the customer.
    pub async fn add_bot(&self, bot: NewBot) -> Result<StartedChat, UpstreamError> {
        let details = ct::ParticipantDetailsToAdd::builder()
            .participant_role(ct::ParticipantRole::CustomBot)
            .display_name(bot.display_name)
            .build();
        let out = self
            .connect_client()
            .create_participant()
            .instance_id(bot.instance_id)
            .contact_id(&bot.contact_id)
            .participant_details(details)
            .set_client_token(bot.client_token)
            .send()
            .timed(self.metrics(), "CreateParticipant")
            .await?;
        let token = out
            .participant_credentials
            .and_then(|c| c.participant_token)
            .ok_or(UpstreamError::Incomplete("ParticipantCredentials"))?;
        Ok(StartedChat {
            contact_id: bot.contact_id,
            participant_id: out
                .participant_id
                .ok_or(UpstreamError::Incomplete("ParticipantId"))?,
            participant_token: Secret::new(token),
        })
    }
}
