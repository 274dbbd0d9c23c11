//! OAuth for remote servers against a real authorization server: the Python SDK's
//! (`tests/peers/py_oauth_server.py`, an MCP resource server and the SDK's authorization server
//! with an auto-approving provider). `mcpctl login` opens the authorization URL with a
//! stand-in browser that follows the redirects to the daemon's loopback callback.
//!
//! The refresh tests drive the daemon's `AuthManager` directly (the interface the HTTP
//! transport calls) and move its clock on (`AuthManager::clock`) instead of waiting, so that
//! their timing is exact and costs nothing; the end-to-end test through the daemon waits. Every test is `peer_*` (it starts Python).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mcpd::auth::{AuthManager, Unauthorized};
use mcpd::config::oauth::{CredentialStore, OAuthSpec, RemoteAuth};
use mcpd_proto::ServerState;
use mcpd_tests::oauth::{OAuthServer, browse, browser_command, http_request};
use mcpd_tests::process::{Captured, line_channel, run_with_timeout, wait_timeout};
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TIMEOUT, TestDaemon, wait_until};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

fn remote(server: &OAuthServer) -> Value {
    json!({"type": "http", "url": server.mcp_url()})
}

fn login(daemon: &TestDaemon, name: &str) -> Output {
    let log = daemon.root().join("browser.log");
    run_with_timeout(
        daemon
            .command("mcpctl")
            .args(["login", name, "--browser", &browser_command(&log)]),
        PEER_TIMEOUT,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}",
        text(&out.stderr),
        text(&out.stdout)
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_no_token_in(tokens: &[String], what: &str, haystack: &[u8]) {
    for token in tokens {
        assert!(
            !haystack.windows(token.len()).any(|w| w == token.as_bytes()),
            "a token appears in {what}"
        );
    }
}

#[test]
fn peer_login_stores_tokens_encrypted_and_a_restarted_daemon_uses_them() {
    let server = OAuthServer::start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let env_file = scratch.path().join("child-env");
    let mut daemon = TestDaemon::start(json!({"mcpServers": {
        "py": remote(&server),
        "envdump": {"command": "sh", "args": ["-c", format!("env > {}; exec sleep 600", env_file.display())]},
    }}));
    let out = login(&daemon, "py");
    assert_ok(&out, "mcpctl login");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("/authorize?"),
        "the URL is printed: {stdout}"
    );
    assert!(stdout.contains("logged in to py"), "{stdout}");
    assert_eq!(server.count("registrations"), 1);
    assert_eq!(server.count("codes"), 1);

    let creds = daemon.root().join("state/mcpd/credentials");
    assert_eq!(mode(&creds), 0o700);
    let stored = files(&creds);
    assert!(stored.len() >= 3, "key, client and login: {stored:?}");
    for f in &stored {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    // No token anywhere: state and cache files, the log, status, a child's environment.
    assert!(wait_until(TIMEOUT, || env_file.exists()));
    let tokens = server.tokens();
    assert_eq!(
        tokens.len(),
        2,
        "one access and one refresh token: {tokens:?}"
    );
    for f in files(daemon.root()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert_no_token_in(&tokens, &f.display().to_string(), &bytes);
    }
    assert_no_token_in(
        &tokens,
        "the child's environment",
        &std::fs::read(&env_file).unwrap(),
    );
    let status = daemon.mcpctl(&["status", "--json"]);
    assert_ok(&status, "mcpctl status");
    assert_no_token_in(&tokens, "mcpctl status --json", &status.stdout);
    assert!(text(&status.stdout).contains("\"credential_store\": \"file (no session bus)\""));

    // A new daemon finds the login without a new authorization.
    daemon.terminate();
    daemon.start_again();
    daemon.wait_log("using the stored login", TIMEOUT);
    assert_eq!(server.count("authorizations"), 1);

    let out = daemon.mcpctl(&["logout", "py"]);
    assert_ok(&out, "mcpctl logout");
    assert!(
        text(&out.stdout).contains("py: logged out"),
        "{}",
        text(&out.stdout)
    );
    let names: Vec<String> = files(&creds)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("login-")),
        "the login is forgotten: {names:?}"
    );
    let out = daemon.mcpctl(&["logout", "py"]);
    assert!(text(&out.stdout).contains("was not logged in"));
    assert_no_token_in(&tokens, "the daemon log", daemon.log().as_bytes());
}

#[test]
fn peer_an_http_upstream_waits_for_login_then_serves_and_refreshes_on_401() {
    let server = OAuthServer::start(&[]);
    let daemon = TestDaemon::start(json!({"mcpServers": {"py": remote(&server)}}));
    let waiting = daemon.wait_server_state("py", ServerState::AuthRequired);
    assert!(
        waiting
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("mcpctl login py")),
        "{waiting:?}"
    );
    assert!(!waiting.auth.unwrap().logged_in);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    // Its tools are not listed until it is logged in (nothing is known about them yet).
    assert!(!shim.tool_names().iter().any(|t| t.starts_with("py__")));

    assert_ok(&login(&daemon, "py"), "mcpctl login");
    let ready = daemon.wait_server_state("py", ServerState::Ready);
    let auth = ready.auth.unwrap();
    assert!(auth.logged_in && auth.refreshable, "{auth:?}");
    assert_eq!(auth.scopes, ["mcp:read", "mcp:write"]);
    let call = |shim: &mut ShimClient| {
        shim.call_tool("py__whoami", json!({}))["content"][0]["text"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(call(&mut shim).as_deref(), Some("authorized"));

    // The server stops accepting the token: one refresh, the call goes through.
    std::thread::sleep(Duration::from_millis(2200));
    server.admin("expire-access");
    assert_eq!(call(&mut shim).as_deref(), Some("authorized"));
    assert_eq!(server.count("refreshes"), 1);
    assert_eq!(server.count("authorizations"), 1);
    let tokens = server.tokens();
    let status = daemon.mcpctl(&["status", "--json"]);
    assert_no_token_in(&tokens, "mcpctl status --json", &status.stdout);
    assert_no_token_in(&tokens, "the daemon log", daemon.log().as_bytes());
}

#[test]
fn peer_a_login_restarts_a_running_server_without_a_window_where_calls_fail() {
    // The server is not there at first: the upstream fails and is restarted (its `restarts`
    // count is not zero), then it comes up and asks for a login. A login's restart is a
    // replacement: it keeps the count (an ungated remove-stop-spawn started again from 0) and
    // calls wait while the old instance ends its session (there they found no server).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let daemon = TestDaemon::start(json!({"mcpServers": {"py": {
        "type": "http", "url": url,
        "restartDelayMs": 20, "maxRestartDelayMs": 100, "crashLoopAfter": 1000,
    }}}));
    daemon.wait_status(TIMEOUT, "py restarted after failing to connect", |s| {
        s.servers.iter().any(|x| x.name == "py" && x.restarts >= 1)
    });
    // Ending its session takes a while, so that an instance stopping leaves a window.
    let server = OAuthServer::start(&[
        "--port",
        &port.to_string(),
        "--stateful",
        "--end-session-delay-ms",
        "1500",
    ]);
    assert_eq!(server.port, port);
    let restarts = daemon
        .wait_server_state("py", ServerState::AuthRequired)
        .restarts;
    assert!(restarts >= 1);
    assert_ok(&login(&daemon, "py"), "mcpctl login");
    let ready = daemon.wait_server_state("py", ServerState::Ready);
    assert_eq!(
        ready.restarts, restarts,
        "the restart after the login kept the count: {ready:?}"
    );
    // A client calls without a pause while the server is logged in again and restarted.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (started_tx, started) = std::sync::mpsc::channel();
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let mut other = ShimClient::spawn(&daemon, None);
    other.initialize();
    let worker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut unavailable = Vec::new();
            let mut calls = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = shim.request(
                    "tools/call",
                    Some(json!({"name": "py__whoami", "arguments": {}})),
                );
                calls += 1;
                if calls == 1 {
                    let _ = started_tx.send(());
                }
                if answer["error"]["code"] == json!(-32010) {
                    unavailable.push(answer);
                }
            }
            (calls, unavailable)
        })
    };
    started.recv_timeout(TIMEOUT).unwrap();
    let relogin = std::time::Instant::now();
    assert_ok(&login(&daemon, "py"), "the second mcpctl login");
    daemon.wait_log("logged in: starting the server again", TIMEOUT);
    // The old instance takes 1.5 s to end its session: a call now finds its successor waiting.
    let answer = other.request(
        "tools/call",
        Some(json!({"name": "py__whoami", "arguments": {}})),
    );
    assert_eq!(
        answer["result"]["content"][0]["text"], "authorized",
        "a call while the old instance stops: {answer}"
    );
    daemon.wait_status(TIMEOUT, "py ready again since the login", |s| {
        let since_login = relogin.elapsed().as_millis() as u64;
        s.servers.iter().any(|x| {
            x.name == "py"
                && x.state == ServerState::Ready
                && x.state_ms.is_some_and(|ms| ms < since_login)
        })
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, unavailable) = worker.join().unwrap();
    // The new instance took the old one's place at once; calls waited for it to start.
    assert!(
        unavailable.is_empty(),
        "{} of {calls} calls were refused as unavailable: {unavailable:?}",
        unavailable.len()
    );
    assert_eq!(
        daemon.server("py").restarts,
        restarts,
        "a login is not a failure"
    );
}

#[test]
fn peer_servers_log_in_one_after_another_and_share_the_registration_per_issuer() {
    let server = OAuthServer::start(&[]);
    let daemon =
        TestDaemon::start(json!({"mcpServers": {"a": remote(&server), "b": remote(&server)}}));
    for name in ["a", "b", "a"] {
        assert_ok(&login(&daemon, name), &format!("mcpctl login {name}"));
    }
    assert_eq!(server.count("registrations"), 1, "{}", server.stats());
    assert_eq!(server.count("codes"), 3);
}

#[test]
fn peer_an_authorization_server_without_s256_is_refused() {
    for methods in ["", "plain"] {
        let server = OAuthServer::start(&["--pkce-methods", methods]);
        let daemon = TestDaemon::start(json!({"mcpServers": {"py": remote(&server)}}));
        let out = login(&daemon, "py");
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("S256"), "{err}");
        assert_eq!(server.count("registrations"), 0);
        assert_eq!(server.count("authorizations"), 0);
    }
}

#[test]
fn peer_a_redirect_from_another_issuer_is_refused() {
    let server = OAuthServer::start(&["--iss", "wrong"]);
    let daemon = TestDaemon::start(json!({"mcpServers": {"py": remote(&server)}}));
    let out = login(&daemon, "py");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("mix-up"), "{err}");
    assert_eq!(server.count("codes"), 0, "no code was exchanged");
}

#[test]
fn peer_headless_login_refuses_stray_callbacks_and_accepts_the_pasted_url() {
    let server = OAuthServer::start(&[]);
    let daemon = TestDaemon::start(json!({"mcpServers": {"py": remote(&server)}}));
    let mut child = daemon
        .command("mcpctl")
        .args(["login", "py", "--no-browser"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = line_channel(child.stdout.take().unwrap());
    let stderr = Captured::start(child.stderr.take().unwrap());
    let url = loop {
        let line = stdout
            .recv_timeout(PEER_TIMEOUT)
            .expect("the URL is printed");
        if let Some(url) = line.trim().strip_prefix("http://") {
            break url::Url::parse(&format!("http://{url}")).unwrap();
        }
    };
    let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let redirect = url::Url::parse(&query["redirect_uri"]).unwrap();
    let port = redirect.port().unwrap();
    let state = &query["state"];
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["resource"], server.mcp_url());

    // Requests that are not the awaited redirect are refused; the login goes on.
    let host = format!("localhost:{port}");
    for (target, headers) in [
        (format!("/callback?code=x&state=not-{state}"), vec![]),
        ("/callback?code=x".to_owned(), vec![]),
        (format!("/elsewhere?code=x&state={state}"), vec![]),
        (
            format!("/callback?code=x&state={state}"),
            vec![("Host", host.as_str())],
        ),
    ] {
        let (status, _, body) = http_request(port, "GET", &target, &headers);
        assert_eq!(status, 400, "{target} {headers:?}: {body}");
    }

    // The authorization server's redirect, as a browser on another machine would show it.
    let path = format!("{}?{}", url.path(), url.query().unwrap());
    let (status, head, _) = http_request(server.port, "GET", &path, &[]);
    assert_eq!(status, 302, "{head}");
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap()
        .to_owned();

    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "http://127.0.0.1:1/callback?code=c&state=s").unwrap();
    assert!(
        wait_until(PEER_TIMEOUT, || stderr
            .text()
            .contains("paste the URL again")),
        "{}",
        stderr.text()
    );
    writeln!(stdin, "{location}").unwrap();
    let status = wait_timeout(&mut child, PEER_TIMEOUT).expect("mcpctl login ends");
    let rest: Vec<String> = stdout.try_iter().collect();
    assert!(status.success(), "{}\n{rest:?}", stderr.text());
    assert!(
        rest.iter().any(|l| l.contains("logged in to py")),
        "{rest:?}"
    );
    assert_eq!(server.count("codes"), 1);
}

#[test]
fn peer_a_preregistered_client_logs_in_and_logout_revokes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = OAuthServer::start(&["--client", &format!("mcpd-test:s3cret-value:{port}")]);
    let daemon = TestDaemon::builder()
        .env("OAUTH_SECRET", "s3cret-value")
        .start(json!({"mcpServers": {"py": {
            "type": "http", "url": server.mcp_url(),
            "oauth": {"clientId": "mcpd-test", "clientSecret": "${OAUTH_SECRET}", "callbackPort": port}
        }}}));
    assert_ok(&login(&daemon, "py"), "mcpctl login");
    assert_eq!(server.count("registrations"), 0);
    let out = daemon.mcpctl(&["logout", "py"]);
    assert_ok(&out, "mcpctl logout");
    assert!(
        text(&out.stdout).contains("the tokens were revoked"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(server.count("revocations"), 2);
    assert!(!daemon.log().contains("s3cret-value"));
}

// --- The interface the HTTP transport calls, with exact timing. ---

fn manager(server: &OAuthServer, dir: &Path) -> Arc<AuthManager> {
    let targets = BTreeMap::from([(
        "py".to_owned(),
        RemoteAuth {
            url: url::Url::parse(&server.mcp_url()).unwrap(),
            oauth: OAuthSpec::default(),
        },
    )]);
    AuthManager::new(CredentialStore::File, dir, targets).unwrap()
}

async fn log_in(auth: &Arc<AuthManager>) {
    let started = auth.login("py").await.unwrap();
    let url = started.url.clone();
    assert!(
        tokio::task::spawn_blocking(move || browse(&url))
            .await
            .unwrap()
    );
    let message = tokio::time::timeout(PEER_TIMEOUT, started.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(message.starts_with("logged in to py"), "{message}");
}

async fn count(server: &OAuthServer, name: &str) -> u64 {
    let port = server.port;
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let (_, _, body) = http_request(port, "GET", "/stats", &[]);
        serde_json::from_str::<Value>(&body).unwrap()[&name]
            .as_u64()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_refresh_is_proactive_and_single_flight() {
    // Tokens last 62 s; mcpd refreshes 60 s before expiry, so from 2 s after the login.
    let server = OAuthServer::start(&["--access-ttl", "62", "--refresh-delay-ms", "300"]);
    let dir = tempfile::tempdir().unwrap();
    let auth = manager(&server, dir.path());
    log_in(&auth).await;
    let first = auth.bearer("py").await.unwrap();
    assert_eq!(count(&server, "refreshes").await, 0);

    // The manager's clock is moved on instead of waiting.
    auth.clock().advance(Duration::from_secs(3));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let auth = Arc::clone(&auth);
            tokio::spawn(async move { auth.bearer("py").await })
        })
        .collect();
    let mut got = Vec::new();
    for caller in callers {
        got.push(caller.await.unwrap().unwrap().expose_secret().to_owned());
    }
    assert_eq!(
        count(&server, "refreshes").await,
        1,
        "one refresh for 8 callers"
    );
    assert!(
        got.iter().all(|t| *t == got[0]),
        "every caller got the new token"
    );
    assert_ne!(got[0], first.expose_secret());
    let again = auth.bearer("py").await.unwrap();
    assert_eq!(again.expose_secret(), got[0]);
    assert_eq!(count(&server, "refreshes").await, 1);
    assert_eq!(count(&server, "authorizations").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_refresh_across_several_expiries_is_one_per_expiry_with_each_rotated_token_used_once()
{
    // Tokens last 3 s; the server rotates the refresh token on every refresh and refuses one
    // used twice (which would drop the login).
    let server = OAuthServer::start(&["--access-ttl", "3", "--refresh-delay-ms", "200"]);
    let dir = tempfile::tempdir().unwrap();
    let auth = manager(&server, dir.path());
    log_in(&auth).await;
    let mut token = auth.bearer("py").await.unwrap().expose_secret().to_owned();
    for expiry in 1..=4 {
        auth.clock().advance(Duration::from_secs(3));
        let callers: Vec<_> = (0..5)
            .map(|_| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move { auth.bearer("py").await })
            })
            .collect();
        let mut got = Vec::new();
        for caller in callers {
            got.push(caller.await.unwrap().unwrap().expose_secret().to_owned());
        }
        assert!(
            got.iter().all(|t| *t == got[0]),
            "expiry {expiry}: one token for all"
        );
        assert_ne!(got[0], token, "expiry {expiry}: a new token");
        assert_eq!(
            count(&server, "refreshes").await,
            expiry,
            "one refresh per expiry"
        );
        token = got.swap_remove(0);
    }
    assert_eq!(count(&server, "refresh_failures").await, 0);
    assert_eq!(count(&server, "authorizations").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_a_refused_token_is_refreshed_once_for_all_the_requests_that_saw_it() {
    let server = OAuthServer::start(&["--refresh-delay-ms", "300"]);
    let dir = tempfile::tempdir().unwrap();
    let auth = manager(&server, dir.path());
    log_in(&auth).await;
    let old = auth.bearer("py").await.unwrap();
    // A token refused right after it was issued is not refreshed (no refresh loops).
    auth.clock().advance(Duration::from_secs(3));
    server.admin("expire-access");
    let callers: Vec<_> = (0..5)
        .map(|_| {
            let auth = Arc::clone(&auth);
            let old = old.clone();
            tokio::spawn(async move {
                auth.on_unauthorized("py", Some("Bearer error=\"invalid_token\""), Some(&old))
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), Unauthorized::Retry);
    }
    assert_eq!(count(&server, "refreshes").await, 1);
    let new = auth.bearer("py").await.unwrap();
    assert_ne!(new.expose_secret(), old.expose_secret());
    // A request that went out with the old token just retries with the new one.
    assert_eq!(
        auth.on_unauthorized("py", None, Some(&old)).await,
        Unauthorized::Retry
    );
    assert_eq!(count(&server, "refreshes").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_invalid_grant_drops_the_tokens_and_asks_for_a_login() {
    let server = OAuthServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let auth = manager(&server, dir.path());
    log_in(&auth).await;
    let old = auth.bearer("py").await.unwrap();
    auth.clock().advance(Duration::from_secs(3));
    server.admin("drop-refresh");
    server.admin("expire-access");
    let outcome = auth.on_unauthorized("py", None, Some(&old)).await;
    assert!(
        matches!(&outcome, Unauthorized::AuthRequired(m) if m.contains("mcpctl login py")),
        "{outcome:?}"
    );
    assert!(auth.bearer("py").await.is_none());
    assert!(!auth.status("py").unwrap().logged_in);
    let stored: Vec<String> = std::fs::read_dir(dir.path().join("credentials"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !stored.iter().any(|n| n.starts_with("login-")),
        "{stored:?}"
    );
    // A new manager (a restarted daemon) has nothing to use either.
    assert!(manager(&server, dir.path()).bearer("py").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_an_unreachable_authorization_server_keeps_the_tokens() {
    let mut server = OAuthServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let auth = manager(&server, dir.path());
    log_in(&auth).await;
    let old = auth.bearer("py").await.unwrap();
    auth.clock().advance(Duration::from_secs(3));
    server.stop();
    let outcome = auth.on_unauthorized("py", None, Some(&old)).await;
    assert!(
        matches!(outcome, Unauthorized::Unavailable(_)),
        "{outcome:?}"
    );
    assert_eq!(
        auth.bearer("py").await.unwrap().expose_secret(),
        old.expose_secret()
    );
    assert!(auth.status("py").unwrap().logged_in);
    // And the stored login survives for the next daemon.
    let next = manager(&server, dir.path());
    assert_eq!(
        next.bearer("py").await.unwrap().expose_secret(),
        old.expose_secret()
    );
}

#[test]
fn peer_ctrl_c_cancels_a_login_and_closes_the_callback() {
    let server = OAuthServer::start(&[]);
    let daemon = TestDaemon::start(json!({"mcpServers": {"py": remote(&server)}}));
    let mut child = daemon
        .command("mcpctl")
        .args(["login", "py", "--browser", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = line_channel(child.stdout.take().unwrap());
    let stderr = Captured::start(child.stderr.take().unwrap());
    let url = loop {
        let line = stdout
            .recv_timeout(PEER_TIMEOUT)
            .expect("the URL is printed");
        if let Some(url) = line.trim().strip_prefix("http://") {
            break url::Url::parse(&format!("http://{url}")).unwrap();
        }
    };
    let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let port = url::Url::parse(&query["redirect_uri"])
        .unwrap()
        .port()
        .unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    mcpd_tests::process::signal(child.id(), libc::SIGINT);
    let status = wait_timeout(&mut child, TIMEOUT).expect("mcpctl ends on Ctrl-C");
    assert!(!status.success());
    assert!(stderr.text().contains("cancelled"), "{}", stderr.text());
    daemon.wait_log("login cancelled", TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_err()),
        "the callback listener is closed"
    );
}
