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

/// Why servers get no cgroup (no delegated cgroup v2 subtree), or why one server's cgroup
/// could not be made. The message is the whole reason shown in `mcpctl status`.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file under /proc or the cgroup tree could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// /proc/self/cgroup has no `0::` line.
    #[error("no cgroup v2 hierarchy (no `0::` line in /proc/self/cgroup)")]
    NoV2Hierarchy,
    /// No cgroup2 mount in /proc/self/mountinfo.
    #[error("cgroup v2 is not mounted")]
    NotMounted,
    /// Our cgroup lacks controllers the servers' cgroups need.
    #[error(
        "the cgroup v2 directory {dir} lacks the {missing} controller(s) (delegate them: systemd's Delegate=yes)"
    )]
    MissingControllers {
        /// Our cgroup directory.
        dir: String,
        /// The missing controllers, comma-separated.
        missing: String,
    },
    /// mcpd runs in the root cgroup.
    #[error("mcpd runs in the root cgroup; it uses only a delegated subtree")]
    RootCgroup,
    /// Our cgroup directory is not writable (the `daemon/` leaf could not be made).
    #[error("{dir} is not writable ({source})")]
    NotWritable {
        /// Our cgroup directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// mcpd could not move itself into its leaf.
    #[error("cannot move mcpd into {leaf}: {source}")]
    MoveSelf {
        /// The `daemon/` leaf.
        leaf: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `cgroup.subtree_control` refused the controllers.
    #[error("cannot enable controllers in {dir}: {source}")]
    EnableControllers {
        /// Our cgroup directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A server's cgroup directory could not be created.
    #[error("cannot create {dir}: {source}")]
    Create {
        /// The server's cgroup directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A limit could not be written to a server's cgroup.
    #[error("cannot write {value} to {dir}/{file}: {source}")]
    Write {
        /// The value.
        value: String,
        /// The server's cgroup directory.
        dir: String,
        /// The control file.
        file: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server's `cgroup.procs` could not be opened.
    #[error("cannot open {dir}/cgroup.procs: {source}")]
    OpenProcs {
        /// The server's cgroup directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
            CgroupBase::Unavailable(why.to_string())
        }
    })
}

fn find_base() -> Result<PathBuf, CgroupError> {
    let text =
        std::fs::read_to_string("/proc/self/cgroup").map_err(|source| CgroupError::Read {
            path: "/proc/self/cgroup".into(),
            source,
        })?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(CgroupError::NoV2Hierarchy)?;
    let mount = cgroup2_mount().ok_or(CgroupError::NotMounted)?;
    let dir = mount.join(rel.trim_start_matches('/'));
    let shown = || dir.display().to_string();
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).map_err(|source| {
        CgroupError::Read {
            path: format!("{}/cgroup.controllers", shown()),
            source,
        }
    })?;
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !available.split_whitespace().any(|a| a == *c))
        .collect();
    if !missing.is_empty() {
        return Err(CgroupError::MissingControllers {
            dir: shown(),
            missing: missing.join(", "),
        });
    }
    if rel.trim() == "/" {
        return Err(CgroupError::RootCgroup);
    }
    // A cgroup with processes cannot give controllers to children ("no internal processes"):
    // mcpd moves itself into a leaf first.
    let leaf = dir.join("daemon");
    std::fs::create_dir_all(&leaf).map_err(|source| CgroupError::NotWritable {
        dir: shown(),
        source,
    })?;
    std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()).map_err(
        |source| CgroupError::MoveSelf {
            leaf: leaf.display().to_string(),
            source,
        },
    )?;
    let enable: String = CONTROLLERS.iter().map(|c| format!("+{c} ")).collect();
    std::fs::write(dir.join("cgroup.subtree_control"), enable.trim()).map_err(|source| {
        CgroupError::EnableControllers {
            dir: shown(),
            source,
        }
    })?;
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
                e.to_string()
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
) -> Result<(ServerCgroup, OwnedFd), CgroupError> {
    let dir = base.join(format!(
        "server-{name}-{}",
        crate::upstream::tree::next_mark()
    ));
    let shown = || dir.display().to_string();
    std::fs::create_dir(&dir).map_err(|source| CgroupError::Create {
        dir: shown(),
        source,
    })?;
    let cgroup = ServerCgroup {
        dir: dir.clone(),
        memory: limits.memory,
    };
    let write = |file: &'static str, value: String| {
        std::fs::write(dir.join(file), &value).map_err(|source| CgroupError::Write {
            value,
            dir: shown(),
            file,
            source,
        })
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
        .map_err(|source| CgroupError::OpenProcs {
            dir: shown(),
            source,
        })?;
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

/// The soft `RLIMIT_NOFILE` mcpd was started with, when [`raise_open_files`] raised its own:
/// what servers get back, as if started by the user.
static INHERITED_NOFILE: OnceLock<libc::rlimit> = OnceLock::new();

/// Raises mcpd's own soft `RLIMIT_NOFILE` to its hard limit: every session holds one descriptor
/// for its socket and two for its pipes (or the client's stdio), so 512 sessions would not fit
/// in the usual soft limit of 1024 (systemd's default for services, kept low for programs
/// that still use `select`, which mcpd does not). Servers get the limit mcpd was started with
/// back ([`restore_open_files_in_child`]). Returns `(was, now)` when it raised it.
pub fn raise_open_files() -> std::io::Result<Option<(u64, u64)>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the valid local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(None);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the valid local; a soft limit up to the hard one is always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let _ = INHERITED_NOFILE.set(limit);
    Ok(Some((limit.rlim_cur, limit.rlim_max)))
}

/// The soft `RLIMIT_NOFILE` to give a server back (see [`raise_open_files`]), read before the
/// fork: the child only calls `setrlimit` with it ([`restore_open_files_in_child`]).
pub fn inherited_open_files() -> Option<libc::rlimit> {
    INHERITED_NOFILE.get().copied()
}

/// In the child between fork and exec: puts back the soft `RLIMIT_NOFILE` mcpd was started
/// with. Only `setrlimit` (async-signal-safe), no allocation.
pub fn restore_open_files_in_child(inherited: Option<libc::rlimit>) -> std::io::Result<()> {
    if let Some(lim) = inherited {
        // SAFETY: setrlimit with a valid pointer to a stack value; lowering is always allowed.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_error_says_the_whole_reason_and_keeps_its_cause() {
        let e = CgroupError::Write {
            value: "0".into(),
            dir: "/sys/fs/cgroup/x".into(),
            file: "memory.swap.max",
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(
            e.to_string()
                .starts_with("cannot write 0 to /sys/fs/cgroup/x/memory.swap.max: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            CgroupError::RootCgroup.to_string(),
            "mcpd runs in the root cgroup; it uses only a delegated subtree"
        );
    }
}
