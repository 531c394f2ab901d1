//! What the gateway starts chats with: the instance and flow, the ids a request may name
//! instead, and the waits of the calls that follow.

use std::collections::HashSet;
use std::time::Duration;

/// What the gateway starts chats with.
#[derive(Clone, Debug, Default)]
pub struct ChatDefaults {
    pub instance_id: String,
    pub contact_flow_id: String,
    /// Other instance and flow ids a request may name.
    pub allowed_instance_ids: HashSet<String>,
    pub allowed_contact_flow_ids: HashSet<String>,
    /// How long a call waits for the chat's first connection token.
    pub token_wait: Duration,
    /// A quiet Subscribe stream gets a keepalive event this often.
    pub keepalive_interval: Duration,
    /// The End User Messaging (Pinpoint) application that sends the push notifications of
    /// RegisterPushNotification; `None`: push notifications are off.
    pub push_application_arn: Option<String>,
}
