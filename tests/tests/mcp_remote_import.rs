//! Reusing a login made with `mcp-remote`: a fake `~/.mcp-auth/mcp-remote-v1/` in the test
//! HOME, laid out as mcp-remote writes it (`<md5 of the server URL>_tokens.json` and
//! `_client_info.json`), with real tokens that a small OAuth client (Python, `httpx`) got
//! from the Python SDK's authorization server (`tests/peers/py_oauth_server.py`) the way
//! mcp-remote does: dynamic registration, PKCE, code exchange.
//!
//! Every test is `peer_*` (it starts Python).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use mcpd_proto::ServerState;
use mcpd_tests::oauth::OAuthServer;
use mcpd_tests::peers::peers;
use mcpd_tests::process::run_with_timeout;
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TIMEOUT, TestDaemon};
use serde_json::{Value, json};

/// An OAuth client like mcp-remote's: registers, authorizes (the server approves at once and
/// redirects; the redirect is read, not followed), exchanges the code. Prints
/// `{"client": ..., "tokens": ..., "hash": md5(mcp url)}`.
const CLIENT: &str = r#"
import base64, hashlib, json, secrets, sys, time, urllib.parse
import httpx
base, mcp = sys.argv[1], sys.argv[2]
redirect = "http://localhost:3334/oauth/callback"
client = httpx.post(base + "/register", json={
    "client_name": "MCP CLI Proxy", "redirect_uris": [redirect],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
}).json()
verifier = secrets.token_urlsafe(48)
challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
r = httpx.get(base + "/authorize", params={
    "response_type": "code", "client_id": client["client_id"], "redirect_uri": redirect,
    "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
    "resource": mcp, "scope": "mcp:read mcp:write",
}, follow_redirects=False)
code = urllib.parse.parse_qs(urllib.parse.urlparse(r.headers["location"]).query)["code"][0]
tokens = httpx.post(base + "/token", data={
    "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
    "client_id": client["client_id"], "code_verifier": verifier, "resource": mcp,
}).json()
tokens["expires_at"] = int(time.time() * 1000) + tokens["expires_in"] * 1000
print(json.dumps({"client": client, "tokens": tokens, "hash": hashlib.md5(mcp.encode()).hexdigest()}))
"#;

/// Logs in to `server` as mcp-remote would, for the URL `filed_under`; writes the two files
/// into `dir` under the MD5 of `filed_under`. Returns the access token.
fn mcp_remote_login(server: &OAuthServer, filed_under: &str, dir: &Path) -> String {
    let out = run_with_timeout(
        Command::new(peers().python())
            .args(["-c", CLIENT])
            .arg(format!("http://127.0.0.1:{}", server.port))
            .arg(server.mcp_url()),
        PEER_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hash = if filed_under == server.mcp_url() {
        got["hash"].as_str().unwrap().to_owned()
    } else {
        md5_of(filed_under)
    };
    std::fs::create_dir_all(dir).unwrap();
    // mcp-remote writes with the default umask.
    for (name, value) in [("tokens", &got["tokens"]), ("client_info", &got["client"])] {
        let path = dir.join(format!("{hash}_{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(value).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    got["tokens"]["access_token"].as_str().unwrap().to_owned()
}

fn md5_of(text: &str) -> String {
    let out = run_with_timeout(
        Command::new(peers().python()).args([
            "-c",
            "import hashlib,sys; print(hashlib.md5(sys.argv[1].encode()).hexdigest())",
            text,
        ]),
        PEER_TIMEOUT,
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn auth_dir(daemon: &TestDaemon) -> std::path::PathBuf {
    let home = daemon
        .env()
        .into_iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| v)
        .unwrap();
    Path::new(&home).join(".mcp-auth/mcp-remote-v1")
}

fn config(server: &OAuthServer) -> Value {
    json!({"mcpServers": {"py": {"type": "http", "url": server.mcp_url()}}})
}

#[test]
fn peer_the_token_filed_under_the_servers_url_is_imported_and_kept() {
    let server = OAuthServer::start(&[]);
    let other = OAuthServer::start(&[]);
    let mut daemon = TestDaemon::builder().start(json!({"mcpServers": {}}));
    let dir = auth_dir(&daemon);
    // Two servers' logins in mcp-remote's directory; only py's may be used.
    mcp_remote_login(&server, &server.mcp_url(), &dir);
    mcp_remote_login(&other, &other.mcp_url(), &dir);
    assert_eq!(server.count("authorizations"), 1);

    daemon.write_config(&config(&server));
    daemon.reload().unwrap();
    daemon.wait_log("imported the login made with mcp-remote", TIMEOUT);
    let ready = daemon.wait_server_state("py", ServerState::Ready);
    assert!(ready.auth.unwrap().logged_in);
    let mut shim = ShimClient::spawn(&daemon, None);
    shim.initialize();
    let answer = shim.call_tool("py__whoami", json!({}));
    assert_eq!(answer["content"][0]["text"].as_str(), Some("authorized"));
    // No login by mcpd, and the other server was never asked anything.
    assert_eq!(server.count("authorizations"), 1);
    assert_eq!(server.count("registrations"), 1);
    assert_eq!(other.count("mcp_requests"), 0);
    assert!(daemon.log().contains("readable by other users"));

    // The imported login is mcpd's own now: a restart uses the encrypted copy.
    daemon.terminate();
    std::fs::remove_dir_all(&dir).unwrap();
    daemon.start_again();
    daemon.wait_log("using the stored login", TIMEOUT);
    daemon.wait_server_state("py", ServerState::Ready);
    assert_eq!(server.count("authorizations"), 1);
}

#[test]
fn peer_a_token_filed_under_another_url_is_never_tried() {
    let server = OAuthServer::start(&[]);
    let daemon = TestDaemon::builder().start(json!({"mcpServers": {}}));
    let dir = auth_dir(&daemon);
    // A token that py would accept, filed under another server's URL (and one under a URL
    // that differs only by a query): neither is py's login.
    mcp_remote_login(&server, "https://elsewhere.example/mcp", &dir);
    mcp_remote_login(&server, &format!("{}?x=1", server.mcp_url()), &dir);
    daemon.write_config(&config(&server));
    daemon.reload().unwrap();
    let waiting = daemon.wait_server_state("py", ServerState::AuthRequired);
    assert!(!waiting.auth.unwrap().logged_in);
    assert!(!daemon.log().contains("mcp-remote"), "{}", daemon.log());
    // Every request py saw without a valid token was one without any token.
    assert_eq!(server.count("authorizations"), 2);
}
