//! StartChat's Connect options (response mode, segment attributes, customer id, related
//! contact, disconnect on customer exit) reach StartChatContact as given, and the gateway
//! refuses what Connect's model refuses before spending Connect quota.

use crate::support::gateway::*;
use connect_chat_gateway::pb;
use connect_chat_gateway::sim::Operation;
use tonic::Code;

#[tokio::test]
async fn the_options_reach_connect_as_given() {
    let mut h = Harness::start().await;
    let first = h.start_chat("Ada").await;
    let chat = h
        .client
        .start_chat(pb::StartChatRequest {
            display_name: "Ada".into(),
            response_mode: pb::ResponseMode::Incremental as i32,
            segment_attributes: [("connect:Subtype".to_string(), "connect:Guide".to_string())]
                .into(),
            customer_id: "customer-42".into(),
            related_contact_id: first.contact_id.clone(),
            disconnect_agent_on_customer_exit: true,
            ..Default::default()
        })
        .await
        .expect("StartChat")
        .into_inner();
    let options = h
        .sim
        .start_options(&chat.contact_id)
        .expect("options were sent");
    assert_eq!(options.customer_id.as_deref(), Some("customer-42"));
    assert_eq!(
        options.related_contact_id.as_deref(),
        Some(first.contact_id.as_str())
    );
    assert_eq!(options.response_mode.as_deref(), Some("INCREMENTAL"));
    assert_eq!(
        options.disconnect_on_customer_exit,
        Some(vec!["AGENT".to_string()])
    );
    let segments = options.segment_attributes.expect("segment attributes");
    assert_eq!(segments["connect:Subtype"]["ValueString"], "connect:Guide");
    assert_eq!(
        h.sim.start_options(&first.contact_id),
        None,
        "none given, none sent"
    );
    h.stop().await;
}

#[tokio::test]
async fn options_connect_refuses_are_refused_first() {
    let mut h = Harness::start().await;
    let base = || pb::StartChatRequest {
        display_name: "Ada".into(),
        ..Default::default()
    };
    let cases = [
        (
            pb::StartChatRequest {
                related_contact_id: "c-1".into(),
                persistent_chat: Some(pb::PersistentChat {
                    source_contact_id: "c-0".into(),
                    rehydration_type: 0,
                }),
                ..base()
            },
            "related_contact_id",
        ),
        (
            pb::StartChatRequest {
                customer_id: "x".repeat(129),
                ..base()
            },
            "customer_id",
        ),
        (
            pb::StartChatRequest {
                segment_attributes: [("k".repeat(129), "v".to_string())].into(),
                ..base()
            },
            "segment_attributes",
        ),
        (
            pb::StartChatRequest {
                response_mode: 7,
                ..base()
            },
            "response_mode",
        ),
    ];
    for (request, field) in cases {
        let e = h.client.start_chat(request).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    assert_eq!(h.sim.calls(Operation::StartChatContact), 0);
    h.stop().await;
}
