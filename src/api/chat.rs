//! StartChat, EndChat and GetChat: a chat's life. StartChat reserves one of the caller's
//! live-chat slots before it spends Connect quota, records the chat and opens its session.

use super::*;

/// Store reads in flight at once while a caller's ended chats are pruned.
const PRUNE_CONCURRENCY: usize = 32;

/// A reserved live-chat slot of a caller: in this process, or in cluster mode in Redis.
/// Dropped without [`Slot::commit`], it is given back.
pub(super) enum Slot<'a> {
    Local(Option<crate::security::limits::Reservation<'a>>),
    Shared {
        cluster: crate::cluster::Cluster,
        caller: String,
        reservation: Option<String>,
    },
}

impl Slot<'_> {
    /// The slot now holds the chat `contact_id`.
    pub(super) async fn commit(mut self, contact_id: &str) -> Result<(), ApiError> {
        match &mut self {
            Slot::Local(r) => {
                if let Some(r) = r.take() {
                    r.commit(contact_id);
                }
                Ok(())
            }
            Slot::Shared {
                cluster,
                caller,
                reservation,
            } => {
                let Some(r) = reservation.take() else {
                    return Ok(());
                };
                Ok(cluster.commit_chat(caller, &r, contact_id).await?)
            }
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Slot::Shared {
            cluster,
            caller,
            reservation: Some(r),
        } = self
        {
            let (cluster, caller, r) = (cluster.clone(), caller.clone(), r.clone());
            tokio::spawn(async move {
                // It lapses by itself otherwise.
                let _ = cluster.release_chat(&caller, &r).await;
            });
        }
    }
}

impl Gateway {
    /// Cluster mode: reserves one of the caller's live chats across every replica, first
    /// forgetting its chats that ended.
    async fn reserve_shared(
        &self,
        cluster: &crate::cluster::Cluster,
        principal: &Principal,
    ) -> Result<Slot<'_>, ApiError> {
        use futures::{StreamExt, TryStreamExt};
        let max = self.chats_per_caller.max();
        for attempt in 0..2 {
            if let Some(r) = cluster.reserve_chat(&principal.id, max).await? {
                return Ok(Slot::Shared {
                    cluster: cluster.clone(),
                    caller: principal.id.clone(),
                    reservation: Some(r),
                });
            }
            if attempt == 1 {
                break;
            }
            let held = cluster.chats_of(&principal.id, max).await?;
            let ended: Vec<String> = futures::stream::iter(held)
                .map(|id| async move {
                    let record = self.sessions.store().get(&id).await?;
                    Ok::<_, ApiError>(record.is_none_or(|r| r.ended).then_some(id))
                })
                .buffer_unordered(PRUNE_CONCURRENCY)
                .try_filter_map(|id| async { Ok(id) })
                .try_collect()
                .await?;
            for id in &ended {
                cluster.release_chat(&principal.id, id).await?;
            }
        }
        Err(ApiError::TooManyChatsForCaller(max))
    }

    /// Reserves one of the caller's live-chat slots, first forgetting its chats that ended.
    async fn reserve_chat(&self, principal: &Principal) -> Result<Slot<'_>, ApiError> {
        if let Some(cluster) = self.sessions.cluster() {
            return self.reserve_shared(cluster, principal).await;
        }
        match self.chats_per_caller.reserve(&principal.id) {
            Ok(slot) => Ok(Slot::Local(Some(slot))),
            Err(max) => {
                // Chats ending in this process free their slots as they end; these are the
                // ones that may have ended elsewhere (another replica). Their records are
                // read concurrently, a bounded number at a time.
                use futures::{StreamExt, TryStreamExt};
                let checks = futures::stream::iter(self.chats_per_caller.held(&principal.id))
                    .map(|id| async move {
                        if self.sessions.get(&id).is_some_and(|s| s.is_ended()) {
                            return Ok(Some(id));
                        }
                        let record = self.sessions.store().get(&id).await?;
                        Ok::<_, ApiError>(record.is_none_or(|r| r.ended).then_some(id))
                    })
                    .buffer_unordered(PRUNE_CONCURRENCY);
                let ended: Vec<String> = checks
                    .try_filter_map(|id| async { Ok(id) })
                    .try_collect()
                    .await?;
                self.chats_per_caller.forget(&ended);
                self.chats_per_caller
                    .reserve(&principal.id)
                    .map(|r| Slot::Local(Some(r)))
                    .map_err(|_| ApiError::TooManyChatsForCaller(max))
            }
        }
    }
}

impl Gateway {
    /// Ends, in the background, a chat Connect started but the store could not record.
    fn end_untracked(&self, contact_id: String, participant_token: Secret) {
        let upstream = self.sessions.upstream().clone();
        tokio::spawn(async move {
            let ended = async {
                let c = upstream
                    .create_connection(&participant_token, false)
                    .await?;
                upstream
                    .disconnect(&c.connection_token, &new_client_token())
                    .await
            };
            match ended.await {
                Ok(_) => {
                    tracing::warn!(%contact_id, "the store could not record a new chat; ended it at Connect")
                }
                Err(e) => {
                    tracing::error!(%contact_id, error = %e, "the store could not record a new chat, and ending it at Connect failed")
                }
            }
        });
    }

    /// Before Connect is asked for a participant (a chat's customer or a bot): room for its
    /// session here, a store that can record it (no participant Connect creates may go
    /// unrecorded), and one of the caller's live-chat slots.
    pub(super) async fn room_for_participant(
        &self,
        principal: &Principal,
    ) -> Result<Slot<'_>, ApiError> {
        let max = self.sessions.settings().max_sessions;
        if self.sessions.live_count() >= max {
            return Err(SessionError::TooManySessions(max).into());
        }
        self.sessions.store().ping().await?;
        self.reserve_chat(principal).await
    }

    /// Records a participant Connect just created (the customer of a new chat, or a bot) on
    /// `instance_id` with a new chat token, takes the caller's slot and opens the session. When the store
    /// cannot record it, the participant is disconnected at Connect: nothing could serve it.
    pub(super) async fn record_participant(
        &self,
        started: crate::connect::StartedChat,
        content_types: Vec<String>,
        instance_id: String,
        bot: bool,
        principal: &Principal,
        slot: Slot<'_>,
    ) -> Result<(Arc<ChatRecord>, Secret), ApiError> {
        let chat_token = secret::new_chat_token();
        let participant_token = started.participant_token.clone();
        let record = match self
            .sessions
            .store()
            .upsert(ChatRecord {
                contact_id: started.contact_id.clone(),
                participant_id: started.participant_id.clone(),
                participant_token: started.participant_token,
                chat_token_hashes: vec![TokenHash::of(chat_token.expose())],
                content_types,
                started_at: SystemTime::now(),
                ended: false,
                owner: principal.id.clone(),
                // The record names the instance only when it is not the configured one.
                instance_id: if instance_id == self.defaults.instance_id {
                    String::new()
                } else {
                    instance_id
                },
                bot,
            })
            .await
        {
            Ok(record) => record,
            Err(e) => {
                self.end_untracked(started.contact_id, participant_token);
                return Err(e.into());
            }
        };
        if record.owner != principal.id {
            // A client token replayed by another caller names that caller's chat (or bot).
            return Err(ApiError::PermissionDenied);
        }
        slot.commit(&record.key()).await?;
        if !record.ended {
            self.sessions.open(&record)?;
        }
        Ok((record, chat_token))
    }

    pub(super) async fn start_chat_inner(
        &self,
        request: Request<pb::StartChatRequest>,
    ) -> Result<Response<pb::StartChatResponse>, Status> {
        let principal = Principal::of(&request);
        self.shared_rate(&principal).await?;
        let mut start = validate_start(request.into_inner(), &self.defaults)?;
        let slot = self.room_for_participant(&principal).await?;
        let content_types = start.content_types.clone();
        let instance_id = start.instance_id.clone();
        // Connect requires text/plain in the list only when a list is sent.
        if content_types.len() == 1 {
            start.content_types.clear();
        }
        let started = self
            .sessions
            .upstream()
            .start_chat(start)
            .await
            .map_err(ApiError::from)?;
        let (record, chat_token) = self
            .record_participant(started, content_types, instance_id, false, &principal, slot)
            .await?;
        tracing::info!(contact_id = %record.contact_id, principal = %principal.id, "chat started");
        Ok(Response::new(pb::StartChatResponse {
            contact_id: record.contact_id.clone(),
            participant_id: record.participant_id.clone(),
            chat_token: chat_token.expose().to_owned(),
        }))
    }

    pub(super) async fn end_chat_inner(
        &self,
        request: Request<pb::EndChatRequest>,
    ) -> Result<Response<pb::EndChatResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        let session = self
            .live_session(req.chat.as_ref(), &principal, Access::Act)
            .await?;
        let upstream = self.sessions.upstream();
        let client_token = new_client_token();
        self.with_token(&session, deadline, |t| {
            let client_token = client_token.clone();
            async move { upstream.disconnect(&t, &client_token).await }
        })
        .await?;
        session.begin_end();
        self.sessions
            .store()
            .mark_ended(session.key())
            .await
            .map_err(ApiError::from)?;
        self.chats_per_caller.release(session.key());
        if let Some(cluster) = self.sessions.cluster() {
            cluster
                .release_chat(session.principal(), session.key())
                .await
                .map_err(ApiError::from)?;
        }
        tracing::info!(contact_id = %session.key(), "chat ended by the caller");
        Ok(Response::new(pb::EndChatResponse {}))
    }

    pub(super) async fn get_chat_inner(
        &self,
        request: Request<pb::GetChatRequest>,
    ) -> Result<Response<pb::GetChatResponse>, Status> {
        let principal = Principal::of(&request);
        let req = request.into_inner();
        let record = self
            .authorize(req.chat.as_ref(), &principal, Access::Inspect)
            .await?;
        let live = self.sessions.get(&record.key()).map(|s| s.info());
        let ended = record.ended || live.as_ref().is_some_and(|i| i.ended);
        Ok(Response::new(pb::GetChatResponse {
            contact_id: record.contact_id.clone(),
            participant_id: record.participant_id.clone(),
            state: if ended {
                pb::ChatState::Ended
            } else {
                pb::ChatState::Active
            } as i32,
            upstream: live
                .as_ref()
                .map(|i| i.upstream.to_pb())
                .unwrap_or(pb::UpstreamState::Unspecified) as i32,
            subscribers: live.as_ref().map(|i| i.subscribers as u32).unwrap_or(0),
            started_at: Some(prost_types::Timestamp::from(record.started_at)),
            last_cursor: live.and_then(|i| i.last_cursor).unwrap_or_default(),
        }))
    }
}
