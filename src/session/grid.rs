//! Deadlines on a process-wide grid. Timers that fall due on the same grid point fire in one
//! timer wake-up, and the writes they cause leave together: heartbeats on many upstream
//! sockets, keepalives on the many Subscribe streams of one HTTP/2 connection. Due one by
//! one, each on its own millisecond, they woke the runtime's threads thousands of times a
//! second for a few bytes each.

use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// The grid's origin: the first time any deadline of the process was placed on it.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The grid points (multiples of `grid` from the epoch) before and after `t`; both are `t`
/// when it is on the grid. A deadline before the epoch is the epoch.
fn bounds(t: Instant, grid: Duration) -> (Instant, Instant) {
    let epoch = epoch();
    // In 64 bits (five centuries of nanoseconds): a 128-bit division is a call of its own,
    // and every Subscribe event re-arms its keepalive on the grid.
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let grid = nanos(grid).max(1);
    let since = nanos(t.saturating_duration_since(epoch));
    let below = since - since % grid;
    let above = if below == since {
        since
    } else {
        below.saturating_add(grid)
    };
    (
        epoch + Duration::from_nanos(below),
        epoch + Duration::from_nanos(above),
    )
}

/// The first grid point at or after `t`: for a deadline that must not come early.
pub fn at_or_after(t: Instant, grid: Duration) -> Instant {
    bounds(t, grid).1
}

/// The last grid point at or before `t`: for a deadline that must not come late.
pub fn at_or_before(t: Instant, grid: Duration) -> Instant {
    bounds(t, grid).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_to_shared_points_in_the_asked_direction() {
        let grid = Duration::from_millis(100);
        let base = Instant::now();
        let mut up: Vec<Instant> = Vec::new();
        let mut down: Vec<Instant> = Vec::new();
        for ms in 0..50u64 {
            let t = base + Duration::from_millis(1000 + ms * 7);
            let (late, early) = (at_or_after(t, grid), at_or_before(t, grid));
            assert!(late >= t && late < t + grid, "{ms}");
            assert!(early <= t && early + grid > t, "{ms}");
            up.push(late);
            down.push(early);
        }
        // 350 ms of deadlines land on at most five points each way.
        for points in [&mut up, &mut down] {
            points.dedup();
            assert!(points.len() <= 5, "{}", points.len());
        }
        let on = at_or_after(base + Duration::from_secs(1), grid);
        assert_eq!(at_or_after(on, grid), on);
        assert_eq!(at_or_before(on, grid), on);
    }
}
