//! The upstream: Amazon Connect as the gateway sees it — the SDK client and its typed errors,
//! transcript items, the participant socket protocol, and the one list of content types.

pub mod content_type;
