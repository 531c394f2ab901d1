//! The idle floor: what this machine's kernel and runtime charge for the protocol's heartbeats
//! alone, with no gateway and no simulator in the way.
//!
//! Two processes of their own (this bench's binary in a hidden role each, one runtime thread
//! each, as the bench runs the gateways and simulators): a sender holds loopback sockets and
//! writes a heartbeat's bytes on each every heartbeat interval, on the gateway's grid of a
//! tenth of it (at most a second), and reads the answer; an echo answers each read with an
//! echo's bytes. No WebSocket, JSON, TLS, session or gRPC stream: the cost of one small write
//! and its answer per socket and interval, which any Connect client keeping chats alive pays.
//! Held against the capacity round's idle CPU, it says how much of that figure is the
//! machine's and how much is ours.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::procs::{self, CpuMark, Proc};
use super::{BenchConfig, BenchError, Result};

/// `{"topic":"aws/heartbeat"}` as a client writes it: a masked text frame (2 header bytes,
/// a 4-byte mask, 25 bytes of payload).
const HEARTBEAT_BYTES: usize = 31;
/// Its echo from the service: an unmasked frame of the same payload.
const ECHO_BYTES: usize = 27;
/// Most sockets in one run: a loopback listener takes about 28,000 from one source address.
const MAX_SOCKETS: usize = 25_000;

/// The floor's figures.
#[derive(Clone, Debug, Serialize)]
pub struct FloorReport {
    pub sockets: usize,
    pub heartbeat_bytes: usize,
    pub echo_bytes: usize,
    pub heartbeat_interval_secs: f64,
    pub secs: f64,
    /// Heartbeats answered over the window, all sockets together.
    pub round_trips: u64,
    pub sender_cores: f64,
    pub echo_cores: f64,
    /// The part of both processes' CPU spent in the kernel (system time), 0 to 1.
    pub kernel_share: f64,
    /// Both processes' CPU scaled to 100,000 sockets.
    pub cores_per_100k: f64,
}

/// Sockets the floor holds for a run: as many as the first gateway process holds chats.
pub fn sockets(cfg: &BenchConfig) -> usize {
    cfg.share(0).clamp(1, MAX_SOCKETS)
}

/// Runs the floor: starts the echo and the sender, waits a heartbeat interval so every socket
/// is in its steady state, then measures both processes over the idle window.
pub async fn run(cfg: &BenchConfig) -> Result<FloorReport> {
    let sockets = sockets(cfg);
    let threads = cfg.worker_threads.to_string();
    let interval_ms = cfg.floor_heartbeat.as_millis().max(1).to_string();
    let (echo, out) = Proc::spawn(
        "floor echo",
        &cfg.bench_bin,
        &[
            "--floor-echo".into(),
            "--worker-threads".into(),
            threads.clone(),
        ],
    )?;
    let addr: SocketAddr = procs::read_until("floor echo", out, Duration::from_secs(10), |line| {
        line.strip_prefix("listening ")?.parse().ok()
    })
    .await?;
    let (sender, out) = Proc::spawn(
        "floor sender",
        &cfg.bench_bin,
        &[
            "--floor-send".into(),
            addr.to_string(),
            "--floor-sockets".into(),
            sockets.to_string(),
            "--floor-interval-ms".into(),
            interval_ms,
            "--worker-threads".into(),
            threads,
        ],
    )?;
    // The sender reports its sockets connected, then the heartbeats answered so far, ten times
    // an interval.
    let answered = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let counter = answered.clone();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(n) = line.strip_prefix("ready ").and_then(|n| n.parse().ok()) {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(n);
                }
            } else if let Some(n) = line.strip_prefix("answered ").and_then(|n| n.parse().ok()) {
                counter.store(n, Ordering::Relaxed);
            } else {
                eprintln!("[floor sender] {line}");
            }
        }
    });
    let connected: usize = tokio::time::timeout(Duration::from_secs(120), ready_rx)
        .await
        .map_err(|_| BenchError("the floor's sender did not connect within 120 s".into()))?
        .map_err(|_| BenchError("the floor's sender exited before it connected".into()))?;
    if connected != sockets {
        return Err(BenchError(format!(
            "the floor's sender connected {connected} of {sockets} sockets"
        )));
    }
    // Every socket's first heartbeat goes out at once on connecting; from the second on they
    // are on the grid.
    tokio::time::sleep(cfg.floor_heartbeat + cfg.floor_heartbeat / 10).await;
    let (s0, e0) = (CpuMark::now(sender.pid), CpuMark::now(echo.pid));
    let answered_before = answered.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(cfg.idle_secs)).await;
    let ((s_cpu, s_cores), (e_cpu, e_cores)) = (s0.since(sender.pid), e0.since(echo.pid));
    let kernel = s0.kernel_since(sender.pid) + e0.kernel_since(echo.pid);
    let round_trips = answered.load(Ordering::Relaxed) - answered_before;
    sender.stop(Duration::from_secs(5)).await;
    echo.stop(Duration::from_secs(5)).await;
    Ok(FloorReport {
        sockets,
        heartbeat_bytes: HEARTBEAT_BYTES,
        echo_bytes: ECHO_BYTES,
        heartbeat_interval_secs: cfg.floor_heartbeat.as_secs_f64(),
        secs: cfg.idle_secs,
        round_trips,
        sender_cores: s_cores,
        echo_cores: e_cores,
        kernel_share: if s_cpu + e_cpu > 0.0 {
            (kernel / (s_cpu + e_cpu)).clamp(0.0, 1.0)
        } else {
            0.0
        },
        cores_per_100k: (s_cores + e_cores) * 100_000.0 / sockets as f64,
    })
}

/// The echo's role (`connect-chat-bench --floor-echo`): prints `listening ADDR`, then
/// answers every read on every socket with an echo's bytes until killed.
pub fn serve_echo(threads: usize) -> std::io::Result<()> {
    procs::raise_nofile();
    crate::ops::runtime::build(threads)?.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        loop {
            let (mut s, _) = listener.accept().await?;
            s.set_nodelay(true)?;
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(1..) = s.read(&mut buf).await {
                    if s.write_all(&[b'e'; ECHO_BYTES]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// The sender's role (`connect-chat-bench --floor-send ADDR --floor-sockets N`): connects `n`
/// sockets, prints `ready N`, then keeps each one's heartbeats going and prints the heartbeats
/// answered so far ten times an interval, until killed.
pub fn send_heartbeats(
    addr: SocketAddr,
    n: usize,
    interval: Duration,
    threads: usize,
) -> std::io::Result<()> {
    procs::raise_nofile();
    crate::ops::runtime::build(threads)?.block_on(async move {
        let answered = Arc::new(AtomicU64::new(0));
        let streams: Vec<TcpStream> = futures::stream::iter(0..n)
            .map(|_| async move {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok::<_, std::io::Error>(s)
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<std::io::Result<_>>()?;
        for mut s in streams {
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; ECHO_BYTES];
                loop {
                    if s.write_all(&[b'h'; HEARTBEAT_BYTES]).await.is_err()
                        || s.read_exact(&mut buf).await.is_err()
                    {
                        eprintln!("a floor socket failed");
                        return;
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                    // The gateway's schedule, on its grid.
                    let at = crate::session::next_heartbeat(tokio::time::Instant::now(), interval);
                    tokio::time::sleep_until(at).await;
                }
            });
        }
        println!("ready {n}");
        loop {
            tokio::time::sleep(interval / 10).await;
            println!("answered {}", answered.load(Ordering::Relaxed));
        }
    })
}
