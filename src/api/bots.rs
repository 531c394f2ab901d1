//! AddBotParticipant: an internal service joins a live chat as a custom bot (Connect
//! CreateParticipant, role CUSTOM_BOT). The bot gets a chat record and a session of its own,
//! keyed by its contact and participant, so its socket is managed like the customer's: one
//! per bot, shared by every stream of it, in cluster mode across the replicas.

use super::*;
use crate::api::validate::{check_contact_id, validate_add_bot};
use crate::connect::content_type::TEXT_PLAIN;

impl Gateway {
    pub(super) async fn add_bot_inner(
        &self,
        request: Request<pb::AddBotParticipantRequest>,
    ) -> Result<Response<pb::AddBotParticipantResponse>, Status> {
        let principal = Principal::of(&request);
        if !principal.adds_bots {
            tracing::info!(principal = %principal.id, "AddBotParticipant refused: not a bot caller");
            return Err(ApiError::BotsNotAllowed.into());
        }
        self.shared_rate(&principal).await?;
        let req = request.into_inner();
        check_contact_id("contact_id", &req.contact_id)?;
        // A chat the gateway started: its own instance, and the content types its customer
        // may send, which the bot may send too.
        let customer = self
            .sessions
            .store()
            .get(&req.contact_id)
            .await
            .map_err(ApiError::from)?;
        if customer.as_ref().is_some_and(|c| c.ended) {
            return Err(ApiError::from(SessionError::Ended).into());
        }
        let own_instance = customer.as_ref().map(|c| self.instance_of(c));
        let bot = validate_add_bot(req, own_instance, &self.defaults)?;
        let slot = self.room_for_participant(&principal).await?;
        let instance_id = bot.instance_id.clone();
        let added = self
            .sessions
            .upstream()
            .add_bot(bot)
            .await
            .map_err(|e| match e {
                // CreateParticipant's conflict is the contact's state: it has ended.
                UpstreamError::Conflict => ApiError::from(SessionError::Ended),
                e => ApiError::from(e),
            })?;
        let content_types = customer
            .map(|c| c.content_types.clone())
            .unwrap_or_else(|| vec![TEXT_PLAIN.to_owned()]);
        let (record, chat_token) = self
            .record_participant(added, content_types, instance_id, true, &principal, slot)
            .await?;
        tracing::info!(
            contact_id = %record.contact_id,
            participant_id = %record.participant_id,
            principal = %principal.id,
            "custom bot added to the chat"
        );
        Ok(Response::new(pb::AddBotParticipantResponse {
            chat: Some(pb::ChatRef {
                contact_id: record.contact_id.clone(),
                chat_token: chat_token.expose().to_owned(),
                participant_id: record.participant_id.clone(),
            }),
        }))
    }
}
