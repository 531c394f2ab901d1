//! The process's async runtime, sized by `--worker-threads`.
//!
//! Tokio's multi-threaded scheduler pays for being able to move work between threads: a task
//! woken from another thread goes through shared queues, and an idle thread is woken with a
//! system call to steal it. On a host whose cores run several gateway processes (one per
//! core, as the benchmark runs six on two cores), or in a container limited to one CPU, that
//! buys nothing; one thread running every task does the same work for less. The
//! benchmark's figures, two runs each: 15.2 → 11.3 µs of gateway CPU per delivered event, and
//! 1,010 → 800 µs per chat started (docs/benchmark.md, "A tenth session").

use std::io;
use tokio::runtime::{Builder, Runtime};

/// A runtime of `threads` worker threads; `0` leaves the count to Tokio: one per CPU the
/// process may use (its affinity and container quota included) unless `TOKIO_WORKER_THREADS`
/// says otherwise.
///
/// One worker is still the work-stealing scheduler, not the single-threaded one: measured
/// the same way, the single-threaded scheduler cost more per event (15.6–16.8 µs), as a woken
/// task there waits behind every other ready task instead of running next.
pub fn build(threads: usize) -> io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_has_the_threads_asked_for_and_runs_tasks() {
        let default = std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        for (asked, workers) in [(0, default), (1, 1), (3, 3)] {
            let rt = build(asked).unwrap();
            assert_eq!(rt.metrics().num_workers(), workers, "{asked}");
            let got = rt.block_on(async {
                let tasks: Vec<_> = (0..8u32)
                    .map(|i| tokio::spawn(async move { i * 2 }))
                    .collect();
                let mut sum = 0;
                for t in tasks {
                    sum += t.await.unwrap();
                }
                sum
            });
            assert_eq!(got, 56, "{asked}");
        }
    }
}
