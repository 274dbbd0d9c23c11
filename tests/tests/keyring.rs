//! The credential stores of `"mcpd": {"credentialStore": ...}` end to end: log in once with
//! `mcpctl login` (the Python SDK's OAuth server, `tests/peers/py_oauth_server.py`), restart
//! the daemon, and see which logins survive and where the key is.
//!
//! The keyring tests run a real Secret Service: Debian's `gnome-keyring` in a private D-Bus
//! session (`dbus-run-session`), its login keyring created and unlocked with a password on
//! stdin, and `secret-tool` (libsecret-tools) to look into it. Without those programs
//! (`apt-get install gnome-keyring dbus-daemon libsecret-tools`) these tests fail, naming what
//! to install (`mcpd_tests::tool_missing`), unless `MCPD_ALLOW_SKIP=1` turns that into a skip;
//! nothing else makes them skip.
//!
//! Every test is `peer_*` (it starts Python).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::Duration;

use mcpd_proto::ServerState;
use mcpd_tests::oauth::{OAuthServer, browser_command};
use mcpd_tests::process::{run_with_timeout, wait_timeout};
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TIMEOUT, TestDaemon};
use serde_json::{Value, json};

/// A private D-Bus session with gnome-keyring's Secret Service, its login keyring unlocked.
/// Ended (stdin closed: the session's shell exits, `dbus-run-session` stops the bus and the
/// keyring daemon with it) on drop.
struct SecretSession {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `DBUS_SESSION_BUS_ADDRESS`.
    address: String,
    home: tempfile::TempDir,
}

const NEEDED: [&str; 3] = ["dbus-run-session", "gnome-keyring-daemon", "secret-tool"];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        })
    })
}

impl SecretSession {
    /// Fails when the programs are not installed; `None` only with `MCPD_ALLOW_SKIP=1`.
    fn start() -> Option<Self> {
        let missing: Vec<&str> = NEEDED.iter().copied().filter(|p| !on_path(p)).collect();
        if !missing.is_empty() {
            mcpd_tests::tool_missing(
                &format!("a Secret Service to test against ({})", missing.join(", ")),
                "Debian: apt-get install gnome-keyring dbus-daemon libsecret-tools",
            );
            return None;
        }
        let home = tempfile::tempdir().unwrap();
        // The keyring daemon prints its environment on stdout: keep it off ours.
        let script = "printf pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 1; \
                      echo \"mcpd-test-bus $DBUS_SESSION_BUS_ADDRESS\"; read _";
        let mut child = Command::new("dbus-run-session")
            .args(["--", "sh", "-c", script])
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start dbus-run-session");
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("mcpd-test-bus ") {
                        break a.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("gnome-keyring did not start in a D-Bus session");
                }
            }
        };
        assert!(!address.is_empty(), "no session bus address");
        Some(Self {
            child,
            stdin,
            address,
            home,
        })
    }

    /// `secret-tool ARGS` in this session.
    fn secret_tool(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new("secret-tool")
                .args(args)
                .env_clear()
                .env("HOME", self.home.path())
                .env("DBUS_SESSION_BUS_ADDRESS", &self.address),
            TIMEOUT,
        )
    }

    /// Starts `mcpd` in this session with `config`.
    fn daemon(&self, config: Value) -> TestDaemon {
        TestDaemon::builder()
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .start(config)
    }
}

impl Drop for SecretSession {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn config(server: &OAuthServer, store: Option<&str>) -> Value {
    let mut config = json!({"mcpServers": {"py": {"type": "http", "url": server.mcp_url()}}});
    if let Some(store) = store {
        config["mcpd"] = json!({"credentialStore": store});
    }
    config
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn login(daemon: &TestDaemon) {
    let log = daemon.root().join("browser.log");
    let out = run_with_timeout(
        daemon
            .command("mcpctl")
            .args(["login", "py", "--browser", &browser_command(&log)]),
        PEER_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "mcpctl login failed: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
}

fn credential_store(daemon: &TestDaemon) -> String {
    daemon.status().credential_store.unwrap_or_default()
}

fn creds(daemon: &TestDaemon) -> PathBuf {
    daemon.root().join("state/mcpd/credentials")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The server serves a tool call through the shim (with the stored or imported login).
fn assert_serves(daemon: &TestDaemon) {
    daemon.wait_server_state("py", ServerState::Ready);
    let mut shim = ShimClient::spawn(daemon, None);
    shim.initialize();
    let answer = shim.call_tool("py__whoami", json!({}));
    assert_eq!(
        answer["content"][0]["text"].as_str(),
        Some("authorized"),
        "{answer}"
    );
}

#[test]
fn peer_the_keyring_holds_the_key_and_a_restarted_daemon_needs_no_new_login() {
    let Some(session) = SecretSession::start() else {
        return;
    };
    let server = OAuthServer::start(&[]);
    // `auto` finds the Secret Service on the session bus.
    let mut daemon = session.daemon(config(&server, None));
    assert_eq!(credential_store(&daemon), "keyring (Secret Service)");
    login(&daemon);
    assert_serves(&daemon);

    let dir = creds(&daemon);
    let stored = names(&dir);
    assert!(
        !stored.contains(&"key".to_owned()),
        "no key file: {stored:?}"
    );
    assert!(stored.iter().any(|n| n.starts_with("login-")), "{stored:?}");
    for name in &stored {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    // The key is one item in the keyring, named after the credential directory.
    let found = session.secret_tool(&["search", "--all", "application", "mcpd"]);
    let listing = text(&found.stdout) + &text(&found.stderr);
    assert!(
        listing.contains(&format!("attribute.mcpd-credentials = {}", dir.display())),
        "{listing}"
    );
    assert_eq!(listing.matches("attribute.application = mcpd").count(), 1);
    daemon.wait_log(
        "created the credential key in the Secret Service keyring",
        TIMEOUT,
    );

    // A new daemon opens the stored login with the key from the keyring.
    daemon.terminate();
    daemon.start_again();
    daemon.wait_log("using the stored login", TIMEOUT);
    assert_eq!(credential_store(&daemon), "keyring (Secret Service)");
    assert_serves(&daemon);
    assert_eq!(server.count("authorizations"), 1);
    assert_eq!(server.count("registrations"), 1);
    assert!(!names(&dir).contains(&"key".to_owned()));
}

#[test]
fn peer_a_key_file_moves_into_the_keyring_and_without_a_bus_the_status_says_why() {
    let Some(session) = SecretSession::start() else {
        return;
    };
    let server = OAuthServer::start(&[]);
    // `file` even with a Secret Service at hand: the key file.
    let mut daemon = session.daemon(config(&server, Some("file")));
    assert_eq!(credential_store(&daemon), "file");
    login(&daemon);
    let dir = creds(&daemon);
    assert_eq!(mode(&dir.join("key")), 0o600);

    // Switching to `keyring`: the key moves into the keyring, the stored login still opens.
    daemon.terminate();
    daemon.write_config(&config(&server, Some("keyring")));
    daemon.start_again();
    daemon.wait_log("moved the credential key from", TIMEOUT);
    daemon.wait_log("using the stored login", TIMEOUT);
    assert_eq!(credential_store(&daemon), "keyring (Secret Service)");
    assert!(!dir.join("key").exists(), "{:?}", names(&dir));
    assert_serves(&daemon);
    assert_eq!(server.count("authorizations"), 1);
    drop(daemon);

    // No session bus: `auto` uses the key file, `keyring` keeps logins in memory; both say why.
    let daemon = TestDaemon::start(config(&server, None));
    assert_eq!(credential_store(&daemon), "file (no session bus)");
    drop(daemon);
    let daemon = TestDaemon::start(config(&server, Some("keyring")));
    let store = credential_store(&daemon);
    assert!(
        store.starts_with("memory (credentialStore \"keyring\": no session bus"),
        "{store}"
    );
}

#[test]
fn peer_the_file_store_keeps_a_0600_key_and_memory_forgets_on_restart() {
    let server = OAuthServer::start(&[]);
    let mut daemon = TestDaemon::start(config(&server, Some("file")));
    assert_eq!(credential_store(&daemon), "file");
    login(&daemon);
    let dir = creds(&daemon);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("key")), 0o600);
    assert_eq!(std::fs::metadata(dir.join("key")).unwrap().len(), 32);
    daemon.terminate();
    daemon.start_again();
    daemon.wait_log("using the stored login", TIMEOUT);
    assert_serves(&daemon);
    assert_eq!(server.count("authorizations"), 1);
    drop(daemon);

    let mut daemon = TestDaemon::start(config(&server, Some("memory")));
    assert_eq!(credential_store(&daemon), "memory");
    login(&daemon);
    assert_serves(&daemon);
    assert_eq!(server.count("authorizations"), 2);
    assert!(names(&creds(&daemon)).is_empty(), "memory writes nothing");
    daemon.terminate();
    daemon.start_again();
    daemon.wait_server_state("py", ServerState::AuthRequired);
    assert!(!daemon.log().contains("using the stored login"));
}

/// `mcpctl secret set NAME` with the value piped in.
fn secret_set(daemon: &TestDaemon, name: &str, value: &str) {
    let mut child = daemon
        .command("mcpctl")
        .args(["secret", "set", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    assert!(wait_timeout(&mut child, PEER_TIMEOUT).is_some());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn peer_secrets_are_sealed_with_the_keyring_key_and_survive_a_restart() {
    let Some(session) = SecretSession::start() else {
        return;
    };
    const VALUE: &str = "xoxb-keyring-secret-0123456789";
    let mut server = mcpd_tests::peers().everything_server();
    server["env"] = json!({"SLACK_TOKEN": "${secret:SLACK_TOKEN}"});
    let mut daemon = session.daemon(json!({"mcpServers": {"slack": server}}));
    assert_eq!(credential_store(&daemon), "keyring (Secret Service)");
    secret_set(&daemon, "SLACK_TOKEN", VALUE);
    daemon.wait_server_state("slack", ServerState::Ready);
    let dir = creds(&daemon);
    assert!(names(&dir).contains(&"secrets".to_owned()));
    assert!(!names(&dir).contains(&"key".to_owned()), "no key file");
    assert_eq!(mode(&dir.join("secrets")), 0o600);

    daemon.terminate();
    daemon.start_again();
    daemon.wait_server_state("slack", ServerState::Ready);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let env = shim.call_tool("slack__get-env", json!({}));
    assert!(env["content"][0]["text"].as_str().unwrap().contains(VALUE));
    let sealed = std::fs::read(dir.join("secrets")).unwrap();
    assert!(!text(&sealed).contains(VALUE));
}
