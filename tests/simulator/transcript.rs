//! GetTranscript paging through the SDK: both scan directions and sort orders, every kind of
//! StartPosition, and NextToken paging that neither skips nor repeats while items arrive.

use std::collections::HashSet;

use crate::support::sim::*;
use aws_sdk_connectparticipant::types::{ScanDirection, SortKey, StartPosition};

fn ids(items: &[aws_sdk_connectparticipant::types::Item]) -> Vec<String> {
    items.iter().map(|i| i.id().unwrap().to_owned()).collect()
}

fn all_ids(env: &Env, chat: &Chat) -> Vec<String> {
    env.transcript(chat)
        .iter()
        .map(|v| v["Id"].as_str().unwrap().to_owned())
        .collect()
}

/// A chat with `n` messages after the customer's join event.
async fn chat_with(env: &Env, n: usize) -> Chat {
    let chat = env.chat().await;
    for i in 0..n {
        if i % 2 == 0 {
            env.say(&chat, &format!("customer {i}")).await;
        } else {
            env.sim
                .agent_say(&chat.contact_id, &format!("agent {i}"))
                .unwrap();
        }
    }
    chat
}

/// Page through in one direction, calling `between` after each page.
async fn page_all(
    env: &Env,
    chat: &Chat,
    direction: ScanDirection,
    order: SortKey,
    max: i32,
    mut between: impl FnMut(usize),
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = env
            .participant
            .get_transcript()
            .connection_token(&chat.connection_token)
            .scan_direction(direction.clone())
            .sort_order(order.clone())
            .max_results(max)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("GetTranscript");
        pages.push(ids(out.transcript()));
        between(pages.len());
        match out.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return pages,
        }
        assert!(pages.len() < 100, "paging terminates");
    }
}

#[tokio::test]
async fn defaults_are_backward_descending_ten() {
    let env = start(quiet_config()).await;
    let chat = chat_with(&env, 14).await;
    let all = all_ids(&env, &chat);
    assert_eq!(all.len(), 15);
    let out = env
        .participant
        .get_transcript()
        .connection_token(&chat.connection_token)
        .send()
        .await
        .unwrap();
    let mut newest: Vec<String> = all[5..].to_vec();
    newest.reverse();
    assert_eq!(ids(out.transcript()), newest);
    assert!(out.next_token().is_some());
    env.sim.shutdown().await;
}

#[tokio::test]
async fn forward_and_backward_paging_cover_everything() {
    let env = start(quiet_config()).await;
    let chat = chat_with(&env, 20).await;
    let all = all_ids(&env, &chat);

    let pages = page_all(
        &env,
        &chat,
        ScanDirection::Forward,
        SortKey::Ascending,
        7,
        |_| {},
    )
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![7, 7, 7]
    );
    assert_eq!(pages.concat(), all);

    let pages = page_all(
        &env,
        &chat,
        ScanDirection::Forward,
        SortKey::Descending,
        7,
        |_| {},
    )
    .await;
    let mut expected: Vec<Vec<String>> = all
        .chunks(7)
        .map(|c| c.iter().rev().cloned().collect())
        .collect();
    assert_eq!(pages, expected);

    let pages = page_all(
        &env,
        &chat,
        ScanDirection::Backward,
        SortKey::Ascending,
        8,
        |_| {},
    )
    .await;
    expected = all.rchunks(8).map(<[String]>::to_vec).collect();
    assert_eq!(pages, expected);

    let pages = page_all(
        &env,
        &chat,
        ScanDirection::Backward,
        SortKey::Descending,
        8,
        |_| {},
    )
    .await;
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(pages.concat(), rev);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn start_positions() {
    let env = start(quiet_config()).await;
    let chat = chat_with(&env, 12).await;
    let all = all_ids(&env, &chat);
    let items = env.transcript(&chat);
    let get = |sp: StartPosition, dir: Option<ScanDirection>, max: i32| {
        env.participant
            .get_transcript()
            .connection_token(&chat.connection_token)
            .start_position(sp)
            .set_scan_direction(dir)
            .sort_order(SortKey::Ascending)
            .max_results(max)
            .send()
    };

    // An empty StartPosition (ChatJS sends one when its caller names no start) is no start:
    // the most recent items, BACKWARD.
    let empty = get(StartPosition::builder().build(), None, 3)
        .await
        .expect("an empty StartPosition is accepted");
    let none = env
        .participant
        .get_transcript()
        .connection_token(&chat.connection_token)
        .sort_order(SortKey::Ascending)
        .max_results(3)
        .send()
        .await
        .expect("no StartPosition");
    let ids = |t: &[aws_sdk_connectparticipant::types::Item]| {
        t.iter()
            .map(|i| i.id().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(empty.transcript()), ids(none.transcript()));
    assert_eq!(ids(empty.transcript()), all[all.len() - 3..].to_vec());

    // By Id: FORWARD is the default with a StartPosition; the start item is included.
    let out = get(StartPosition::builder().id(&all[4]).build(), None, 3)
        .await
        .unwrap();
    assert_eq!(ids(out.transcript()), all[4..7]);
    let out = get(
        StartPosition::builder().id(&all[4]).build(),
        Some(ScanDirection::Backward),
        3,
    )
    .await
    .unwrap();
    assert_eq!(ids(out.transcript()), all[2..5]);
    assert!(out.next_token().is_some());

    // By AbsoluteTime (inclusive both ways).
    let t = items[6]["AbsoluteTime"].as_str().unwrap();
    let out = get(StartPosition::builder().absolute_time(t).build(), None, 2)
        .await
        .unwrap();
    assert_eq!(ids(out.transcript()), all[6..8]);
    let out = get(
        StartPosition::builder().absolute_time(t).build(),
        Some(ScanDirection::Backward),
        2,
    )
    .await
    .unwrap();
    assert_eq!(ids(out.transcript()), all[5..7]);

    // MostRecent: FORWARD gives the n newest, BACKWARD skips them.
    let out = get(StartPosition::builder().most_recent(4).build(), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(out.transcript()), all[9..]);
    assert!(out.next_token().is_none());
    let out = get(
        StartPosition::builder().most_recent(4).build(),
        Some(ScanDirection::Backward),
        2,
    )
    .await
    .unwrap();
    assert_eq!(ids(out.transcript()), all[7..9]);

    // Invalid positions.
    for sp in [
        StartPosition::builder().id("missing").build(),
        StartPosition::builder().absolute_time("not a time").build(),
        StartPosition::builder().most_recent(101).build(),
        StartPosition::builder().id(&all[0]).most_recent(1).build(),
    ] {
        let e = get(sp, None, 1).await.unwrap_err().into_service_error();
        assert!(e.is_validation_exception(), "{e:?}");
    }
    env.sim.shutdown().await;
}

#[tokio::test]
async fn next_token_is_bound_to_direction_and_contact() {
    let env = start(quiet_config()).await;
    let chat = chat_with(&env, 5).await;
    let other = chat_with(&env, 5).await;
    let out = env
        .participant
        .get_transcript()
        .connection_token(&chat.connection_token)
        .scan_direction(ScanDirection::Forward)
        .max_results(2)
        .send()
        .await
        .unwrap();
    let token = out.next_token().unwrap();
    let e = env
        .participant
        .get_transcript()
        .connection_token(&chat.connection_token)
        .scan_direction(ScanDirection::Backward)
        .next_token(token)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_validation_exception());
    let e = env
        .participant
        .get_transcript()
        .connection_token(&other.connection_token)
        .next_token(token)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_validation_exception());
    // Without ScanDirection the token's own direction applies.
    let out = env
        .participant
        .get_transcript()
        .connection_token(&chat.connection_token)
        .sort_order(SortKey::Ascending)
        .max_results(2)
        .next_token(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ids(out.transcript()), all_ids(&env, &chat)[2..4]);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn paging_while_items_arrive_skips_and_repeats_nothing() {
    let env = start(quiet_config()).await;
    let chat = chat_with(&env, 9).await;
    let before = all_ids(&env, &chat);

    // FORWARD picks up the items that arrive between pages.
    let mut n = 0;
    let pages = page_all(
        &env,
        &chat,
        ScanDirection::Forward,
        SortKey::Ascending,
        4,
        |page| {
            if page <= 3 {
                for _ in 0..2 {
                    n += 1;
                    env.sim
                        .agent_say(&chat.contact_id, &format!("late {n}"))
                        .unwrap();
                }
            }
        },
    )
    .await;
    let seen = pages.concat();
    assert_eq!(
        seen.len(),
        seen.iter().collect::<HashSet<_>>().len(),
        "no repeats"
    );
    assert_eq!(seen, all_ids(&env, &chat), "nothing skipped");
    assert_eq!(seen.len(), before.len() + 6);

    // BACKWARD walks into the past: newer arrivals do not shift its pages.
    let snapshot = all_ids(&env, &chat);
    let pages = page_all(
        &env,
        &chat,
        ScanDirection::Backward,
        SortKey::Descending,
        5,
        |_| {
            env.sim.agent_say(&chat.contact_id, "newer").unwrap();
        },
    )
    .await;
    let mut seen = pages.concat();
    seen.reverse();
    assert_eq!(seen, snapshot);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn a_persistent_chat_reads_the_transcripts_of_the_contacts_it_continues() {
    let env = start(quiet_config()).await;
    // Continues `source`: StartChatContact with PersistentChat, then a connection token.
    let continue_from = |source: String| {
        let env = &env;
        async move {
            let started = env
                .start_chat_request()
                .persistent_chat(
                    aws_sdk_connect::types::PersistentChat::builder()
                        .rehydration_type(aws_sdk_connect::types::RehydrationType::FromSegment)
                        .source_contact_id(source)
                        .build(),
                )
                .send()
                .await
                .expect("a persistent chat");
            let (token, _) = env
                .connect_participant(started.participant_token().unwrap())
                .await;
            (started.contact_id().unwrap().to_owned(), token)
        }
    };
    let first = env.chat().await;
    env.say(&first, "from the first contact").await;
    assert!(env.sim.end_chat(&first.contact_id));
    let (second, second_token) = continue_from(first.contact_id.clone()).await;
    send_text(&env.participant, &second_token, "from the second contact")
        .await
        .unwrap();
    assert!(env.sim.end_chat(&second));
    let (third, token) = continue_from(second.clone()).await;
    let unrelated = env.chat().await;

    let texts = |contact_id: Option<String>| {
        let env = &env;
        let token = token.clone();
        async move {
            let page = env
                .participant
                .get_transcript()
                .connection_token(token)
                .set_contact_id(contact_id)
                .max_results(100)
                .send()
                .await?;
            Ok::<_, aws_sdk_connectparticipant::error::SdkError<_>>(
                page.transcript()
                    .iter()
                    .filter_map(|i| i.content().map(str::to_owned))
                    .collect::<Vec<_>>(),
            )
        }
    };
    // Every contact of the chain, two links back included.
    let past = texts(Some(first.contact_id.clone())).await.unwrap();
    assert!(
        past.iter().any(|t| t == "from the first contact"),
        "{past:?}"
    );
    let past = texts(Some(second.clone())).await.unwrap();
    assert!(
        past.iter().any(|t| t == "from the second contact"),
        "{past:?}"
    );
    assert!(!past.iter().any(|t| t == "from the first contact"));
    // Its own transcript by default and by its own id.
    for own in [None, Some(third)] {
        let own = texts(own).await.unwrap();
        assert!(!own.iter().any(|t| t.starts_with("from the")), "{own:?}");
    }
    // Not a contact outside the chain.
    let e = texts(Some(unrelated.contact_id)).await.unwrap_err();
    assert!(e.into_service_error().is_access_denied_exception());
    env.sim.shutdown().await;
}
