//! The logs of a whole chat, captured at TRACE for the crate, hold none of its secrets: chat
//! token, Connect participant and connection tokens and socket URLs (43-character random
//! strings, like the chat token), API keys, JWTs.
//!
//! The capture is the test thread's default subscriber, not the global one: the test runs on
//! a current-thread runtime, so every gateway and simulator task it starts logs there, and
//! the binary's other tests neither write into the capture nor are slowed by it.

use crate::support::gateway::*;
use connect_chat_gateway::pb;
use connect_chat_gateway::security::auth::{hash_api_key, parse_key_hash, ApiKey, Authenticator};
use connect_chat_gateway::security::auth::{JwtKey, JwtSettings};
use connect_chat_gateway::security::SecurityOptions;
use connect_chat_gateway::sim::SimConfig;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Request;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

const API_KEY: &str = "ops-key-that-must-never-be-logged-0001";
const WRONG_KEY: &str = "wrong-key-that-must-never-be-logged-02";
const SECRET: &[u8] = b"hs256-secret-that-must-never-be-logged!!";

fn with<T>(msg: T, header: &str, value: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        tonic::metadata::MetadataKey::from_bytes(header.as_bytes()).unwrap(),
        value.parse().unwrap(),
    );
    r
}

/// Longest run of characters a random base64url token is made of.
fn longest_token_like_run(text: &str) -> usize {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_whole_chat_logs_none_of_its_secrets() {
    let logs = Buffer::default();
    let writer = logs.clone();
    // Log sites cache whether anybody listens, process-wide. While only one dispatcher is
    // registered, a site first reached on another test's thread asks that thread's default
    // alone (none: "nobody listens") and caches the answer for every thread. A second
    // registered dispatcher, under the capture, makes every site ask all of them.
    let _second = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    let _capture = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_env_filter("connect_chat_gateway=trace")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );

    let auth = Authenticator {
        api_keys: vec![ApiKey {
            name: "ops".into(),
            hash: parse_key_hash(&hash_api_key(API_KEY)).unwrap(),
        }],
        jwt: Some(JwtSettings {
            keys: vec![JwtKey::hs256(SECRET).unwrap()],
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway: Duration::from_secs(5),
        }),
        operators: ["key:ops".to_string()].into(),
        ..Default::default()
    };
    let mut h = Harness::with_options(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        |o| {
            o.security = SecurityOptions {
                auth: Arc::new(auth),
                ..Default::default()
            }
        },
    )
    .await;
    // A site another thread reached while the dispatchers were being registered may still
    // have cached "nobody listens". Recompute now that both are in place.
    tracing::callsite::rebuild_interest_cache();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "ada", "iss": "iss", "aud": "aud", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let bearer = format!("Bearer {jwt}");
    macro_rules! auth {
        ($m:expr) => {
            with($m, "authorization", &bearer)
        };
    }

    let chat = h
        .client
        .start_chat(auth!(pb::StartChatRequest {
            display_name: "Ada".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let chat_ref = || Some(chat_ref(&chat));
    let mut s = h
        .client
        .subscribe(auth!(pb::SubscribeRequest {
            chat: chat_ref(),
            resume_cursor: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    for text in ["hello", "again"] {
        h.client
            .send_message(auth!(pb::SendMessageRequest {
                chat: chat_ref(),
                content: text.into(),
                ..Default::default()
            }))
            .await
            .unwrap();
    }
    let events = read_until(&mut s, |e| count_agent(e) >= 2).await;
    let reply = events
        .iter()
        .rev()
        .find(|e| matches!(e.event, Some(pb::chat_event::Event::Message(_))))
        .unwrap();
    for t in [pb::EventType::Typing, pb::EventType::Read] {
        h.client
            .send_event(auth!(pb::SendEventRequest {
                chat: chat_ref(),
                r#type: t as i32,
                message_id: reply.item_id.clone(),
                client_token: String::new(),
            }))
            .await
            .unwrap();
    }
    // A reconnect: fresh socket URL and connection token.
    let connects = h
        .sim
        .calls(connect_chat_gateway::sim::Operation::CreateParticipantConnection);
    h.sim.drop_sockets(None);
    wait_for("a reconnect", || {
        h.sim
            .calls(connect_chat_gateway::sim::Operation::CreateParticipantConnection)
            > connects
            && h.sim.open_sockets(&chat.contact_id) == 1
    })
    .await;
    h.client
        .get_transcript(auth!(pb::GetTranscriptRequest {
            chat: chat_ref(),
            ..Default::default()
        }))
        .await
        .unwrap();
    // Refusals: a wrong key, a forged chat token; and an operator's inspection.
    let _ = h
        .client
        .get_chat(with(
            pb::GetChatRequest { chat: chat_ref() },
            "x-api-key",
            WRONG_KEY,
        ))
        .await
        .unwrap_err();
    let mut forged = chat_ref().unwrap();
    forged.chat_token = chat.chat_token.chars().rev().collect();
    let _ = h
        .client
        .get_chat(auth!(pb::GetChatRequest {
            chat: Some(forged.clone()),
        }))
        .await
        .unwrap_err();
    h.client
        .get_chat(with(
            pb::GetChatRequest {
                chat: Some(pb::ChatRef {
                    contact_id: chat.contact_id.clone(),
                    chat_token: String::new(),
                    ..Default::default()
                }),
            },
            "x-api-key",
            API_KEY,
        ))
        .await
        .unwrap();
    h.client
        .end_chat(auth!(pb::EndChatRequest { chat: chat_ref() }))
        .await
        .unwrap();
    read_until(&mut s, |e| {
        e.iter()
            .any(|e| matches!(e.event, Some(pb::chat_event::Event::ChatEnded(_))))
    })
    .await;
    h.stop().await;

    let text = logs.text();
    // The capture works: the chat's life is in the logs, the operator's access too.
    assert!(text.contains("chat started"), "{text}");
    assert!(text.contains("operator access"), "{text}");
    assert!(text.contains("caller refused"), "{text}");
    for (what, secret) in [
        ("chat token", chat.chat_token.as_str()),
        ("forged chat token", forged.chat_token.as_str()),
        ("API key", API_KEY),
        ("wrong API key", WRONG_KEY),
        ("JWT", jwt.as_str()),
        ("JWT signature", jwt.rsplit('.').next().unwrap()),
        ("HS256 secret", std::str::from_utf8(SECRET).unwrap()),
    ] {
        assert!(!text.contains(secret), "the {what} was logged");
    }
    // Connect's participant and connection tokens and the socket URLs' tokens are 43
    // characters of base64url; nothing that long and token-like was logged.
    let longest = longest_token_like_run(&text);
    assert!(
        longest < 43,
        "a token-like string of {longest} characters was logged"
    );
    let _ = std::io::stdout().flush();
}
