//! The replica's one pub/sub connection: every chat this process has a session for listens
//! on its chat's channel through it (one Redis connection per process, not one per chat or
//! per subscriber). Messages are only a wake-up and a fast path: the chat's log in its Redis
//! Stream is the truth, so when the connection is lost every listener is told to re-read the
//! log from where it stopped.

use crate::store::{Redis, StoreError};
use futures::StreamExt;
use redis::aio::PubSubSink;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What listens on a chat's channel.
pub trait Listener: Send + Sync + 'static {
    /// A message on the channel (called on the bus task: must not block).
    fn on_message(&self, payload: &[u8]);
    /// The connection was lost and is back: messages may have been missed.
    fn on_resync(&self);
}

#[derive(Default)]
struct Inner {
    listeners: HashMap<String, Weak<dyn Listener>>,
}

/// The replica's subscriptions. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Mutex<Inner>>,
    /// The current connection's sink; `None` while disconnected.
    sink: watch::Sender<Option<PubSubSink>>,
}

impl Bus {
    /// Starts the bus task, which keeps a pub/sub connection to `redis` until `stop`.
    pub fn start(redis: Arc<Redis>, stop: CancellationToken) -> Self {
        let bus = Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            sink: watch::Sender::new(None),
        };
        let task = bus.clone();
        tokio::spawn(async move { task.run(redis, stop).await });
        bus
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the pub/sub connection is up.
    pub fn connected(&self) -> bool {
        self.sink.borrow().is_some()
    }

    /// Listens on `channel` until [`Bus::unsubscribe`] (or the listener is dropped). Returns
    /// once Redis confirmed the subscription, or with an error while disconnected (the
    /// subscription is then made when the connection is back, and the listener resynced).
    pub async fn subscribe(
        &self,
        channel: &str,
        listener: Weak<dyn Listener>,
    ) -> Result<(), StoreError> {
        self.lock().listeners.insert(channel.to_owned(), listener);
        let sink = self.sink.borrow().clone();
        match sink {
            Some(mut sink) => sink.subscribe(channel).await.map_err(|e| {
                tracing::debug!(error = %e, "subscribe failed");
                StoreError::Unavailable("Redis pub/sub did not answer".into())
            }),
            None => Err(StoreError::Unavailable(
                "Redis pub/sub is disconnected".into(),
            )),
        }
    }

    pub fn unsubscribe(&self, channel: &str) {
        if self.lock().listeners.remove(channel).is_none() {
            return;
        }
        let sink = self.sink.borrow().clone();
        if let Some(mut sink) = sink {
            let channel = channel.to_owned();
            tokio::spawn(async move {
                let _ = sink.unsubscribe(channel).await;
            });
        }
    }

    async fn run(self, redis: Arc<Redis>, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let pubsub = tokio::select! {
                _ = stop.cancelled() => return,
                p = redis.pubsub() => p,
            };
            let Ok(pubsub) = pubsub else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            };
            delay = Duration::from_millis(100);
            let (mut sink, mut stream) = pubsub.split();
            let channels: Vec<String> = self.lock().listeners.keys().cloned().collect();
            if !channels.is_empty() && sink.subscribe(&channels).await.is_err() {
                continue;
            }
            self.sink.send_replace(Some(sink));
            tracing::debug!(channels = channels.len(), "pub/sub connected");
            // Whatever was published while disconnected is read from the logs.
            let listeners: Vec<Arc<dyn Listener>> = self
                .lock()
                .listeners
                .values()
                .filter_map(Weak::upgrade)
                .collect();
            for l in listeners {
                l.on_resync();
            }
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = stream.next() => m,
                };
                let Some(msg) = msg else { break };
                let listener = {
                    let mut inner = self.lock();
                    let channel = msg.get_channel_name();
                    match inner.listeners.get(channel).map(Weak::upgrade) {
                        Some(Some(l)) => Some(l),
                        Some(None) => {
                            inner.listeners.remove(channel);
                            None
                        }
                        None => None,
                    }
                };
                if let Some(l) = listener {
                    l.on_message(msg.get_payload_bytes());
                }
            }
            self.sink.send_replace(None);
            tracing::warn!("Redis pub/sub connection lost; reconnecting");
        }
    }
}
