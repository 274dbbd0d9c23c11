//! Processes as `/proc` shows them, and waiting with a deadline instead of sleeping.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How often the wait helpers look again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Polls `f` until it returns `Some`, and returns that; panics naming `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        thread::sleep(POLL);
    }
}

/// The fields of `/proc/<pid>/stat` that tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Process state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// Start time in clock ticks after boot: with the pid, identifies a process across pid reuse.
    pub start_time: u64,
}

/// Reads `/proc/<pid>/stat`; `None` if there is no such process.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces or parentheses itself.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is a live process (a zombie is not alive: it has exited).
pub fn process_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// The command line of `pid`, arguments joined by spaces; `None` if it is gone.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Some(parts.join(" "))
}

/// Every pid in `/proc`, in no particular order.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes whose command line contains `needle` (this test process excluded).
///
/// This sees every process of the machine, including other tests' running in parallel: to count
/// one daemon's children, prefer [`descendants_of`] filtered by [`cmdline`].
pub fn pids_of_cmdline_containing(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids: Vec<u32> = all_pids()
        .into_iter()
        .filter(|&pid| pid != me && process_alive(pid))
        .filter(|&pid| cmdline(pid).is_some_and(|c| c.contains(needle)))
        .collect();
    pids.sort_unstable();
    pids
}

/// Live descendants of `pid` (children, grandchildren, ...), sorted.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| {
            let s = stat(p)?;
            (s.state != 'Z' && s.state != 'X').then_some((p, s.ppid))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found.sort_unstable();
    found
}

/// Live descendants of `pid` whose command line contains `needle`.
pub fn descendants_with_cmdline(pid: u32, needle: &str) -> Vec<u32> {
    descendants_of(pid)
        .into_iter()
        .filter(|&p| cmdline(p).is_some_and(|c| c.contains(needle)))
        .collect()
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Makes the process `cmd` starts get SIGTERM when the thread that spawns it ends, however it
/// ends (a harness killed by a timeout, SIGKILL included), so that nothing it started outlives it.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid, kill); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody will send the signal.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            Ok(())
        });
    }
}

/// A process identity that survives pid reuse: a pid and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Its start time, from [`Stat::start_time`].
    pub start_time: u64,
}

impl ProcessId {
    /// The process `pid` as it is now, if it exists.
    pub fn of(pid: u32) -> Option<Self> {
        stat(pid).map(|s| Self {
            pid,
            start_time: s.start_time,
        })
    }

    /// Whether this very process (not a later one with the same pid) is still alive.
    pub fn alive(&self) -> bool {
        stat(self.pid)
            .is_some_and(|s| s.start_time == self.start_time && s.state != 'Z' && s.state != 'X')
    }

    /// SIGKILLs this process if it is still the same one.
    pub fn kill(&self) {
        if self.alive() {
            signal(self.pid, libc::SIGKILL);
        }
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) => return None,
            Err(e) => panic!("cannot wait for pid {}: {e}", child.id()),
        }
    }
}

/// Lines read from `reader` by a thread, delivered on a channel that closes at end of input.
pub fn line_channel(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Everything `reader` produces, collected by a thread (for a child's stderr).
#[derive(Debug, Clone, Default)]
pub struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    closed: Arc<AtomicBool>,
}

impl Captured {
    /// Starts collecting `reader`.
    pub fn start(mut reader: impl Read + Send + 'static) -> Self {
        let captured = Self::default();
        let sink = captured.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.bytes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(&chunk[..n]);
            }
            sink.closed.store(true, Ordering::Release);
        });
        captured
    }

    /// What was collected so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What was collected so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits up to `timeout` for the end of input (the writer and every copy of its end of the
    /// pipe closed); whether it came.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.closed.load(Ordering::Acquire))
    }
}

/// Runs `cmd` to completion with piped output; kills it and panics after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = Captured::start(child.stdout.take().expect("piped stdout"));
    let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
    let Some(status) = wait_timeout(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            stdout.text(),
            stderr.text()
        );
    };
    // A grandchild may hold the pipes open; do not wait for it for long.
    stdout.wait_closed(Duration::from_secs(2));
    stderr.wait_closed(Duration::from_secs(2));
    Output {
        status,
        stdout: stdout.bytes(),
        stderr: stderr.bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_by_command_line_and_sees_it_die() {
        let mut child = Command::new("sleep").arg("7.25").spawn().unwrap();
        let pid = child.id();
        assert!(process_alive(pid));
        // Until the child has exec'd, its command line is still this test's.
        assert!(wait_until(Duration::from_secs(10), || {
            pids_of_cmdline_containing("sleep 7.25").contains(&pid)
        }));
        assert!(descendants_of(std::process::id()).contains(&pid));
        assert_eq!(stat(pid).map(|s| s.ppid), Some(std::process::id()));
        let id = ProcessId::of(pid).unwrap();
        id.kill();
        child.wait().unwrap();
        assert!(!process_alive(pid));
        assert!(!id.alive());
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        assert!(wait_until(Duration::from_secs(10), || stat(pid)
            .is_some_and(|s| s.state == 'Z')));
        assert!(!process_alive(pid));
        child.wait().unwrap();
    }

    #[test]
    fn run_with_timeout_collects_output() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
}

#[cfg(test)]
mod die_with_parent_tests {
    use super::*;

    #[test]
    fn a_child_marked_to_die_with_its_parent_ends_when_the_spawning_thread_ends() {
        let mut child = thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            die_with_parent(&mut cmd);
            cmd.spawn().expect("sleep starts")
        })
        .join()
        .expect("the spawning thread");
        let status = wait_timeout(&mut child, Duration::from_secs(10));
        let _ = child.kill();
        let status = status.expect("the child got SIGTERM when its parent thread ended");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
}
