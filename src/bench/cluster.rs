//! The cluster round: three gateway processes on one private Redis, chats started on the
//! first (their owner) and read on the other two, so that every event crosses Redis. It
//! measures the latency the Redis hop adds (next to the single-process figures), the events
//! per second delivered through the replicas, and the Redis commands per delivered event.

use super::clients::{self, GatewayPool, Recorder};
use super::procs::{self, CpuMark, Proc};
use super::report::{ClusterHeld, ClusterReport};
use super::{stats, BenchConfig, BenchError, Result};
use futures::StreamExt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Replicas in the round.
pub const REPLICAS: usize = 3;

/// A sealing key for the bench's throw-away Redis.
const STORE_KEYS: &str = "bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Whether `redis-server` can be run here.
pub fn available() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Commands Redis has processed since it started (`INFO stats`; commands scripts run count
/// too), and the scripts (EVALSHA) it ran.
async fn redis_commands(url: &str) -> Result<(u64, u64)> {
    let client = redis::Client::open(url).map_err(|e| BenchError(e.to_string()))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| BenchError(format!("Redis: {e}")))?;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .map_err(|e| BenchError(format!("Redis INFO: {e}")))?;
    let commands = info
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| BenchError("Redis INFO has no total_commands_processed".into()))?;
    let scripts = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((commands, scripts))
}

/// Each process's resident memory, bytes (0 where it cannot be read).
fn resident(processes: &[Proc]) -> Vec<u64> {
    processes
        .iter()
        .map(|p| procs::rss_bytes(p.pid).unwrap_or(0))
        .collect()
}

/// The held chats' figures: each replica's memory growth per chat it serves since
/// `rss_before`, then the idle CPU of every process and Redis's commands over the idle window.
async fn held(
    cfg: &BenchConfig,
    gateways: &[Proc],
    (sim, redis, redis_url): (&Proc, &Proc, &str),
    rss_before: Vec<u64>,
    chats: usize,
) -> Result<ClusterHeld> {
    tokio::time::sleep(Duration::from_secs_f64(cfg.settle_secs)).await;
    let rss_after = resident(gateways);
    // The owner serves every chat; reader r (1-based past the owner) every chat i with
    // i % (REPLICAS - 1) == r - 1, as the setup spread them.
    let served: Vec<usize> = (0..gateways.len())
        .map(|r| match r {
            0 => chats,
            r => (0..chats).filter(|i| i % (REPLICAS - 1) == r - 1).count(),
        })
        .collect();
    let kib_per_chat = rss_after
        .iter()
        .zip(&rss_before)
        .zip(&served)
        .map(|((a, b), n)| (*a as f64 - *b as f64) / 1024.0 / (*n).max(1) as f64)
        .collect();
    eprintln!(
        "bench: cluster: {chats} chats held; idle for {} s",
        cfg.idle_secs
    );
    let marks: Vec<CpuMark> = gateways.iter().map(|g| CpuMark::now(g.pid)).collect();
    let (redis_mark, sim_mark) = (CpuMark::now(redis.pid), CpuMark::now(sim.pid));
    let (commands_before, _) = redis_commands(redis_url).await?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(cfg.idle_secs)).await;
    let (commands_after, _) = redis_commands(redis_url).await?;
    let secs = start.elapsed().as_secs_f64();
    // The two INFO calls themselves are not the chats' doing.
    let per_s = commands_after.saturating_sub(commands_before + 1) as f64 / secs;
    Ok(ClusterHeld {
        rss_before,
        rss_after,
        chats: served,
        kib_per_chat,
        idle_secs: secs,
        idle_cores: marks
            .iter()
            .zip(gateways)
            .map(|(m, g)| m.since(g.pid).1)
            .collect(),
        redis_idle_cores: redis_mark.since(redis.pid).1,
        sim_idle_cores: sim_mark.since(sim.pid).1,
        redis_idle_commands_per_s: per_s,
        redis_idle_commands_per_chat_per_min: per_s * 60.0 / chats.max(1) as f64,
    })
}

/// Runs the round; `single` is the single-process latency summary, for comparison.
pub async fn run(cfg: &BenchConfig, single: Option<&stats::Summary>) -> Result<ClusterReport> {
    let chats = cfg.cluster_chats;
    let total = chats + cfg.concurrency;
    let redis_port = procs::free_port()?;
    let (redis, out) = Proc::spawn(
        "redis-server",
        Path::new("redis-server"),
        &[
            "--port".into(),
            redis_port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ],
    )?;
    procs::forward("redis-server", out);
    let redis_addr: SocketAddr = ([127, 0, 0, 1], redis_port).into();
    procs::wait_listening(redis_addr, "redis-server").await?;
    let redis_url = format!("redis://{redis_addr}");

    let (sim, sim_addr, endpoint) = super::spawn_sim(cfg, 0, total, false).await?;
    let mut gateways = Vec::new();
    let mut pools = Vec::new();
    for _ in 0..REPLICAS {
        let port = procs::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut args = super::gateway_args(cfg, &endpoint, &listen, total);
        args.extend(
            [
                "--store",
                &redis_url,
                "--store-keys",
                STORE_KEYS,
                "--lease-ttl",
                "15s",
            ]
            .map(String::from),
        );
        let (gw, out) = Proc::spawn("connect-chat-gateway", &cfg.gateway_bin, &args)?;
        procs::forward("connect-chat-gateway", out);
        let addr: SocketAddr = listen.parse().map_err(|e| BenchError(format!("{e}")))?;
        procs::wait_listening(addr, "the gateway").await?;
        pools.push(GatewayPool::connect(addr, total, cfg.streams_per_connection).await?);
        gateways.push(gw);
    }

    tokio::time::sleep(Duration::from_secs_f64(cfg.settle_secs)).await;
    let rss_before = resident(&gateways);
    eprintln!("bench: cluster: {chats} chats started on replica 1, read on replicas 2 and 3");
    let rec = Arc::new(Recorder::default());
    let tasks = Mutex::new(JoinSet::new());
    let results: Vec<_> = futures::stream::iter(0..chats)
        .map(|i| {
            let owner = pools[0].client(i);
            let reader = pools[1 + i % (REPLICAS - 1)].client(i);
            let rec = rec.clone();
            let tasks = &tasks;
            async move {
                tokio::time::timeout(
                    clients::SETUP_TIMEOUT,
                    clients::gateway_chat_via(owner, reader, format!("cluster {i}"), rec, tasks),
                )
                .await
                .unwrap_or_else(|_| Err("setup timed out".into()))
            }
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    let mut ids = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(c) => ids.push(c.contact_id),
            Err(e) => failed.push(e),
        }
    }
    if let Some(e) = super::first_error(&failed) {
        return Err(BenchError(format!("cluster setup: {e}")));
    }
    let held = held(
        cfg,
        &gateways,
        (&sim, &redis, &redis_url),
        rss_before,
        ids.len(),
    )
    .await?;

    eprintln!(
        "bench: cluster latency: {} stamped messages/s for {} s",
        cfg.latency_rate, cfg.latency_secs
    );
    rec.take_samples();
    rec.recording.store(true, Ordering::Relaxed);
    clients::sim_load(sim_addr, cfg.latency_rate, cfg.latency_secs, &ids, true).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    rec.recording.store(false, Ordering::Relaxed);
    let latency = stats::summarize(rec.take_samples());

    eprintln!(
        "bench: cluster throughput: {} messages/s for {} s",
        cfg.throughput_rate, cfg.throughput_secs
    );
    let before = rec.messages.load(Ordering::Relaxed);
    let commands_before = redis_commands(&redis_url).await?;
    let marks: Vec<CpuMark> = gateways.iter().map(|g| CpuMark::now(g.pid)).collect();
    let redis_mark = CpuMark::now(redis.pid);
    let load = clients::sim_load(
        sim_addr,
        cfg.throughput_rate,
        cfg.throughput_secs,
        &ids,
        false,
    )
    .await?;
    let delivered = rec.messages.load(Ordering::Relaxed) - before;
    let gateway_cores: Vec<f64> = marks
        .iter()
        .zip(&gateways)
        .map(|(m, g)| m.since(g.pid).1)
        .collect();
    let (_, redis_cores) = redis_mark.since(redis.pid);
    let (commands, scripts) = redis_commands(&redis_url).await?;
    let (commands, scripts) = (
        commands.saturating_sub(commands_before.0),
        scripts.saturating_sub(commands_before.1),
    );
    // What was still in flight when the load stopped: wait until all of it arrived, or
    // nothing more arrives for two seconds (30 s at most).
    let pushed = load["pushed"].as_u64().unwrap_or(0);
    let drain_start = Instant::now();
    let (mut last, mut last_change) = (0, Instant::now());
    let delivered_total = loop {
        let now = rec.messages.load(Ordering::Relaxed) - before;
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        if now >= pushed
            || last_change.elapsed() > Duration::from_secs(2)
            || drain_start.elapsed() > Duration::from_secs(30)
        {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let secs = load["elapsed_ms"].as_f64().unwrap_or(0.0) / 1e3;
    let report = ClusterReport::new(
        chats,
        latency,
        single,
        &load,
        secs,
        delivered,
        (delivered_total, drain_secs),
        (commands, scripts),
        gateway_cores,
        redis_cores,
        rec.ended.load(Ordering::Relaxed),
        held,
    );
    drop(tasks);
    for g in gateways {
        g.stop(Duration::from_secs(15)).await;
    }
    sim.stop(Duration::from_secs(10)).await;
    redis.stop(Duration::from_secs(5)).await;
    Ok(report)
}
