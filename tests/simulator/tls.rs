//! The simulator's `wss://` sockets: a tokio-tungstenite client trusting the generated CA
//! subscribes and receives chat frames, a client that does not trust it is refused, and the
//! gateway reaches the simulator over TLS with `--upstream-ca-file`'s configuration.

use std::time::Duration;

use crate::support::sim::*;
use connect_chat_gateway::connect::{Connect, UpstreamConfig};
use connect_chat_gateway::pb::{self, chat_event::Event, chat_gateway_client::ChatGatewayClient};
use connect_chat_gateway::sim::SimConfig;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

fn tls_config() -> SimConfig {
    let mut c = quiet_config();
    c.tls = true;
    c
}

/// Write the simulator's CA to a fresh file and return its path.
fn write_ca(pem: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ccg-sim-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn a_client_trusting_the_ca_subscribes_over_wss() {
    let env = start(tls_config()).await;
    assert!(env.sim.socket_endpoint().starts_with("wss://127.0.0.1:"));
    let ca = write_ca(env.sim.ca_pem().expect("a CA in TLS mode"), "client");
    let chat = env.chat().await;
    assert!(chat.socket_url.starts_with("wss://"), "{}", chat.socket_url);

    let tls =
        connect_chat_gateway::security::tls::socket_client_config(Some(&ca)).expect("CA loads");
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        chat.socket_url.as_str(),
        None,
        true,
        Some(Connector::Rustls(tls)),
    )
    .await
    .expect("wss socket opens");
    ws.send(Message::text(
        r#"{"topic":"aws/subscribe","content":{"topics":["aws/chat"]}}"#,
    ))
    .await
    .unwrap();
    let ack = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ack: Value = serde_json::from_str(ack.to_text().unwrap()).unwrap();
    assert_eq!(ack["content"]["status"], "success");

    env.sim.agent_say(&chat.contact_id, "over TLS").unwrap();
    let frame = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let frame: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(frame["topic"], "aws/chat");
    let item: Value = serde_json::from_str(frame["content"].as_str().unwrap()).unwrap();
    assert_eq!(item["Content"], "over TLS");
    let _ = std::fs::remove_dir_all(ca.parent().unwrap());
}

#[tokio::test]
async fn the_certificate_names_another_loopback_address_the_simulator_listens_on() {
    let mut config = tls_config();
    config.bind = "127.0.0.7:0".parse().unwrap();
    let env = start(config).await;
    assert!(env.sim.socket_endpoint().starts_with("wss://127.0.0.7:"));
    let ca = write_ca(
        env.sim.ca_pem().expect("a CA in TLS mode"),
        "other-loopback",
    );
    let chat = env.chat().await;
    let tls =
        connect_chat_gateway::security::tls::socket_client_config(Some(&ca)).expect("CA loads");
    tokio_tungstenite::connect_async_tls_with_config(
        chat.socket_url.as_str(),
        None,
        true,
        Some(Connector::Rustls(tls)),
    )
    .await
    .expect("the certificate is valid for the listen address");
    env.sim.shutdown().await;
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused() {
    let env = start(tls_config()).await;
    let chat = env.chat().await;
    let tls = connect_chat_gateway::security::tls::socket_client_config(None).unwrap();
    let res = tokio_tungstenite::connect_async_tls_with_config(
        chat.socket_url.as_str(),
        None,
        true,
        Some(Connector::Rustls(tls)),
    )
    .await;
    assert!(
        res.is_err(),
        "an untrusted certificate must fail the handshake"
    );
}

#[tokio::test]
async fn the_gateway_trusts_an_extra_ca_for_upstream_sockets() {
    let mut config = tls_config();
    config.agent.join_delay = Duration::from_millis(5);
    let env = start(config).await;
    let ca = write_ca(env.sim.ca_pem().unwrap(), "gateway");
    let upstream = Connect::new(
        &UpstreamConfig {
            region: "us-east-1".into(),
            endpoint_url: Some(env.sim.endpoint()),
            static_credentials: true,
            call_timeout: Duration::from_secs(5),
            max_attempts: 1,
            idle_connections: 4,
        },
        std::sync::Arc::new(connect_chat_gateway::ops::metrics::Metrics::new()),
    )
    .await
    .with_socket_ca_file(&ca)
    .expect("CA loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = connect_chat_gateway::ServeOptions {
        defaults: connect_chat_gateway::api::ChatDefaults {
            instance_id: "i".into(),
            contact_flow_id: "f".into(),
            allowed_instance_ids: Default::default(),
            allowed_contact_flow_ids: Default::default(),
            token_wait: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            push_application_arn: None,
        },
        session: Default::default(),
        store_capacity: 100,
        drain_grace: Duration::from_secs(1),
        http2_keepalive: Duration::from_secs(20),
        store: None,
        cluster: None,
        security: Default::default(),
        console: false,
        simulated: false,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(connect_chat_gateway::serve(
        listener,
        upstream,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let mut client = ChatGatewayClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let started = client
        .start_chat(pb::StartChatRequest {
            display_name: "Ada".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            chat: Some(pb::ChatRef {
                contact_id: started.contact_id.clone(),
                chat_token: started.chat_token,
                ..Default::default()
            }),
            resume_cursor: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut said = false;
    let got = tokio::time::timeout(WAIT, async {
        while let Some(ev) = stream.message().await.unwrap() {
            match ev.event {
                Some(Event::Started(s)) if s.upstream == pb::UpstreamState::Connected as i32 => {
                    env.sim
                        .agent_say(&started.contact_id, "hello over wss")
                        .unwrap();
                    said = true;
                }
                Some(Event::Upstream(u)) if u.state == pb::UpstreamState::Connected as i32 => {
                    env.sim
                        .agent_say(&started.contact_id, "hello over wss")
                        .unwrap();
                    said = true;
                }
                Some(Event::Message(m)) if said => return m.content,
                _ => {}
            }
        }
        String::new()
    })
    .await
    .expect("the message arrives");
    assert_eq!(got, "hello over wss");
    assert_eq!(env.sim.open_sockets(&started.contact_id), 1);
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(ca.parent().unwrap());
}
