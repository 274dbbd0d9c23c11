//! mcpd under systemd: socket activation with `systemd-socket-activate`, readiness, reload and
//! stop notices on a `NOTIFY_SOCKET` the test owns, the journald/stderr choice, and
//! `systemd-analyze verify` on the unit files.
//!
//! `systemd-socket-activate` and `systemd-analyze` come with Debian's `systemd` package. Without
//! them these tests say so and pass (the CI setup installs the package).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcpd_tests::{ShimClient, TIMEOUT, bin, fixture, repo_root, wait_until};
use tempfile::TempDir;

/// The path of a system tool; when it is not installed the test fails, or is skipped with
/// `MCPD_ALLOW_SKIP=1` (`None`).
fn tool(name: &str) -> Option<PathBuf> {
    let found = ["/usr/bin", "/bin", "/usr/local/bin", "/usr/lib/systemd"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        mcpd_tests::tool_missing(name, "Debian package `systemd`");
    }
    found
}

/// A private tree: `run/` (0700, like `$XDG_RUNTIME_DIR`), `cfg/`, `state/`, `cache/`, `home/`,
/// and a datagram socket standing in for systemd's notification socket.
struct Tree {
    dir: TempDir,
    notify: UnixDatagram,
}

impl Tree {
    fn new() -> Self {
        // Short: socket paths must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("sd-")
            .tempdir_in("/tmp")
            .unwrap();
        for sub in ["run", "cfg/mcpd", "state", "cache", "home"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        let notify = UnixDatagram::bind(dir.path().join("notify")).unwrap();
        Self { dir, notify }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn socket(&self) -> PathBuf {
        self.path("run/mcpd/mcpd.sock")
    }

    fn write_config(&self, config: &serde_json::Value) {
        fs::write(
            self.path("cfg/mcpd/config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }

    /// `-E` flags that give mcpd this tree as its environment.
    fn env(&self) -> Vec<(String, String)> {
        let p = |rel: &str| self.path(rel).display().to_string();
        let mut env = vec![
            ("XDG_RUNTIME_DIR".into(), p("run")),
            ("XDG_CONFIG_HOME".into(), p("cfg")),
            ("XDG_STATE_HOME".into(), p("state")),
            ("XDG_CACHE_HOME".into(), p("cache")),
            ("HOME".into(), p("home")),
            ("NOTIFY_SOCKET".into(), p("notify")),
            ("RUST_LOG".into(), "debug".into()),
        ];
        if let Some(path) = std::env::var_os("PATH") {
            env.push(("PATH".into(), path.to_string_lossy().into_owned()));
        }
        env
    }

    /// The next notification datagram, or `None` after `timeout`.
    fn next_notice(&self, timeout: Duration) -> Option<String> {
        self.notify.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 4096];
        match self.notify.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Waits for a notice containing `line` (a `KEY=VALUE` line), returning the whole datagram.
    fn expect_notice(&self, line: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_notice(left) {
                Some(notice) if notice.lines().any(|l| l == line) => return notice,
                Some(notice) => seen.push(notice),
                None => break,
            }
        }
        panic!(
            "no `{line}` notice within {TIMEOUT:?}; got {seen:?}\nlog:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("log")).unwrap_or_default()
    }
}

/// A child that is killed if the test fails before it stops it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `systemd-socket-activate -l SOCKET mcpd --log stderr`, logging to the tree's `log`.
fn socket_activate(sa: &Path, tree: &Tree) -> Guard {
    fs::create_dir_all(tree.path("run/mcpd")).unwrap();
    fs::set_permissions(tree.path("run/mcpd"), fs::Permissions::from_mode(0o700)).unwrap();
    let log = fs::File::create(tree.path("log")).unwrap();
    let mut cmd = Command::new(sa);
    cmd.arg("-l").arg(tree.socket());
    for (k, v) in tree.env() {
        cmd.arg("-E").arg(format!("{k}={v}"));
    }
    cmd.arg(bin("mcpd"))
        .args(["--log", "stderr"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = cmd.spawn().unwrap();
    assert!(
        wait_until(TIMEOUT, || fs::symlink_metadata(tree.socket())
            .is_ok_and(|m| m.file_type().is_socket())),
        "systemd-socket-activate did not create {}",
        tree.socket().display()
    );
    Guard(child)
}

fn shim(tree: &Tree) -> ShimClient {
    let mut cmd = Command::new(bin("mcp-shim"));
    cmd.env_clear()
        .envs(tree.env().into_iter().filter(|(k, _)| k != "NOTIFY_SOCKET"))
        .env("MCPD_SOCKET", tree.socket());
    ShimClient::from_command(cmd)
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

#[test]
fn socket_activation_starts_mcpd_on_first_connection_and_it_notifies_systemd() {
    let Some(sa) = tool("systemd-socket-activate") else {
        return;
    };
    let tree = Tree::new();
    tree.write_config(&fixture::config(&[("fx", &[])]));
    let mut activator = socket_activate(&sa, &tree);

    // Nothing runs until someone connects: no READY yet.
    assert_eq!(tree.next_notice(Duration::from_millis(200)), None);

    let mut client = shim(&tree);
    client.initialize();
    let ready = tree.expect_notice("READY=1");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=")),
        "READY=1 comes with a STATUS= line: {ready:?}"
    );
    assert!(
        client.tool_names().contains(&"fx__echo".to_owned()),
        "the socket-activated daemon serves the configured server\nlog:\n{}",
        tree.log()
    );
    assert!(
        tree.log()
            .contains("listening on the socket systemd passed"),
        "{}",
        tree.log()
    );

    // Reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
    signal(&activator.0, libc::SIGHUP);
    let reloading = tree.expect_notice("RELOADING=1");
    assert!(
        reloading.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|us| us > 0))),
        "RELOADING=1 carries MONOTONIC_USEC: {reloading:?}"
    );
    tree.expect_notice("READY=1");

    // Stop: STOPPING=1, a clean exit, and systemd's socket file is left in place.
    drop(client);
    signal(&activator.0, libc::SIGTERM);
    tree.expect_notice("STOPPING=1");
    assert!(
        wait_until(TIMEOUT, || activator.0.try_wait().unwrap().is_some()),
        "mcpd did not exit after SIGTERM\nlog:\n{}",
        tree.log()
    );
    let status = activator.0.wait().unwrap();
    assert!(status.success(), "{status:?}\nlog:\n{}", tree.log());
    assert!(
        fs::symlink_metadata(tree.socket()).is_ok_and(|m| m.file_type().is_socket()),
        "mcpd unlinked the socket systemd owns"
    );
}

#[test]
fn a_daemon_started_by_hand_binds_and_removes_its_own_socket() {
    let tree = Tree::new();
    let log = fs::File::create(tree.path("log")).unwrap();
    let mut cmd = Command::new(bin("mcpd"));
    cmd.env_clear()
        .envs(tree.env())
        .stdin(Stdio::null())
        .stderr(log);
    let mut daemon = Guard(cmd.spawn().unwrap());
    // READY=1 is sent by hand-started daemons too when NOTIFY_SOCKET is set (systemd's
    // `Type=notify` without socket activation).
    tree.expect_notice("READY=1");
    assert!(tree.socket().exists());
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_until(TIMEOUT, || daemon
        .0
        .try_wait()
        .unwrap()
        .is_some()));
    assert!(
        !tree.socket().exists(),
        "a socket the daemon bound itself is removed at exit"
    );
}

#[test]
fn log_auto_uses_stderr_when_journal_stream_is_not_stderr() {
    let tree = Tree::new();
    let log = fs::File::create(tree.path("log")).unwrap();
    let mut daemon = Guard(
        Command::new(bin("mcpd"))
            .env_clear()
            .envs(tree.env())
            // A JOURNAL_STREAM inherited from a parent whose stderr went to the journal: ours is
            // a file, so the log must stay on stderr.
            .env("JOURNAL_STREAM", "8:12345")
            .args(["--log", "auto"])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    tree.expect_notice("READY=1");
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_until(TIMEOUT, || daemon
        .0
        .try_wait()
        .unwrap()
        .is_some()));
    assert!(tree.log().contains("listening"), "{}", tree.log());
}

#[test]
fn log_flag_rejects_unknown_targets() {
    let out = Command::new(bin("mcpd"))
        .args(["--log", "syslog"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auto") && stderr.contains("journald"),
        "{stderr}"
    );
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let tree = Tree::new();
    let units = tree.path("units");
    fs::create_dir_all(&units).unwrap();
    let src = repo_root().join("systemd");
    fs::copy(src.join("mcpd.socket"), units.join("mcpd.socket")).unwrap();
    // verify checks that ExecStart's program exists: point it at this build.
    let service = fs::read_to_string(src.join("mcpd.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/mcpd "), "{service}");
    fs::write(
        units.join("mcpd.service"),
        service.replace("/usr/bin/mcpd", &bin("mcpd").display().to_string()),
    )
    .unwrap();
    let out = Command::new(analyze)
        .current_dir(&units)
        // `--user` needs a runtime dir; --man=no: the man pages are not installed here.
        .env("XDG_RUNTIME_DIR", tree.path("run"))
        .args([
            "--user",
            "--man=no",
            "verify",
            "mcpd.socket",
            "mcpd.service",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{stderr}");
    // verify exits 0 on unknown keys and the like: any output at all is a finding.
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "systemd-analyze verify reported:\n{stdout}{stderr}"
    );
}

#[test]
fn unit_files_say_what_the_daemon_expects() {
    let dir = repo_root().join("systemd");
    let socket = fs::read_to_string(dir.join("mcpd.socket")).unwrap();
    let service = fs::read_to_string(dir.join("mcpd.service")).unwrap();
    for line in [
        "ListenStream=%t/mcpd/mcpd.sock",
        "SocketMode=0600",
        "DirectoryMode=0700",
    ] {
        assert!(
            socket.lines().any(|l| l == line),
            "mcpd.socket lacks {line}"
        );
    }
    for line in [
        "Type=notify",
        "KillMode=mixed",
        "UMask=0077",
        "LimitCORE=0",
        "NoNewPrivileges=yes",
        // Servers' limits need a delegated cgroup subtree with these controllers.
        "Delegate=yes",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "mcpd.service lacks {line}"
        );
    }
    // The stop timeout covers the grace for calls in flight and the sessions' end (the flush,
    // a hand-back: 5 s), then the upstream stop sequence: stdin 2 s + SIGTERM 3 s + sweep 3 s.
    let stop = service
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse::<u64>().ok())
        .expect("TimeoutStopSec=<seconds>s");
    let needed = mcpd::SHUTDOWN_GRACE.as_secs() + 5 + 2 + 3 + 3;
    assert!(
        stop > needed,
        "TimeoutStopSec={stop}s is too short (the stop may take {needed} s)"
    );
}

/// Runs `packaging/install.sh ARGS` with the tree as HOME and a stand-in `systemctl` that logs
/// its arguments to `systemctl.log` (the real user manager is never touched).
fn install_sh(tree: &Tree, args: &[&str]) -> String {
    let fake = tree.path("systemctl");
    if !fake.exists() {
        fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n",
                tree.path("systemctl.log").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let binaries = bin("mcpd").parent().unwrap().to_path_buf();
    let out = Command::new("bash")
        .arg(repo_root().join("packaging/install.sh"))
        .args(args)
        .arg("--binaries")
        .arg(&binaries)
        .env("HOME", tree.path("home"))
        .env("XDG_CONFIG_HOME", tree.path("cfg"))
        .env("SYSTEMCTL", &fake)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh {args:?} failed:\n{text}");
    text
}

#[test]
fn install_sh_installs_into_a_prefix_idempotently_and_uninstalls() {
    let tree = Tree::new();
    let prefix = tree.path("prefix");
    let prefix_arg = prefix.display().to_string();
    let out = install_sh(&tree, &["--prefix", &prefix_arg]);
    for b in ["mcpd", "mcp-shim", "mcpctl"] {
        assert!(prefix.join("bin").join(b).is_file(), "{b} missing:\n{out}");
    }
    for f in [
        "share/bash-completion/completions/mcpctl",
        "share/zsh/site-functions/_mcpctl",
        "share/fish/vendor_completions.d/mcpctl.fish",
        "share/man/man1/mcpctl.1",
        "share/man/man1/mcpctl-import.1",
        "share/man/man1/mcpd.1",
        "share/man/man1/mcp-shim.1",
        "share/man/man5/mcpd.json.5",
    ] {
        assert!(prefix.join(f).is_file(), "{f} missing:\n{out}");
    }
    let units = tree.path("cfg/systemd/user");
    let service = fs::read_to_string(units.join("mcpd.service")).unwrap();
    assert!(
        service.contains(&format!("ExecStart={prefix_arg}/bin/mcpd --log auto")),
        "{service}"
    );
    assert!(units.join("mcpd.socket").is_file());
    let log = fs::read_to_string(tree.path("systemctl.log")).unwrap();
    assert!(log.contains("--user enable --now mcpd.socket"), "{log}");

    // Again: same result, nothing rewritten.
    let again = install_sh(&tree, &["--prefix", &prefix_arg]);
    assert!(again.contains("unchanged"), "{again}");
    assert_eq!(
        fs::read_to_string(units.join("mcpd.service")).unwrap(),
        service
    );

    // The installed units are valid as installed.
    if let Some(analyze) = tool("systemd-analyze") {
        let out = Command::new(analyze)
            .current_dir(&units)
            .env("XDG_RUNTIME_DIR", tree.path("run"))
            .args([
                "--user",
                "--man=no",
                "verify",
                "mcpd.socket",
                "mcpd.service",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A user config is not the installer's to remove.
    fs::write(tree.path("cfg/mcpd/config.json"), "{}").unwrap();
    install_sh(&tree, &["--prefix", &prefix_arg, "--uninstall"]);
    let log = fs::read_to_string(tree.path("systemctl.log")).unwrap();
    assert!(log.contains("--user disable --now mcpd.socket"), "{log}");
    assert!(!units.join("mcpd.service").exists() && !units.join("mcpd.socket").exists());
    let left: Vec<_> = walk(&prefix).into_iter().filter(|p| p.is_file()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(tree.path("cfg/mcpd/config.json").exists());
}

#[test]
fn install_sh_without_a_user_manager_installs_binaries_only() {
    let tree = Tree::new();
    let prefix = tree.path("prefix").display().to_string();
    let fake = tree.path("systemctl");
    fs::write(&fake, "#!/bin/sh\nexit 1\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let out = install_sh(&tree, &["--prefix", &prefix]);
    assert!(out.contains("no systemd user manager"), "{out}");
    assert!(!tree.path("cfg/systemd/user/mcpd.service").exists());
    assert!(tree.path("prefix/bin/mcpd").is_file());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}
