//! One upstream child process: spawned in its own process group from a small, documented base
//! environment, and stopped by the sequence of DESIGN.md: close stdin, wait, SIGTERM the group,
//! wait, SIGKILL the group.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::codec::{Frame, LineCodec};
use crate::config::StdioSpec;
use crate::upstream::records;
use crate::upstream::transport::SendError;

/// Variables passed from the daemon's environment to every child; everything else is dropped
/// so that the daemon's own secrets and settings do not leak into servers. A server's `env`
/// adds to (and overrides) these.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
    "TERM",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "DBUS_SESSION_BUS_ADDRESS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// How many stderr lines of a server are kept for status and failure messages.
pub const STDERR_TAIL: usize = 20;
/// Longest stderr line kept whole; longer ones are cut.
const MAX_STDERR_LINE: usize = 8 * 1024;
/// Messages queued for a server's stdin before senders are told it is busy.
pub const STDIN_QUEUE: usize = 1024;
/// First capacity of a server's stdout buffer: it grows to the longest line read (tokio's
/// default, 8 KiB, is most of what an idle server costs the daemon; messages are usually
/// smaller).
const STDOUT_BUFFER: usize = 1024;
/// First capacity of a server's stderr buffer (most servers write little or nothing there).
const STDERR_BUFFER: usize = 256;
/// Most bytes of queued lines written to a server's stdin at once.
const STDIN_BATCH: usize = 64 * 1024;

pub use crate::config::StopTimeouts;

/// How long a stop waits for a process to go after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// A running child: its handle, its stdin queue, its stdout frames and its stderr tail.
#[derive(Debug)]
pub struct Process {
    /// The child; its pid is also its process group id.
    pub child: Child,
    /// Process group id (= pid).
    pub pgid: Pid,
    /// Lines to write to stdin; dropping it closes stdin.
    pub stdin: Option<mpsc::Sender<String>>,
    /// Lines from stdout.
    pub stdout: FramedRead<ChildStdout, LineCodec>,
    /// The last lines it wrote to stderr.
    pub stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// How it ended, once it has.
    pub exit: Option<String>,
    /// Set when the leader has exited: its status and until when its output is still read.
    pub exited: Option<(Option<ExitStatus>, tokio::time::Instant)>,
    /// SIGCHLD, which tells the transport to look whether the leader exited (see
    /// `transport::stdio::next`); `None` where it cannot be had: `Child::wait` instead.
    pub sigchld: Option<tokio::signal::unix::Signal>,
    /// `sigchld` is polled only once it woke the actor (see `crate::quiet`).
    pub sigchld_gate: crate::quiet::Gate,
    /// Whether to look (a SIGCHLD came, or none was seen yet).
    pub check_exit: bool,
    /// Which processes are its tree (see [`super::tree`]).
    pub tree: super::tree::TreeId,
    /// Its sandbox, limits and tree, for `status`.
    pub in_force: Arc<InForce>,
    /// Its cgroup, when limits put it in one (killed and removed when dropped).
    pub cgroup: Option<crate::limits::ServerCgroup>,
    /// The configured stop sequence, also followed when the server exits or closes its stdout
    /// by itself (what is left of its tree gets the same grace).
    pub stop_timeouts: StopTimeouts,
    /// Its record in the runtime directory, removed when the process is dropped.
    _record: Option<ChildRecord>,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(set) = super::tree::spawned().as_mut() {
            set.remove(&self.tree.leader);
        }
    }
}

impl Process {
    /// Spawns `spec` as the leader of a new process group.
    pub fn spawn(
        server: &str,
        spec: &StdioSpec,
        contain: &crate::config::contain::Containment,
        records: Option<&Path>,
    ) -> std::io::Result<Self> {
        let mark = super::tree::next_mark();
        // Built before the fork; only enforced in the child (see `sandbox.rs`).
        let private_tmp = records
            .and_then(Path::parent)
            .map(|run| run.join("tmp").join(file_name_of(server)));
        let mut sandbox =
            crate::sandbox::prepare(server, spec, &contain.sandbox, private_tmp.as_deref());
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .env_clear()
            .envs(
                BASE_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .envs(&spec.env)
            .env(super::tree::TREE_ENV, &mark)
            .envs(sandbox.tmpdir.iter().map(|t| ("TMPDIR", t)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let sandbox_description = sandbox.description.clone();
        let mut in_child = sandbox.take_for_child();
        let limits = crate::limits::prepare(server, &contain.limits);
        let (procs_fd, nofile) = (crate::limits::raw(&limits.procs_fd), limits.nofile);
        // Without `openFiles`, the server gets the limit mcpd was started with, not the one
        // mcpd raised for its own sessions.
        let inherited_nofile = crate::limits::inherited_open_files().filter(|_| nofile.is_none());
        // SAFETY: the closure runs in the child between fork and exec and only calls write,
        // setrlimit, prctl and landlock_restrict_self (through `limits::apply_in_child`,
        // `limits::restore_open_files_in_child` and
        // `InChild::apply_in_child`, whose notes say why that is async-signal-safe); it
        // allocates nothing and touches no locks.
        unsafe {
            cmd.pre_exec(move || {
                // Its cgroup and rlimits, then no set-uid gain and the server's sandbox.
                crate::limits::restore_open_files_in_child(inherited_nofile)?;
                crate::limits::apply_in_child(procs_fd, nofile)?;
                in_child.apply_in_child()?;
                // If the daemon dies without stopping us, the kernel kills the child. Children
                // of the child are handled by the stop sequence and the start-up sweep.
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The reaper must not reap this child (tokio does): it is listed before the reaper can
        // see it.
        let mut spawned = super::tree::spawned();
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("child exited before its pid was read"))?;
        spawned
            .get_or_insert_with(Default::default)
            .insert(pid as i32);
        drop(spawned);
        // The child has joined its cgroup (or failed to start): the parent's copy can go.
        drop(limits.procs_fd);
        let pgid = Pid::from_raw(pid as i32);
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr pipe"))?;

        let (tx, rx) = mpsc::channel(STDIN_QUEUE);
        tokio::spawn(write_stdin(stdin, rx));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        tokio::spawn(log_stderr(
            server.to_owned(),
            stderr,
            Arc::clone(&stderr_tail),
        ));
        let record = records.and_then(|dir| ChildRecord::create(dir, server, pid, &mark));
        Ok(Self {
            child,
            pgid,
            exit: None,
            exited: None,
            sigchld: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok(),
            sigchld_gate: crate::quiet::Gate::new(),
            // It may have exited before the signal was listened to.
            check_exit: true,
            in_force: Arc::new(InForce {
                sandbox: sandbox_description,
                limits: limits.in_force,
                not_enforced: limits.not_enforced,
                cgroup: limits.cgroup.as_ref().map(|c| c.dir.clone()),
                tree: super::tree::TreeId {
                    leader: pid as i32,
                    mark: mark.clone(),
                },
            }),
            tree: super::tree::TreeId {
                leader: pid as i32,
                mark,
            },
            cgroup: limits.cgroup,
            _record: record,
            stdin: Some(tx),
            stdout: FramedRead::with_capacity(
                stdout,
                LineCodec::keeping_ends(mcpd_proto::line::MAX_MESSAGE_LINE),
                STDOUT_BUFFER,
            ),
            stderr_tail,
            stop_timeouts: StopTimeouts::default(),
        })
    }

    /// Queues one line for stdin without waiting. `Err` when the queue is full or stdin closed.
    pub fn send(&self, line: String) -> Result<(), SendError> {
        match &self.stdin {
            Some(tx) => tx.try_send(line).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::StdinFull,
                mpsc::error::TrySendError::Closed(_) => SendError::StdinClosed,
            }),
            None => Err(SendError::StdinClosed),
        }
    }

    /// The stderr tail joined for an error message.
    pub fn stderr_summary(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter()
            .rev()
            .take(3)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// The stop sequence: close stdin, wait, SIGTERM the group, wait, SIGKILL the group; then
    /// end whatever is left of its tree (grandchildren, also those that left the group).
    /// Returns the leader's exit status.
    pub async fn stop(&mut self, timeouts: StopTimeouts) -> Option<ExitStatus> {
        self.stdin = None;
        let status = match tokio::time::timeout(timeouts.after_stdin, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = killpg(self.pgid, Signal::SIGTERM);
                match tokio::time::timeout(timeouts.after_term, self.child.wait()).await {
                    Ok(status) => status.ok(),
                    Err(_) => {
                        let _ = killpg(self.pgid, Signal::SIGKILL);
                        // SIGKILL cannot be ignored, but a process in uninterruptible sleep
                        // (a hung NFS mount, a broken device) only dies when the kernel lets
                        // it: the stop does not wait for that forever. tokio reaps it later.
                        match tokio::time::timeout(AFTER_KILL, self.child.wait()).await {
                            Ok(status) => status.ok(),
                            Err(_) => {
                                tracing::warn!(
                                    pid = self.pgid.as_raw(),
                                    "still there {}s after SIGKILL (uninterruptible sleep?); no longer waiting for it",
                                    AFTER_KILL.as_secs()
                                );
                                None
                            }
                        }
                    }
                }
            }
        };
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
        super::tree::end_tree(&self.tree, timeouts.after_term).await;
        status
    }

    /// How it ended: `killed: memory limit 1G` when its cgroup's OOM killer ended it, else
    /// what its exit status says.
    pub fn describe_end(&self, status: Option<ExitStatus>) -> String {
        self.cgroup
            .as_ref()
            .and_then(crate::limits::ServerCgroup::limit_kill)
            .unwrap_or_else(|| describe_exit(status))
    }

    /// Reaps the leader after it exited by itself, then ends what is left of its tree.
    pub async fn reap(&mut self, timeouts: StopTimeouts) -> Option<ExitStatus> {
        self.stdin = None;
        let status = self.child.wait().await.ok();
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
        super::tree::end_tree(&self.tree, timeouts.after_term).await;
        status
    }
}

/// What contains a running server, as `status` shows it.
#[derive(Debug, Clone)]
pub struct InForce {
    /// The sandbox (see [`crate::sandbox::Prepared::description`]).
    pub sandbox: String,
    /// Limits in force and how (`memory 1G (cgroup)`).
    pub limits: Vec<String>,
    /// Configured limits that are not enforced, and why.
    pub not_enforced: Vec<String>,
    /// Its process tree, for accounting.
    pub tree: super::tree::TreeId,
    /// Its cgroup directory, when it has one.
    pub cgroup: Option<PathBuf>,
}

/// `name` made safe as one file name component.
fn file_name_of(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A child recorded in `$XDG_RUNTIME_DIR/mcpd/children/<pid>.json`: its pid (= process group)
/// and the kernel's start time of that pid. If the daemon dies without stopping its children
/// (SIGKILL, OOM), the next daemon finds the records and kills the groups that are still ours;
/// the start time makes sure a reused pid is never mistaken for ours. Dropping the record
/// (the process was stopped and reaped) removes the file.
#[derive(Debug)]
pub struct ChildRecord {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RecordFile {
    pub(crate) server: String,
    pub(crate) pid: i32,
    pub(crate) start_time: u64,
    pub(crate) daemon_pid: u32,
    /// The `MCPD_TREE` mark of its tree (absent in records of older daemons).
    #[serde(default)]
    pub(crate) mark: Option<String>,
}

impl ChildRecord {
    fn create(dir: &Path, server: &str, pid: u32, mark: &str) -> Option<Self> {
        let start_time = proc_start_time(pid as i32)?;
        let record = RecordFile {
            server: server.to_owned(),
            pid: pid as i32,
            start_time,
            daemon_pid: std::process::id(),
            mark: Some(mark.to_owned()),
        };
        let path = dir.join(format!("{pid}.json"));
        let written = records::prepare_records_dir(dir)
            .map_err(std::io::Error::other)
            .and_then(|()| serde_json::to_vec(&record).map_err(std::io::Error::other))
            .and_then(|bytes| {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)?
                    .write_all(&bytes)
            });
        match written {
            Ok(()) => Some(Self { path }),
            Err(e) => {
                tracing::warn!(
                    server,
                    "cannot record child {pid} in {}: {e}",
                    dir.display()
                );
                None
            }
        }
    }
}

impl Drop for ChildRecord {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields resume after the
    // last `)`, starting at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process groups that a previous daemon recorded in `dir` and that are still ours,
/// and removes the records. Returns how many groups were killed.
///
/// Records are believed only from a directory of ours ([`records::records_trusted`]) and only when they
/// are regular files of ours; a group is killed only when [`records::group_is_ours`]. Another user who
/// plants a record naming one of our process groups gets nothing killed.
pub fn sweep_records(dir: &Path) -> usize {
    if !records::records_trusted(dir) {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut killed = 0;
    let mut dead_runs: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let record = records::read_record(&path);
        let Some(record) = record else { continue };
        if record.mark.as_deref().is_some_and(run_is_live) {
            // Its daemon still runs: one that lets its calls in flight finish as it stops,
            // started before us. Its servers and records are its own to end.
            tracing::debug!(server = %record.server, pgid = record.pid, daemon = record.daemon_pid, "the recording mcpd still runs; left alone");
            continue;
        }
        let _ = std::fs::remove_file(&path);
        if record.daemon_pid == std::process::id() || record.pid <= 1 {
            continue;
        }
        if !records::group_is_ours(&record) {
            tracing::debug!(server = %record.server, pgid = record.pid, "the recorded group is gone or not ours; left alone");
        } else if killpg(Pid::from_raw(record.pid), Signal::SIGKILL).is_ok() {
            tracing::warn!(server = %record.server, pgid = record.pid, "killed what a previous mcpd left running");
            killed += 1;
        }
        // Descendants that left the group (setsid) still carry the dead run's mark.
        if let Some(prefix) = record.mark.as_deref().and_then(run_of_mark)
            && !dead_runs.contains(&prefix)
        {
            dead_runs.push(prefix);
        }
    }
    for prefix in dead_runs {
        let n = kill_marked_now(&prefix);
        if n > 0 {
            tracing::warn!(
                "killed {n} processes a previous mcpd's servers left outside their groups"
            );
            killed += n;
        }
    }
    killed
}

/// `<pid>.<start>.` of a mark `<pid>.<start>.<n>`, when that daemon run is over (no process
/// with that pid and start time).
fn run_of_mark(mark: &str) -> Option<String> {
    let (run, pid, start) = parse_mark(mark)?;
    if pid as u32 == std::process::id() || proc_start_time(pid) == Some(start) {
        return None;
    }
    Some(format!("{run}."))
}

/// Whether the daemon run of a mark `<pid>.<start>.<n>` is another daemon still running (a
/// process with that pid and start time).
fn run_is_live(mark: &str) -> bool {
    parse_mark(mark).is_some_and(|(_, pid, start)| {
        pid as u32 != std::process::id() && proc_start_time(pid) == Some(start)
    })
}

/// `<pid>.<start>`, the pid and the start time of a mark `<pid>.<start>.<n>`.
fn parse_mark(mark: &str) -> Option<(&str, i32, u64)> {
    let (run, _) = mark.rsplit_once('.')?;
    let (pid, start) = run.split_once('.')?;
    Some((run, pid.parse().ok()?, start.parse().ok()?))
}

/// SIGKILLs every process of ours whose mark starts with `prefix`, until none is left.
fn kill_marked_now(prefix: &str) -> usize {
    let mut killed = std::collections::HashSet::new();
    for _ in 0..20 {
        let left = super::tree::marked(&super::tree::Scan::take(), prefix);
        if left.is_empty() {
            break;
        }
        for p in left {
            if nix::sys::signal::kill(Pid::from_raw(p.pid), Signal::SIGKILL).is_ok() {
                killed.insert(p.pid);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.len()
}

/// Writes queued lines to the server's stdin, each with its newline, the lines already queued
/// together in one write. The buffer grows to the largest batch and is let go after one larger
/// than [`STDIN_BATCH`], so an idle server costs no buffer of a fixed size.
async fn write_stdin(mut stdin: ChildStdin, mut rx: mpsc::Receiver<String>) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(line) = rx.recv().await {
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        while buf.len() < STDIN_BATCH {
            let Ok(line) = rx.try_recv() else { break };
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        if stdin.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
        if buf.capacity() > STDIN_BATCH {
            buf = Vec::new();
        }
    }
    let _ = stdin.shutdown().await;
}

async fn log_stderr(
    server: String,
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines =
        FramedRead::with_capacity(stderr, LineCodec::new(MAX_STDERR_LINE), STDERR_BUFFER);
    while let Some(frame) = lines.next().await {
        let line = match frame {
            // Redacted here, before the journal, the ring and the status tail see it.
            Ok(Frame::Line(bytes)) => crate::redact::Redactor::process()
                .redact_owned(escape_control(&String::from_utf8_lossy(&bytes))),
            Ok(Frame::TooLong(len)) => format!("[a stderr line of {len} bytes was cut]"),
            Err(_) => break,
        };
        tracing::info!(target: "mcpd::upstream", server = %server, "{line}");
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Escapes control characters so that a server cannot forge log lines or terminal sequences.
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// "exited with status 1", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(name) => format!("killed by signal {sig} ({name})"),
                Err(_) => format!("killed by signal {sig}"),
            },
            _ => "exited".to_owned(),
        },
        None => "exited (status unknown)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stop_does_not_wait_forever_for_a_process_that_survives_sigkill() {
        // A process SIGKILL does not end (as one in uninterruptible sleep): here, the signals
        // are aimed at a process group that does not exist, so the child never gets them.
        let spec = crate::upstream::transport::tests::spec(serde_json::json!({
            "command": "sleep", "args": ["600"],
        }));
        let stdio = spec.stdio().expect("a stdio server");
        let mut p = Process::spawn("s", stdio, &spec.contain, None).expect("sleep starts");
        p.pgid = Pid::from_raw(i32::MAX);
        let timeouts = StopTimeouts {
            after_stdin: Duration::from_secs(1),
            after_term: Duration::from_secs(1),
        };
        let stopped = tokio::time::timeout(Duration::from_secs(3600), p.stop(timeouts)).await;
        let _ = p.child.kill().await;
        assert!(stopped.is_ok(), "the stop was still waiting an hour later");
    }

    #[test]
    fn the_records_of_a_daemon_that_still_runs_are_left_to_it() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("r")
            .tempdir_in("/tmp")
            .unwrap();
        let children = dir.path().join("children");
        records::prepare_records_dir(&children).unwrap();
        // `daemon` stands for another mcpd that still lets its calls in flight finish, `server`
        // for one of its servers (a process group of its own).
        let mut daemon = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let mut server = std::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .unwrap();
        let (dpid, pid) = (daemon.id() as i32, server.id() as i32);
        let record = RecordFile {
            server: "x".into(),
            pid,
            start_time: proc_start_time(pid).unwrap(),
            daemon_pid: dpid as u32,
            mark: Some(format!("{dpid}.{}.1", proc_start_time(dpid).unwrap())),
        };
        let path = children.join(format!("{pid}.json"));
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(sweep_records(&children), 0);
        assert!(path.exists(), "a live daemon's record was removed");
        assert!(
            server.try_wait().unwrap().is_none(),
            "a live daemon's server was killed"
        );
        // Once that daemon is gone (killed), the next one ends what it left.
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        assert_eq!(sweep_records(&children), 1);
        assert!(!path.exists());
        let status = server.wait().unwrap();
        assert!(!status.success(), "{status}");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_control("a\u{1b}[31mred\r\x07\tok"),
            "a\\u{1b}[31mred\\r\\u{7}\tok"
        );
    }
}
