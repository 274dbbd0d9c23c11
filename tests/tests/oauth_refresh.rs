//! Refresh across several expiries, through the whole daemon: the Python SDK's authorization
//! server (`tests/peers/py_oauth_server.py`) issues access tokens that last 3 s and rotates the
//! refresh token on every refresh (a refresh token used twice is refused, which would drop the
//! login), while five clients call a tool concurrently through their own shims.

use mcpd_proto::ServerState;
use mcpd_tests::oauth::{OAuthServer, browser_command};
use mcpd_tests::process::run_with_timeout;
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TestDaemon, wait_until};
use serde_json::{Value, json};

/// The access tokens' lifetime, in seconds.
const ACCESS_TTL: &str = "3";
/// How many access tokens expire (and are replaced) while the clients call.
const EXPIRIES: u64 = 4;

#[test]
fn peer_five_concurrent_clients_cause_one_refresh_per_expiry_and_never_a_second_authorization() {
    let server = OAuthServer::start(&["--access-ttl", ACCESS_TTL, "--refresh-delay-ms", "200"]);
    let daemon =
        TestDaemon::start(json!({"mcpServers": {"py": {"type": "http", "url": server.mcp_url()}}}));
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
}
