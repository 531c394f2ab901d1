//! The simulator's data and nothing else: chats and their items, the registry that finds them
//! by token or contact id, operations and their knobs, counters. No HTTP, socket or task code;
//! every other simulator module reads and changes state through here.
//!
//! - [`registry`]: [`registry::Shared`], the state every handler and task holds.
//! - [`chat`]: one chat contact, its items, sockets, attachments and agent channel.
//! - [`control`]: what the simulator's handle and admin API do to chats from outside.
//! - [`frame`]: an item's `aws/chat` socket frame, written in one pass.
//! - [`transcript`]: GetTranscript paging over a chat's stored items.
//! - [`operation`]: the operations of both services and the faults injected into them.
//! - [`knobs`]: faults, rate quotas, delays and heartbeat answers set at run time.
//! - [`stats`]: lock-free counters and their [`stats::Counters`] snapshot.
//! - [`time`] and [`support`]: time formats, tokens, bounded maps, poison-tolerant locks.

pub mod chat;
pub mod control;
pub mod frame;
pub mod knobs;
pub mod operation;
pub mod registry;
pub mod stats;
pub mod support;
pub mod time;
pub mod transcript;
