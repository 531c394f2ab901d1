//! The operations of both services, named once: what calls are counted under, what faults are
//! injected into, and Connect's published rate quotas. [`FaultKind`] is the failure an
//! injected fault produces.

use serde::{Deserialize, Serialize};

/// The operations of both services, for counters and fault injection. `Operation::iter()`
/// (strum's `IntoEnumIterator`) yields every one in declaration order, `Operation::COUNT`
/// (`EnumCount`) says how many; the API name is the variant's name.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumIter,
    strum::EnumCount,
    strum::IntoStaticStr,
)]
pub enum Operation {
    StartChatContact,
    CreateParticipantConnection,
    SendMessage,
    SendEvent,
    GetTranscript,
    DisconnectParticipant,
    StartAttachmentUpload,
    CompleteAttachmentUpload,
    GetAttachment,
    DescribeView,
    GetAuthenticationUrl,
    CancelParticipantAuthentication,
    CreatePushNotificationRegistration,
    DeletePushNotificationRegistration,
    CreateParticipant,
}

impl Operation {
    /// Position in declaration order (`0..Operation::COUNT`).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The operation's API name, e.g. `SendMessage`.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Connect's published rate quota for the operation, requests per second and burst
    /// (StartChatContact per account and region, participant operations per instance);
    /// `None` where none is published.
    pub fn rate_quota(self) -> Option<(u32, u32)> {
        match self {
            Operation::StartChatContact => Some((5, 8)),
            Operation::CreateParticipantConnection => Some((6, 9)),
            Operation::SendMessage | Operation::SendEvent => Some((10, 15)),
            Operation::GetTranscript => Some((8, 12)),
            Operation::DisconnectParticipant => Some((3, 5)),
            Operation::StartAttachmentUpload
            | Operation::CompleteAttachmentUpload
            | Operation::GetAttachment => Some((2, 5)),
            Operation::DescribeView
            | Operation::GetAuthenticationUrl
            | Operation::CancelParticipantAuthentication
            | Operation::CreatePushNotificationRegistration
            | Operation::DeletePushNotificationRegistration
            | Operation::CreateParticipant => None,
        }
    }

    /// Whether the operation belongs to the `connect` service (else `connectparticipant`).
    pub fn is_connect_service(self) -> bool {
        matches!(
            self,
            Operation::StartChatContact
                | Operation::CreatePushNotificationRegistration
                | Operation::DeletePushNotificationRegistration
                | Operation::CreateParticipant
        )
    }
}

/// The failure an injected fault produces. The wire code depends on the service:
///
/// | kind | participant operations | StartChatContact |
/// |---|---|---|
/// | Throttling | `ThrottlingException` 429 | `ThrottlingException` 429 (not modelled: `Unhandled`, retried) |
/// | InternalServer | `InternalServerException` 500 | `InternalServiceException` 500 |
/// | AccessDenied | `AccessDeniedException` 403 | `AccessDeniedException` 403 (not modelled: `Unhandled`) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    Throttling,
    InternalServer,
    AccessDenied,
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::{EnumCount as _, IntoEnumIterator as _};

    #[test]
    fn operation_names_indices_and_wire_names_agree() {
        let all: Vec<Operation> = Operation::iter().collect();
        assert_eq!(all.len(), Operation::COUNT);
        assert_eq!(Operation::COUNT, 15);
        for (i, op) in all.iter().enumerate() {
            assert_eq!(op.index(), i);
            // The admin API and the counters use the same names as serde.
            assert_eq!(serde_json::to_value(op).unwrap(), op.name());
            assert_eq!(format!("{op:?}"), op.name());
        }
        assert_eq!(Operation::SendMessage.name(), "SendMessage");
        assert_eq!(
            Operation::CancelParticipantAuthentication.name(),
            "CancelParticipantAuthentication"
        );
    }
}
