//! The gateway harness: a simulator and a gateway in process on port 0, and a tonic client.

use connect_chat_gateway::api::ChatDefaults;
use connect_chat_gateway::config::{SIMULATED_CONTACT_FLOW_ID, SIMULATED_INSTANCE_ID};
use connect_chat_gateway::connect::{Connect, UpstreamConfig};
use connect_chat_gateway::ops::metrics::Metrics;
use connect_chat_gateway::pb::{self, chat_event::Event, chat_gateway_client::ChatGatewayClient};
use connect_chat_gateway::session::SessionSettings;
use connect_chat_gateway::sim::{AgentConfig, SimConfig, SimHandle, Simulator};
use connect_chat_gateway::ServeOptions;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Streaming;

// The shared helpers, for one glob import per test module (not every binary uses each).
#[allow(unused_imports)]
pub use super::{http_get, stays_for, wait_for, WAIT};

pub struct Harness {
    pub sim: SimHandle,
    pub client: ChatGatewayClient<Channel>,
    pub channel: Channel,
    pub addr: std::net::SocketAddr,
    /// The admin HTTP endpoint (metrics, health).
    pub admin: std::net::SocketAddr,
    /// The gateway's metrics, read directly.
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

pub fn fast_agent() -> AgentConfig {
    AgentConfig {
        join_delay: Duration::from_millis(20),
        reply_delay: Duration::from_millis(20),
        ..AgentConfig::default()
    }
}

pub fn fast_session() -> SessionSettings {
    SessionSettings {
        heartbeat_interval: Duration::from_millis(500),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(5),
        end_grace: Duration::from_secs(2),
        ..SessionSettings::default()
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::with(
            SimConfig {
                agent: fast_agent(),
                ..SimConfig::default()
            },
            fast_session(),
        )
        .await
    }

    pub async fn with(sim_config: SimConfig, session: SessionSettings) -> Self {
        Self::with_options(sim_config, |o| o.session = session).await
    }

    pub async fn with_options(
        sim_config: SimConfig,
        adjust: impl FnOnce(&mut ServeOptions),
    ) -> Self {
        Self::build(sim_config, adjust, false).await
    }

    /// Like [`Harness::with_options`], but `client` connects only when first used (for a
    /// gateway that speaks TLS, whose tests make their own clients).
    pub async fn with_options_lazy(
        sim_config: SimConfig,
        adjust: impl FnOnce(&mut ServeOptions),
    ) -> Self {
        Self::build(sim_config, adjust, true).await
    }

    async fn build(
        sim_config: SimConfig,
        adjust: impl FnOnce(&mut ServeOptions),
        lazy: bool,
    ) -> Self {
        let sim = Simulator::start(sim_config)
            .await
            .expect("simulator starts");
        let metrics = Arc::new(Metrics::new());
        let upstream = Connect::new(
            &UpstreamConfig {
                region: "us-east-1".into(),
                endpoint_url: Some(sim.endpoint()),
                static_credentials: true,
                call_timeout: Duration::from_secs(5),
                max_attempts: 3,
                idle_connections: 4,
            },
            metrics.clone(),
        )
        .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin = admin_listener.local_addr().expect("admin addr");
        let mut options = ServeOptions {
            defaults: ChatDefaults {
                instance_id: SIMULATED_INSTANCE_ID.into(),
                contact_flow_id: SIMULATED_CONTACT_FLOW_ID.into(),
                allowed_instance_ids: ["allowed-instance".to_string()].into(),
                allowed_contact_flow_ids: Default::default(),
                token_wait: Duration::from_secs(5),
                keepalive_interval: Duration::from_secs(30),
                push_application_arn: Some(
                    connect_chat_gateway::config::SIMULATED_PUSH_APPLICATION_ARN.into(),
                ),
            },
            session: fast_session(),
            store_capacity: 10_000,
            drain_grace: Duration::from_secs(5),
            http2_keepalive: Duration::from_secs(20),
            store: None,
            cluster: None,
            security: Default::default(),
            console: true,
            simulated: true,
        };
        adjust(&mut options);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(connect_chat_gateway::serve_with(
            listener,
            Some(admin_listener),
            upstream,
            options,
            async {
                let _ = stopped.await;
            },
        ));
        let endpoint = Channel::from_shared(format!("http://{addr}")).expect("uri");
        let channel = if lazy {
            endpoint.connect_lazy()
        } else {
            endpoint.connect().await.expect("connect to gateway")
        };
        Self {
            sim,
            client: ChatGatewayClient::new(channel.clone()),
            channel,
            addr,
            admin,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn start_chat(&mut self, name: &str) -> pb::StartChatResponse {
        start_chat(&mut self.client, name).await
    }

    pub async fn subscribe(&mut self, chat: &pb::StartChatResponse) -> Streaming<pb::ChatEvent> {
        self.client
            .subscribe(pb::SubscribeRequest {
                chat: Some(chat_ref(chat)),
                resume_cursor: String::new(),
                ..Default::default()
            })
            .await
            .expect("Subscribe")
            .into_inner()
    }

    pub async fn send(
        &mut self,
        chat: &pb::StartChatResponse,
        text: &str,
    ) -> pb::SendMessageResponse {
        self.client
            .send_message(pb::SendMessageRequest {
                chat: Some(chat_ref(chat)),
                content: text.into(),
                ..Default::default()
            })
            .await
            .expect("SendMessage")
            .into_inner()
    }

    /// Stops the gateway (its drain included) and then the simulator. Panics if the gateway's
    /// server task panicked, if `serve_with` returned an error, or if the drain did not end
    /// within [`WAIT`]: a test that passed so far fails here instead of hiding it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(WAIT, task).await {
                Err(_) => panic!("the gateway did not finish draining within {WAIT:?}"),
                Ok(Err(e)) if e.is_panic() => {
                    let payload = e.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-text panic payload".into());
                    panic!("the gateway's server task panicked: {message}");
                }
                Ok(Err(e)) => panic!("the gateway's server task was cancelled: {e}"),
                Ok(Ok(Err(e))) => panic!("the gateway's serve returned an error: {e:?}"),
                Ok(Ok(Ok(()))) => {}
            }
        }
        self.sim.clone().shutdown().await;
    }
}

/// StartChat for a customer called `name` through `client`.
pub async fn start_chat(
    client: &mut ChatGatewayClient<Channel>,
    name: &str,
) -> pb::StartChatResponse {
    client
        .start_chat(pb::StartChatRequest {
            display_name: name.into(),
            ..Default::default()
        })
        .await
        .expect("StartChat")
        .into_inner()
}

pub fn chat_ref(chat: &pb::StartChatResponse) -> pb::ChatRef {
    pb::ChatRef {
        contact_id: chat.contact_id.clone(),
        chat_token: chat.chat_token.clone(),
        ..Default::default()
    }
}

/// The next event of a stream, failing the test after [`WAIT`].
pub async fn next(stream: &mut Streaming<pb::ChatEvent>) -> Option<pb::ChatEvent> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event within the wait")
        .expect("the stream stays healthy")
}

/// Reads events until `done` says so; returns all read.
pub async fn read_until(
    stream: &mut Streaming<pb::ChatEvent>,
    mut done: impl FnMut(&[pb::ChatEvent]) -> bool,
) -> Vec<pb::ChatEvent> {
    let mut seen = Vec::new();
    while !done(&seen) {
        match next(stream).await {
            Some(ev) => seen.push(ev),
            None => panic!("stream ended early after {} events: {seen:#?}", seen.len()),
        }
    }
    seen
}

pub fn agent_texts(events: &[pb::ChatEvent]) -> Vec<String> {
    messages(events, pb::ParticipantRole::Agent)
}

pub fn customer_texts(events: &[pb::ChatEvent]) -> Vec<String> {
    messages(events, pb::ParticipantRole::Customer)
}

pub fn messages(events: &[pb::ChatEvent], role: pb::ParticipantRole) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.sender.as_ref().is_some_and(|s| s.role == role as i32))
        .filter_map(|e| match &e.event {
            Some(Event::Message(m)) => Some(m.content.clone()),
            _ => None,
        })
        .collect()
}

pub fn count_agent(events: &[pb::ChatEvent]) -> usize {
    agent_texts(events).len()
}
