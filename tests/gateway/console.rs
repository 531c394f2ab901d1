//! The chat page and debugging console on the admin endpoint: the page and its scripts are
//! served, the JSON routes list live chats and their recent events without content, names or
//! tokens, and in the embedded default the page's origin may call the API with gRPC-Web.

use crate::support::gateway::*;
use crate::support::{http, http_get};
use connect_chat_gateway::sim::SimConfig;

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_console_shows_live_chats_and_their_events_but_no_content() {
    let mut h = Harness::start().await;
    let (status, headers, _) = http(h.admin, "GET", "/", &[], b"").await;
    assert_eq!(status, 303, "the admin root leads to the page");
    assert_eq!(header(&headers, "location"), Some("/console/"));
    let (status, headers, page) = http(h.admin, "GET", "/console/", &[], b"").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("console.js"));
    let csp = header(&headers, "content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    for script in ["/console/console.js", "/console/grpc-web.js"] {
        let (status, headers, _) = http(h.admin, "GET", script, &[], b"").await;
        assert_eq!(status, 200, "{script}");
        assert!(header(&headers, "content-type").is_some_and(|t| t.starts_with("text/javascript")));
    }
    let (_, config) = http_get(h.admin, "/console/api/config").await;
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["grpc_port"], h.addr.port());
    assert_eq!(config["simulated"], true);

    let chat = h.start_chat("Ada Lovelace").await;
    let mut stream = h.subscribe(&chat).await;
    let sent = h.send(&chat, "my card number is 4111").await;
    read_until(&mut stream, |e| count_agent(e) >= 1).await;

    let (status, list) = http_get(h.admin, "/console/api/chats").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["live"], 1);
    let listed = &list["chats"][0];
    assert_eq!(listed["contact_id"], chat.contact_id.as_str());
    assert_eq!(listed["participant_id"], chat.participant_id.as_str());
    assert_eq!(listed["upstream"], "connected");
    assert_eq!(listed["subscribers"], 1);
    assert_eq!(listed["caller"], "anonymous");
    assert!(listed["owns_socket"].is_null(), "one process: no replicas");

    let (status, detail) =
        http_get(h.admin, &format!("/console/api/chats/{}", chat.contact_id)).await;
    assert_eq!(status, 200);
    for secret in ["4111", "Ada Lovelace", chat.chat_token.as_str()] {
        assert!(!detail.contains(secret), "{secret:?} shown: {detail}");
    }
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["last_cursor"], listed["last_cursor"]);
    let events = detail["events"].as_array().unwrap();
    let mine = events
        .iter()
        .find(|e| e["item_id"] == sent.message_id.as_str())
        .expect("the customer's message is among the events");
    assert_eq!(mine["kind"], "message");
    assert_eq!(mine["sender_role"], "customer");
    assert_eq!(mine["detail"], "text/plain, 22 bytes");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "message" && e["sender_role"] == "agent"),
        "{events:?}"
    );
    assert!(events
        .iter()
        .all(|e| !e["cursor"].as_str().unwrap().is_empty()));

    let (status, _) = http_get(h.admin, "/console/api/chats/no-such-contact").await;
    assert_eq!(status, 404);
    let (_, capped) = http_get(h.admin, "/console/api/chats?limit=0").await;
    let capped: serde_json::Value = serde_json::from_str(&capped).unwrap();
    assert_eq!(capped["live"], 1);
    assert_eq!(capped["chats"].as_array().unwrap().len(), 0);
    h.stop().await;
}

async fn preflight(h: &Harness, origin: &str) -> Option<String> {
    let (_, headers, _) = http(
        h.addr,
        "OPTIONS",
        "/chatgateway.v1.ChatGateway/StartChat",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type,x-grpc-web"),
        ],
        b"",
    )
    .await;
    header(&headers, "access-control-allow-origin").map(str::to_owned)
}

#[tokio::test]
async fn on_the_embedded_default_the_page_may_call_the_api() {
    let h = Harness::start().await;
    for host in ["127.0.0.1", "localhost"] {
        let origin = format!("http://{host}:{}", h.admin.port());
        assert_eq!(
            preflight(&h, &origin).await.as_deref(),
            Some(origin.as_str())
        );
    }
    assert_eq!(
        preflight(&h, "http://127.0.0.1:1").await,
        None,
        "another port"
    );
    h.stop().await;
}

#[tokio::test]
async fn against_connect_the_page_needs_the_cors_setting_and_the_console_can_be_off() {
    let h = Harness::with_options(SimConfig::default(), |o| o.simulated = false).await;
    let origin = format!("http://127.0.0.1:{}", h.admin.port());
    assert_eq!(preflight(&h, &origin).await, None);
    h.stop().await;

    let h = Harness::with_options(SimConfig::default(), |o| o.console = false).await;
    assert_eq!(http_get(h.admin, "/console/").await.0, 404);
    assert_eq!(http_get(h.admin, "/console/api/chats").await.0, 404);
    assert_eq!(http_get(h.admin, "/metrics").await.0, 200);
    h.stop().await;
}
