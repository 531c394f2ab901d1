//! The one list of Connect content types the gateway and the simulator speak: message types a
//! participant may send, and the event types of typing, receipts and chat life. Every other
//! module names a content type through these constants.

/// Plain text, the default message type.
pub const TEXT_PLAIN: &str = "text/plain";
pub const TEXT_MARKDOWN: &str = "text/markdown";
pub const APPLICATION_JSON: &str = "application/json";
/// A customer's answer to an interactive message (list picker, time picker, ...).
pub const INTERACTIVE_RESPONSE: &str =
    "application/vnd.amazonaws.connect.message.interactive.response";
/// What a participant may send with SendMessage.
pub const MESSAGE: [&str; 4] = [
    TEXT_PLAIN,
    TEXT_MARKDOWN,
    APPLICATION_JSON,
    INTERACTIVE_RESPONSE,
];

/// The prefix every Connect event content type shares.
pub const EVENT_PREFIX: &str = "application/vnd.amazonaws.connect.event.";
pub const TYPING: &str = "application/vnd.amazonaws.connect.event.typing";
pub const DELIVERED: &str = "application/vnd.amazonaws.connect.event.message.delivered";
pub const READ: &str = "application/vnd.amazonaws.connect.event.message.read";
pub const PARTICIPANT_JOINED: &str = "application/vnd.amazonaws.connect.event.participant.joined";
pub const PARTICIPANT_LEFT: &str = "application/vnd.amazonaws.connect.event.participant.left";
pub const CHAT_ENDED: &str = "application/vnd.amazonaws.connect.event.chat.ended";
pub const CONNECTION_ACKNOWLEDGED: &str =
    "application/vnd.amazonaws.connect.event.connection.acknowledged";

/// The longest message content of each type, in characters, as Connect's service enforces
/// it (the model's 16,384 is only the outer bound of the shape). StartChatContact's
/// InitialMessage has the same limits.
pub fn max_message_chars(content_type: &str) -> Option<usize> {
    match content_type {
        TEXT_PLAIN | TEXT_MARKDOWN => Some(1_024),
        APPLICATION_JSON => Some(12_000),
        INTERACTIVE_RESPONSE => Some(12_288),
        _ => None,
    }
}

/// The model's outer bound of a message's content, for every type.
pub const MODEL_MAX_MESSAGE_CHARS: usize = 16_384;

/// Whether `content_type` is one a participant may send as a message.
pub fn is_message(content_type: &str) -> bool {
    MESSAGE.contains(&content_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_type_has_its_limit() {
        for t in MESSAGE {
            let max = max_message_chars(t).unwrap();
            assert!(max <= MODEL_MAX_MESSAGE_CHARS, "{t}");
        }
        assert_eq!(max_message_chars(TEXT_PLAIN), Some(1_024));
        assert_eq!(max_message_chars(TYPING), None);
    }
}
