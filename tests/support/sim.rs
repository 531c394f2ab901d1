//! The simulator harness: starts one on `127.0.0.1:0` with short agent delays, builds the
//! official SDK clients against it and opens plain tokio-tungstenite sockets.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_connect::config::retry::RetryConfig;
use aws_sdk_connect::config::{BehaviorVersion, Region};
use aws_sdk_connectparticipant::types::ConnectionType;
use connect_chat_gateway::sim::{AgentConfig, SimConfig, SimHandle, Simulator};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

// The shared helpers, for one glob import per test module (not every binary uses each).
#[allow(unused_imports)]
pub use super::{http, stays_for, wait_for, WAIT};

/// SendMessage of a `text/plain` message through the SDK (the future borrows nothing).
pub fn send_text(
    participant: &aws_sdk_connectparticipant::Client,
    connection_token: &str,
    content: &str,
) -> impl std::future::Future<
    Output = Result<
        aws_sdk_connectparticipant::operation::send_message::SendMessageOutput,
        aws_sdk_connectparticipant::error::SdkError<
            aws_sdk_connectparticipant::operation::send_message::SendMessageError,
        >,
    >,
> {
    participant
        .send_message()
        .connection_token(connection_token)
        .content_type("text/plain")
        .content(content)
        .send()
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A config with short agent delays and no receipts/typing noise unless a test wants them.
pub fn config() -> SimConfig {
    SimConfig {
        agent: AgentConfig {
            join_delay: Duration::from_millis(5),
            reply_delay: Duration::from_millis(10),
            ..AgentConfig::default()
        },
        ..SimConfig::default()
    }
}

/// A config whose agent stays silent and joins only after an hour, for tests that count
/// items exactly.
pub fn quiet_config() -> SimConfig {
    let mut c = config();
    c.agent.silent = true;
    c.agent.join_delay = Duration::from_secs(3600);
    c
}

pub struct Env {
    pub sim: SimHandle,
    pub connect: aws_sdk_connect::Client,
    pub participant: aws_sdk_connectparticipant::Client,
}

/// A customer's chat: ids and tokens.
pub struct Chat {
    pub contact_id: String,
    pub participant_id: String,
    pub participant_token: String,
    pub connection_token: String,
    pub socket_url: String,
}

pub async fn start(config: SimConfig) -> Env {
    let sim = Simulator::start(config).await.expect("simulator starts");
    let creds = Credentials::new("AKID", "SECRET", None, None, "static");
    let connect = aws_sdk_connect::Client::from_conf(
        aws_sdk_connect::config::Builder::new()
            .endpoint_url(sim.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(creds.clone())
            .behavior_version(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let participant = aws_sdk_connectparticipant::Client::from_conf(
        aws_sdk_connectparticipant::config::Builder::new()
            .endpoint_url(sim.endpoint())
            .region(aws_sdk_connectparticipant::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .behavior_version(aws_sdk_connectparticipant::config::BehaviorVersion::latest())
            .retry_config(aws_sdk_connectparticipant::config::retry::RetryConfig::disabled())
            .build(),
    );
    Env {
        sim,
        connect,
        participant,
    }
}

impl Env {
    /// StartChatContact with the usual real-shaped ids.
    pub fn start_chat_request(
        &self,
    ) -> aws_sdk_connect::operation::start_chat_contact::builders::StartChatContactFluentBuilder
    {
        self.connect
            .start_chat_contact()
            .instance_id("12345678-aaaa-bbbb-cccc-123456789012")
            .contact_flow_id("87654321-aaaa-bbbb-cccc-123456789012")
            .participant_details(
                aws_sdk_connect::types::ParticipantDetails::builder()
                    .display_name("Customer")
                    .build()
                    .expect("display name set"),
            )
    }

    /// Start a chat and connect the customer (socket URL and connection token).
    pub async fn chat(&self) -> Chat {
        let started = self
            .start_chat_request()
            .send()
            .await
            .expect("StartChatContact");
        let participant_token = started
            .participant_token()
            .expect("participant token")
            .to_owned();
        let (connection_token, socket_url) = self.connect_participant(&participant_token).await;
        Chat {
            contact_id: started.contact_id().expect("contact id").to_owned(),
            participant_id: started.participant_id().expect("participant id").to_owned(),
            participant_token,
            connection_token,
            socket_url,
        }
    }

    /// CreateParticipantConnection for both a socket URL and a connection token.
    pub async fn connect_participant(&self, participant_token: &str) -> (String, String) {
        let conn = self
            .participant
            .create_participant_connection()
            .participant_token(participant_token)
            .r#type(ConnectionType::Websocket)
            .r#type(ConnectionType::ConnectionCredentials)
            .connect_participant(true)
            .send()
            .await
            .expect("CreateParticipantConnection");
        let token = conn
            .connection_credentials()
            .and_then(|c| c.connection_token())
            .expect("connection token")
            .to_owned();
        let url = conn
            .websocket()
            .and_then(|w| w.url())
            .expect("socket url")
            .to_owned();
        (token, url)
    }

    pub async fn say(&self, chat: &Chat, text: &str) -> String {
        send_text(&self.participant, &chat.connection_token, text)
            .await
            .expect("SendMessage")
            .id()
            .expect("message id")
            .to_owned()
    }

    /// Every stored item, via the simulator handle.
    pub fn transcript(&self, chat: &Chat) -> Vec<Value> {
        self.sim
            .transcript(&chat.contact_id)
            .expect("known contact")
    }
}

/// Open a socket and subscribe to `aws/chat`; returns once the ack arrived.
pub async fn open_socket(url: &str) -> Socket {
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("socket opens in time")
        .expect("socket opens");
    ws.send(Message::text(
        r#"{"topic":"aws/subscribe","content":{"topics":["aws/chat"]}}"#,
    ))
    .await
    .expect("send subscribe");
    let ack = next_frame(&mut ws).await.expect("subscribe ack");
    assert_eq!(
        ack,
        serde_json::json!({"topic":"aws/subscribe","content":{"status":"success","topics":["aws/chat"]}})
    );
    ws
}

/// The next text frame as JSON; None when the socket closed.
pub async fn next_frame(ws: &mut Socket) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time")?;
        match msg {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(text.as_str()).expect("JSON frame"))
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The next `aws/chat` item (decoded from the frame's string content), skipping other frames.
pub async fn next_item(ws: &mut Socket) -> Option<Value> {
    loop {
        let frame = next_frame(ws).await?;
        if frame["topic"] == "aws/chat" {
            assert_eq!(frame["contentType"], "application/json");
            let content = frame["content"].as_str().expect("content is a string");
            return Some(serde_json::from_str(content).expect("item JSON"));
        }
    }
}

/// Items from the socket until one matches `pred` (returned last).
pub async fn items_until(ws: &mut Socket, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let item = next_item(ws)
            .await
            .expect("socket open while waiting for an item");
        let done = pred(&item);
        seen.push(item);
        if done {
            return seen;
        }
    }
}

/// Whether the socket ends (close frame, EOF or error) before `WAIT`.
pub async fn socket_ends(ws: &mut Socket) -> bool {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

pub fn content_type(item: &Value) -> &str {
    item["ContentType"].as_str().unwrap_or("")
}

pub const CT_JOINED: &str = "application/vnd.amazonaws.connect.event.participant.joined";
pub const CT_LEFT: &str = "application/vnd.amazonaws.connect.event.participant.left";
pub const CT_ENDED: &str = "application/vnd.amazonaws.connect.event.chat.ended";
pub const CT_TYPING: &str = "application/vnd.amazonaws.connect.event.typing";
pub const CT_DELIVERED: &str = "application/vnd.amazonaws.connect.event.message.delivered";
pub const CT_READ: &str = "application/vnd.amazonaws.connect.event.message.read";

/// Path and query of an absolute URL served by the simulator.
pub fn path_of(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find('/')
        .map_or("/".to_owned(), |i| after_scheme[i..].to_owned())
}
