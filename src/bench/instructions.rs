//! The instruction count of the gateway's event path: the gateway runs under valgrind's
//! callgrind, which counts the instructions it executes (not time), so the figure is the same
//! from run to run whatever else the machine does. The counters are zeroed once the chats are
//! ready and dumped once the load's every event was delivered: what they hold is the cost of
//! delivering those events (and of the few heartbeats in the window). The round runs twice,
//! with one and with two Subscribe streams per chat, for the cost of each extra subscriber.
//! The simulator runs under callgrind too, counted over the same windows: its instructions
//! per pushed message say how much of the machine the load side takes. Before the load, an
//! idle window counts what the held chats cost when nothing happens in them: heartbeats,
//! their answers and the Subscribe keepalives. The round runs over `ws://` upstream sockets,
//! then, unless TLS is off, over `wss://`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::task::JoinSet;

use super::clients::{self, GatewayPool, Recorder};
use super::procs::{self, Proc};
use super::report::InstructionsReport;
use super::{ca_file, gateway_args, spawn_sim_under, BenchConfig, BenchError, Result};

/// Chats of the round: enough for the fan-out to be the gateway's usual per-chat work, few
/// enough to start quickly under valgrind.
const CHATS: usize = 100;
/// Agent messages pushed, at a rate valgrind's gateway keeps up with.
const EVENTS: u64 = 10_000;
const RATE: f64 = 2_000.0;
/// The idle window: six heartbeats per chat (every 10 s) and two or three Subscribe
/// keepalives per stream (every 20 to 30 s), so the keepalives move the figure by a few
/// per cent from run to run.
const IDLE_SECS: u64 = 60;

/// Runs `callgrind_control` with `arg` for the process `pid`.
async fn control(arg: &str, pid: u32) -> Result<()> {
    let status = tokio::process::Command::new("callgrind_control")
        .args([arg, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| BenchError(format!("callgrind_control (part of valgrind): {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError(format!(
            "callgrind_control {arg} {pid}: {status}"
        )))
    }
}

/// The instructions (`Ir`) in the newest of callgrind's dumps under `dir`.
fn dumped_instructions(dir: &Path) -> Result<u64> {
    let mut newest: Option<(std::time::SystemTime, std::path::PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("callgrind.out") {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
            newest = Some((modified, entry.path()));
        }
    }
    let (_, path) = newest.ok_or_else(|| BenchError("callgrind wrote no dump".into()))?;
    let text = std::fs::read_to_string(&path)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| BenchError(format!("no instruction total in {}", path.display())))
}

/// The callgrind arguments that write a process's dumps into `dir`, each dump readable by
/// `callgrind_annotate` on its own (with names compressed, a later dump names a function by a
/// number an earlier one defined).
fn callgrind_args(dir: &Path) -> Vec<String> {
    vec![
        "--tool=callgrind".into(),
        "--compress-strings=no".into(),
        format!("--callgrind-out-file={}/callgrind.out.%p", dir.display()),
    ]
}

/// What one measurement counted.
struct Counted {
    gateway: u64,
    sim: u64,
    pushed: u64,
}

/// The idle window: the counters zeroed, nothing pushed for [`IDLE_SECS`], the counters
/// dumped. Returns the gateway's and the simulator's instructions.
async fn measure_idle(
    gateway: &Proc,
    sim: &Proc,
    dump_dir: &Path,
    sim_dump_dir: &Path,
) -> Result<(u64, u64)> {
    control("-z", gateway.pid).await?;
    control("-z", sim.pid).await?;
    tokio::time::sleep(Duration::from_secs(IDLE_SECS)).await;
    control("-d", gateway.pid).await?;
    control("-d", sim.pid).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((
        dumped_instructions(dump_dir)?,
        dumped_instructions(sim_dump_dir)?,
    ))
}

/// One measurement: `subscribers` streams per chat, the counters zeroed, the load pushed and
/// delivered, the counters dumped.
#[allow(clippy::too_many_arguments)]
async fn measure(
    gateway: &Proc,
    sim: &Proc,
    sim_addr: std::net::SocketAddr,
    dump_dir: &Path,
    sim_dump_dir: &Path,
    ids: &[String],
    recorder: &Recorder,
    subscribers: u64,
) -> Result<Counted> {
    control("-z", gateway.pid).await?;
    control("-z", sim.pid).await?;
    let before = recorder.messages.load(Ordering::Relaxed);
    let load = clients::sim_load(sim_addr, RATE, EVENTS as f64 / RATE, ids, false).await?;
    let pushed = load["pushed"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while recorder.messages.load(Ordering::Relaxed) - before < pushed * subscribers {
        if Instant::now() > deadline {
            return Err(BenchError(format!(
                "{} of {} events delivered within two minutes",
                recorder.messages.load(Ordering::Relaxed) - before,
                pushed * subscribers
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    control("-d", gateway.pid).await?;
    control("-d", sim.pid).await?;
    // callgrind writes the dump before it answers; give the file system a moment anyway.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Counted {
        gateway: dumped_instructions(dump_dir)?,
        sim: dumped_instructions(sim_dump_dir)?,
        pushed,
    })
}

/// One round over `wss://` upstream sockets when `tls`, `ws://` otherwise.
pub async fn run(cfg: &BenchConfig, tls: bool) -> Result<InstructionsReport> {
    let scheme = if tls { "wss" } else { "ws" };
    let dump_dir = cfg.work_dir.join(format!("callgrind-{scheme}"));
    let sim_dump_dir = cfg.work_dir.join(format!("callgrind-sim-{scheme}"));
    std::fs::create_dir_all(&dump_dir)?;
    std::fs::create_dir_all(&sim_dump_dir)?;
    let valgrind = Path::new("valgrind");
    let (sim, sim_addr, endpoint) = spawn_sim_under(
        cfg,
        0,
        CHATS * 2,
        tls,
        Some((valgrind, callgrind_args(&sim_dump_dir))),
    )
    .await?;
    let port = procs::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = callgrind_args(&dump_dir);
    args.push(cfg.gateway_bin.display().to_string());
    args.extend(gateway_args(cfg, &endpoint, &listen, CHATS * 2));
    if tls {
        args.extend([
            "--upstream-ca-file".into(),
            ca_file(cfg, 0).display().to_string(),
        ]);
    }
    let (gateway, out) = Proc::spawn("connect-chat-gateway (callgrind)", valgrind, &args)?;
    procs::forward("connect-chat-gateway (callgrind)", out);
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| BenchError(format!("{e}")))?;
    // Valgrind starts a program tens of times slower.
    let deadline = Instant::now() + Duration::from_secs(120);
    while procs::wait_listening(addr, "the gateway under valgrind")
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err(BenchError(
                "the gateway under valgrind did not listen".into(),
            ));
        }
    }
    let pool = GatewayPool::connect(addr, CHATS * 2, cfg.streams_per_connection).await?;
    let recorder = Arc::new(Recorder::default());
    let tasks = Mutex::new(JoinSet::new());
    let started: Vec<_> =
        futures::stream::iter(0..CHATS)
            .map(|i| {
                let client = pool.client(i);
                let recorder = recorder.clone();
                let tasks = &tasks;
                async move {
                    clients::gateway_chat(client, format!("callgrind {i}"), recorder, tasks).await
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let chats: Vec<clients::GatewayChat> = started
        .into_iter()
        .collect::<std::result::Result<_, String>>()
        .map_err(|e| BenchError(format!("callgrind round setup: {e}")))?;
    let ids: Vec<String> = chats.iter().map(|c| c.contact_id.clone()).collect();
    let dirs = (dump_dir.as_path(), sim_dump_dir.as_path());
    eprintln!(
        "bench: instructions ({scheme}://): {CHATS} chats ready under callgrind; idle for {IDLE_SECS} s"
    );
    let idle = measure_idle(&gateway, &sim, dirs.0, dirs.1).await?;
    eprintln!("bench: instructions: load with one subscriber per chat");
    let one = measure(&gateway, &sim, sim_addr, dirs.0, dirs.1, &ids, &recorder, 1).await?;
    for (i, chat) in chats.iter().enumerate() {
        clients::subscribe_again(pool.client(CHATS + i), chat, recorder.clone(), &tasks)
            .await
            .map_err(|e| BenchError(format!("second subscriber: {e}")))?;
    }
    eprintln!("bench: instructions: a second subscriber each");
    let two = measure(&gateway, &sim, sim_addr, dirs.0, dirs.1, &ids, &recorder, 2).await?;
    let ended = recorder.ended.load(Ordering::Relaxed);
    drop(tasks);
    gateway.stop(Duration::from_secs(30)).await;
    sim.stop(Duration::from_secs(10)).await;
    let per_event = |ir: u64, n: u64| ir as f64 / n.max(1) as f64;
    let one_per_event = per_event(one.gateway, one.pushed);
    let two_per_event = per_event(two.gateway, two.pushed);
    Ok(InstructionsReport {
        upstream: format!("{scheme}://"),
        chats: CHATS,
        events: one.pushed,
        instructions_per_event: one_per_event,
        instructions_per_event_two_subscribers: two_per_event,
        extra_subscriber_instructions_per_event: two_per_event - one_per_event,
        sim_instructions_per_message: per_event(one.sim, one.pushed),
        idle_instructions_per_chat_second: per_event(idle.0, CHATS as u64 * IDLE_SECS),
        sim_idle_instructions_per_chat_second: per_event(idle.1, CHATS as u64 * IDLE_SECS),
        streams_ended: ended,
    })
}
