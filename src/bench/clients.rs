//! The two kinds of client the bench drives: gRPC callers of the gateway (StartChat, then a
//! Subscribe stream held open) and the direct baseline, which does the same work against the
//! simulator with the SDK crates and a raw participant socket, with no gateway in between.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tonic::transport::Channel;
use tonic::Streaming;

use crate::pb::chat_event::Event;
use crate::pb::chat_gateway_client::ChatGatewayClient;
use crate::pb::{self, UpstreamState};
use crate::sim::load::{parse_stamp, unix_nanos};

/// The instance and flow the bench starts chats on (any value works on the simulator).
pub const INSTANCE_ID: &str = "00000000-0000-4000-8000-00000000be01";
pub const CONTACT_FLOW_ID: &str = "00000000-0000-4000-8000-00000000be02";

/// How long one chat may take to start and become ready.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the receivers of one side saw: message counts, and latency samples while recording.
#[derive(Default)]
pub struct Recorder {
    pub recording: AtomicBool,
    pub messages: AtomicU64,
    /// Streams or sockets that ended (closed or failed) while the bench still held them.
    pub ended: AtomicU64,
    samples: Mutex<Vec<u64>>,
}

impl Recorder {
    fn on_message(&self, content: &str) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        if self.recording.load(Ordering::Relaxed) {
            if let Some(stamp) = parse_stamp(content) {
                let now = unix_nanos();
                let lat = now.saturating_sub(stamp) as u64;
                self.samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(lat);
            }
        }
    }

    /// The latency samples recorded so far (nanoseconds), leaving none behind.
    pub fn take_samples(&self) -> Vec<u64> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// gRPC connections to the gateway, each carrying at most `per_conn` streams (the gateway's
/// HTTP/2 server limits concurrent streams per connection).
#[derive(Clone)]
pub struct GatewayPool {
    clients: Vec<ChatGatewayClient<Channel>>,
    per_conn: usize,
}

impl GatewayPool {
    pub async fn connect(
        addr: std::net::SocketAddr,
        streams: usize,
        per_conn: usize,
    ) -> Result<Self, String> {
        let per_conn = per_conn.max(1);
        let n = streams.div_ceil(per_conn).max(1);
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| format!("cannot connect to the gateway at {addr}: {e}"))?;
            clients.push(ChatGatewayClient::new(channel));
        }
        Ok(GatewayPool { clients, per_conn })
    }

    /// The client that stream number `i` uses.
    pub fn client(&self, i: usize) -> ChatGatewayClient<Channel> {
        self.clients[(i / self.per_conn) % self.clients.len()].clone()
    }
}

/// A chat started through the gateway.
pub struct GatewayChat {
    pub contact_id: String,
    pub chat_token: String,
    /// StartChat's latency (the RPC alone).
    pub start: Duration,
    /// StartChat, then Subscribe until the stream reports the upstream socket connected.
    pub ready: Duration,
}

/// StartChat, Subscribe, and wait for the upstream to be connected; then hand the stream to a
/// receiver task in `tasks`.
pub async fn gateway_chat(
    client: ChatGatewayClient<Channel>,
    name: String,
    recorder: Arc<Recorder>,
    tasks: &Mutex<tokio::task::JoinSet<()>>,
) -> Result<GatewayChat, String> {
    gateway_chat_via(client.clone(), client, name, recorder, tasks).await
}

/// [`gateway_chat`] with StartChat through `client` and Subscribe through `subscriber` (in
/// cluster mode, another replica).
pub async fn gateway_chat_via(
    mut client: ChatGatewayClient<Channel>,
    mut subscriber: ChatGatewayClient<Channel>,
    name: String,
    recorder: Arc<Recorder>,
    tasks: &Mutex<tokio::task::JoinSet<()>>,
) -> Result<GatewayChat, String> {
    let t0 = Instant::now();
    let started = client
        .start_chat(pb::StartChatRequest {
            display_name: name,
            ..Default::default()
        })
        .await
        .map_err(|s| format!("StartChat: {}", s.message()))?
        .into_inner();
    let start = t0.elapsed();
    let mut stream = subscriber
        .subscribe(pb::SubscribeRequest {
            chat: Some(pb::ChatRef {
                contact_id: started.contact_id.clone(),
                chat_token: started.chat_token.clone(),
                ..Default::default()
            }),
            resume_cursor: String::new(),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("Subscribe: {}", s.message()))?
        .into_inner();
    loop {
        let ev = stream
            .message()
            .await
            .map_err(|s| format!("Subscribe stream: {}", s.message()))?
            .ok_or("the Subscribe stream ended before the upstream connected")?;
        let connected = match ev.event {
            Some(Event::Started(s)) => s.upstream == UpstreamState::Connected as i32,
            Some(Event::Upstream(u)) => u.state == UpstreamState::Connected as i32,
            _ => false,
        };
        if connected {
            break;
        }
    }
    let ready = t0.elapsed();
    tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .spawn(receive_grpc(stream, recorder));
    Ok(GatewayChat {
        contact_id: started.contact_id,
        chat_token: started.chat_token,
        start,
        ready,
    })
}

/// Another Subscribe stream of a chat, handed to a receiver task in `tasks` once it started.
pub async fn subscribe_again(
    mut client: ChatGatewayClient<Channel>,
    chat: &GatewayChat,
    recorder: Arc<Recorder>,
    tasks: &Mutex<tokio::task::JoinSet<()>>,
) -> Result<(), String> {
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            chat: Some(pb::ChatRef {
                contact_id: chat.contact_id.clone(),
                chat_token: chat.chat_token.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("Subscribe: {}", s.message()))?
        .into_inner();
    match stream.message().await {
        Ok(Some(ev)) if matches!(ev.event, Some(Event::Started(_))) => {}
        other => return Err(format!("Subscribe began with {other:?}")),
    }
    tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .spawn(receive_grpc(stream, recorder));
    Ok(())
}

async fn receive_grpc(mut stream: Streaming<pb::ChatEvent>, recorder: Arc<Recorder>) {
    loop {
        match stream.message().await {
            Ok(Some(ev)) => {
                if let Some(Event::Message(m)) = ev.event {
                    recorder.on_message(&m.content);
                }
            }
            Ok(None) | Err(_) => {
                recorder.ended.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The direct baseline: both SDK clients pointed at the simulator.
#[derive(Clone)]
pub struct Direct {
    connect: aws_sdk_connect::Client,
    participant: aws_sdk_connectparticipant::Client,
}

/// A chat started directly.
pub struct DirectChat {
    pub contact_id: String,
    /// StartChatContact's latency.
    pub start: Duration,
    /// StartChatContact, CreateParticipantConnection, socket open, subscribe acknowledged.
    pub ready: Duration,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Direct {
    pub async fn new(endpoint: &str) -> Self {
        let creds = aws_credential_types::Credentials::new("bench", "bench", None, None, "bench");
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(endpoint)
            .load()
            .await;
        Direct {
            connect: aws_sdk_connect::Client::new(&shared),
            participant: aws_sdk_connectparticipant::Client::new(&shared),
        }
    }

    /// Start a chat, connect its participant, open and subscribe its socket; then hand the
    /// socket to a receiver task in `tasks`.
    pub async fn chat(
        &self,
        name: String,
        recorder: Arc<Recorder>,
        tasks: &Mutex<tokio::task::JoinSet<()>>,
    ) -> Result<DirectChat, String> {
        let t0 = Instant::now();
        let details = aws_sdk_connect::types::ParticipantDetails::builder()
            .display_name(name)
            .build()
            .map_err(|e| e.to_string())?;
        let started = self
            .connect
            .start_chat_contact()
            .instance_id(INSTANCE_ID)
            .contact_flow_id(CONTACT_FLOW_ID)
            .participant_details(details)
            .send()
            .await
            .map_err(|e| format!("StartChatContact: {e}"))?;
        let start = t0.elapsed();
        let conn = self
            .participant
            .create_participant_connection()
            .participant_token(started.participant_token.unwrap_or_default())
            .r#type(aws_sdk_connectparticipant::types::ConnectionType::Websocket)
            .r#type(aws_sdk_connectparticipant::types::ConnectionType::ConnectionCredentials)
            .connect_participant(true)
            .send()
            .await
            .map_err(|e| format!("CreateParticipantConnection: {e}"))?;
        let url = conn
            .websocket
            .and_then(|w| w.url)
            .ok_or("CreateParticipantConnection returned no socket URL")?;
        // The same socket settings as the gateway's, so that the comparison is of the path.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(crate::connect::SOCKET_READ_BUFFER);
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, None)
                .await
                .map_err(|e| format!("socket open: {e}"))?;
        ws.send(WsMessage::text(crate::connect::socket::SUBSCRIBE))
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        loop {
            let msg = ws
                .next()
                .await
                .ok_or("socket closed before the subscribe acknowledgement")?
                .map_err(|e| format!("socket: {e}"))?;
            if let WsMessage::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v["topic"] == "aws/subscribe" {
                    if v["content"]["status"] == "success" {
                        break;
                    }
                    return Err("subscribe refused".into());
                }
            }
        }
        let ready = t0.elapsed();
        tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(receive_ws(ws, recorder));
        Ok(DirectChat {
            contact_id: started.contact_id.unwrap_or_default(),
            start,
            ready,
        })
    }
}

/// Read `aws/chat` frames: parse the frame, then the item it carries, as a client must.
async fn receive_ws(mut ws: Ws, recorder: Arc<Recorder>) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(WsMessage::Text(t)) => {
                let Ok(frame) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                if frame["topic"] != "aws/chat" {
                    continue;
                }
                let Some(content) = frame["content"].as_str() else {
                    continue;
                };
                let Ok(item) = serde_json::from_str::<Value>(content) else {
                    continue;
                };
                if item["Type"] == "MESSAGE" {
                    if let Some(text) = item["Content"].as_str() {
                        recorder.on_message(text);
                    }
                }
            }
            Ok(WsMessage::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    recorder.ended.fetch_add(1, Ordering::Relaxed);
}

/// POST a JSON body to the simulator's admin API and read the JSON answer (HTTP/1.1, one
/// request per connection; no HTTP client crate needed).
/// Asks the simulator's load route to push `rate` agent messages per second for `secs`
/// round robin over `contact_ids` (`stamp`: each carries its push time), and waits for its
/// report.
pub async fn sim_load(
    addr: std::net::SocketAddr,
    rate: f64,
    secs: f64,
    contact_ids: &[String],
    stamp: bool,
) -> Result<Value, String> {
    admin_post(
        addr,
        "/_sim/load",
        &serde_json::json!({
            "rate": rate,
            "millis": (secs * 1000.0) as u64,
            "contact_ids": contact_ids,
            "stamp": stamp,
        }),
        Duration::from_secs_f64(secs + 60.0),
    )
    .await
}

pub async fn admin_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &Value,
    wait: Duration,
) -> Result<Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| format!("{path}: no answer within {wait:?}"))?
        .map_err(|e| format!("{path}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{path}: malformed answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{path}: {} {body}",
            head.lines().next().unwrap_or("")
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("{path}: {e}"))
}
