//! Attachments upstream: StartAttachmentUpload, the upload to the URL it returns (a
//! pre-signed PUT with its `HeadersToInclude`), CompleteAttachmentUpload, and GetAttachment
//! with the download from its signed URL. Bytes stream through; no file is held whole.

use super::client::{parse_system_time, Connect, Timed};
use super::error::UpstreamError;
use crate::security::secret::Secret;
use bytes::Bytes;
use futures::Stream;
use std::time::SystemTime;

/// The largest attachment Connect accepts (20 MB).
pub const MAX_ATTACHMENT_BYTES: u64 = 20 * 1024 * 1024;

/// The MIME types Connect accepts for chat attachments (csv, doc, docx, heic, jfif, jpeg/jpg,
/// mov, mp4, pdf, png, ppt, pptx, rtf, txt, wav, xls, xlsx).
pub const ATTACHMENT_TYPES: [&str; 19] = [
    "text/csv",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "image/heic",
    "image/jpeg",
    "image/pjpeg",
    "video/quicktime",
    "video/mp4",
    "application/pdf",
    "image/png",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/rtf",
    "text/rtf",
    "text/plain",
    "audio/wav",
    "audio/x-wav",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
];

/// Where an attachment's bytes go: the upload URL and the headers it must be sent with.
#[derive(Debug)]
pub struct UploadTicket {
    pub attachment_id: String,
    /// Pre-signed: whoever holds it may upload, so it is kept like a token.
    pub url: Secret,
    pub headers: Vec<(String, String)>,
}

/// Where an attachment can be downloaded from.
#[derive(Debug)]
pub struct DownloadTicket {
    /// Signed: whoever holds it may download until `expiry`.
    pub url: Secret,
    pub expiry: Option<SystemTime>,
    pub size: u64,
}

/// Why an upload or download of the bytes failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The caller's side: its stream of chunks broke off or was refused.
    #[error("the file's bytes stopped before their end")]
    Source,
    /// The storage refused or failed the transfer (its HTTP status, 0 when none came).
    #[error("the attachment storage failed the transfer (HTTP {0})")]
    Storage(u16),
}

impl Connect {
    pub async fn start_attachment_upload(
        &self,
        token: &Secret,
        name: &str,
        content_type: &str,
        size: u64,
        client_token: &str,
    ) -> Result<UploadTicket, UpstreamError> {
        let out = self
            .participant()
            .start_attachment_upload()
            .connection_token(token.expose())
            .attachment_name(name)
            .content_type(content_type)
            .attachment_size_in_bytes(i64::try_from(size).unwrap_or(i64::MAX))
            .client_token(client_token)
            .send()
            .timed(self.metrics(), "StartAttachmentUpload")
            .await?;
        let meta = out
            .upload_metadata
            .ok_or(UpstreamError::Incomplete("UploadMetadata"))?;
        Ok(UploadTicket {
            attachment_id: out
                .attachment_id
                .ok_or(UpstreamError::Incomplete("AttachmentId"))?,
            url: Secret::new(meta.url.ok_or(UpstreamError::Incomplete("Url"))?),
            headers: meta
                .headers_to_include
                .unwrap_or_default()
                .into_iter()
                .collect(),
        })
    }

    pub async fn complete_attachment_upload(
        &self,
        token: &Secret,
        attachment_id: &str,
        client_token: &str,
    ) -> Result<(), UpstreamError> {
        self.participant()
            .complete_attachment_upload()
            .connection_token(token.expose())
            .attachment_ids(attachment_id)
            .client_token(client_token)
            .send()
            .timed(self.metrics(), "CompleteAttachmentUpload")
            .await?;
        Ok(())
    }

    pub async fn get_attachment(
        &self,
        token: &Secret,
        attachment_id: &str,
        url_expiry_seconds: i32,
    ) -> Result<DownloadTicket, UpstreamError> {
        let out = self
            .participant()
            .get_attachment()
            .connection_token(token.expose())
            .attachment_id(attachment_id)
            .url_expiry_in_seconds(url_expiry_seconds)
            .send()
            .timed(self.metrics(), "GetAttachment")
            .await?;
        Ok(DownloadTicket {
            url: Secret::new(out.url.ok_or(UpstreamError::Incomplete("Url"))?),
            expiry: out.url_expiry.as_deref().and_then(parse_system_time),
            size: u64::try_from(out.attachment_size_in_bytes).unwrap_or(0),
        })
    }

    /// PUTs `size` bytes from `body` to the ticket's URL. The body is streamed with a
    /// Content-Length, as a pre-signed storage URL requires.
    pub async fn upload_bytes<S>(
        &self,
        ticket: &UploadTicket,
        size: u64,
        body: S,
    ) -> Result<(), TransferError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let mut req = self
            .http()
            .put(ticket.url.expose())
            .header(http::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        for (k, v) in &ticket.headers {
            req = req.header(k, v);
        }
        let started = std::time::Instant::now();
        let result = match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(TransferError::Storage(r.status().as_u16())),
            // A body error is the caller's stream (reqwest reports it as a request error).
            Err(e) if e.is_body() || e.is_request() => Err(TransferError::Source),
            Err(e) => {
                tracing::debug!(error = %e.without_url(), "attachment upload failed");
                Err(TransferError::Storage(0))
            }
        };
        self.metrics().observe_upstream(
            "AttachmentUpload",
            started.elapsed(),
            result.as_ref().err().map(|e| match e {
                TransferError::Source => "Source",
                TransferError::Storage(_) => "Storage",
            }),
        );
        result
    }

    /// GETs the attachment at the ticket's URL, as a stream of chunks.
    pub async fn download_bytes(
        &self,
        ticket: &DownloadTicket,
    ) -> Result<impl Stream<Item = Result<Bytes, TransferError>> + use<>, TransferError> {
        use futures::TryStreamExt;
        let response = self
            .http()
            .get(ticket.url.expose())
            .send()
            .await
            .map_err(|e| {
                tracing::debug!(error = %e.without_url(), "attachment download failed");
                TransferError::Storage(0)
            })?;
        if !response.status().is_success() {
            return Err(TransferError::Storage(response.status().as_u16()));
        }
        Ok(response.bytes_stream().map_err(|e| {
            tracing::debug!(error = %e.without_url(), "attachment download broke off");
            TransferError::Storage(0)
        }))
    }
}
