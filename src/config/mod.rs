//! The gateway's configuration: flags and environment variables, parsed once into a typed,
//! validated [`Config`]. With no Connect instance configured the gateway runs on the
//! embedded simulator.

mod file;

use crate::api::ChatDefaults;
use crate::connect::UpstreamConfig;
use crate::session::SessionSettings;
use clap::{CommandFactory, FromArgMatches, Parser};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 5m)"))
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Amazon Connect chat behind one gRPC API.
///
/// With no --instance-id the gateway starts an embedded Connect simulator and talks to it,
/// so it runs without an AWS account. With --instance-id and --contact-flow-id it talks to
/// Amazon Connect in --region with the standard AWS credentials chain.
#[derive(Parser, Debug, Clone)]
#[command(name = "connect-chat-gateway", version, about, long_about)]
pub struct Config {
    /// A TOML configuration file. Its keys are the long flag names with '_' for '-'
    /// (e.g. heartbeat_interval = "10s"); flags and environment variables win over it.
    #[arg(long, env = "GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address of the gRPC listener.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address of the admin HTTP listener (/metrics, /healthz, /readyz); "off" disables it.
    #[arg(long, env = "GATEWAY_ADMIN_LISTEN", default_value = "127.0.0.1:9090", value_parser = admin_addr)]
    pub admin_listen: AdminListen,

    /// Serve the chat page and live debugging console on the admin endpoint (/console/):
    /// live chats, their recent events (kinds and ids, never content) and upstream state.
    #[arg(long, env = "GATEWAY_CONSOLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub console: bool,

    /// Session store: "memory" (one process), or a Redis URL (redis://host:6379/0) for
    /// cluster mode: several gateway processes sharing each chat's one Connect socket. With
    /// --store-cluster, the comma-separated seed nodes of a Redis Cluster.
    #[arg(long, env = "GATEWAY_STORE", default_value = "memory", value_parser = store_kind)]
    pub store: StoreKind,

    /// The --store URLs are seed nodes of a Redis Cluster.
    #[arg(long, env = "GATEWAY_STORE_CLUSTER")]
    pub store_cluster: bool,

    /// Keys that seal the Connect tokens written to Redis, as <id>:<base64 of 32 bytes>
    /// separated by commas; the first seals, all open (rotate by putting a new key first).
    /// Make one with: echo "k1:$(openssl rand -base64 32)". Required with a Redis store.
    #[arg(long, env = "GATEWAY_STORE_KEYS", hide_env_values = true)]
    pub store_keys: Option<String>,

    /// A file holding store keys, one <id>:<base64> per line (after any --store-keys).
    #[arg(long, env = "GATEWAY_STORE_KEY_FILE")]
    pub store_key_file: Option<PathBuf>,

    /// Cluster mode: a chat's owner renews its lease every third of this; when a replica
    /// dies, another takes its chats over once their leases lapse.
    #[arg(long, env = "GATEWAY_LEASE_TTL", default_value = "15s", value_parser = duration)]
    pub lease_ttl: Duration,

    /// Cluster mode: this process's name in leases (default: the host name and a random
    /// suffix; must differ between processes).
    #[arg(long, env = "GATEWAY_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// Cluster mode: how long an ended chat's event log stays in Redis for late resumes.
    #[arg(long, env = "GATEWAY_ENDED_LOG_RETENTION", default_value = "1h", value_parser = duration)]
    pub ended_log_retention: Duration,

    /// Prefix of the session store's Redis keys.
    #[arg(long, env = "GATEWAY_STORE_PREFIX", default_value = "chatgateway:")]
    pub store_prefix: String,

    /// How long Redis keeps a chat's record (longer than any chat lasts: 7 days at most).
    #[arg(long, env = "GATEWAY_STORE_TTL", default_value = "8d", value_parser = duration)]
    pub store_ttl: Duration,

    /// HTTP/2 PING interval towards gRPC clients.
    #[arg(long, env = "GATEWAY_HTTP2_KEEPALIVE", default_value = "20s", value_parser = duration)]
    pub http2_keepalive: Duration,

    /// Run the embedded Connect simulator on purpose. Without --instance-id it is the default
    /// on a loopback --listen only: on any other address the gateway refuses to start rather
    /// than serve a simulated Connect by accident.
    #[arg(long, env = "GATEWAY_SIMULATOR", conflicts_with_all = ["instance_id", "endpoint_url"])]
    pub simulator: bool,

    /// Connect instance id chats start on. Absent: the embedded simulator (see --simulator).
    #[arg(long, env = "CONNECT_INSTANCE_ID", requires = "contact_flow_id")]
    pub instance_id: Option<String>,

    /// Contact flow id chats start with.
    #[arg(long, env = "CONNECT_CONTACT_FLOW_ID", requires = "instance_id")]
    pub contact_flow_id: Option<String>,

    /// ARN of the AWS End User Messaging (Pinpoint) application that sends the chats' push
    /// notifications (RegisterPushNotification); callers cannot name another. Absent: push
    /// registration answers FAILED_PRECONDITION (the embedded simulator has one of its own).
    #[arg(long, env = "GATEWAY_PUSH_APPLICATION_ARN")]
    pub push_application_arn: Option<String>,

    /// AWS region of the Connect instance.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,

    /// Endpoint override for both Connect services (a standalone simulator, a proxy).
    #[arg(long, env = "CONNECT_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,

    /// Sign StartChatContact with fixed dummy credentials instead of the AWS chain (for a
    /// standalone simulator only).
    #[arg(long, env = "CONNECT_STATIC_CREDENTIALS")]
    pub static_credentials: bool,

    /// Other instance ids a StartChat request may name (comma-separated).
    #[arg(long, env = "GATEWAY_ALLOWED_INSTANCE_IDS", value_delimiter = ',')]
    pub allowed_instance_ids: Vec<String>,

    /// Other contact flow ids a StartChat request may name (comma-separated).
    #[arg(long, env = "GATEWAY_ALLOWED_CONTACT_FLOW_IDS", value_delimiter = ',')]
    pub allowed_contact_flow_ids: Vec<String>,

    /// Heartbeat period on each upstream socket. The heartbeats of many sockets leave together,
    /// up to a tenth of this (at most 1 s) later.
    #[arg(long, env = "GATEWAY_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = duration)]
    pub heartbeat_interval: Duration,

    /// Replace each upstream socket this often, make-before-break.
    #[arg(long, env = "GATEWAY_SOCKET_ROTATION", default_value = "55m", value_parser = duration)]
    pub socket_rotation: Duration,

    /// Close a chat's socket after this long with no subscriber and no call.
    #[arg(long, env = "GATEWAY_SESSION_IDLE_TIMEOUT", default_value = "10m", value_parser = duration)]
    pub session_idle_timeout: Duration,

    /// Events kept per chat for subscribers resuming with a cursor.
    #[arg(long, env = "GATEWAY_HISTORY", default_value = "512", value_parser = positive)]
    pub history: usize,

    /// Events a subscriber may fall behind before it is ended with its resume cursor.
    #[arg(long, env = "GATEWAY_SUBSCRIBER_QUEUE", default_value = "256", value_parser = positive)]
    pub subscriber_queue: usize,

    /// Live chats (open sockets) in this process.
    #[arg(long, env = "GATEWAY_MAX_LIVE_CHATS", default_value = "10000", value_parser = positive)]
    pub max_live_chats: usize,

    /// Chat records the in-memory store keeps (ended chats are evicted first).
    #[arg(long, env = "GATEWAY_MAX_STORED_CHATS", default_value = "100000", value_parser = positive)]
    pub max_stored_chats: usize,

    /// Subscribe streams per chat.
    #[arg(long, env = "GATEWAY_MAX_SUBSCRIBERS_PER_CHAT", default_value = "32", value_parser = positive)]
    pub max_subscribers_per_chat: usize,

    /// Timeout of one upstream call attempt.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub upstream_timeout: Duration,

    /// Attempts per upstream call (retries of throttling and 5xx included).
    #[arg(long, env = "GATEWAY_UPSTREAM_MAX_ATTEMPTS", default_value = "3", value_parser = clap::value_parser!(u32).range(1..=10))]
    pub upstream_max_attempts: u32,

    /// Idle HTTP connections kept open to each Connect endpoint for its API calls (0: none,
    /// every call opens its own). Connections in use are not limited by it.
    #[arg(long, env = "GATEWAY_UPSTREAM_IDLE_CONNECTIONS", default_value = "32")]
    pub upstream_idle_connections: usize,

    /// Threads that run the gateway's work; 0: one per CPU the process may use. With 1 every
    /// task runs on one thread, which costs less per event than sharing work between threads:
    /// the cheapest layout for a host is one gateway process per core with 1 here.
    #[arg(long, env = "GATEWAY_WORKER_THREADS", default_value = "0", value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,

    /// First delay before reconnecting a lost socket (doubles, jittered).
    #[arg(long, env = "GATEWAY_RECONNECT_MIN", default_value = "500ms", value_parser = duration)]
    pub reconnect_min: Duration,

    /// Largest delay between reconnect attempts.
    #[arg(long, env = "GATEWAY_RECONNECT_MAX", default_value = "30s", value_parser = duration)]
    pub reconnect_max: Duration,

    /// A quiet Subscribe stream gets a keepalive event at least this often (below load
    /// balancers' idle timeouts: AWS ALB closes idle connections after 60 s by default). The
    /// keepalives of many streams leave together, so a gap is between two thirds of this and
    /// this.
    #[arg(long, env = "GATEWAY_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = duration)]
    pub keepalive_interval: Duration,

    /// On SIGTERM/SIGINT, how long to drain before exiting.
    #[arg(long, env = "GATEWAY_DRAIN_GRACE", default_value = "10s", value_parser = duration)]
    pub drain_grace: Duration,

    /// Extra CA certificates (PEM) trusted for the upstream participant sockets (wss://),
    /// besides the public web roots: a private proxy, or a simulator serving TLS.
    #[arg(long, env = "GATEWAY_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<std::path::PathBuf>,

    /// Log JSON lines instead of human-readable text (level from RUST_LOG).
    #[arg(long, env = "GATEWAY_LOG_JSON")]
    pub log_json: bool,

    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
}

/// Where the admin endpoint listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminListen {
    Off,
    At(SocketAddr),
}

fn admin_addr(s: &str) -> Result<AdminListen, String> {
    if s == "off" {
        return Ok(AdminListen::Off);
    }
    s.parse()
        .map(AdminListen::At)
        .map_err(|e| format!("{e} (an address such as 0.0.0.0:9090, or off)"))
}

/// Where session records live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// In this process (the default; one replica).
    Memory,
    /// A Redis URL shared by several gateway processes.
    Redis(String),
}

fn store_kind(s: &str) -> Result<StoreKind, String> {
    match s {
        "memory" => Ok(StoreKind::Memory),
        urls if urls.starts_with("redis://") || urls.starts_with("rediss://") => {
            for url in urls.split(',').map(str::trim) {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(format!("{url:?} is not a redis:// or rediss:// URL"));
                }
                url::Url::parse(url)
                    .map_err(|e| format!("{e} (a URL such as redis://host:6379/0)"))?;
            }
            Ok(StoreKind::Redis(urls.to_owned()))
        }
        _ => Err("expected memory, or a redis:// or rediss:// URL".into()),
    }
}

/// Instance and flow ids used against the embedded simulator.
pub const SIMULATED_INSTANCE_ID: &str = "00000000-0000-4000-8000-000000000001";
pub const SIMULATED_CONTACT_FLOW_ID: &str = "00000000-0000-4000-8000-000000000002";
/// The push application used against the embedded simulator.
pub const SIMULATED_PUSH_APPLICATION_ARN: &str =
    "arn:aws:mobiletargeting:us-east-1:000000000000:apps/simulated";

impl Config {
    /// Parses the command line and environment, then fills in what neither set from the
    /// configuration file named by `--config`. Errors name the setting.
    pub fn load_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = Self::command();
        let matches = cmd.try_get_matches_from_mut(&args)?;
        let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
            return Self::from_arg_matches(&matches)?.checked(&mut cmd);
        };
        let from_file = file::arguments(&cmd, &matches, &path)?;
        let mut all = args;
        let at = 1.min(all.len());
        all.splice(at..at, from_file);
        Self::try_parse_from(all)?.checked(&mut cmd)
    }

    /// Checks the rules that span several settings.
    fn checked(self, cmd: &mut clap::Command) -> Result<Self, clap::Error> {
        if self.embedded() && !self.simulator && !self.listen.ip().is_loopback() {
            return Err(cmd.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!(
                    "--listen {} is not a loopback address and no --instance-id is set: the \
                     gateway would serve the embedded Connect simulator instead of Amazon \
                     Connect. Give --instance-id and --contact-flow-id, or --simulator to run \
                     the simulator on purpose.",
                    self.listen
                ),
            ));
        }
        if let StoreKind::Redis(urls) = &self.store {
            if urls.contains(',') && !self.store_cluster {
                return Err(cmd.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--store names several Redis nodes: add --store-cluster for a Redis Cluster",
                ));
            }
            if self.store_keys.is_none() && self.store_key_file.is_none() {
                return Err(cmd.error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "a Redis --store needs --store-keys or --store-key-file: Connect tokens \
                     are sealed before they are written to Redis. Make a key with: \
                     echo \"k1:$(openssl rand -base64 32)\"",
                ));
            }
        }
        if self.store_prefix.contains(['{', '}']) {
            return Err(cmd.error(
                clap::error::ErrorKind::ValueValidation,
                "--store-prefix may not contain '{' or '}' (they would change the keys' Redis Cluster hash tag)",
            ));
        }
        Ok(self)
    }

    /// The sealing keys of a Redis store: --store-keys, then those of --store-key-file.
    pub fn sealer(&self) -> Result<crate::store::Sealer, String> {
        let mut spec = self.store_keys.clone().unwrap_or_default();
        if let Some(path) = &self.store_key_file {
            let file = std::fs::read_to_string(path)
                .map_err(|e| format!("--store-key-file {}: {e}", path.display()))?;
            spec.push('\n');
            spec.push_str(&file);
        }
        crate::store::Sealer::from_spec(&spec).map_err(|e| format!("--store-keys: {e}"))
    }

    /// Cluster settings (with a Redis store).
    pub fn cluster(&self) -> crate::cluster::ClusterSettings {
        let replica_id = self.replica_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".into());
            let suffix: u32 = rand::random();
            format!("{host}-{suffix:08x}")
        });
        crate::cluster::ClusterSettings {
            replica_id,
            lease_ttl: self.lease_ttl,
            history: self.history,
            key_ttl: self.store_ttl,
            ended_retention: self.ended_log_retention,
        }
    }

    /// Whether to start the embedded simulator.
    pub fn embedded(&self) -> bool {
        self.instance_id.is_none() && self.endpoint_url.is_none()
    }

    pub fn upstream(&self, endpoint_url: Option<String>) -> UpstreamConfig {
        UpstreamConfig {
            region: self.region.clone(),
            endpoint_url: endpoint_url.or_else(|| self.endpoint_url.clone()),
            static_credentials: self.static_credentials || self.embedded(),
            call_timeout: self.upstream_timeout,
            max_attempts: self.upstream_max_attempts,
            idle_connections: self.upstream_idle_connections,
        }
    }

    pub fn chat_defaults(&self) -> ChatDefaults {
        ChatDefaults {
            instance_id: self
                .instance_id
                .clone()
                .unwrap_or_else(|| SIMULATED_INSTANCE_ID.into()),
            contact_flow_id: self
                .contact_flow_id
                .clone()
                .unwrap_or_else(|| SIMULATED_CONTACT_FLOW_ID.into()),
            allowed_instance_ids: self.allowed_instance_ids.iter().cloned().collect(),
            allowed_contact_flow_ids: self.allowed_contact_flow_ids.iter().cloned().collect(),
            token_wait: self.upstream_timeout,
            keepalive_interval: self.keepalive_interval,
            push_application_arn: self.push_application_arn.clone().or_else(|| {
                self.embedded()
                    .then(|| SIMULATED_PUSH_APPLICATION_ARN.to_owned())
            }),
        }
    }

    pub fn session(&self) -> SessionSettings {
        SessionSettings {
            heartbeat_interval: self.heartbeat_interval,
            idle_timeout: self.session_idle_timeout,
            history: self.history,
            subscriber_queue: self.subscriber_queue,
            max_sessions: self.max_live_chats,
            max_subscribers: self.max_subscribers_per_chat,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max.max(self.reconnect_min),
            connect_timeout: self.upstream_timeout,
            rotate_interval: self.socket_rotation,
            ..SessionSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_embedded() {
        let c = Config::try_parse_from(["gw"]).unwrap();
        assert!(c.embedded());
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.session().heartbeat_interval, Duration::from_secs(10));
    }

    #[test]
    fn the_simulator_is_never_a_silent_fallback_off_loopback() {
        let refused = Config::load_from(["gw", "--listen", "0.0.0.0:50051"]).unwrap_err();
        assert!(refused.to_string().contains("--simulator"), "{refused}");
        let on_purpose =
            Config::load_from(["gw", "--listen", "0.0.0.0:50051", "--simulator"]).unwrap();
        assert!(on_purpose.embedded());
        let real = Config::load_from([
            "gw",
            "--listen",
            "0.0.0.0:50051",
            "--instance-id",
            "i",
            "--contact-flow-id",
            "f",
        ])
        .unwrap();
        assert!(!real.embedded());
        assert!(Config::load_from(["gw", "--listen", "[::1]:50051"]).is_ok());
        // The simulator and a real instance are exclusive.
        assert!(Config::load_from(["gw", "--simulator", "--instance-id", "i"]).is_err());
    }

    #[test]
    fn worker_threads_default_to_one_per_cpu_and_are_bounded() {
        assert_eq!(Config::load_from(["gw"]).unwrap().worker_threads, 0);
        let one = Config::load_from(["gw", "--worker-threads", "1"]).unwrap();
        assert_eq!(one.worker_threads, 1);
        let refused = Config::load_from(["gw", "--worker-threads", "5000"]).unwrap_err();
        assert!(
            refused.to_string().contains("--worker-threads"),
            "{refused}"
        );
    }

    #[test]
    fn the_store_is_memory_or_a_redis_url() {
        let c = Config::load_from([
            "gw",
            "--store",
            "redis://127.0.0.1:6379/0",
            "--store-keys",
            "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ])
        .unwrap();
        assert_eq!(c.store, StoreKind::Redis("redis://127.0.0.1:6379/0".into()));
        assert_eq!(c.sealer().unwrap().current_key_id(), "k1");
        // Without sealing keys a Redis store is refused, with the way to make one.
        let keyless = Config::load_from(["gw", "--store", "redis://127.0.0.1:6379/0"]).unwrap_err();
        assert!(keyless.to_string().contains("openssl rand"), "{keyless}");
        // Several nodes are a Redis Cluster, said so.
        let nodes = "redis://127.0.0.1:7001,redis://127.0.0.1:7002";
        let k = "--store-keys=k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert!(Config::load_from(["gw", "--store", nodes, k]).is_err());
        assert!(Config::load_from(["gw", "--store", nodes, k, "--store-cluster"]).is_ok());
        assert_eq!(Config::load_from(["gw"]).unwrap().store, StoreKind::Memory);
        let bad = Config::load_from(["gw", "--store", "postgres://x"]).unwrap_err();
        assert!(bad.to_string().contains("--store"), "{bad}");
    }

    #[test]
    fn a_config_file_fills_what_flags_and_environment_did_not_set() {
        let dir = std::env::temp_dir().join(format!("ccg-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gateway.toml");
        std::fs::write(
            &file,
            "history = 64\nheartbeat_interval = \"3s\"\nlog_json = true\nconsole = false\nallowed_instance_ids = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = Config::load_from(["gw", "--config", f, "--history", "9"]).unwrap();
        assert_eq!(c.history, 9, "the flag wins");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(3));
        assert!(c.log_json);
        assert!(!c.console, "a boolean taking a value takes the file's");
        assert!(Config::load_from(["gw"]).unwrap().console, "on by default");
        assert_eq!(c.allowed_instance_ids, ["a", "b"]);
        std::fs::write(&file, "histroy = 1\n").unwrap();
        let e = Config::load_from(["gw", "--config", f])
            .unwrap_err()
            .to_string();
        assert!(e.contains("histroy"), "{e}");
        std::fs::write(&file, "history = 0\n").unwrap();
        let e = Config::load_from(["gw", "--config", f])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--history"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::try_parse_from(["gw", "--history", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--history"), "{e}");
        let e = Config::try_parse_from(["gw", "--heartbeat-interval", "soon"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--heartbeat-interval"), "{e}");
        let e = Config::try_parse_from(["gw", "--instance-id", "i"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--contact-flow-id"), "{e}");
    }
}
