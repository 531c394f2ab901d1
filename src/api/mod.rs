//! The gRPC surface: `chatgateway.v1.ChatGateway`. Each RPC validates its input, proves the
//! caller's right to the chat with its chat token, and hands the work to the chat's session
//! or to the Connect client. No Connect token ever leaves this module in a response.

pub mod status;
pub mod validate;

use crate::api::status::ApiError;
use crate::api::validate::{
    check_chat_ref, validate_send_event, validate_send_message, validate_transcript,
};
use crate::connect::{TranscriptQuery, UpstreamError};
use crate::pb::{self, chat_gateway_server::ChatGateway};
use crate::security::auth::Principal;
use crate::security::limits::{ChatsPerCaller, EventBudget, Limits};
use crate::security::secret::{self, Secret, TokenHash};
use crate::session::cursor::{self, Cursor};
use crate::session::fanout::{Listener, RecvError};
use crate::session::{Session, SessionError, Sessions, SharedEvent, SubscriberGuard};
use crate::store::ChatRecord;
use futures::Stream;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};
pub use validate::{limits, validate_start};

/// What the gateway starts chats with.
#[derive(Clone, Debug, Default)]
pub struct ChatDefaults {
    pub instance_id: String,
    pub contact_flow_id: String,
    /// Other instance and flow ids a request may name.
    pub allowed_instance_ids: HashSet<String>,
    pub allowed_contact_flow_ids: HashSet<String>,
    /// How long a call waits for the chat's first connection token.
    pub token_wait: Duration,
    /// A quiet Subscribe stream gets a keepalive event this often.
    pub keepalive_interval: Duration,
}

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
    /// Live chats per caller, reserved before StartChat spends Connect quota.
    chats_per_caller: Arc<ChatsPerCaller>,
    /// The per-chat typing and receipt budget of SendEvent.
    events: Arc<EventBudget>,
}

impl Gateway {
    pub fn new(sessions: Sessions, defaults: ChatDefaults) -> Self {
        Self::with_limits(sessions, defaults, &Limits::default(), 100_000)
    }

    /// A gateway applying `limits`; `max_chats` bounds the per-chat budgets (the store's
    /// capacity).
    pub fn with_limits(
        sessions: Sessions,
        defaults: ChatDefaults,
        limits: &Limits,
        max_chats: usize,
    ) -> Self {
        Self {
            sessions,
            defaults: Arc::new(defaults),
            chats_per_caller: Arc::new(ChatsPerCaller::new(limits.max_chats_per_caller)),
            events: Arc::new(EventBudget::new(
                limits.typing_interval,
                limits.receipts_per_chat,
                max_chats,
            )),
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
    ) -> Result<ChatRecord, ApiError> {
        let inspecting = principal.operator && access == Access::Inspect;
        let chat = check_chat_ref(chat, inspecting)?;
        let record = self
            .sessions
            .store()
            .get(&chat.contact_id)
            .await?
            .ok_or(ApiError::ChatNotFound)?;
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
            match call(token).await {
                Err(UpstreamError::AccessDenied) => {
                    // Connect gave a fresh token, so the chat is alive: a second refusal is
                    // a transient fault, not the chat's end.
                    let token = session.refresh_token(self.sessions.upstream()).await?;
                    match call(token).await {
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

impl Gateway {
    /// Reserves one of the caller's live-chat slots, first forgetting its chats that ended.
    async fn reserve_chat(
        &self,
        principal: &Principal,
    ) -> Result<crate::security::limits::Reservation<'_>, ApiError> {
        match self.chats_per_caller.reserve(&principal.id) {
            Ok(slot) => Ok(slot),
            Err(max) => {
                let mut ended = Vec::new();
                for id in self.chats_per_caller.held(&principal.id) {
                    let live = self.sessions.get(&id).map(|s| !s.is_ended());
                    let record = self.sessions.store().get(&id).await?;
                    if live == Some(false) || record.is_none_or(|r| r.ended) {
                        ended.push(id);
                    }
                }
                self.chats_per_caller.forget(&principal.id, &ended);
                self.chats_per_caller
                    .reserve(&principal.id)
                    .map_err(|_| ApiError::TooManyChatsForCaller(max))
            }
        }
    }
}

fn new_client_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What a resuming subscriber missed beyond the session's history, from the transcript.
struct CatchUp {
    events: Vec<pb::ChatEvent>,
    keys: HashSet<String>,
    /// False when the transcript could not be read to the end.
    complete: bool,
}

impl Default for CatchUp {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            keys: HashSet::new(),
            complete: true,
        }
    }
}

impl Gateway {
    async fn catch_up(&self, session: &Session, cursor: &Cursor) -> CatchUp {
        let upstream = self.sessions.upstream();
        let max_pages = self.sessions.settings().backfill_max_pages.max(1);
        let start = (!cursor.durable_id.is_empty()).then(|| cursor.durable_id.clone());
        let mut items = Vec::new();
        let mut next_token = None;
        let mut complete = false;
        for _ in 0..max_pages {
            let query = TranscriptQuery {
                contact_id: None,
                max_results: 100,
                next_token: next_token.take(),
                forward: Some(start.is_some()),
                descending: false,
                start_id: start.clone(),
            };
            let page = self
                .with_token(session, None, |t| {
                    let q = query.clone();
                    async move { upstream.get_transcript(&t, q).await }
                })
                .await;
            match page {
                Ok(page) => {
                    items.extend(page.items);
                    match page.next_token {
                        Some(t) => next_token = Some(t),
                        None => {
                            complete = true;
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(contact_id = %session.contact_id, error = %e, "transcript catch-up failed");
                    break;
                }
            }
        }
        items.sort_by(|a, b| a.absolute_time.cmp(&b.absolute_time));
        let mut durable = cursor.durable_id.clone();
        let mut out = CatchUp {
            complete,
            ..CatchUp::default()
        };
        out.keys.insert(cursor.key.clone());
        out.keys.insert(cursor.durable_id.clone());
        for item in items {
            let key = item.dedupe_key();
            if !out.keys.insert(key.clone()) {
                continue;
            }
            let (ev, _) = crate::session::event_with_cursor(&item, key, &mut durable);
            out.events.push(ev);
        }
        out
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ChatEvent, Status>> + Send>>;

impl Gateway {
    async fn start_chat_inner(
        &self,
        request: Request<pb::StartChatRequest>,
    ) -> Result<Response<pb::StartChatResponse>, Status> {
        let principal = Principal::of(&request);
        let mut start = validate_start(request.into_inner(), &self.defaults)?;
        let settings = self.sessions.settings();
        if self.sessions.live_count() >= settings.max_sessions {
            return Err(
                ApiError::from(SessionError::TooManySessions(settings.max_sessions)).into(),
            );
        }
        let slot = self.reserve_chat(&principal).await?;
        let content_types = start.content_types.clone();
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
        let chat_token = secret::new_chat_token();
        let record = self
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
            })
            .await
            .map_err(ApiError::from)?;
        if record.owner != principal.id {
            // A client token replayed by another caller names that caller's chat.
            return Err(ApiError::PermissionDenied.into());
        }
        slot.commit(&record.contact_id);
        if !record.ended {
            self.sessions.open(&record).map_err(ApiError::from)?;
        }
        tracing::info!(contact_id = %record.contact_id, principal = %principal.id, "chat started");
        Ok(Response::new(pb::StartChatResponse {
            contact_id: record.contact_id,
            participant_id: record.participant_id,
            chat_token: chat_token.expose().to_owned(),
        }))
    }

    async fn send_message_inner(
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

    async fn send_event_inner(
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
        let contact_id = session.contact_id.as_str();
        // Connect's SendEvent quota is small: typing goes at most once per interval and each
        // receipt once per message; what the budget suppresses is answered OK locally.
        let forward = match &event.receipt {
            None => self.events.take_typing(contact_id),
            Some((kind, id)) => self.events.take_receipt(contact_id, id, *kind),
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
                match &event.receipt {
                    None => self.events.return_typing(contact_id),
                    Some((kind, id)) => self.events.return_receipt(contact_id, id, *kind),
                }
                return Err(e.into());
            }
        };
        Ok(Response::new(pb::SendEventResponse {
            time: timestamp(&sent.absolute_time),
            event_id: sent.id,
        }))
    }

    async fn subscribe_inner(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let principal = Principal::of(&request);
        let req = request.into_inner();
        let resume = if req.resume_cursor.is_empty() {
            None
        } else {
            Some(Cursor::decode(&req.resume_cursor).ok_or_else(|| {
                ApiError::invalid(
                    "resume_cursor",
                    format!(
                        "is not a cursor this gateway issued (at most {} characters)",
                        cursor::MAX_LEN
                    ),
                )
            })?)
        };
        let record = self
            .authorize(req.chat.as_ref(), &principal, Access::Inspect)
            .await?;
        let session = self.sessions.open(&record).map_err(ApiError::from)?;
        if resume.is_some() {
            // Until the first backfill is done the history does not reach back yet.
            session.wait_ready(self.defaults.token_wait).await;
        }
        let mut catch_up = CatchUp::default();
        let sub = match session.subscribe(resume.as_ref()) {
            Err(SessionError::BadCursor) => {
                // The history no longer reaches the cursor: replay the whole history and
                // read what it lacks from the transcript, skipping what both hold.
                let sub = session
                    .subscribe(Some(&Cursor::default()))
                    .map_err(ApiError::from)?;
                if let Some(cursor) = &resume {
                    catch_up = self.catch_up(&session, cursor).await;
                }
                sub
            }
            other => other.map_err(ApiError::from)?,
        };
        let initial = pb::ChatEvent {
            cursor: sub.cursor.clone(),
            event: Some(pb::chat_event::Event::Started(pb::StreamStarted {
                upstream: sub.upstream.to_pb() as i32,
                not_recovered: !catch_up.complete,
            })),
            ..Default::default()
        };
        let keepalive = self
            .defaults
            .keepalive_interval
            .max(Duration::from_millis(10));
        let state = StreamState {
            keepalive: tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive),
            initial: Some(initial),
            skip: catch_up.keys,
            catch_up: catch_up.events.into(),
            backlog: sub.backlog.into(),
            live: sub.live,
            ended_before: sub.ended,
            cursor: sub.cursor,
            done: false,
            guard: sub.guard,
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            state, next_event,
        ))))
    }

    async fn get_transcript_inner(
        &self,
        request: Request<pb::GetTranscriptRequest>,
    ) -> Result<Response<pb::GetTranscriptResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        let query = validate_transcript(&req)?;
        let session = self
            .live_session(req.chat.as_ref(), &principal, Access::Inspect)
            .await?;
        let upstream = self.sessions.upstream();
        // With a fresh token refused too, a past contact outside the chain is the reason.
        let past = query.contact_id.is_some();
        let page = self
            .with_token_or(
                &session,
                deadline,
                |t| {
                    let q = query.clone();
                    async move { upstream.get_transcript(&t, q).await }
                },
                || {
                    if past {
                        ApiError::NotInChain
                    } else {
                        UpstreamError::Unavailable.into()
                    }
                },
            )
            .await?;
        Ok(Response::new(pb::GetTranscriptResponse {
            events: page
                .items
                .iter()
                .map(crate::connect::item::to_event)
                .collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn end_chat_inner(
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
            .mark_ended(&session.contact_id)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(contact_id = %session.contact_id, "chat ended by the caller");
        Ok(Response::new(pb::EndChatResponse {}))
    }

    async fn get_chat_inner(
        &self,
        request: Request<pb::GetChatRequest>,
    ) -> Result<Response<pb::GetChatResponse>, Status> {
        let principal = Principal::of(&request);
        let req = request.into_inner();
        let record = self
            .authorize(req.chat.as_ref(), &principal, Access::Inspect)
            .await?;
        let live = self.sessions.get(&record.contact_id).map(|s| s.info());
        let ended = record.ended || live.as_ref().is_some_and(|i| i.ended);
        Ok(Response::new(pb::GetChatResponse {
            contact_id: record.contact_id,
            participant_id: record.participant_id,
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

#[tonic::async_trait]
impl ChatGateway for Gateway {
    async fn start_chat(
        &self,
        request: Request<pb::StartChatRequest>,
    ) -> Result<Response<pb::StartChatResponse>, Status> {
        let result = self.start_chat_inner(request).await;
        self.record("StartChat", &result);
        result
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let result = self.send_message_inner(request).await;
        self.record("SendMessage", &result);
        result
    }

    async fn send_event(
        &self,
        request: Request<pb::SendEventRequest>,
    ) -> Result<Response<pb::SendEventResponse>, Status> {
        let result = self.send_event_inner(request).await;
        self.record("SendEvent", &result);
        result
    }

    async fn get_transcript(
        &self,
        request: Request<pb::GetTranscriptRequest>,
    ) -> Result<Response<pb::GetTranscriptResponse>, Status> {
        let result = self.get_transcript_inner(request).await;
        self.record("GetTranscript", &result);
        result
    }

    async fn end_chat(
        &self,
        request: Request<pb::EndChatRequest>,
    ) -> Result<Response<pb::EndChatResponse>, Status> {
        let result = self.end_chat_inner(request).await;
        self.record("EndChat", &result);
        result
    }

    async fn get_chat(
        &self,
        request: Request<pb::GetChatRequest>,
    ) -> Result<Response<pb::GetChatResponse>, Status> {
        let result = self.get_chat_inner(request).await;
        self.record("GetChat", &result);
        result
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let result = self.subscribe_inner(request).await;
        self.record("Subscribe", &result);
        result
    }
}

impl Gateway {
    fn record<T>(&self, method: &'static str, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.sessions.metrics().grpc_call(method, code);
    }
}

/// One Subscribe stream: the current upstream state, the backlog after the resume cursor,
/// then live events until the chat ends.
struct StreamState {
    /// Ticks while the stream is quiet; reset by every event.
    keepalive: tokio::time::Interval,
    initial: Option<pb::ChatEvent>,
    /// What a transcript catch-up found, delivered first.
    catch_up: VecDeque<pb::ChatEvent>,
    /// Keys of items the catch-up delivered, skipped when the history or the socket brings
    /// them again (empty without a catch-up).
    skip: HashSet<String>,
    backlog: VecDeque<SharedEvent>,
    live: Listener,
    ended_before: bool,
    /// The cursor of the last event delivered, for the caller to resume from.
    cursor: String,
    done: bool,
    guard: SubscriberGuard,
}

fn is_end(ev: &pb::ChatEvent) -> bool {
    matches!(ev.event, Some(pb::chat_event::Event::ChatEnded(_)))
}

fn with_cursor(mut status: Status, cursor: &str) -> Status {
    if let Ok(v) = cursor.parse() {
        status.metadata_mut().insert("resume-cursor", v);
    }
    status
}

async fn next_event(mut st: StreamState) -> Option<(Result<pb::ChatEvent, Status>, StreamState)> {
    if st.done {
        return None;
    }
    if let Some(ev) = st.initial.take() {
        return Some((Ok(ev), st));
    }
    if let Some(ev) = st.catch_up.pop_front() {
        st.cursor.clone_from(&ev.cursor);
        return Some((Ok(ev), st));
    }
    let next = loop {
        let ev = match st.backlog.pop_front() {
            Some(ev) => ev,
            None if st.ended_before => return None,
            None => match tokio::select! {
                r = st.live.recv() => r,
                _ = st.keepalive.tick() => {
                    let ev = pb::ChatEvent {
                        cursor: st.cursor.clone(),
                        event: Some(pb::chat_event::Event::Keepalive(pb::Keepalive {})),
                        ..Default::default()
                    };
                    return Some((Ok(ev), st));
                }
            } {
                Ok(ev) => ev,
                Err(RecvError::Lagged(missed)) => {
                    st.done = true;
                    let msg = format!(
                        "this subscriber fell {missed} events behind and was ended; \
                     subscribe again with resume_cursor {}",
                        st.cursor
                    );
                    let status = with_cursor(Status::resource_exhausted(msg), &st.cursor);
                    return Some((Err(status), st));
                }
                Err(RecvError::Closed) => {
                    st.done = true;
                    if st.guard.session().is_ended() {
                        return None;
                    }
                    let status = with_cursor(
                    Status::unavailable(format!(
                        "the gateway closed this chat's session; subscribe again with resume_cursor {}",
                        st.cursor
                    )),
                    &st.cursor,
                );
                    return Some((Err(status), st));
                }
            },
        };
        if st.skip.is_empty() || ev.item_id.is_empty() {
            break ev;
        }
        match Cursor::decode(&ev.cursor) {
            Some(c) if st.skip.contains(&c.key) => continue,
            _ => break ev,
        }
    };
    st.keepalive.reset();
    st.guard.session().metrics.events_delivered.inc();
    if !next.cursor.is_empty() {
        st.cursor.clone_from(&next.cursor);
    }
    if is_end(&next) {
        st.done = true;
    }
    Some((Ok((*next).clone()), st))
}
