//! A CPU quota for one process: a cgroup of its own with a CFS bandwidth limit, so the
//! throughput round can hold the gateway to a share of a core while the load side has the
//! rest. On a machine whose cores the bench, the simulator and the gateway share, the load
//! side costs more per message than the gateway per event and cannot otherwise outrun it;
//! under a quota the gateway is the process that saturates, and its rate over its CPU is its
//! ceiling per core.
//!
//! Works with the cgroup v1 `cpu` controller or cgroup v2 with `cpu` enabled, where the bench
//! may create groups (as root, or in a delegated subtree); otherwise [`CpuQuota::apply`] says
//! why not and the bench skips the round.

use std::path::{Path, PathBuf};

/// The CFS period the quota is a share of.
const PERIOD_US: u64 = 100_000;

/// A process held in a cgroup of its own; moved back and the group removed on drop.
#[derive(Debug)]
pub struct CpuQuota {
    pid: u32,
    group: PathBuf,
    parent: PathBuf,
}

/// Where a process's cpu cgroup is, and which version it is.
fn cpu_cgroup(pid: u32) -> Result<(PathBuf, bool), String> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read the process's cgroups: {e}"))?;
    // v1: "N:cpu,cpuacct:/path" (the controller may share its line with others).
    for line in table.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
        if let (Some(controllers), Some(path)) = (controllers, path) {
            if controllers.split(',').any(|c| c == "cpu") {
                for mount in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"] {
                    let dir = Path::new(mount).join(path.trim_start_matches('/'));
                    if dir.join("cpu.cfs_quota_us").exists() {
                        return Ok((dir, false));
                    }
                }
            }
        }
    }
    // v2: "0::/path", with cpu among the controllers its children may use (enabled for them
    // here when the group has it but has not passed it on).
    if let Some(path) = table.lines().find_map(|l| l.strip_prefix("0::")) {
        let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        let has = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .unwrap_or_default()
                .split_whitespace()
                .any(|c| c == "cpu")
        };
        if has("cgroup.controllers")
            && (has("cgroup.subtree_control")
                || std::fs::write(dir.join("cgroup.subtree_control"), "+cpu").is_ok())
        {
            return Ok((dir, true));
        }
    }
    Err("no cgroup cpu controller for the gateway's process".into())
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl CpuQuota {
    /// Holds `pid` to `cores` of CPU time (e.g. 0.5: half a core's time each period).
    pub fn apply(pid: u32, cores: f64) -> Result<Self, String> {
        if !(cores > 0.0 && cores.is_finite()) {
            return Err(format!("a CPU quota must be above 0 cores, not {cores}"));
        }
        let (parent, v2) = cpu_cgroup(pid)?;
        let group = parent.join(format!("connect-chat-bench-{}", std::process::id()));
        std::fs::create_dir(&group)
            .map_err(|e| format!("cannot create a cgroup under {}: {e}", parent.display()))?;
        let quota = CpuQuota { pid, group, parent };
        let quota_us = ((cores * PERIOD_US as f64) as u64).max(1_000);
        if v2 {
            write(
                &quota.group.join("cpu.max"),
                &format!("{quota_us} {PERIOD_US}"),
            )?;
        } else {
            write(
                &quota.group.join("cpu.cfs_period_us"),
                &PERIOD_US.to_string(),
            )?;
            write(&quota.group.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
        }
        write(&quota.group.join("cgroup.procs"), &pid.to_string())?;
        Ok(quota)
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Back where it was (a process that has exited has left the group by itself).
        let _ = std::fs::write(self.parent.join("cgroup.procs"), self.pid.to_string());
        let _ = std::fs::remove_dir(&self.group);
    }
}
