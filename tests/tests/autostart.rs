//! `mcp-shim` starting `mcpd` itself when no daemon answers (the way to run without systemd),
//! with the real binaries in private temp XDG trees.
//!
//! Every daemon a test starts is found by its socket path (`mcpd --socket PATH` is how the shim
//! starts it) and stopped by the [`Place`] guard, also when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use mcpd_tests::process::{self, ProcessId, cmdline, run_with_timeout};
use mcpd_tests::{ShimClient, TIMEOUT, bin, wait_until};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A private temp tree (`/tmp/as-XXXXXX`: socket paths must stay short) with `XDG_*` and `HOME`
/// in it and a config that runs the example server. Dropping it stops every daemon that
/// listens on its socket, and whatever those daemons started.
struct Place {
    dir: Option<TempDir>,
    root: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Place {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("as-")
            .tempdir_in("/tmp")
            .expect("cannot create a temp dir in /tmp");
        let root = dir.path().to_path_buf();
        for sub in ["run", "cfg/mcpd", "state", "cache", "home"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        // As pam_systemd makes XDG_RUNTIME_DIR: private to its user.
        fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        let config = json!({"mcpServers": {"example": {
            "command": bin("mcpctl").display().to_string(),
            "args": ["example-server"],
        }}});
        let config_path = root.join("cfg/mcpd/config.json");
        fs::write(&config_path, config.to_string()).unwrap();
        fs::set_permissions(&config_path, fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            socket: root.join("run/mcpd/mcpd.sock"),
            log: root.join("state/mcpd/mcpd.log"),
            dir: Some(dir),
            root,
        }
    }

    /// The environment of a client here: no `MCPD_SOCKET`, so the socket comes from
    /// `XDG_RUNTIME_DIR` as for a user's client.
    fn env(&self) -> Vec<(String, String)> {
        let path = |sub: &str| self.root.join(sub).display().to_string();
        let mut env = vec![
            ("XDG_RUNTIME_DIR".to_owned(), path("run")),
            ("XDG_CONFIG_HOME".to_owned(), path("cfg")),
            ("XDG_STATE_HOME".to_owned(), path("state")),
            ("XDG_CACHE_HOME".to_owned(), path("cache")),
            ("HOME".to_owned(), path("home")),
            ("RUST_LOG".to_owned(), "debug".to_owned()),
        ];
        if let Some(p) = std::env::var_os("PATH") {
            env.push(("PATH".to_owned(), p.to_string_lossy().into_owned()));
        }
        env
    }

    /// `program` (`mcp-shim`, `mcpctl`, or a copy) with this place's environment only.
    fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new(program.as_ref());
        cmd.env_clear().envs(self.env());
        cmd
    }

    fn shim(&self) -> ShimClient {
        ShimClient::from_command(self.command(bin("mcp-shim")))
    }

    fn mcpctl(&self, args: &[&str]) -> Output {
        run_with_timeout(self.command(bin("mcpctl")).args(args), TIMEOUT)
    }

    /// `mcpctl status --json`, parsed.
    fn status(&self) -> Value {
        let out = self.mcpctl(&["status", "--json"]);
        assert!(
            out.status.success(),
            "mcpctl status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Live `mcpd` processes listening (or about to) on this place's socket.
    fn daemons(&self) -> Vec<u32> {
        let needle = format!("--socket {}", self.socket.display());
        process::pids_of_cmdline_containing(&needle)
            .into_iter()
            .filter(|&pid| {
                cmdline(pid).is_some_and(|c| {
                    c.split(' ')
                        .next()
                        .is_some_and(|argv0| argv0.ends_with("mcpd"))
                })
            })
            .collect()
    }

    /// The one daemon running here.
    fn the_daemon(&self) -> u32 {
        let daemons = self.daemons();
        assert_eq!(daemons.len(), 1, "mcpd processes on {:?}", self.socket);
        daemons[0]
    }

    fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// How many times a shim started a daemon here (each start writes one line to the log).
    fn starts(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.starts_with("mcp-shim ") && l.contains("; starting "))
            .count()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let daemons: Vec<ProcessId> = self
            .daemons()
            .into_iter()
            .filter_map(ProcessId::of)
            .collect();
        let leftovers: Vec<ProcessId> = daemons
            .iter()
            .flat_map(|d| process::descendants_of(d.pid))
            .filter_map(ProcessId::of)
            .collect();
        for d in &daemons {
            process::signal(d.pid, libc::SIGTERM);
        }
        if !wait_until(Duration::from_secs(5), || {
            daemons.iter().all(|d| !d.alive())
        }) {
            daemons.iter().for_each(ProcessId::kill);
        }
        leftovers.iter().for_each(ProcessId::kill);
        if thread::panicking() {
            let kept = self.dir.take().map(TempDir::keep);
            eprintln!(
                "--- {} (temp tree kept at {kept:?}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// The `readlink` of each of `pid`'s descriptors.
fn fd_targets(pid: u32) -> Vec<(String, String)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<(String, String)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let target = fs::read_link(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                target.display().to_string(),
            ))
        })
        .collect();
    fds.sort();
    fds
}

fn fd_target(pid: u32, fd: &str) -> Option<String> {
    fd_targets(pid)
        .into_iter()
        .find(|(n, _)| n == fd)
        .map(|(_, t)| t)
}

/// The session id of `pid` (field 6 of `/proc/PID/stat`).
fn session_of(pid: u32) -> Option<u32> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn a_shim_with_no_daemon_starts_one_and_its_session_works() {
    let place = Place::new();
    assert!(place.daemons().is_empty());
    let mut shim = place.shim();
    let init = shim.initialize();
    assert_eq!(init["serverInfo"]["name"], "mcpd", "{init}");
    let called = shim.call_tool("example__echo", json!({"message": "hi"}));
    assert!(called.to_string().contains("hi"), "{called}");

    let daemon = place.the_daemon();
    assert_eq!(
        cmdline(daemon).unwrap(),
        format!(
            "{} --socket {}",
            fs::canonicalize(bin("mcpd")).unwrap().display(),
            place.socket.display()
        ),
        "the mcpd next to mcp-shim, on the socket the shim looks at"
    );
    // Detached: a session (and process group) of its own, its cwd the home directory.
    assert_eq!(session_of(daemon), Some(daemon));
    assert_ne!(session_of(daemon), session_of(shim.pid()));
    assert_eq!(
        fs::read_link(format!("/proc/{daemon}/cwd")).unwrap(),
        place.root.join("home")
    );
    // Its stdin is /dev/null and its output goes to the log, never to the client's pipes.
    assert_eq!(fd_target(daemon, "0").as_deref(), Some("/dev/null"));
    let log = place.log.display().to_string();
    assert_eq!(fd_target(daemon, "1"), Some(log.clone()));
    assert_eq!(fd_target(daemon, "2"), Some(log));
    let text = place.log_text();
    assert!(text.contains(" ready"), "{text}");
    assert_eq!(place.starts(), 1);
    // The directories are private; the lock sits next to the socket.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(place.socket.parent().unwrap()), 0o700);
    assert_eq!(mode(&place.socket.with_file_name("autostart.lock")), 0o600);
    assert_eq!(mode(place.log.parent().unwrap()), 0o700);
    assert_eq!(mode(&place.log), 0o600);

    // A second shim uses the running daemon: no second start.
    let mut again = place.shim();
    again.initialize();
    assert_eq!(place.daemons(), [daemon]);
    assert_eq!(place.starts(), 1);
    let status = place.status();
    assert_eq!(status["pid"], daemon);
    assert_eq!(status["sessions"].as_array().map(Vec::len), Some(2));
}

#[test]
fn shims_launched_at_the_same_moment_end_up_on_one_daemon() {
    const SHIMS: usize = 3;
    let place = Arc::new(Place::new());
    let go = Arc::new(Barrier::new(SHIMS));
    let spawned: Vec<_> = (0..SHIMS)
        .map(|_| {
            let place = Arc::clone(&place);
            let go = Arc::clone(&go);
            thread::spawn(move || {
                let cmd = place.command(bin("mcp-shim"));
                go.wait();
                ShimClient::from_command(cmd)
            })
        })
        .collect();
    let mut shims: Vec<ShimClient> = spawned.into_iter().map(|t| t.join().unwrap()).collect();
    for shim in &mut shims {
        let init = shim.initialize();
        assert_eq!(init["serverInfo"]["name"], "mcpd", "{init}");
    }
    let daemon = place.the_daemon();
    assert_eq!(place.starts(), 1, "{}", place.log_text());
    let status = place.status();
    assert_eq!(status["pid"], daemon);
    assert_eq!(
        status["sessions"].as_array().map(Vec::len),
        Some(SHIMS),
        "{status}"
    );
    // Still one a moment later: no loser of a race is still starting up.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(place.daemons(), [daemon]);
}

#[test]
fn no_autostart_keeps_the_one_line_error() {
    let place = Place::new();
    let expected = format!(
        "mcp-shim: no mcpd daemon at {} (no such socket); start it with 'mcpd' or \
         'systemctl --user start mcpd.socket'\n",
        place.socket.display()
    );
    let by_flag = run_with_timeout(
        place.command(bin("mcp-shim")).arg("--no-autostart"),
        TIMEOUT,
    );
    let by_env = run_with_timeout(
        place.command(bin("mcp-shim")).env("MCPD_NO_AUTOSTART", "1"),
        TIMEOUT,
    );
    for out in [by_flag, by_env] {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
        assert!(out.stdout.is_empty());
    }
    assert!(place.daemons().is_empty());
    // Nothing was created either.
    assert!(!place.socket.parent().unwrap().exists());
    assert!(!place.log.exists());
}

/// The client goes away the hard way (its whole process group is killed): the daemon the shim
/// started lives on, and the client's reader of the shim's stdout sees the end at once.
#[test]
fn the_started_daemon_outlives_the_shim_and_keeps_none_of_its_pipes() {
    let place = Place::new();
    let mut cmd = place.command(bin("mcp-shim"));
    cmd.process_group(0);
    let mut shim = ShimClient::from_command(cmd);
    shim.initialize();
    let shim_pid = shim.pid();
    let daemon = ProcessId::of(place.the_daemon()).unwrap();

    // None of the shim's stdio pipes is open in the daemon.
    let shim_stdio: Vec<String> = ["0", "1", "2"]
        .iter()
        .filter_map(|fd| fd_target(shim_pid, fd))
        .collect();
    assert_eq!(shim_stdio.len(), 3);
    let held: Vec<_> = fd_targets(daemon.pid)
        .into_iter()
        .filter(|(_, t)| shim_stdio.contains(t))
        .collect();
    assert!(
        held.is_empty(),
        "the daemon holds the shim's stdio: {held:?}"
    );

    let group = i32::try_from(shim_pid).unwrap();
    // SAFETY: kill(2) has no memory-safety preconditions; the group is the shim's own.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGKILL) }, 0);
    assert!(shim.wait_exit(TIMEOUT).is_some());
    let started = Instant::now();
    loop {
        match shim.recv_line_timeout(Duration::from_secs(5)) {
            Ok(_) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                panic!("the shim's stdout is still open after it exited")
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    assert!(daemon.alive(), "the daemon died with the shim");
    assert_ne!(process::stat(daemon.pid).unwrap().ppid, shim_pid);
    // And it still serves: the next shim attaches without starting another.
    let mut next = place.shim();
    next.initialize();
    assert_eq!(place.daemons(), [daemon.pid]);
    assert_eq!(place.starts(), 1);
}

/// The shim closes its stdin the normal way and exits; the daemon stays.
#[test]
fn the_started_daemon_stays_when_the_client_closes_the_session() {
    let place = Place::new();
    let mut shim = place.shim();
    shim.initialize();
    let daemon = ProcessId::of(place.the_daemon()).unwrap();
    assert_eq!(shim.close().code(), Some(0));
    assert!(daemon.alive());
    let status = place.status();
    assert_eq!(status["pid"], daemon.pid);
}

/// `mcpd` found in `PATH` when none is next to the shim; one that exits at once is reported in
/// one line naming the log, without waiting for the start timeout; none at all is reported too.
#[test]
fn a_daemon_that_cannot_start_is_reported_in_one_line() {
    let place = Place::new();
    let lone = place.root.join("bin");
    let fake = place.root.join("path");
    fs::create_dir_all(&lone).unwrap();
    fs::create_dir_all(&fake).unwrap();
    let shim_copy = lone.join("mcp-shim");
    fs::copy(bin("mcp-shim"), &shim_copy).unwrap();
    let args_seen = place.root.join("args");
    let script = format!(
        "#!/bin/sh\necho \"$*\" > '{}'\necho 'mcpd: cannot read the configuration' >&2\nexit 3\n",
        args_seen.display()
    );
    let fake_mcpd = fake.join("mcpd");
    fs::write(&fake_mcpd, script).unwrap();
    fs::set_permissions(&fake_mcpd, fs::Permissions::from_mode(0o755)).unwrap();

    let started = Instant::now();
    let out = run_with_timeout(
        place
            .command(&shim_copy)
            .env("PATH", format!("{}:/usr/bin:/bin", fake.display())),
        TIMEOUT,
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "mcp-shim: started mcpd for {} but it exited (exit status: 3) before it listened; \
             see its log {}",
            place.socket.display(),
            place.log.display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with("(last line: mcpd: cannot read the configuration)\n"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&args_seen).unwrap().trim(),
        format!("--socket {}", place.socket.display())
    );

    // No mcpd anywhere.
    let out = run_with_timeout(
        place.command(&shim_copy).env("PATH", "/nonexistent"),
        TIMEOUT,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "mcp-shim: no mcpd daemon at {} and cannot start one: cannot run mcpd (",
            place.socket.display()
        )) && err.ends_with("); install mcpd next to mcp-shim or in PATH\n"),
        "{err}"
    );
}
