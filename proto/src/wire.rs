//! The socket hello, welcome and control messages.
//!
//! Every enum here tolerates variants it does not know (`#[serde(other)]`) and every struct
//! tolerates unknown fields, so that a newer daemon and an older shim (or the reverse) still
//! understand each other as far as they can. Never add `deny_unknown_fields`.

use serde::{Deserialize, Serialize};

/// The socket protocol version. Bump by hand when a change is not backward compatible.
pub const PROTOCOL_VERSION: u32 = 1;

/// The profile a shim attaches to when it names none.
pub const DEFAULT_PROFILE: &str = "default";

/// The first line a peer sends on the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Hello {
    /// An MCP client, through `mcp-shim`, that wants a session.
    Attach(AttachHello),
    /// `mcpctl`, for status and administration.
    Control(ControlHello),
    /// An operation this build does not know (a newer peer).
    #[serde(other)]
    Unknown,
}

/// `{"op":"attach","v":1,"profile":"default","client":{...}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachHello {
    /// The peer's [`PROTOCOL_VERSION`].
    pub v: u32,
    /// Which profile's servers the session sees.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Facts about the process that launched the shim, for status and logs.
    #[serde(default)]
    pub client: ClientProcess,
    /// Set when the shim re-attaches after losing its connection (the daemon restarted): the
    /// session continues as already initialized, without the client noticing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// The shim asks to hand the client's stdio to the daemon after the welcome (`--direct`,
    /// see [`crate::direct`]); it does so only if the welcome says `direct` too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    /// With `direct`: the shim takes the client's stdio back when the daemon stops on purpose
    /// (a [`crate::direct::Handback`] instead of the end line), and resumes the session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handback: bool,
    /// With `direct`, to a daemon whose welcome says `handback`: bytes of the client's input
    /// (handed back by the previous daemon, not handled yet) that follow the handover byte on
    /// the socket, ahead of what is still in the client's pipe.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub direct_input: u64,
    /// A relaying shim offers a pair of pipes for the session's data (docs/SHIM.md, "The
    /// relay's pipes"); it hands them over after a welcome that says `pipes` too, and relays
    /// over the socket otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pipes: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a re-attaching shim hands the daemon so that the session continues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The `params` of the client's original `initialize` request, as the client sent them.
    #[serde(default)]
    pub initialize: serde_json::Value,
    /// Whether the client had sent `notifications/initialized`.
    #[serde(default = "yes")]
    pub initialized: bool,
    /// The session id the shim had before, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session: Option<u64>,
}

fn yes() -> bool {
    true
}

/// `{"op":"control","v":1}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlHello {
    /// The peer's [`PROTOCOL_VERSION`].
    pub v: u32,
}

/// What the shim knows about the MCP client that launched it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientProcess {
    /// Pid of the shim's parent (the MCP client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Working directory the client started the shim in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Version of the shim itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_version: Option<String>,
}

fn default_profile() -> String {
    DEFAULT_PROFILE.to_owned()
}

/// The daemon's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HelloReply {
    /// The hello was accepted.
    Welcome(Welcome),
    /// The hello was refused; `message` says why and what to do.
    Error(HelloError),
    /// A reply this build does not know (a newer daemon).
    #[serde(other)]
    Unknown,
}

/// `{"op":"welcome","v":1,"daemon":"0.1.0","session":7}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The daemon's [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The daemon's package version.
    #[serde(default)]
    pub daemon: String,
    /// The session id, for attach hellos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// The daemon takes the client's stdio the direct hello offered (an older daemon leaves
    /// this out, and the shim relays).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    /// The daemon hands the client's stdio back to a shim that announced `handback` when it
    /// stops on purpose, and reads the hello's `direct_input` after the handover byte.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handback: bool,
    /// The daemon takes the pipes the hello offered: the shim hands them over next and the
    /// session's data goes over them (an older daemon leaves this out: the socket carries it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pipes: bool,
}

/// `{"op":"error","v":1,"message":"..."}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloError {
    /// The daemon's [`PROTOCOL_VERSION`].
    pub v: u32,
    /// What went wrong, for a human.
    pub message: String,
}

/// One request on a control connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// The daemon, its servers and sessions.
    Status,
    /// Re-read the configuration file and apply what changed.
    Reload,
    /// Stop the daemon as SIGTERM would.
    Shutdown,
    /// Stop one server and start it again at once (also leaves `crash-loop`).
    Restart {
        /// The server's name.
        server: String,
    },
    /// Stop one server and keep it stopped until `start`.
    Stop {
        /// The server's name.
        server: String,
    },
    /// Start a stopped, idle or crash-looping server.
    Start {
        /// The server's name.
        server: String,
    },
    /// Log in to a remote server with OAuth. The daemon answers
    /// [`ControlResponse::LoginStarted`] with the URL to open, and later, on the same
    /// connection, [`ControlResponse::LoginFinished`]. Closing the connection before that
    /// cancels the login.
    Login {
        /// The server's name.
        server: String,
        /// The user will paste the redirected URL back ([`ControlRequest::LoginPaste`]) instead
        /// of a local browser reaching the daemon's callback (both work either way).
        #[serde(default)]
        no_browser: bool,
    },
    /// The URL the browser was redirected to at the end of a login, pasted by the user.
    /// Answered with `ok` or `error` (a wrong URL can be pasted again).
    LoginPaste {
        /// The server's name.
        server: String,
        /// The full redirected URL (`http://127.0.0.1:PORT/callback?code=...&state=...`).
        redirect_url: String,
    },
    /// Forget a remote server's tokens and revoke them where the server supports it.
    Logout {
        /// The server's name.
        server: String,
    },
    /// Recent log lines, then (with `follow`) new ones as they are logged.
    Logs {
        /// Only lines about this upstream server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        /// Keep the connection open and send new lines as they come.
        #[serde(default)]
        follow: bool,
        /// At most this many of the most recent lines.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Pinned tool and prompt definitions of a server that changed (or are new), old and new.
    ToolsDiff {
        /// The server's name.
        server: String,
    },
    /// Accept a server's changed and new definitions (all, or one tool or prompt) and pin them.
    ToolsApprove {
        /// The server's name.
        server: String,
        /// Only this tool or prompt (its name on the server, or namespaced).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tool: Option<String>,
    },
    /// Poisoning checks over the definitions of one server or all.
    ToolsCheck {
        /// Only this server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
    },
    /// Every MCP message as it happens, until the connection closes.
    Traffic {
        /// Only messages about this server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        /// Only this session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<u64>,
        /// Whole messages (secrets redacted), not only summaries.
        #[serde(default)]
        full: bool,
    },
    /// Calls, errors and latency per server and tool since the daemon started.
    Stats,
    /// A command this build does not know (a newer `mcpctl`).
    /// `mcpctl secret set`: stores a secret's value (for one profile, or the default). The
    /// value travels to the daemon only; no reply ever carries it back.
    SecretSet {
        /// The secret's name, as in `${secret:NAME}`.
        name: String,
        /// The profile the value is for; `None`: the default value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        /// The value.
        value: SecretText,
    },
    /// `mcpctl secret list`: names, profiles, when set, which servers use each; never values.
    SecretList,
    /// `mcpctl secret rm`: forgets a secret (one profile's value, or the default one).
    SecretRemove {
        /// The secret's name.
        name: String,
        /// The profile whose value goes; `None`: the default value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    #[serde(other)]
    Unknown,
}

/// The answer to one [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum ControlResponse {
    /// Answer to [`ControlRequest::Status`].
    Status(DaemonStatus),
    /// Answer to [`ControlRequest::Reload`].
    Reloaded(ReloadReport),
    /// Answer to [`ControlRequest::Logs`]: one batch of lines (several replies may follow).
    Logs(LogsReply),
    /// The request was carried out and has nothing to report.
    Ok,
    /// The request failed; nothing was changed.
    Error {
        /// What went wrong and what to do about it.
        message: String,
        /// Why, for programs (`mcpctl` decides by it, never by the message).
        #[serde(
            default,
            skip_serializing_if = "crate::control_error::ErrorCode::is_failed"
        )]
        code: crate::control_error::ErrorCode,
    },
    /// A login started: open `url` in a browser. [`ControlResponse::LoginFinished`] follows.
    LoginStarted {
        /// The authorization URL.
        url: String,
    },
    /// A login ended.
    LoginFinished {
        /// Whether the server is now logged in.
        ok: bool,
        /// What happened, for the user.
        message: String,
    },
    /// Done, with a message for the user (`logout`).
    Done {
        /// What was done.
        message: String,
    },
    /// Answer to [`ControlRequest::ToolsDiff`].
    ToolsDiff(crate::observe::PinDiff),
    /// Answer to [`ControlRequest::ToolsCheck`].
    ToolsCheck(crate::observe::CheckReport),
    /// Answer to [`ControlRequest::Traffic`]: one batch (more follow until the connection ends).
    Traffic(crate::observe::TrafficReply),
    /// Answer to [`ControlRequest::Stats`].
    Stats(crate::observe::StatsReport),
    /// The request named a server the daemon does not know (`restart`, `stop`, `start`,
    /// `logs`, `login`, `logout`): a machine-readable error, so clients need not match text.
    NoSuchServer {
        /// The name that was asked for.
        server: String,
        /// Every server the daemon knows, in name order.
        #[serde(default)]
        known: Vec<String>,
    },
    /// A reply this build does not know (a newer daemon).
    /// The stored secrets (`secret-list`), without their values.
    Secrets {
        /// One entry per secret name stored or referenced.
        secrets: Vec<SecretInfo>,
    },
    #[serde(other)]
    Unknown,
}

impl ControlResponse {
    /// A failure with `message` (code [`crate::control_error::ErrorCode::Failed`]).
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
            code: crate::control_error::ErrorCode::Failed,
        }
    }

    /// A failure with another code.
    pub fn error_with(code: crate::control_error::ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
            code,
        }
    }
}

/// The daemon as `mcpctl status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Package version of the daemon.
    pub version: String,
    /// Its [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// Process id of the daemon.
    pub pid: u32,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// The configuration file in use, whether or not it exists.
    #[serde(default)]
    pub config_path: Option<String>,
    /// Whether that file existed when it was last read.
    #[serde(default)]
    pub config_loaded: bool,
    /// Why the file could not be used when the daemon started; it then runs with no servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// With `config_error`: what runs instead of the file, e.g. the last configuration that
    /// loaded (kept under the state directory). Absent: no servers run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_fallback: Option<String>,
    /// Upstream servers, in name order.
    #[serde(default)]
    pub servers: Vec<ServerStatus>,
    /// Attached client sessions, oldest first.
    #[serde(default)]
    pub sessions: Vec<SessionStatus>,
    /// Where OAuth logins are kept: `file` (encrypted, key in a 0600 file) or `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_store: Option<String>,
    /// Where servers' names, resources or templates overlap and how mcpd routes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routing_overlaps: Vec<String>,
}

/// A remote server's OAuth state as `mcpctl status` shows it. Never a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStatus {
    /// Whether the daemon holds tokens for it.
    #[serde(default)]
    pub logged_in: bool,
    /// When the access token expires (Unix seconds), if the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The granted scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The authorization server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Whether it can be renewed without the user (a refresh token is held).
    #[serde(default)]
    pub refreshable: bool,
    /// Whether a login is waiting for the browser.
    #[serde(default)]
    pub login_pending: bool,
}

/// Lifecycle state of one upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerState {
    /// Its process is starting or the MCP handshake is under way.
    Starting,
    /// Handshake done; requests are served.
    Ready,
    /// A remote server wants credentials: `mcpctl login NAME`.
    AuthRequired,
    /// It failed and will not be started again until reload or restart.
    Failed,
    /// It is being stopped.
    Stopping,
    /// It is not running.
    Stopped,
    /// It failed again and again right after starting; it stays down until `mcpctl restart`.
    CrashLoop,
    /// Stopped after its idle timeout; the next request starts it again.
    Idle,
    /// Not started: its definition in the configuration file has mistakes (`last_error` names
    /// each with its JSON path); fix the file and run `mcpctl reload`.
    ConfigError,
    /// Its definition references a secret that is not stored (`mcpctl secret set NAME`).
    SecretMissing,
    /// A state this build does not know (a newer daemon).
    #[serde(other)]
    Unknown,
}

impl ServerState {
    /// The word status tables print.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::AuthRequired => "auth-required",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::CrashLoop => "crash-loop",
            Self::Idle => "idle",
            Self::ConfigError => "config-error",
            Self::SecretMissing => "secret-missing",
            Self::Unknown => "unknown",
        }
    }
}

/// One upstream server as `mcpctl status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Its name in `mcpServers`.
    pub name: String,
    /// `stdio`, `http` (streamable HTTP) or `sse` (the legacy HTTP+SSE transport).
    pub transport: String,
    /// The URL of a remote server, without user info and query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The state of a remote server's HTTP session (never its id or credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Lifecycle state.
    pub state: ServerState,
    /// Pid of its process (the process group leader), while running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Number of tools it offers.
    #[serde(default)]
    pub tools: usize,
    /// How many times it has been started again after the first start.
    #[serde(default)]
    pub restarts: u32,
    /// The last error, if it failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// `name version` from its `initialize` result.
    #[serde(default)]
    pub server_info: Option<String>,
    /// How its process last ended ("exited with status 1", "killed by signal 9 (SIGKILL)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// The last lines it wrote to stderr.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stderr_tail: Vec<String>,
    /// OAuth state, for remote servers that log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthStatus>,
    /// What the user should look at: definitions changed since pinned, poisoning findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Sandbox, limits and resource use of a running stdio server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contain: Option<ContainStatus>,
    /// Milliseconds since it entered its current state (how long it has been starting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_ms: Option<u64>,
}

/// A stdio server's sandbox, limits and resource use (`mcpctl status`, `mcpctl top`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainStatus {
    /// The sandbox in force: `landlock ABI 7, protect (12 paths protected)`, `off (...)`,
    /// `none: this kernel has no Landlock; runs unsandboxed`.
    #[serde(default)]
    pub sandbox: String,
    /// Limits in force and how: `memory 1G (cgroup)`, `openFiles 4096 (rlimit)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<String>,
    /// Configured limits that are not enforced, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_enforced: Vec<String>,
    /// Memory of its whole tree (cgroup `memory.current`, else the sum of resident sets).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPU time of its whole tree (cgroup, else the live processes'), in milliseconds.
    #[serde(default)]
    pub cpu_ms: Option<u64>,
    /// Processes in its tree.
    #[serde(default)]
    pub processes: Option<u32>,
    /// Requests mcpd has sent it since it was configured (for a rate in `mcpctl top`).
    #[serde(default)]
    pub requests: u64,
}

/// One attached client session as `mcpctl status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// Daemon-assigned session id.
    pub id: u64,
    /// Profile it attached to.
    pub profile: String,
    /// `clientInfo.name` from its `initialize`, once it has sent one.
    #[serde(default)]
    pub client_name: Option<String>,
    /// `clientInfo.version`.
    #[serde(default)]
    pub client_version: Option<String>,
    /// Pid of the MCP client process (the shim's parent).
    #[serde(default)]
    pub client_pid: Option<u32>,
    /// Milliseconds since it attached.
    pub attached_ms: u64,
    /// Requests from it still waiting for an upstream.
    #[serde(default)]
    pub in_flight: usize,
    /// The daemon reads and writes the client's own stdin and stdout (`mcp-shim --direct`,
    /// docs/SHIM.md); false when the shim relays them (or the daemon predates the field).
    #[serde(default)]
    pub direct: bool,
}

/// One batch of log lines for `mcpctl logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsReply {
    /// The lines, oldest first.
    #[serde(default)]
    pub lines: Vec<LogLine>,
    /// More batches of the recent lines follow at once.
    #[serde(default)]
    pub more: bool,
    /// A follower fell behind and this many lines were skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

/// One log line of the daemon or of an upstream server's stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Increases by one per line over the daemon's life; a gap means lines were dropped.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The module that logged it (`mcpd::upstream` for a server's own stderr).
    #[serde(default)]
    pub target: String,
    /// The upstream server it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The client session it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// The message, followed by the event's other fields as `key=value`.
    pub message: String,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The configuration file that was read.
    pub config_path: String,
    /// Servers started because they are new.
    #[serde(default)]
    pub added: Vec<String>,
    /// Servers stopped because they are gone.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Servers restarted because their definition changed.
    #[serde(default)]
    pub changed: Vec<String>,
    /// Servers left running as they were.
    #[serde(default)]
    pub unchanged: Vec<String>,
    /// Warnings about the configuration (unknown keys and the like).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Servers left out because their definitions have mistakes (`name: path: message`); the
    /// others were applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_hello_round_trips() {
        let hello = Hello::Attach(AttachHello {
            v: PROTOCOL_VERSION,
            profile: "work".into(),
            client: ClientProcess {
                pid: Some(42),
                cwd: Some("/home/u".into()),
                shim_version: Some("0.1.0".into()),
            },
            resume: Some(Resume {
                initialize: serde_json::json!({"protocolVersion": "2025-11-25", "clientInfo": {"name": "c"}}),
                initialized: true,
                previous_session: Some(3),
            }),
            direct: false,
            handback: false,
            direct_input: 0,
            pipes: false,
        });
        let line = serde_json::to_string(&hello).unwrap();
        assert!(line.starts_with(r#"{"op":"attach","v":1"#), "{line}");
        assert_eq!(serde_json::from_str::<Hello>(&line).unwrap(), hello);
    }

    #[test]
    fn older_peer_without_optional_fields_is_understood() {
        let hello: Hello = serde_json::from_str(r#"{"op":"attach","v":1}"#).unwrap();
        let Hello::Attach(a) = hello else {
            panic!("not an attach: {hello:?}")
        };
        assert_eq!(a.profile, DEFAULT_PROFILE);
        assert_eq!(a.client, ClientProcess::default());
    }

    #[test]
    fn newer_peer_with_extra_fields_is_understood() {
        let hello: Hello = serde_json::from_str(
            r#"{"op":"attach","v":2,"profile":"p","client":{"pid":1,"tty":"/dev/pts/1"},"resume":{"x":1}}"#,
        )
        .unwrap();
        let Hello::Attach(a) = hello else {
            panic!("not an attach: {hello:?}")
        };
        assert_eq!((a.v, a.profile.as_str(), a.client.pid), (2, "p", Some(1)));

        let reply: HelloReply =
            serde_json::from_str(r#"{"op":"welcome","v":3,"daemon":"9.0.0","features":["x"]}"#)
                .unwrap();
        assert!(matches!(reply, HelloReply::Welcome(Welcome { v: 3, .. })));
    }

    #[test]
    fn unknown_operations_and_replies_decode_to_unknown() {
        assert_eq!(
            serde_json::from_str::<Hello>(r#"{"op":"teleport","v":9}"#).unwrap(),
            Hello::Unknown
        );
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"cmd":"dance"}"#).unwrap(),
            ControlRequest::Unknown
        );
        assert_eq!(
            serde_json::from_str::<ControlResponse>(r#"{"reply":"hologram","x":1}"#).unwrap(),
            ControlResponse::Unknown
        );
        let s: ServerStatus = serde_json::from_str(
            r#"{"name":"a","transport":"carrier-pigeon","state":"hibernating","future":true}"#,
        )
        .unwrap();
        assert_eq!(s.state, ServerState::Unknown);
    }

    #[test]
    fn login_messages_and_auth_status_tolerate_old_and_new_peers() {
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"cmd":"login","server":"n"}"#).unwrap(),
            ControlRequest::Login {
                server: "n".into(),
                no_browser: false
            }
        );
        let finished = ControlResponse::LoginFinished {
            ok: true,
            message: "logged in".into(),
        };
        let line = serde_json::to_string(&finished).unwrap();
        assert_eq!(
            line,
            r#"{"reply":"login-finished","ok":true,"message":"logged in"}"#
        );
        let s: ServerStatus = serde_json::from_str(
            r#"{"name":"a","transport":"http","state":"ready","auth":{"logged_in":true,"expires_at":5,"scopes":["r"],"future":1}}"#,
        )
        .unwrap();
        let auth = s.auth.unwrap();
        assert!(auth.logged_in && !auth.refreshable);
        assert_eq!(
            (auth.expires_at, auth.scopes),
            (Some(5), vec!["r".to_owned()])
        );
    }

    #[test]
    fn control_messages_round_trip() {
        for req in [
            ControlRequest::Status,
            ControlRequest::Reload,
            ControlRequest::Shutdown,
            ControlRequest::Login {
                server: "n".into(),
                no_browser: true,
            },
            ControlRequest::LoginPaste {
                server: "n".into(),
                redirect_url: "http://127.0.0.1:1/callback?code=c&state=s".into(),
            },
            ControlRequest::Logout { server: "n".into() },
        ] {
            let line = serde_json::to_string(&req).unwrap();
            assert_eq!(serde_json::from_str::<ControlRequest>(&line).unwrap(), req);
        }
        let resp = ControlResponse::error("bad");
        let line = serde_json::to_string(&resp).unwrap();
        assert_eq!(line, r#"{"reply":"error","message":"bad"}"#);
        assert_eq!(
            serde_json::from_str::<ControlResponse>(&line).unwrap(),
            resp
        );
        // A code other than `failed` travels; an unknown one (a newer daemon) still reads.
        let resp = ControlResponse::error_with(
            crate::control_error::ErrorCode::UnknownCommand,
            "what is that",
        );
        let line = serde_json::to_string(&resp).unwrap();
        assert_eq!(
            line,
            r#"{"reply":"error","message":"what is that","code":"unknown-command"}"#
        );
        assert_eq!(
            serde_json::from_str::<ControlResponse>(
                r#"{"reply":"error","message":"m","code":"new"}"#
            )
            .unwrap(),
            ControlResponse::error_with(crate::control_error::ErrorCode::Other, "m")
        );
    }
}

/// A secret's value on its way from `mcpctl` to the daemon: `Debug` never shows it, and the
/// buffer is overwritten with zeros when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value (to move into a `secrecy` type at once).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Takes the value out, leaving an empty string.
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Drop for SecretText {
    fn drop(&mut self) {
        // Overwrite the whole allocation, not just the length; `black_box` keeps the writes
        // from being optimised away (best effort, std only: the shim links this crate).
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.resize(bytes.capacity(), 0);
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// One secret as `mcpctl secret list` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// The stored values: `None` is the default value, `Some(p)` profile `p`'s; each with
    /// when it was set (Unix seconds).
    #[serde(default)]
    pub values: Vec<SecretValueInfo>,
    /// Servers whose definition references it.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// One stored value of a secret (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretValueInfo {
    /// The profile it is for; `None`: the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// When it was set, Unix seconds.
    pub set_at: u64,
}
