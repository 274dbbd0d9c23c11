//! How configuration mistakes are shown: the same words in the log, `mcpctl status`, `mcpctl
//! reload` and the `initialize` instructions a client sees, so that no screen contradicts
//! another (see `config::problems` and `config::last_good`).

use std::path::Path;

use mcpd_proto::{ServerState, ServerStatus};

use crate::config::{Config, ConfigError, Loaded, ServerProblem};

/// The configuration the daemon starts with, the file's error if it did not load, and what
/// runs instead (the last configuration that loaded, or nothing).
pub fn at_start(
    loaded: Result<Loaded, ConfigError>,
    state_dir: &Path,
) -> (Loaded, Option<String>, Option<String>) {
    let result = match loaded {
        Ok(mut loaded) => match loaded.fell_back.take() {
            Some(e) => {
                let copy = crate::config::last_good::path(state_dir);
                tracing::error!(
                    "{e}; serving the last configuration that loaded ({}) until the file is fixed and `mcpctl reload` is run",
                    copy.display()
                );
                let fallback = format!(
                    "the last configuration that loaded (copy in {})",
                    copy.display()
                );
                (loaded, Some(e.to_string()), Some(fallback))
            }
            None => (loaded, None, None),
        },
        Err(e) => {
            tracing::error!(
                "{e}; starting with no servers (no earlier configuration to fall back on): fix the file and run `mcpctl reload`"
            );
            let loaded = Loaded {
                exists: true,
                ..Loaded::default()
            };
            (loaded, Some(e.to_string()), None)
        }
    };
    for (name, problem) in &result.0.config.broken {
        tracing::error!(server = %name, "not started, its definition has mistakes: {}", problem.located());
    }
    result
}

/// The status rows of servers left out for mistakes in their definitions.
pub fn broken_servers(config: &Config) -> impl Iterator<Item = ServerStatus> + '_ {
    config.broken.iter().map(|(name, problem)| ServerStatus {
        name: name.clone(),
        transport: "-".into(),
        url: None,
        session: None,
        state: ServerState::ConfigError,
        pid: None,
        tools: 0,
        restarts: 0,
        last_error: Some(problem.located()),
        server_info: None,
        last_exit: None,
        stderr_tail: Vec::new(),
        auth: None,
        flags: Vec::new(),
        contain: None,
        state_ms: None,
    })
}

/// `name: path: message` per server left out, for the reload report.
pub fn reload_errors(config: &Config) -> Vec<String> {
    let errors: Vec<String> = config
        .broken
        .iter()
        .map(|(name, problem)| format!("{name}: {}", problem.summary()))
        .collect();
    for line in &errors {
        tracing::error!("not started, its definition has mistakes: {line}");
    }
    errors
}

/// Why `mcpctl restart|start|stop NAME` cannot act on a server left out for mistakes.
pub fn cannot_start(name: &str, problem: &ServerProblem) -> String {
    format!(
        "server `{name}` is not running: its definition has mistakes ({}); fix the configuration file and run `mcpctl reload`",
        problem.summary()
    )
}

/// Why a call to a tool or prompt of a server left out for mistakes fails.
pub fn call_error(name: &str, server: &str, problem: &ServerProblem) -> String {
    format!(
        "{name}: server `{server}` is not running because its configuration has mistakes: {}; fix the file and run `mcpctl reload`",
        problem.summary()
    )
}

/// What `initialize` adds to the instructions when the configuration is not all well.
pub fn notice(
    config_path: &Path,
    config: &Config,
    error: Option<&str>,
    fallback: Option<&str>,
) -> Option<String> {
    let mut lines = Vec::new();
    if let Some(error) = error {
        match fallback {
            Some(fallback) => lines.push(format!(
                "mcpd: the configuration file does not load ({error}); serving {fallback}."
            )),
            None => lines.push(format!(
                "mcpd: the configuration file does not load ({error}); no servers are running."
            )),
        }
    }
    for (name, problem) in &config.broken {
        lines.push(format!(
            "mcpd: server `{name}` is not running, its configuration has mistakes: {}.",
            problem.summary()
        ));
    }
    if lines.is_empty() {
        return None;
    }
    lines.push(format!(
        "Fix {} and run `mcpctl reload`; `mcpctl status` shows the details.",
        config_path.display()
    ));
    Some(lines.join("\n"))
}
