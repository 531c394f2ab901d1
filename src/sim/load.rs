//! Load from the agent side, for benchmarks: agent messages at a fixed aggregate rate across
//! live chats, round robin, for a bounded time. A message can carry its push time (Unix ns,
//! taken under the chat lock just before the frame is queued on the chat's sockets), so
//! receivers measure end-to-end latency against their own clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::{Instant, MissedTickBehavior};

use super::model::chat::Chat;
use super::model::registry::Shared;
use crate::connect::content_type as ct;

/// A stamped message's content is this prefix followed by the push time in Unix nanoseconds.
pub const STAMP_PREFIX: &str = "bench t=";

/// The longest load a single request may run.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// The highest aggregate rate accepted, messages per second.
pub const MAX_RATE: f64 = 10_000_000.0;

/// What to push.
#[derive(Clone, Debug, Deserialize)]
pub struct LoadSpec {
    /// Messages per second across all the chats.
    pub rate: f64,
    /// How long to push, milliseconds.
    pub millis: u64,
    /// The chats to push to, in this round-robin order; absent: every live chat.
    #[serde(default)]
    pub contact_ids: Option<Vec<String>>,
    /// Put the push time in the content (`bench t=<unix nanos>`); otherwise `bench <n>`.
    #[serde(default)]
    pub stamp: bool,
}

/// What was pushed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Messages pushed (each one frame per open subscribed socket of its chat).
    pub pushed: u64,
    /// Chats the load started with.
    pub chats: usize,
    /// Chats that ended during the load (skipped from then on).
    pub ended: usize,
    /// Wall time of the load, milliseconds.
    pub elapsed_ms: f64,
    /// Messages the rate asked for but the simulator could not push in time.
    pub behind: u64,
}

impl LoadSpec {
    /// Checks the bounds; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(format!("rate must be in (0, {MAX_RATE}]"));
        }
        if self.millis == 0 || Duration::from_millis(self.millis) > MAX_DURATION {
            return Err(format!(
                "millis must be in [1, {}]",
                MAX_DURATION.as_millis()
            ));
        }
        Ok(())
    }
}

/// The current wall-clock time in Unix nanoseconds.
pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The push time of a stamped message's content, if it is one.
pub fn parse_stamp(content: &str) -> Option<u128> {
    content.strip_prefix(STAMP_PREFIX)?.parse().ok()
}

/// Push one agent message; false when the chat has ended.
fn push(shared: &Shared, chat: &Chat, stamp: bool, n: u64) -> bool {
    let mut st = chat.lock();
    if st.ended {
        return false;
    }
    let content = if stamp {
        format!("{STAMP_PREFIX}{}", unix_nanos())
    } else {
        format!("bench {n}")
    };
    let obj = chat.item("MESSAGE", ct::TEXT_PLAIN, Some(&content), Some(&chat.agent));
    shared.commit(chat, &mut st, obj, true);
    true
}

/// Run the load to its end (or until every chat ended, or the simulator shuts down).
pub async fn run(shared: Arc<Shared>, spec: LoadSpec) -> LoadReport {
    let mut chats: Vec<Arc<Chat>> = match &spec.contact_ids {
        Some(ids) => ids.iter().filter_map(|id| shared.find_chat(id)).collect(),
        None => shared.live_chats(),
    };
    chats.retain(|c| !c.is_ended());
    let mut report = LoadReport {
        chats: chats.len(),
        ..LoadReport::default()
    };
    let start = Instant::now();
    let end = start + Duration::from_millis(spec.millis);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut next = 0usize;
    'run: while !chats.is_empty() {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = (spec.rate * (now - start).as_secs_f64()) as u64;
        // Never more than one tick's worth beyond 50 ms behind: a stall is reported, not
        // caught up in one burst.
        let floor = due.saturating_sub((spec.rate * 0.05).ceil() as u64);
        if report.pushed < floor {
            report.behind += floor - report.pushed;
            report.pushed = floor;
        }
        let mut in_tick = 0u32;
        while report.pushed < due && !chats.is_empty() {
            let i = next % chats.len();
            if push(&shared, &chats[i], spec.stamp, report.pushed) {
                report.pushed += 1;
                next = i + 1;
            } else {
                chats.swap_remove(i);
                report.ended += 1;
            }
            in_tick += 1;
            if in_tick.is_multiple_of(512) {
                if Instant::now() >= end {
                    break 'run;
                }
                tokio::task::yield_now().await;
            }
        }
    }
    report.pushed -= report.behind;
    report.elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let t = unix_nanos();
        assert_eq!(parse_stamp(&format!("{STAMP_PREFIX}{t}")), Some(t));
        assert_eq!(parse_stamp("Agent message 1"), None);
    }

    #[test]
    fn bounds_are_checked() {
        let spec = |rate, millis| LoadSpec {
            rate,
            millis,
            contact_ids: None,
            stamp: false,
        };
        assert!(spec(1000.0, 1000).check().is_ok());
        assert!(spec(0.0, 1000).check().unwrap_err().contains("rate"));
        assert!(spec(1000.0, 0).check().unwrap_err().contains("millis"));
        assert!(spec(1000.0, 3_600_000).check().is_err());
    }
}
