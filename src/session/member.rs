//! Cluster mode: the task behind a chat's session on every replica that serves it. It listens
//! on the chat's channel and keeps the session's history equal to the shared log's tail
//! (every replica shows the same events in the same order with the same cursors). When
//! nobody holds the chat's lease it takes it and runs the actor, which owns the socket and
//! appends to the log; while another replica owns the chat it follows, and takes over when
//! that replica lets go (at once) or dies (when its lease lapses).

use super::actor::{self, Outcome, Owner};
use super::signal::Receiver;
use super::token::RefreshRequest;
use super::{Session, SessionSettings};
use crate::cluster::{Acquired, BusMessage, Listener};
use crate::connect::Connect;
use crate::security::secret::TokenHash;
use rand::Rng;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Entries read from the log per call while catching up.
const PAGE: usize = 512;

impl Listener for Session {
    fn on_message(&self, payload: &[u8]) {
        let Some(link) = &self.link else { return };
        match BusMessage::parse(payload) {
            Some(BusMessage::Entry(p)) => {
                if !self.apply_published(*p) {
                    link.wake.notify_one();
                }
            }
            Some(BusMessage::Token) => {
                if !link.owner.load(Ordering::Relaxed) {
                    link.token_changed.notify_one();
                }
            }
            Some(BusMessage::Refresh(hash)) => {
                if link.owner.load(Ordering::Relaxed) {
                    if let Some(current) = self.current_token() {
                        if TokenHash::of(current.expose()).as_bytes() == &hash {
                            // The actor replaces the token and shares the new one.
                            let (reply, _) = oneshot::channel();
                            let _ = self.refresh.try_send(RefreshRequest {
                                stale: current,
                                reply,
                            });
                        } else {
                            // The asker lacks the current token (its key expired or was
                            // lost): share it again.
                            link.reshare.notify_one();
                        }
                    }
                }
            }
            Some(BusMessage::Released) => link.released.notify_one(),
            None => tracing::debug!("unknown message on a chat's channel ignored"),
        }
    }

    fn on_resync(&self) {
        if let Some(link) = &self.link {
            link.wake.notify_one();
            link.token_changed.notify_one();
        }
    }
}

/// ±25 % jitter, so that replicas do not poll in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.75..1.25))
}

/// Reads the log past what the session applied, until no gap is left (or Redis fails).
async fn catch_up(session: &Session) {
    let Some(link) = &session.link else { return };
    for _ in 0..64 {
        let Some(after) = session.lock().applied else {
            return;
        };
        match link.cluster.after(session.key(), after, PAGE).await {
            Ok(entries) => {
                let full = entries.len() >= PAGE;
                if session.apply_read(entries, false) && !full {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the chat's log failed");
                return;
            }
        }
    }
}

/// Loads the token the owner stored, when this replica does not own the chat.
async fn load_token(session: &Session) {
    let Some(link) = &session.link else { return };
    if link.owner.load(Ordering::Relaxed) {
        return;
    }
    match link.cluster.token(session.key()).await {
        Ok(Some(t)) => {
            session.token.set(Some(t));
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "reading the chat's connection token failed"),
    }
}

/// Whether nobody has subscribed to or called the chat here for the idle timeout.
fn idle(session: &Session, settings: &SessionSettings) -> bool {
    session.subscribers.load(Ordering::Relaxed) == 0
        && session.unused_for() >= settings.idle_timeout
}

pub(super) async fn run(
    session: Arc<Session>,
    upstream: &Connect,
    settings: &SessionSettings,
    requests: &mut Receiver<RefreshRequest>,
) -> Outcome {
    let Some(link) = &session.link else {
        return actor::run(session.clone(), upstream, settings, requests, None).await;
    };
    let cluster = link.cluster.clone();
    let contact_id = session.key().to_owned();
    let channel = cluster.channel(&contact_id);
    let weak: Weak<dyn Listener> = Arc::downgrade(&session) as Weak<Session>;
    // Subscribed before the tail is read, so nothing published in between is missed (while
    // pub/sub is down, its reconnection resubscribes and resyncs).
    if let Err(e) = cluster.bus().subscribe(&channel, weak).await {
        tracing::debug!(error = %e, "chat channel subscription deferred");
    }
    let outcome = follow_and_own(&session, upstream, settings, requests).await;
    cluster.bus().unsubscribe(&channel);
    if outcome == Outcome::Ended {
        if let Err(e) = cluster.expire_ended(&contact_id).await {
            tracing::debug!(error = %e, "could not shorten an ended chat's keys");
        }
    }
    outcome
}

async fn follow_and_own(
    session: &Arc<Session>,
    upstream: &Connect,
    settings: &SessionSettings,
    requests: &mut Receiver<RefreshRequest>,
) -> Outcome {
    let Some(link) = &session.link else {
        return Outcome::Stopped;
    };
    let cluster = &link.cluster;
    let renew_every = cluster.settings().renew_every();
    // The log's tail first: the session's history.
    loop {
        match cluster.tail(session.key(), settings.history).await {
            Ok(entries) => {
                if !session.apply_read(entries, true) {
                    catch_up(session).await;
                }
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the chat's log failed; retrying");
                tokio::select! {
                    _ = session.cancel.cancelled() => return Outcome::Stopped,
                    _ = tokio::time::sleep(jitter(renew_every)) => {}
                }
            }
        }
    }
    load_token(session).await;
    session.ready.set(true);
    loop {
        if session.cancel.is_cancelled() {
            return Outcome::Stopped;
        }
        if session.is_ended() {
            return Outcome::Ended;
        }
        let held_for = match cluster.acquire(session.key()).await {
            Ok(Acquired::Taken(lease)) => {
                // Boxed: a replica that only follows the chat must not reserve the owner's
                // state (the actor's among it) in its task for the chat's life.
                match Box::pin(own(session, upstream, settings, requests, lease)).await {
                    Outcome::Stopped => continue,
                    other => return other,
                }
            }
            Ok(Acquired::Held(left)) => left,
            Err(e) => {
                tracing::debug!(error = %e, "lease attempt failed");
                renew_every
            }
        };
        // Try again when the lease would lapse unless renewed: at once (within a few ms,
        // spread) where callers are waiting, half a renewal later elsewhere, so that a chat
        // with subscribers goes to a replica that has them.
        let after = if session.subscribers.load(Ordering::Relaxed) > 0 {
            held_for + Duration::from_millis(rand::rng().random_range(1..=40))
        } else {
            held_for + jitter(renew_every / 2)
        };
        let retry = tokio::time::sleep(after);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = session.cancel.cancelled() => return Outcome::Stopped,
                _ = link.wake.notified() => {
                    catch_up(session).await;
                    if session.is_ended() {
                        return Outcome::Ended;
                    }
                }
                _ = link.token_changed.notified() => load_token(session).await,
                _ = link.released.notified() => {
                    // Replicas whose callers are waiting go first.
                    if session.subscribers.load(Ordering::Relaxed) == 0 {
                        tokio::select! {
                            _ = session.cancel.cancelled() => return Outcome::Stopped,
                            _ = tokio::time::sleep(jitter(renew_every / 2)) => {}
                        }
                    }
                    break;
                }
                _ = &mut retry => {
                    if session.is_ended() {
                        return Outcome::Ended;
                    }
                    if idle(session, settings) {
                        return Outcome::Idle;
                    }
                    break;
                }
            }
        }
    }
}

/// When a lease renewed now is renewed next: within `every`, on a grid of a fifth of it
/// shared by the replica's sessions ([`super::grid`]), so that the renewals of many chats
/// leave for Redis together (the connection pipelines them) instead of one round trip each
/// on its own instant. Never later than `every`: the margin before the lease lapses stays.
fn next_renewal(every: Duration) -> tokio::time::Instant {
    super::grid::at_or_before(tokio::time::Instant::now() + every, every / 5)
}

/// Runs the actor under `lease` until the chat ends, idles out, the replica drains or the
/// lease is lost; then lets go of the lease.
async fn own(
    session: &Arc<Session>,
    upstream: &Connect,
    settings: &SessionSettings,
    requests: &mut Receiver<RefreshRequest>,
    lease: crate::cluster::Lease,
) -> Outcome {
    let Some(link) = &session.link else {
        return Outcome::Stopped;
    };
    let cluster = link.cluster.clone();
    tracing::debug!(contact_id = %session.key(), fence = lease.fence, "took the chat's lease");
    link.owner.store(true, Ordering::Relaxed);
    session.metrics.leases_acquired.inc();
    session.metrics.leases_held.inc();
    // What the previous owner wrote last is history before the socket opens.
    catch_up(session).await;
    let stop = session.cancel.child_token();
    let owner = Box::new(Owner {
        cluster: cluster.clone(),
        lease: lease.clone(),
    });
    let ttl = cluster.settings().lease_ttl;
    let renew_every = cluster.settings().renew_every();
    let actor = actor::run(
        session.clone(),
        upstream,
        settings,
        requests,
        Some((owner, stop.clone())),
    );
    tokio::pin!(actor);
    let mut renewed = Instant::now();
    let renew = tokio::time::sleep_until(next_renewal(renew_every));
    tokio::pin!(renew);
    let outcome = loop {
        tokio::select! {
            o = &mut actor => break o,
            _ = &mut renew => {
                renew.as_mut().reset(next_renewal(renew_every));
                let result = cluster.renew(session.key(), &lease).await;
                match result {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::info!(contact_id = %session.key(), "the chat's lease was lost");
                        session.metrics.leases_lost.inc();
                        stop.cancel();
                    }
                    Err(e) => {
                        // Redis is unreachable: keep the socket for as long as the lease
                        // would still be ours, then let go before another replica can take it.
                        if renewed.elapsed() + renew_every >= ttl {
                            tracing::warn!(error = %e, "cannot renew the chat's lease; letting go");
                            stop.cancel();
                        }
                    }
                }
            }
            _ = link.wake.notified() => catch_up(session).await,
            _ = link.reshare.notified() => {
                if let Some(token) = session.current_token() {
                    let shared = cluster
                        .put_token(session.key(), &lease, &token, Duration::from_secs(3600))
                        .await;
                    if let Err(e) = shared {
                        tracing::debug!(error = %e, "could not share the connection token again");
                    }
                }
            }
        }
    };
    link.owner.store(false, Ordering::Relaxed);
    session.metrics.leases_held.dec();
    if let Err(e) = cluster.release(session.key(), &lease).await {
        tracing::debug!(error = %e, "could not release the chat's lease; it lapses");
    }
    outcome
}
