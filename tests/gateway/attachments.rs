//! Attachments through the gateway: SendAttachment streams a file to Connect's upload URL and
//! completes it, Subscribe shows it with its scan status, GetAttachment streams it back or
//! hands out its signed URL; every bad upload is refused with its code and leaves no
//! completed attachment behind.

use crate::support::gateway::*;
use crate::support::http;
use connect_chat_gateway::pb::{self, chat_event::Event, send_attachment_request::Part};
use connect_chat_gateway::sim::Operation;
use tonic::Code;

const CHUNK: usize = 64 * 1024;

fn start(
    chat: &pb::StartChatResponse,
    name: &str,
    content_type: &str,
    size: u64,
) -> pb::SendAttachmentRequest {
    pb::SendAttachmentRequest {
        part: Some(Part::Start(pb::AttachmentStart {
            chat: Some(chat_ref(chat)),
            name: name.into(),
            content_type: content_type.into(),
            size,
            client_token: String::new(),
        })),
    }
}

fn chunks(data: &[u8]) -> Vec<pb::SendAttachmentRequest> {
    data.chunks(CHUNK)
        .map(|c| pb::SendAttachmentRequest {
            part: Some(Part::Chunk(c.to_vec().into())),
        })
        .collect()
}

async fn send(
    h: &mut Harness,
    messages: Vec<pb::SendAttachmentRequest>,
) -> Result<String, tonic::Status> {
    h.client
        .send_attachment(futures::stream::iter(messages))
        .await
        .map(|r| r.into_inner().attachment_id)
}

async fn download(
    h: &mut Harness,
    chat: &pb::StartChatResponse,
    id: &str,
) -> Result<(u64, Vec<u8>), tonic::Status> {
    let mut stream = h
        .client
        .get_attachment(pb::GetAttachmentRequest {
            chat: Some(chat_ref(chat)),
            attachment_id: id.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let head = stream.message().await?.expect("a first message");
    let mut data = Vec::new();
    while let Some(m) = stream.message().await? {
        assert!(m.chunk.len() <= 64 * 1024, "chunks stay small");
        data.extend_from_slice(&m.chunk);
    }
    Ok((head.size, data))
}

/// The statuses the stream shows for attachment `id`, read until one is final.
async fn statuses(stream: &mut tonic::Streaming<pb::ChatEvent>, id: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.last().is_none_or(|s: &String| s == "IN_PROGRESS") {
        if let Some(Event::Attachment(a)) = next(stream).await.expect("the stream goes on").event {
            if a.attachment_id == id {
                seen.push(a.status);
            }
        }
    }
    seen
}

#[tokio::test]
async fn a_file_goes_up_in_chunks_and_comes_back_the_same() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut events = h.subscribe(&chat).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut messages = vec![start(
        &chat,
        "scan.pdf",
        "application/pdf",
        data.len() as u64,
    )];
    messages.extend(chunks(&data));
    let id = send(&mut h, messages).await.expect("SendAttachment");
    assert_eq!(
        statuses(&mut events, &id).await,
        ["IN_PROGRESS", "APPROVED"]
    );

    let (size, back) = download(&mut h, &chat, &id).await.expect("GetAttachment");
    assert_eq!(size, data.len() as u64);
    assert!(back == data, "the downloaded bytes are the uploaded ones");

    // Or a signed URL, fetched without any credential.
    let mut urls = h
        .client
        .get_attachment(pb::GetAttachmentRequest {
            chat: Some(chat_ref(&chat)),
            attachment_id: id.clone(),
            url_only: true,
            url_expiry_seconds: 60,
        })
        .await
        .expect("GetAttachment url_only")
        .into_inner();
    let head = urls.message().await.unwrap().expect("one message");
    assert!(
        urls.message().await.unwrap().is_none(),
        "nothing follows a URL"
    );
    assert!(head.url_expiry.is_some() && head.chunk.is_empty());
    let url = url::Url::parse(&head.url).expect("a URL");
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
        .parse()
        .unwrap();
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let (status, _, body) = http(addr, "GET", &path, &[], b"").await;
    assert_eq!(status, 200);
    assert!(body == data);
    h.stop().await;
}

#[tokio::test]
async fn a_file_the_scan_rejects_shows_rejected_and_cannot_be_downloaded() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let mut events = h.subscribe(&chat).await;
    let data = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*".to_vec();
    let mut messages = vec![start(&chat, "eicar.txt", "text/plain", data.len() as u64)];
    messages.extend(chunks(&data));
    let id = send(&mut h, messages).await.expect("SendAttachment");
    assert_eq!(
        statuses(&mut events, &id).await,
        ["IN_PROGRESS", "REJECTED"]
    );
    let e = download(&mut h, &chat, &id).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    h.stop().await;
}

#[tokio::test]
async fn bad_files_are_refused_before_any_upload() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    for (name, content_type, size, field) in [
        ("a.gif", "image/gif", 10, "start.content_type"),
        (
            "big.pdf",
            "application/pdf",
            20 * 1024 * 1024 + 1,
            "start.size",
        ),
        ("empty.txt", "text/plain", 0, "start.size"),
        ("", "text/plain", 10, "start.name"),
    ] {
        let e = send(&mut h, vec![start(&chat, name, content_type, size)])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        assert!(e.message().contains(field), "{name}: {}", e.message());
    }
    let chunk_first = chunks(b"hello");
    let e = send(&mut h, chunk_first).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        h.sim.calls(Operation::StartAttachmentUpload),
        0,
        "nothing reached Connect"
    );

    // A chat token of another chat gives no right to this one.
    let other = h.start_chat("Eve").await;
    let mut stolen = start(&chat, "a.txt", "text/plain", 5);
    if let Some(Part::Start(s)) = &mut stolen.part {
        s.chat.as_mut().unwrap().chat_token = other.chat_token.clone();
    }
    let e = send(&mut h, vec![stolen]).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = download(&mut h, &chat, "no-such-attachment")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_size_mismatch_or_a_broken_stream_completes_nothing() {
    let mut h = Harness::start().await;
    let chat = h.start_chat("Ada").await;
    let data = vec![7u8; 100_000];

    let mut short = vec![start(&chat, "short.txt", "text/plain", 200_000)];
    short.extend(chunks(&data));
    let e = send(&mut h, short).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("100000"), "{}", e.message());

    let mut long = vec![start(&chat, "long.txt", "text/plain", 50_000)];
    long.extend(chunks(&data));
    let e = send(&mut h, long).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let twice = vec![
        start(&chat, "a.txt", "text/plain", 5),
        start(&chat, "a.txt", "text/plain", 5),
    ];
    let e = send(&mut h, twice).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A caller that goes away halfway: the upload is abandoned, never completed.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(start(&chat, "half.txt", "text/plain", 200_000))
        .await
        .unwrap();
    for m in chunks(&data) {
        tx.send(m).await.unwrap();
    }
    let mut client = h.client.clone();
    let call = tokio::spawn(async move {
        client
            .send_attachment(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    wait_for("the half upload to start", || {
        h.sim.calls(Operation::StartAttachmentUpload) >= 4
    })
    .await;
    call.abort();
    drop(tx);
    let _ = call.await;

    assert_eq!(h.sim.calls(Operation::StartAttachmentUpload), 4);
    // A message after the attempts: once it is in the transcript, so would an attachment be.
    let sent = h.send(&chat, "after the uploads").await;
    wait_for("the message in the transcript", || {
        transcript_has(&h, &chat.contact_id, &sent.message_id)
    })
    .await;
    let transcript = h.sim.transcript(&chat.contact_id).unwrap();
    assert!(
        transcript.iter().all(|i| i["Type"] != "ATTACHMENT"),
        "no attachment was completed: {transcript:?}"
    );
    assert_eq!(h.sim.calls(Operation::CompleteAttachmentUpload), 0);
    h.stop().await;
}

fn transcript_has(h: &Harness, contact_id: &str, id: &str) -> bool {
    h.sim
        .transcript(contact_id)
        .is_some_and(|t| t.iter().any(|i| i["Id"] == id))
}
