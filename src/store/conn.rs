//! The gateway's Redis: one server or a Redis Cluster, reached lazily (the gateway starts
//! while Redis is down and reports not ready until it answers), and the names of every key a
//! chat uses. All of a chat's keys share one hash tag, `{<contact id>}`, so a script that
//! touches several of them runs on one Redis Cluster node.

use super::StoreError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long one Redis call or connection attempt may take before the store is called
/// unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to one Redis or to a Redis Cluster. Cheap to clone; both kinds reconnect by
/// themselves.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Target {
    Single(ConnectionManager),
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
    },
}

/// Where the gateway's Redis is, and the clients for it.
pub struct Redis {
    target: Target,
    /// Plain clients for pub/sub: the one server, or each seed node of the cluster (a message
    /// published on any cluster node reaches subscribers on every node).
    pubsub: Vec<redis::Client>,
}

fn bad_url(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("bad Redis URL: {e}"))
}

impl Redis {
    /// `urls`: one `redis://` URL, or with `cluster`, the comma-separated seed nodes of a
    /// Redis Cluster. Connects on first use.
    pub fn new(urls: &str, cluster: bool) -> Result<Self, StoreError> {
        let urls: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let pubsub = urls
            .iter()
            .map(|u| redis::Client::open(*u).map_err(bad_url))
            .collect::<Result<Vec<_>, _>>()?;
        let target = if cluster {
            let client = ClusterClient::builder(urls.clone())
                .connection_timeout(CALL_TIMEOUT)
                .response_timeout(CALL_TIMEOUT)
                .retries(2)
                .build()
                .map_err(bad_url)?;
            Target::Cluster {
                client: Box::new(client),
                conn: OnceCell::new(),
            }
        } else {
            if pubsub.len() != 1 {
                return Err(StoreError::Unavailable(
                    "several Redis URLs given: a Redis Cluster needs --store-cluster".into(),
                ));
            }
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CALL_TIMEOUT))
                .set_response_timeout(Some(CALL_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let manager = ConnectionManager::new_lazy_with_config(pubsub[0].clone(), config)
                .map_err(bad_url)?;
            Target::Single(manager)
        };
        Ok(Self { target, pubsub })
    }

    /// A connection for commands; [`StoreError::Unavailable`] while Redis cannot be reached.
    pub async fn conn(&self) -> Result<Conn, StoreError> {
        match &self.target {
            Target::Single(m) => Ok(Conn::Single(m.clone())),
            Target::Cluster { client, conn } => conn
                .get_or_try_init(|| async {
                    tokio::time::timeout(CALL_TIMEOUT * 2, client.get_async_connection())
                        .await
                        .map_err(|_| {
                            StoreError::Unavailable("Redis Cluster did not answer".into())
                        })?
                        .map_err(|e| {
                            tracing::warn!(error = %e, "cannot reach the Redis Cluster");
                            StoreError::Unavailable("cannot reach the Redis Cluster".into())
                        })
                })
                .await
                .cloned()
                .map(Conn::Cluster),
        }
    }

    /// A new pub/sub connection, to the first node that answers.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, StoreError> {
        for client in &self.pubsub {
            match tokio::time::timeout(CALL_TIMEOUT, client.get_async_pubsub()).await {
                Ok(Ok(p)) => return Ok(p),
                Ok(Err(e)) => tracing::debug!(error = %e, "pub/sub connection failed"),
                Err(_) => tracing::debug!("pub/sub connection timed out"),
            }
        }
        Err(StoreError::Unavailable(
            "no Redis node accepts a subscription".into(),
        ))
    }

    /// Whether Redis answers a PING now.
    pub async fn ping(&self) -> bool {
        let Ok(mut conn) = self.conn().await else {
            return false;
        };
        let pong: Result<Result<String, _>, _> =
            tokio::time::timeout(CALL_TIMEOUT, redis::cmd("PING").query_async(&mut conn)).await;
        matches!(pong, Ok(Ok(_)))
    }
}

/// The names of the gateway's keys: `<prefix><kind>:{<contact id>}`.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` may not hold braces (they would change the keys' hash tag).
    pub fn new(prefix: &str) -> Result<Self, StoreError> {
        if prefix.contains(['{', '}']) {
            return Err(StoreError::Unavailable(
                "the key prefix may not contain '{' or '}'".into(),
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    pub fn of(&self, kind: &str, contact_id: &str) -> String {
        format!("{}{kind}:{{{contact_id}}}", self.prefix)
    }

    /// A key not tied to a chat (cluster-wide budgets).
    pub fn global(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The pub/sub channel of a chat's log.
    pub fn channel(&self, contact_id: &str) -> String {
        self.of("bus", contact_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_chat_shares_its_hash_tag() {
        let k = Keys::new("gw:").unwrap();
        assert_eq!(k.of("chat", "c-1"), "gw:chat:{c-1}");
        assert_eq!(k.of("log", "c-1"), "gw:log:{c-1}");
        assert!(Keys::new("gw{x}:").is_err());
        assert!(Redis::new("redis://a:1,redis://b:2", false).is_err());
        assert!(Redis::new("redis://a:1,redis://b:2", true).is_ok());
    }
}
