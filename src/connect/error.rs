//! Connect's failures, classified by type: each operation's modelled errors (the SDK's enum
//! variants) map to one [`UpstreamError`]; errors the model does not name for an operation
//! (a 429 from a front door, a 5xx) are classified by their HTTP status. Never by a string.

use aws_sdk_connect::operation::create_participant::CreateParticipantError;
use aws_sdk_connect::operation::create_push_notification_registration::CreatePushNotificationRegistrationError;
use aws_sdk_connect::operation::delete_push_notification_registration::DeletePushNotificationRegistrationError;
use aws_sdk_connect::operation::start_chat_contact::StartChatContactError;
use aws_sdk_connectparticipant::operation::cancel_participant_authentication::CancelParticipantAuthenticationError;
use aws_sdk_connectparticipant::operation::complete_attachment_upload::CompleteAttachmentUploadError;
use aws_sdk_connectparticipant::operation::create_participant_connection::CreateParticipantConnectionError;
use aws_sdk_connectparticipant::operation::describe_view::DescribeViewError;
use aws_sdk_connectparticipant::operation::disconnect_participant::DisconnectParticipantError;
use aws_sdk_connectparticipant::operation::get_attachment::GetAttachmentError;
use aws_sdk_connectparticipant::operation::get_authentication_url::GetAuthenticationUrlError;
use aws_sdk_connectparticipant::operation::get_transcript::GetTranscriptError;
use aws_sdk_connectparticipant::operation::send_event::SendEventError;
use aws_sdk_connectparticipant::operation::send_message::SendMessageError;
use aws_sdk_connectparticipant::operation::start_attachment_upload::StartAttachmentUploadError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::time::Duration;

/// An upstream failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// A request-rate limit (ThrottlingException, or HTTP 429).
    #[error("Connect throttled the call")]
    Throttled { retry_after: Option<Duration> },
    /// StartChatContact's LimitExceededException: the instance is at its quota of
    /// concurrent chats. Retrying soon does not help; chats ending does.
    #[error("the Connect instance is at its limit of concurrent active chats")]
    ConcurrentChatsLimit,
    /// The request was refused as invalid; `what` names the modelled error (or the field
    /// the gateway could not build).
    #[error("Connect rejected the request as invalid")]
    Invalid { what: &'static str },
    #[error("Connect denied access (token expired or revoked, or the chat has ended)")]
    AccessDenied,
    #[error("Connect did not find the resource")]
    NotFound,
    #[error("Connect reported a conflict")]
    Conflict,
    /// ServiceQuotaExceededException (attachments).
    #[error("a Connect service quota was exceeded")]
    QuotaExceeded,
    #[error("Connect is unavailable")]
    Unavailable,
    #[error("Connect answered without {0}")]
    Incomplete(&'static str),
}

impl UpstreamError {
    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "Throttled",
            Self::ConcurrentChatsLimit => "ConcurrentChatsLimit",
            Self::Invalid { .. } => "Invalid",
            Self::AccessDenied => "AccessDenied",
            Self::NotFound => "NotFound",
            Self::Conflict => "Conflict",
            Self::QuotaExceeded => "QuotaExceeded",
            Self::Unavailable => "Unavailable",
            Self::Incomplete(_) => "Incomplete",
        }
    }
}

const THROTTLED: UpstreamError = UpstreamError::Throttled { retry_after: None };

/// What an operation's modelled error means to the gateway; `None` for an error its model
/// does not name (`Unhandled`), which is classified by its HTTP status instead.
pub trait Modelled {
    fn modelled(&self) -> Option<UpstreamError>;
}

impl Modelled for StartChatContactError {
    fn modelled(&self) -> Option<UpstreamError> {
        use StartChatContactError as E;
        Some(match self {
            E::InternalServiceException(_) => UpstreamError::Unavailable,
            E::InvalidParameterException(_) => UpstreamError::Invalid {
                what: "InvalidParameterException",
            },
            E::InvalidRequestException(_) => UpstreamError::Invalid {
                what: "InvalidRequestException",
            },
            E::LimitExceededException(_) => UpstreamError::ConcurrentChatsLimit,
            E::ResourceNotFoundException(_) => UpstreamError::NotFound,
            _ => return None,
        })
    }
}

/// Operations of one service share their error shapes; each operation's enum names the ones
/// it can return.
macro_rules! modelled_errors {
    ($ty:ident { $($variant:ident => $kind:expr),* $(,)? }) => {
        impl Modelled for $ty {
            fn modelled(&self) -> Option<UpstreamError> {
                Some(match self {
                    $($ty::$variant(_) => $kind,)*
                    _ => return None,
                })
            }
        }
    };
}

modelled_errors!(CreateParticipantConnectionError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServerException => UpstreamError::Unavailable,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});
modelled_errors!(SendMessageError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServerException => UpstreamError::Unavailable,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});
modelled_errors!(SendEventError {
    AccessDeniedException => UpstreamError::AccessDenied,
    ConflictException => UpstreamError::Conflict,
    InternalServerException => UpstreamError::Unavailable,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});
modelled_errors!(GetTranscriptError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServerException => UpstreamError::Unavailable,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});
modelled_errors!(DisconnectParticipantError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServerException => UpstreamError::Unavailable,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});

modelled_errors!(StartAttachmentUploadError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServerException => UpstreamError::Unavailable,
    ServiceQuotaExceededException => UpstreamError::QuotaExceeded,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});
modelled_errors!(CompleteAttachmentUploadError {
    AccessDeniedException => UpstreamError::AccessDenied,
    ConflictException => UpstreamError::Conflict,
    InternalServerException => UpstreamError::Unavailable,
    ServiceQuotaExceededException => UpstreamError::QuotaExceeded,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});
modelled_errors!(GetAttachmentError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServerException => UpstreamError::Unavailable,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});

modelled_errors!(DescribeViewError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServerException => UpstreamError::Unavailable,
    ResourceNotFoundException => UpstreamError::NotFound,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});
modelled_errors!(GetAuthenticationUrlError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServerException => UpstreamError::Unavailable,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});
modelled_errors!(CancelParticipantAuthenticationError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServerException => UpstreamError::Unavailable,
    ThrottlingException => THROTTLED,
    ValidationException => UpstreamError::Invalid { what: "ValidationException" },
});

modelled_errors!(CreateParticipantError {
    ConflictException => UpstreamError::Conflict,
    InternalServiceException => UpstreamError::Unavailable,
    InvalidRequestException => UpstreamError::Invalid { what: "InvalidRequestException" },
    ResourceNotFoundException => UpstreamError::NotFound,
    ServiceQuotaExceededException => UpstreamError::QuotaExceeded,
    ThrottlingException => THROTTLED,
});
modelled_errors!(CreatePushNotificationRegistrationError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServiceException => UpstreamError::Unavailable,
    InvalidParameterException => UpstreamError::Invalid { what: "InvalidParameterException" },
    ResourceNotFoundException => UpstreamError::NotFound,
    ServiceQuotaExceededException => UpstreamError::QuotaExceeded,
    ThrottlingException => THROTTLED,
});
modelled_errors!(DeletePushNotificationRegistrationError {
    AccessDeniedException => UpstreamError::AccessDenied,
    InternalServiceException => UpstreamError::Unavailable,
    InvalidParameterException => UpstreamError::Invalid { what: "InvalidParameterException" },
    ResourceNotFoundException => UpstreamError::NotFound,
    ThrottlingException => THROTTLED,
});

/// An error the operation's model does not name, by its HTTP status.
fn by_status(status: u16) -> UpstreamError {
    match status {
        429 => THROTTLED,
        403 => UpstreamError::AccessDenied,
        404 => UpstreamError::NotFound,
        409 => UpstreamError::Conflict,
        400..=499 => UpstreamError::Invalid {
            what: "an unmodelled client error",
        },
        _ => UpstreamError::Unavailable,
    }
}

/// Classifies an SDK error of operation `op` (the name goes to debug logs and metrics).
pub fn classify<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> UpstreamError
where
    E: Modelled + ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            // Logged at debug only: upstream text never reaches callers.
            tracing::debug!(
                op,
                status,
                code = se.err().code().unwrap_or(""),
                message = se.err().message().unwrap_or(""),
                "upstream error"
            );
            match se.err().modelled().unwrap_or_else(|| by_status(status)) {
                UpstreamError::Throttled { .. } => UpstreamError::Throttled {
                    retry_after: se
                        .raw()
                        .headers()
                        .get("x-amz-retry-after")
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_millis),
                },
                other => other,
            }
        }
        other => {
            tracing::debug!(op, error = %aws_smithy_types::error::display::DisplayErrorContext(other), "upstream call failed");
            UpstreamError::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_connect::types::error::LimitExceededException;
    use aws_sdk_connectparticipant::types::error::{AccessDeniedException, ThrottlingException};

    #[test]
    fn modelled_errors_are_classified_by_type() {
        let limit = StartChatContactError::LimitExceededException(
            LimitExceededException::builder().message("x").build(),
        );
        assert_eq!(limit.modelled(), Some(UpstreamError::ConcurrentChatsLimit));
        let denied = SendMessageError::AccessDeniedException(
            AccessDeniedException::builder()
                .message("x")
                .build()
                .unwrap(),
        );
        assert_eq!(denied.modelled(), Some(UpstreamError::AccessDenied));
        let throttled = GetTranscriptError::ThrottlingException(
            ThrottlingException::builder().message("x").build().unwrap(),
        );
        assert_eq!(throttled.modelled(), Some(THROTTLED));
    }

    #[test]
    fn unmodelled_errors_are_classified_by_status() {
        assert_eq!(by_status(429), THROTTLED);
        assert_eq!(by_status(403), UpstreamError::AccessDenied);
        assert!(matches!(by_status(400), UpstreamError::Invalid { .. }));
        assert_eq!(by_status(503), UpstreamError::Unavailable);
    }
}
