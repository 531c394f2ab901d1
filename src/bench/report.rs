//! The figures of a run, the targets they are held against, and the printed table.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::clients::{DirectChat, GatewayChat};
use super::stats::{ratio, summarize, Summary};
use super::BenchConfig;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub open_file_limit: u64,
    pub note: &'static str,
    /// 1-minute load average at the start and the end of the run.
    pub load_average_before: f64,
    pub load_average_after: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sizes {
    pub chats: usize,
    pub chats_per_process: usize,
    pub processes: usize,
    pub setup_chats: usize,
    pub concurrency: usize,
    pub latency_rate_per_side: f64,
    pub latency_secs: f64,
    pub throughput_rate: f64,
    pub throughput_secs: f64,
    pub idle_secs: f64,
    /// Worker threads of each gateway and simulator process (0: one per CPU).
    pub worker_threads: usize,
}

/// StartChat against the direct calls it stands for.
#[derive(Clone, Debug, Serialize)]
pub struct SetupReport {
    pub chats_per_side: usize,
    pub concurrency: usize,
    /// The StartChat RPC alone.
    pub gateway_start_chat: Summary,
    /// StartChat, Subscribe, until the stream reports the upstream socket connected.
    pub gateway_ready: Summary,
    pub gateway_chats_per_s: f64,
    pub gateway_failed: usize,
    /// StartChatContact alone.
    pub direct_start_contact: Summary,
    /// StartChatContact, CreateParticipantConnection, socket open, subscribe acknowledged.
    pub direct_ready: Summary,
    pub direct_chats_per_s: f64,
    pub direct_failed: usize,
    pub added_start_p50_ms: f64,
    pub added_start_p99_ms: f64,
    pub added_ready_p50_ms: f64,
    pub added_ready_p99_ms: f64,
}

impl SetupReport {
    pub fn new(
        cfg: &BenchConfig,
        gateway: (&[GatewayChat], &[String], std::time::Duration),
        direct: (&[DirectChat], &[String], std::time::Duration),
    ) -> Self {
        let ns = |d: std::time::Duration| d.as_nanos() as u64;
        let gs = summarize(gateway.0.iter().map(|c| ns(c.start)).collect());
        let gr = summarize(gateway.0.iter().map(|c| ns(c.ready)).collect());
        let ds = summarize(direct.0.iter().map(|c| ns(c.start)).collect());
        let dr = summarize(direct.0.iter().map(|c| ns(c.ready)).collect());
        SetupReport {
            chats_per_side: cfg.setup_chats,
            concurrency: cfg.setup_concurrency,
            gateway_chats_per_s: gateway.0.len() as f64 / gateway.2.as_secs_f64().max(1e-9),
            gateway_failed: gateway.1.len(),
            direct_chats_per_s: direct.0.len() as f64 / direct.2.as_secs_f64().max(1e-9),
            direct_failed: direct.1.len(),
            added_start_p50_ms: gs.p50_ms - ds.p50_ms,
            added_start_p99_ms: gs.p99_ms - ds.p99_ms,
            added_ready_p50_ms: gr.p50_ms - dr.p50_ms,
            added_ready_p99_ms: gr.p99_ms - dr.p99_ms,
            gateway_start_chat: gs,
            gateway_ready: gr,
            direct_start_contact: ds,
            direct_ready: dr,
        }
    }
}

/// End-to-end latency from the simulated agent's push to the receiver, both paths at once.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyReport {
    pub rate_per_side: f64,
    pub secs: f64,
    pub chats_per_side: usize,
    pub pushed: u64,
    /// Messages the simulator could not push on time (0 when the rate was held).
    pub behind: u64,
    pub gateway: Summary,
    pub direct: Summary,
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    pub added_p999_ms: f64,
    pub ratio_p50: f64,
    pub ratio_p99: f64,
    /// The gateway's CPU during the phase, in cores.
    pub gateway_cores: f64,
}

impl LatencyReport {
    pub fn new(
        cfg: &BenchConfig,
        chats_per_side: usize,
        load: &Value,
        gateway: Summary,
        direct: Summary,
        gateway_cores: f64,
    ) -> Self {
        LatencyReport {
            rate_per_side: cfg.latency_rate,
            secs: cfg.latency_secs,
            chats_per_side,
            pushed: load["pushed"].as_u64().unwrap_or(0),
            behind: load["behind"].as_u64().unwrap_or(0),
            added_p50_ms: gateway.p50_ms - direct.p50_ms,
            added_p99_ms: gateway.p99_ms - direct.p99_ms,
            added_p999_ms: gateway.p999_ms - direct.p999_ms,
            ratio_p50: ratio(gateway.p50_ms, direct.p50_ms),
            ratio_p99: ratio(gateway.p99_ms, direct.p99_ms),
            gateway,
            direct,
            gateway_cores,
        }
    }
}

/// Chats held idle in one gateway process.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    /// `ws` or `wss` upstream sockets.
    pub upstream: String,
    /// Gateway processes the chats were spread over (each with its own simulator).
    pub processes: usize,
    /// Summed over the processes.
    pub chats: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub ramp_secs: f64,
    pub ramp_chats_per_s: f64,
    /// StartChat + Subscribe until connected, during the ramp.
    pub ramp_ready: Summary,
    pub gateway_rss_before: u64,
    pub gateway_rss_after: u64,
    /// Resident growth of every gateway process over the chats they hold.
    pub gateway_kib_per_chat: f64,
    /// Descriptors a chat costs a gateway process (its upstream socket; the Subscribe
    /// streams share gRPC connections).
    pub gateway_fds_per_chat: f64,
    /// The gateways' CPU while the chats are idle, in cores, summed.
    pub gateway_idle_cores: f64,
    /// The gateways' CPU during the ramp per chat started (StartChat, its session, the
    /// CreateParticipantConnection and socket, the transcript backfill, the Subscribe).
    pub gateway_cpu_us_per_start: f64,
    pub sim_kib_per_chat: f64,
    pub sim_idle_cores: f64,
    /// Streams that ended while held (should be 0).
    pub streams_ended: u64,
    /// Each gateway process and its simulator.
    pub per_process: Vec<ProcessCapacity>,
}

/// One gateway process of a capacity round, and its simulator.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessCapacity {
    pub chats: usize,
    pub failed: usize,
    pub gateway_rss_before: u64,
    pub gateway_rss_after: u64,
    pub gateway_kib_per_chat: f64,
    pub gateway_fds: usize,
    pub gateway_fds_per_chat: f64,
    pub gateway_idle_cores: f64,
    pub gateway_cpu_us_per_start: f64,
    pub sim_kib_per_chat: f64,
    pub sim_fds_per_chat: f64,
    pub sim_idle_cores: f64,
}

/// Agent messages fanned out to subscribers.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputReport {
    pub chats: usize,
    pub asked_rate: f64,
    pub secs: f64,
    pub pushed: u64,
    pub behind: u64,
    /// Events delivered to subscribers while the load ran.
    pub delivered: u64,
    /// Including those still in flight when it stopped (compare with `pushed`).
    pub delivered_total: u64,
    pub events_per_s: f64,
    pub gateway_cores: f64,
    pub gateway_cpu_us_per_event: f64,
    /// The part of `gateway_cpu_us_per_event` spent in the kernel (system time: socket
    /// reads and writes, and on loopback the receiving side's TCP work too).
    pub gateway_kernel_us_per_event: f64,
    pub sim_cores: f64,
    /// The simulator's system time per message pushed: on loopback each frame's write also
    /// carries the receiving side's TCP work.
    pub sim_kernel_us_per_message: f64,
    pub bench_cores: f64,
    /// Cores of the whole machine busy over the load (every process, the idle ones too).
    pub machine_busy_cores: f64,
    /// Which process or resource bounded the rate, and how that was decided.
    pub limit: String,
    pub streams_ended: u64,
}

/// The throughput load again with the gateway held to a CPU quota (a cgroup's), so that the
/// gateway and not the load side saturates: its rate over its CPU is its ceiling per core.
#[derive(Clone, Debug, Serialize)]
pub struct CeilingReport {
    pub quota_cores: f64,
    /// The gateway used nine tenths of its quota or more: it, not the load side, was the limit.
    pub saturated: bool,
    /// Events delivered per second per core of gateway CPU.
    pub events_per_s_per_core: f64,
    pub run: ThroughputReport,
}

impl CeilingReport {
    pub fn new(quota_cores: f64, run: ThroughputReport) -> Self {
        CeilingReport {
            quota_cores,
            saturated: run.gateway_cores >= 0.9 * quota_cores,
            events_per_s_per_core: ratio(run.events_per_s, run.gateway_cores),
            run,
        }
    }

    /// What bounded the held run.
    pub fn limit(&self) -> String {
        if self.saturated {
            format!(
                "the gateway, held to {:.2} cores: {:.2} cores busy, {:.0} events/s = {:.0} events/s per core of gateway CPU",
                self.quota_cores, self.run.gateway_cores, self.run.events_per_s, self.events_per_s_per_core
            )
        } else {
            format!(
                "not the gateway even held to {:.2} cores ({:.2} busy): {}",
                self.quota_cores, self.run.gateway_cores, self.run.limit
            )
        }
    }
}

/// CPU used over the throughput load by the processes beside the gateway, and the machine.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub sim_cores: f64,
    /// The simulator's system CPU seconds.
    pub sim_kernel: f64,
    pub bench_cores: f64,
    pub machine_cores: f64,
    /// The machine's cores.
    pub cores: usize,
}

/// What bounded a throughput load: a process at the cores its `threads` worker threads can
/// use (within a tenth), else the machine with nine tenths of its cores busy. Nothing
/// bounded it when the simulator kept the asked rate.
pub fn throughput_limit(behind: u64, gateway_cores: f64, usage: Usage, threads: usize) -> String {
    let cores = usage.cores;
    if behind == 0 {
        return "none: the simulator pushed at the asked rate (ask more with --throughput-rate)"
            .into();
    }
    let saturates = |c: f64| threads > 0 && c >= 0.9 * threads as f64;
    if saturates(gateway_cores) {
        format!("the gateway: {gateway_cores:.2} cores on its {threads} worker thread(s)")
    } else if saturates(usage.sim_cores) {
        format!(
            "the simulator: {:.2} cores on its {threads} worker thread(s), behind the asked rate",
            usage.sim_cores
        )
    } else if usage.machine_cores >= 0.9 * cores as f64 {
        format!(
            "the machine: {:.2} of {cores} cores busy (gateway {gateway_cores:.2}, simulator {:.2}, bench {:.2}, the rest other processes and the kernel's own work)",
            usage.machine_cores, usage.sim_cores, usage.bench_cores
        )
    } else {
        format!(
            "unclear: the simulator fell behind with no process at its threads and {:.2} of {cores} cores busy",
            usage.machine_cores
        )
    }
}

impl ThroughputReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &BenchConfig,
        chats: usize,
        load: &Value,
        delivered: u64,
        delivered_total: u64,
        gateway_cpu: f64,
        gateway_kernel: f64,
        gateway_cores: f64,
        usage: Usage,
        streams_ended: u64,
    ) -> Self {
        let secs = load["elapsed_ms"].as_f64().unwrap_or(0.0) / 1e3;
        let pushed = load["pushed"].as_u64().unwrap_or(0);
        let behind = load["behind"].as_u64().unwrap_or(0);
        ThroughputReport {
            chats,
            asked_rate: cfg.throughput_rate,
            secs,
            pushed,
            behind,
            delivered,
            delivered_total,
            events_per_s: ratio(delivered as f64, secs),
            gateway_cores,
            gateway_cpu_us_per_event: ratio(gateway_cpu * 1e6, delivered as f64),
            gateway_kernel_us_per_event: ratio(gateway_kernel * 1e6, delivered as f64),
            sim_cores: usage.sim_cores,
            sim_kernel_us_per_message: ratio(usage.sim_kernel * 1e6, pushed as f64),
            bench_cores: usage.bench_cores,
            machine_busy_cores: usage.machine_cores,
            limit: throughput_limit(behind, gateway_cores, usage, cfg.worker_threads),
            streams_ended,
        }
    }
}

/// Cluster mode: replicas on one Redis, every event crossing it.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    pub replicas: usize,
    pub chats: usize,
    /// Agent push -> subscriber on a replica without the socket.
    pub latency: Summary,
    /// The single-process gateway's latency of the same run, for comparison.
    pub single_p50_ms: Option<f64>,
    pub single_p99_ms: Option<f64>,
    /// What the Redis hop adds over one process.
    pub added_p50_ms: Option<f64>,
    pub added_p99_ms: Option<f64>,
    pub pushed: u64,
    pub behind: u64,
    pub secs: f64,
    pub delivered: u64,
    /// Including what arrived after the load stopped (compare with `pushed`).
    pub delivered_total: u64,
    /// How long the backlog took to arrive after the load stopped.
    pub drain_secs: f64,
    pub events_per_s: f64,
    /// Commands Redis processed during the throughput phase (those scripts run included),
    /// per delivered event.
    pub redis_commands: u64,
    pub redis_commands_per_event: f64,
    /// Scripts (round trips of the fenced append and the like) per delivered event.
    pub redis_scripts_per_event: f64,
    /// CPU of each replica and of Redis during the throughput phase, in cores.
    pub gateway_cores: Vec<f64>,
    pub redis_cores: f64,
    pub streams_ended: u64,
    /// The chats held, before the latency and throughput phases.
    pub held: ClusterHeld,
}

/// Cluster mode with the chats held and idle: each replica's memory per chat it serves and
/// idle CPU, and what Redis does for idle chats (lease renewals and the like).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterHeld {
    /// Per replica, the first one the owner of every chat.
    pub rss_before: Vec<u64>,
    pub rss_after: Vec<u64>,
    /// Chats each replica serves: the owner holds every chat's socket and session; a reader
    /// holds the Subscribe streams of its share and the session that follows the log.
    pub chats: Vec<usize>,
    pub kib_per_chat: Vec<f64>,
    pub idle_secs: f64,
    pub idle_cores: Vec<f64>,
    pub redis_idle_cores: f64,
    pub sim_idle_cores: f64,
    /// Commands Redis processed per second while the chats were idle.
    pub redis_idle_commands_per_s: f64,
    /// The same per held chat, per minute.
    pub redis_idle_commands_per_chat_per_min: f64,
}

impl ClusterReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chats: usize,
        latency: Summary,
        single: Option<&Summary>,
        load: &Value,
        secs: f64,
        delivered: u64,
        (delivered_total, drain_secs): (u64, f64),
        (redis_commands, redis_scripts): (u64, u64),
        gateway_cores: Vec<f64>,
        redis_cores: f64,
        streams_ended: u64,
        held: ClusterHeld,
    ) -> Self {
        ClusterReport {
            replicas: gateway_cores.len(),
            chats,
            single_p50_ms: single.map(|s| s.p50_ms),
            single_p99_ms: single.map(|s| s.p99_ms),
            added_p50_ms: single.map(|s| latency.p50_ms - s.p50_ms),
            added_p99_ms: single.map(|s| latency.p99_ms - s.p99_ms),
            latency,
            pushed: load["pushed"].as_u64().unwrap_or(0),
            behind: load["behind"].as_u64().unwrap_or(0),
            secs,
            delivered,
            delivered_total,
            drain_secs,
            events_per_s: ratio(delivered as f64, secs),
            redis_commands,
            redis_commands_per_event: ratio(redis_commands as f64, delivered as f64),
            redis_scripts_per_event: ratio(redis_scripts as f64, delivered as f64),
            gateway_cores,
            redis_cores,
            streams_ended,
            held,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// One attachment sent and read back through the gateway.
#[derive(Clone, Debug, Serialize)]
pub struct AttachmentReport {
    pub bytes: u64,
    pub upload_mb_per_s: f64,
    pub download_mb_per_s: f64,
    pub gateway_rss_before: u64,
    /// The gateway's peak resident memory during the upload and the download.
    pub gateway_rss_peak: u64,
    pub gateway_rss_after: u64,
    /// Peak minus before, MiB (`None` where the peak counter could not be reset).
    pub peak_growth_mib: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub sizes: Sizes,
    pub setup: Option<SetupReport>,
    pub latency: Option<LatencyReport>,
    pub capacity: Vec<CapacityReport>,
    /// What the machine alone charges for the heartbeats of idle chats.
    pub floor: Option<super::floor::FloorReport>,
    pub throughput: Option<ThroughputReport>,
    /// The throughput load with the gateway held to a CPU quota.
    pub ceiling: Option<CeilingReport>,
    pub cluster: Option<ClusterReport>,
    pub attachment: Option<AttachmentReport>,
    pub instructions: Option<InstructionsReport>,
    /// The same round over `wss://` upstream sockets.
    pub instructions_tls: Option<InstructionsReport>,
    pub targets: Vec<Target>,
}

/// Instructions the gateway executes per delivered event, counted by callgrind.
#[derive(Clone, Debug, Serialize)]
pub struct InstructionsReport {
    /// The upstream sockets' scheme: `ws://` or `wss://`.
    pub upstream: String,
    pub chats: usize,
    /// Agent messages pushed in each measurement.
    pub events: u64,
    /// One Subscribe stream per chat.
    pub instructions_per_event: f64,
    /// Two Subscribe streams per chat, per event pushed.
    pub instructions_per_event_two_subscribers: f64,
    /// What a second subscriber adds to each event.
    pub extra_subscriber_instructions_per_event: f64,
    /// The simulator's instructions per message pushed (the one-subscriber window): the
    /// load side's cost, beside the gateway's.
    pub sim_instructions_per_message: f64,
    /// Idle chats, each with its socket and one Subscribe stream: the gateway's instructions
    /// per chat and second (heartbeats, their answers, keepalives).
    pub idle_instructions_per_chat_second: f64,
    /// The simulator's, over the same idle window.
    pub sim_idle_instructions_per_chat_second: f64,
    pub streams_ended: u64,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

impl Report {
    pub fn new(cfg: &BenchConfig, open_file_limit: u64) -> Self {
        Report {
            machine: Machine {
                cores: std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
                cpu_model: cpu_model(),
                open_file_limit,
                note: "the bench, the gateway and the simulator share these cores",
                load_average_before: 0.0,
                load_average_after: 0.0,
            },
            sizes: Sizes {
                chats: cfg.chats,
                chats_per_process: cfg.chats_per_process,
                processes: cfg.processes(),
                setup_chats: cfg.setup_chats,
                concurrency: cfg.concurrency,
                latency_rate_per_side: cfg.latency_rate,
                latency_secs: cfg.latency_secs,
                throughput_rate: cfg.throughput_rate,
                throughput_secs: cfg.throughput_secs,
                idle_secs: cfg.idle_secs,
                worker_threads: cfg.worker_threads,
            },
            setup: None,
            latency: None,
            capacity: Vec::new(),
            floor: None,
            throughput: None,
            ceiling: None,
            cluster: None,
            attachment: None,
            instructions: None,
            instructions_tls: None,
            targets: Vec::new(),
        }
    }

    /// Hold the figures against the project's targets.
    pub fn check_targets(&mut self) {
        let mut t = Vec::new();
        for c in &self.capacity {
            t.push(Target {
                name: format!(
                    "capacity ({}): chats held on this machine, none failed",
                    c.upstream
                ),
                target: ">= 100000".into(),
                measured: format!(
                    "{} over {} gateway processes, {} failed",
                    c.chats, c.processes, c.failed
                ),
                met: c.chats >= 100_000 && c.failed == 0,
            });
            let kib = if c.upstream == "wss" { 10.0 } else { 8.0 };
            t.push(Target {
                name: format!("capacity ({}): gateway memory per chat", c.upstream),
                target: format!("<= {kib} KiB"),
                measured: format!("{:.1} KiB", c.gateway_kib_per_chat),
                met: c.gateway_kib_per_chat <= kib,
            });
            t.push(Target {
                name: format!("capacity ({}): idle CPU of every process", c.upstream),
                target: "<= 0.15 cores per 100000 chats".into(),
                measured: format!(
                    "{:.3} cores per 100000 chats (gateways {:.3}, simulators {:.3}, for {} chats){}",
                    (c.gateway_idle_cores + c.sim_idle_cores) * 100_000.0 / c.chats.max(1) as f64,
                    c.gateway_idle_cores,
                    c.sim_idle_cores,
                    c.chats,
                    self.floor
                        .as_ref()
                        .map(|f| format!(
                            "; the machine's floor for the heartbeats alone {:.3}",
                            f.cores_per_100k
                        ))
                        .unwrap_or_default()
                ),
                met: (c.gateway_idle_cores + c.sim_idle_cores) * 100_000.0 / c.chats.max(1) as f64
                    <= 0.15,
            });
        }
        if let Some(th) = &self.throughput {
            t.push(Target {
                name: "throughput: events/s delivered".into(),
                target: ">= 50000".into(),
                measured: format!(
                    "{:.0}{}",
                    th.events_per_s,
                    self.ceiling
                        .as_ref()
                        .filter(|c| c.saturated)
                        .map(|c| format!(
                            "; the gateway's ceiling {:.0} per core of its CPU",
                            c.events_per_s_per_core
                        ))
                        .unwrap_or_default()
                ),
                met: th.events_per_s >= 50_000.0,
            });
            let (measured, met) = match &self.ceiling {
                Some(c) => (c.limit(), c.saturated),
                None => (th.limit.clone(), th.limit.starts_with("the gateway")),
            };
            t.push(Target {
                name: "throughput: the gateway, not the load side, the limit".into(),
                target: "the gateway saturated".into(),
                measured,
                met,
            });
            t.push(Target {
                name: "throughput: gateway CPU per delivered event".into(),
                target: "<= 5 us".into(),
                measured: format!(
                    "{:.2} us ({:.2} us in the kernel)",
                    th.gateway_cpu_us_per_event, th.gateway_kernel_us_per_event
                ),
                met: th.gateway_cpu_us_per_event <= 5.0,
            });
        }
        if let Some(l) = &self.latency {
            t.push(Target {
                name: format!("latency at {}/s: added p50", l.rate_per_side),
                target: "<= 0.2 ms".into(),
                measured: format!("{:.3} ms", l.added_p50_ms),
                met: l.added_p50_ms <= 0.2,
            });
            t.push(Target {
                name: format!("latency at {}/s: added p99", l.rate_per_side),
                target: "<= 1 ms".into(),
                measured: format!("{:.3} ms", l.added_p99_ms),
                met: l.added_p99_ms <= 1.0,
            });
        }
        if let Some(a) = &self.attachment {
            if let Some(growth) = a.peak_growth_mib {
                t.push(Target {
                    name: format!(
                        "attachment of {} MB up and down: peak memory growth",
                        a.bytes / (1024 * 1024)
                    ),
                    target: "< 4 MiB".into(),
                    measured: format!("{growth:.2} MiB"),
                    met: growth < 4.0,
                });
            }
        }
        if let Some(s) = &self.setup {
            t.push(Target {
                name: "StartChat: added over StartChatContact (p50)".into(),
                target: "<= 1 ms".into(),
                measured: format!("{:.3} ms", s.added_start_p50_ms),
                met: s.added_start_p50_ms <= 1.0,
            });
        }
        self.targets = t;
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "machine: {} cores, {} ({}); open-file limit {}; load average {:.2} -> {:.2}",
            m.cores,
            m.cpu_model,
            m.note,
            m.open_file_limit,
            m.load_average_before,
            m.load_average_after
        );
        let threads = match self.sizes.worker_threads {
            0 => "one per core".to_owned(),
            n => n.to_string(),
        };
        let _ = writeln!(
            o,
            "processes: {} gateway(s) and {} simulator(s), worker threads each: {threads}",
            self.sizes.processes, self.sizes.processes
        );
        let row = |o: &mut String, what: &str, gw: String, direct: String, added: String| {
            let _ = writeln!(o, "| {what:<44} | {gw:>14} | {direct:>14} | {added:>16} |");
        };
        if let Some(s) = &self.setup {
            let _ = writeln!(
                o,
                "\nsetup: {} chats per side, {} at a time",
                s.chats_per_side, s.concurrency
            );
            row(
                &mut o,
                "",
                "gateway".into(),
                "direct".into(),
                "added".into(),
            );
            row(&mut o, "---", "---".into(), "---".into(), "---".into());
            let ms = |v: f64| format!("{v:.3} ms");
            row(
                &mut o,
                "StartChat vs StartChatContact p50",
                ms(s.gateway_start_chat.p50_ms),
                ms(s.direct_start_contact.p50_ms),
                ms(s.added_start_p50_ms),
            );
            row(
                &mut o,
                "StartChat vs StartChatContact p99",
                ms(s.gateway_start_chat.p99_ms),
                ms(s.direct_start_contact.p99_ms),
                ms(s.added_start_p99_ms),
            );
            row(
                &mut o,
                "ready (socket subscribed) p50",
                ms(s.gateway_ready.p50_ms),
                ms(s.direct_ready.p50_ms),
                ms(s.added_ready_p50_ms),
            );
            row(
                &mut o,
                "ready (socket subscribed) p99",
                ms(s.gateway_ready.p99_ms),
                ms(s.direct_ready.p99_ms),
                ms(s.added_ready_p99_ms),
            );
            row(
                &mut o,
                "chats started per second",
                format!("{:.0}", s.gateway_chats_per_s),
                format!("{:.0}", s.direct_chats_per_s),
                format!("x{:.2}", ratio(s.gateway_chats_per_s, s.direct_chats_per_s)),
            );
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                o,
                "\nlatency: agent push -> receiver, {}/s on each side over {} chats each, {} s ({} pushed, {} behind)",
                l.rate_per_side, l.chats_per_side, l.secs, l.pushed, l.behind
            );
            row(
                &mut o,
                "",
                "gateway".into(),
                "direct".into(),
                "added (ratio)".into(),
            );
            row(&mut o, "---", "---".into(), "---".into(), "---".into());
            let line = |o: &mut String, what: &str, g: f64, d: f64| {
                row(
                    o,
                    what,
                    format!("{g:.3} ms"),
                    format!("{d:.3} ms"),
                    format!("{:.3} (x{:.2})", g - d, ratio(g, d)),
                );
            };
            line(&mut o, "p50", l.gateway.p50_ms, l.direct.p50_ms);
            line(&mut o, "p99", l.gateway.p99_ms, l.direct.p99_ms);
            line(&mut o, "p99.9", l.gateway.p999_ms, l.direct.p999_ms);
            line(&mut o, "max", l.gateway.max_ms, l.direct.max_ms);
            let _ = writeln!(
                o,
                "samples: gateway {}, direct {}; gateway CPU {:.2} cores",
                l.gateway.count, l.direct.count, l.gateway_cores
            );
        }
        for c in &self.capacity {
            let _ = writeln!(
                o,
                "\ncapacity ({} upstream): {} chats ready ({} failed{}) in {:.1} s ({:.0}/s, ready p50 {:.2} ms, p99 {:.2} ms)",
                c.upstream,
                c.chats,
                c.failed,
                c.first_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                c.ramp_secs,
                c.ramp_chats_per_s,
                c.ramp_ready.p50_ms,
                c.ramp_ready.p99_ms
            );
            let _ = writeln!(
                o,
                "  gateways ({}): RSS {:.1} MiB -> {:.1} MiB: {:.1} KiB per chat, {:.2} descriptors per chat; idle CPU {:.3} cores; {:.0} µs CPU per chat started",
                c.processes,
                c.gateway_rss_before as f64 / 1048576.0,
                c.gateway_rss_after as f64 / 1048576.0,
                c.gateway_kib_per_chat,
                c.gateway_fds_per_chat,
                c.gateway_idle_cores,
                c.gateway_cpu_us_per_start
            );
            let _ = writeln!(
                o,
                "  simulators: {:.1} KiB per chat; idle CPU {:.3} cores; streams ended while held: {}",
                c.sim_kib_per_chat, c.sim_idle_cores, c.streams_ended
            );
            if c.per_process.len() > 1 {
                for (i, p) in c.per_process.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "  process {i}: {} chats ({} failed), gateway {:.1} KiB/chat, {} descriptors, idle {:.3} cores, {:.0} µs/start; simulator {:.1} KiB/chat, idle {:.3} cores",
                        p.chats,
                        p.failed,
                        p.gateway_kib_per_chat,
                        p.gateway_fds,
                        p.gateway_idle_cores,
                        p.gateway_cpu_us_per_start,
                        p.sim_kib_per_chat,
                        p.sim_idle_cores
                    );
                }
            }
        }
        if let Some(f) = &self.floor {
            let _ = writeln!(
                o,
                "\nidle floor: {} bare loopback sockets, {} bytes and a {}-byte echo each every {:.0} s, {} answered over {:.0} s: sender {:.3} cores, echo {:.3} cores ({:.0} % in the kernel) = {:.3} cores per 100000 chats (the sending side, the gateways' counterpart, {:.3})",
                f.sockets,
                f.heartbeat_bytes,
                f.echo_bytes,
                f.heartbeat_interval_secs,
                f.round_trips,
                f.secs,
                f.sender_cores,
                f.echo_cores,
                f.kernel_share * 100.0,
                f.cores_per_100k,
                f.sender_cores * 100_000.0 / f.sockets.max(1) as f64
            );
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                o,
                "\nthroughput: asked {:.0}/s over {} chats for {:.1} s: {} pushed ({} behind), {} delivered in the window ({} in total)",
                t.asked_rate, t.chats, t.secs, t.pushed, t.behind, t.delivered, t.delivered_total
            );
            let _ = writeln!(
                o,
                "  {:.0} events/s; gateway {:.2} cores = {:.2} us CPU per event ({:.2} us of it in the kernel); simulator {:.2} cores ({:.2} us per message in the kernel); bench {:.2} cores; machine {:.2} cores busy; streams ended {}",
                t.events_per_s,
                t.gateway_cores,
                t.gateway_cpu_us_per_event,
                t.gateway_kernel_us_per_event,
                t.sim_cores,
                t.sim_kernel_us_per_message,
                t.bench_cores,
                t.machine_busy_cores,
                t.streams_ended
            );
            let _ = writeln!(o, "  limit: {}", t.limit);
        }
        if let Some(c) = &self.ceiling {
            let t = &c.run;
            let _ = writeln!(
                o,
                "\nthe gateway's ceiling: the same load with the gateway held to {:.2} cores (a cgroup's CPU quota): {} pushed ({} behind), {} delivered in the window",
                c.quota_cores, t.pushed, t.behind, t.delivered
            );
            let _ = writeln!(
                o,
                "  {:.0} events/s; gateway {:.2} cores = {:.2} us CPU per event ({:.2} us of it in the kernel); simulator {:.2} cores; bench {:.2} cores; machine {:.2} cores busy",
                t.events_per_s,
                t.gateway_cores,
                t.gateway_cpu_us_per_event,
                t.gateway_kernel_us_per_event,
                t.sim_cores,
                t.bench_cores,
                t.machine_busy_cores
            );
            let _ = writeln!(o, "  limit: {}", c.limit());
        }
        for i in self.instructions.iter().chain(&self.instructions_tls) {
            let _ = writeln!(
                o,
                "\ninstructions (callgrind, {} upstream, {} chats, {} events): {:.0} per delivered event with one subscriber per chat; {:.0} per event with two; each extra subscriber {:.0}; the simulator {:.0} per message pushed; streams ended {}",
                i.upstream,
                i.chats,
                i.events,
                i.instructions_per_event,
                i.instructions_per_event_two_subscribers,
                i.extra_subscriber_instructions_per_event,
                i.sim_instructions_per_message,
                i.streams_ended
            );
            let _ = writeln!(
                o,
                "  idle: {:.0} instructions per chat and second in the gateway, {:.0} in the simulator (heartbeats, their answers and keepalives)",
                i.idle_instructions_per_chat_second,
                i.sim_idle_instructions_per_chat_second
            );
        }
        if let Some(c) = &self.cluster {
            let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3} ms"));
            let _ = writeln!(
                o,
                "\ncluster: {} replicas on one Redis, {} chats owned by one replica and read on the others",
                c.replicas, c.chats
            );
            let _ = writeln!(
                o,
                "  latency p50 {:.3} ms (one process {}, added {}); p99 {:.3} ms (one process {}, added {})",
                c.latency.p50_ms,
                opt(c.single_p50_ms),
                opt(c.added_p50_ms),
                c.latency.p99_ms,
                opt(c.single_p99_ms),
                opt(c.added_p99_ms)
            );
            let cores: Vec<String> = c.gateway_cores.iter().map(|v| format!("{v:.2}")).collect();
            let _ = writeln!(
                o,
                "  {:.0} events/s delivered ({} pushed, {} delivered in {:.1} s, {} in all after {:.1} s more); per event {:.2} Redis commands in {:.2} scripts; replicas {} cores; Redis {:.2} cores; streams ended {}",
                c.events_per_s,
                c.pushed,
                c.delivered,
                c.secs,
                c.delivered_total,
                c.drain_secs,
                c.redis_commands_per_event,
                c.redis_scripts_per_event,
                cores.join(" / "),
                c.redis_cores,
                c.streams_ended
            );
            let h = &c.held;
            let per: Vec<String> = (0..h.chats.len())
                .map(|i| {
                    format!(
                        "replica {} ({}, {} chats): {:.1} KiB per chat, idle {:.3} cores",
                        i + 1,
                        if i == 0 { "owner" } else { "reader" },
                        h.chats[i],
                        h.kib_per_chat.get(i).copied().unwrap_or(0.0),
                        h.idle_cores.get(i).copied().unwrap_or(0.0)
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "  held: {}; over {:.0} s idle Redis {:.3} cores and {:.0} commands/s ({:.2} per chat per minute), simulator {:.3} cores",
                per.join("; "),
                h.idle_secs,
                h.redis_idle_cores,
                h.redis_idle_commands_per_s,
                h.redis_idle_commands_per_chat_per_min,
                h.sim_idle_cores
            );
        }
        if let Some(a) = &self.attachment {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let _ = writeln!(
                o,
                "\nattachment: {:.1} MiB sent at {:.1} MiB/s and read back at {:.1} MiB/s; gateway resident {:.1} MiB before, peak {:.1} MiB ({}), {:.1} MiB after",
                mib(a.bytes),
                a.upload_mb_per_s,
                a.download_mb_per_s,
                mib(a.gateway_rss_before),
                mib(a.gateway_rss_peak),
                a.peak_growth_mib
                    .map_or("peak counter not resettable".to_owned(), |g| format!("+{g:.2} MiB")),
                mib(a.gateway_rss_after)
            );
        }
        let _ = writeln!(o, "\ntargets:");
        for t in &self.targets {
            let _ = writeln!(
                o,
                "  [{}] {:<48} target {:<10} measured {}",
                if t.met { "met" } else { "NOT met" },
                t.name,
                t.target,
                t.measured
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throughput_limit_names_the_saturated_process() {
        let usage = |sim_cores, machine_cores| Usage {
            sim_cores,
            sim_kernel: 0.0,
            bench_cores: 0.2,
            machine_cores,
            cores: 2,
        };
        let limit = |behind, gateway, u| throughput_limit(behind, gateway, u, 1);
        assert!(limit(0, 0.95, usage(0.5, 1.9)).starts_with("none"));
        assert!(limit(10, 0.95, usage(0.5, 1.9)).starts_with("the gateway"));
        assert!(limit(10, 0.6, usage(0.92, 1.9)).starts_with("the simulator"));
        assert!(limit(10, 0.6, usage(0.7, 1.85)).starts_with("the machine"));
        assert!(limit(10, 0.6, usage(0.7, 1.2)).starts_with("unclear"));
        // With threads left to the runtime, only the machine can be named.
        assert!(throughput_limit(10, 1.4, usage(0.3, 1.9), 0).starts_with("the machine"));
    }
}
