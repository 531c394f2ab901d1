//! The gRPC surface: `chatgateway.v1.ChatGateway`. Each RPC validates its input, proves the
//! caller's right to the chat with its chat token, and hands the work to the chat's session
//! or to the Connect client. No Connect token ever leaves this module in a response.

mod attachments;
mod bots;
mod chat;
mod defaults;
mod messages;
mod push;
pub mod status;
mod subscribe;
mod transcript;
pub mod validate;
mod views;

use crate::api::status::ApiError;
use crate::api::validate::{
    check_chat_ref, validate_send_event, validate_send_message, validate_transcript,
};
use crate::connect::UpstreamError;
use crate::pb::{self, chat_gateway_server::ChatGateway};
use crate::security::auth::Principal;
use crate::security::limits::{ChatsPerCaller, Limits};
use crate::security::secret::{self, Secret, TokenHash};
use crate::session::cursor::{self, Cursor};
use crate::session::fanout::{Listener, RecvError};
use crate::session::{Session, SessionError, Sessions, SharedEvent, SubscriberGuard};
use crate::store::ChatRecord;
pub use defaults::ChatDefaults;
use futures::Stream;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};
pub use validate::{limits, validate_start};

/// What a call does with a chat: operators may inspect any chat without its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Inspect,
    Act,
}

/// The service. Holds only cheap handles.
#[derive(Clone)]
pub struct Gateway {
    sessions: Sessions,
    defaults: Arc<ChatDefaults>,
    /// Live chats per caller, reserved before StartChat spends Connect quota (in this
    /// process; in cluster mode the count is kept in Redis instead).
    chats_per_caller: Arc<ChatsPerCaller>,
    /// Cluster mode: each caller's requests per second across the replicas (0: off).
    caller_rate: u32,
    /// Attachment transfers: chunks in flight each, and how many at once.
    transfers: attachments::TransferLimits,
}

impl Gateway {
    pub fn new(sessions: Sessions, defaults: ChatDefaults) -> Self {
        Self::with_limits(sessions, defaults, &Limits::default())
    }

    /// A gateway applying `limits` (the per-caller chat limit; the chats' event budgets are
    /// the sessions').
    pub fn with_limits(sessions: Sessions, defaults: ChatDefaults, limits: &Limits) -> Self {
        let chats_per_caller = Arc::new(ChatsPerCaller::new(limits.max_chats_per_caller));
        let slots = chats_per_caller.clone();
        let cluster = sessions.cluster().cloned();
        sessions.on_chat_end(move |contact_id, principal| {
            slots.release(contact_id);
            if let Some(cluster) = cluster.clone() {
                let (contact_id, principal) = (contact_id.to_owned(), principal.to_owned());
                tokio::spawn(async move {
                    if let Err(e) = cluster.release_chat(&principal, &contact_id).await {
                        tracing::debug!(error = %e, "could not release a caller's chat slot");
                    }
                });
            }
        });
        Self {
            sessions,
            defaults: Arc::new(defaults),
            chats_per_caller,
            caller_rate: limits.caller_rate,
            transfers: attachments::TransferLimits::new(
                limits.attachment_buffer_bytes,
                limits.max_message_bytes,
                limits.max_attachment_transfers,
                limits.request_timeout,
            ),
        }
    }

    /// Checks the chat reference, the chat token and that the token's chat belongs to the
    /// caller; returns the chat's record. An operator may inspect any chat without a token
    /// (logged).
    async fn authorize(
        &self,
        chat: Option<&pb::ChatRef>,
        principal: &Principal,
        access: Access,
    ) -> Result<Arc<ChatRecord>, ApiError> {
        self.shared_rate(principal).await?;
        let inspecting = principal.operator && access == Access::Inspect;
        let chat = check_chat_ref(chat, inspecting)?;
        let record = self.chat_record(chat).await?;
        let owned = record.token_matches(&chat.chat_token) && record.owner == principal.id;
        if !owned {
            if inspecting {
                tracing::info!(
                    principal = %principal.id,
                    contact_id = %record.contact_id,
                    "operator access to a chat"
                );
                return Ok(record);
            }
            return Err(ApiError::PermissionDenied);
        }
        Ok(record)
    }

    /// The record a chat reference names: the customer's side of the contact, or with a
    /// participant id the bot's (the customer's own participant id names the customer's).
    async fn chat_record(&self, chat: &pb::ChatRef) -> Result<Arc<ChatRecord>, ApiError> {
        let store = self.sessions.store();
        let record = if chat.participant_id.is_empty() {
            store.get(&chat.contact_id).await?
        } else {
            match store
                .get(&crate::store::bot_key(
                    &chat.contact_id,
                    &chat.participant_id,
                ))
                .await?
            {
                Some(bot) => Some(bot),
                None => store
                    .get(&chat.contact_id)
                    .await?
                    .filter(|r| r.participant_id == chat.participant_id),
            }
        };
        record
            .filter(|r| r.contact_id == chat.contact_id)
            .ok_or(ApiError::ChatNotFound)
    }

    /// Cluster mode: spends one of the caller's requests of this second across every
    /// replica (each replica's own bucket applies first, and alone while Redis is down).
    async fn shared_rate(&self, principal: &Principal) -> Result<(), ApiError> {
        let (Some(cluster), true) = (self.sessions.cluster(), self.caller_rate > 0) else {
            return Ok(());
        };
        match cluster
            .take_rate(&format!("caller:{}", principal.id), self.caller_rate)
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(ApiError::CallerRate(wait)),
            Err(e) => {
                tracing::debug!(error = %e, "shared caller rate unavailable; local rate only");
                Ok(())
            }
        }
    }

    /// The chat's live session, refusing ended chats.
    async fn live_session(
        &self,
        chat: Option<&pb::ChatRef>,
        principal: &Principal,
        access: Access,
    ) -> Result<Arc<Session>, ApiError> {
        let record = self.authorize(chat, principal, access).await?;
        let session = self.sessions.open(&record)?;
        if session.is_ended() {
            return Err(SessionError::Ended.into());
        }
        Ok(session)
    }

    /// Runs a participant call with the session's connection token; a token Connect no longer
    /// accepts is replaced once (CreateParticipantConnection) before giving up. The SDK's
    /// retries of throttling and 5xx happen inside; the whole stays within the caller's
    /// deadline when it set one.
    async fn with_token<T, F, Fut>(
        &self,
        session: &Session,
        deadline: Option<Duration>,
        call: F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.with_token_or(session, deadline, call, || {
            UpstreamError::Unavailable.into()
        })
        .await
    }

    /// [`Self::with_token`], answering `refused_again` when Connect refuses the fresh token
    /// too (for a call whose arguments, not its token, can be the reason).
    async fn with_token_or<T, F, Fut>(
        &self,
        session: &Session,
        deadline: Option<Duration>,
        call: F,
        refused_again: impl FnOnce() -> ApiError,
    ) -> Result<T, ApiError>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let work = async {
            let token = session.connection_token(self.defaults.token_wait).await?;
            match call(token.clone()).await {
                Err(UpstreamError::AccessDenied) => {
                    // Connect gave a fresh token, so the chat is alive: a second refusal is
                    // a transient fault, not the chat's end.
                    let token = session.refresh_token(&token).await?;
                    match call(token.clone()).await {
                        Err(UpstreamError::AccessDenied) => Err(refused_again()),
                        other => Ok(other?),
                    }
                }
                other => Ok(other?),
            }
        };
        match deadline {
            Some(d) => tokio::time::timeout(d, work)
                .await
                .map_err(|_| ApiError::DeadlineExceeded)?,
            None => work.await,
        }
    }
}

/// The caller's deadline (`grpc-timeout`), less a tenth (at least 20 ms) for the answer's way
/// back.
fn deadline<T>(request: &Request<T>) -> Option<Duration> {
    let v = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(d.saturating_sub((d / 10).max(Duration::from_millis(20))))
}

fn timestamp(connect_time: &str) -> Option<prost_types::Timestamp> {
    crate::connect::item::parse_time(connect_time)
}

fn new_client_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tonic::async_trait]
impl ChatGateway for Gateway {
    async fn start_chat(
        &self,
        request: Request<pb::StartChatRequest>,
    ) -> Result<Response<pb::StartChatResponse>, Status> {
        self.start_chat_inner(request).await
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        self.send_message_inner(request).await
    }

    async fn send_event(
        &self,
        request: Request<pb::SendEventRequest>,
    ) -> Result<Response<pb::SendEventResponse>, Status> {
        self.send_event_inner(request).await
    }

    async fn get_transcript(
        &self,
        request: Request<pb::GetTranscriptRequest>,
    ) -> Result<Response<pb::GetTranscriptResponse>, Status> {
        self.get_transcript_inner(request).await
    }

    async fn end_chat(
        &self,
        request: Request<pb::EndChatRequest>,
    ) -> Result<Response<pb::EndChatResponse>, Status> {
        self.end_chat_inner(request).await
    }

    async fn get_chat(
        &self,
        request: Request<pb::GetChatRequest>,
    ) -> Result<Response<pb::GetChatResponse>, Status> {
        self.get_chat_inner(request).await
    }

    async fn send_attachment(
        &self,
        request: Request<tonic::Streaming<pb::SendAttachmentRequest>>,
    ) -> Result<Response<pb::SendAttachmentResponse>, Status> {
        self.send_attachment_inner(request).await
    }

    type GetAttachmentStream = attachments::DownloadStream;

    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<Self::GetAttachmentStream>, Status> {
        self.get_attachment_inner(request).await
    }

    async fn get_view(
        &self,
        request: Request<pb::GetViewRequest>,
    ) -> Result<Response<pb::GetViewResponse>, Status> {
        self.get_view_inner(request).await
    }

    async fn get_authentication_url(
        &self,
        request: Request<pb::GetAuthenticationUrlRequest>,
    ) -> Result<Response<pb::GetAuthenticationUrlResponse>, Status> {
        self.get_authentication_url_inner(request).await
    }

    async fn cancel_authentication(
        &self,
        request: Request<pb::CancelAuthenticationRequest>,
    ) -> Result<Response<pb::CancelAuthenticationResponse>, Status> {
        self.cancel_authentication_inner(request).await
    }

    async fn register_push_notification(
        &self,
        request: Request<pb::RegisterPushNotificationRequest>,
    ) -> Result<Response<pb::RegisterPushNotificationResponse>, Status> {
        self.register_push_inner(request).await
    }

    async fn unregister_push_notification(
        &self,
        request: Request<pb::UnregisterPushNotificationRequest>,
    ) -> Result<Response<pb::UnregisterPushNotificationResponse>, Status> {
        self.unregister_push_inner(request).await
    }

    async fn add_bot_participant(
        &self,
        request: Request<pb::AddBotParticipantRequest>,
    ) -> Result<Response<pb::AddBotParticipantResponse>, Status> {
        self.add_bot_inner(request).await
    }

    type SubscribeStream = subscribe::EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.subscribe_inner(request).await
    }
}
