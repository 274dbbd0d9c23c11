//! Finding the user's daemon, and only the user's (issue 10 §1, docs/SECURITY.md).
//!
//! Other users are simulated with `setpriv --reuid/--regid/--clear-groups` (the suite runs as
//! root). `/run/user/<uid>` and `/tmp/mcpd-<uid>` are machine-global, so every test here uses
//! its own uids, which no other test uses: 61001..61019.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;

use mcpd_tests::process::{line_channel, run_with_timeout, stat};
use mcpd_tests::{PEER_TIMEOUT, Sdk, SdkClient, TIMEOUT, TestDaemon, bin, fixture, wait_until};
use serde_json::json;

/// A test user: a uid of its own and a private temp tree it owns (home, XDG config, state
/// and cache; no `XDG_RUNTIME_DIR`).
struct User {
    uid: u32,
    root: tempfile::TempDir,
    /// Global paths this test made for the uid, removed at the end.
    global: Vec<PathBuf>,
    children: Vec<Child>,
}

impl User {
    fn new(uid: u32) -> Self {
        let root = tempfile::Builder::new()
            .prefix("u")
            .tempdir_in("/tmp")
            .unwrap();
        let user = Self {
            uid,
            root,
            global: Vec::new(),
            children: Vec::new(),
        };
        user.own(user.root.path(), 0o700);
        for dir in ["home", "cfg", "state", "cache"] {
            let path = user.root.path().join(dir);
            fs::create_dir(&path).unwrap();
            user.own(&path, 0o700);
        }
        // Nothing of a previous run of this test (or a stale fallback dir) may stay around.
        for path in [fallback_dir(uid), PathBuf::from(format!("/run/user/{uid}"))] {
            let _ = fs::remove_dir_all(&path);
            let _ = fs::remove_file(&path);
        }
        user
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.root.path().join(sub)
    }

    /// Gives `path` to this user with `mode`.
    fn own(&self, path: &Path, mode: u32) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.uid)).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Makes `/run/user/<uid>` as systemd-logind would: a directory of the user, 0700.
    fn make_run_user(&mut self) -> PathBuf {
        let dir = PathBuf::from(format!("/run/user/{}", self.uid));
        fs::create_dir_all(&dir).unwrap();
        self.own(&dir, 0o700);
        self.global.push(dir.clone());
        dir
    }

    /// Notes a global path to remove at the end.
    fn cleans_up(&mut self, path: PathBuf) {
        self.global.push(path);
    }

    /// `program` run as this user, with a clean environment: `HOME`, `PATH` and the XDG
    /// config, state and cache dirs (but no `XDG_RUNTIME_DIR`).
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.uid))
            .arg("--clear-groups")
            .arg(program)
            .env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("XDG_CONFIG_HOME", self.path("cfg"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("RUST_LOG", "debug")
            .current_dir(self.path("home"))
            .stdin(Stdio::null());
        cmd
    }

    /// Writes the user's `config.json`.
    fn write_config(&self, config: &serde_json::Value) {
        let dir = self.path("cfg").join("mcpd");
        fs::create_dir_all(&dir).unwrap();
        self.own(&dir, 0o700);
        let file = dir.join("config.json");
        fs::write(&file, config.to_string()).unwrap();
        self.own(&file, 0o600);
    }

    /// Starts `mcpd ARGS` as this user, its output in `mcpd.log` of the temp tree.
    fn start_daemon(&mut self, args: &[&str]) {
        let log = fs::File::create(self.path("mcpd.log")).unwrap();
        let mut cmd = self.command(&bin("mcpd"));
        cmd.args(args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.children.push(cmd.spawn().unwrap());
    }

    fn daemon_log(&self) -> String {
        fs::read_to_string(self.path("mcpd.log")).unwrap_or_default()
    }

    /// Waits until the daemon logged that it is ready (it has swept its records by then).
    fn wait_daemon_ready(&self) {
        assert!(
            wait_until(TIMEOUT, || self.daemon_log().contains(" ready")),
            "mcpd did not become ready:\n{}",
            self.daemon_log()
        );
    }

    /// Runs `program ARGS` as this user to completion.
    fn run(&self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args).envs(env.iter().copied());
        run_with_timeout(&mut cmd, TIMEOUT)
    }

    /// The pids of the `mcpd` processes running as this user.
    fn daemons(&self) -> Vec<u32> {
        let is_mcpd = |pid: u32| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "mcpd")
        };
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                is_mcpd(pid)
                    && fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == self.uid)
                    // A server the daemon is starting is called mcpd too between its fork
                    // and its exec: a daemon is an mcpd whose parent is not one.
                    && !stat(pid).is_some_and(|s| is_mcpd(s.ppid))
            })
            .collect()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.daemons() {
            // SAFETY: kill with a valid signal has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for path in &self.global {
            let _ = fs::remove_dir_all(path);
            let _ = fs::remove_file(path);
        }
    }
}

fn fallback_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/mcpd-{uid}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `mcpd-socket-peer` (the hostile peer) as `user`, with its stdout as lines.
fn hostile(user: &mut User, args: &[&str]) -> Receiver<String> {
    let mut cmd = user.command(&bin("mcpd-socket-peer"));
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let lines = line_channel(child.stdout.take().unwrap());
    user.children.push(child);
    lines
}

fn expect_line(lines: &Receiver<String>, want: &str) {
    let line = lines
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|e| panic!("the hostile peer did not say `{want}`: {e}"));
    assert_eq!(line, want);
}

/// Every `received N` line the hostile listener printed so far.
fn received(lines: &Receiver<String>) -> Vec<String> {
    lines.try_iter().collect()
}

/// Every `peer_*` SDK client with its default environment: the client (as root, with only
/// `HOME` and `PATH`) launches `setpriv ... mcp-shim` as the test user, so the shim gets the
/// SDK's default environment: no `XDG_RUNTIME_DIR`, no `MCPD_SOCKET`.
fn sdk_with_default_environment_reaches_the_daemon_under_run_user(sdk: Sdk, uid: u32) {
    let mut user = User::new(uid);
    let run_user = user.make_run_user();
    user.write_config(&fixture::config(&[("fx", &[])]));
    user.start_daemon(&[]);
    user.wait_daemon_ready();
    let socket = run_user.join("mcpd").join("mcpd.sock");
    assert!(
        socket.exists(),
        "mcpd without XDG_RUNTIME_DIR did not listen under {}:\n{}",
        run_user.display(),
        user.daemon_log()
    );
    let daemon = user.daemons();
    assert_eq!(daemon.len(), 1, "{daemon:?}");

    let home = user.path("home");
    let home = home.to_str().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    let reuid = format!("--reuid={uid}");
    let regid = format!("--regid={uid}");
    let shim = bin("mcp-shim");
    let client = SdkClient::spawn_launching(
        sdk,
        &[("HOME", home), ("PATH", &path)],
        Path::new("/usr/bin/setpriv"),
        &[&reuid, &regid, "--clear-groups", shim.to_str().unwrap()],
        &json!([{"op": "list_tools"}]),
    );
    let lines = client.finish(PEER_TIMEOUT);
    let tools = &lines[1]["tools"];
    assert!(
        tools
            .as_array()
            .is_some_and(|t| t.iter().any(|n| n == "fx__echo")),
        "the client did not reach the daemon's servers: {lines:?}"
    );
    assert_eq!(
        user.daemons(),
        daemon,
        "a second mcpd was started:\n{}",
        user.daemon_log()
    );
    assert!(
        !fallback_dir(uid).exists(),
        "the shim looked in {}",
        fallback_dir(uid).display()
    );
}

#[test]
fn peer_python_sdk_with_its_default_environment_reaches_the_daemon_under_run_user() {
    sdk_with_default_environment_reaches_the_daemon_under_run_user(Sdk::Python, 61001);
}

#[test]
fn peer_typescript_sdk_with_its_default_environment_reaches_the_daemon_under_run_user() {
    sdk_with_default_environment_reaches_the_daemon_under_run_user(Sdk::TypeScript, 61002);
}

#[test]
fn another_user_who_takes_the_fallback_directory_first_receives_nothing() {
    let victim = User::new(61003);
    let mut attacker = User::new(61004);
    let dir = fallback_dir(victim.uid);
    attacker.cleans_up(dir.clone());
    let socket = dir.join("mcpd.sock");
    let heard = hostile(&mut attacker, &["listen", socket.to_str().unwrap()]);
    expect_line(&heard, "listening");

    // The victim has no XDG_RUNTIME_DIR and no /run/user/<uid>: the fallback is where the
    // attacker listens. The shim (with autostart on) and `mcpctl status` both refuse.
    let shim = victim.run(&bin("mcp-shim"), &[], &[]);
    let said = text(&shim);
    assert!(!shim.status.success(), "the shim accepted: {said}");
    let owner = format!("uid {}", attacker.uid);
    assert!(
        said.contains(&dir.display().to_string()) && said.contains(&owner),
        "the refusal does not name the path and its owner: {said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "not one line: {said}");

    let ctl = victim.run(&bin("mcpctl"), &["status"], &[]);
    let said = text(&ctl);
    assert!(!ctl.status.success(), "mcpctl status accepted: {said}");
    assert!(
        said.contains(&dir.display().to_string()) && said.contains(&owner),
        "{said}"
    );
    // Not a byte reached the attacker: nobody even connected.
    assert_eq!(received(&heard), Vec::<String>::new());
    assert!(victim.daemons().is_empty(), "the shim started a daemon");
}

#[test]
fn a_daemon_of_another_uid_behind_an_explicit_socket_path_is_refused_before_a_byte() {
    let victim = User::new(61005);
    let mut attacker = User::new(61006);
    // The attacker listens in its own directory; the socket is then linked into a directory
    // of the victim's that passes every directory check: only SO_PEERCRED can tell.
    let theirs = attacker.path("home").join("mcpd.sock");
    let heard = hostile(&mut attacker, &["listen", theirs.to_str().unwrap()]);
    expect_line(&heard, "listening");
    let run = victim.path("run");
    fs::create_dir(&run).unwrap();
    victim.own(&run, 0o700);
    let socket = run.join("mcpd.sock");
    fs::hard_link(&theirs, &socket).unwrap();
    let socket = socket.to_str().unwrap();

    let owner = format!("uid {}", attacker.uid);
    let attempts = [
        (
            "mcp-shim --socket",
            victim.run(&bin("mcp-shim"), &["--socket", socket], &[]),
        ),
        (
            "mcp-shim with MCPD_SOCKET",
            victim.run(&bin("mcp-shim"), &[], &[("MCPD_SOCKET", socket)]),
        ),
        (
            "mcpctl --socket status",
            victim.run(&bin("mcpctl"), &["--socket", socket, "status"], &[]),
        ),
        (
            "mcpctl status with MCPD_SOCKET",
            victim.run(&bin("mcpctl"), &["status"], &[("MCPD_SOCKET", socket)]),
        ),
    ];
    for (what, out) in &attempts {
        let said = text(out);
        assert!(!out.status.success(), "{what} accepted: {said}");
        assert!(
            said.contains(socket) && said.contains(&owner),
            "{what}: the refusal does not name the path and the daemon's owner: {said}"
        );
    }
    // Each connected (that is how the uid is learned) and sent nothing.
    let mut got: Vec<String> = (0..attempts.len())
        .map(|_| heard.recv_timeout(TIMEOUT).expect("a client connected"))
        .collect();
    got.extend(heard.try_iter());
    assert_eq!(got, vec!["received 0"; attempts.len()]);
}

#[test]
fn a_child_record_planted_by_another_user_gets_nothing_killed() {
    let mut victim = User::new(61007);
    let attacker = User::new(61008);
    // A process group of the victim's own: what the planted record names.
    let mut cmd = victim.command(Path::new("/bin/sleep"));
    cmd.arg("600");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let sleeper = cmd.spawn().unwrap();
    let pid = sleeper.id();
    victim.children.push(sleeper);
    let start_time = mcpd_tests::process::stat(pid).unwrap().start_time;

    // The attacker takes the victim's fallback runtime directory and plants a record there,
    // complete with the right start time (anyone can read /proc/<pid>/stat).
    let runtime = fallback_dir(victim.uid);
    victim.cleans_up(runtime.clone());
    let children = runtime.join("children");
    fs::create_dir_all(&children).unwrap();
    attacker.own(&runtime, 0o755);
    attacker.own(&children, 0o755);
    let record = children.join(format!("{pid}.json"));
    let planted =
        json!({"server": "x", "pid": pid, "start_time": start_time, "daemon_pid": 999_999});
    fs::write(&record, planted.to_string()).unwrap();
    attacker.own(&record, 0o644);

    // The victim's daemon listens elsewhere and has no XDG_RUNTIME_DIR: its records directory
    // is the fallback one.
    victim.write_config(&json!({"mcpServers": {}}));
    let socket = victim.path("run").join("mcpd.sock");
    let socket_arg = socket.to_str().unwrap().to_owned();
    victim.start_daemon(&["--socket", &socket_arg]);
    victim.wait_daemon_ready();
    assert!(
        mcpd_tests::process_alive(pid),
        "mcpd killed the victim's own process group on a planted record:\n{}",
        victim.daemon_log()
    );
    assert!(
        victim.daemon_log().contains("not reading child records"),
        "{}",
        victim.daemon_log()
    );
}

#[test]
fn another_user_flooding_an_opened_up_socket_cannot_lock_the_owner_out() {
    // No servers: starting one makes the daemon check its runtime directory, which would
    // close it again (it keeps the directory 0700 whenever it writes a child record there).
    let daemon = TestDaemon::start(json!({"mcpServers": {}}));
    // Modes opened up (as a careless admin might), so that only the daemon's checks hold.
    let mut dir = daemon.socket().parent().unwrap();
    while dir.starts_with(daemon.root()) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        dir = dir.parent().unwrap();
    }
    fs::set_permissions(daemon.socket(), fs::Permissions::from_mode(0o777)).unwrap();

    let mut attacker = User::new(61009);
    let count = (mcpd::server::MAX_CONNECTIONS + 64).to_string();
    let flood = hostile(
        &mut attacker,
        &["flood", daemon.socket().to_str().unwrap(), &count],
    );
    expect_line(&flood, "flooding");
    for attempt in 1..=5 {
        let out = daemon.mcpctl(&["status"]);
        assert!(
            out.status.success(),
            "attempt {attempt}: the owner was locked out: {}",
            text(&out)
        );
    }
    daemon.wait_log("refused a connection from another user", TIMEOUT);
}

#[test]
fn the_daemon_refuses_a_runtime_directory_another_user_planted_as_a_symlink() {
    let victim = User::new(61010);
    let mut attacker = User::new(61011);
    // One of the victim's own directories, readable by others (like a home directory).
    let target = victim.path("home").join("shared");
    fs::create_dir(&target).unwrap();
    victim.own(&target, 0o755);
    // The attacker links the victim's fallback runtime directory to it.
    let planted = fallback_dir(victim.uid);
    attacker.cleans_up(planted.clone());
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(attacker.uid), Some(attacker.uid)).unwrap();

    // The victim's daemon, with no XDG_RUNTIME_DIR and no /run/user/<uid>, would put its
    // socket there: it refuses instead, naming the path, and touches nothing behind the link.
    let out = victim.run(&bin("mcpd"), &[], &[]);
    let said = text(&out);
    assert!(!out.status.success(), "mcpd started: {said}");
    assert!(
        said.contains(&planted.display().to_string()) && said.contains("symbolic link"),
        "{said}"
    );
    let mode = fs::metadata(&target).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o755, "the link's target was chmod-ed");
    assert!(
        !target.join("mcpd.sock").exists(),
        "the socket went behind the link"
    );
}
