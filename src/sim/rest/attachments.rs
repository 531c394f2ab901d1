//! The attachment operations: StartAttachmentUpload (an upload URL, bounded per chat and in
//! total), CompleteAttachmentUpload (the ATTACHMENT item) and GetAttachment (a download URL).
//! The URLs themselves are served by [`crate::sim::files`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

use super::wire::{bearer, check_len, parse, required, run, ApiError};
use crate::connect::attachment::{ATTACHMENT_TYPES, MAX_ATTACHMENT_BYTES};
use crate::sim::files::attachment_url;
use crate::sim::model::chat::Attachment;
use crate::sim::model::operation::Operation;
use crate::sim::model::registry::Shared;
use crate::sim::model::support::new_token;
use crate::sim::model::time::format_after;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartAttachmentUploadRequest {
    content_type: Option<String>,
    attachment_size_in_bytes: Option<i64>,
    attachment_name: Option<String>,
    client_token: Option<String>,
}

pub(super) async fn start_attachment_upload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::StartAttachmentUpload, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: StartAttachmentUploadRequest = parse(&body, ApiError::validation)?;
        let v = ApiError::validation;
        let ct = required("ContentType", &req.content_type, 1, 255).map_err(v)?;
        let name = required("AttachmentName", &req.attachment_name, 1, 256).map_err(v)?;
        let client_token = required("ClientToken", &req.client_token, 1, 500).map_err(v)?;
        let size = req
            .attachment_size_in_bytes
            .ok_or_else(|| v("AttachmentSizeInBytes is required".into()))?;
        if size < 1 {
            return Err(v("AttachmentSizeInBytes must be at least 1".into()));
        }
        if !ATTACHMENT_TYPES.contains(&ct) {
            return Err(v(format!(
                "ContentType {ct:?} is not a supported attachment type"
            )));
        }
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        if size > MAX_ATTACHMENT_BYTES {
            return Err(ApiError::quota("The attachment is larger than 20 MB"));
        }
        let mut st = chat.lock();
        if st.ended {
            return Err(ApiError::access_denied("The chat has ended"));
        }
        let existing = st.upload_tokens.get(client_token).cloned();
        let attachment_id = match existing.filter(|id| st.attachments.contains_key(id)) {
            Some(id) => id,
            None => {
                if st.attachments.len() >= shared.config.max_attachments_per_chat {
                    return Err(ApiError::quota("Too many attachments in this chat"));
                }
                if !shared.reserve_bytes(size) {
                    return Err(ApiError::quota("Attachment storage is full"));
                }
                let id = uuid::Uuid::new_v4().to_string();
                st.attachments.insert(
                    id.clone(),
                    Attachment {
                        id: id.clone(),
                        name: name.to_owned(),
                        content_type: ct.to_owned(),
                        size,
                        upload_token: new_token(),
                        upload_expires: Instant::now() + shared.config.upload_url_ttl,
                        data: None,
                        completed: false,
                        status: "IN_PROGRESS",
                        downloads: Default::default(),
                    },
                );
                st.upload_tokens.insert(client_token.to_owned(), id.clone());
                id
            }
        };
        let att = st
            .attachments
            .get(&attachment_id)
            .ok_or_else(|| ApiError::validation("Unknown attachment"))?;
        Ok(json!({
            "AttachmentId": att.id,
            "UploadMetadata": {
                "Url": attachment_url(&shared, &chat.contact_id, &att.id, &att.upload_token),
                "UrlExpiry": format_after(att.upload_expires.saturating_duration_since(Instant::now())),
                "HeadersToInclude": { "Content-Type": att.content_type },
            },
        }))
    })
}

/// The antivirus test file's signature: the scan rejects a file containing it (the EICAR
/// test string, harmless, recognised by every scanner).
pub const SCAN_REJECT_PATTERN: &[u8] = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE";

/// The simulated scan's verdict.
fn scan(data: &[u8]) -> &'static str {
    if data
        .windows(SCAN_REJECT_PATTERN.len())
        .any(|w| w == SCAN_REJECT_PATTERN)
    {
        "REJECTED"
    } else {
        "APPROVED"
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CompleteAttachmentUploadRequest {
    attachment_ids: Option<Vec<String>>,
    client_token: Option<String>,
}

pub(super) async fn complete_attachment_upload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::CompleteAttachmentUpload, || {
        let (chat, sender) = shared.authorize_as(bearer(&headers))?;
        let req: CompleteAttachmentUploadRequest = parse(&body, ApiError::validation)?;
        let v = ApiError::validation;
        let ids = req.attachment_ids.unwrap_or_default();
        if ids.len() != 1 {
            return Err(v(
                "AttachmentIds must contain exactly one attachment id".into()
            ));
        }
        let id = &ids[0];
        check_len("AttachmentIds member", id, 1, 256).map_err(v)?;
        required("ClientToken", &req.client_token, 1, 500).map_err(v)?;
        let mut st = chat.lock();
        if st.ended {
            return Err(ApiError::access_denied("The chat has ended"));
        }
        let (name, ct, status) = {
            let att = st
                .attachments
                .get_mut(id)
                .ok_or_else(|| v("AttachmentIds refers to an unknown attachment".into()))?;
            if att.completed {
                return Ok(json!({}));
            }
            if att.data.is_none() {
                return Err(ApiError::conflict("The attachment upload has not finished"));
            }
            att.completed = true;
            if shared.config.scan_attachments {
                att.status = scan(att.data.as_deref().unwrap_or_default());
            } else {
                att.status = "APPROVED";
            }
            (att.name.clone(), att.content_type.clone(), att.status)
        };
        let attachment_item = |status: &str| {
            let mut item = chat.item("ATTACHMENT", &ct, None, Some(&sender));
            item.insert(
                "Attachments".into(),
                json!([{ "ContentType": ct, "AttachmentId": id, "AttachmentName": name, "Status": status }]),
            );
            item
        };
        // With scanning, Connect shows the attachment while it is scanned, then sends the
        // verdict as a second item.
        if shared.config.scan_attachments {
            shared.commit(&chat, &mut st, attachment_item("IN_PROGRESS"), true);
        }
        shared.commit(&chat, &mut st, attachment_item(status), true);
        Ok(json!({}))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttachmentRequest {
    attachment_id: Option<String>,
    url_expiry_in_seconds: Option<i64>,
    url_content_disposition: Option<String>,
}

pub(super) async fn get_attachment(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::GetAttachment, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: GetAttachmentRequest = parse(&body, ApiError::validation)?;
        let v = ApiError::validation;
        let id = required("AttachmentId", &req.attachment_id, 1, 256).map_err(v)?;
        let secs = req.url_expiry_in_seconds.unwrap_or(300);
        if !(5..=300).contains(&secs) {
            return Err(v("UrlExpiryInSeconds must be between 5 and 300".into()));
        }
        if let Some(d) = req.url_content_disposition.as_deref() {
            if !matches!(d, "ATTACHMENT" | "INLINE") {
                return Err(v(format!(
                    "UrlContentDisposition must be ATTACHMENT or INLINE, not {d:?}"
                )));
            }
        }
        let ttl = Duration::from_secs(u64::try_from(secs).unwrap_or(300));
        let cap = shared.config.max_tokens_per_participant;
        let mut st = chat.lock();
        let att = st
            .attachments
            .get_mut(id)
            .filter(|a| a.completed && a.status == "APPROVED")
            .ok_or_else(|| {
                v("AttachmentId does not match an approved attachment of this chat".into())
            })?;
        let token = new_token();
        att.downloads.push_back((
            token.clone(),
            Instant::now() + ttl,
            req.url_content_disposition.clone(),
        ));
        while att.downloads.len() > cap {
            att.downloads.pop_front();
        }
        let size = att.data.as_ref().map_or(0, |d| d.len() as u64);
        Ok(json!({
            "Url": attachment_url(&shared, &chat.contact_id, id, &token),
            "UrlExpiry": format_after(ttl),
            "AttachmentSizeInBytes": size,
        }))
    })
}
