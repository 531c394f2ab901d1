//! Views and customer authentication through the gateway: GetView describes a view,
//! GetAuthenticationUrl gives the page that sends the customer back to the redirect URI,
//! CancelAuthentication cancels; each refuses bad input and ended chats with its code.

use crate::support::gateway::*;
use crate::support::http;
use connect_chat_gateway::pb::{self, chat_event::Event};
use connect_chat_gateway::sim::Operation;
use tonic::Code;

#[tokio::test]
async fn a_view_is_described_and_an_unknown_one_is_not_found() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let view = h
        .client
        .get_view(pb::GetViewRequest {
            chat: Some(chat_ref(&chat)),
            view_token: "sample-view".into(),
        })
        .await
        .expect("GetView")
        .into_inner()
        .view
        .expect("a view");
    assert_eq!(view.name, "Sample view");
    assert_eq!(view.version, 1);
    assert!(view.arn.ends_with("/view/sample-view:1"), "{}", view.arn);
    let content = view.content.expect("content");
    assert_eq!(content.actions, ["Submit", "Cancel"]);
    assert!(serde_json::from_str::<serde_json::Value>(&content.template).is_ok());
    assert!(serde_json::from_str::<serde_json::Value>(&content.input_schema).is_ok());

    let unknown = h
        .client
        .get_view(pb::GetViewRequest {
            chat: Some(chat_ref(&chat)),
            view_token: "no-such-view".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let calls = h.sim.calls(Operation::DescribeView);
    let empty = h
        .client
        .get_view(pb::GetViewRequest {
            chat: Some(chat_ref(&chat)),
            view_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(
        h.sim.calls(Operation::DescribeView),
        calls,
        "refused before Connect"
    );
    h.stop().await;
}

#[tokio::test]
async fn authentication_sends_the_customer_back_and_can_be_cancelled() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut stream = h.subscribe(&chat).await;
    let session_id = "0b6b2a3e-8f41-4a57-9f0e-4c1d2e3f4a5b";
    let url = h
        .client
        .get_authentication_url(pb::GetAuthenticationUrlRequest {
            chat: Some(chat_ref(&chat)),
            session_id: session_id.into(),
            redirect_uri: "https://app.example/after-login".into(),
        })
        .await
        .expect("GetAuthenticationUrl")
        .into_inner()
        .authentication_url;
    let url = url::Url::parse(&url).expect("a URL");
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
        .parse()
        .unwrap();
    let (status, headers, _) = http(
        addr,
        "GET",
        &format!("{}?{}", url.path(), url.query().unwrap_or_default()),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 302);
    let location = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        location.starts_with("https://app.example/after-login?") && location.contains(session_id),
        "{location}"
    );
    let state = |want: pb::AuthenticationState| {
        move |e: &[pb::ChatEvent]| {
            e.iter().any(|e| {
                matches!(&e.event, Some(Event::Authentication(a)) if a.state() == want && a.session_id == session_id)
            })
        }
    };
    read_until(&mut stream, state(pb::AuthenticationState::Succeeded)).await;

    for (session, redirect, field) in [
        ("short", "https://app.example/", "session_id"),
        (session_id, "not a url", "redirect_uri"),
    ] {
        let e = h
            .client
            .get_authentication_url(pb::GetAuthenticationUrlRequest {
                chat: Some(chat_ref(&chat)),
                session_id: session.into(),
                redirect_uri: redirect.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(field), "{}", e.message());
    }

    let cancel = |chat: &pb::StartChatResponse| pb::CancelAuthenticationRequest {
        chat: Some(chat_ref(chat)),
        session_id: session_id.into(),
    };
    h.client
        .cancel_authentication(cancel(&chat))
        .await
        .expect("CancelAuthentication");
    assert_eq!(h.sim.calls(Operation::CancelParticipantAuthentication), 1);
    read_until(&mut stream, state(pb::AuthenticationState::Cancelled)).await;
    h.client
        .end_chat(pb::EndChatRequest {
            chat: Some(chat_ref(&chat)),
        })
        .await
        .expect("EndChat");
    let ended = h
        .client
        .cancel_authentication(cancel(&chat))
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::FailedPrecondition, "{ended:?}");
    h.stop().await;
}
