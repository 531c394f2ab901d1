//! The processes under test: spawning the simulator and the gateway binaries, reading their
//! resident memory and CPU time from `/proc`, raising the descriptor limit, and stopping them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// Raise this process's open-file soft limit to its hard limit (children inherit it).
/// Returns the limit now in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// Clock ticks per second of `/proc/PID/stat` times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Open descriptors of a process (the entries of `/proc/PID/fd`).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Resident memory of a process (`VmRSS`), bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User and system CPU time of a process so far, seconds.
fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / clock_ticks(), stime / clock_ticks()))
}

/// User plus system CPU time of a process so far, seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_split(pid).map(|(user, system)| user + system)
}

/// The whole machine's busy and total CPU time so far, in clock ticks summed over its cores
/// (the first line of `/proc/stat`; busy is all but idle and I/O wait).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy, busy + idle + iowait))
}

/// The machine's CPU between two points: how many of its cores were busy on average.
#[derive(Clone, Copy, Debug)]
pub struct MachineMark {
    busy: u64,
    total: u64,
}

impl MachineMark {
    pub fn now() -> Self {
        let (busy, total) = machine_ticks().unwrap_or((0, 0));
        MachineMark { busy, total }
    }

    /// Cores busy on average since the mark, of `cores`.
    pub fn busy_cores_since(&self, cores: usize) -> f64 {
        let (busy, total) = machine_ticks().unwrap_or((self.busy, self.total));
        let (busy, total) = (
            busy.saturating_sub(self.busy),
            total.saturating_sub(self.total),
        );
        if total == 0 {
            return 0.0;
        }
        busy as f64 / total as f64 * cores as f64
    }
}

/// CPU used by a process between two points, as seconds and as a share of one core.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    cpu: f64,
    /// The part of `cpu` spent in the kernel (system time).
    kernel: f64,
    at: Instant,
}

impl CpuMark {
    pub fn now(pid: u32) -> Self {
        let (user, kernel) = cpu_split(pid).unwrap_or((0.0, 0.0));
        CpuMark {
            cpu: user + kernel,
            kernel,
            at: Instant::now(),
        }
    }

    /// System CPU seconds used since the mark: the kernel's share of [`Self::since`].
    pub fn kernel_since(&self, pid: u32) -> f64 {
        cpu_split(pid).map_or(0.0, |(_, kernel)| kernel - self.kernel)
    }

    /// (CPU seconds used since the mark, cores used on average).
    pub fn since(&self, pid: u32) -> (f64, f64) {
        let cpu = cpu_seconds(pid).unwrap_or(0.0) - self.cpu;
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        (cpu, cpu / wall)
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped or stopped.
pub struct Proc {
    pub name: &'static str,
    pub pid: u32,
    child: Child,
}

impl Proc {
    /// Spawn `bin` with `args`, logging at `warn` unless `RUST_LOG` says otherwise. Its
    /// standard output is handed back for the caller to read, then drained to stderr.
    pub fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[String],
    ) -> std::io::Result<(Self, ChildStdout)> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", bin.display())))?;
        let pid = child.id().unwrap_or(0);
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok((Proc { name, pid, child }, stdout))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        // SAFETY: signals a child this process spawned and has not reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "bench: {} did not stop within {grace:?}; killing",
                self.name
            );
            let _ = self.child.kill().await;
        }
    }
}

/// Read lines from a child's stdout until `want` returns a value for one of them (within
/// `wait`), then forward the remaining lines to stderr with the child's name.
pub async fn read_until<T>(
    name: &'static str,
    stdout: ChildStdout,
    wait: Duration,
    mut want: impl FnMut(&str) -> Option<T>,
) -> std::io::Result<T> {
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(wait, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(v) = want(&line) {
                return Ok(Some(v));
            }
            eprintln!("[{name}] {line}");
        }
        Ok::<_, std::io::Error>(None)
    })
    .await;
    let value = match found {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => {
            return Err(std::io::Error::other(format!(
                "{name} exited before it was ready"
            )))
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(std::io::Error::other(format!(
                "{name} was not ready within {wait:?}"
            )))
        }
    };
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{name}] {line}");
        }
    });
    Ok(value)
}

/// Drain a child's stdout to stderr from the start.
pub fn forward(name: &'static str, stdout: ChildStdout) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{name}] {line}");
        }
    });
}

/// The 1-minute load average: other work on the machine shows here.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// The directory of the running executable: where cargo puts the sibling binaries.
pub fn sibling_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A free loopback port (bound, read, released: a race with other processes is possible
/// but unlikely on a test machine).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Waits until something accepts connections on `addr` (20 s at most).
pub async fn wait_listening(addr: std::net::SocketAddr, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not listen on {addr}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
