//! SendAttachment and GetAttachment: files stream through the gateway in chunks, with a
//! bounded number of chunks in flight per transfer and a bounded number of transfers at once;
//! no file is ever held whole.

use super::status::ApiError;
use super::validate::check_len;
use super::{deadline, new_client_token, Access, Gateway};
use crate::connect::attachment::{TransferError, ATTACHMENT_TYPES, MAX_ATTACHMENT_BYTES};
use crate::pb;
use crate::pb::chat_event::Event;
use crate::pb::send_attachment_request::Part;
use crate::security::auth::Principal;
use crate::session::Session;
use bytes::Bytes;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Largest chunk a GetAttachment stream sends.
const DOWNLOAD_CHUNK: usize = 64 * 1024;
/// Connect's longest download URL life, and the default.
const MAX_URL_EXPIRY_SECS: u32 = 300;
const MIN_URL_EXPIRY_SECS: u32 = 5;

/// How attachment transfers are bounded.
#[derive(Clone, Debug)]
pub struct TransferLimits {
    /// Chunks in flight per transfer (between the caller and the storage).
    pub buffer_chunks: usize,
    /// Transfers (uploads and downloads) at once in this process.
    pub slots: Arc<Semaphore>,
    pub max_transfers: usize,
    /// An upload whose next chunk does not come within this fails.
    pub chunk_timeout: Duration,
}

impl TransferLimits {
    pub fn new(
        buffer_bytes: usize,
        max_message_bytes: usize,
        max_transfers: usize,
        chunk_timeout: Duration,
    ) -> Self {
        Self {
            buffer_chunks: (buffer_bytes / max_message_bytes.max(1)).max(1),
            slots: Arc::new(Semaphore::new(max_transfers)),
            max_transfers,
            chunk_timeout,
        }
    }

    fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyTransfers(self.max_transfers))
    }
}

/// Checks an attachment's description against Connect's limits, before any upload.
fn validate_start(start: &pb::AttachmentStart) -> Result<(), ApiError> {
    check_len("start.name", &start.name, 1, 256)?;
    if start.content_type.is_empty() {
        return Err(ApiError::invalid("start.content_type", "is required"));
    }
    if !ATTACHMENT_TYPES.contains(&start.content_type.as_str()) {
        return Err(ApiError::invalid(
            "start.content_type",
            "is not a type Amazon Connect accepts for attachments",
        ));
    }
    if start.size == 0 {
        return Err(ApiError::invalid("start.size", "must be at least 1 byte"));
    }
    if start.size > MAX_ATTACHMENT_BYTES {
        return Err(ApiError::invalid(
            "start.size",
            format!("is over Amazon Connect's limit of {MAX_ATTACHMENT_BYTES} bytes"),
        ));
    }
    check_len("start.client_token", &start.client_token, 0, 500)
}

fn transfer_error(e: TransferError) -> ApiError {
    match e {
        TransferError::Source => ApiError::Cancelled("the file's stream broke off"),
        TransferError::Storage(_) => ApiError::Storage,
    }
}

/// The newest status the chat's history shows for an attachment, if it shows one.
fn known_status(session: &Session, attachment_id: &str) -> Option<String> {
    session
        .recent_events(usize::MAX)
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            Some(Event::Attachment(a)) if a.attachment_id == attachment_id => {
                Some(a.status.clone())
            }
            _ => None,
        })
}

/// The upload's next message, waiting at most `wait` for it.
async fn next(
    stream: &mut Streaming<pb::SendAttachmentRequest>,
    wait: Duration,
) -> Result<Option<pb::SendAttachmentRequest>, ApiError> {
    match tokio::time::timeout(wait, stream.message()).await {
        Err(_) => Err(ApiError::ChunkTimeout(wait)),
        Ok(Err(_)) => Err(ApiError::Cancelled("the file's stream broke off")),
        Ok(Ok(m)) => Ok(m),
    }
}

pub type DownloadStream =
    Pin<Box<dyn Stream<Item = Result<pb::GetAttachmentResponse, Status>> + Send + 'static>>;

impl Gateway {
    pub(super) async fn send_attachment_inner(
        &self,
        request: Request<Streaming<pb::SendAttachmentRequest>>,
    ) -> Result<Response<pb::SendAttachmentResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let limits = self.transfers.clone();
        let mut stream = request.into_inner();
        let wait = limits.chunk_timeout;
        let start = match next(&mut stream, wait).await?.and_then(|m| m.part) {
            Some(Part::Start(start)) => start,
            _ => {
                return Err(ApiError::invalid(
                    "start",
                    "the first message must carry the file's start",
                )
                .into())
            }
        };
        validate_start(&start)?;
        let _slot = limits.slot()?;
        let session = self
            .live_session(start.chat.as_ref(), &principal, Access::Act)
            .await?;
        let upstream = self.sessions.upstream();
        let client_token = if start.client_token.is_empty() {
            new_client_token()
        } else {
            start.client_token.clone()
        };
        let size = start.size;
        let ticket = self
            .with_token(&session, deadline, |t| {
                let (name, ct, token) = (&start.name, &start.content_type, &client_token);
                async move {
                    upstream
                        .start_attachment_upload(&t, name, ct, size, token)
                        .await
                }
            })
            .await?;

        // The caller's chunks go to the storage through a bounded channel: a slow storage
        // holds the caller back (HTTP/2 flow control) instead of filling memory.
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(limits.buffer_chunks);
        let upload = upstream.upload_bytes(&ticket, size, ReceiverStream::new(rx));
        let pump = async move {
            let abort = |tx: mpsc::Sender<Result<Bytes, std::io::Error>>| async move {
                let _ = tx
                    .send(Err(std::io::Error::other("the upload was abandoned")))
                    .await;
            };
            let mut received: u64 = 0;
            loop {
                let message = match next(&mut stream, wait).await {
                    Ok(m) => m,
                    Err(e) => {
                        abort(tx).await;
                        return Err(e);
                    }
                };
                match message.map(|m| m.part) {
                    None => {
                        if received != size {
                            abort(tx).await;
                            return Err(ApiError::invalid(
                                "chunk",
                                format!(
                                    "the chunks carried {received} bytes, not the {size} announced"
                                ),
                            ));
                        }
                        return Ok(());
                    }
                    Some(Some(Part::Chunk(bytes))) => {
                        received = received.saturating_add(bytes.len() as u64);
                        if received > size {
                            abort(tx).await;
                            return Err(ApiError::invalid(
                                "chunk",
                                format!("the chunks carry more than the {size} bytes announced"),
                            ));
                        }
                        if !bytes.is_empty() && tx.send(Ok(bytes)).await.is_err() {
                            // The upload ended first; its own result says why.
                            return Ok(());
                        }
                    }
                    Some(_) => {
                        abort(tx).await;
                        return Err(ApiError::invalid(
                            "start",
                            "only the first message carries the file's start",
                        ));
                    }
                }
            }
        };
        let (pumped, uploaded) = tokio::join!(pump, upload);
        pumped?;
        uploaded.map_err(transfer_error)?;
        let attachment_id = ticket.attachment_id.clone();
        self.with_token(&session, deadline, |t| {
            let (id, token) = (&attachment_id, &client_token);
            async move { upstream.complete_attachment_upload(&t, id, token).await }
        })
        .await?;
        tracing::info!(contact_id = %session.key(), attachment_id = %attachment_id, size, "attachment sent");
        Ok(Response::new(pb::SendAttachmentResponse { attachment_id }))
    }

    pub(super) async fn get_attachment_inner(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        check_len("attachment_id", &req.attachment_id, 1, 256)?;
        let expiry = match req.url_expiry_seconds {
            0 => MAX_URL_EXPIRY_SECS,
            s if (MIN_URL_EXPIRY_SECS..=MAX_URL_EXPIRY_SECS).contains(&s) => s,
            _ => {
                return Err(ApiError::invalid(
                    "url_expiry_seconds",
                    "must be 0 or 5 to 300 seconds",
                )
                .into())
            }
        };
        let session = self
            .live_session(req.chat.as_ref(), &principal, Access::Act)
            .await?;
        if known_status(&session, &req.attachment_id).as_deref() == Some("REJECTED") {
            return Err(ApiError::AttachmentRejected.into());
        }
        let slot = if req.url_only {
            None
        } else {
            Some(self.transfers.slot()?)
        };
        let upstream = self.sessions.upstream().clone();
        let id = req.attachment_id.clone();
        let ticket = self
            .with_token_or(
                &session,
                deadline,
                |t| {
                    let (upstream, id) = (&upstream, &id);
                    async move {
                        upstream
                            .get_attachment(&t, id, i32::try_from(expiry).unwrap_or(300))
                            .await
                    }
                },
                || ApiError::AttachmentNotFound,
            )
            .await
            .map_err(|e| match e {
                // The id is the one argument Connect can find wrong.
                ApiError::Upstream(crate::connect::UpstreamError::Invalid { .. }) => {
                    ApiError::AttachmentNotFound
                }
                other => other,
            })?;
        let head = pb::GetAttachmentResponse {
            size: ticket.size,
            ..Default::default()
        };
        if req.url_only {
            let head = pb::GetAttachmentResponse {
                url: ticket.url.expose().to_owned(),
                url_expiry: ticket.expiry.map(prost_types::Timestamp::from),
                ..head
            };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(head)]))));
        }
        let body = upstream
            .download_bytes(&ticket)
            .await
            .map_err(transfer_error)?;
        let (tx, rx) = mpsc::channel(self.transfers.buffer_chunks);
        tokio::spawn(async move {
            use futures::StreamExt;
            let _slot = slot;
            if tx.send(Ok(head)).await.is_err() {
                return;
            }
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                let mut chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(transfer_error(e)))).await;
                        return;
                    }
                };
                while !chunk.is_empty() {
                    let piece = chunk.split_to(chunk.len().min(DOWNLOAD_CHUNK));
                    let message = pb::GetAttachmentResponse {
                        chunk: piece,
                        ..Default::default()
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        // The caller went away; dropping the body ends the download.
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
