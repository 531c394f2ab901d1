//! The simulator's counters: atomics updated without locks while serving, and the
//! [`Counters`] snapshot handed to tests and the admin API.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use strum::{EnumCount as _, IntoEnumIterator as _};

use super::operation::Operation;

/// A snapshot of the simulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Calls received per operation name, including failed ones.
    pub calls: std::collections::BTreeMap<String, u64>,
    /// Participant sockets currently open.
    pub open_sockets: u64,
    /// Chats not yet ended.
    pub chats_live: u64,
    /// Chats ended since start (including ones since forgotten).
    pub chats_ended: u64,
    /// Items created (stored or ephemeral).
    pub items_pushed: u64,
    /// `aws/chat` frames written to sockets.
    pub frames_sent: u64,
    /// Sockets closed because their outbound queue was full.
    pub sockets_closed_slow: u64,
    /// Socket upgrades refused (bad or expired URL, socket limit).
    pub upgrades_refused: u64,
}

/// Counters updated without locks.
#[derive(Default)]
pub struct Stats {
    calls: [AtomicU64; Operation::COUNT],
    pub open_sockets: AtomicU64,
    pub chats_ended: AtomicU64,
    pub items_pushed: AtomicU64,
    pub frames_sent: AtomicU64,
    pub sockets_closed_slow: AtomicU64,
    pub upgrades_refused: AtomicU64,
}

impl Stats {
    pub fn calls(&self, op: Operation) -> u64 {
        self.calls[op.index()].load(Ordering::Relaxed)
    }

    /// Count one call of `op` (failed ones too).
    pub fn count_call(&self, op: Operation) {
        self.calls[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot, with the live-chat count only the registry knows.
    pub fn snapshot(&self, chats_live: u64) -> Counters {
        Counters {
            calls: Operation::iter()
                .map(|op| (op.name().to_owned(), self.calls(op)))
                .collect(),
            open_sockets: self.open_sockets.load(Ordering::Relaxed),
            chats_live,
            chats_ended: self.chats_ended.load(Ordering::Relaxed),
            items_pushed: self.items_pushed.load(Ordering::Relaxed),
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            sockets_closed_slow: self.sockets_closed_slow.load(Ordering::Relaxed),
            upgrades_refused: self.upgrades_refused.load(Ordering::Relaxed),
        }
    }
}
