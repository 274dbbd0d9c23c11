//! `${secret:NAME}` end to end: `mcpctl secret set` (value on stdin), server-everything's
//! `get-env` tool to see which child got which value, and a scan of everything mcpd wrote or
//! shows for the value.
//!
//! Every test is `peer_*` (it starts server-everything under Node).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use mcpd_proto::ServerState;
use mcpd_tests::process::wait_timeout;
use mcpd_tests::{PEER_TIMEOUT, ShimClient, TIMEOUT, TestDaemon, peers};
use serde_json::{Value, json};

const VALUE: &str = "sk-test-Zq8v3LmN2pXw7RtY5uK1";
const WORK_VALUE: &str = "ghp_workWorkWork0123456789abcdefABCDEF";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` with `input` on its stdin (a pipe, not a terminal) and waits for it.
fn run_with_input(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    if wait_timeout(&mut child, PEER_TIMEOUT).is_none() {
        let _ = child.kill();
        panic!("{cmd:?} did not finish");
    }
    child.wait_with_output().unwrap()
}

/// `mcpctl secret set NAME [--profile P]` with the value piped in.
pub fn secret_set(daemon: &TestDaemon, name: &str, profile: Option<&str>, value: &str) -> String {
    let mut cmd = daemon.command("mcpctl");
    cmd.args(["secret", "set", name]);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    let out = run_with_input(cmd, &format!("{value}\n"));
    assert!(
        out.status.success(),
        "secret set failed: {}{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

/// server-everything with extra `env`.
fn everything(env: Value) -> Value {
    let mut server = peers().everything_server();
    server["env"] = env;
    server
}

/// The environment server-everything's `get-env` reports.
fn child_env(client: &mut ShimClient, tool: &str) -> String {
    let result = client.call_tool(tool, json!({}));
    assert_ne!(result["isError"], true, "{result}");
    result["content"][0]["text"].as_str().unwrap().to_owned()
}

/// Every file under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file()
                && std::fs::read(&path)
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn peer_a_secret_reaches_only_the_server_that_references_it_and_leaks_nowhere() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "with": everything(json!({"API_KEY": "${secret:API_KEY}"})),
        "without": everything(json!({})),
    }}));

    // Not set yet: the server waits in secret-missing, and status says what to run.
    let waiting = daemon.wait_server_state("with", ServerState::SecretMissing);
    let why = waiting.last_error.unwrap_or_default();
    assert!(
        why.contains("API_KEY") && why.contains("mcpctl secret set API_KEY"),
        "{why}"
    );
    let mut client = ShimClient::spawn(&daemon, None);
    client.initialize();
    let error = client.error(
        "tools/call",
        Some(json!({"name": "with__get-env", "arguments": {}})),
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mcpctl secret set API_KEY"),
        "{error}"
    );

    let said = secret_set(&daemon, "API_KEY", None, VALUE);
    assert!(
        said.contains("stored API_KEY") && said.contains("restarted with"),
        "{said}"
    );
    daemon.wait_server_state("with", ServerState::Ready);
    let without = daemon.wait_server_state("without", ServerState::Ready);
    // Only the server that uses the secret was restarted.
    assert!(!said.contains("without"), "{said}");
    assert_eq!(without.restarts, 0);

    assert!(child_env(&mut client, "with__get-env").contains(VALUE));
    assert!(!child_env(&mut client, "without__get-env").contains(VALUE));

    // Nowhere else: no file under any XDG directory (or the daemon's log), not the status,
    // not `mcpctl logs`, not `secret list`, not the other child's environment.
    let files = files_containing(daemon.root(), VALUE);
    assert!(files.is_empty(), "the value is in {files:?}");
    for args in [
        &["status", "--json"][..],
        &["logs"],
        &["secret", "list"],
        &["secret", "list", "--json"],
    ] {
        let out = daemon.mcpctl(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(
            !text(&out.stdout).contains(VALUE),
            "`mcpctl {args:?}` shows the value"
        );
    }
    let list = text(&daemon.mcpctl(&["secret", "list"]).stdout);
    assert!(
        list.contains("API_KEY") && list.contains("used by with"),
        "{list}"
    );
    let environ = std::fs::read(format!("/proc/{}/environ", without.pid.unwrap())).unwrap();
    assert!(!text(&environ).contains(VALUE));
    assert!(!text(&environ).contains("API_KEY"));
}

#[test]
fn peer_a_server_that_prints_its_key_on_stderr_shows_it_redacted() {
    let (node, args) = peers().everything_stdio_cmd();
    let script = format!(
        "echo \"starting with key $API_KEY\" >&2; exec '{node}' '{}' stdio",
        args.join("' '")
    );
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "echo": {"command": "sh", "args": ["-c", script], "env": {"API_KEY": "${secret:API_KEY}"}},
    }}));
    secret_set(&daemon, "API_KEY", None, VALUE);
    let ready = daemon.wait_server_state("echo", ServerState::Ready);
    let logs = mcpd_tests::process::eventually(TIMEOUT, "the stderr line in mcpctl logs", || {
        let logs = text(&daemon.mcpctl(&["logs", "echo"]).stdout);
        logs.contains("starting with key").then_some(logs)
    });
    assert!(
        logs.contains("starting with key [redacted:API_KEY]"),
        "{logs}"
    );
    assert!(!logs.contains(VALUE));
    assert!(
        ready
            .stderr_tail
            .iter()
            .chain(&daemon.server("echo").stderr_tail)
            .all(|l| !l.contains(VALUE))
    );
    assert!(!daemon.log().contains(VALUE));
}

#[test]
fn peer_a_profile_value_runs_its_own_instance_and_each_profile_sees_its_own() {
    let daemon = TestDaemon::start(json!({
        "mcpServers": {
            "gh": everything(json!({"GITHUB_TOKEN": "${secret:GITHUB_TOKEN}"})),
            "pp": {"command": mcpd_tests::bin("mcpd-fixture").display().to_string(), "share": "per-profile"},
        },
        "profiles": {"work": {"servers": ["gh", "pp"]}},
    }));
    secret_set(&daemon, "GITHUB_TOKEN", None, VALUE);
    let said = secret_set(&daemon, "GITHUB_TOKEN", Some("work"), WORK_VALUE);
    assert!(said.contains("for profile work"), "{said}");
    daemon.wait_server_state("gh", ServerState::Ready);

    let mut work = ShimClient::spawn(&daemon, Some("work"));
    work.initialize();
    let mut personal = ShimClient::spawn(&daemon, None);
    personal.initialize();
    let work_env = child_env(&mut work, "gh__get-env");
    let personal_env = child_env(&mut personal, "gh__get-env");
    assert!(work_env.contains(WORK_VALUE) && !work_env.contains(VALUE));
    assert!(personal_env.contains(VALUE) && !personal_env.contains(WORK_VALUE));

    let status = daemon.status();
    let pid = |name: &str| {
        status
            .servers
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.pid)
            .unwrap_or_else(|| panic!("no running {name} in {:?}", status.servers))
    };
    assert_ne!(pid("gh"), pid("gh@work"), "two instances");
    // `"share": "per-profile"` without secrets of the profile's own: an instance per profile.
    let answer = work.call_tool("pp__pid", json!({}));
    let status = daemon.status();
    let work_pp = status.servers.iter().find(|s| s.name == "pp@work");
    assert!(
        work_pp.is_some_and(|s| answer.to_string().contains(&s.pid.unwrap_or(0).to_string())),
        "{answer} {:?}",
        status.servers
    );
    let list = text(&daemon.mcpctl(&["secret", "list"]).stdout);
    assert!(
        list.contains("default set") && list.contains("work set"),
        "{list}"
    );
}

#[test]
fn peer_secrets_survive_a_daemon_restart_with_the_key_file() {
    let mut daemon = TestDaemon::start(json!({
        "mcpServers": {"with": everything(json!({"API_KEY": "${secret:API_KEY}"}))},
        "mcpd": {"credentialStore": "file"},
    }));
    secret_set(&daemon, "API_KEY", None, VALUE);
    daemon.wait_server_state("with", ServerState::Ready);
    daemon.terminate();
    daemon.start_again();
    daemon.wait_server_state("with", ServerState::Ready);
    let mut client = ShimClient::spawn(&daemon, None);
    client.initialize();
    assert!(child_env(&mut client, "with__get-env").contains(VALUE));
    assert!(files_containing(daemon.root(), VALUE).is_empty());
    let key = daemon.root().join("state/mcpd/credentials/key");
    assert!(key.exists(), "the key file {}", key.display());
}

const GITHUB_TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
const BEARER: &str = "mcp-remote-bearer-3f9a8b7c6d5e4f3a2b1c";

/// A Claude Desktop configuration with a GitHub token in `env` and a bearer token in an
/// `Authorization` header.
fn claude_desktop_config(dir: &Path, remote_url: &str) -> std::path::PathBuf {
    let file = dir.join("claude_desktop_config.json");
    let config = json!({"mcpServers": {
        "github": everything(json!({"GITHUB_PERSONAL_ACCESS_TOKEN": GITHUB_TOKEN, "LOG_LEVEL": "debug"})),
        "remote": {"type": "http", "url": remote_url, "headers": {"Authorization": format!("Bearer {BEARER}")}},
    }});
    std::fs::write(&file, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    file
}

#[test]
fn peer_import_moves_a_github_token_and_an_authorization_header_into_the_store() {
    let remote = mcpd_tests::HttpPeer::everything("streamableHttp");
    let daemon = TestDaemon::start(json!({"mcpServers": {}}));
    let source = claude_desktop_config(daemon.root(), &remote.url("/mcp"));
    let out = daemon.mcpctl(&["import", "--from", source.to_str().unwrap()]);
    let said = text(&out.stderr) + &text(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("mcpServers.github.env.GITHUB_PERSONAL_ACCESS_TOKEN (a GitHub token)"),
        "{said}"
    );
    assert!(
        said.contains("mcpServers.remote.headers.Authorization"),
        "{said}"
    );
    assert!(said.contains("to undo"), "{said}");

    let config = std::fs::read_to_string(daemon.config_path()).unwrap();
    assert!(
        !config.contains(GITHUB_TOKEN) && !config.contains(BEARER),
        "{config}"
    );
    assert!(
        config.contains("${secret:GITHUB_PERSONAL_ACCESS_TOKEN}"),
        "{config}"
    );
    assert!(
        config.contains("Bearer ${secret:remote_Authorization}"),
        "{config}"
    );
    assert!(config.contains("\"LOG_LEVEL\": \"debug\""), "{config}");
    let list = text(&daemon.mcpctl(&["secret", "list"]).stdout);
    assert!(
        list.contains("GITHUB_PERSONAL_ACCESS_TOKEN") && list.contains("remote_Authorization"),
        "{list}"
    );

    daemon.reload().unwrap();
    daemon.wait_server_state("github", ServerState::Ready);
    daemon.wait_server_state("remote", ServerState::Ready);
    let mut client = ShimClient::spawn(&daemon, None);
    client.initialize();
    assert!(child_env(&mut client, "github__get-env").contains(GITHUB_TOKEN));
    let echo = client.call_tool("remote__echo", json!({"message": "hi"}));
    assert_ne!(echo["isError"], true, "{echo}");
    let leaks = files_containing(&daemon.root().join("state"), BEARER);
    assert!(leaks.is_empty(), "{leaks:?}");
    assert!(!daemon.log().contains(BEARER) && !daemon.log().contains(GITHUB_TOKEN));
}

#[test]
fn peer_secret_adopt_moves_plaintext_out_of_mcpds_config_and_doctor_points_at_it() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "github": everything(json!({"GITHUB_PERSONAL_ACCESS_TOKEN": GITHUB_TOKEN})),
    }}));
    daemon.wait_server_state("github", ServerState::Ready);
    let doctor = daemon.mcpctl(&["doctor"]);
    let said = text(&doctor.stdout) + &text(&doctor.stderr);
    assert!(
        said.contains("credential(s) in plaintext") && said.contains("mcpctl secret adopt"),
        "{said}"
    );

    let out = daemon.mcpctl(&["secret", "adopt"]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("into secret GITHUB_PERSONAL_ACCESS_TOKEN"),
        "{said}"
    );
    assert!(said.contains("to undo: cp "), "{said}");
    let config = std::fs::read_to_string(daemon.config_path()).unwrap();
    assert!(!config.contains(GITHUB_TOKEN), "{config}");
    assert!(config.contains("${secret:GITHUB_PERSONAL_ACCESS_TOKEN}"));
    // The backup with the plaintext is private and named so the user can delete it.
    let backup = said
        .split_whitespace()
        .find(|w| w.contains(".bak-"))
        .map(|w| w.trim_end_matches([',', ';']))
        .unwrap()
        .to_owned();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&backup).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{backup}");

    daemon.wait_server_state("github", ServerState::Ready);
    let mut client = ShimClient::spawn(&daemon, None);
    client.initialize();
    assert!(child_env(&mut client, "github__get-env").contains(GITHUB_TOKEN));
    let doctor = text(&daemon.mcpctl(&["doctor"]).stdout);
    assert!(!doctor.contains("in plaintext"), "{doctor}");
}

#[test]
fn install_client_leaves_no_secret_in_the_clients_config_and_lists_its_private_backup() {
    let daemon = TestDaemon::start(json!({"mcpServers": {
        "github": {"command": "true", "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${secret:GITHUB_PERSONAL_ACCESS_TOKEN}"}},
    }}));
    let file = daemon.root().join("claude_desktop_config.json");
    std::fs::write(
        &file,
        json!({"mcpServers": {"github": {"command": "npx", "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": GITHUB_TOKEN}}}})
            .to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let shim = mcpd_tests::bin("mcp-shim");
    let out = daemon.mcpctl(&[
        "install-client",
        "claude-desktop",
        "--file",
        file.to_str().unwrap(),
        "--shim",
        shim.to_str().unwrap(),
    ]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(GITHUB_TOKEN)
    );
    let backup = daemon.root().join("claude_desktop_config.json.mcpd-backup");
    assert!(said.contains(&format!("rm {}", backup.display())), "{said}");
    assert!(
        said.contains("github.env.GITHUB_PERSONAL_ACCESS_TOKEN"),
        "{said}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&backup).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_secret_a_server_repeats_in_its_catalog_is_redacted_in_the_cache() {
    let server = mcpd_tests::fixture::server(&["--instructions", "use key ${secret:API_KEY}"]);
    let daemon = TestDaemon::start(json!({"mcpServers": {"fx": server}}));
    secret_set(&daemon, "API_KEY", None, VALUE);
    daemon.wait_server_state("fx", ServerState::Ready);
    let cache = daemon.root().join("cache/mcpd/catalog.json");
    let text = mcpd_tests::process::eventually(TIMEOUT, "the catalog cache", || {
        std::fs::read_to_string(&cache)
            .ok()
            .filter(|t| t.contains("use key"))
    });
    assert!(text.contains("use key [redacted:API_KEY]"), "{text}");
    assert!(files_containing(daemon.root(), VALUE).is_empty());
}

#[test]
fn peer_a_secret_only_a_profile_has_serves_that_profile_and_the_others_are_told_what_to_set() {
    let daemon = TestDaemon::start(json!({
        "mcpServers": {"gh": everything(json!({"GITHUB_TOKEN": "${secret:GITHUB_TOKEN}"}))},
        "profiles": {"work": {"servers": ["gh"]}},
    }));
    secret_set(&daemon, "GITHUB_TOKEN", Some("work"), WORK_VALUE);
    daemon.wait_server_state("gh", ServerState::SecretMissing);

    let mut work = ShimClient::spawn(&daemon, Some("work"));
    work.initialize();
    mcpd_tests::process::eventually(PEER_TIMEOUT, "gh's tools for the work profile", || {
        work.tool_names()
            .contains(&"gh__get-env".to_owned())
            .then_some(())
    });
    assert!(child_env(&mut work, "gh__get-env").contains(WORK_VALUE));

    let mut other = ShimClient::spawn(&daemon, None);
    other.initialize();
    let error = other.error(
        "tools/call",
        Some(json!({"name": "gh__get-env", "arguments": {}})),
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("GITHUB_TOKEN") && message.contains("mcpctl secret set GITHUB_TOKEN"),
        "{error}"
    );
}
