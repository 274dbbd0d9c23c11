//! What each screen says about a server that is not well: the meaningful cause of its failure
//! and the command that gets it out of its state. `status`, `status NAME` and `doctor` share
//! these so that they never disagree.

use mcpd_proto::{ServerState, ServerStatus};

/// The command that gets a server out of its state, when there is one.
pub fn way_out(s: &ServerStatus, config_path: Option<&str>) -> Option<String> {
    let name = &s.name;
    match s.state {
        ServerState::CrashLoop => Some(format!(
            "see `mcpctl status {name}` for its log, fix the cause, then `mcpctl restart {name}`"
        )),
        ServerState::AuthRequired => Some(format!("mcpctl login {name}")),
        ServerState::ConfigError => Some(format!(
            "edit {} and run `mcpctl reload`",
            config_path.unwrap_or("the configuration file")
        )),
        ServerState::Stopped => Some(format!("mcpctl start {name}")),
        ServerState::Failed => Some(format!("mcpctl restart {name}")),
        // The error names the secret; setting it restarts the servers that use it.
        ServerState::SecretMissing => Some(
            "mcpctl secret set NAME   (NAME as the error says; the server starts once it is set)"
                .to_owned(),
        ),
        // A new state that needs the user gets its arm here.
        _ => None,
    }
}

/// The line of a failing server's stderr that says why it failed: an `Error:` line (Node's
/// `Error: Cannot find module ...`), a Python exception, a panic, rather than the last line
/// (`Node.js v20.x`, a stack frame).
pub fn cause(stderr: &[String]) -> Option<&str> {
    const NOISE: [&str; 3] = ["Node.js v", "at ", "^"];
    let meaningful = |line: &&String| {
        let t = line.trim();
        !t.is_empty() && !NOISE.iter().any(|n| t.starts_with(n)) && !t.starts_with("code:")
    };
    let marked = stderr.iter().rev().find(|line| {
        let t = line.trim_start();
        t.starts_with("Error")
            || t.contains("Error:")
            || t.contains("Exception")
            || t.starts_with("error")
            || t.contains("panicked at")
            || t.starts_with("FATAL")
            || t.starts_with("fatal")
    });
    marked
        .or_else(|| stderr.iter().rev().find(meaningful))
        .map(|l| l.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_module_errors_win_over_the_version_line() {
        let tail: Vec<String> = [
            "node:internal/modules/cjs/loader:1228",
            "  throw err;",
            "  ^",
            "",
            "Error: Cannot find module '/x/index.js'",
            "    at Module._resolveFilename (node:internal/modules/cjs/loader:1225:15)",
            "  code: 'MODULE_NOT_FOUND',",
            "  requireStack: []",
            "}",
            "",
            "Node.js v20.20.2",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            cause(&tail),
            Some("Error: Cannot find module '/x/index.js'")
        );
    }

    #[test]
    fn without_an_error_line_the_last_meaningful_line_is_the_cause() {
        let tail: Vec<String> = ["starting", "listening failed", "Node.js v20.1.0"]
            .map(String::from)
            .to_vec();
        assert_eq!(cause(&tail), Some("listening failed"));
        assert_eq!(cause(&[]), None);
    }
}
