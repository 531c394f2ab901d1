//! The session actor: the one task that owns a contact's participant socket. It connects
//! (CreateParticipantConnection, open, subscribe, wait for the ack), backfills from the
//! transcript, then pumps frames, heartbeats and token refreshes until the chat ends, the
//! session idles out or the gateway drains; a dead socket is replaced with jittered backoff.

use super::{Session, SessionSettings};
use crate::connect::item::Item;
use crate::connect::socket::{self, Inbound};
use crate::connect::{Connect, TranscriptQuery, UpstreamError};
use crate::ops::metrics::CauseLabel;
use crate::pb;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::Instrument;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a socket stopped being used.
#[derive(Debug)]
enum Stop {
    /// The chat ended (Connect said so, or EndChat's grace ran out).
    Ended,
    /// Drain or idle: close the socket, leave the chat alone.
    Closed,
    /// The socket died: reconnect.
    Dead(&'static str),
}

/// Item keys already delivered, bounded: the oldest are forgotten first.
struct Seen {
    keys: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Seen {
    fn new(cap: usize) -> Self {
        Self {
            keys: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(16),
        }
    }

    /// Records the key; false when it was seen already.
    fn insert(&mut self, key: &str) -> bool {
        if self.keys.contains(key) {
            return false;
        }
        self.keys.insert(key.to_owned());
        self.order.push_back(key.to_owned());
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }
}

struct Actor<'a> {
    session: Arc<Session>,
    upstream: &'a Connect,
    settings: &'a SessionSettings,
    seen: Seen,
    /// The newest transcript item delivered: where a backfill starts.
    last_durable: Option<String>,
    token_expiry: Option<SystemTime>,
}

pub(super) async fn run(session: Arc<Session>, upstream: &Connect, settings: &SessionSettings) {
    let span = tracing::info_span!("chat", contact_id = %session.contact_id);
    let mut actor = Actor {
        session,
        upstream,
        settings,
        seen: Seen::new(settings.history.max(1024)),
        last_durable: None,
        token_expiry: None,
    };
    actor.run().instrument(span).await
}

impl Actor<'_> {
    async fn run(&mut self) {
        let mut failures: u32 = 0;
        loop {
            if self.session.cancel.is_cancelled() {
                return;
            }
            let stop = match Box::pin(self.connect()).await {
                Ok(ws) => {
                    failures = 0;
                    self.set_upstream(pb::UpstreamState::Connected);
                    self.session.ready.send_replace(true);
                    tracing::debug!("upstream socket connected");
                    self.pump(ws).await
                }
                Err(UpstreamError::AccessDenied) => Stop::Ended,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream connect failed");
                    Stop::Dead("connect failed")
                }
            };
            match stop {
                Stop::Ended => {
                    self.session
                        .publish_gateway(pb::chat_event::Event::ChatEnded(pb::ChatEnded {}));
                    return;
                }
                Stop::Closed => return,
                Stop::Dead(cause) => {
                    tracing::info!(cause, "upstream socket lost; reconnecting");
                    self.session
                        .metrics
                        .reconnects
                        .get_or_create(&CauseLabel { cause })
                        .inc();
                    self.set_upstream(pb::UpstreamState::Reconnecting);
                    let delay = backoff(settings_delay(self.settings, failures));
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = self.session.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Tells subscribers when the socket comes up or goes down (not on every retry).
    fn set_upstream(&self, state: pb::UpstreamState) {
        let connected = self.session.info().upstream == super::Upstream::Connected;
        if connected != (state == pb::UpstreamState::Connected) {
            if connected {
                self.session.metrics.upstream_sockets.dec();
            } else {
                self.session.metrics.upstream_sockets.inc();
            }
            self.session
                .publish_gateway(pb::chat_event::Event::Upstream(pb::UpstreamStatus {
                    state: state as i32,
                }));
        }
    }

    /// Fresh URL and token, socket open and subscribed, and what was missed backfilled.
    async fn connect(&mut self) -> Result<Ws, UpstreamError> {
        let (ws, early) = self.open_socket().await?;
        self.backfill_with_refresh().await?;
        for item in early {
            self.deliver(item);
        }
        Ok(ws)
    }

    /// CreateParticipantConnection for a fresh URL and token, then the socket opened and
    /// subscribed. Items that arrive before the acknowledgement are returned, to be delivered
    /// (de-duplicated) by the caller.
    async fn open_socket(&mut self) -> Result<(Ws, Vec<Item>), UpstreamError> {
        let conn = self
            .upstream
            .create_connection(&self.session.participant_token, true)
            .await?;
        self.token_expiry = conn.token_expiry;
        self.session
            .token
            .send_replace(Some(conn.connection_token.clone()));
        let url = conn
            .socket_url
            .ok_or(UpstreamError::Incomplete("Websocket.Url"))?;
        let timeout = self.settings.connect_timeout;
        let mut ws = match tokio::time::timeout(timeout, self.upstream.open_socket(&url)).await {
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
        Ok((ws, early))
    }

    /// Planned rotation, make-before-break: the new socket is subscribed before the old one
    /// is closed, and the old one is read up to a barrier (a deep heartbeat, answered after
    /// everything the service sent before it) so that nothing in flight on it is lost.
    async fn rotate(&mut self, old: &mut Ws) -> Result<Ws, UpstreamError> {
        let (new, early) = self.open_socket().await?;
        let mut drained = false;
        if old.send(WsMessage::text(socket::PING)).await.is_ok() {
            let mut items = Vec::new();
            drained = tokio::time::timeout(self.settings.connect_timeout, async {
                while let Some(Ok(msg)) = old.next().await {
                    if let WsMessage::Text(t) = msg {
                        match socket::parse(&t) {
                            Inbound::Ping { .. } => return true,
                            Inbound::Chat(item) => items.push(*item),
                            _ => {}
                        }
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
            for item in items {
                self.deliver(item);
            }
        }
        for item in early {
            self.deliver(item);
        }
        if !drained {
            // The old socket could not be read to the barrier: the transcript fills the gap.
            self.backfill_with_refresh().await?;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), old.close(None)).await;
        tracing::debug!(drained, "upstream socket rotated");
        Ok(new)
    }

    /// A backfill that survives an expired or revoked connection token: the token is
    /// replaced once. Only a refusal of CreateParticipantConnection means the chat ended.
    async fn backfill_with_refresh(&mut self) -> Result<(), UpstreamError> {
        match self.backfill().await {
            Err(UpstreamError::AccessDenied) => {
                let c = self
                    .upstream
                    .create_connection(&self.session.participant_token, false)
                    .await?;
                self.token_expiry = c.token_expiry;
                self.session.token.send_replace(Some(c.connection_token));
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
        let token = match self.session.token.borrow().clone() {
            Some(t) => t,
            None => return Ok(()),
        };
        let mut next_token = None;
        let mut fetched: Vec<Item> = Vec::new();
        for _ in 0..self.settings.backfill_max_pages.max(1) {
            let q = match &self.last_durable {
                Some(id) => TranscriptQuery {
                    contact_id: None,
                    max_results: 100,
                    next_token: next_token.take(),
                    forward: Some(true),
                    descending: false,
                    start_id: Some(id.clone()),
                },
                None => TranscriptQuery {
                    contact_id: None,
                    max_results: 100,
                    next_token: next_token.take(),
                    forward: Some(false),
                    descending: false,
                    start_id: None,
                },
            };
            let page = self.upstream.get_transcript(&token, q).await?;
            fetched.extend(page.items);
            match page.next_token {
                Some(t) => next_token = Some(t),
                None => break,
            }
        }
        fetched.sort_by(|a, b| a.absolute_time.cmp(&b.absolute_time));
        let mut recovered = 0;
        for item in fetched {
            recovered += u64::from(self.deliver(item));
        }
        self.session.metrics.backfilled_items.inc_by(recovered);
        tracing::debug!(items = recovered, "backfill done");
        Ok(())
    }

    /// Delivers an item unless it was delivered before; true when it was new.
    fn deliver(&mut self, item: Item) -> bool {
        self.session.metrics.events_received.inc();
        let key = item.dedupe_key();
        if !self.seen.insert(&key) {
            self.session.metrics.events_duplicate.inc();
            return false;
        }
        if !item.is_ephemeral() {
            self.last_durable = item.id.clone();
        }
        self.session.publish_item(&item, key);
        true
    }

    async fn pump(&mut self, mut ws: Ws) -> Stop {
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut awaiting_heartbeat = false;
        let idle_check = (self.settings.idle_timeout / 4).max(Duration::from_millis(10));
        let mut idle = tokio::time::interval(idle_check);
        idle.tick().await;
        // The timers live across iterations and are re-armed only when their deadline moves:
        // rebuilding them for every frame cost a timer-wheel registration per event.
        let session = self.session.clone();
        let cancelled = session.cancel.cancelled();
        tokio::pin!(cancelled);
        let ending = session.ending.cancelled();
        tokio::pin!(ending);
        let mut ending_started = false;
        let end = tokio::time::sleep(FAR);
        tokio::pin!(end);
        let refresh = tokio::time::sleep(FAR);
        tokio::pin!(refresh);
        let mut refresh_armed = self.rearm_refresh(refresh.as_mut());
        let rotate = tokio::time::sleep(self.settings.rotate_interval);
        tokio::pin!(rotate);
        let stop = loop {
            tokio::select! {
                _ = &mut cancelled => break Stop::Closed,
                _ = &mut ending, if !ending_started => {
                    ending_started = true;
                    end.as_mut().reset(tokio::time::Instant::now() + self.settings.end_grace);
                }
                _ = &mut end, if ending_started => break Stop::Ended,
                _ = &mut refresh, if refresh_armed => {
                    if let Err(stop) = Box::pin(self.refresh_token()).await {
                        break stop;
                    }
                    refresh_armed = self.rearm_refresh(refresh.as_mut());
                }
                _ = &mut rotate => {
                    let next = match Box::pin(self.rotate(&mut ws)).await {
                        Ok(new) => {
                            ws = new;
                            awaiting_heartbeat = false;
                            self.settings.rotate_interval
                        }
                        Err(UpstreamError::AccessDenied) => break Stop::Ended,
                        Err(e) => {
                            tracing::info!(error = %e, "socket rotation failed; keeping the current socket");
                            self.settings.reconnect_max
                        }
                    };
                    rotate.as_mut().reset(tokio::time::Instant::now() + next);
                    // A rotation fetches a fresh connection token.
                    refresh_armed = self.rearm_refresh(refresh.as_mut());
                }
                _ = heartbeat.tick() => {
                    if awaiting_heartbeat {
                        break Stop::Dead("heartbeat unanswered");
                    }
                    if ws.send(WsMessage::text(socket::HEARTBEAT)).await.is_err() {
                        break Stop::Dead("write failed");
                    }
                    awaiting_heartbeat = true;
                }
                _ = idle.tick() => {
                    let s = &self.session;
                    let unused = s.last_used.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                    if s.subscribers.load(std::sync::atomic::Ordering::Relaxed) == 0
                        && unused >= self.settings.idle_timeout
                    {
                        tracing::debug!("session idle; closing its socket");
                        break Stop::Closed;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(WsMessage::Text(t))) => match socket::parse(&t) {
                        Inbound::Heartbeat => awaiting_heartbeat = false,
                        Inbound::Chat(item) => {
                            let end = item.is_chat_end();
                            self.deliver(*item);
                            if end {
                                break Stop::Ended;
                            }
                        }
                        Inbound::Error(message) => {
                            tracing::info!(message = %message, "upstream socket reported an error");
                            break Stop::Dead("error frame");
                        }
                        Inbound::SubscribeAck { .. } | Inbound::Ping { .. } => {}
                        Inbound::Unknown(_) => {
                            self.session.metrics.malformed_frames.inc();
                            socket::note_rejected("unknown topic", "");
                        }
                        Inbound::Malformed(why) => {
                            self.session.metrics.malformed_frames.inc();
                            socket::note_rejected("malformed", &why);
                        }
                    },
                    Some(Ok(WsMessage::Close(_))) | None => break Stop::Dead("closed by peer"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        socket::note_read_error(&e);
                        break Stop::Dead("read error");
                    }
                },
            }
        };
        if !matches!(stop, Stop::Dead(_)) {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
        // A chat whose end was requested ends even if the socket died meanwhile.
        if matches!(stop, Stop::Dead(_)) && self.session.ending.is_cancelled() {
            return Stop::Ended;
        }
        stop
    }

    /// Points the refresh timer at the current token's refresh time; false when there is none.
    fn rearm_refresh(&self, timer: std::pin::Pin<&mut tokio::time::Sleep>) -> bool {
        match self.refresh_at() {
            Some(at) => {
                timer.reset(at);
                true
            }
            None => false,
        }
    }

    fn refresh_at(&self) -> Option<tokio::time::Instant> {
        let expiry = self.token_expiry?;
        let left = expiry
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .saturating_sub(self.settings.token_refresh_margin);
        Some(tokio::time::Instant::now() + left)
    }

    async fn refresh_token(&mut self) -> Result<(), Stop> {
        match self
            .upstream
            .create_connection(&self.session.participant_token, false)
            .await
        {
            Ok(c) => {
                self.token_expiry = c.token_expiry;
                self.session.token.send_replace(Some(c.connection_token));
                tracing::debug!("connection token refreshed");
                Ok(())
            }
            Err(UpstreamError::AccessDenied) => Err(Stop::Ended),
            Err(e) => {
                tracing::info!(error = %e, "connection token refresh failed; retrying");
                // Try again a little later, well before the token expires.
                self.token_expiry = Some(
                    SystemTime::now()
                        + self.settings.token_refresh_margin
                        + self.settings.reconnect_min,
                );
                Ok(())
            }
        }
    }
}

/// A deadline that never comes, for timers not armed yet.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

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

    #[test]
    fn seen_is_bounded() {
        let mut seen = Seen::new(16);
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        for i in 0..100 {
            seen.insert(&i.to_string());
        }
        assert_eq!(seen.keys.len(), 16);
        assert!(seen.insert("a"));
    }
}
