//! Everything the simulator can be told at start: [`SimConfig`] (listeners, URL bases, every
//! bound and lifetime) and [`AgentConfig`] (what the scripted agent does in every chat).

use std::net::SocketAddr;
use std::time::Duration;

/// Everything the simulator can be told at start. Every bound is a field here.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Base of URLs handed out over REST (attachments, authentication); default `http://<bound>`.
    pub public_base_url: Option<String>,
    /// Base of the socket URLs handed out; default `ws://<bound>` (`wss://<tls bound>` with
    /// `tls`).
    pub socket_base_url: Option<String>,
    /// Serve the participant sockets as `wss://` on a second port of the same address, with a
    /// CA and certificate generated at start
    /// ([`SimHandle::ca_pem`](crate::sim::SimHandle::ca_pem)).
    pub tls: bool,
    /// Lifetime of a connection token (`ConnectionCredentials.Expiry`).
    pub connection_token_ttl: Duration,
    /// Window to open a socket URL (`Websocket.ConnectionExpiry`).
    pub socket_url_ttl: Duration,
    /// Open sockets allowed per participant; the next upgrade is refused.
    pub max_sockets_per_participant: usize,
    /// Custom bots (CreateParticipant) one chat may have; the next is
    /// ServiceQuotaExceededException.
    pub max_bots_per_chat: usize,
    /// Live chats; over it StartChatContact fails with LimitExceededException.
    pub max_chats: usize,
    /// Ended chats kept for transcripts and assertions; the oldest are forgotten first.
    pub max_ended_chats: usize,
    /// Stored transcript items per chat; the oldest are dropped first.
    pub max_items_per_chat: usize,
    /// Per-socket outbound frame queue; a socket that falls this far behind is closed.
    pub socket_queue: usize,
    /// Largest client frame accepted on a socket, in bytes.
    pub max_client_frame_bytes: usize,
    /// ClientTokens remembered per participant and operation (SendMessage, SendEvent, uploads).
    pub max_client_tokens_per_participant: usize,
    /// StartChatContact ClientTokens remembered in total.
    pub max_start_client_tokens: usize,
    /// Connection tokens and socket URLs remembered per participant (each); the oldest are
    /// revoked when a newer one pushes them out.
    pub max_tokens_per_participant: usize,
    /// Attachments per chat.
    pub max_attachments_per_chat: usize,
    /// Scan completed attachments, as an instance with attachment scanning does: the
    /// attachment shows IN_PROGRESS, then APPROVED, or REJECTED for a file containing the
    /// EICAR antivirus test string.
    pub scan_attachments: bool,
    /// Attachment bytes reserved across all chats.
    pub max_attachment_bytes: u64,
    /// Lifetime of an attachment upload URL.
    pub upload_url_ttl: Duration,
    /// Customer events queued for one chat's agent before new ones are dropped.
    pub agent_queue: usize,
    /// How long [`SimHandle::shutdown`](crate::sim::SimHandle::shutdown) waits for connections
    /// and tasks before aborting.
    pub shutdown_grace: Duration,
    /// Enforce Connect's published API rate quotas
    /// ([`Operation::rate_quota`](crate::sim::Operation::rate_quota)): a call over its
    /// operation's token bucket fails with ThrottlingException (429), as Connect does.
    /// Off by default, so tests and benchmarks are limited only by what they inject.
    pub rate_quotas: bool,
    /// Origins whose browser pages may call the participant service (Connect's approved
    /// origins, an instance setting), as `scheme://host[:port]`. Empty: every loopback origin
    /// (`http://localhost:<any>`, `http://127.0.0.1:<any>`, ...), so a local page works as it is.
    pub approved_origins: Vec<String>,
    /// The scripted agent.
    pub agent: AgentConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_base_url: None,
            socket_base_url: None,
            tls: false,
            connection_token_ttl: Duration::from_secs(24 * 3600),
            socket_url_ttl: Duration::from_secs(100),
            max_sockets_per_participant: 5,
            max_bots_per_chat: 4,
            max_chats: 100_000,
            max_ended_chats: 10_000,
            max_items_per_chat: 10_000,
            socket_queue: 1024,
            max_client_frame_bytes: 64 * 1024,
            max_client_tokens_per_participant: 1000,
            max_start_client_tokens: 100_000,
            max_tokens_per_participant: 32,
            max_attachments_per_chat: 100,
            scan_attachments: true,
            max_attachment_bytes: 256 * 1024 * 1024,
            upload_url_ttl: Duration::from_secs(300),
            agent_queue: 256,
            shutdown_grace: Duration::from_secs(5),
            rate_quotas: false,
            approved_origins: Vec::new(),
            agent: AgentConfig::default(),
        }
    }
}

impl SimConfig {
    /// Refuse bounds of zero and a zero agent message interval.
    pub fn check(&self) -> std::io::Result<()> {
        let positive = [
            (
                "max_sockets_per_participant",
                self.max_sockets_per_participant,
            ),
            ("max_chats", self.max_chats),
            ("max_bots_per_chat", self.max_bots_per_chat),
            ("max_items_per_chat", self.max_items_per_chat),
            ("socket_queue", self.socket_queue),
            ("max_client_frame_bytes", self.max_client_frame_bytes),
            (
                "max_client_tokens_per_participant",
                self.max_client_tokens_per_participant,
            ),
            ("max_start_client_tokens", self.max_start_client_tokens),
            (
                "max_tokens_per_participant",
                self.max_tokens_per_participant,
            ),
            ("agent_queue", self.agent_queue),
        ];
        if self.max_bots_per_chat > usize::from(u8::MAX - 1) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("max_bots_per_chat must be at most {}", u8::MAX - 1),
            ));
        }
        for (name, value) in positive {
            if value == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{name} must be at least 1"),
                ));
            }
        }
        if self.agent.message_interval == Some(Duration::ZERO) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "agent.message_interval must be positive",
            ));
        }
        Ok(())
    }
}

/// What the scripted agent does in every chat.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Delay after StartChatContact before the agent's `participant.joined` event.
    pub join_delay: Duration,
    /// Delay between a customer message and the agent's reply.
    pub reply_delay: Duration,
    /// Reply text is this prefix followed by the customer's content.
    pub reply_prefix: String,
    /// A customer message equal to this (trimmed, case-insensitive) ends the chat after the reply.
    pub end_keyword: String,
    /// No replies, typing, receipts or interval messages (the join still happens).
    pub silent: bool,
    /// Send a typing event before each reply.
    pub typing: bool,
    /// Send delivered and read receipts for each customer message.
    pub receipts: bool,
    /// When set, the agent also says "Agent message N" at this rate in every live chat.
    pub message_interval: Option<Duration>,
    /// The agent's display name.
    pub display_name: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            join_delay: Duration::from_millis(200),
            reply_delay: Duration::from_millis(300),
            reply_prefix: "Agent: ".to_owned(),
            end_keyword: "bye".to_owned(),
            silent: false,
            typing: true,
            receipts: true,
            message_interval: None,
            display_name: "Agent".to_owned(),
        }
    }
}
