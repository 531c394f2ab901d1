//! The knobs tests and the admin API turn while the simulator runs: injected faults per
//! operation, Connect's rate quotas (when enforced), answer and frame delays, and whether
//! socket heartbeats are answered.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use strum::{EnumCount as _, IntoEnumIterator as _};

use super::operation::{FaultKind, Operation};
use super::support::lock;

/// Runtime fault-injection settings, shared by every handler.
pub struct Knobs {
    answer_heartbeats: AtomicBool,
    frame_delay_us: AtomicU64,
    answer_delay_us: AtomicU64,
    /// Calls waiting out the answer delay now.
    answers_held: std::sync::atomic::AtomicUsize,
    faults: Mutex<[Option<(u32, FaultKind)>; Operation::COUNT]>,
    /// Token buckets of the operations' rate quotas, when they are enforced.
    quotas: Vec<Option<governor::DefaultDirectRateLimiter>>,
}

impl Knobs {
    /// No faults and no delays; with `rate_quotas`, every operation with a published quota
    /// gets its token bucket.
    pub fn new(rate_quotas: bool) -> Self {
        Knobs {
            answer_heartbeats: AtomicBool::new(true),
            frame_delay_us: AtomicU64::new(0),
            answer_delay_us: AtomicU64::new(0),
            answers_held: std::sync::atomic::AtomicUsize::new(0),
            faults: Mutex::new([None; Operation::COUNT]),
            quotas: Operation::iter()
                .map(|op| {
                    let (rate, burst) = op.rate_quota().filter(|_| rate_quotas)?;
                    let quota = governor::Quota::per_second(NonZeroU32::new(rate)?)
                        .allow_burst(NonZeroU32::new(burst)?);
                    Some(governor::RateLimiter::direct(quota))
                })
                .collect(),
        }
    }

    /// Consume an injected fault for a call of `op`, if any; else, with rate quotas on,
    /// throttle a call over its operation's quota.
    pub fn fault_for(&self, op: Operation) -> Option<FaultKind> {
        {
            let mut faults = lock(&self.faults);
            let slot = &mut faults[op.index()];
            if let Some((left, kind)) = *slot {
                *slot = (left > 1).then_some((left - 1, kind));
                return Some(kind);
            }
        }
        let quota = self.quotas.get(op.index())?.as_ref()?;
        quota.check().is_err().then_some(FaultKind::Throttling)
    }

    pub fn fail_next(&self, op: Operation, count: u32, kind: FaultKind) {
        lock(&self.faults)[op.index()] = (count > 0).then_some((count, kind));
    }

    pub fn set_answer_heartbeats(&self, answer: bool) {
        self.answer_heartbeats.store(answer, Ordering::Release);
    }

    pub fn answer_heartbeats(&self) -> bool {
        self.answer_heartbeats.load(Ordering::Acquire)
    }

    pub fn set_frame_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.frame_delay_us.store(us, Ordering::Release);
    }

    pub fn frame_delay(&self) -> Duration {
        Duration::from_micros(self.frame_delay_us.load(Ordering::Acquire))
    }

    pub fn set_answer_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.answer_delay_us.store(us, Ordering::Release);
    }

    pub fn answer_delay(&self) -> Duration {
        Duration::from_micros(self.answer_delay_us.load(Ordering::Acquire))
    }

    /// Counts a call held back by the answer delay for as long as the guard lives.
    pub fn hold_answer(&self) -> HeldAnswer<'_> {
        self.answers_held.fetch_add(1, Ordering::AcqRel);
        HeldAnswer(&self.answers_held)
    }

    /// Calls being held back by the answer delay right now.
    pub fn answers_held(&self) -> usize {
        self.answers_held.load(Ordering::Acquire)
    }
}

/// A call held back by the answer delay (see [`Knobs::hold_answer`]).
pub struct HeldAnswer<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for HeldAnswer<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
