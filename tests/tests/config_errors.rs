//! Configuration that fails small and loud: a mistake in one server's definition disables only
//! that server, a file that stops parsing keeps the last configuration that loaded, and every
//! screen (status, doctor, reload, the `initialize` instructions) says the same thing.

use mcpd_proto::ServerState;
use mcpd_tests::daemon::TestDaemon;
use mcpd_tests::fixture;
use mcpd_tests::shim::ShimClient;
use serde_json::{Value, json};

/// `good` runs; `bad` has two mistakes: an unset variable and a timeout that is not a number.
fn one_good_one_bad() -> Value {
    let mut bad = fixture::server(&[]);
    bad["args"] = json!(["${MCPD_TEST_SURELY_UNSET_VARIABLE}"]);
    bad["requestTimeoutMs"] = json!("soon");
    json!({"mcpServers": {"good": fixture::server(&[]), "bad": bad}})
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_broken_server_is_left_out_and_the_good_one_serves() {
    let daemon = TestDaemon::start(one_good_one_bad());
    daemon.wait_server_state("good", ServerState::Ready);

    // status --json: state config-error, both mistakes with their JSON paths, at once.
    let bad = daemon.server("bad");
    assert_eq!(bad.state, ServerState::ConfigError);
    let error = bad.last_error.unwrap_or_default();
    assert!(
        error.contains("mcpServers.bad.args[0]")
            && error.contains("MCPD_TEST_SURELY_UNSET_VARIABLE"),
        "{error}"
    );
    assert!(error.contains("mcpServers.bad.requestTimeoutMs"), "{error}");
    let json = stdout(&daemon.mcpctl(&["status", "--json"]));
    assert!(json.contains("\"config-error\""), "{json}");
    assert!(json.contains("mcpServers.bad.args[0]"), "{json}");
    let text = stdout(&daemon.mcpctl(&["status"]));
    assert!(text.contains("bad is config-error"), "{text}");
    assert!(text.contains("mcpctl reload"), "{text}");
    assert!(!text.contains("not found"), "{text}");

    // doctor names it once and fails.
    let doctor = daemon.mcpctl(&["doctor"]);
    let report = stdout(&doctor);
    assert!(!doctor.status.success(), "{report}");
    assert_eq!(
        report.matches("mcpServers.bad.args[0]").count(),
        1,
        "reported once: {report}"
    );

    // A client sees the good server's tools, is told about the bad one in `initialize`, and
    // a call to the bad one's tools fails at once saying why.
    let mut shim = ShimClient::spawn(&daemon, None);
    let init = shim.initialize();
    let instructions = init["instructions"].as_str().unwrap_or_default();
    assert!(
        instructions.contains("`bad` is not running") && instructions.contains("args[0]"),
        "{init}"
    );
    assert!(shim.tool_names().iter().any(|t| t.starts_with("good__")));
    let error = shim.error(
        "tools/call",
        Some(json!({"name": "bad__echo", "arguments": {}})),
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("configuration has mistakes"), "{error}");

    // restart of the bad server says why it cannot.
    let restart = daemon.mcpctl(&["restart", "bad"]);
    assert!(!restart.status.success());
    assert!(
        String::from_utf8_lossy(&restart.stderr).contains("definition has mistakes"),
        "{restart:?}"
    );
}

#[test]
fn a_syntax_error_at_start_serves_the_last_configuration_that_loaded() {
    let mut daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    daemon.terminate();

    // A trailing comma: the file no longer parses.
    let good = std::fs::read_to_string(daemon.config_path()).expect("config");
    let broken = format!(
        "{},\n}}\n",
        good.trim_end().strip_suffix('}').expect("an object")
    );
    std::fs::write(daemon.config_path(), &broken).expect("write");
    daemon.start_again();

    daemon.wait_server_state("fx", ServerState::Ready);
    let status = daemon.status();
    let error = status.config_error.unwrap_or_default();
    assert!(
        error.contains("config.json:"),
        "names the file and line: {error}"
    );
    assert!(
        status
            .config_fallback
            .unwrap_or_default()
            .contains("last configuration that loaded"),
    );
    let text = stdout(&daemon.mcpctl(&["status"]));
    assert!(text.contains("serving the last configuration"), "{text}");
    assert!(!daemon.log().contains("no configuration file at"));

    let mut shim = ShimClient::spawn(&daemon, None);
    let init = shim.initialize();
    assert!(
        init["instructions"]
            .as_str()
            .unwrap_or_default()
            .contains("does not load"),
        "{init}"
    );
    assert!(shim.tool_names().iter().any(|t| t.starts_with("fx__")));
}

#[test]
fn a_syntax_error_without_a_last_good_copy_says_so_everywhere() {
    let daemon = TestDaemon::builder().without_config_file().start(json!({}));
    std::fs::create_dir_all(daemon.config_path().parent().expect("dir")).expect("mkdir");
    std::fs::write(daemon.config_path(), "{\"mcpServers\": {,}}").expect("write");
    let mut daemon = daemon;
    daemon.terminate();
    daemon.start_again();

    let status = daemon.status();
    assert!(status.config_error.is_some());
    assert!(status.config_loaded, "the file exists: never `(not found)`");
    let text = stdout(&daemon.mcpctl(&["status"]));
    assert!(text.contains("running with no servers"), "{text}");
    assert!(!text.contains("not found"), "{text}");
    let doctor = daemon.mcpctl(&["doctor"]);
    let report = stdout(&doctor);
    assert!(!doctor.status.success());
    assert!(report.contains("configuration is not valid"), "{report}");
    let mut shim = ShimClient::spawn(&daemon, None);
    let init = shim.initialize();
    assert!(
        init["instructions"]
            .as_str()
            .unwrap_or_default()
            .contains("no servers are running"),
        "{init}"
    );
}

#[test]
fn reload_suggests_near_miss_keys_and_names_a_missing_command_at_once() {
    let daemon = TestDaemon::start(fixture::config(&[("fx", &[])]));
    daemon.wait_server_state("fx", ServerState::Ready);
    let mut config = fixture::config(&[("fx", &[])]);
    config["mcpServers"]["fx"]["idleTimoutMs"] = json!(1000);
    config["mcpd"] = json!({"seperator": "__"});
    config["mcpServers"]["gone"] = json!({"command": "no-such-mcp-server-xyz"});
    daemon.write_config(&config);

    let out = daemon.mcpctl(&["reload"]);
    let text = stdout(&out);
    assert!(text.contains("did you mean `idleTimeoutMs`?"), "{text}");
    assert!(text.contains("did you mean `separator`?"), "{text}");
    assert!(
        text.contains("gone: mcpServers.gone.command") && text.contains("daemon's PATH"),
        "{text}"
    );
    assert!(!out.status.success(), "a server was left out");
    assert_eq!(daemon.server("gone").state, ServerState::ConfigError);
    assert_eq!(daemon.server("fx").state, ServerState::Ready);
    let doctor = stdout(&daemon.mcpctl(&["doctor"]));
    assert!(doctor.contains("did you mean `idleTimeoutMs`?"), "{doctor}");
}
