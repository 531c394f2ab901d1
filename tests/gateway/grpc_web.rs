//! gRPC-Web on the gRPC port: a browser-style call over HTTP/1.1 (framed protobuf, trailers
//! in the body) reaches the same API, and CORS lets only the configured origins' pages in.

use crate::support::gateway::*;
use crate::support::http;
use connect_chat_gateway::pb;
use connect_chat_gateway::sim::SimConfig;
use prost::Message;

const ALLOWED: &str = "https://app.example";

async fn harness() -> Harness {
    Harness::with_options(
        SimConfig {
            agent: fast_agent(),
            ..SimConfig::default()
        },
        |o| {
            o.session = fast_session();
            o.security.cors_allowed_origins = vec![ALLOWED.into()];
        },
    )
    .await
}

/// A gRPC-Web unary call: the answer's message and its trailers.
async fn grpc_web(
    h: &Harness,
    method: &str,
    request: &impl Message,
    origin: Option<&str>,
) -> (u16, Vec<(String, String)>, Vec<u8>, String) {
    let message = request.encode_to_vec();
    let mut body = vec![0u8];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(message);
    let mut headers = vec![
        ("content-type", "application/grpc-web+proto"),
        ("x-grpc-web", "1"),
    ];
    if let Some(o) = origin {
        headers.push(("origin", o));
    }
    let path = format!("/chatgateway.v1.ChatGateway/{method}");
    let (status, headers, raw) = http(h.addr, "POST", &path, &headers, &body).await;
    // Frames: 0x00 data, 0x80 trailers; each a flag byte and a 4-byte length.
    let (mut data, mut trailers, mut at) = (Vec::new(), String::new(), 0);
    while at + 5 <= raw.len() {
        let len = u32::from_be_bytes(raw[at + 1..at + 5].try_into().unwrap()) as usize;
        let frame = &raw[at + 5..at + 5 + len];
        if raw[at] & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(frame));
        } else {
            data.extend_from_slice(frame);
        }
        at += 5 + len;
    }
    (status, headers, data, trailers)
}

#[tokio::test]
async fn a_grpc_web_call_over_http1_starts_and_uses_a_chat() {
    let h = harness().await;
    let start = pb::StartChatRequest {
        display_name: "Ada (web)".into(),
        ..Default::default()
    };
    let (status, headers, data, trailers) = grpc_web(&h, "StartChat", &start, None).await;
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/grpc-web")),
        "{headers:?}"
    );
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let chat = pb::StartChatResponse::decode(data.as_slice()).expect("a StartChatResponse");
    assert!(!chat.contact_id.is_empty());
    let send = pb::SendMessageRequest {
        chat: Some(chat_ref(&chat)),
        content: "from a browser".into(),
        ..Default::default()
    };
    let (_, _, data, trailers) = grpc_web(&h, "SendMessage", &send, None).await;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert!(!pb::SendMessageResponse::decode(data.as_slice())
        .unwrap()
        .message_id
        .is_empty());
    // Errors keep their gRPC code in the trailers.
    let bad = pb::SendMessageRequest {
        chat: Some(chat_ref(&chat)),
        ..Default::default()
    };
    let (_, headers, _, trailers) = grpc_web(&h, "SendMessage", &bad, None).await;
    // A trailers-only answer carries the status in the headers.
    let in_headers = headers.iter().any(|(k, v)| k == "grpc-status" && v == "3");
    assert!(
        in_headers || trailers.contains("grpc-status:3"),
        "INVALID_ARGUMENT: {headers:?} {trailers}"
    );
    h.stop().await;
}

#[tokio::test]
async fn cors_admits_only_the_configured_origins() {
    let h = harness().await;
    let preflight = |origin: &'static str| {
        let addr = h.addr;
        async move {
            http(
                addr,
                "OPTIONS",
                "/chatgateway.v1.ChatGateway/StartChat",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "content-type,x-grpc-web,x-api-key",
                    ),
                ],
                b"",
            )
            .await
        }
    };
    let header = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (_, allowed, _) = preflight(ALLOWED).await;
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some(ALLOWED)
    );
    let methods = header(&allowed, "access-control-allow-headers").unwrap_or_default();
    assert!(
        methods.contains("x-grpc-web") && methods.contains("x-api-key"),
        "{methods}"
    );
    let (_, other, _) = preflight("https://evil.example").await;
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    // A call from the allowed origin can read the status its answer carries.
    let start = pb::StartChatRequest {
        display_name: "Ada".into(),
        ..Default::default()
    };
    let (_, headers, _, trailers) = grpc_web(&h, "StartChat", &start, Some(ALLOWED)).await;
    assert!(trailers.contains("grpc-status:0"));
    let exposed = header(&headers, "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("grpc-status"), "{exposed}");
    h.stop().await;
}
