//! The simulator's REST surface driven through the official SDK crates: every operation's happy
//! path, validation and access errors mapped to the SDK's typed variants, and idempotency.

use crate::support::sim::*;
use aws_sdk_connect::error::ProvideErrorMetadata as _;
use aws_sdk_connectparticipant::types::{ConnectionType, ScanDirection, SortKey};
use connect_chat_gateway::sim::{Operation, SimConfig};

fn parse_time(s: &str) -> time::OffsetDateTime {
    assert!(
        s.ends_with('Z') && s.len() == 24,
        "time {s} has the 2019-11-08T02:41:28.172Z shape"
    );
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 time")
}

#[tokio::test]
async fn start_chat_and_connections() {
    let env = start(quiet_config()).await;
    let started = env
        .connect
        .start_chat_contact()
        .instance_id("arn-shaped-instance-id-of-any-form")
        .contact_flow_id("f")
        .participant_details(
            aws_sdk_connect::types::ParticipantDetails::builder()
                .display_name("Ann")
                .build()
                .unwrap(),
        )
        .attributes("customer-tier_1", "gold")
        .supported_messaging_content_types("text/plain")
        .supported_messaging_content_types("text/markdown")
        .chat_duration_in_minutes(60)
        .send()
        .await
        .expect("StartChatContact");
    let token = started.participant_token().unwrap();
    assert_eq!(started.contact_id().unwrap().len(), 36);
    assert!(started.participant_id().is_some());
    assert!(token.len() >= 43);

    let only_socket = env
        .participant
        .create_participant_connection()
        .participant_token(token)
        .r#type(ConnectionType::Websocket)
        .send()
        .await
        .expect("socket only");
    assert!(only_socket.connection_credentials().is_none());
    let ws = only_socket.websocket().expect("websocket");
    assert!(ws
        .url()
        .unwrap()
        .starts_with(&format!("ws://{}/connect?token=", env.sim.local_addr())));
    let url_expiry = parse_time(ws.connection_expiry().unwrap());
    let now = time::OffsetDateTime::now_utc();
    assert!(
        url_expiry > now + time::Duration::seconds(90)
            && url_expiry <= now + time::Duration::seconds(101)
    );

    let only_creds = env
        .participant
        .create_participant_connection()
        .participant_token(token)
        .r#type(ConnectionType::ConnectionCredentials)
        .send()
        .await
        .expect("credentials only");
    assert!(only_creds.websocket().is_none());
    let creds = only_creds.connection_credentials().unwrap();
    let expiry = parse_time(creds.expiry().unwrap());
    assert!(expiry > now + time::Duration::hours(23));
    let first_token = creds.connection_token().unwrap().to_owned();

    // A second call gives a fresh token; the older one keeps working.
    let (second_token, _) = env.connect_participant(token).await;
    assert_ne!(first_token, second_token);
    for t in [&first_token, &second_token] {
        env.participant
            .send_message()
            .connection_token(t)
            .content_type("text/markdown")
            .content("**hi**")
            .send()
            .await
            .expect("both tokens work");
    }
    assert_eq!(env.sim.calls(Operation::CreateParticipantConnection), 3);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn messages_events_and_transcript_items() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let sent = send_text(&env.participant, &chat.connection_token, "hello")
        .await
        .unwrap();
    let id = sent.id().unwrap().to_owned();
    parse_time(sent.absolute_time().unwrap());

    let typing = env
        .participant
        .send_event()
        .connection_token(&chat.connection_token)
        .content_type(CT_TYPING)
        .send()
        .await
        .unwrap();
    assert!(typing.id().is_some());
    for ct in [CT_DELIVERED, CT_READ] {
        env.participant
            .send_event()
            .connection_token(&chat.connection_token)
            .content_type(ct)
            .content(format!(r#"{{"messageId":"{id}"}}"#))
            .send()
            .await
            .expect("receipt");
    }

    let transcript = env
        .participant
        .get_transcript()
        .connection_token(&chat.connection_token)
        .scan_direction(ScanDirection::Forward)
        .sort_order(SortKey::Ascending)
        .send()
        .await
        .unwrap();
    assert_eq!(
        transcript.initial_contact_id(),
        Some(chat.contact_id.as_str())
    );
    assert!(transcript.next_token().is_none());
    let items = transcript.transcript();
    // Customer joined, the message; typing and receipts are not stored.
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].content_type(), Some(CT_JOINED));
    let msg = &items[1];
    assert_eq!(msg.id(), Some(id.as_str()));
    assert_eq!(msg.content(), Some("hello"));
    assert_eq!(msg.absolute_time(), sent.absolute_time());
    assert_eq!(msg.participant_id(), Some(chat.participant_id.as_str()));
    assert_eq!(msg.display_name(), Some("Customer"));
    assert_eq!(msg.r#type().map(|t| t.as_str()), Some("MESSAGE"));
    assert_eq!(msg.participant_role().map(|r| r.as_str()), Some("CUSTOMER"));
    assert_eq!(msg.contact_id(), Some(chat.contact_id.as_str()));
    env.sim.shutdown().await;
}

#[tokio::test]
async fn start_chat_contact_errors_are_typed() {
    let env = start(quiet_config()).await;
    let e = env
        .start_chat_request()
        .instance_id("x".repeat(101))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_parameter_exception(), "{e:?}");
    assert_eq!(
        e.message(),
        Some("InstanceId must be between 1 and 100 characters")
    );

    let e = env
        .connect
        .start_chat_contact()
        .instance_id("i")
        .participant_details(
            aws_sdk_connect::types::ParticipantDetails::builder()
                .display_name("A")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_request_exception(), "{e:?}");
    assert_eq!(e.message(), Some("ContactFlowId is required"));

    let e = env
        .start_chat_request()
        .chat_duration_in_minutes(59)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_parameter_exception(), "{e:?}");
    let e = env
        .start_chat_request()
        .supported_messaging_content_types("text/markdown")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_parameter_exception());
    assert_eq!(
        e.message(),
        Some("SupportedMessagingContentTypes must contain text/plain")
    );
    let e = env
        .start_chat_request()
        .attributes("bad key", "v")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_parameter_exception());
    let e = env
        .start_chat_request()
        .initial_message(
            aws_sdk_connect::types::ChatMessage::builder()
                .content_type("text/plain")
                .content("")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_parameter_exception());

    // Persistent chat: unknown source, live source, ended source.
    let persistent = |source: &str| {
        aws_sdk_connect::types::PersistentChat::builder()
            .rehydration_type(aws_sdk_connect::types::RehydrationType::EntirePastSession)
            .source_contact_id(source)
            .build()
    };
    let e = env
        .start_chat_request()
        .persistent_chat(persistent("nope"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_resource_not_found_exception(), "{e:?}");
    let first = env.chat().await;
    let e = env
        .start_chat_request()
        .persistent_chat(persistent(&first.contact_id))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_request_exception());
    assert!(env.sim.end_chat(&first.contact_id));
    let next = env
        .start_chat_request()
        .persistent_chat(persistent(&first.contact_id))
        .send()
        .await
        .unwrap();
    assert_eq!(
        next.continued_from_contact_id(),
        Some(first.contact_id.as_str())
    );
    env.sim.shutdown().await;
}

#[tokio::test]
async fn chat_limit_is_limit_exceeded() {
    let env = start(SimConfig {
        max_chats: 1,
        ..quiet_config()
    })
    .await;
    let first = env.chat().await;
    let e = env
        .start_chat_request()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_limit_exceeded_exception(), "{e:?}");
    // An ended chat frees its slot.
    env.sim.end_chat(&first.contact_id);
    env.start_chat_request().send().await.expect("slot freed");
    env.sim.shutdown().await;
}

#[tokio::test]
async fn participant_validation_errors_are_typed() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let p = &env.participant;
    let t = chat.connection_token.as_str();

    let e = send_text(p, t, "").await;
    let e = e.unwrap_err().into_service_error();
    assert!(e.is_validation_exception());
    assert_eq!(
        e.message(),
        Some("Content must be between 1 and 16384 characters")
    );
    let e = send_text(p, t, &"x".repeat(16385))
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_validation_exception());
    // The service enforces each content type's own limit inside the model's 16,384.
    let e = send_text(p, t, &"x".repeat(1025))
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_validation_exception());
    assert_eq!(
        e.message(),
        Some("Content must be between 1 and 1024 characters")
    );
    send_text(p, t, &"x".repeat(1024))
        .await
        .expect("1024 characters of text/plain are fine");
    // Not in this chat's default SupportedMessagingContentTypes.
    let e = p
        .send_message()
        .connection_token(t)
        .content_type("text/markdown")
        .content("*")
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());
    let e = p
        .send_message()
        .connection_token(t)
        .content_type("image/png")
        .content("x")
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());
    // The default includes interactive responses.
    p.send_message()
        .connection_token(t)
        .content_type("application/vnd.amazonaws.connect.message.interactive.response")
        .content(r#"{"data":{}}"#)
        .send()
        .await
        .expect("interactive response accepted by default");

    let e = p
        .send_event()
        .connection_token(t)
        .content_type("text/plain")
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());
    let e = p
        .send_event()
        .connection_token(t)
        .content_type(CT_READ)
        .content(r#"{"messageId":"unknown"}"#)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());

    let e = p
        .get_transcript()
        .connection_token(t)
        .max_results(101)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());
    let e = p
        .get_transcript()
        .connection_token(t)
        .next_token("garbage")
        .send()
        .await;
    let e = e.unwrap_err().into_service_error();
    assert!(e.is_validation_exception());
    assert_eq!(e.message(), Some("NextToken is invalid"));

    let e = p
        .create_participant_connection()
        .participant_token(&chat.participant_token)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());

    let e = p
        .get_attachment()
        .connection_token(t)
        .attachment_id("a")
        .url_expiry_in_seconds(4)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());
    let e = p
        .get_authentication_url()
        .connection_token(t)
        .session_id("x".repeat(35))
        .redirect_uri("https://example.com/back")
        .send()
        .await;
    let e = e.unwrap_err().into_service_error();
    assert!(e.is_validation_exception());
    assert_eq!(e.message(), Some("SessionId must be exactly 36 characters"));
    let e = p
        .cancel_participant_authentication()
        .connection_token(t)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());

    let e = p
        .complete_attachment_upload()
        .connection_token(t)
        .attachment_ids("a")
        .attachment_ids("b")
        .client_token("c")
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());
    let e = p
        .start_attachment_upload()
        .connection_token(t)
        .content_type("application/x-msdownload")
        .attachment_size_in_bytes(10)
        .attachment_name("a.exe")
        .client_token("c1")
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_validation_exception());
    let e = p
        .start_attachment_upload()
        .connection_token(t)
        .content_type("application/pdf")
        .attachment_size_in_bytes(20 * 1024 * 1024 + 1)
        .attachment_name("big.pdf")
        .client_token("c2")
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_service_quota_exceeded_exception());

    let e = p
        .describe_view()
        .connection_token(t)
        .view_token("no/such view")
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_resource_not_found_exception());
    env.sim.shutdown().await;
}

#[tokio::test]
async fn access_denied_cases() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let p = &env.participant;
    let denied = |r: Result<
        _,
        aws_sdk_connectparticipant::error::SdkError<
            aws_sdk_connectparticipant::operation::send_message::SendMessageError,
            _,
        >,
    >| {
        r.unwrap_err()
            .into_service_error()
            .is_access_denied_exception()
    };
    let send = |token: &str| send_text(p, token, "x");
    assert!(denied(send("unknown-token").await));
    assert!(
        denied(
            p.send_message()
                .content_type("text/plain")
                .content("x")
                .send()
                .await
        ),
        "missing header"
    );
    assert!(
        denied(send(&chat.participant_token).await),
        "participant token is not a connection token"
    );
    let e = p
        .create_participant_connection()
        .participant_token(&chat.connection_token)
        .r#type(ConnectionType::Websocket)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_access_denied_exception());
    let e = p
        .get_transcript()
        .connection_token(&chat.connection_token)
        .contact_id("another-contact")
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_access_denied_exception());

    p.disconnect_participant()
        .connection_token(&chat.connection_token)
        .send()
        .await
        .expect("disconnect");
    assert!(denied(send(&chat.connection_token).await));
    let e = p
        .get_transcript()
        .connection_token(&chat.connection_token)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_access_denied_exception());
    let e = p
        .disconnect_participant()
        .connection_token(&chat.connection_token)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_access_denied_exception());
    let e = p
        .create_participant_connection()
        .participant_token(&chat.participant_token)
        .r#type(ConnectionType::Websocket)
        .send()
        .await;
    assert!(e
        .unwrap_err()
        .into_service_error()
        .is_access_denied_exception());
    env.sim.shutdown().await;
}

#[tokio::test]
async fn idempotency_by_client_token() {
    let env = start(quiet_config()).await;
    let a = env
        .start_chat_request()
        .client_token("same")
        .send()
        .await
        .unwrap();
    let b = env
        .start_chat_request()
        .client_token("same")
        .send()
        .await
        .unwrap();
    assert_eq!(a.contact_id(), b.contact_id());
    assert_eq!(a.participant_id(), b.participant_id());
    assert_eq!(a.participant_token(), b.participant_token());
    let c = env
        .start_chat_request()
        .client_token("other")
        .send()
        .await
        .unwrap();
    assert_ne!(a.contact_id(), c.contact_id());

    let chat = env.chat().await;
    let before = env.transcript(&chat).len();
    let send = || {
        env.participant
            .send_message()
            .connection_token(&chat.connection_token)
            .content_type("text/plain")
            .content("once")
            .client_token("m-1")
            .send()
    };
    let (m1, m2) = (send().await.unwrap(), send().await.unwrap());
    assert_eq!(m1.id(), m2.id());
    assert_eq!(m1.absolute_time(), m2.absolute_time());
    assert_eq!(env.transcript(&chat).len(), before + 1);

    let pushed = env.sim.counters().items_pushed;
    let event = || {
        env.participant
            .send_event()
            .connection_token(&chat.connection_token)
            .content_type(CT_TYPING)
            .client_token("e-1")
            .send()
    };
    let (e1, e2) = (event().await.unwrap(), event().await.unwrap());
    assert_eq!(e1.id(), e2.id());
    assert_eq!(e1.absolute_time(), e2.absolute_time());
    assert_eq!(
        env.sim.counters().items_pushed,
        pushed + 1,
        "the replay pushed nothing"
    );
    env.sim.shutdown().await;
}

#[tokio::test]
async fn attachment_round_trip() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let p = &env.participant;
    let t = chat.connection_token.as_str();
    let bytes = b"%PDF-1.4 pretend".to_vec();
    let started = p
        .start_attachment_upload()
        .connection_token(t)
        .content_type("application/pdf")
        .attachment_size_in_bytes(bytes.len() as i64)
        .attachment_name("report.pdf")
        .client_token("up-1")
        .send()
        .await
        .unwrap();
    let id = started.attachment_id().unwrap().to_owned();
    let meta = started.upload_metadata().unwrap();
    parse_time(meta.url_expiry().unwrap());
    let headers = meta.headers_to_include().unwrap();
    assert_eq!(
        headers.get("Content-Type").map(String::as_str),
        Some("application/pdf")
    );

    // Completing before the bytes arrived is a conflict.
    let e = p
        .complete_attachment_upload()
        .connection_token(t)
        .attachment_ids(&id)
        .client_token("c")
        .send()
        .await;
    assert!(e.unwrap_err().into_service_error().is_conflict_exception());

    let path = path_of(meta.url().unwrap());
    let (status, _, _) = http(
        env.sim.local_addr(),
        "PUT",
        &path,
        &[("Content-Type", "text/plain")],
        &bytes,
    )
    .await;
    assert_eq!(status, 403, "headers to include are enforced");
    let (status, _, _) = http(
        env.sim.local_addr(),
        "PUT",
        &path,
        &[("Content-Type", "application/pdf")],
        &bytes,
    )
    .await;
    assert_eq!(status, 200);
    p.complete_attachment_upload()
        .connection_token(t)
        .attachment_ids(&id)
        .client_token("c")
        .send()
        .await
        .unwrap();

    let last = env.transcript(&chat).pop().unwrap();
    assert_eq!(last["Type"], "ATTACHMENT");
    assert_eq!(
        last["Attachments"],
        serde_json::json!([{"ContentType":"application/pdf","AttachmentId":id,"AttachmentName":"report.pdf","Status":"APPROVED"}])
    );

    let got = p
        .get_attachment()
        .connection_token(t)
        .attachment_id(&id)
        .url_expiry_in_seconds(60)
        .send()
        .await
        .unwrap();
    assert_eq!(got.attachment_size_in_bytes(), bytes.len() as i64);
    parse_time(got.url_expiry().unwrap());
    let (status, headers, body) = http(
        env.sim.local_addr(),
        "GET",
        &path_of(got.url().unwrap()),
        &[],
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, bytes);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/pdf"));
    assert_eq!(env.sim.calls(Operation::GetAttachment), 1);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn view_and_authentication() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let p = &env.participant;
    let t = chat.connection_token.as_str();
    let view = p
        .describe_view()
        .connection_token(t)
        .view_token("sample-view")
        .send()
        .await
        .unwrap();
    let view = view.view().unwrap();
    assert_eq!(view.id(), Some("sample-view"));
    assert!(view.arn().unwrap().starts_with("arn:aws:connect:"));
    assert_eq!(view.version(), Some(1));
    let content = view.content().unwrap();
    assert!(content.input_schema().is_some() && content.template().is_some());
    assert_eq!(content.actions(), ["Submit", "Cancel"]);

    let session = "0123456789abcdef0123456789abcdef0123";
    let url = p
        .get_authentication_url()
        .connection_token(t)
        .session_id(session)
        .redirect_uri("https://example.com/back")
        .send()
        .await
        .unwrap();
    let url = url.authentication_url().unwrap();
    let (status, headers, _) = http(env.sim.local_addr(), "GET", &path_of(url), &[], &[]).await;
    assert_eq!(status, 302);
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        location,
        Some(format!("https://example.com/back?session_id={session}").as_str())
    );
    p.cancel_participant_authentication()
        .connection_token(t)
        .session_id(session)
        .send()
        .await
        .unwrap();
    env.sim.shutdown().await;
}

/// A CORS preflight from a page on `origin` for `method` on `path`: status and headers.
async fn preflight(
    addr: std::net::SocketAddr,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> (u16, Vec<(String, String)>) {
    let mut request = vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
    ];
    if !headers.is_empty() {
        request.push(("Access-Control-Request-Headers", headers));
    }
    let (status, headers, _) = crate::support::http(addr, "OPTIONS", path, &request, b"").await;
    (status, headers)
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// Whether an answer lets a page on `origin` read it.
fn allows(headers: &[(String, String)], origin: &str) -> bool {
    header(headers, "access-control-allow-origin").as_deref() == Some(origin)
}

#[tokio::test]
async fn browsers_on_approved_origins_may_call_the_participant_service() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let addr = env.sim.local_addr();
    let chatjs_headers = "content-type,x-amz-bearer,x-amz-date,x-amz-user-agent";
    // A page on a loopback origin: allowed by default.
    let (status, headers) = preflight(
        addr,
        "/participant/message",
        "http://localhost:3000",
        "POST",
        chatjs_headers,
    )
    .await;
    assert_eq!(status, 200);
    assert!(allows(&headers, "http://localhost:3000"));
    let allowed = header(&headers, "access-control-allow-headers").unwrap_or_default();
    assert!(allowed.contains("x-amz-bearer") && allowed.contains("content-type"));
    // Another origin gets no Access-Control-Allow-Origin: the browser refuses the call.
    let (_, headers) = preflight(
        addr,
        "/participant/message",
        "https://elsewhere.example",
        "POST",
        chatjs_headers,
    )
    .await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    // The call itself names the origin in its answer too.
    let body = br#"{"ContentType":"text/plain","Content":"from a page"}"#;
    let (status, headers, _) = crate::support::http(
        addr,
        "POST",
        "/participant/message",
        &[
            ("Origin", "http://127.0.0.1:5173"),
            ("Content-Type", "application/json"),
            ("X-Amz-Bearer", &chat.connection_token),
        ],
        body,
    )
    .await;
    assert_eq!(status, 200);
    assert!(allows(&headers, "http://127.0.0.1:5173"));
}

#[tokio::test]
async fn pages_on_approved_origins_may_upload_and_download_attachments() {
    // ChatJS in a page PUTs the file to the upload URL and GETs the download URL itself,
    // cross-origin, as it does with Connect's attachment bucket.
    let env = start(quiet_config()).await;
    let addr = env.sim.local_addr();
    for (origin, allowed) in [
        ("http://localhost:3000", true),
        ("https://elsewhere.example", false),
    ] {
        let path = "/_sim/files/some-contact/some-attachment?token=t";
        let (status, headers) = preflight(addr, path, origin, "PUT", "content-type").await;
        assert_eq!(status, 200, "{origin}");
        assert_eq!(allows(&headers, origin), allowed, "{origin}");
    }
}

#[tokio::test]
async fn configured_approved_origins_replace_the_loopback_default() {
    let env = start(SimConfig {
        approved_origins: vec!["https://widget.example.com".into()],
        ..quiet_config()
    })
    .await;
    let addr = env.sim.local_addr();
    for (origin, allowed) in [
        ("https://widget.example.com", true),
        ("http://localhost:3000", false),
    ] {
        let (_, headers) = preflight(addr, "/participant/transcript", origin, "POST", "").await;
        assert_eq!(allows(&headers, origin), allowed, "{origin}");
    }
}

#[tokio::test]
async fn the_scan_shows_in_progress_then_rejects_the_test_virus() {
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let p = &env.participant;
    let t = chat.connection_token.as_str();
    let bytes = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*".to_vec();
    let started = p
        .start_attachment_upload()
        .connection_token(t)
        .content_type("text/plain")
        .attachment_size_in_bytes(bytes.len() as i64)
        .attachment_name("eicar.txt")
        .client_token("up-eicar")
        .send()
        .await
        .unwrap();
    let id = started.attachment_id().unwrap().to_owned();
    let path = path_of(started.upload_metadata().unwrap().url().unwrap());
    let (status, _, _) = http(
        env.sim.local_addr(),
        "PUT",
        &path,
        &[("Content-Type", "text/plain")],
        &bytes,
    )
    .await;
    assert_eq!(status, 200);
    p.complete_attachment_upload()
        .connection_token(t)
        .attachment_ids(&id)
        .client_token("c")
        .send()
        .await
        .unwrap();
    let statuses: Vec<String> = env
        .transcript(&chat)
        .iter()
        .filter(|i| i["Type"] == "ATTACHMENT")
        .map(|i| i["Attachments"][0]["Status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["IN_PROGRESS", "REJECTED"]);
    let e = p
        .get_attachment()
        .connection_token(t)
        .attachment_id(&id)
        .send()
        .await
        .unwrap_err();
    assert!(e.into_service_error().is_validation_exception());
    env.sim.shutdown().await;
}

#[tokio::test]
async fn push_notification_registrations() {
    use aws_sdk_connect::types::{ContactConfiguration, DeviceType, ParticipantRole};
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let register = |contact: &str| {
        env.connect
            .create_push_notification_registration()
            .instance_id("12345678-aaaa-bbbb-cccc-123456789012")
            .pinpoint_app_arn("arn:aws:mobiletargeting:us-east-1:000000000000:apps/a")
            .device_token("device-1")
            .device_type(DeviceType::Gcm)
            .client_token("reg-1")
            .contact_configuration(
                ContactConfiguration::builder()
                    .contact_id(contact)
                    .participant_role(ParticipantRole::Customer)
                    .build()
                    .unwrap(),
            )
            .send()
    };
    let id = register(&chat.contact_id)
        .await
        .expect("create")
        .registration_id;
    let again = register(&chat.contact_id)
        .await
        .expect("create again")
        .registration_id;
    assert_eq!(id, again, "the same client token registers once");
    let unknown = register("no-such-contact").await.unwrap_err();
    assert!(unknown
        .into_service_error()
        .is_resource_not_found_exception());
    let delete = || {
        env.connect
            .delete_push_notification_registration()
            .instance_id("12345678-aaaa-bbbb-cccc-123456789012")
            .contact_id(&chat.contact_id)
            .registration_id(&id)
            .send()
    };
    delete().await.expect("delete");
    let gone = delete().await.unwrap_err();
    assert!(gone.into_service_error().is_resource_not_found_exception());
    env.sim.shutdown().await;
}

#[tokio::test]
async fn a_custom_bot_joins_with_its_own_participant_and_leaves_alone() {
    use aws_sdk_connect::types::{ParticipantDetailsToAdd, ParticipantRole};
    let env = start(quiet_config()).await;
    let chat = env.chat().await;
    let mut customer = open_socket(&chat.socket_url).await;
    let add = |contact: &str, role: ParticipantRole| {
        env.connect
            .create_participant()
            .instance_id("12345678-aaaa-bbbb-cccc-123456789012")
            .contact_id(contact)
            .client_token("bot-1")
            .participant_details(
                ParticipantDetailsToAdd::builder()
                    .participant_role(role)
                    .display_name("FAQ bot")
                    .build(),
            )
            .send()
    };
    let added = add(&chat.contact_id, ParticipantRole::CustomBot)
        .await
        .expect("CreateParticipant");
    let bot_id = added.participant_id().expect("participant id").to_owned();
    let bot_token = added
        .participant_credentials()
        .and_then(|c| c.participant_token())
        .expect("participant token")
        .to_owned();
    assert_ne!(bot_id, chat.participant_id);
    assert_ne!(bot_token, chat.participant_token);
    let again = add(&chat.contact_id, ParticipantRole::CustomBot)
        .await
        .expect("CreateParticipant again");
    assert_eq!(
        again.participant_id(),
        Some(bot_id.as_str()),
        "the same client token adds one bot"
    );
    // Only CUSTOM_BOT joins a chat; an unknown contact is not found.
    let agent = add(&chat.contact_id, ParticipantRole::Agent)
        .await
        .unwrap_err();
    assert!(agent.into_service_error().is_invalid_request_exception());
    let unknown = add("no-such-contact", ParticipantRole::CustomBot)
        .await
        .unwrap_err();
    assert!(unknown
        .into_service_error()
        .is_resource_not_found_exception());

    let joined = items_until(&mut customer, |i| {
        content_type(i) == "application/vnd.amazonaws.connect.event.participant.joined"
            && i["ParticipantId"] == bot_id.as_str()
    })
    .await;
    let joined = joined.last().unwrap();
    assert_eq!(joined["ParticipantRole"], "CUSTOM_BOT");
    assert_eq!(joined["DisplayName"], "FAQ bot");

    // The bot connects with its own token and talks as itself.
    let (bot_connection, bot_url) = env.connect_participant(&bot_token).await;
    let mut bot = open_socket(&bot_url).await;
    let said = send_text(&env.participant, &bot_connection, "How can I help?")
        .await
        .expect("the bot's SendMessage");
    let seen = items_until(&mut customer, |i| i["Id"] == said.id().unwrap()).await;
    let message = seen.last().unwrap();
    assert_eq!(message["ParticipantId"], bot_id.as_str());
    assert_eq!(message["ParticipantRole"], "CUSTOM_BOT");
    let from_customer = env.say(&chat, "Where is my order?").await;
    let at_bot = items_until(&mut bot, |i| i["Id"] == from_customer.as_str()).await;
    assert_eq!(at_bot.last().unwrap()["ParticipantRole"], "CUSTOMER");

    // The bot leaves; the chat goes on for the customer, and the bot's token is spent.
    env.participant
        .disconnect_participant()
        .connection_token(&bot_connection)
        .send()
        .await
        .expect("the bot's DisconnectParticipant");
    let left = items_until(&mut customer, |i| {
        content_type(i) == "application/vnd.amazonaws.connect.event.participant.left"
    })
    .await;
    assert_eq!(left.last().unwrap()["ParticipantId"], bot_id.as_str());
    assert!(socket_ends(&mut bot).await, "the bot's socket closes");
    let spent = send_text(&env.participant, &bot_connection, "still here?")
        .await
        .unwrap_err();
    assert_eq!(spent.code(), Some("AccessDeniedException"));
    env.say(&chat, "thanks").await;
    env.sim.shutdown().await;
}
