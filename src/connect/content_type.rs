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

/// Whether `content_type` is one a participant may send as a message.
pub fn is_message(content_type: &str) -> bool {
    MESSAGE.contains(&content_type)
}
