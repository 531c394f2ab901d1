//! `connect-chat-bench`: runs the simulator and the gateway (the binaries beside this one) as
//! separate processes on loopback, measures setup, latency, capacity and throughput, and
//! prints a table and a JSON summary. See `docs/benchmark.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use connect_chat_gateway::bench::{self, BenchConfig};

#[derive(Parser, Debug)]
#[command(
    name = "connect-chat-bench",
    about = "Benchmark the gateway against a direct SDK + socket baseline on loopback"
)]
struct Args {
    /// Capacity: concurrent chats held idle (each with its socket and one Subscribe stream).
    #[arg(long, default_value_t = 10_000)]
    chats: usize,
    /// Capacity: most chats per gateway process (and per simulator process); more are spread
    /// over as many processes as they need. Each chat costs a gateway and a simulator one
    /// open file each, so this stays under the open-file limit.
    #[arg(long, default_value_t = 18_000, value_parser = clap::value_parser!(u64).range(1..))]
    chats_per_process: u64,
    /// Setup and latency: chats started on each side (gateway and direct).
    #[arg(long, default_value_t = 500)]
    setup_chats: usize,
    /// Chats being started at once during the capacity ramp.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Chats being started at once during the setup comparison.
    #[arg(long, default_value_t = 1)]
    setup_concurrency: usize,
    /// Latency: stamped agent messages per second on each side.
    #[arg(long, default_value_t = 1_000.0)]
    latency_rate: f64,
    /// Latency phase length, seconds.
    #[arg(long, default_value_t = 10.0)]
    latency_secs: f64,
    /// Throughput: agent messages per second asked of the simulator.
    #[arg(long, default_value_t = 60_000.0)]
    throughput_rate: f64,
    /// Throughput phase length, seconds.
    #[arg(long, default_value_t = 10.0)]
    throughput_secs: f64,
    /// Capacity: idle CPU measurement length, seconds. Below the Subscribe keepalive interval
    /// (30 s) the window misses keepalives of the chats started last.
    #[arg(long, default_value_t = 30.0)]
    idle_secs: f64,
    /// Worker threads of each gateway and simulator process (their --worker-threads; 0: one
    /// per CPU). One each is the cheapest layout when the processes share the machine's cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=1024))]
    worker_threads: u16,
    /// Skip the capacity round with wss:// upstream sockets.
    #[arg(long)]
    no_tls: bool,
    /// Skip the cluster round (three replicas on a private redis-server; run when
    /// redis-server is on the PATH).
    #[arg(long)]
    no_cluster: bool,
    /// Cluster round: chats owned by the first replica, each read on one of the others; the
    /// replicas' memory per chat, idle CPU and Redis commands are measured while they are held.
    #[arg(long, default_value_t = 2_000)]
    cluster_chats: usize,
    /// The attachment round: a file of this many MB (at most 20) sent and read back through
    /// the gateway, its peak memory growth measured (0 skips the round).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=20))]
    attachment_mb: u64,
    /// Run the attachment round only.
    #[arg(long)]
    attachments_only: bool,
    /// Run the instruction-count round only: the gateway and the simulator under valgrind's
    /// callgrind (which must be installed), the gateway's instructions per delivered event
    /// with one and two subscribers per chat and the simulator's per message pushed, and
    /// both processes' instructions per idle chat and second (a 60 s idle window first);
    /// figures the machine's noise does not move. Over `ws://` upstream sockets, then over
    /// `wss://` unless `--no-tls`.
    #[arg(long)]
    instructions: bool,
    /// Subscribe streams per gRPC connection.
    #[arg(long, default_value_t = 100)]
    streams_per_connection: usize,
    /// The connect-sim binary (default: beside this one).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
    /// The connect-chat-gateway binary (default: beside this one).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Write the JSON summary to this file as well.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// The gateway's ceiling: after the throughput phase, the same load again with the
    /// gateway held to this many cores by a cgroup's CPU quota, so that the gateway and not
    /// the load side saturates (needs a cgroup cpu controller the bench may write: root, or a
    /// delegated subtree; skipped with a message otherwise). 0 skips it.
    #[arg(long, default_value_t = 0.5)]
    gateway_quota: f64,
    /// Skip the idle floor: bare loopback sockets exchanging a heartbeat's bytes and their
    /// echo, measured before the rounds (the machine's cost of keeping idle chats alive).
    #[arg(long)]
    no_floor: bool,
    /// The idle floor's echo role (run by the bench itself).
    #[arg(long, hide = true)]
    floor_echo: bool,
    /// The idle floor's sender role, connecting to this echo (run by the bench itself).
    #[arg(long, hide = true)]
    floor_send: Option<std::net::SocketAddr>,
    #[arg(long, hide = true, default_value_t = 1)]
    floor_sockets: usize,
    #[arg(long, hide = true, default_value_t = 10_000)]
    floor_interval_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = usize::from(args.worker_threads);
    let role = if args.floor_echo {
        Some(bench::floor::serve_echo(threads))
    } else {
        args.floor_send.map(|addr| {
            let interval = std::time::Duration::from_millis(args.floor_interval_ms.max(1));
            bench::floor::send_heartbeats(addr, args.floor_sockets, interval, threads)
        })
    };
    if let Some(result) = role {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("connect-chat-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(bench_main(args)),
        Err(e) => {
            eprintln!("connect-chat-bench: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench_main(args: Args) -> ExitCode {
    let mut cfg = BenchConfig::new();
    cfg.chats = args.chats;
    cfg.chats_per_process = args.chats_per_process as usize;
    cfg.setup_chats = args.setup_chats.max(1);
    cfg.concurrency = args.concurrency.max(1);
    cfg.setup_concurrency = args.setup_concurrency.max(1);
    cfg.latency_rate = args.latency_rate;
    cfg.latency_secs = args.latency_secs;
    cfg.throughput_rate = args.throughput_rate;
    cfg.throughput_secs = args.throughput_secs;
    cfg.idle_secs = args.idle_secs;
    cfg.worker_threads = usize::from(args.worker_threads);
    cfg.tls = !args.no_tls;
    cfg.cluster = cfg.cluster && !args.no_cluster;
    cfg.cluster_chats = args.cluster_chats.max(1);
    cfg.streams_per_connection = args.streams_per_connection;
    cfg.attachment_mb = args.attachment_mb as usize;
    cfg.attachments_only = args.attachments_only && args.attachment_mb > 0;
    cfg.instructions_only = args.instructions;
    cfg.floor = !args.no_floor;
    cfg.gateway_quota = args.gateway_quota.max(0.0);
    if let Some(p) = args.sim_bin {
        cfg.sim_bin = p;
    }
    if let Some(p) = args.gateway_bin {
        cfg.gateway_bin = p;
    }
    match bench::run(&cfg).await {
        Ok(report) => {
            println!("{}", report.table());
            let json = serde_json::to_string_pretty(&report).unwrap_or_default();
            println!("{json}");
            if let Some(path) = args.json_out {
                if let Err(e) = std::fs::write(&path, &json) {
                    eprintln!("connect-chat-bench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("connect-chat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
