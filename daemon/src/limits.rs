//! Resource limits of a server's processes (`"limits": {"memory": "1G", "tasks": 256, "cpu":
//! 0.5, "openFiles": 4096}`).
//!
//! - Where mcpd runs in a delegated, writable cgroup v2 directory with the needed controllers
//!   (a systemd user service with `Delegate=yes`), each server process gets a child cgroup of
//!   its own with `memory.max`, `pids.max` and `cpu.max`; the child moves itself into it
//!   between fork and exec (through a file descriptor opened before the fork). Its stop ends
//!   with `cgroup.kill`; the next daemon kills and removes what a SIGKILLed one left.
//! - Elsewhere only the honest rlimits are set: `openFiles` as `RLIMIT_NOFILE` (per process,
//!   which is what it means). Memory is not limited with `RLIMIT_AS` (V8 and other runtimes
//!   reserve far more address space than they use, so node would fail at start) nor with
//!   `RLIMIT_DATA` (per process, not per tree); `tasks` is not `RLIMIT_NPROC` (it counts every
//!   process of the user, not the server's tree); `cpu` is a rate, which `RLIMIT_CPU` (total
//!   seconds, then SIGKILL) is not. Those are reported as not enforced in `mcpctl status`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::config::contain::{Limits, format_size};

/// The cgroup v2 directory under which mcpd makes the servers' cgroups, or why there is none.
#[derive(Debug, Clone)]
pub enum CgroupBase {
    /// `<our cgroup>` where servers' cgroups are created (mcpd itself moved to `daemon/`).
    Delegated(PathBuf),
    /// Why servers get no cgroup.
    Unavailable(String),
}

/// Controllers the servers' cgroups need.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Finds (once) a delegated cgroup v2 subtree. Must be called before servers start: it moves
/// the daemon into a leaf `daemon/` so that its cgroup can hand controllers to children.
pub fn base() -> &'static CgroupBase {
    static BASE: OnceLock<CgroupBase> = OnceLock::new();
    BASE.get_or_init(|| match find_base() {
        Ok(dir) => {
            tracing::info!("servers get cgroups under {}", dir.display());
            CgroupBase::Delegated(dir)
        }
        Err(why) => {
            tracing::info!("servers' limits: no cgroup ({why}); rlimits where honest");
            CgroupBase::Unavailable(why)
        }
    })
}

fn find_base() -> Result<PathBuf, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v2 hierarchy (no `0::` line in /proc/self/cgroup)")?;
    let mount = cgroup2_mount().ok_or("cgroup v2 is not mounted")?;
    let dir = mount.join(rel.trim_start_matches('/'));
    let available = std::fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("cannot read {}/cgroup.controllers: {e}", dir.display()))?;
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !available.split_whitespace().any(|a| a == *c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the cgroup v2 directory {} lacks the {} controller(s) (delegate them: systemd's Delegate=yes)",
            dir.display(),
            missing.join(", ")
        ));
    }
    if rel.trim() == "/" {
        return Err("mcpd runs in the root cgroup; it uses only a delegated subtree".into());
    }
    // A cgroup with processes cannot give controllers to children ("no internal processes"):
    // mcpd moves itself into a leaf first.
    let leaf = dir.join("daemon");
    std::fs::create_dir_all(&leaf)
        .map_err(|e| format!("{} is not writable ({e})", dir.display()))?;
    std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| format!("cannot move mcpd into {}: {e}", leaf.display()))?;
    let enable: String = CONTROLLERS.iter().map(|c| format!("+{c} ")).collect();
    std::fs::write(dir.join("cgroup.subtree_control"), enable.trim())
        .map_err(|e| format!("cannot enable controllers in {}: {e}", dir.display()))?;
    Ok(dir)
}

fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// A server process's cgroup: removed (after `cgroup.kill`) when dropped.
#[derive(Debug)]
pub struct ServerCgroup {
    /// Its directory.
    pub dir: PathBuf,
    /// The memory limit, to report an OOM kill as `killed: memory limit 1G`.
    pub memory: Option<u64>,
}

impl ServerCgroup {
    /// Kills everything in it at once (`cgroup.kill`).
    pub fn kill(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
    }

    /// `oom_kill` count from `memory.events`.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Why the server died, if its limit killed it.
    pub fn limit_kill(&self) -> Option<String> {
        let memory = self.memory?;
        (self.oom_kills() > 0).then(|| format!("killed: memory limit {}", format_size(memory)))
    }
}

impl Drop for ServerCgroup {
    fn drop(&mut self) {
        self.kill();
        // Empty once its processes are gone; the kernel needs a moment after cgroup.kill.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        tracing::debug!("cannot remove {}", self.dir.display());
    }
}

/// What a server gets: its cgroup (if any), an fd of its `cgroup.procs` for the child, the
/// rlimits to set in the child, and the status lines.
#[derive(Debug, Default)]
pub struct Applied {
    /// The server's cgroup.
    pub cgroup: Option<ServerCgroup>,
    /// `cgroup.procs` of that cgroup, opened for the child to write itself into.
    pub procs_fd: Option<OwnedFd>,
    /// `RLIMIT_NOFILE` for the child.
    pub nofile: Option<u64>,
    /// Limits in force and how.
    pub in_force: Vec<String>,
    /// Configured limits that are not enforced, and why.
    pub not_enforced: Vec<String>,
}

/// Prepares `limits` for one server process (before the fork). `name` names its cgroup.
pub fn prepare(name: &str, limits: &Limits) -> Applied {
    let mut applied = Applied::default();
    if !limits.any() {
        return applied;
    }
    if let Some(n) = limits.open_files {
        applied.nofile = Some(n);
        applied.in_force.push(format!("openFiles {n} (rlimit)"));
    }
    let wants_cgroup = limits.memory.is_some() || limits.tasks.is_some() || limits.cpu.is_some();
    if !wants_cgroup {
        return applied;
    }
    let why = match base() {
        CgroupBase::Delegated(dir) => match make_cgroup(dir, name, limits) {
            Ok((cgroup, fd)) => {
                if let Some(m) = limits.memory {
                    applied
                        .in_force
                        .push(format!("memory {} (cgroup)", format_size(m)));
                }
                if let Some(t) = limits.tasks {
                    applied.in_force.push(format!("tasks {t} (cgroup)"));
                }
                if let Some(c) = limits.cpu {
                    applied.in_force.push(format!("cpu {c} (cgroup)"));
                }
                applied.cgroup = Some(cgroup);
                applied.procs_fd = Some(fd);
                return applied;
            }
            Err(e) => {
                tracing::warn!(server = name, "cannot make its cgroup: {e}");
                e
            }
        },
        CgroupBase::Unavailable(why) => why.clone(),
    };
    if let Some(m) = limits.memory {
        applied.not_enforced.push(format!(
            "memory {}: {why} (RLIMIT_AS would break runtimes that reserve address space, such as node)",
            format_size(m)
        ));
    }
    if let Some(t) = limits.tasks {
        applied.not_enforced.push(format!(
            "tasks {t}: {why} (RLIMIT_NPROC counts all the user's processes, not the server's)"
        ));
    }
    if let Some(c) = limits.cpu {
        applied
            .not_enforced
            .push(format!("cpu {c}: {why} (no rlimit limits a CPU rate)"));
    }
    applied
}

fn make_cgroup(
    base: &Path,
    name: &str,
    limits: &Limits,
) -> Result<(ServerCgroup, OwnedFd), String> {
    let dir = base.join(format!(
        "server-{name}-{}",
        crate::upstream::tree::next_mark()
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cgroup = ServerCgroup {
        dir: dir.clone(),
        memory: limits.memory,
    };
    let write = |file: &str, value: String| {
        std::fs::write(dir.join(file), &value)
            .map_err(|e| format!("cannot write {value} to {}/{file}: {e}", dir.display()))
    };
    if let Some(m) = limits.memory {
        write("memory.max", m.to_string())?;
        // Without this, the kernel would swap the server out instead of killing it.
        let _ = write("memory.swap.max", "0".into());
    }
    if let Some(t) = limits.tasks {
        write("pids.max", t.to_string())?;
    }
    if let Some(c) = limits.cpu {
        let period = 100_000u64;
        let quota = ((c * period as f64) as u64).max(1000);
        write("cpu.max", format!("{quota} {period}"))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", dir.display()))?;
    Ok((cgroup, OwnedFd::from(file)))
}

/// In the child between fork and exec: joins the cgroup and sets the rlimits. Only `write`
/// and `setrlimit` (async-signal-safe), no allocation.
pub fn apply_in_child(procs_fd: Option<i32>, nofile: Option<u64>) -> std::io::Result<()> {
    if let Some(fd) = procs_fd {
        // "0" moves the writing process.
        // SAFETY: write(2) on a descriptor opened before the fork, from a static buffer.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if let Some(n) = nofile {
        let lim = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: setrlimit with a valid pointer to a stack value.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The raw fd for the child closure (the `OwnedFd` stays with the parent until after spawn).
pub fn raw(fd: &Option<OwnedFd>) -> Option<i32> {
    fd.as_ref().map(AsRawFd::as_raw_fd)
}

/// Kills and removes the servers' cgroups a previous (SIGKILLed) daemon left under the base.
pub fn sweep_leftovers() -> usize {
    let CgroupBase::Delegated(base) = base() else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mine = crate::upstream::tree::run_prefix();
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("server-") || name.contains(mine) {
            continue;
        }
        let dir = e.path();
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if std::fs::remove_dir(&dir).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        n += 1;
    }
    n
}

/// Memory (bytes) and CPU time (µs) of the server's cgroup, when it has one.
pub fn cgroup_usage(in_force: &crate::upstream::process::InForce) -> Option<(u64, u64)> {
    in_force.cgroup.as_deref().and_then(usage_of)
}

/// `memory.current` and `cpu.stat`'s `usage_usec` of a cgroup directory.
fn usage_of(dir: &Path) -> Option<(u64, u64)> {
    let mem = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())?;
    Some((mem, cpu))
}
