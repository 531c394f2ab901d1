//! The load generator behind `connect-chat-bench`: it runs the simulator and the gateway as
//! separate processes on loopback and measures setup, latency, capacity and throughput, each
//! against the targets of the project (see `docs/benchmark.md`).
//!
//! - [`procs`]: spawning the binaries, `/proc` readings, the descriptor limit.
//! - [`clients`]: gRPC callers of the gateway and the direct SDK + socket baseline.
//! - [`stats`]: latency percentiles.
//! - [`report`]: the figures, the table and the targets.

pub mod attachments;
pub mod clients;
pub mod cluster;
pub mod procs;
pub mod report;
pub mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::task::JoinSet;

use clients::{Direct, GatewayPool, Recorder};
use procs::{CpuMark, Proc};
use report::{CapacityReport, LatencyReport, Report, SetupReport, ThroughputReport};

/// A failure that stops the bench.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

impl From<String> for BenchError {
    fn from(s: String) -> Self {
        BenchError(s)
    }
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError(e.to_string())
    }
}

type Result<T> = std::result::Result<T, BenchError>;

/// Sizes, rates and durations of one run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub sim_bin: PathBuf,
    pub gateway_bin: PathBuf,
    /// Where the simulator writes its CA certificate in the TLS round.
    pub work_dir: PathBuf,
    /// Capacity: concurrent chats held idle, each with its socket and one Subscribe stream.
    pub chats: usize,
    /// Setup: chats started on each side (gateway and direct), also used for latency.
    pub setup_chats: usize,
    /// Chats being started at once during the capacity ramp.
    pub concurrency: usize,
    /// Chats being started at once during the setup comparison (1: latency without queueing).
    pub setup_concurrency: usize,
    /// Latency: stamped agent messages per second on each side.
    pub latency_rate: f64,
    pub latency_secs: f64,
    /// Throughput: agent messages per second asked of the simulator, over the capacity chats.
    pub throughput_rate: f64,
    pub throughput_secs: f64,
    /// Capacity: how long the idle CPU is measured.
    pub idle_secs: f64,
    /// Also measure capacity with `wss://` upstream sockets.
    pub tls: bool,
    /// Subscribe streams per gRPC connection.
    pub streams_per_connection: usize,
    /// Pause before each memory reading, so heartbeats and allocator caches settle.
    pub settle_secs: f64,
    /// Run the cluster round (three replicas on a private `redis-server`).
    pub cluster: bool,
    /// The attachment round's file size, MB (0: no round).
    pub attachment_mb: usize,
    /// Run the attachment round only.
    pub attachments_only: bool,
}

impl BenchConfig {
    /// The default sizes, with the binaries next to the running executable.
    pub fn new() -> Self {
        let dir = procs::sibling_dir();
        BenchConfig {
            sim_bin: dir.join("connect-sim"),
            gateway_bin: dir.join("connect-chat-gateway"),
            work_dir: std::env::temp_dir()
                .join(format!("connect-chat-bench-{}", std::process::id())),
            chats: 10_000,
            setup_chats: 500,
            concurrency: 32,
            setup_concurrency: 1,
            latency_rate: 1_000.0,
            latency_secs: 10.0,
            throughput_rate: 60_000.0,
            throughput_secs: 10.0,
            idle_secs: 10.0,
            tls: true,
            streams_per_connection: 100,
            settle_secs: 2.0,
            cluster: cluster::available(),
            attachment_mb: 20,
            attachments_only: false,
        }
    }
}

impl BenchConfig {
    /// Streams and chats the gateway holds at most in a round (warm-up, setup, capacity).
    fn total_chats(&self) -> usize {
        self.chats + self.setup_chats + self.concurrency
    }
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The simulator and the gateway of one round.
struct Round {
    sim: Proc,
    sim_addr: SocketAddr,
    gateway: Proc,
    pool: GatewayPool,
    endpoint: String,
}

/// Starts the simulator for `total` chats; answers it, its address and its endpoint URL.
async fn spawn_sim(
    cfg: &BenchConfig,
    total: usize,
    tls: bool,
) -> Result<(Proc, SocketAddr, String)> {
    let mut sim_args: Vec<String> = ["--bind", "127.0.0.1:0", "--silent", "--join-delay-ms", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sim_args.extend(["--max-chats".into(), (2 * total + 1000).to_string()]);
    let ca_file = cfg.work_dir.join("sim-ca.pem");
    if tls {
        std::fs::create_dir_all(&cfg.work_dir)?;
        sim_args.extend([
            "--tls".into(),
            "--tls-ca-file".into(),
            ca_file.display().to_string(),
        ]);
    }
    let (sim, out) = Proc::spawn("connect-sim", &cfg.sim_bin, &sim_args)?;
    let endpoint = procs::read_until("connect-sim", out, Duration::from_secs(20), |line| {
        line.strip_prefix("connect-sim endpoint: ")
            .map(str::to_owned)
    })
    .await?;
    let sim_addr: SocketAddr = endpoint
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| BenchError(format!("simulator endpoint {endpoint}: {e}")))?;
    Ok((sim, sim_addr, endpoint))
}

/// The gateway's flags for a round of `total` chats on the simulator at `endpoint`.
fn gateway_args(cfg: &BenchConfig, endpoint: &str, listen: &str, total: usize) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--listen".into(),
        listen.into(),
        "--endpoint-url".into(),
        endpoint.into(),
        "--static-credentials".into(),
        "--instance-id".into(),
        clients::INSTANCE_ID.into(),
        "--contact-flow-id".into(),
        clients::CONTACT_FLOW_ID.into(),
        "--max-live-chats".into(),
        (total + 100).to_string(),
        "--max-stored-chats".into(),
        (2 * total + 1000).to_string(),
        "--session-idle-timeout".into(),
        "1h".into(),
        // The bench is one caller opening thousands of chats and sockets at once: lift
        // the limits that protect a real instance from exactly that.
        "--connection-rate".into(),
        "0".into(),
        "--caller-rate".into(),
        "0".into(),
        "--max-chats-per-caller".into(),
        (2 * total + 1000).to_string(),
        "--max-concurrent-streams".into(),
        (cfg.streams_per_connection + 256).to_string(),
    ];
    args.extend(["--admin-listen".into(), "off".into()]);
    args
}

impl Round {
    async fn start(cfg: &BenchConfig, tls: bool) -> Result<Self> {
        let total = cfg.total_chats();
        let (sim, sim_addr, endpoint) = spawn_sim(cfg, total, tls).await?;
        let ca_file = cfg.work_dir.join("sim-ca.pem");
        let port = procs::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut gw_args = gateway_args(cfg, &endpoint, &listen, total);
        if tls {
            gw_args.extend(["--upstream-ca-file".into(), ca_file.display().to_string()]);
        }
        let (gateway, out) = Proc::spawn("connect-chat-gateway", &cfg.gateway_bin, &gw_args)?;
        procs::forward("connect-chat-gateway", out);
        let addr: SocketAddr = listen.parse().map_err(|e| BenchError(format!("{e}")))?;
        procs::wait_listening(addr, "the gateway").await?;
        let pool = GatewayPool::connect(addr, total, cfg.streams_per_connection).await?;
        Ok(Round {
            sim,
            sim_addr,
            gateway,
            pool,
            endpoint,
        })
    }

    async fn stop(self) {
        self.gateway.stop(Duration::from_secs(15)).await;
        self.sim.stop(Duration::from_secs(10)).await;
    }
}

/// Start `n` gateway chats (stream numbers `first..first + n`) with `concurrency` at a time.
/// Returns the chats that became ready, the failures, and the wall time.
async fn start_gateway_chats(
    pool: &GatewayPool,
    first: usize,
    n: usize,
    concurrency: usize,
    recorder: &Arc<Recorder>,
    tasks: &Mutex<JoinSet<()>>,
) -> (Vec<clients::GatewayChat>, Vec<String>, Duration) {
    let t0 = Instant::now();
    let results: Vec<_> = futures::stream::iter(first..first + n)
        .map(|i| {
            let client = pool.client(i);
            let recorder = recorder.clone();
            async move {
                tokio::time::timeout(
                    clients::SETUP_TIMEOUT,
                    clients::gateway_chat(client, format!("bench {i}"), recorder, tasks),
                )
                .await
                .unwrap_or_else(|_| Err("setup timed out".into()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let wall = t0.elapsed();
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(c) => ok.push(c),
            Err(e) => failed.push(e),
        }
    }
    (ok, failed, wall)
}

async fn start_direct_chats(
    direct: &Direct,
    n: usize,
    concurrency: usize,
    recorder: &Arc<Recorder>,
    tasks: &Mutex<JoinSet<()>>,
) -> (Vec<clients::DirectChat>, Vec<String>, Duration) {
    let t0 = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let recorder = recorder.clone();
            async move {
                tokio::time::timeout(
                    clients::SETUP_TIMEOUT,
                    direct.chat(format!("direct {i}"), recorder, tasks),
                )
                .await
                .unwrap_or_else(|_| Err("setup timed out".into()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let wall = t0.elapsed();
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(c) => ok.push(c),
            Err(e) => failed.push(e),
        }
    }
    (ok, failed, wall)
}

fn first_error(errors: &[String]) -> Option<String> {
    errors
        .first()
        .map(|e| format!("{} failed, first: {e}", errors.len()))
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// Let the processes settle (heartbeats, allocator caches) before a memory reading.
async fn settle(cfg: &BenchConfig) {
    tokio::time::sleep(Duration::from_secs_f64(cfg.settle_secs)).await;
}

/// Ramp `cfg.chats` chats into the round's gateway and hold them idle: memory and idle CPU.
async fn capacity(
    cfg: &BenchConfig,
    round: &Round,
    upstream: &str,
    first: usize,
    recorder: &Arc<Recorder>,
    tasks: &Mutex<JoinSet<()>>,
) -> (CapacityReport, Vec<String>) {
    settle(cfg).await;
    let rss_before = procs::rss_bytes(round.gateway.pid).unwrap_or(0);
    let sim_rss_before = procs::rss_bytes(round.sim.pid).unwrap_or(0);
    eprintln!("bench: capacity ({upstream}): starting {} chats", cfg.chats);
    let (ok, failed, wall) = start_gateway_chats(
        &round.pool,
        first,
        cfg.chats,
        cfg.concurrency,
        recorder,
        tasks,
    )
    .await;
    settle(cfg).await;
    let rss_after = procs::rss_bytes(round.gateway.pid).unwrap_or(0);
    let sim_rss_after = procs::rss_bytes(round.sim.pid).unwrap_or(0);
    eprintln!(
        "bench: capacity ({upstream}): {} ready; idle for {} s",
        ok.len(),
        cfg.idle_secs
    );
    let gw_mark = CpuMark::now(round.gateway.pid);
    let sim_mark = CpuMark::now(round.sim.pid);
    tokio::time::sleep(Duration::from_secs_f64(cfg.idle_secs)).await;
    let (_, gw_idle) = gw_mark.since(round.gateway.pid);
    let (_, sim_idle) = sim_mark.since(round.sim.pid);
    let n = ok.len().max(1) as f64;
    let ready = stats::summarize(ok.iter().map(|c| nanos(c.ready)).collect());
    let report = CapacityReport {
        upstream: upstream.to_owned(),
        chats: ok.len(),
        failed: failed.len(),
        first_error: first_error(&failed),
        ramp_secs: wall.as_secs_f64(),
        ramp_chats_per_s: ok.len() as f64 / wall.as_secs_f64().max(1e-9),
        ramp_ready: ready,
        gateway_rss_before: rss_before,
        gateway_rss_after: rss_after,
        gateway_kib_per_chat: (rss_after as f64 - rss_before as f64) / n / 1024.0,
        gateway_idle_cores: gw_idle,
        sim_kib_per_chat: (sim_rss_after as f64 - sim_rss_before as f64) / n / 1024.0,
        sim_idle_cores: sim_idle,
        streams_ended: recorder.ended.load(Ordering::Relaxed),
    };
    (report, ok.into_iter().map(|c| c.contact_id).collect())
}

/// Run the whole bench.
pub async fn run(cfg: &BenchConfig) -> Result<Report> {
    let nofile = procs::raise_nofile();
    let needed = (cfg.chats + 2 * cfg.setup_chats) as u64 + 1000;
    if nofile < needed {
        eprintln!(
            "bench: warning: the open-file limit is {nofile}, below the ~{needed} this size needs"
        );
    }
    for bin in [&cfg.sim_bin, &cfg.gateway_bin] {
        if !bin.exists() {
            return Err(BenchError(format!(
                "{} not found: build the binaries first (cargo build --release --bins)",
                bin.display()
            )));
        }
    }
    let mut report = Report::new(cfg, nofile);
    report.machine.load_average_before = procs::load_average();
    if cfg.attachments_only {
        eprintln!("bench: attachment round: {} MB", cfg.attachment_mb);
        report.attachment = Some(attachments::run(cfg).await?);
        report.machine.load_average_after = procs::load_average();
        report.check_targets();
        return Ok(report);
    }

    // Round 1: plain sockets. Setup and latency side by side, then capacity and throughput.
    eprintln!("bench: round 1 (ws://): starting the simulator and the gateway");
    let round = Round::start(cfg, false).await?;
    let direct = Direct::new(&round.endpoint).await;
    let gw_rec = Arc::new(Recorder::default());
    let direct_rec = Arc::new(Recorder::default());
    let gw_tasks = Mutex::new(JoinSet::new());
    let direct_tasks = Mutex::new(JoinSet::new());

    // Warm both paths (connection pools, allocator) with a few chats that are not measured.
    let warm = cfg.concurrency.min(cfg.setup_chats).max(1);
    let (_, failed, _) = start_direct_chats(&direct, warm, warm, &direct_rec, &direct_tasks).await;
    if let Some(e) = first_error(&failed) {
        return Err(BenchError(format!("direct warm-up: {e}")));
    }
    let (_, failed, _) = start_gateway_chats(&round.pool, 0, warm, warm, &gw_rec, &gw_tasks).await;
    if let Some(e) = first_error(&failed) {
        return Err(BenchError(format!("gateway warm-up: {e}")));
    }
    let mut next_stream = warm;

    eprintln!("bench: setup: {} chats on each side", cfg.setup_chats);
    let (d_ok, d_failed, d_wall) = start_direct_chats(
        &direct,
        cfg.setup_chats,
        cfg.setup_concurrency,
        &direct_rec,
        &direct_tasks,
    )
    .await;
    let (g_ok, g_failed, g_wall) = start_gateway_chats(
        &round.pool,
        next_stream,
        cfg.setup_chats,
        cfg.setup_concurrency,
        &gw_rec,
        &gw_tasks,
    )
    .await;
    next_stream += cfg.setup_chats;
    report.setup = Some(SetupReport::new(
        cfg,
        (&g_ok, &g_failed, g_wall),
        (&d_ok, &d_failed, d_wall),
    ));

    eprintln!(
        "bench: latency: {} stamped messages/s on each side for {} s",
        cfg.latency_rate, cfg.latency_secs
    );
    let mut ids = Vec::new();
    for (g, d) in g_ok.iter().zip(d_ok.iter()) {
        ids.push(g.contact_id.clone());
        ids.push(d.contact_id.clone());
    }
    let sides = ids.len() / 2;
    gw_rec.take_samples();
    direct_rec.take_samples();
    gw_rec.recording.store(true, Ordering::Relaxed);
    direct_rec.recording.store(true, Ordering::Relaxed);
    let gw_mark = CpuMark::now(round.gateway.pid);
    let load = clients::sim_load(
        round.sim_addr,
        2.0 * cfg.latency_rate,
        cfg.latency_secs,
        &ids,
        true,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw_rec.recording.store(false, Ordering::Relaxed);
    direct_rec.recording.store(false, Ordering::Relaxed);
    let (_, gw_cores) = gw_mark.since(round.gateway.pid);
    report.latency = Some(LatencyReport::new(
        cfg,
        sides,
        &load,
        stats::summarize(gw_rec.take_samples()),
        stats::summarize(direct_rec.take_samples()),
        gw_cores,
    ));
    // The direct sockets are done: close them.
    direct_tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .abort_all();

    let cap_rec = Arc::new(Recorder::default());
    let cap_tasks = Mutex::new(JoinSet::new());
    let (cap, cap_ids) = capacity(cfg, &round, "ws", next_stream, &cap_rec, &cap_tasks).await;
    report.capacity.push(cap);

    eprintln!(
        "bench: throughput: {} messages/s over {} chats for {} s",
        cfg.throughput_rate,
        cap_ids.len(),
        cfg.throughput_secs
    );
    let before = cap_rec.messages.load(Ordering::Relaxed);
    let ended_before = cap_rec.ended.load(Ordering::Relaxed);
    let gw_mark = CpuMark::now(round.gateway.pid);
    let sim_mark = CpuMark::now(round.sim.pid);
    let bench_mark = CpuMark::now(std::process::id());
    let load = clients::sim_load(
        round.sim_addr,
        cfg.throughput_rate,
        cfg.throughput_secs,
        &cap_ids,
        false,
    )
    .await?;
    let delivered_in_window = cap_rec.messages.load(Ordering::Relaxed) - before;
    let (gw_cpu, gw_cores) = gw_mark.since(round.gateway.pid);
    let (_, sim_cores) = sim_mark.since(round.sim.pid);
    let (_, bench_cores) = bench_mark.since(std::process::id());
    // What was still in flight when the load stopped, for the delivery check.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered_total = cap_rec.messages.load(Ordering::Relaxed) - before;
    report.throughput = Some(ThroughputReport::new(
        cfg,
        cap_ids.len(),
        &load,
        delivered_in_window,
        delivered_total,
        gw_cpu,
        gw_cores,
        sim_cores,
        bench_cores,
        cap_rec.ended.load(Ordering::Relaxed) - ended_before,
    ));
    drop(gw_tasks);
    drop(cap_tasks);
    round.stop().await;

    if cfg.tls {
        eprintln!("bench: round 2 (wss://): starting the simulator and the gateway");
        let round = Round::start(cfg, true).await?;
        let rec = Arc::new(Recorder::default());
        let tasks = Mutex::new(JoinSet::new());
        // The same warm-up as round 1 had before its capacity ramp.
        let (_, failed, _) = start_gateway_chats(
            &round.pool,
            0,
            warm + cfg.setup_chats,
            cfg.concurrency,
            &rec,
            &tasks,
        )
        .await;
        if let Some(e) = first_error(&failed) {
            return Err(BenchError(format!("TLS warm-up: {e}")));
        }
        let cap_rec = Arc::new(Recorder::default());
        let cap_tasks = Mutex::new(JoinSet::new());
        let (cap, _) = capacity(
            cfg,
            &round,
            "wss",
            warm + cfg.setup_chats,
            &cap_rec,
            &cap_tasks,
        )
        .await;
        report.capacity.push(cap);
        drop(tasks);
        drop(cap_tasks);
        round.stop().await;
        let _ = std::fs::remove_dir_all(&cfg.work_dir);
    }
    if cfg.cluster {
        eprintln!(
            "bench: cluster round: {} replicas on one Redis",
            cluster::REPLICAS
        );
        let single = report.latency.as_ref().map(|l| l.gateway.clone());
        report.cluster = Some(cluster::run(cfg, single.as_ref()).await?);
    }
    if cfg.attachment_mb > 0 {
        eprintln!("bench: attachment round: {} MB", cfg.attachment_mb);
        report.attachment = Some(attachments::run(cfg).await?);
    }
    report.machine.load_average_after = procs::load_average();
    report.check_targets();
    Ok(report)
}
