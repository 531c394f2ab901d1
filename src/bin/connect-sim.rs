//! `connect-sim`: the local Amazon Connect chat simulator as a standalone process. Parses flags
//! (or `CONNECT_SIM_*` environment variables), starts [`Simulator`], and serves until ctrl-c.
//! Point both SDK clients at the printed endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use connect_chat_gateway::ops::runtime;
use connect_chat_gateway::sim::{admin, AgentConfig, SimConfig, Simulator};
use tracing_subscriber::EnvFilter;

/// The simulator builds a transcript item (a JSON map, one allocation a key and a value) for
/// every message it pushes: as the benchmark's load side, it spent a fifth of its instructions
/// in glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "connect-sim",
    about = "Local Amazon Connect chat simulator (StartChatContact, the participant API and its WebSocket)",
    after_help = admin::ROUTES
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CONNECT_SIM_BIND", default_value = "127.0.0.1:8787")]
    bind: SocketAddr,
    /// Threads that run the simulator's work; 0: one per CPU the process may use, 1: every
    /// task on one thread (as the benchmark runs several simulators on a few cores).
    #[arg(long, env = "CONNECT_SIM_WORKER_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    worker_threads: u16,
    /// Base of REST-issued URLs (attachments, authentication); default http://<bind>.
    #[arg(long, env = "CONNECT_SIM_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
    /// Base of the socket URLs handed out; default ws://<bind>.
    #[arg(long, env = "CONNECT_SIM_SOCKET_BASE_URL")]
    socket_base_url: Option<String>,
    /// Connection token lifetime, seconds.
    #[arg(
        long,
        env = "CONNECT_SIM_CONNECTION_TOKEN_TTL_SECS",
        default_value_t = 86_400
    )]
    connection_token_ttl_secs: u64,
    /// Window to open a socket URL, seconds.
    #[arg(long, env = "CONNECT_SIM_SOCKET_URL_TTL_SECS", default_value_t = 100)]
    socket_url_ttl_secs: u64,
    /// Open sockets allowed per participant.
    #[arg(
        long,
        env = "CONNECT_SIM_MAX_SOCKETS_PER_PARTICIPANT",
        default_value_t = 5
    )]
    max_sockets_per_participant: usize,
    /// Custom bots (CreateParticipant) per chat before ServiceQuotaExceededException.
    #[arg(long, env = "CONNECT_SIM_MAX_BOTS_PER_CHAT", default_value_t = 4)]
    max_bots_per_chat: usize,
    /// Live chats before StartChatContact answers LimitExceededException.
    #[arg(long, env = "CONNECT_SIM_MAX_CHATS", default_value_t = 100_000)]
    max_chats: usize,
    /// Stored transcript items per chat.
    #[arg(long, env = "CONNECT_SIM_MAX_ITEMS_PER_CHAT", default_value_t = 10_000)]
    max_items_per_chat: usize,
    /// Per-socket outbound queue (frames); a socket this far behind is closed.
    #[arg(long, env = "CONNECT_SIM_SOCKET_QUEUE", default_value_t = 1024)]
    socket_queue: usize,
    /// Agent join delay, milliseconds.
    #[arg(long, env = "CONNECT_SIM_JOIN_DELAY_MS", default_value_t = 200)]
    join_delay_ms: u64,
    /// Agent reply delay, milliseconds.
    #[arg(long, env = "CONNECT_SIM_REPLY_DELAY_MS", default_value_t = 300)]
    reply_delay_ms: u64,
    /// Prefix of the agent's replies.
    #[arg(long, env = "CONNECT_SIM_REPLY_PREFIX", default_value = "Agent: ")]
    reply_prefix: String,
    /// Customer message that makes the agent end the chat.
    #[arg(long, env = "CONNECT_SIM_END_KEYWORD", default_value = "bye")]
    end_keyword: String,
    /// The agent only joins: no replies, typing or receipts.
    #[arg(long, env = "CONNECT_SIM_SILENT")]
    silent: bool,
    /// No typing events before replies.
    #[arg(long, env = "CONNECT_SIM_NO_TYPING")]
    no_typing: bool,
    /// No delivered/read receipts.
    #[arg(long, env = "CONNECT_SIM_NO_RECEIPTS")]
    no_receipts: bool,
    /// The agent also says "Agent message N" at this interval (milliseconds) in every chat.
    #[arg(long, env = "CONNECT_SIM_MESSAGE_INTERVAL_MS")]
    message_interval_ms: Option<u64>,
    /// The agent's display name.
    #[arg(long, env = "CONNECT_SIM_AGENT_NAME", default_value = "Agent")]
    agent_name: String,
    /// Serve the participant sockets as wss:// on a second port, with a CA and certificate
    /// generated at start (REST stays plain HTTP).
    #[arg(long, env = "CONNECT_SIM_TLS")]
    tls: bool,
    /// Write the generated CA certificate (PEM) to this file, for clients to trust.
    #[arg(long, env = "CONNECT_SIM_TLS_CA_FILE", requires = "tls")]
    tls_ca_file: Option<std::path::PathBuf>,
    /// Enforce Connect's published API rate quotas (StartChatContact 5/s burst 8, SendMessage
    /// and SendEvent 10/s burst 15, ...): calls over them get ThrottlingException (429).
    #[arg(long, env = "CONNECT_SIM_RATE_QUOTAS")]
    rate_quotas: bool,
    /// Origins whose pages may call the participant service from a browser (CORS), as
    /// scheme://host[:port], comma-separated. Default: every loopback origin.
    #[arg(long, env = "CONNECT_SIM_APPROVED_ORIGINS", value_delimiter = ',')]
    approved_origins: Vec<String>,
}

impl Args {
    fn into_config(self) -> SimConfig {
        SimConfig {
            bind: self.bind,
            public_base_url: self.public_base_url,
            socket_base_url: self.socket_base_url,
            tls: self.tls,
            rate_quotas: self.rate_quotas,
            approved_origins: self.approved_origins,
            connection_token_ttl: Duration::from_secs(self.connection_token_ttl_secs),
            socket_url_ttl: Duration::from_secs(self.socket_url_ttl_secs),
            max_sockets_per_participant: self.max_sockets_per_participant,
            max_bots_per_chat: self.max_bots_per_chat,
            max_chats: self.max_chats,
            max_items_per_chat: self.max_items_per_chat,
            socket_queue: self.socket_queue,
            agent: AgentConfig {
                join_delay: Duration::from_millis(self.join_delay_ms),
                reply_delay: Duration::from_millis(self.reply_delay_ms),
                reply_prefix: self.reply_prefix,
                end_keyword: self.end_keyword,
                silent: self.silent,
                typing: !self.no_typing,
                receipts: !self.no_receipts,
                message_interval: self.message_interval_ms.map(Duration::from_millis),
                display_name: self.agent_name,
            },
            ..SimConfig::default()
        }
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match runtime::build(usize::from(args.worker_threads)) {
        Ok(rt) => rt.block_on(simulate(args)),
        Err(err) => {
            eprintln!("connect-sim: cannot start the runtime (--worker-threads): {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn simulate(args: Args) -> std::process::ExitCode {
    let ca_file = args.tls_ca_file.clone();
    let config = args.into_config();
    let handle = match Simulator::start(config).await {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("connect-sim: cannot start: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let (Some(path), Some(pem)) = (&ca_file, handle.ca_pem()) {
        if let Err(err) = std::fs::write(path, pem) {
            eprintln!("connect-sim: cannot write {}: {err}", path.display());
            handle.shutdown().await;
            return std::process::ExitCode::FAILURE;
        }
    }
    println!("connect-sim endpoint: {}", handle.endpoint());
    println!("connect-sim sockets: {}", handle.socket_endpoint());
    if let Err(err) = tokio::signal::ctrl_c().await {
        eprintln!("connect-sim: cannot wait for ctrl-c: {err}");
    }
    tracing::info!("shutting down");
    handle.shutdown().await;
    std::process::ExitCode::SUCCESS
}
