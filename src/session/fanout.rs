//! A session's fan-out to its subscribers: the newest events in a ring that grows as events
//! arrive (up to the subscriber queue bound), read by every subscriber at its own pace.
//!
//! It replaces a broadcast channel that preallocated all its slots (about 10 KiB per chat at
//! the default bound of 256, whether the chat was busy or idle). Events are shared (`Arc`), so
//! the ring holds pointers, and only to events some subscriber has still to read: once every
//! subscriber has read an event, the ring lets go of it.

use super::SharedEvent;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Why a subscriber got no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The subscriber fell further behind than the ring holds; this many events are gone.
    Lagged(u64),
    /// The session closed and the subscriber has read everything it published.
    Closed,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<SharedEvent>,
    /// The sequence number of `events[0]`.
    head: u64,
    closed: bool,
    /// The sequence number each listener reads next, by its slot (`None`: a free slot). At
    /// most the chat's subscribers, which the session bounds.
    readers: Vec<Option<u64>>,
}

impl Ring {
    /// Drops the events every listener has read (all of them when nobody listens).
    fn trim(&mut self) {
        let oldest_unread = self
            .readers
            .iter()
            .flatten()
            .copied()
            .min()
            .unwrap_or(self.head + self.events.len() as u64);
        while self.head < oldest_unread && self.events.pop_front().is_some() {
            self.head += 1;
        }
    }
}

/// The publishing side, owned by the session.
#[derive(Debug)]
pub struct Fanout {
    ring: Mutex<Ring>,
    notify: Notify,
    capacity: usize,
}

impl Fanout {
    /// A fan-out that keeps up to `capacity` events for subscribers that are behind.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                head: 0,
                closed: false,
                readers: Vec::new(),
            }),
            notify: Notify::new(),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `event` to every subscriber; the oldest event drops out past the bound.
    pub fn publish(&self, event: SharedEvent) {
        {
            let mut ring = self.lock();
            if ring.closed {
                return;
            }
            ring.events.push_back(event);
            if ring.events.len() > self.capacity {
                ring.events.pop_front();
                ring.head += 1;
            }
            ring.trim();
        }
        self.notify.notify_waiters();
    }

    /// No more events: subscribers read what is left, then [`RecvError::Closed`].
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// A subscriber that receives every event published from now on.
    pub fn subscribe(self: &Arc<Self>) -> Listener {
        let mut ring = self.lock();
        let next = ring.head + ring.events.len() as u64;
        let slot = match ring.readers.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                ring.readers.push(None);
                ring.readers.len() - 1
            }
        };
        ring.readers[slot] = Some(next);
        Listener {
            next,
            slot,
            fanout: self.clone(),
        }
    }
}

/// One subscriber's position in the fan-out.
#[derive(Debug)]
pub struct Listener {
    fanout: Arc<Fanout>,
    /// The sequence number of the next event to receive.
    next: u64,
    /// Where the ring keeps `next`.
    slot: usize,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut ring = self.fanout.lock();
        if let Some(r) = ring.readers.get_mut(self.slot) {
            *r = None;
        }
        ring.trim();
    }
}

impl Listener {
    /// The next event, waiting for it when there is none yet. Cancel-safe: an event is
    /// consumed only when it is returned.
    pub async fn recv(&mut self) -> Result<SharedEvent, RecvError> {
        loop {
            // Registered before the ring is read, so a publish in between is not missed.
            let notified = self.fanout.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut ring = self.fanout.lock();
                if self.next < ring.head {
                    let missed = ring.head - self.next;
                    self.next = ring.head;
                    ring.readers[self.slot] = Some(self.next);
                    return Err(RecvError::Lagged(missed));
                }
                let index = usize::try_from(self.next - ring.head).unwrap_or(usize::MAX);
                if let Some(event) = ring.events.get(index).cloned() {
                    self.next += 1;
                    ring.readers[self.slot] = Some(self.next);
                    ring.trim();
                    return Ok(event);
                }
                if ring.closed {
                    return Err(RecvError::Closed);
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn ev(n: u32) -> SharedEvent {
        Arc::new(pb::ChatEvent {
            item_id: n.to_string(),
            ..Default::default()
        })
    }

    fn id(e: &SharedEvent) -> u32 {
        e.item_id.parse().unwrap()
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let f = Fanout::new(8);
        f.publish(ev(0)); // before anyone subscribed: not delivered
        let mut a = f.subscribe();
        let mut b = f.subscribe();
        for n in 1..=5 {
            f.publish(ev(n));
        }
        for l in [&mut a, &mut b] {
            for n in 1..=5 {
                assert_eq!(id(&l.recv().await.unwrap()), n);
            }
        }
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_publish() {
        let f = Fanout::new(4);
        let mut l = f.subscribe();
        let waiter = tokio::spawn(async move { l.recv().await.map(|e| id(&e)) });
        tokio::task::yield_now().await;
        f.publish(ev(7));
        assert_eq!(waiter.await.unwrap(), Ok(7));
    }

    #[tokio::test]
    async fn a_subscriber_past_the_bound_learns_how_much_it_lost() {
        let f = Fanout::new(3);
        let mut l = f.subscribe();
        for n in 0..5 {
            f.publish(ev(n));
        }
        assert_eq!(l.recv().await.unwrap_err(), RecvError::Lagged(2));
        // It may go on from the oldest event still held.
        assert_eq!(id(&l.recv().await.unwrap()), 2);
    }

    #[tokio::test]
    async fn close_lets_subscribers_drain_first() {
        let f = Fanout::new(4);
        let mut l = f.subscribe();
        f.publish(ev(1));
        f.close();
        f.publish(ev(2)); // ignored once closed
        assert_eq!(id(&l.recv().await.unwrap()), 1);
        assert_eq!(l.recv().await.unwrap_err(), RecvError::Closed);
        let mut late = f.subscribe();
        assert_eq!(late.recv().await.unwrap_err(), RecvError::Closed);
    }

    #[tokio::test]
    async fn the_ring_lets_go_of_what_every_subscriber_has_read() {
        let f = Fanout::new(8);
        f.publish(ev(0)); // nobody listens: not kept
        assert_eq!(f.lock().events.len(), 0);
        let mut a = f.subscribe();
        let mut b = f.subscribe();
        let first = ev(1);
        f.publish(first.clone());
        f.publish(ev(2));
        assert_eq!(id(&a.recv().await.unwrap()), 1);
        assert_eq!(Arc::strong_count(&first), 2, "b has still to read it");
        assert_eq!(id(&b.recv().await.unwrap()), 1);
        assert_eq!(
            Arc::strong_count(&first),
            1,
            "read by both: the ring let go"
        );
        assert_eq!(f.lock().events.len(), 1);
        drop(b); // a gone subscriber holds nothing back
        assert_eq!(id(&a.recv().await.unwrap()), 2);
        assert_eq!(f.lock().events.len(), 0);
        // A slot freed is reused, and a new subscriber reads from the next event on.
        let mut c = f.subscribe();
        assert_eq!(f.lock().readers.len(), 2);
        f.publish(ev(3));
        assert_eq!(id(&c.recv().await.unwrap()), 3);
        assert_eq!(id(&a.recv().await.unwrap()), 3);
        assert_eq!(f.lock().events.len(), 0);
    }

    #[tokio::test]
    async fn the_ring_grows_with_use_not_up_front() {
        let f = Fanout::new(256);
        f.publish(ev(1));
        assert!(f.lock().events.capacity() < 256);
    }
}
