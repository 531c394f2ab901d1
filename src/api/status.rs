//! The one place where the gateway's errors become gRPC statuses. Callers get the right code
//! and a message they can act on; upstream error text and secrets stay inside (they go to
//! debug logs only). Throttling and unavailability carry a `google.rpc.RetryInfo` hint, and
//! invalid fields a `google.rpc.BadRequest`.

use crate::connect::UpstreamError;
use crate::session::SessionError;
use crate::store::StoreError;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A delay hint for callers that were throttled or found Connect unavailable.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    #[error("no chat with this contact id is known to the gateway")]
    ChatNotFound,
    #[error("the chat token does not grant this caller access to this chat")]
    PermissionDenied,
    #[error("past_contact_id is not a contact this chat continues")]
    NotInChain,
    #[error("this caller may not add bots to chats (the operator allows operators, the callers it lists and callers with the bot role)")]
    BotsNotAllowed,
    #[error("{0} is for the customer's side of a chat, not a bot's")]
    CustomerOnly(&'static str),
    #[error("the call's deadline passed before Amazon Connect answered")]
    DeadlineExceeded,
    #[error("this caller already holds {0} live chats, its limit")]
    TooManyChatsForCaller(usize),
    #[error("this caller is over its request rate; retry after the delay")]
    CallerRate(Duration),
    #[error("no approved attachment with this id is in the chat")]
    AttachmentNotFound,
    #[error("{0}: Amazon Connect knows no such resource")]
    NotFound(&'static str),
    #[error("Amazon Connect rejected this attachment when it scanned it")]
    AttachmentRejected,
    #[error("{0}")]
    Cancelled(&'static str),
    #[error("no chunk of the file arrived for {0:?}")]
    ChunkTimeout(Duration),
    #[error("the attachment storage failed the transfer; retry after the delay")]
    Storage,
    #[error(
        "the gateway is at its limit of {0} attachment transfers at once; retry after the delay"
    )]
    TooManyTransfers(usize),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The resource `field` names does not exist.
    pub fn not_found(field: &'static str) -> Self {
        Self::NotFound(field)
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

fn upstream_status(e: &UpstreamError) -> Status {
    match e {
        UpstreamError::Throttled { retry_after } => Status::with_error_details(
            Code::ResourceExhausted,
            "Amazon Connect is throttling this chat's calls; retry after the delay",
            ErrorDetails::with_retry_info(Some(retry_after.unwrap_or(DEFAULT_RETRY_DELAY))),
        ),
        UpstreamError::QuotaExceeded => Status::resource_exhausted(
            "an Amazon Connect service quota was exceeded (attachments or concurrent chats)",
        ),
        UpstreamError::ConcurrentChatsLimit => Status::resource_exhausted(
            "the Amazon Connect instance is at its limit of concurrent active chats; \
             start the chat again once others have ended",
        ),
        UpstreamError::Invalid { what } => {
            Status::invalid_argument(format!("Amazon Connect rejected the request ({what})"))
        }
        UpstreamError::AccessDenied => Status::failed_precondition(
            "the chat has ended or its Connect participant was disconnected",
        ),
        UpstreamError::NotFound => {
            Status::not_found("Amazon Connect did not find the instance, contact flow or contact")
        }
        UpstreamError::Conflict => {
            Status::aborted("Amazon Connect reported a conflicting request; retry it")
        }
        UpstreamError::Unavailable | UpstreamError::Incomplete(_) => Status::with_error_details(
            Code::Unavailable,
            "Amazon Connect is unavailable or unreachable; retry after the delay",
            ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_DELAY)),
        ),
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match &e {
            ApiError::InvalidArgument { field, message } => Status::with_error_details(
                Code::InvalidArgument,
                e.to_string(),
                ErrorDetails::with_bad_request_violation(*field, message.clone()),
            ),
            ApiError::ChatNotFound => Status::not_found(e.to_string()),
            ApiError::PermissionDenied | ApiError::NotInChain | ApiError::BotsNotAllowed => {
                Status::permission_denied(e.to_string())
            }
            ApiError::DeadlineExceeded | ApiError::ChunkTimeout(_) => {
                Status::deadline_exceeded(e.to_string())
            }
            ApiError::AttachmentNotFound | ApiError::NotFound(_) => {
                Status::not_found(e.to_string())
            }
            ApiError::AttachmentRejected | ApiError::CustomerOnly(_) => {
                Status::failed_precondition(e.to_string())
            }
            ApiError::Cancelled(_) => Status::cancelled(e.to_string()),
            ApiError::Storage | ApiError::TooManyTransfers(_) => Status::with_error_details(
                if matches!(e, ApiError::Storage) {
                    Code::Unavailable
                } else {
                    Code::ResourceExhausted
                },
                e.to_string(),
                ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_DELAY)),
            ),
            ApiError::TooManyChatsForCaller(_) => Status::resource_exhausted(e.to_string()),
            ApiError::CallerRate(wait) => Status::with_error_details(
                Code::ResourceExhausted,
                e.to_string(),
                ErrorDetails::with_retry_info(Some(*wait)),
            ),
            ApiError::Session(s) => match s {
                SessionError::TooManySessions(_) | SessionError::TooManySubscribers(_) => {
                    Status::resource_exhausted(s.to_string())
                }
                SessionError::Ended => Status::failed_precondition("the chat has ended"),
                SessionError::BadCursor => Status::out_of_range(
                    "the resume cursor is older than the history this gateway keeps; \
                     read what was missed with GetTranscript and subscribe without a cursor",
                ),
                SessionError::NotReady | SessionError::ShuttingDown => Status::with_error_details(
                    Code::Unavailable,
                    s.to_string(),
                    ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_DELAY)),
                ),
                SessionError::Upstream(u) => upstream_status(u),
            },
            ApiError::Upstream(u) => upstream_status(u),
            ApiError::Store(StoreError::Full(_)) => Status::resource_exhausted(e.to_string()),
            ApiError::Store(StoreError::Unavailable(_)) => Status::with_error_details(
                tonic::Code::Unavailable,
                "the session store is unavailable; retry after the delay",
                ErrorDetails::with_retry_info(Some(DEFAULT_RETRY_DELAY)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_concurrent_chats_quota_is_not_a_retry_soon() {
        let status = Status::from(ApiError::Upstream(UpstreamError::ConcurrentChatsLimit));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("concurrent active chats"));
        assert!(status.get_details_retry_info().is_none());
        let throttled = Status::from(ApiError::Upstream(UpstreamError::Throttled {
            retry_after: None,
        }));
        assert_eq!(throttled.code(), Code::ResourceExhausted);
        assert!(throttled.get_details_retry_info().is_some());
    }
}
