//! A server's whole process tree, including descendants that left its process group.
//!
//! A process group is not a container: a grandchild that calls `setsid()` leaves it, and when
//! its parent exits it is reparented away from the server. Three things keep such a process
//! ours:
//!
//! - mcpd is a child subreaper (`PR_SET_CHILD_SUBREAPER`, [`become_subreaper`]): an orphaned
//!   descendant of a server is reparented to mcpd, not to init, and [`reaper`] reaps it when it
//!   exits (tokio reaps only the children it spawned, which are listed in [`SPAWNED`]).
//! - Every server process starts with `MCPD_TREE=<daemon pid>.<daemon start>.<n>` in its
//!   environment, a mark its descendants inherit whatever session or group they move to (the
//!   value names this daemon run and this server instance, and is no secret).
//! - A server's stop ends its tree ([`end_tree`]): every process below its leader, every
//!   member of its group, and every process of ours that carries its mark. The daemon's
//!   shutdown ends whatever carries this run's mark; the next daemon, after a SIGKILLed one,
//!   ends whatever carries the dead run's mark (the child records name it).
//!
//! What this cannot find: a descendant that both cleared its environment and left the tree
//! while mcpd was not running. While mcpd runs it stays mcpd's child (the subreaper) and is
//! ended when the daemon stops; a cgroup per server (see `limits.rs`) closes the gap where
//! one is available.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable that marks every process of a server's tree.
pub(crate) const TREE_ENV: &str = "MCPD_TREE";

/// Pids of the children tokio spawned and waits for itself: the reaper leaves them alone. The
/// lock is held across a spawn so that the reaper never sees such a child before it is listed.
pub(crate) static SPAWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Locks [`SPAWNED`] (a poisoned lock is still usable: the set stays consistent).
pub fn spawned() -> MutexGuard<'static, Option<HashSet<i32>>> {
    SPAWNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes this process a child subreaper: orphaned descendants are reparented to it.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only; it changes a flag of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// This daemon run's mark prefix: `<pid>.<start time>.`.
pub(crate) fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let pid = std::process::id();
        let start = super::process::proc_start_time(pid as i32).unwrap_or(0);
        format!("{pid}.{start}.")
    })
}

/// A fresh mark for one server process.
pub(crate) fn next_mark() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{}{}", run_prefix(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcEntry {
    /// Process id.
    pub pid: i32,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// State letter (`Z` for a zombie).
    pub state: u8,
    /// Start time in clock ticks after boot.
    pub start: u64,
    /// User + system CPU time in clock ticks, with that of its reaped children.
    pub cpu_ticks: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat`.
pub(crate) fn read_stat(pid: i32) -> Option<ProcEntry> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields are numbered from 1 in proc(5); `f[0]` is field 3 (state).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(ProcEntry {
        pid,
        state: f.first()?.bytes().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        cpu_ticks: num(11)? + num(12)? + num(13)? + num(14)?,
        start: num(19)?,
        rss_pages: num(21)?,
    })
}

/// Every process on the machine (those that vanish while listed are skipped).
pub(crate) fn all_processes() -> Vec<ProcEntry> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// The value of `MCPD_TREE` in the environment of `pid`, if it is readable and set.
pub(crate) fn mark_of(pid: i32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let key = format!("{TREE_ENV}=");
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(key.as_bytes()))
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
}

/// Which processes belong to one server instance.
#[derive(Debug, Clone)]
pub(crate) struct TreeId {
    /// The leader's pid (= its process group).
    pub leader: i32,
    /// Its `MCPD_TREE` mark.
    pub mark: String,
}

impl TreeId {
    /// The live members of the tree (the leader too, if it still runs).
    pub fn members(&self, scan: &Scan) -> Vec<ProcEntry> {
        let procs = &scan.procs;
        let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
        for (i, p) in procs.iter().enumerate() {
            children.entry(p.ppid).or_default().push(i);
        }
        let me = std::process::id() as i32;
        let mut stack: Vec<usize> = procs
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.pid == self.leader
                    || p.pgrp == self.leader
                    || (p.pid != me
                        && scan.marks.get(&p.pid).map(String::as_str) == Some(self.mark.as_str()))
            })
            .map(|(i, _)| i)
            .collect();
        let mut found: HashSet<i32> = HashSet::new();
        let mut out = Vec::new();
        while let Some(i) = stack.pop() {
            let p = procs[i];
            if p.pid == me || !found.insert(p.pid) {
                continue;
            }
            if p.state != b'Z' && p.state != b'X' {
                out.push(p);
            }
            if let Some(kids) = children.get(&p.pid) {
                stack.extend(kids.iter().copied());
            }
        }
        out
    }
}

/// The process table at one moment, with the `MCPD_TREE` marks of our user's processes.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Every process.
    pub procs: Vec<ProcEntry>,
    /// Marks by pid (processes of our user that carry one).
    pub marks: HashMap<i32, String>,
}

impl Scan {
    /// Reads `/proc` (blocking: many small files).
    pub fn take() -> Self {
        let procs = all_processes();
        let uid = nix::unistd::geteuid().as_raw();
        let marks = procs
            .iter()
            .filter(|p| p.state != b'Z' && owner(p.pid) == Some(uid))
            .filter_map(|p| Some((p.pid, mark_of(p.pid)?)))
            .collect();
        Self { procs, marks }
    }
}

/// The uid owning `/proc/PID`.
fn owner(pid: i32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// Ends every live member of `tree`: SIGTERM, up to `grace` for them to go, then SIGKILL until
/// none is left (a process that forks while it is being killed is found by the next scan).
pub(crate) async fn end_tree(tree: &TreeId, grace: Duration) {
    end_where(|scan| tree.members(scan), grace).await;
}

/// Ends every process of ours that carries a mark starting with `prefix` (a whole daemon run).
pub(crate) async fn end_marked(prefix: &str, grace: Duration) -> usize {
    let prefix = prefix.to_owned();
    end_where(move |scan| marked(scan, &prefix), grace).await
}

/// The live processes of our user whose mark starts with `prefix`.
pub(crate) fn marked(scan: &Scan, prefix: &str) -> Vec<ProcEntry> {
    let me = std::process::id() as i32;
    scan.procs
        .iter()
        .filter(|p| p.pid != me && p.state != b'Z' && p.state != b'X')
        .filter(|p| {
            scan.marks
                .get(&p.pid)
                .is_some_and(|m| m.starts_with(prefix))
        })
        .copied()
        .collect()
}

async fn end_where(find: impl Fn(&Scan) -> Vec<ProcEntry>, grace: Duration) -> usize {
    let first = scan(&find).await;
    if first.is_empty() {
        return 0;
    }
    for p in &first {
        signal_same(p, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let left = scan(&find).await;
        if left.is_empty() {
            return first.len();
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    // SIGKILL until nothing is left; a bounded number of rounds in case something keeps
    // forking faster than it dies (then it is logged).
    for _ in 0..50 {
        let left = scan(&find).await;
        if left.is_empty() {
            return first.len();
        }
        for p in &left {
            signal_same(p, Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = scan(&find).await;
    if !left.is_empty() {
        let pids: Vec<i32> = left.iter().map(|p| p.pid).collect();
        tracing::warn!("processes survived SIGKILL: {pids:?}");
    }
    first.len()
}

/// Scans `/proc` on a blocking thread (it reads many small files).
async fn scan(find: &impl Fn(&Scan) -> Vec<ProcEntry>) -> Vec<ProcEntry> {
    let scan = tokio::task::spawn_blocking(Scan::take)
        .await
        .unwrap_or_default();
    find(&scan)
}

/// Signals `p` only if its pid still names the same process (start time unchanged).
fn signal_same(p: &ProcEntry, sig: Signal) {
    if read_stat(p.pid).is_some_and(|now| now.start == p.start) {
        let _ = kill(Pid::from_raw(p.pid), sig);
    }
}

/// Reaps orphans reparented to this subreaper whenever a child changes state (SIGCHLD), and
/// every few seconds in case a signal was coalesced. Runs until the runtime ends.
pub(crate) async fn reaper() {
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot watch SIGCHLD; orphans are reaped every 5 s: {e}");
            None
        }
    };
    loop {
        tokio::select! {
            _ = async { match sigchld.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let _ = tokio::task::spawn_blocking(reap_orphans).await;
    }
}

/// Reaps the zombies among our children that tokio did not spawn.
pub(crate) fn reap_orphans() -> usize {
    let me = std::process::id() as i32;
    // Our children are listed per thread in /proc/self/task/*/children; an orphan reparented
    // to us may be under any thread, so the whole process table is scanned instead.
    let zombies: Vec<i32> = all_processes()
        .into_iter()
        .filter(|p| p.ppid == me && p.state == b'Z')
        .map(|p| p.pid)
        .collect();
    if zombies.is_empty() {
        return 0;
    }
    let spawned = spawned();
    let mut reaped = 0;
    for pid in zombies {
        if spawned.as_ref().is_some_and(|s| s.contains(&pid)) {
            continue;
        }
        let flags = nix::sys::wait::WaitPidFlag::WNOHANG;
        if nix::sys::wait::waitpid(Pid::from_raw(pid), Some(flags)).is_ok() {
            reaped += 1;
        }
    }
    reaped
}
