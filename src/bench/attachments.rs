//! The attachment round: one file of `attachment_mb` MB sent through SendAttachment and read
//! back through GetAttachment, with the gateway's peak resident memory during both measured
//! against its resident memory before (Linux's peak counter, reset just before the transfer).

use super::procs;
use super::report::AttachmentReport;
use super::{BenchConfig, BenchError, Result, Round};
use crate::pb::{self, chat_gateway_client::ChatGatewayClient, send_attachment_request::Part};
use futures::StreamExt;
use std::time::Instant;

/// Chunks the bench sends (the gateway's default message limit is 256 KiB).
const CHUNK: usize = 64 * 1024;

/// Peak resident memory since the last reset (`VmHWM`), bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak counter to the current resident memory (`clear_refs` 5).
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The file's byte at `i`: varied, so that nothing compresses it or fakes equality.
fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

pub async fn run(cfg: &BenchConfig) -> Result<AttachmentReport> {
    let size = cfg.attachment_mb * 1024 * 1024;
    let round = Round::start(cfg, 0, false).await?;
    let mut client: ChatGatewayClient<tonic::transport::Channel> = round.pool.client(0);
    let chat = client
        .start_chat(pb::StartChatRequest {
            display_name: "bench attachments".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| BenchError(format!("StartChat: {e}")))?
        .into_inner();
    let chat_ref = pb::ChatRef {
        contact_id: chat.contact_id.clone(),
        chat_token: chat.chat_token.clone(),
        ..Default::default()
    };
    // A small attachment first, so that connection pools and buffers exist before the
    // reading (they are not the file's cost).
    let warm = send(&mut client, &chat_ref, 1024).await?;
    receive(&mut client, &chat_ref, &warm).await?;
    super::settle(cfg).await;
    let pid = round.gateway.pid;
    let rss_before = procs::rss_bytes(pid).unwrap_or(0);
    let peak_reset = reset_peak(pid);

    let t0 = Instant::now();
    let id = send(&mut client, &chat_ref, size).await?;
    let upload_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let received = receive(&mut client, &chat_ref, &id).await?;
    let download_secs = t1.elapsed().as_secs_f64();
    let peak = peak_rss(pid).unwrap_or(0);
    let rss_after = procs::rss_bytes(pid).unwrap_or(0);
    round.stop().await;
    if received != size {
        return Err(BenchError(format!(
            "GetAttachment returned {received} bytes of {size}"
        )));
    }
    let mb = size as f64 / (1024.0 * 1024.0);
    Ok(AttachmentReport {
        bytes: size as u64,
        upload_mb_per_s: mb / upload_secs.max(1e-9),
        download_mb_per_s: mb / download_secs.max(1e-9),
        gateway_rss_before: rss_before,
        gateway_rss_peak: peak,
        gateway_rss_after: rss_after,
        peak_growth_mib: if peak_reset {
            Some((peak as f64 - rss_before as f64) / (1024.0 * 1024.0))
        } else {
            None
        },
    })
}

async fn send(
    client: &mut ChatGatewayClient<tonic::transport::Channel>,
    chat: &pb::ChatRef,
    size: usize,
) -> Result<String> {
    let start = pb::SendAttachmentRequest {
        part: Some(Part::Start(pb::AttachmentStart {
            chat: Some(chat.clone()),
            name: "bench.pdf".into(),
            content_type: "application/pdf".into(),
            size: size as u64,
            client_token: String::new(),
        })),
    };
    // Chunks are made as the gateway asks for them: the bench holds no whole file either.
    let chunks = futures::stream::iter((0..size).step_by(CHUNK)).map(move |at| {
        let end = (at + CHUNK).min(size);
        pb::SendAttachmentRequest {
            part: Some(Part::Chunk(
                (at..end).map(byte_at).collect::<Vec<u8>>().into(),
            )),
        }
    });
    let messages = futures::stream::iter([start]).chain(chunks);
    client
        .send_attachment(messages)
        .await
        .map(|r| r.into_inner().attachment_id)
        .map_err(|e| BenchError(format!("SendAttachment: {e}")))
}

/// Reads the attachment back, checking every byte; answers how many arrived.
async fn receive(
    client: &mut ChatGatewayClient<tonic::transport::Channel>,
    chat: &pb::ChatRef,
    id: &str,
) -> Result<usize> {
    let mut stream = client
        .get_attachment(pb::GetAttachmentRequest {
            chat: Some(chat.clone()),
            attachment_id: id.into(),
            ..Default::default()
        })
        .await
        .map_err(|e| BenchError(format!("GetAttachment: {e}")))?
        .into_inner();
    let mut at = 0usize;
    while let Some(m) = stream
        .message()
        .await
        .map_err(|e| BenchError(format!("GetAttachment stream: {e}")))?
    {
        for (k, b) in m.chunk.iter().enumerate() {
            if *b != byte_at(at + k) {
                return Err(BenchError(format!("byte {} differs", at + k)));
            }
        }
        at += m.chunk.len();
    }
    Ok(at)
}
