//! The session actor: the one task that owns a contact's participant socket. It connects
//! (CreateParticipantConnection, open, subscribe, wait for the ack), backfills from the
//! transcript, then pumps frames, heartbeats and token refreshes until the chat ends, the
//! session idles out or the gateway drains; a dead socket is replaced with jittered backoff.
//! Token refreshes and socket rotations run beside the pump, never in its way: heartbeats,
//! frames and a drain are served while Connect answers.

use super::backfill::{read_transcript, Seen, SeenKey};
use super::signal::Receiver;
use super::token::RefreshRequest;
use super::{key_digest, wake_reason, Session, SessionError, SessionSettings};
use crate::cluster::{AppendError, Cluster, Entry, Lease, Published};
use crate::connect::item::Item;
use crate::connect::socket::{self, Inbound};
use crate::connect::{Connect, Connection, UpstreamError};
use crate::ops::metrics::CauseLabel;
use crate::pb;
use crate::security::secret::Secret;
use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use rand::Rng;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

type Ws = WebSocketStream<crate::connect::stream::SocketStream>;
/// A socket as the actor holds it: boxed, because every place that holds one across an await
/// (the pump's argument and its binding, the connect's result) reserved its 312 B in every
/// session's task.
type BoxedWs = Box<Ws>;

/// Why a socket stopped being used.
#[derive(Debug)]
enum Stop {
    /// The chat ended (Connect said so, or EndChat's grace ran out).
    Ended,
    /// Drain (or, in cluster mode, the lease lost): close the socket, leave the chat alone.
    Closed,
    /// Nobody used the chat for the idle timeout: close the socket.
    Idle,
    /// The socket died: reconnect.
    Dead(&'static str),
}

/// How an actor ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The chat ended.
    Ended,
    /// Nobody used the chat for the idle timeout.
    Idle,
    /// Told to stop: a drain, or in cluster mode the lease lost.
    Stopped,
}

/// Cluster mode: what makes this actor the chat's one writer.
pub(super) struct Owner {
    pub cluster: Cluster,
    pub lease: Lease,
}

struct Actor<'a> {
    session: Arc<Session>,
    upstream: &'a Connect,
    settings: &'a SessionSettings,
    seen: Seen,
    /// The newest transcript item delivered: where a backfill starts.
    last_durable: Option<String>,
    token_expiry: Option<SystemTime>,
    /// Stops the actor: in one process mode the session's token, which is the process's
    /// shutdown token and is never cancelled here; in cluster mode a child of it that the
    /// lease's loss cancels.
    stop: CancellationToken,
    /// Cluster mode: items go to the chat's shared log, under this lease (boxed: one
    /// process mode does not pay for it in every session).
    owner: Option<Box<Owner>>,
    /// Whether this actor's socket is up (for the sockets gauge).
    up: bool,
}

impl<'a> Actor<'a> {
    fn new(
        session: Arc<Session>,
        upstream: &'a Connect,
        settings: &'a SessionSettings,
        owner: Option<(Box<Owner>, CancellationToken)>,
    ) -> Self {
        let mut seen = Seen::new(settings.history.max(1024));
        let (last_durable, known) = {
            let st = session.lock();
            let durable = st.durable();
            let known: Vec<SeenKey> = st.history.iter().map(|(k, _)| *k).collect();
            ((!durable.is_empty()).then_some(durable), known)
        };
        for k in known {
            seen.insert(k);
        }
        let (owner, stop) = match owner {
            Some((o, stop)) => (Some(o), stop),
            None => (None, session.cancel.clone()),
        };
        Actor {
            session,
            upstream,
            settings,
            seen,
            last_durable,
            token_expiry: None,
            stop,
            owner,
            up: false,
        }
    }
}

/// Runs the chat's socket until the chat ends, it idles out or `stop` (default: the
/// session's) is cancelled. What the session's history holds already counts as delivered.
pub(super) async fn run(
    session: Arc<Session>,
    upstream: &Connect,
    settings: &SessionSettings,
    refresh_requests: &mut Receiver<RefreshRequest>,
    owner: Option<(Box<Owner>, CancellationToken)>,
) -> Outcome {
    let span = tracing::info_span!("chat", contact_id = %session.key());
    // Built in a function of its own: built here, the moved-from locals kept their room in
    // the task's future beside the actor.
    let mut actor = Actor::new(session, upstream, settings, owner);
    let outcome = actor.run(refresh_requests).instrument(span).await;
    if actor.up {
        actor.session.metrics.upstream_sockets.dec();
    }
    outcome
}

/// A socket opened and subscribed, with what arrived before the acknowledgement.
struct Opened {
    ws: Ws,
    early: Vec<Item>,
    connection: Connection,
}

/// CreateParticipantConnection for a fresh URL and token, then the socket opened and
/// subscribed. Owns what it needs, so that a rotation can run beside the pump.
async fn open_socket(
    upstream: Connect,
    participant_token: Secret,
    timeout: Duration,
) -> Result<Opened, UpstreamError> {
    let connection = upstream.create_connection(&participant_token, true).await?;
    let url = connection
        .socket_url
        .clone()
        .ok_or(UpstreamError::Incomplete("Websocket.Url"))?;
    let mut ws = match tokio::time::timeout(timeout, upstream.open_socket(&url)).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "socket open failed");
            return Err(UpstreamError::Unavailable);
        }
        Err(_) => return Err(UpstreamError::Unavailable),
    };
    ws.send(WsMessage::text(socket::SUBSCRIBE))
        .await
        .map_err(|_| UpstreamError::Unavailable)?;
    let mut early = Vec::new();
    let acked = tokio::time::timeout(timeout, async {
        while let Some(msg) = ws.next().await {
            let Ok(WsMessage::Text(t)) = msg else {
                if msg.is_err() {
                    return false;
                }
                continue;
            };
            match socket::parse(&t) {
                Inbound::SubscribeAck { ok } => return ok,
                Inbound::Chat(item) => early.push(*item),
                Inbound::Error(_) => return false,
                _ => {}
            }
        }
        false
    })
    .await;
    if acked != Ok(true) {
        return Err(UpstreamError::Unavailable);
    }
    Ok(Opened {
        ws,
        early,
        connection,
    })
}

/// Answers the calls that asked for a token while the chat ended.
fn answer_waiters_ended(requests: &mut Receiver<RefreshRequest>) {
    while let Some(req) = requests.try_recv() {
        let _ = req.reply.send(Err(SessionError::Ended));
    }
}

/// Awaits the future in `slot`, or never when there is none (for `select!` branches).
async fn in_flight<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl Actor<'_> {
    /// `requests`: calls asking for a token to replace one Connect refused (a parameter, not a
    /// field, so that the pump can wait on it while it borrows the actor).
    async fn run(&mut self, requests: &mut Receiver<RefreshRequest>) -> Outcome {
        let mut failures: u32 = 0;
        if self.owner.is_some() && self.session.info().upstream == super::Upstream::Connected {
            // Taking over from an owner whose socket is gone.
            self.publish_gateway(pb::chat_event::Event::Upstream(pb::UpstreamStatus {
                state: pb::UpstreamState::Reconnecting as i32,
            }))
            .await;
        }
        loop {
            if self.stop.is_cancelled() {
                return Outcome::Stopped;
            }
            // A drain or idle close does not wait for Connect to answer a connect.
            let stop = self.stop.clone();
            let connected = tokio::select! {
                _ = stop.cancelled() => return Outcome::Stopped,
                r = Box::pin(self.connect()) => r,
            };
            let stop = match connected {
                Ok(ws) => {
                    failures = 0;
                    self.set_upstream(pb::UpstreamState::Connected).await;
                    self.session.ready.set(true);
                    tracing::debug!("upstream socket connected");
                    self.pump(ws, requests).await
                }
                Err(UpstreamError::AccessDenied) => Stop::Ended,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream connect failed");
                    Stop::Dead("connect failed")
                }
            };
            match stop {
                Stop::Ended => {
                    answer_waiters_ended(requests);
                    self.publish_gateway(pb::chat_event::Event::ChatEnded(pb::ChatEnded {}))
                        .await;
                    return Outcome::Ended;
                }
                Stop::Closed => return Outcome::Stopped,
                Stop::Idle => return Outcome::Idle,
                Stop::Dead(cause) => {
                    tracing::info!(cause, "upstream socket lost; reconnecting");
                    self.session
                        .metrics
                        .reconnects
                        .get_or_create(&CauseLabel { cause })
                        .inc();
                    self.set_upstream(pb::UpstreamState::Reconnecting).await;
                    let delay = backoff(settings_delay(self.settings, failures));
                    failures = failures.saturating_add(1);
                    // Calls that wait for a token are answered by the next connect, which
                    // brings a fresh one.
                    let stop = self.stop.clone();
                    tokio::select! {
                        _ = stop.cancelled() => return Outcome::Stopped,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Tells subscribers when the socket comes up or goes down (not on every retry).
    async fn set_upstream(&mut self, state: pb::UpstreamState) {
        let up = state == pb::UpstreamState::Connected;
        if up != self.up {
            self.up = up;
            if up {
                self.session.metrics.upstream_sockets.inc();
            } else {
                self.session.metrics.upstream_sockets.dec();
            }
        }
        let shown = self.session.info().upstream == super::Upstream::Connected;
        if shown != up {
            self.publish_gateway(pb::chat_event::Event::Upstream(pb::UpstreamStatus {
                state: state as i32,
            }))
            .await;
        }
    }

    /// A gateway event: to the shared log in cluster mode (if that fails, to this process's
    /// subscribers only), else straight to the subscribers.
    async fn publish_gateway(&mut self, event: pb::chat_event::Event) {
        if self.owner.is_some() {
            let entry = self.session.gateway_entry(event.clone());
            if Box::pin(self.append(entry)).await.is_ok() {
                return;
            }
        }
        self.session.publish_gateway(event);
    }

    /// Cluster mode: appends an entry under the lease and applies it here. A refused append
    /// means the lease is gone: the actor stops.
    async fn append(&mut self, entry: Entry) -> Result<(), Stop> {
        let Some(owner) = &self.owner else {
            return Ok(());
        };
        match owner
            .cluster
            .append(self.session.key(), &owner.lease, &entry)
            .await
        {
            Ok((prev, id)) => {
                if !self.session.apply_published(Published { prev, id, entry }) {
                    self.session.wake_member();
                }
                Ok(())
            }
            Err(AppendError::Fenced) => {
                self.session.metrics.log_append_failures.inc();
                tracing::info!(
                    "the chat's lease moved to another replica; letting go of the socket"
                );
                self.stop.cancel();
                Err(Stop::Closed)
            }
            Err(AppendError::Store(e)) => {
                self.session.metrics.log_append_failures.inc();
                tracing::warn!(error = %e, "could not append to the chat's log");
                Err(Stop::Dead("log unavailable"))
            }
        }
    }

    /// Fresh URL and token, socket open and subscribed, and what was missed backfilled.
    async fn connect(&mut self) -> Result<BoxedWs, UpstreamError> {
        let opened = open_socket(
            self.upstream.clone(),
            self.session.participant_token().clone(),
            self.settings.connect_timeout,
        )
        .await?;
        self.take_connection(opened.connection).await;
        self.backfill_with_refresh().await?;
        for item in opened.early {
            self.deliver(Box::new(item))
                .await
                .map_err(|_| UpstreamError::Unavailable)?;
        }
        Ok(Box::new(opened.ws))
    }

    /// Makes a fresh connection token the session's (and in cluster mode, every replica's).
    async fn take_connection(&mut self, c: Connection) {
        self.token_expiry = c.token_expiry;
        if let Some(owner) = &self.owner {
            // Boxed: the Redis call's future is large, and inline it would sit in every
            // session's task, cluster mode or not.
            Box::pin(share_token(owner, &self.stop, self.session.key(), &c)).await;
        }
        self.session.token.set(Some(c.connection_token));
    }

    /// A backfill that survives an expired or revoked connection token: the token is
    /// replaced once. Only a refusal of CreateParticipantConnection means the chat ended.
    async fn backfill_with_refresh(&mut self) -> Result<(), UpstreamError> {
        match self.backfill().await {
            Err(UpstreamError::AccessDenied) => {
                let c = self
                    .upstream
                    .create_connection(self.session.participant_token(), false)
                    .await?;
                self.take_connection(c).await;
                match self.backfill().await {
                    // The fresh token was refused too: retry the whole connection later.
                    Err(UpstreamError::AccessDenied) => Err(UpstreamError::Unavailable),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Fetches what the transcript holds after the last delivered item and delivers what was
    /// not seen yet, oldest first.
    async fn backfill(&mut self) -> Result<(), UpstreamError> {
        let Some(token) = self.session.current_token() else {
            return Ok(());
        };
        let upstream = self.upstream;
        let transcript = read_transcript(
            self.last_durable.as_deref(),
            self.settings.backfill_max_pages,
            |q| upstream.get_transcript(&token, q),
        )
        .await;
        if let Some(e) = transcript.error {
            return Err(e);
        }
        let mut recovered = 0;
        for item in transcript.items {
            let new = self
                .deliver(Box::new(item))
                .await
                .map_err(|_| UpstreamError::Unavailable)?;
            recovered += u64::from(new);
        }
        self.session.metrics.backfilled_items.inc_by(recovered);
        tracing::debug!(items = recovered, "backfill done");
        Ok(())
    }

    /// Delivers an item unless it was delivered before; true when it was new. In cluster
    /// mode it counts as delivered once the chat's log holds it.
    /// The item comes boxed: an async fn keeps its arguments in its state, and this one is
    /// awaited inside the pump, whose size every session's task reserves.
    async fn deliver(&mut self, item: Box<Item>) -> Result<bool, Stop> {
        self.session.metrics.events_received.inc();
        let key = item.dedupe_key();
        let seen_key = key_digest().of(&key);
        if self.seen.contains(seen_key) {
            self.session.metrics.events_duplicate.inc();
            return Ok(false);
        }
        if self.owner.is_some() {
            // Boxed: the Redis call's future is large, and inline it would sit in every
            // session's task, cluster mode or not.
            return Box::pin(self.append_item(item, key, seen_key)).await;
        }
        let durable = (!item.is_ephemeral()).then(|| item.id.clone());
        self.session.publish_item(*item, key, seen_key);
        self.delivered(seen_key, durable);
        Ok(true)
    }

    /// Cluster mode: [`Self::deliver`]'s append of a new item to the chat's log.
    async fn append_item(
        &mut self,
        item: Box<Item>,
        key: String,
        seen_key: SeenKey,
    ) -> Result<bool, Stop> {
        let durable = (!item.is_ephemeral()).then(|| item.id.clone());
        let entry = self.session.entry_for(*item, key);
        self.append(entry).await?;
        self.delivered(seen_key, durable);
        Ok(true)
    }

    /// Notes an item delivered; `durable`: its id, when the transcript keeps it.
    fn delivered(&mut self, seen_key: SeenKey, durable: Option<Option<String>>) {
        self.seen.insert(seen_key);
        if let Some(id) = durable {
            self.last_durable = id;
        }
    }

    /// A CreateParticipantConnection for a new connection token, run beside the pump.
    fn start_refresh(&self) -> BoxFuture<'static, Result<Connection, UpstreamError>> {
        let upstream = self.upstream.clone();
        let participant_token = self.session.participant_token().clone();
        async move { upstream.create_connection(&participant_token, false).await }.boxed()
    }

    async fn pump(&mut self, mut ws: BoxedWs, requests: &mut Receiver<RefreshRequest>) -> Stop {
        let mut awaiting_heartbeat = false;
        let idle_check = (self.settings.idle_timeout / 4).max(Duration::from_millis(10));
        let now = Instant::now();
        // A heartbeat right after open, then one every interval.
        let mut deadlines = Deadlines {
            heartbeat: now,
            idle: now + idle_check,
            rotate: now + self.settings.rotate_interval,
            end: None,
            refresh: self.refresh_at(),
            barrier: None,
        };
        // One timer serves every deadline, and it is re-armed only when the next deadline
        // moves: rebuilding it for every frame cost a timer-wheel registration per event.
        let timer = tokio::time::sleep_until(now);
        tokio::pin!(timer);
        // EndChat, token requests and the stop token wake the pump through one cell, which
        // says why: polled every round, it costs a load where a future for each cost locks.
        // The stop token's future is polled with a waker of the cell's, and only once that
        // waker fires.
        let wakeup = self.session.wakeup.clone();
        let stop_waker = Waker::from(wakeup.clone());
        let stop_token = self.stop.clone();
        let cancelled = stop_token.cancelled();
        tokio::pin!(cancelled);
        // The first round looks at each.
        wakeup.raise(wake_reason::STOP | wake_reason::ENDING | wake_reason::REFRESH);
        // A token refresh in flight, and the calls waiting for its token.
        let mut refreshing: Option<BoxFuture<'static, Result<Connection, UpstreamError>>> = None;
        let mut waiters: Vec<oneshot::Sender<Result<Secret, SessionError>>> = Vec::new();
        // A rotation's new socket being opened, then held while the old one drains.
        // Both boxed, like every rare path here: a socket is large, and whatever the pump holds
        // inline is reserved in every session's task for its whole life.
        let mut opening: Option<BoxFuture<'static, Result<Box<Opened>, UpstreamError>>> = None;
        let mut draining: Option<Box<(Ws, Vec<Item>)>> = None;
        let stop = loop {
            // An item read from the socket, delivered after the select: awaited inside its
            // arm, the frame it came in would be held in every session's task.
            let mut arrived: Option<Box<Item>> = None;
            let next = deadlines.next(
                refreshing.is_some(),
                opening.is_some() || draining.is_some(),
            );
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            // Biased: the rare branches first, each a load or a timer check, and the socket
            // last, so that a busy socket cannot hold back a heartbeat or a stop.
            tokio::select! {
                biased;
                reasons = std::future::poll_fn(|cx| wakeup.poll_raised(cx)) => {
                    if reasons & wake_reason::STOP != 0
                        && cancelled
                            .as_mut()
                            .poll(&mut Context::from_waker(&stop_waker))
                            .is_ready()
                    {
                        break Stop::Closed;
                    }
                    if reasons & wake_reason::ENDING != 0
                        && deadlines.end.is_none()
                        && self.session.ending.load(Ordering::Acquire)
                    {
                        deadlines.end = Some(Instant::now() + self.settings.end_grace);
                    }
                    if reasons & wake_reason::REFRESH != 0 {
                        while let Some(req) = requests.try_recv() {
                            match self.session.current_token() {
                                Some(t) if t.expose() != req.stale.expose() => {
                                    let _ = req.reply.send(Ok(t));
                                }
                                _ => {
                                    waiters.push(req.reply);
                                    if refreshing.is_none() {
                                        refreshing = Some(self.start_refresh());
                                    }
                                }
                            }
                        }
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if deadlines.end.is_some_and(|t| t <= now) {
                        break Stop::Ended;
                    }
                    if deadlines.heartbeat <= now {
                        if awaiting_heartbeat {
                            break Stop::Dead("heartbeat unanswered");
                        }
                        if ws.send(WsMessage::text(socket::HEARTBEAT)).await.is_err() {
                            break Stop::Dead("write failed");
                        }
                        awaiting_heartbeat = true;
                        deadlines.heartbeat = next_heartbeat(now, self.settings.heartbeat_interval);
                    }
                    if deadlines.idle <= now {
                        deadlines.idle = now + idle_check;
                        let s = &self.session;
                        let unused = s.unused_for();
                        if s.subscribers.load(std::sync::atomic::Ordering::Relaxed) == 0
                            && unused >= self.settings.idle_timeout
                        {
                            tracing::debug!("session idle; closing its socket");
                            break Stop::Idle;
                        }
                    }
                    if refreshing.is_none() && deadlines.refresh.is_some_and(|t| t <= now) {
                        deadlines.refresh = None;
                        refreshing = Some(self.start_refresh());
                    }
                    if opening.is_none() && draining.is_none() && deadlines.rotate <= now {
                        opening = Some(
                            open_socket(
                                self.upstream.clone(),
                                self.session.participant_token().clone(),
                                self.settings.connect_timeout,
                            )
                            .map(|opened| opened.map(Box::new))
                            .boxed(),
                        );
                    }
                    if deadlines.barrier.is_some_and(|t| t <= now) {
                        deadlines.barrier = None;
                        if let Some(new) = draining.take() {
                            if let Err(stop) = Box::pin(self.swap(&mut ws, new, false)).await {
                                break stop;
                            }
                            awaiting_heartbeat = false;
                            deadlines.rotate = Instant::now() + self.settings.rotate_interval;
                        }
                    }
                }
                done = in_flight(&mut refreshing) => {
                    refreshing = None;
                    match done {
                        Ok(c) => {
                            let token = c.connection_token.clone();
                            // Boxed, as every rare step of the pump: inline, its future
                            // would be the largest thing every session's task reserves.
                            Box::pin(self.take_connection(c)).await;
                            tracing::debug!(waiting = waiters.len(), "connection token refreshed");
                            for w in waiters.drain(..) {
                                let _ = w.send(Ok(token.clone()));
                            }
                        }
                        Err(UpstreamError::AccessDenied) => {
                            for w in waiters.drain(..) {
                                let _ = w.send(Err(SessionError::Ended));
                            }
                            break Stop::Ended;
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "connection token refresh failed; retrying");
                            for w in waiters.drain(..) {
                                let _ = w.send(Err(SessionError::Upstream(e.clone())));
                            }
                            // Try again a little later, well before the token expires.
                            self.token_expiry = Some(
                                SystemTime::now()
                                    + self.settings.token_refresh_margin
                                    + self.settings.reconnect_min,
                            );
                        }
                    }
                    deadlines.refresh = self.refresh_at();
                }
                opened = in_flight(&mut opening) => {
                    opening = None;
                    match opened {
                        Ok(opened) => {
                            let Opened { ws: new, early, connection } = *opened;
                            // Boxed before the await: a socket held across it would be
                            // reserved in every session's task.
                            draining = Some(Box::new((new, early)));
                            Box::pin(self.take_connection(connection)).await;
                            deadlines.refresh = self.refresh_at();
                            // Read the old socket up to a barrier (a deep heartbeat, answered
                            // after everything the service sent before it).
                            deadlines.barrier = Some(
                                if ws.send(WsMessage::text(socket::PING)).await.is_ok() {
                                    Instant::now() + self.settings.connect_timeout
                                } else {
                                    Instant::now()
                                },
                            );
                        }
                        Err(UpstreamError::AccessDenied) => break Stop::Ended,
                        Err(e) => {
                            tracing::info!(error = %e, "socket rotation failed; keeping the current socket");
                            deadlines.rotate = Instant::now() + self.settings.reconnect_max;
                        }
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(WsMessage::Text(t))) => match socket::parse(&t) {
                        Inbound::Heartbeat => awaiting_heartbeat = false,
                        Inbound::Chat(item) => arrived = Some(item),
                        Inbound::Error(message) => {
                            tracing::info!(message = %message, "upstream socket reported an error");
                            break Stop::Dead("error frame");
                        }
                        Inbound::Ping { .. } => {
                            // The barrier of a rotation: everything before it was read.
                            if let Some(new) = draining.take() {
                                if let Err(stop) = Box::pin(self.swap(&mut ws, new, true)).await {
                                    break stop;
                                }
                                awaiting_heartbeat = false;
                                deadlines.rotate = Instant::now() + self.settings.rotate_interval;
                                deadlines.barrier = None;
                            }
                        }
                        Inbound::SubscribeAck { .. } => {}
                        Inbound::Unknown(_) => {
                            socket::note_rejected(&self.session.metrics, "unknown topic", "");
                        }
                        Inbound::Malformed(why) => {
                            socket::note_rejected(&self.session.metrics, "malformed", &why);
                        }
                    },
                    Some(Ok(WsMessage::Close(_))) | None => break Stop::Dead("closed by peer"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        socket::note_read_error(&self.session.metrics, &e);
                        break Stop::Dead("read error");
                    }
                },
            }
            if let Some(item) = arrived {
                let end = item.is_chat_end();
                if let Err(stop) = self.deliver(item).await {
                    break stop;
                }
                if end {
                    break Stop::Ended;
                }
            }
        };
        // Calls still waiting for the refresh this stop abandoned retry later.
        for w in waiters.drain(..) {
            let _ = w.send(Err(match stop {
                Stop::Ended => SessionError::Ended,
                _ => SessionError::NotReady,
            }));
        }
        if !matches!(stop, Stop::Dead(_)) {
            let _ = Box::pin(tokio::time::timeout(
                Duration::from_secs(1),
                (*ws).close(None),
            ))
            .await;
        }
        // A chat whose end was requested ends even if the socket died meanwhile.
        if matches!(stop, Stop::Dead(_)) && self.session.ending.load(Ordering::Acquire) {
            return Stop::Ended;
        }
        stop
    }

    /// Ends a rotation: the new socket replaces the old one, which is closed. `drained`: the
    /// old socket was read to its barrier; if not, the transcript fills the gap.
    async fn swap(
        &mut self,
        ws: &mut BoxedWs,
        new: Box<(Ws, Vec<Item>)>,
        drained: bool,
    ) -> Result<(), Stop> {
        let (new, early) = *new;
        for item in early {
            self.deliver(Box::new(item)).await?;
        }
        let mut old = std::mem::replace(&mut **ws, new);
        if !drained {
            // Boxed: the pager's and the SDK's futures are large, and inline they would sit in
            // every session's task for its whole life (this path is rare).
            match Box::pin(self.backfill_with_refresh()).await {
                Ok(()) => {}
                Err(UpstreamError::AccessDenied) => return Err(Stop::Ended),
                Err(e) => tracing::info!(error = %e, "backfill after a rotation failed"),
            }
        }
        // Closing politely may take a round trip; it must not hold up the new socket.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), old.close(None)).await;
        });
        tracing::debug!(drained, "upstream socket rotated");
        Ok(())
    }

    /// When the current token is to be refreshed; none without an expiry.
    fn refresh_at(&self) -> Option<Instant> {
        let expiry = self.token_expiry?;
        let left = expiry
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .saturating_sub(self.settings.token_refresh_margin);
        Some(Instant::now() + left)
    }
}

/// The coarsest heartbeat grid: heartbeats fall due on a grid shared by every session of the
/// process ([`super::grid`]), so that one timer wake-up sends the heartbeats of many sockets
/// and their answers come back together.
const HEARTBEAT_GRID: Duration = Duration::from_secs(1);

/// The heartbeat after one sent at `now`: an interval later, rounded up to the process's
/// heartbeat grid ([`HEARTBEAT_GRID`], or a tenth of the interval when that is finer): never
/// sooner than the interval, at most a tenth of it later.
pub(crate) fn next_heartbeat(now: Instant, interval: Duration) -> Instant {
    super::grid::at_or_after(now + interval, HEARTBEAT_GRID.min(interval / 10))
}

/// The pump's deadlines, all served by one timer: a timer each cost every session's task a
/// timer-wheel entry and about 100 B for its whole life, and a poll at every wake-up.
struct Deadlines {
    heartbeat: Instant,
    /// The next idle check.
    idle: Instant,
    /// The next socket rotation (while none is under way).
    rotate: Instant,
    /// EndChat's grace running out, once the end was asked for.
    end: Option<Instant>,
    /// The connection token's refresh (while none is in flight).
    refresh: Option<Instant>,
    /// How long a rotation reads the old socket for its barrier's answer.
    barrier: Option<Instant>,
}

impl Deadlines {
    /// The earliest deadline that counts now: a refresh in flight or a rotation under way
    /// puts its own aside.
    fn next(&self, refreshing: bool, rotating: bool) -> Instant {
        let mut next = self.heartbeat.min(self.idle);
        if !rotating {
            next = next.min(self.rotate);
        }
        if !refreshing {
            next = self.refresh.map_or(next, |t| next.min(t));
        }
        for t in [self.end, self.barrier].into_iter().flatten() {
            next = next.min(t);
        }
        next
    }
}

/// Cluster mode: stores a new connection token for the other replicas (sealed); a refusal
/// means the lease is gone, and the actor stops.
async fn share_token(owner: &Owner, stop: &CancellationToken, contact_id: &str, c: &Connection) {
    let ttl = c
        .token_expiry
        .and_then(|e| e.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::from_secs(3600));
    match owner
        .cluster
        .put_token(contact_id, &owner.lease, &c.connection_token, ttl)
        .await
    {
        Ok(true) => {}
        Ok(false) => stop.cancel(),
        Err(e) => tracing::warn!(error = %e, "could not share the connection token"),
    }
}

fn settings_delay(settings: &SessionSettings, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.min(16));
    settings
        .reconnect_min
        .saturating_mul(factor)
        .min(settings.reconnect_max)
}

/// ±30 % jitter, so that many sessions losing their sockets at once do not reconnect in step.
fn backoff(base: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.7..1.3);
    base.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_never_early_and_late_by_at_most_a_tenth_of_its_interval() {
        let base = Instant::now();
        // The default interval: the 1 s grid. A short one: a tenth of it.
        for (interval, late) in [
            (Duration::from_secs(10), HEARTBEAT_GRID),
            (Duration::from_millis(200), Duration::from_millis(20)),
        ] {
            for sent in [base, base + Duration::from_millis(333)] {
                let t = next_heartbeat(sent, interval);
                assert!(
                    t >= sent + interval && t < sent + interval + late,
                    "{interval:?}"
                );
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = SessionSettings {
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
            ..Default::default()
        };
        assert_eq!(settings_delay(&s, 0), Duration::from_millis(100));
        assert_eq!(settings_delay(&s, 2), Duration::from_millis(400));
        assert_eq!(settings_delay(&s, 40), Duration::from_secs(1));
        let j = backoff(Duration::from_secs(1));
        assert!(j >= Duration::from_millis(700) && j <= Duration::from_millis(1300));
    }
}
