//! `mcpctl import`, `install-client`, `doctor`, `completions` and `man` against sample files in
//! each client's real format, in a temporary HOME (the real one is never touched).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

const CLAUDE_DESKTOP: &str = r#"{
  "mcpServers": {
    "filesystem": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/u/Desktop"]
    },
    "github": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-github"],
      "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}
    }
  },
  "globalShortcut": "Ctrl+Space"
}
"#;

const CLAUDE_CODE: &str = r#"{
  "numStartups": 12,
  "theme": "dark",
  "mcpServers": {
    "sentry": {"type": "stdio", "command": "npx", "args": ["-y", "@sentry/mcp-server"], "env": {}}
  },
  "projects": {
    "/home/u/src/app": {
      "allowedTools": [],
      "mcpServers": {
        "postgres": {"type": "stdio", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-postgres", "postgresql://localhost/app"], "env": {}}
      },
      "hasTrustDialogAccepted": true
    },
    "/home/u/src/other": {"allowedTools": [], "mcpServers": {}}
  }
}
"#;

const CURSOR: &str = r#"{
  "mcpServers": {
    "memory": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-memory"]
    },
    "linear": {
      "url": "https://mcp.linear.app/mcp"
    }
  }
}
"#;

const VSCODE: &str = r#"// VS Code user MCP configuration
{
  "inputs": [
    {"type": "promptString", "id": "perplexity-key", "description": "Perplexity API Key", "password": true}
  ],
  "servers": {
    // Playwright for browser automation
    "playwright": {
      "type": "stdio",
      "command": "npx",
      "args": ["@playwright/mcp@latest"], /* pinned later */
    },
    "perplexity": {
      "type": "stdio",
      "command": "npx",
      "args": ["-y", "server-perplexity-ask"],
      "env": {"PERPLEXITY_API_KEY": "${input:perplexity-key}"}
    },
    "fetch": {
      "type": "stdio",
      "command": "uvx",
      "args": ["mcp-server-fetch"],
      "env": {"HOME_DIR": "${env:HOME}"},
    },
  },
}
"#;

const WINDSURF: &str = r#"{
  "mcpServers": {
    "git": {
      "command": "uvx",
      "args": ["mcp-server-git", "--repository", "/home/u/src/app"],
      "disabled": false
    },
    "remote": {
      "serverUrl": "https://mcp.example.com/mcp"
    }
  }
}
"#;

/// A temporary HOME with XDG directories, and helpers to run mcpctl in it.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mcpctl-home-")
            .tempdir()
            .unwrap();
        fs::create_dir_all(dir.path().join(".config")).unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self) -> PathBuf {
        self.path(".config/mcpd/config.json")
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn mcpctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mcpctl"))
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.path(".config"))
            .env("XDG_STATE_HOME", self.path(".local/state"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("PATH", "/usr/bin:/bin")
            .env("MCPCTL_SYSTEMCTL", "none")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.mcpctl(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "mcpctl {args:?} failed:\n{text}");
        text
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.mcpctl(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "mcpctl {args:?} succeeded:\n{text}");
        text
    }

    fn servers(&self) -> Value {
        let v: Value = serde_json::from_str(&fs::read_to_string(self.config()).unwrap()).unwrap();
        v["mcpServers"].clone()
    }

    fn backups(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(self.path(".config/mcpd"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".bak-"))
            .collect();
        found.sort();
        found
    }
}

fn location(client: &str) -> &'static str {
    match client {
        "claude-desktop" => ".config/Claude/claude_desktop_config.json",
        "claude-code" => ".claude.json",
        "cursor" => ".cursor/mcp.json",
        "vscode" => ".config/Code/User/mcp.json",
        "windsurf" => ".codeium/windsurf/mcp_config.json",
        _ => unreachable!(),
    }
}

fn sample(client: &str) -> &'static str {
    match client {
        "claude-desktop" => CLAUDE_DESKTOP,
        "claude-code" => CLAUDE_CODE,
        "cursor" => CURSOR,
        "vscode" => VSCODE,
        "windsurf" => WINDSURF,
        _ => unreachable!(),
    }
}

const CLIENTS: [&str; 5] = [
    "claude-desktop",
    "claude-code",
    "cursor",
    "vscode",
    "windsurf",
];

#[test]
fn import_reads_each_clients_standard_location_and_format() {
    let expected: [(&str, Value); 5] = [
        (
            "claude-desktop",
            json!({
                "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/u/Desktop"]},
                "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"], "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}}
            }),
        ),
        (
            "claude-code",
            json!({
                "sentry": {"type": "stdio", "command": "npx", "args": ["-y", "@sentry/mcp-server"], "env": {}},
                "postgres": {"type": "stdio", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-postgres", "postgresql://localhost/app"], "env": {}}
            }),
        ),
        (
            "cursor",
            json!({
                "memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"]},
                "linear": {"url": "https://mcp.linear.app/mcp"}
            }),
        ),
        (
            "vscode",
            // perplexity uses ${input:...}, which only VS Code can resolve: skipped.
            json!({
                "playwright": {"type": "stdio", "command": "npx", "args": ["@playwright/mcp@latest"]},
                "fetch": {"type": "stdio", "command": "uvx", "args": ["mcp-server-fetch"], "env": {"HOME_DIR": "${HOME}"}}
            }),
        ),
        (
            "windsurf",
            json!({
                "git": {"command": "uvx", "args": ["mcp-server-git", "--repository", "/home/u/src/app"], "disabled": false},
                "remote": {"url": "https://mcp.example.com/mcp", "type": "http"}
            }),
        ),
    ];
    for (client, servers) in expected {
        let home = Home::new();
        home.write(location(client), sample(client));
        let out = home.ok(&["import", "--from", client]);
        assert_eq!(home.servers(), servers, "{client}:\n{out}");
        // A new configuration file is private.
        let mode = fs::metadata(home.config()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{client}");
        if client == "vscode" {
            assert!(
                out.contains("perplexity") && out.contains("${input:perplexity-key}"),
                "{out}"
            );
        }
    }
}

#[test]
fn import_merges_into_an_existing_configuration_keeping_its_other_keys_and_a_backup() {
    let home = Home::new();
    let original = "{\n  \"mcpd\": {\"separator\": \"__\"},\n  \"mcpServers\": {\n    \"mine\": {\"command\": \"my-server\", \"args\": [\"1.50\"]}\n  },\n  \"profiles\": {\"work\": {\"servers\": [\"mine\"]}},\n  \"futureKey\": 1.50\n}\n";
    home.write(".config/mcpd/config.json", original);
    home.write(location("cursor"), CURSOR);
    home.ok(&["import", "--from", "cursor"]);
    let text = fs::read_to_string(home.config()).unwrap();
    assert!(
        text.starts_with("{\n  \"mcpd\": {\"separator\": \"__\"},\n  \"mcpServers\": {\n    \"mine\": {\"command\": \"my-server\", \"args\": [\"1.50\"]},\n    \"memory\": {"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "  \"profiles\": {\"work\": {\"servers\": [\"mine\"]}},\n  \"futureKey\": 1.50\n}\n"
        ),
        "{text}"
    );
    let backups = home.backups();
    assert_eq!(backups.len(), 1);
    assert_eq!(fs::read_to_string(&backups[0]).unwrap(), original);

    // Importing again changes nothing and keeps no second backup.
    let out = home.ok(&["import", "--from", "cursor"]);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(home.backups().len(), 1);
}

#[test]
fn import_reports_conflicts_and_writes_nothing_unless_told_how_to_resolve_them() {
    let home = Home::new();
    let original = "{\"mcpServers\": {\"memory\": {\"command\": \"other-memory\"}}}\n";
    home.write(".config/mcpd/config.json", original);
    home.write(location("cursor"), CURSOR);

    let out = home.fails(&["import", "--from", "cursor"]);
    assert!(
        out.contains("memory") && out.contains("--force") && out.contains("--rename"),
        "{out}"
    );
    assert_eq!(fs::read_to_string(home.config()).unwrap(), original);
    assert!(home.backups().is_empty());

    home.ok(&["import", "--from", "cursor", "--rename"]);
    let servers = home.servers();
    assert_eq!(servers["memory"]["command"], "other-memory");
    assert_eq!(servers["memory-cursor"]["command"], "npx");

    home.write(".config/mcpd/config.json", original);
    home.ok(&["import", "--from", "cursor", "--force"]);
    assert_eq!(home.servers()["memory"]["command"], "npx");
    assert!(home.servers().get("memory-cursor").is_none());
}

#[test]
fn import_dry_run_and_import_from_a_path() {
    let home = Home::new();
    let file = home.write("elsewhere/servers.json", VSCODE);
    let out = home.ok(&["import", "--from", file.to_str().unwrap(), "--dry-run"]);
    assert!(
        out.contains("+ playwright") && out.contains("dry run"),
        "{out}"
    );
    assert!(!home.config().exists());
    home.ok(&["import", "--from", file.to_str().unwrap()]);
    assert_eq!(home.servers()["playwright"]["command"], "npx");
}

#[test]
fn import_of_a_missing_client_names_the_places_it_looked() {
    let home = Home::new();
    let out = home.fails(&["import", "--from", "windsurf"]);
    assert!(out.contains("mcp_config.json"), "{out}");
}

fn fake_shim(home: &Home) -> PathBuf {
    let shim = home.write("bin/mcp-shim", "#!/bin/sh\n");
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    shim
}

#[test]
fn install_client_points_each_client_at_the_shim_and_undo_restores_it_byte_for_byte() {
    for client in CLIENTS {
        let home = Home::new();
        let file = home.write(location(client), sample(client));
        let shim = fake_shim(&home);
        home.ok(&["import", "--from", client]);
        let mut args = vec!["install-client", client, "--shim", shim.to_str().unwrap()];
        if client == "vscode" {
            // Its `perplexity` needs ${input:...} and was not imported: dropping it is explicit.
            let refused = home.fails(&args);
            assert!(refused.contains("perplexity"), "{refused}");
            args.push("--force");
        }
        let out = home.ok(&args);
        assert!(out.contains("--undo"), "{out}");

        let text = fs::read_to_string(&file).unwrap();
        let json = mcpctl_jsonc(&text);
        let key = if client == "vscode" {
            "servers"
        } else {
            "mcpServers"
        };
        let servers = json[key].as_object().unwrap();
        assert_eq!(
            servers.keys().collect::<Vec<_>>(),
            ["mcpd"],
            "{client}: {text}"
        );
        assert_eq!(servers["mcpd"]["command"], shim.to_str().unwrap());
        match client {
            "vscode" => {
                assert!(
                    text.starts_with("// VS Code user MCP configuration\n{"),
                    "{text}"
                );
                assert!(json["inputs"].is_array());
            }
            "claude-code" => {
                assert_eq!(json["numStartups"], 12);
                assert_eq!(json["projects"]["/home/u/src/app"]["mcpServers"], json!({}));
                assert_eq!(
                    json["projects"]["/home/u/src/app"]["hasTrustDialogAccepted"],
                    true
                );
            }
            "claude-desktop" => assert_eq!(json["globalShortcut"], "Ctrl+Space"),
            _ => {}
        }

        // Installing twice is refused: the backup would be overwritten.
        let again = home.fails(&["install-client", client, "--shim", shim.to_str().unwrap()]);
        assert!(again.contains("--undo"), "{again}");

        home.ok(&["install-client", client, "--undo"]);
        assert_eq!(
            fs::read(&file).unwrap(),
            sample(client).as_bytes(),
            "{client}"
        );
        let backup_name = format!(
            "{}.mcpd-backup",
            file.file_name().unwrap().to_string_lossy()
        );
        assert!(!file.with_file_name(backup_name).exists());
    }
}

#[test]
fn install_client_refuses_to_drop_servers_mcpd_does_not_have() {
    let home = Home::new();
    let file = home.write(location("cursor"), CURSOR);
    let shim = fake_shim(&home);
    let out = home.fails(&["install-client", "cursor", "--shim", shim.to_str().unwrap()]);
    assert!(
        out.contains("memory") && out.contains("mcpctl import --from cursor"),
        "{out}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), CURSOR);
}

#[test]
fn undo_without_a_backup_is_an_error() {
    let home = Home::new();
    home.write(location("cursor"), CURSOR);
    let out = home.fails(&["install-client", "cursor", "--undo"]);
    assert!(out.contains("no backup"), "{out}");
}

/// Parses JSONC the way a lenient client would: drop comment lines and trailing commas.
fn mcpctl_jsonc(text: &str) -> Value {
    let mut clean = String::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        let code = match (code.find("/*"), code.find("*/")) {
            (Some(a), Some(b)) => format!("{}{}", &code[..a], &code[b + 2..]),
            _ => code.to_owned(),
        };
        clean.push_str(&code);
        clean.push('\n');
    }
    let re_trailing = |s: &str| -> String {
        let mut out = String::new();
        let chars: Vec<char> = s.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            if *c == ',' {
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if matches!(next, Some('}' | ']')) {
                    continue;
                }
            }
            out.push(*c);
        }
        out
    };
    serde_json::from_str(&re_trailing(&clean)).unwrap_or_else(|e| panic!("{e}: {clean}"))
}

#[test]
fn doctor_explains_a_missing_command_and_a_daemon_that_is_not_running() {
    let home = Home::new();
    home.write(
        ".config/mcpd/config.json",
        r#"{"mcpServers": {"ok": {"command": "sh"}, "missing": {"command": "no-such-mcp-server-xyz"}}}"#,
    );
    fs::set_permissions(home.config(), fs::Permissions::from_mode(0o600)).unwrap();
    let out = home.fails(&["doctor"]);
    assert!(
        out.contains("ok    server ok: `sh` is /usr/bin/sh") || out.contains("`sh` is /bin/sh"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  server missing: `no-such-mcp-server-xyz` is not found"),
        "{out}"
    );
    // Without systemd the shim starts the daemon: not running yet is normal, and systemd is
    // not suggested where there is no user manager.
    assert!(out.contains("info  mcpd is not running yet"), "{out}");
    assert!(!out.contains("systemctl --user enable"), "{out}");
    assert!(out.contains("no systemd user manager"), "{out}");
}

#[test]
fn doctor_flags_a_world_readable_configuration() {
    let home = Home::new();
    home.write(".config/mcpd/config.json", r#"{"mcpServers": {}}"#);
    fs::set_permissions(home.config(), fs::Permissions::from_mode(0o644)).unwrap();
    let out = home.mcpctl(&["doctor"]);
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("mode 644") && out.contains("chmod 600"),
        "{out}"
    );
    assert_eq!(out.matches("chmod 600").count(), 1, "reported once: {out}");
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let home = Home::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = home.ok(&["completions", shell]);
        assert!(out.contains("install-client"), "{shell}: {out}");
    }
    let dir = home.path("man");
    home.ok(&["man", dir.to_str().unwrap()]);
    let page = fs::read_to_string(dir.join("mcpctl.1")).unwrap();
    assert!(page.contains(".TH mcpctl"), "{page}");
    assert!(Path::new(&dir.join("mcpctl-import.1")).exists());
}
