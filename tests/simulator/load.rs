//! The simulator's load route: agent messages at a fixed rate over chosen chats, stamped with
//! their push time, through the admin API.

use crate::support::sim::*;
use connect_chat_gateway::sim::load::{parse_stamp, unix_nanos};
use serde_json::{json, Value};

async fn post(env: &Env, body: Value) -> (u16, Value) {
    let (status, _, bytes) = http(
        env.sim.local_addr(),
        "POST",
        "/_sim/load",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    (status, serde_json::from_slice(&bytes).expect("JSON answer"))
}

#[tokio::test]
async fn load_pushes_stamped_messages_round_robin_at_the_rate() {
    let env = start(quiet_config()).await;
    let a = env.chat().await;
    let b = env.chat().await;
    let mut ws = open_socket(&a.socket_url).await;
    let before = unix_nanos();
    let (status, body) = post(
        &env,
        json!({
            "rate": 200.0,
            "millis": 500,
            "contact_ids": [a.contact_id, b.contact_id],
            "stamp": true,
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let pushed = body["pushed"].as_u64().unwrap();
    assert!((80..=110).contains(&pushed), "pushed {pushed}");
    assert_eq!(body["chats"], 2);
    assert_eq!(body["behind"], 0);
    // Round robin: chat a received every other one, each stamped between start and now.
    let now = unix_nanos();
    let mut stamps = Vec::new();
    while (stamps.len() as u64) < pushed / 2 {
        let item = next_item(&mut ws).await.expect("a pushed item");
        if let Some(t) = item["Content"].as_str().and_then(parse_stamp) {
            stamps.push(t);
        }
    }
    assert!(stamps.iter().all(|&t| t >= before && t <= now));
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
    // They are agent messages in the transcript too.
    assert!(env.transcript(&a).len() as u64 >= pushed / 2);
}

#[tokio::test]
async fn load_bounds_are_checked() {
    let env = start(quiet_config()).await;
    let (status, body) = post(&env, json!({ "rate": 0.0, "millis": 10 })).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("rate"), "{body}");
    let (status, _) = post(&env, json!({ "rate": 10.0, "millis": 0 })).await;
    assert_eq!(status, 400);
}
