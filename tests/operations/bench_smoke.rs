//! The bench at a tiny size: every round (ws, wss, cluster), every phase, a few seconds. The
//! binaries are the debug builds cargo made for the tests, so the figures mean nothing here;
//! the test checks that every phase ran and delivered.

use connect_chat_gateway::bench::{self, BenchConfig};
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_every_phase_at_a_tiny_size() {
    let mut cfg = BenchConfig::new();
    cfg.sim_bin = PathBuf::from(env!("CARGO_BIN_EXE_connect-sim"));
    cfg.gateway_bin = PathBuf::from(env!("CARGO_BIN_EXE_connect-chat-gateway"));
    cfg.bench_bin = PathBuf::from(env!("CARGO_BIN_EXE_connect-chat-bench"));
    cfg.floor_heartbeat = std::time::Duration::from_millis(100);
    cfg.work_dir = std::env::temp_dir().join(format!("ccg-bench-smoke-{}", std::process::id()));
    cfg.chats = 20;
    // Spread over three gateway processes, as a run of 100,000 chats is.
    cfg.chats_per_process = 8;
    cfg.setup_chats = 8;
    cfg.cluster_chats = 8;
    cfg.concurrency = 4;
    cfg.latency_rate = 100.0;
    cfg.latency_secs = 1.0;
    cfg.throughput_rate = 1_000.0;
    cfg.throughput_secs = 1.0;
    cfg.idle_secs = 0.2;
    cfg.settle_secs = 0.1;
    cfg.streams_per_connection = 8;
    let report = bench::run(&cfg).await.expect("the bench runs");
    // The idle floor held as many bare sockets as the first gateway process holds chats (7 of
    // the 20 over three), and their heartbeats were answered over the window (0.2 s at one
    // every 0.1 s: each socket once at least).
    let floor = report.floor.as_ref().expect("idle floor figures");
    assert_eq!(floor.sockets, 7, "{floor:?}");
    assert!(floor.round_trips >= 7, "{floor:?}");
    let setup = report.setup.as_ref().expect("setup figures");
    assert_eq!(setup.gateway_failed + setup.direct_failed, 0);
    assert_eq!(setup.gateway_ready.count, 8);
    let latency = report.latency.as_ref().expect("latency figures");
    assert!(latency.gateway.count > 50, "{latency:?}");
    assert!(latency.direct.count > 50, "{latency:?}");
    assert_eq!(report.capacity.len(), 2);
    for c in &report.capacity {
        assert_eq!((c.chats, c.failed, c.streams_ended), (20, 0, 0), "{c:?}");
        assert!(c.gateway_rss_after > 0);
        assert_eq!(c.processes, 3);
        let held: Vec<usize> = c.per_process.iter().map(|p| p.chats).collect();
        assert_eq!(held, [7, 7, 6], "{c:?}");
        // Each chat holds one upstream socket in its gateway and one in its simulator (at
        // this size a few descriptors the processes open meanwhile count too).
        for p in &c.per_process {
            for per_chat in [p.gateway_fds_per_chat, p.sim_fds_per_chat] {
                let opened = per_chat * p.chats as f64;
                assert!(
                    opened >= p.chats as f64 && opened <= (p.chats + 16) as f64,
                    "{p:?}"
                );
            }
        }
    }
    assert_eq!(report.capacity[1].upstream, "wss");
    // The gateway's ceiling runs where the bench may create a cgroup with a CPU quota (these
    // machines: root, cgroup v1); wherever it ran, the held gateway delivered.
    if let Some(c) = &report.ceiling {
        assert!(c.run.delivered > 0, "{c:?}");
        assert_eq!(c.quota_cores, 0.5, "{c:?}");
    }
    let t = report.throughput.as_ref().expect("throughput figures");
    assert!(
        t.delivered_total > 0 && t.delivered_total <= t.pushed,
        "{t:?}"
    );
    // The kernel's share of the gateway's CPU per event is a part of it.
    assert!(
        (0.0..=t.gateway_cpu_us_per_event).contains(&t.gateway_kernel_us_per_event),
        "{t:?}"
    );
    let c = report
        .cluster
        .as_ref()
        .expect("cluster figures (redis-server is installed)");
    assert_eq!(c.replicas, 3);
    assert!(c.latency.count > 50, "{c:?}");
    assert!(
        c.delivered_total > 0 && c.delivered_total <= c.pushed,
        "{c:?}"
    );
    assert!(c.redis_commands > 0, "{c:?}");
    assert_eq!(c.streams_ended, 0, "{c:?}");
    // Every replica was measured while the chats were held: the owner serves all 8, the two
    // readers 4 each.
    assert_eq!(c.held.chats, [8, 4, 4], "{c:?}");
    assert!(c.held.rss_after.iter().all(|r| *r > 0), "{c:?}");
    assert_eq!(c.held.idle_cores.len(), 3, "{c:?}");
    assert!(report
        .targets
        .iter()
        .any(|t| t.name == "throughput: gateway CPU per delivered event"));
    assert!(report.table().contains("targets:"));
}
