//! Refresh across several expiries, through the whole daemon: the Python SDK's authorization
//! server (`tests/peers/py_oauth_server.py`) issues access tokens that last 3 s and rotates the
//! refresh token on every refresh (a refresh token used twice is refused, which would drop the
//! login), while five clients call a tool concurrently through their own shims. Two expiries
//! on the wall clock: more of them, with the clock moved on instead of waited for, are
//! `oauth::peer_refresh_across_several_expiries_is_one_per_expiry_with_each_rotated_token_used_once`.

use mcpd_proto::ServerState;
use mcpd_tests::fixture;
use mcpd_tests::oauth::{OAuthServer, browser_command};
use mcpd_tests::process::{descendants_of, run_with_timeout};
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TestDaemon, wait_until};
use serde_json::{Value, json};

/// The access tokens' lifetime, in seconds.
const ACCESS_TTL: &str = "3";
/// How many access tokens expire (and are replaced) while the clients call.
const EXPIRIES: u64 = 2;

#[test]
fn peer_five_concurrent_clients_cause_one_refresh_per_expiry_and_never_a_second_authorization() {
    let server = OAuthServer::start(&["--access-ttl", ACCESS_TTL, "--refresh-delay-ms", "200"]);
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "py": {"type": "http", "url": server.mcp_url()},
        // A stdio server whose environment is checked for tokens at the end.
        "fx": fixture::server(&["--fork-grandchildren"]),
    }}));
    let log = daemon.root().join("browser.log");
    let out = run_with_timeout(
        daemon
            .command("mcpctl")
            .args(["login", "py", "--browser", &browser_command(&log)]),
        PEER_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_server_state("py", ServerState::Ready);

    // Five clients call until the authorization server has seen EXPIRIES refreshes.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let mut shim = ShimClient::spawn(&daemon, None);
            shim.set_timeout(PEER_TIMEOUT);
            shim.initialize();
            let done = std::sync::Arc::clone(&done);
            std::thread::spawn(move || {
                let mut calls = 0u32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let result = shim.call_tool("py__whoami", json!({}));
                    assert_eq!(
                        result["content"][0]["text"], "authorized",
                        "call {calls}: {result}"
                    );
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let enough = wait_until(PEER_TIMEOUT, || server.count("refreshes") >= EXPIRIES);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let calls: Vec<u32> = clients
        .into_iter()
        .map(|c| c.join().expect("a client failed"))
        .collect();
    let stats = server.stats();
    assert!(enough, "{EXPIRIES} refreshes happened: {stats}");
    assert!(
        calls.iter().all(|&c| c > 0),
        "every client called: {calls:?}"
    );

    // Each refresh replaced a token that had lived a good part of its 3 s (no refresh
    // right after another), no refresh token was used twice, nothing asked for a login.
    let ages: Vec<f64> = stats["refresh_ages"]
        .as_array()
        .expect("refresh_ages")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        ages.iter().all(|&a| a >= 1.0),
        "one refresh per expiry: {stats}"
    );
    assert_eq!(stats["refresh_failures"], 0, "{stats}");
    assert_eq!(stats["authorizations"], 1, "{stats}");
    assert_eq!(stats["codes"], 1, "{stats}");
    assert!(daemon.server("py").auth.is_some_and(|a| a.logged_in));

    // After all those refreshes, no token ever issued is anywhere outside the daemon's memory:
    // not in any file under its XDG tree (state, cache, config, runtime, log), not in status,
    // not in the environment of any process it started.
    let tokens = server.tokens();
    assert!(
        tokens.len() >= 2 + 2 * EXPIRIES as usize,
        "tokens issued: {}",
        tokens.len()
    );
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    let mut dirs = vec![daemon.root().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.is_file() {
                places.push((
                    path.display().to_string(),
                    std::fs::read(&path).unwrap_or_default(),
                ));
            }
        }
    }
    let status = daemon.mcpctl(&["status", "--json"]);
    places.push(("mcpctl status --json".into(), status.stdout));
    let children = descendants_of(daemon.pid());
    assert!(
        children.len() >= 3,
        "the stdio server and its children: {children:?}"
    );
    for pid in children {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        places.push((format!("the environment of pid {pid}"), environ));
    }
    for (place, bytes) in &places {
        for token in &tokens {
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "a token is in {place}"
            );
        }
    }
}
