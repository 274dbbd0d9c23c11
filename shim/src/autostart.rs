//! Starting `mcpd` when no daemon answers on the socket: the way to run mcpd without a service
//! manager (containers, macOS without the launchd agent, a plain shell).
//!
//! Only the first connection of a shim gets here, and only when the connect failed with
//! `ENOENT` or `ECONNREFUSED`; a shim whose daemon answers never touches any of this. The steps:
//!
//! 1. Create the socket's directory (mode 0700, as the daemon would) and take an exclusive
//!    `flock` on `autostart.lock` in it: shims started at the same moment queue here.
//! 2. Connect again: the shim that held the lock before us may have started a daemon already.
//! 3. Start `mcpd --socket SOCKET` (the `mcpd` next to this executable, else from `PATH`),
//!    detached: its own session, stdin `/dev/null`, stdout and stderr appended to
//!    `$XDG_STATE_HOME/mcpd/mcpd.log`, no other descriptor of ours, the working directory
//!    `$HOME`, umask 0077. It is not waited for: it outlives the shim and is re-parented when
//!    the shim exits.
//! 4. Connect until it answers (at most [`START_TIMEOUT`]), then release the lock.
//!
//! The connection that finally answers is the session's connection: the daemon sees no probe.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcpd_proto::paths::Paths;
use mcpd_proto::trust::{self, ConnectError};

use crate::Exit;
use crate::session;

/// Turns autostart off when set to anything but empty or `0` (as `--no-autostart` does).
pub const DISABLE_ENV: &str = "MCPD_NO_AUTOSTART";

/// How long a started daemon may take to answer on its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The lock file, in the socket's directory.
pub const LOCK_NAME: &str = "autostart.lock";

/// The daemon's log file, in `$XDG_STATE_HOME/mcpd`.
pub const LOG_NAME: &str = "mcpd.log";

/// A log larger than this is moved to `mcpd.log.old` before the next autostart.
const LOG_ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// First wait between connection attempts after the start; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(5);
/// Longest wait between connection attempts after the start.
const POLL_MAX: Duration = Duration::from_millis(100);

/// Environment variables that describe the shim's own service-manager context, which the
/// daemon must not take for its own: it is started by hand, with its log in a file.
const ENV_REMOVED: [&str; 5] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "JOURNAL_STREAM",
];

/// Signals whose disposition is reset for the daemon: a client may have started us with them
/// ignored, and an ignored signal stays ignored across `exec` (an ignored SIGCHLD would even
/// make the kernel reap the daemon's servers behind its back).
const SIGNALS_RESET: [libc::c_int; 7] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGCHLD,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Whether `value` of [`DISABLE_ENV`] turns autostart off.
pub fn disabled_by_env(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether a connect error means that no daemon listens there (so one may be started): no
/// socket file, or a stale one.
pub fn no_daemon(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED))
}

/// Starts a daemon for `socket` unless one answers meanwhile, and returns a connection to it.
pub fn start(socket: &Path) -> Result<UnixStream, Exit> {
    let cannot = |what: String| {
        Exit::fail(format!(
            "no mcpd daemon at {} and cannot start one: {what}",
            socket.display()
        ))
    };
    // The daemon runs in $HOME: a relative socket path must mean what it means to us.
    let socket = std::path::absolute(socket)
        .map_err(|e| cannot(format!("cannot resolve the socket path: {e}")))?;
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    private_dir(dir).map_err(cannot)?;
    let lock = lock(&dir.join(LOCK_NAME)).map_err(cannot)?;

    // Whoever held the lock before us may have started the daemon.
    match trust::connect(&socket) {
        Ok(stream) => return Ok(stream),
        Err(ConnectError::Io(e)) if no_daemon(&e) => {}
        Err(e) => return Err(session::connect_failure(&socket, &e)),
    }

    let program = daemon_program();
    let log_path = Paths::from_env().state_dir.join(LOG_NAME);
    let log = open_log(&log_path, &program, &socket).map_err(cannot)?;
    let mut child = spawn(&program, &socket, log).map_err(|e| {
        cannot(format!(
            "cannot run {} ({e}); install mcpd next to mcp-shim or in PATH",
            program.display()
        ))
    })?;

    let stream = wait_until_listening(&socket, &mut child, &log_path)?;
    drop(lock);
    Ok(stream)
}

/// Creates `dir` (and missing parents) with mode 0700, or checks that an existing one is ours
/// and a real directory (`lstat`: a symlink is refused, never followed); one of ours that others
/// may read is made private, as the daemon does.
fn private_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta =
        fs::symlink_metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    let uid = trust::our_uid();
    if meta.file_type().is_symlink() || meta.uid() != uid {
        return Err(match trust::check_private_dir(dir, uid) {
            Err(ConnectError::Untrusted(why)) => why.to_string(),
            _ => format!("{} is not a private directory of ours", dir.display()),
        });
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot chmod 700 {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Opens `path` and waits for an exclusive lock on it; closing the file releases it (also when
/// the shim dies). The descriptor is close-on-exec, so the daemon never holds the lock.
fn lock(path: &Path) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    loop {
        // SAFETY: the descriptor is valid: `file` owns it for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(format!("cannot lock {}: {e}", path.display()));
        }
    }
}

/// The `mcpd` next to this executable if there is one, else `mcpd` (looked up in `PATH`).
fn daemon_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("mcpd")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("mcpd"))
}

/// Opens the daemon's log for appending (creating its directory 0700 and moving a large log
/// aside first) and notes the start in it.
fn open_log(path: &Path, program: &Path, socket: &Path) -> Result<File, String> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if fs::metadata(path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let _ = fs::rename(path, path.with_extension("log.old"));
    }
    let mut log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
    let _ = writeln!(
        log,
        "mcp-shim {} (pid {}): no daemon at {}; starting {} --socket {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        socket.display(),
        program.display(),
        socket.display()
    );
    Ok(log)
}

/// Starts the daemon, detached from the shim and from the MCP client.
fn spawn(program: &Path, socket: &Path, log: File) -> io::Result<Child> {
    let log_too = log.try_clone()?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h.is_dir())
        .unwrap_or_else(|| PathBuf::from("/"));
    let fd_limit = fd_limit();
    let mut cmd = Command::new(program);
    cmd.arg("--socket")
        .arg(socket)
        // Never the client's pipes: a daemon holding our stdout would keep the client from
        // seeing the end of the shim's output, and its reads would steal the client's input.
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_too))
        .stderr(Stdio::from(log))
        .current_dir(home);
    for key in ENV_REMOVED {
        cmd.env_remove(key);
    }
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // functions may be called: it calls only `setsid`, `umask`, `sigaction`, `sigemptyset`,
    // `pthread_sigmask`, `fcntl` and the `close_range` system call, allocates nothing and takes
    // no lock. `fd_limit` was computed before the fork.
    unsafe {
        cmd.pre_exec(move || detach(fd_limit));
    }
    cmd.spawn()
}

/// In the child, before exec: a session of its own (no controlling terminal, not in the
/// client's process group, so nothing aimed at the client or the shim reaches it), a private
/// umask as the systemd unit sets, default signal dispositions and an empty signal mask, and no
/// descriptor beyond 0, 1 and 2 carried over exec (the client may have leaked some to us).
fn detach(fd_limit: libc::c_int) -> io::Result<()> {
    // SAFETY: each call is async-signal-safe and gets valid arguments: `action` and `set` are
    // initialised (zeroed, then set up) before use; `fcntl` on a descriptor that is not open
    // fails harmlessly with EBADF.
    unsafe {
        if libc::setsid() == -1 {
            return Err(io::Error::last_os_error());
        }
        libc::umask(0o077);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in SIGNALS_RESET {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());

        #[cfg(target_os = "linux")]
        let all_marked = {
            let first: libc::c_uint = 3;
            libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) == 0
        };
        #[cfg(not(target_os = "linux"))]
        let all_marked = false;
        if !all_marked {
            for fd in 3..fd_limit {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
    Ok(())
}

/// The number of descriptors to mark close-on-exec one by one where `close_range` is missing:
/// the soft `RLIMIT_NOFILE`, at most 65536.
fn fd_limit() -> libc::c_int {
    const CAP: libc::c_int = 65536;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    libc::c_int::try_from(limit.rlim_cur).map_or(CAP, |n| n.min(CAP))
}

/// Connects until the daemon answers; fails early if it exits first, and after
/// [`START_TIMEOUT`] otherwise, with one line naming the log.
fn wait_until_listening(socket: &Path, child: &mut Child, log: &Path) -> Result<UnixStream, Exit> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut delay = POLL_FIRST;
    loop {
        match trust::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(ConnectError::Io(e)) if no_daemon(&e) => {}
            Err(e) => return Err(session::connect_failure(socket, &e)),
        }
        // Reaps the daemon only if it already exited: a running one is never waited for.
        if let Ok(Some(status)) = child.try_wait() {
            // It may have lost a race with a daemon started by other means, which now answers.
            if let Ok(stream) = trust::connect(socket) {
                return Ok(stream);
            }
            return Err(Exit::fail(format!(
                "started mcpd for {} but it exited ({status}) before it listened; see its log \
                 {}{}",
                socket.display(),
                log.display(),
                last_line(log).map_or_else(String::new, |l| format!(" (last line: {l})"))
            )));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Exit::fail(format!(
                "started mcpd (pid {}) but it did not listen on {} within {} s; see its log {}",
                child.id(),
                socket.display(),
                START_TIMEOUT.as_secs(),
                log.display()
            )));
        }
        std::thread::sleep(delay.min(deadline - now));
        delay = (delay * 2).min(POLL_MAX);
    }
}

/// The last non-empty line of the log, shortened, for the error line.
fn last_line(log: &Path) -> Option<String> {
    const TAIL: u64 = 4096;
    const SHOWN: usize = 300;
    let mut file = File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let mut shown: String = line.chars().take(SHOWN).collect();
    if shown.len() < line.len() {
        shown.push_str("...");
    }
    Some(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_switch() {
        assert!(!disabled_by_env(None));
        assert!(!disabled_by_env(Some(OsStr::new(""))));
        assert!(!disabled_by_env(Some(OsStr::new("0"))));
        assert!(disabled_by_env(Some(OsStr::new("1"))));
        assert!(disabled_by_env(Some(OsStr::new("yes"))));
    }

    #[test]
    fn only_a_missing_or_stale_socket_means_no_daemon() {
        for (errno, expected) in [
            (libc::ENOENT, true),
            (libc::ECONNREFUSED, true),
            (libc::EACCES, false),
            (libc::ENOTDIR, false),
        ] {
            assert_eq!(
                no_daemon(&io::Error::from_raw_os_error(errno)),
                expected,
                "{errno}"
            );
        }
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_close() {
        let dir = tempfile::Builder::new()
            .prefix("a")
            .tempdir_in("/tmp")
            .unwrap();
        let run = dir.path().join("run").join("mcpd");
        private_dir(&run).unwrap();
        assert_eq!(fs::metadata(&run).unwrap().mode() & 0o777, 0o700);
        let path = run.join(LOCK_NAME);
        let held = lock(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let other = File::open(&path).unwrap();
        // SAFETY: a valid descriptor owned by `other`.
        let try_other = || unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(try_other(), -1);
        drop(held);
        assert_eq!(try_other(), 0);
    }

    #[test]
    fn a_shared_directory_is_made_private() {
        let dir = tempfile::Builder::new()
            .prefix("a")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(dir.path()).unwrap();
        assert_eq!(fs::metadata(dir.path()).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn the_last_log_line_is_shortened() {
        let dir = tempfile::Builder::new()
            .prefix("a")
            .tempdir_in("/tmp")
            .unwrap();
        let log = dir.path().join(LOG_NAME);
        assert_eq!(last_line(&log), None);
        fs::write(&log, format!("first\nmcpd: {}\n\n", "x".repeat(400))).unwrap();
        let line = last_line(&log).unwrap();
        assert!(
            line.starts_with("mcpd: xxx") && line.ends_with("..."),
            "{line}"
        );
        assert_eq!(line.chars().count(), 303);
    }
}
