//! Push notifications through the gateway: a device is registered at Connect with the
//! operator's application (never one a caller names) and unregistered; bad devices, unknown
//! registrations, ended chats and a gateway without an application are refused with their
//! codes.

use crate::support::gateway::*;
use connect_chat_gateway::pb;
use connect_chat_gateway::sim::{Operation, SimConfig};
use tonic::Code;

fn register(
    chat: &pb::StartChatResponse,
    device_type: pb::DeviceType,
) -> pb::RegisterPushNotificationRequest {
    pb::RegisterPushNotificationRequest {
        chat: Some(chat_ref(chat)),
        device_token: "a1b2c3d4e5f6".into(),
        device_type: device_type as i32,
        include_raw_message: true,
        client_token: String::new(),
    }
}

#[tokio::test]
async fn a_device_registers_and_unregisters() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut ids = Vec::new();
    for t in [
        pb::DeviceType::Apns,
        pb::DeviceType::ApnsSandbox,
        pb::DeviceType::Gcm,
    ] {
        let id = h
            .client
            .register_push_notification(register(&chat, t))
            .await
            .expect("RegisterPushNotification")
            .into_inner()
            .registration_id;
        assert!(!id.is_empty());
        ids.push(id);
    }
    assert_eq!(
        h.sim.calls(Operation::CreatePushNotificationRegistration),
        3
    );
    let unregister = |id: &str| pb::UnregisterPushNotificationRequest {
        chat: Some(chat_ref(&chat)),
        registration_id: id.into(),
    };
    h.client
        .unregister_push_notification(unregister(&ids[0]))
        .await
        .expect("UnregisterPushNotification");
    let again = h
        .client
        .unregister_push_notification(unregister(&ids[0]))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");

    let calls = h.sim.calls(Operation::CreatePushNotificationRegistration);
    let no_type = h
        .client
        .register_push_notification(register(&chat, pb::DeviceType::Unspecified))
        .await
        .unwrap_err();
    assert_eq!(no_type.code(), Code::InvalidArgument);
    let mut long = register(&chat, pb::DeviceType::Gcm);
    long.device_token = "x".repeat(501);
    let long = h.client.register_push_notification(long).await.unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);
    assert!(long.message().contains("device_token"));
    assert_eq!(
        h.sim.calls(Operation::CreatePushNotificationRegistration),
        calls
    );

    h.client
        .end_chat(pb::EndChatRequest {
            chat: Some(chat_ref(&chat)),
        })
        .await
        .expect("EndChat");
    let ended = h
        .client
        .register_push_notification(register(&chat, pb::DeviceType::Apns))
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::FailedPrecondition, "{ended:?}");
    h.stop().await;
}

#[tokio::test]
async fn without_an_application_push_is_off() {
    let mut h = Harness::with_options(SimConfig::default(), |o| {
        o.defaults.push_application_arn = None
    })
    .await;
    let chat = h.start_chat("Ada").await;
    let e = h
        .client
        .register_push_notification(register(&chat, pb::DeviceType::Apns))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("--push-application-arn"),
        "{}",
        e.message()
    );
    assert_eq!(
        h.sim.calls(Operation::CreatePushNotificationRegistration),
        0
    );
    h.stop().await;
}
