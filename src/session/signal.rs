//! Small synchronisation cells a session holds, each a fraction of the tokio primitive it
//! replaces (a session holds one of each for its whole life, idle or not):
//!
//! - [`Latest`]: the newest value and a wake-up for those waiting on it (tokio's `watch`
//!   allocates a shared block with nine wake lists, about 350 bytes);
//! - [`Wakeup`]: wakes the session's actor and tells it why, one bit per reason;
//! - [`queue`]: a bounded many-to-one queue that allocates as items arrive and wakes its
//!   receiver through a [`Wakeup`] (tokio's `mpsc` allocates its 32-slot first block and its
//!   cache-padded channel at creation, about 1.5 KiB for the session's token-refresh
//!   requests, which most chats never send).

use futures::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake};
use tokio::sync::Notify;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A value that changes, and waits for the change.
#[derive(Debug, Default)]
pub struct Latest<T> {
    value: Mutex<T>,
    changed: Notify,
}

impl<T: Clone> Latest<T> {
    pub fn new(value: T) -> Self {
        Self {
            value: Mutex::new(value),
            changed: Notify::new(),
        }
    }

    /// Replaces the value and wakes every waiter.
    pub fn set(&self, value: T) {
        *lock(&self.value) = value;
        self.changed.notify_waiters();
    }

    pub fn get(&self) -> T {
        lock(&self.value).clone()
    }

    /// Reads the value with `f`, without cloning it.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&lock(&self.value))
    }

    /// The value once `accept` takes it (at once when the current one does).
    pub async fn wait_for(&self, mut accept: impl FnMut(&T) -> bool) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check: a change between the check and the wait wakes it.
            notified.as_mut().enable();
            {
                let v = lock(&self.value);
                if accept(&v) {
                    return v.clone();
                }
            }
            notified.await;
        }
    }
}

/// Wakes one task, a session's actor, and tells it why: a bit for each reason raised since
/// it last looked. One registration of the task's waker serves every reason. A `Notify` or
/// a cancellation future for each reason cost the actor's loop a lock or two every time it
/// was polled, which is twice or more for every frame and every heartbeat.
#[derive(Debug, Default)]
pub struct Wakeup {
    raised: AtomicU8,
    task: AtomicWaker,
}

impl Wakeup {
    /// The reason a waker made of the cell raises (`Waker::from(Arc<Wakeup>)`): for a future
    /// polled with that waker, so that the task polls it again only once it has fired.
    pub const BY_WAKER: u8 = 0x80;

    /// Raises `reasons` and wakes the task.
    pub fn raise(&self, reasons: u8) {
        self.raised.fetch_or(reasons, Ordering::AcqRel);
        self.task.wake();
    }

    /// The reasons raised since the last call, or `Pending` with the task's waker kept.
    pub fn poll_raised(&self, cx: &mut Context<'_>) -> Poll<u8> {
        self.task.register(cx.waker());
        // Registered before the check: a reason raised after the check wakes the task.
        if self.raised.load(Ordering::Acquire) == 0 {
            return Poll::Pending;
        }
        match self.raised.swap(0, Ordering::AcqRel) {
            0 => Poll::Pending,
            reasons => Poll::Ready(reasons),
        }
    }
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.raise(Self::BY_WAKER);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raise(Self::BY_WAKER);
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Raises `reason` for the receiver when an item is queued.
    receiver: Arc<Wakeup>,
    reason: u8,
    room: Notify,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// The receiver is gone: sends fail, and what was queued has been dropped.
    closed: bool,
}

/// A bounded queue of `capacity` items from many senders to one receiver, which learns of a
/// queued item through `receiver` (`reason` raised) and takes it with [`Receiver::try_recv`].
pub fn queue<T>(capacity: usize, receiver: Arc<Wakeup>, reason: u8) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
        }),
        receiver,
        reason,
        room: Notify::new(),
        capacity: capacity.max(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// The receiver has gone; the item comes back.
#[derive(Debug)]
pub struct Closed<T>(pub T);

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug)]
pub enum TrySendError<T> {
    Full(T),
    Closed(T),
}

impl<T> Sender<T> {
    /// Queues `item`, waiting for room while the queue is full.
    pub async fn send(&self, item: T) -> Result<(), Closed<T>> {
        let mut item = Some(item);
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(it) = item.take() {
                match self.try_send(it) {
                    Ok(()) => return Ok(()),
                    Err(TrySendError::Closed(it)) => return Err(Closed(it)),
                    Err(TrySendError::Full(it)) => item = Some(it),
                }
            }
            room.await;
        }
    }

    /// Queues `item` if there is room now.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut st = lock(&self.0.state);
        if st.closed {
            return Err(TrySendError::Closed(item));
        }
        if st.items.len() >= self.0.capacity {
            return Err(TrySendError::Full(item));
        }
        st.items.push_back(item);
        drop(st);
        self.0.receiver.raise(self.0.reason);
        Ok(())
    }
}

pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Shared<T> {
    fn pop(&self) -> Option<T> {
        let item = lock(&self.state).items.pop_front();
        if item.is_some() {
            self.room.notify_one();
        }
        item
    }
}

impl<T> Receiver<T> {
    /// The oldest item, if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.pop()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let dropped = {
            let mut st = lock(&self.0.state);
            st.closed = true;
            std::mem::take(&mut st.items)
        };
        // Dropped outside the lock: an item may own a reply channel whose drop wakes a task.
        drop(dropped);
        self.0.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn latest_wakes_waiters_on_the_change_they_wait_for() {
        let cell = Arc::new(Latest::new(None::<u32>));
        let waiter = {
            let cell = cell.clone();
            tokio::spawn(async move { cell.wait_for(|v| v.is_some_and(|v| v > 1)).await })
        };
        cell.set(Some(1));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        cell.set(Some(2));
        assert_eq!(waiter.await.unwrap(), Some(2));
        assert_eq!(
            cell.wait_for(|v| v.is_some()).await,
            Some(2),
            "at once when it holds"
        );
    }

    /// The reasons raised for `wakeup`, waiting for one.
    async fn raised(wakeup: &Wakeup) -> u8 {
        std::future::poll_fn(|cx| wakeup.poll_raised(cx)).await
    }

    #[tokio::test]
    async fn a_wakeup_wakes_its_task_with_every_reason_raised_since_it_looked() {
        let wakeup = Arc::new(Wakeup::default());
        let waiter = {
            let wakeup = wakeup.clone();
            tokio::spawn(async move { raised(&wakeup).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        wakeup.raise(1);
        wakeup.raise(4);
        let first = waiter.await.unwrap();
        assert_eq!(first & 1, 1);
        // Both reasons, in one look or two; none is lost, and none comes twice.
        let both = if first == 5 {
            first
        } else {
            first | raised(&wakeup).await
        };
        assert_eq!(both, 5);
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        assert!(wakeup.poll_raised(cx).is_pending());
        // A waker made of the cell raises its own reason.
        std::task::Waker::from(wakeup.clone()).wake();
        assert_eq!(raised(&wakeup).await, Wakeup::BY_WAKER);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_order_and_closes_with_its_receiver() {
        let wakeup = Arc::new(Wakeup::default());
        let (tx, mut rx) = queue::<u32>(2, wakeup.clone(), 2);
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        assert!(wakeup.poll_raised(cx).is_pending());
        tx.try_send(1).unwrap();
        assert_eq!(
            raised(&wakeup).await,
            2,
            "an item queued wakes the receiver"
        );
        tx.send(2).await.unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        // A sender waits for room, and gets it when the receiver takes an item.
        let blocked = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(3).await.map_err(|c| c.0) })
        };
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        assert_eq!(rx.try_recv(), Some(1));
        tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("room made")
            .unwrap()
            .unwrap();
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), None);
        tx.try_send(4).unwrap();
        drop(rx);
        assert!(matches!(tx.try_send(5), Err(TrySendError::Closed(5))));
        assert!(tx.send(6).await.is_err());
    }
}
