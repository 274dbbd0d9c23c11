//! The configuration parser (the mcpd-config crate, config/src): JSON text to a validated `Config`, with every
//! `${VAR}` expanded, OAuth settings collected and errors naming their JSON path.
//!
//! Beyond "never panics": an accepted configuration is self-consistent (every profile names
//! a defined server, usable or set aside with its reasons, and it does not differ from itself),
//! and a refused one says where and why.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mcpd_config::{self as config, Diff};

/// A small environment: set, empty and unset variables.
fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/u".into()),
        "EMPTY" => Some(String::new()),
        "TOKEN" => Some("Bearer t0k3n".into()),
        "URL" => Some("https://example.com/mcp".into()),
        "NL" => Some("a\nb".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/fuzz/config.json");
    match config::parse(file, text, env) {
        Ok(loaded) => {
            let config = &loaded.config;
            // A server whose definition has a mistake is set aside (`broken`), not dropped.
            for (name, profile) in &config.profiles {
                for server in &profile.servers {
                    assert!(
                        config.servers.contains_key(server) || config.broken.contains_key(server),
                        "profile {name} names a missing server {server}"
                    );
                }
            }
            for (name, problem) in &config.broken {
                assert!(
                    !config.servers.contains_key(name),
                    "{name} both usable and broken"
                );
                assert!(
                    !problem.errors.is_empty(),
                    "{name} is broken without a reason"
                );
            }
            let all = config.profile_servers(mcpd_proto::DEFAULT_PROFILE);
            assert!(all.is_some(), "the default profile always exists");
            let diff = Diff::between(config, config);
            assert!(diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty());
            assert_eq!(diff.unchanged.len(), config.servers.len());
            for (name, spec) in &config.servers {
                assert!(!name.is_empty());
                // What status and logs show of a server never panics either.
                let _ = (spec.describe(), spec.transport_name());
                if let Some(http) = spec.http() {
                    let _ = http.display_url();
                }
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("/fuzz/config.json"), "{shown}");
            assert!(!e.message.is_empty(), "an error says what is wrong");
        }
    }
});
