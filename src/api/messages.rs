//! SendMessage and SendEvent: what the customer says and does, forwarded with the chat's
//! connection token; typing and receipts within the chat's event budget.

use super::*;

impl Gateway {
    pub(super) async fn send_message_inner(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        let content_type = validate_send_message(&req)?;
        let record = self
            .authorize(req.chat.as_ref(), &principal, Access::Act)
            .await?;
        if !record.content_types.contains(&content_type) {
            return Err(ApiError::invalid(
                "content_type",
                format!(
                    "is not one of this chat's supported content types ({})",
                    record.content_types.join(", ")
                ),
            )
            .into());
        }
        let session = self.sessions.open(&record).map_err(ApiError::from)?;
        if session.is_ended() {
            return Err(ApiError::from(SessionError::Ended).into());
        }
        let client_token = if req.client_token.is_empty() {
            new_client_token()
        } else {
            req.client_token
        };
        let upstream = self.sessions.upstream();
        let sent = self
            .with_token(&session, deadline, |t| {
                let (content_type, content) = (content_type.clone(), req.content.clone());
                let client_token = client_token.clone();
                async move {
                    upstream
                        .send_message(&t, &content_type, &content, &client_token)
                        .await
                }
            })
            .await?;
        Ok(Response::new(pb::SendMessageResponse {
            time: timestamp(&sent.absolute_time),
            message_id: sent.id,
        }))
    }

    pub(super) async fn send_event_inner(
        &self,
        request: Request<pb::SendEventRequest>,
    ) -> Result<Response<pb::SendEventResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        let event = validate_send_event(&req)?;
        let session = self
            .live_session(req.chat.as_ref(), &principal, Access::Act)
            .await?;
        let contact_id = session.key();
        // Connect's SendEvent quota is small: typing goes at most once per interval and each
        // receipt once per message; what the budget suppresses is answered OK locally.
        let cluster = self.sessions.cluster();
        let typing_interval = self.sessions.settings().event_budget.typing_interval;
        let forward = match (&event.receipt, cluster) {
            // Shared by every replica in cluster mode.
            (None, Some(c)) => c
                .take_typing(contact_id, typing_interval)
                .await
                .map_err(ApiError::from)?,
            (Some((kind, id)), Some(c)) => c
                .take_receipt(contact_id, id, *kind as u8)
                .await
                .map_err(ApiError::from)?,
            (None, None) => session.with_event_budget(|b| b.take_typing()),
            (Some((kind, id)), None) => session.with_event_budget(|b| b.take_receipt(id, *kind)),
        };
        if !forward {
            tracing::debug!(contact_id, "event suppressed by the chat's event budget");
            return Ok(Response::new(pb::SendEventResponse {
                event_id: String::new(),
                time: Some(prost_types::Timestamp::from(SystemTime::now())),
            }));
        }
        let client_token = if req.client_token.is_empty() {
            new_client_token()
        } else {
            req.client_token
        };
        let upstream = self.sessions.upstream();
        let content_type = event.content_type;
        let sent = self
            .with_token(&session, deadline, |t| {
                let content = event.content.clone();
                let client_token = client_token.clone();
                async move {
                    upstream
                        .send_event(&t, content_type, content, &client_token)
                        .await
                }
            })
            .await;
        let sent = match sent {
            Ok(sent) => sent,
            Err(e) => {
                let returned = match (&event.receipt, cluster) {
                    (None, Some(c)) => c.return_typing(contact_id).await,
                    (Some((kind, id)), Some(c)) => {
                        c.return_receipt(contact_id, id, *kind as u8).await
                    }
                    (None, None) => {
                        session.with_event_budget(|b| b.return_typing());
                        Ok(())
                    }
                    (Some((kind, id)), None) => {
                        session.with_event_budget(|b| b.return_receipt(id, *kind));
                        Ok(())
                    }
                };
                if let Err(r) = returned {
                    tracing::debug!(contact_id, error = %r, "could not give back an event budget");
                }
                return Err(e.into());
            }
        };
        Ok(Response::new(pb::SendEventResponse {
            time: timestamp(&sent.absolute_time),
            event_id: sent.id,
        }))
    }
}
