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
pub mod floor;
pub mod instructions;
pub mod procs;
pub mod quota;
pub mod report;
pub mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::task::JoinSet;

use clients::{Direct, GatewayPool, Recorder};
use procs::{CpuMark, MachineMark, Proc};
use report::{
    CapacityReport, CeilingReport, LatencyReport, ProcessCapacity, Report, SetupReport,
    ThroughputReport, Usage,
};

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
    /// This bench's own binary: the idle floor runs it in two hidden roles.
    pub bench_bin: PathBuf,
    /// Where the simulator writes its CA certificate in the TLS round.
    pub work_dir: PathBuf,
    /// Capacity: concurrent chats held idle, each with its socket and one Subscribe stream.
    pub chats: usize,
    /// Capacity: most chats one gateway process (and one simulator process) holds; more are
    /// spread over as many pairs of processes as they need. Bounded by the open-file limit:
    /// each chat costs the gateway and the simulator one descriptor each.
    pub chats_per_process: usize,
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
    /// Worker threads of each gateway and simulator process (`--worker-threads`; 0: one per
    /// CPU).
    pub worker_threads: usize,
    /// Pause before each memory reading, so heartbeats and allocator caches settle.
    pub settle_secs: f64,
    /// Run the cluster round (three replicas on a private `redis-server`).
    pub cluster: bool,
    /// Cluster round: chats owned by the first replica, each read on one of the others.
    pub cluster_chats: usize,
    /// The attachment round's file size, MB (0: no round).
    pub attachment_mb: usize,
    /// Run the attachment round only.
    pub attachments_only: bool,
    /// Run the instruction-count round only (the gateway under valgrind's callgrind).
    pub instructions_only: bool,
    /// Measure the idle floor ([`floor`]) before the rounds.
    pub floor: bool,
    /// The floor's heartbeat interval: the gateway's default.
    pub floor_heartbeat: Duration,
    /// The gateway's ceiling: the throughput load again with the gateway held to this many
    /// cores ([`quota`]), so that it and not the load side saturates (0: skipped).
    pub gateway_quota: f64,
}

impl BenchConfig {
    /// The default sizes, with the binaries next to the running executable.
    pub fn new() -> Self {
        let dir = procs::sibling_dir();
        BenchConfig {
            sim_bin: dir.join("connect-sim"),
            gateway_bin: dir.join("connect-chat-gateway"),
            bench_bin: dir.join("connect-chat-bench"),
            work_dir: std::env::temp_dir()
                .join(format!("connect-chat-bench-{}", std::process::id())),
            chats: 10_000,
            chats_per_process: 18_000,
            setup_chats: 500,
            concurrency: 32,
            setup_concurrency: 1,
            latency_rate: 1_000.0,
            latency_secs: 10.0,
            throughput_rate: 60_000.0,
            throughput_secs: 10.0,
            idle_secs: 30.0,
            tls: true,
            streams_per_connection: 100,
            worker_threads: 1,
            settle_secs: 2.0,
            cluster: cluster::available(),
            cluster_chats: 2_000,
            attachment_mb: 20,
            attachments_only: false,
            instructions_only: false,
            floor: true,
            floor_heartbeat: Duration::from_secs(10),
            gateway_quota: 0.5,
        }
    }
}

impl BenchConfig {
    /// Pairs of processes (a gateway and its simulator) the capacity chats are spread over.
    pub fn processes(&self) -> usize {
        self.chats.div_ceil(self.chats_per_process.max(1)).max(1)
    }

    /// Capacity chats of process `index` (the first ones take the remainder).
    pub(crate) fn share(&self, index: usize) -> usize {
        let p = self.processes();
        self.chats / p + usize::from(index < self.chats % p)
    }

    /// Streams and chats a gateway holds at most in a round: the first one's warm-up, setup
    /// and capacity share; the others' share.
    fn total_chats(&self, index: usize) -> usize {
        self.share(index)
            + if index == 0 {
                self.setup_chats + self.concurrency
            } else {
                0
            }
    }

    /// Descriptors a process of the run needs at most: the first simulator holds the first
    /// gateway's sockets and the direct baseline's (setup, warm-up), plus listeners, files
    /// and the admin connections.
    fn descriptors_needed(&self) -> u64 {
        (self.total_chats(0) + self.setup_chats + self.concurrency) as u64 + 512
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

/// The loopback address of process pair `index`: each simulator listens on its own, so no
/// one destination takes more sockets than the ephemeral ports give (127.0.0.0/8 is all
/// loopback).
fn shard_host(index: usize) -> String {
    format!("127.0.0.{}", 1 + index % 250)
}

/// Where the simulator of pair `index` writes its CA certificate in the TLS round.
fn ca_file(cfg: &BenchConfig, index: usize) -> PathBuf {
    cfg.work_dir.join(format!("sim-ca-{index}.pem"))
}

/// Starts the simulator of pair `index` for `total` chats; answers it, its address and its
/// endpoint URL.
async fn spawn_sim(
    cfg: &BenchConfig,
    index: usize,
    total: usize,
    tls: bool,
) -> Result<(Proc, SocketAddr, String)> {
    spawn_sim_under(cfg, index, total, tls, None).await
}

/// [`spawn_sim`], run by `launcher` (a program and its arguments, the simulator's command
/// line appended) when one is given: the instruction round runs it under callgrind.
async fn spawn_sim_under(
    cfg: &BenchConfig,
    index: usize,
    total: usize,
    tls: bool,
    launcher: Option<(&Path, Vec<String>)>,
) -> Result<(Proc, SocketAddr, String)> {
    let bind = format!("{}:0", shard_host(index));
    let mut sim_args: Vec<String> = ["--bind", &bind, "--silent", "--join-delay-ms", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sim_args.extend([
        "--max-chats".into(),
        (2 * total + 1000).to_string(),
        "--worker-threads".into(),
        cfg.worker_threads.to_string(),
    ]);
    let ca_file = ca_file(cfg, index);
    if tls {
        std::fs::create_dir_all(&cfg.work_dir)?;
        sim_args.extend([
            "--tls".into(),
            "--tls-ca-file".into(),
            ca_file.display().to_string(),
        ]);
    }
    let launcher_used = launcher.is_some();
    let (sim, out) = match launcher {
        None => Proc::spawn("connect-sim", &cfg.sim_bin, &sim_args)?,
        Some((program, mut args)) => {
            args.push(cfg.sim_bin.display().to_string());
            args.extend(sim_args);
            Proc::spawn("connect-sim", program, &args)?
        }
    };
    // Valgrind starts a program tens of times slower.
    let wait = Duration::from_secs(if launcher_used { 120 } else { 20 });
    let endpoint = procs::read_until("connect-sim", out, wait, |line| {
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
        "--worker-threads".into(),
        cfg.worker_threads.to_string(),
    ];
    args.extend(["--admin-listen".into(), "off".into()]);
    args
}

impl Round {
    /// The first pair of processes of a round (setup, latency, throughput and a capacity
    /// share), and the others the capacity chats need.
    async fn start_all(cfg: &BenchConfig, tls: bool) -> Result<Vec<Self>> {
        let mut rounds = Vec::new();
        for index in 0..cfg.processes() {
            rounds.push(Self::start(cfg, index, tls).await?);
        }
        Ok(rounds)
    }

    async fn start(cfg: &BenchConfig, index: usize, tls: bool) -> Result<Self> {
        let total = cfg.total_chats(index);
        let (sim, sim_addr, endpoint) = spawn_sim(cfg, index, total, tls).await?;
        let ca_file = ca_file(cfg, index);
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

/// Stops every pair of processes of a round, all at once.
async fn stop_all(rounds: Vec<Round>) {
    futures::future::join_all(rounds.into_iter().map(Round::stop)).await;
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

/// Readings of one pair of processes, taken before a capacity ramp.
struct Before {
    gateway_rss: u64,
    sim_rss: u64,
    gateway_fds: usize,
    sim_fds: usize,
    gateway_cpu: CpuMark,
}

/// Ramp `cfg.chats` chats into the round's gateways (spread over them, chat `i` to process
/// `i % processes`) and hold them idle: memory, descriptors and idle CPU per process, and in
/// total. `first` is the first free stream number of the first process.
async fn capacity(
    cfg: &BenchConfig,
    rounds: &[Round],
    upstream: &str,
    first: usize,
    recorder: &Arc<Recorder>,
    tasks: &Mutex<JoinSet<()>>,
) -> (CapacityReport, Vec<String>) {
    settle(cfg).await;
    let before: Vec<Before> = rounds
        .iter()
        .map(|r| Before {
            gateway_rss: procs::rss_bytes(r.gateway.pid).unwrap_or(0),
            sim_rss: procs::rss_bytes(r.sim.pid).unwrap_or(0),
            gateway_fds: procs::open_fds(r.gateway.pid).unwrap_or(0),
            sim_fds: procs::open_fds(r.sim.pid).unwrap_or(0),
            gateway_cpu: CpuMark::now(r.gateway.pid),
        })
        .collect();
    eprintln!(
        "bench: capacity ({upstream}): starting {} chats over {} gateway processes",
        cfg.chats,
        rounds.len()
    );
    let p = rounds.len();
    let t0 = Instant::now();
    let results: Vec<(usize, std::result::Result<clients::GatewayChat, String>)> =
        futures::stream::iter(0..cfg.chats)
            .map(|i| {
                let shard = i % p;
                let stream = i / p + if shard == 0 { first } else { 0 };
                let client = rounds[shard].pool.client(stream);
                let recorder = recorder.clone();
                async move {
                    let r = tokio::time::timeout(
                        clients::SETUP_TIMEOUT,
                        clients::gateway_chat(
                            client,
                            format!("bench {shard}-{stream}"),
                            recorder,
                            tasks,
                        ),
                    )
                    .await
                    .unwrap_or_else(|_| Err("setup timed out".into()));
                    (shard, r)
                }
            })
            .buffer_unordered(cfg.concurrency.max(1))
            .collect()
            .await;
    let wall = t0.elapsed();
    let ramp_cpu: Vec<f64> = rounds
        .iter()
        .zip(&before)
        .map(|(r, b)| b.gateway_cpu.since(r.gateway.pid).0)
        .collect();
    let mut ok: Vec<Vec<clients::GatewayChat>> = (0..p).map(|_| Vec::new()).collect();
    let mut failed: Vec<Vec<String>> = vec![Vec::new(); p];
    for (shard, r) in results {
        match r {
            Ok(c) => ok[shard].push(c),
            Err(e) => failed[shard].push(e),
        }
    }
    settle(cfg).await;
    let after: Vec<(u64, u64, usize, usize)> = rounds
        .iter()
        .map(|r| {
            (
                procs::rss_bytes(r.gateway.pid).unwrap_or(0),
                procs::rss_bytes(r.sim.pid).unwrap_or(0),
                procs::open_fds(r.gateway.pid).unwrap_or(0),
                procs::open_fds(r.sim.pid).unwrap_or(0),
            )
        })
        .collect();
    let ready_total: usize = ok.iter().map(Vec::len).sum();
    eprintln!(
        "bench: capacity ({upstream}): {ready_total} ready; idle for {} s",
        cfg.idle_secs
    );
    let marks: Vec<(CpuMark, CpuMark)> = rounds
        .iter()
        .map(|r| (CpuMark::now(r.gateway.pid), CpuMark::now(r.sim.pid)))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(cfg.idle_secs)).await;
    let idle: Vec<(f64, f64)> = rounds
        .iter()
        .zip(&marks)
        .map(|(r, (g, s))| (g.since(r.gateway.pid).1, s.since(r.sim.pid).1))
        .collect();
    let per_chat = |grown: f64, n: usize| grown / n.max(1) as f64;
    let per_process: Vec<ProcessCapacity> = (0..p)
        .map(|i| {
            let n = ok[i].len();
            let (g_rss, s_rss, g_fds, s_fds) = after[i];
            ProcessCapacity {
                chats: n,
                failed: failed[i].len(),
                gateway_rss_before: before[i].gateway_rss,
                gateway_rss_after: g_rss,
                gateway_kib_per_chat: per_chat(g_rss as f64 - before[i].gateway_rss as f64, n)
                    / 1024.0,
                gateway_fds_per_chat: per_chat(g_fds as f64 - before[i].gateway_fds as f64, n),
                gateway_fds: g_fds,
                gateway_idle_cores: idle[i].0,
                gateway_cpu_us_per_start: per_chat(ramp_cpu[i] * 1e6, n),
                sim_kib_per_chat: per_chat(s_rss as f64 - before[i].sim_rss as f64, n) / 1024.0,
                sim_fds_per_chat: per_chat(s_fds as f64 - before[i].sim_fds as f64, n),
                sim_idle_cores: idle[i].1,
            }
        })
        .collect();
    let all_ok: Vec<&clients::GatewayChat> = ok.iter().flatten().collect();
    let all_failed: Vec<String> = failed.iter().flatten().cloned().collect();
    let grown = |f: &dyn Fn(&ProcessCapacity) -> f64| per_process.iter().map(f).sum::<f64>();
    let gateway_grown = grown(&|c| c.gateway_rss_after as f64 - c.gateway_rss_before as f64);
    let sim_grown: f64 = (0..p)
        .map(|i| after[i].1 as f64 - before[i].sim_rss as f64)
        .sum();
    let ready = stats::summarize(all_ok.iter().map(|c| nanos(c.ready)).collect());
    let report = CapacityReport {
        upstream: upstream.to_owned(),
        processes: p,
        chats: all_ok.len(),
        failed: all_failed.len(),
        first_error: first_error(&all_failed),
        ramp_secs: wall.as_secs_f64(),
        ramp_chats_per_s: all_ok.len() as f64 / wall.as_secs_f64().max(1e-9),
        ramp_ready: ready,
        gateway_rss_before: per_process.iter().map(|c| c.gateway_rss_before).sum(),
        gateway_rss_after: per_process.iter().map(|c| c.gateway_rss_after).sum(),
        gateway_kib_per_chat: per_chat(gateway_grown, all_ok.len()) / 1024.0,
        gateway_fds_per_chat: per_chat(
            grown(&|c| c.gateway_fds_per_chat * c.chats as f64),
            all_ok.len(),
        ),
        gateway_idle_cores: grown(&|c| c.gateway_idle_cores),
        gateway_cpu_us_per_start: per_chat(ramp_cpu.iter().sum::<f64>() * 1e6, all_ok.len()),
        sim_kib_per_chat: per_chat(sim_grown, all_ok.len()) / 1024.0,
        sim_idle_cores: grown(&|c| c.sim_idle_cores),
        streams_ended: recorder.ended.load(Ordering::Relaxed),
        per_process,
    };
    // The first process's chats: the throughput round loads them through its simulator.
    let first_ids = ok
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.contact_id)
        .collect();
    (report, first_ids)
}

/// Loads the first process's capacity chats through its simulator at the asked rate and
/// measures what was delivered and what each process spent.
async fn throughput(
    cfg: &BenchConfig,
    round: &Round,
    cap_ids: &[String],
    cap_rec: &Recorder,
    cores: usize,
) -> Result<ThroughputReport> {
    let before = cap_rec.messages.load(Ordering::Relaxed);
    let ended_before = cap_rec.ended.load(Ordering::Relaxed);
    let gw_mark = CpuMark::now(round.gateway.pid);
    let sim_mark = CpuMark::now(round.sim.pid);
    let bench_mark = CpuMark::now(std::process::id());
    let machine_mark = MachineMark::now();
    let load = clients::sim_load(
        round.sim_addr,
        cfg.throughput_rate,
        cfg.throughput_secs,
        cap_ids,
        false,
    )
    .await?;
    let delivered_in_window = cap_rec.messages.load(Ordering::Relaxed) - before;
    let (gw_cpu, gw_cores) = gw_mark.since(round.gateway.pid);
    let gw_kernel = gw_mark.kernel_since(round.gateway.pid);
    let (_, sim_cores) = sim_mark.since(round.sim.pid);
    let sim_kernel = sim_mark.kernel_since(round.sim.pid);
    let (_, bench_cores) = bench_mark.since(std::process::id());
    let machine_cores = machine_mark.busy_cores_since(cores);
    // What was still in flight when the load stopped, for the delivery check.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered_total = cap_rec.messages.load(Ordering::Relaxed) - before;
    Ok(ThroughputReport::new(
        cfg,
        cap_ids.len(),
        &load,
        delivered_in_window,
        delivered_total,
        gw_cpu,
        gw_kernel,
        gw_cores,
        Usage {
            sim_cores,
            sim_kernel,
            bench_cores,
            machine_cores,
            cores,
        },
        cap_rec.ended.load(Ordering::Relaxed) - ended_before,
    ))
}

/// Run the whole bench.
pub async fn run(cfg: &BenchConfig) -> Result<Report> {
    let nofile = procs::raise_nofile();
    let needed = cfg.descriptors_needed();
    if !cfg.attachments_only && nofile < needed {
        return Err(BenchError(format!(
            "the open-file limit is {nofile} per process, and a process of this run needs about \
             {needed} ({} chats per gateway process, one descriptor each in the gateway and in \
             the simulator, plus the setup round's): lower --chats-per-process, or raise the \
             limit (ulimit -n, or LimitNOFILE= for a service)",
            cfg.total_chats(0)
        )));
    }
    if cfg.processes() > 250 {
        return Err(BenchError(format!(
            "{} processes of each kind are more than this bench spreads over loopback addresses; \
             raise --chats-per-process",
            cfg.processes()
        )));
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
    if cfg.instructions_only {
        eprintln!("bench: instruction-count round (callgrind)");
        report.instructions = Some(instructions::run(cfg, false).await?);
        if cfg.tls {
            report.instructions_tls = Some(instructions::run(cfg, true).await?);
        }
        report.machine.load_average_after = procs::load_average();
        report.check_targets();
        return Ok(report);
    }
    if cfg.attachments_only {
        eprintln!("bench: attachment round: {} MB", cfg.attachment_mb);
        report.attachment = Some(attachments::run(cfg).await?);
        report.machine.load_average_after = procs::load_average();
        report.check_targets();
        return Ok(report);
    }

    if cfg.floor {
        eprintln!(
            "bench: idle floor: {} bare sockets, a heartbeat's bytes and their echo every {:?}",
            floor::sockets(cfg),
            cfg.floor_heartbeat
        );
        match floor::run(cfg).await {
            Ok(f) => report.floor = Some(f),
            Err(e) => eprintln!("bench: the idle floor failed: {e}"),
        }
    }

    // Round 1: plain sockets. Setup and latency side by side, then capacity and throughput.
    eprintln!("bench: round 1 (ws://): starting the simulator and the gateway");
    let rounds = Round::start_all(cfg, false).await?;
    let round = &rounds[0];
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
    let (cap, cap_ids) = capacity(cfg, &rounds, "ws", next_stream, &cap_rec, &cap_tasks).await;
    report.capacity.push(cap);

    eprintln!(
        "bench: throughput: {} messages/s over {} chats for {} s",
        cfg.throughput_rate,
        cap_ids.len(),
        cfg.throughput_secs
    );
    report.throughput =
        Some(throughput(cfg, round, &cap_ids, &cap_rec, report.machine.cores).await?);
    if cfg.gateway_quota > 0.0 {
        eprintln!(
            "bench: the gateway's ceiling: the same load with the gateway held to {} cores",
            cfg.gateway_quota
        );
        match quota::CpuQuota::apply(round.gateway.pid, cfg.gateway_quota) {
            Ok(held) => {
                let run = throughput(cfg, round, &cap_ids, &cap_rec, report.machine.cores).await;
                drop(held);
                report.ceiling = Some(CeilingReport::new(cfg.gateway_quota, run?));
            }
            Err(e) => eprintln!("bench: the gateway's ceiling skipped: {e}"),
        }
    }
    drop(gw_tasks);
    drop(cap_tasks);
    stop_all(rounds).await;

    if cfg.tls {
        eprintln!("bench: round 2 (wss://): starting the simulator and the gateway");
        let rounds = Round::start_all(cfg, true).await?;
        let round = &rounds[0];
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
            &rounds,
            "wss",
            warm + cfg.setup_chats,
            &cap_rec,
            &cap_tasks,
        )
        .await;
        report.capacity.push(cap);
        drop(tasks);
        drop(cap_tasks);
        stop_all(rounds).await;
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
