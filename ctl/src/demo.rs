//! `mcpctl demo`: the first command a newcomer runs.
//!
//! It starts a private mcpd (from the binary next to `mcpctl`) on a temporary runtime and
//! configuration directory, configured with one upstream: `mcpctl example-server`. Then it plays
//! two MCP clients: each launches `mcp-shim` the way Claude Desktop or Cursor would; both are
//! served by one server process (its pid shows it); the server is killed and comes back; mcpd
//! itself is restarted and client A's session goes on; `mcpctl status`; everything stops.
//! Nothing but this workspace's three binaries is needed.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mcpd_proto::line::{Line, MAX_MESSAGE_LINE, read_line_bounded};
use mcpd_proto::paths::{CONFIG_ENV, Paths, SOCKET_ENV, current_uid};
use mcpd_proto::{ControlRequest, ControlResponse};
use serde_json::{Value, json};

use crate::client::ControlClient;
use crate::output::say;
use crate::render;

/// How long mcpd may take to answer on its socket after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the example tools may take to appear in the daemon's catalog.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one MCP request through the shim may take.
const MCP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long mcpd may take to stop its servers and exit after `Shutdown`.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the shim may take to exit after its stdin is closed.
const SHIM_EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The protocol revision the demo client asks for.
const MCP_VERSION: &str = "2025-11-25";
/// Log lines shown when a step fails.
const LOG_TAIL_LINES: usize = 20;

/// Runs the demo; `keep` leaves the temporary directory in place.
pub fn run(keep: bool) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the path of mcpctl itself")?;
    let bins = Binaries::next_to(&exe)?;

    say!("mcpctl demo: a private mcpd with one example server, used through mcp-shim");
    say!("the way an MCP client (Claude Desktop, Cursor, ...) uses it.");
    say!("");
    let dir = DemoDir::create(&exe).context("demo step 1/8 (temporary directory) failed")?;
    say!("[1/8] temporary directory {}", dir.root.path().display());
    say!("      config: {}", dir.config_file.display());

    let outcome = steps(&bins, &dir);
    if outcome.is_err() {
        eprintln!();
        dir.show_log_tail("mcpd", &dir.daemon_log);
        dir.show_log_tail("mcp-shim", &dir.shim_log);
    }
    let root = dir.root.path().to_path_buf();
    let cleanup = if keep {
        let kept = dir.root.keep();
        say!("kept {} (config and logs)", kept.display());
        Ok(())
    } else {
        dir.root
            .close()
            .with_context(|| format!("failed to remove {}", root.display()))
    };
    match outcome {
        Ok(()) => {
            cleanup?;
            if !keep {
                say!("      removed {}", root.display());
            }
            say!("");
            say!("demo finished: every step worked.");
            say!("Next: packaging/install.sh puts mcpd, mcp-shim and mcpctl in ~/.local/bin");
            say!(
                "      (and the systemd user units, when there is a user manager); then put your servers in {}",
                Paths::from_env().config_file.display()
            );
            say!(
                "      or `mcpctl import --from claude-desktop`, and `mcpctl install-client claude-desktop`."
            );
            Ok(())
        }
        Err(e) => {
            if let Err(c) = cleanup {
                eprintln!("mcpctl: {c:#}");
            }
            if !keep {
                eprintln!("(run `mcpctl demo --keep` to keep the configuration and logs)");
            }
            Err(e)
        }
    }
}

/// Steps 2 to 8; the temporary directory is the caller's.
fn steps(bins: &Binaries, dir: &DemoDir) -> Result<()> {
    let began = Instant::now();
    let mut daemon = Daemon::start(bins, dir).context("demo step 2/8 (starting mcpd) failed")?;
    let waited = daemon
        .wait_until_ready()
        .context("demo step 2/8 (waiting for mcpd's socket) failed")?;
    say!(
        "[2/8] started {} (pid {}); it answers on {} after {} ms",
        bins.mcpd.display(),
        daemon.child.id(),
        daemon.socket.display(),
        waited.as_millis()
    );

    let mut a = Shim::start(bins, dir).context("demo step 3/8 (client A) failed")?;
    say!(
        "[3/8] client A: an MCP session through mcp-shim (pid {})",
        a.child.id()
    );
    session(&mut a).context("demo step 3/8 (client A's MCP session) failed")?;

    let mut b = Shim::start(bins, dir).context("demo step 4/8 (client B) failed")?;
    initialize(&mut b, "B").context("demo step 4/8 (client B's initialize) failed")?;
    let pid_a = call_tool(&mut a, "example__pid", &json!({})).context("client A: example__pid")?;
    let pid_b = call_tool(&mut b, "example__pid", &json!({})).context("client B: example__pid")?;
    if pid_a != pid_b {
        bail!(
            "demo step 4/8: clients A and B were served by different processes ({pid_a}, {pid_b})"
        );
    }
    say!(
        "[4/8] client B (mcp-shim pid {}) at the same time: both clients are served by one example-server process, pid {pid_a}",
        b.child.id()
    );

    let killed_at = Instant::now();
    let old: i32 = pid_a
        .parse()
        .with_context(|| format!("example__pid answered {pid_a:?}"))?;
    // SAFETY: kill(2) with a pid the server just reported and a valid signal; no memory is
    // shared with the callee.
    if unsafe { libc::kill(old, libc::SIGKILL) } != 0 {
        bail!(
            "demo step 5/8: cannot kill pid {old}: {}",
            io::Error::last_os_error()
        );
    }
    let new =
        wait_for_new_pid(&daemon.socket, old).context("demo step 5/8 (server back) failed")?;
    let answered = call_tool(&mut a, "example__pid", &json!({}))
        .context("demo step 5/8 (a call after the restart) failed")?;
    say!(
        "[5/8] killed the example server (pid {old}): mcpd started it again as pid {new} in {} ms; client A's next call was answered by pid {answered}",
        killed_at.elapsed().as_millis()
    );

    let restarted_at = Instant::now();
    daemon
        .shutdown()
        .context("demo step 6/8 (stopping mcpd) failed")?;
    let mut daemon =
        Daemon::start(bins, dir).context("demo step 6/8 (starting mcpd again) failed")?;
    daemon
        .wait_until_ready()
        .context("demo step 6/8 (waiting for the new mcpd) failed")?;
    let echoed = call_tool(&mut a, "example__echo", &json!({"message": "still here"}))
        .context("demo step 6/8 (client A after the daemon restart) failed")?;
    say!(
        "[6/8] restarted mcpd itself (new pid {}): client A's session went on without noticing ({echoed:?}, {} ms)",
        daemon.child.id(),
        restarted_at.elapsed().as_millis()
    );

    say!("[7/8] mcpctl status");
    let status = status(&daemon.socket).context("demo step 7/8 (mcpctl status) failed")?;
    say!("");
    for line in status.lines() {
        say!("      {line}");
    }
    say!("");

    a.close()
        .context("demo step 8/8 (stopping client A) failed")?;
    b.close()
        .context("demo step 8/8 (stopping client B) failed")?;
    daemon
        .shutdown()
        .context("demo step 8/8 (stopping mcpd) failed")?;
    say!(
        "[8/8] stopped both clients and mcpd ({} ms in all)",
        began.elapsed().as_millis()
    );
    Ok(())
}

/// Polls the status until the example server is ready with a pid other than `old`.
fn wait_for_new_pid(socket: &Path, old: i32) -> Result<u32> {
    let deadline = Instant::now() + CATALOG_TIMEOUT;
    loop {
        let mut client = ControlClient::connect(socket, MCP_TIMEOUT)?;
        if let ControlResponse::Status(s) = client.request(&ControlRequest::Status, MCP_TIMEOUT)? {
            let server = s.servers.iter().find(|s| s.name == "example");
            if let Some(pid) = server
                .filter(|s| s.state == mcpd_proto::ServerState::Ready)
                .and_then(|s| s.pid)
                .filter(|pid| i64::from(*pid) != i64::from(old))
            {
                return Ok(pid);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the example server was not back within {} s",
                CATALOG_TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The MCP conversation of step 3: initialize, list the tools, call two.
fn session(shim: &mut Shim) -> Result<()> {
    initialize(shim, "A")?;

    let tools = list_tools_until(shim, &["example__echo", "example__add", "example__pid"])
        .context("tools/list")?;
    say!("      tools/list -> {}", tools.join(", "));

    for (tool, arguments, expected) in [
        (
            "example__echo",
            json!({"message": "hello from mcpd"}),
            "Echo: hello from mcpd",
        ),
        ("example__add", json!({"a": 2, "b": 3}), "5"),
    ] {
        let text =
            call_tool(shim, tool, &arguments).with_context(|| format!("tools/call {tool}"))?;
        say!("      tools/call {tool} {arguments} -> {text}");
        if text != expected {
            bail!("tools/call {tool}: expected {expected:?}, got {text:?}");
        }
    }
    Ok(())
}

/// `initialize` and `notifications/initialized`, as every client starts.
fn initialize(shim: &mut Shim, client: &str) -> Result<()> {
    let init = shim
        .request(
            "initialize",
            json!({
                "protocolVersion": MCP_VERSION,
                "capabilities": {},
                "clientInfo": {"name": format!("mcpctl-demo-{client}"), "version": env!("CARGO_PKG_VERSION")}
            }),
        )
        .context("initialize")?;
    let server = init.get("serverInfo");
    let field = |k: &str| {
        server
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    if client == "A" {
        say!(
            "      initialize -> {} {}, protocol {}",
            field("name"),
            field("version"),
            init.get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
    }
    shim.notify("notifications/initialized")
        .context("notifications/initialized")
}

/// `tools/list` (all pages), repeated until every name in `wanted` is listed: the daemon may
/// answer before the example server has finished starting.
fn list_tools_until(shim: &mut Shim, wanted: &[&str]) -> Result<Vec<String>> {
    let deadline = Instant::now() + CATALOG_TIMEOUT;
    loop {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let page = shim.request("tools/list", params)?;
            let tools = page
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("the result has no `tools` array: {page}"))?;
            names.extend(
                tools
                    .iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str))
                    .map(str::to_owned),
            );
            cursor = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| !names.iter().any(|n| n == w))
            .collect();
        if missing.is_empty() {
            return Ok(names);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} not listed after {} s (listed: {})",
                missing.join(", "),
                CATALOG_TIMEOUT.as_secs(),
                if names.is_empty() {
                    "nothing".to_owned()
                } else {
                    names.join(", ")
                }
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Calls a tool; returns the text of its result, or an error if it reported one.
fn call_tool(shim: &mut Shim, tool: &str, arguments: &Value) -> Result<String> {
    let result = shim.request("tools/call", json!({"name": tool, "arguments": arguments}))?;
    let text = result
        .get("content")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter(|i| i.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|i| i.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .ok_or_else(|| anyhow!("the result has no `content` array: {result}"))?;
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        bail!("the tool reported an error: {text}");
    }
    Ok(text)
}

/// The daemon's status, rendered as `mcpctl status` renders it.
fn status(socket: &Path) -> Result<String> {
    let mut client = ControlClient::connect(socket, MCP_TIMEOUT)?;
    match client.request(&ControlRequest::Status, MCP_TIMEOUT)? {
        ControlResponse::Status(s) => Ok(render::status(&s)),
        ControlResponse::Error { message, .. } => bail!("mcpd: {message}"),
        other => bail!("unexpected reply: {other:?}"),
    }
}

/// `mcpd` and `mcp-shim`, found next to this `mcpctl`.
#[derive(Debug)]
struct Binaries {
    mcpd: PathBuf,
    shim: PathBuf,
}

impl Binaries {
    fn next_to(exe: &Path) -> Result<Self> {
        let dir = exe
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(anyhow!(
                    "{name} not found at {}: the demo runs the {name} built next to mcpctl; \
                     build it with `cargo build --release` (or `cargo build` for target/debug)",
                    path.display()
                ))
            }
        };
        Ok(Self {
            mcpd: find("mcpd")?,
            shim: find("mcp-shim")?,
        })
    }
}

/// The demo's private directory: XDG directories, the config file and the logs.
#[derive(Debug)]
struct DemoDir {
    root: tempfile::TempDir,
    /// `(variable, value)` for every XDG directory the daemon and shim use.
    xdg: Vec<(&'static str, PathBuf)>,
    config_file: PathBuf,
    socket: PathBuf,
    daemon_log: PathBuf,
    shim_log: PathBuf,
}

impl DemoDir {
    /// Creates the directories and a config whose only server is `<exe> example-server`.
    fn create(exe: &Path) -> Result<Self> {
        // Under /tmp rather than $TMPDIR: the socket path must fit in sun_path (108 bytes).
        let root = tempfile::Builder::new()
            .prefix("mcpd-demo-")
            .tempdir_in("/tmp")
            .context("failed to create a directory under /tmp")?;
        let xdg: Vec<(&'static str, PathBuf)> = [
            ("XDG_RUNTIME_DIR", "run"),
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_STATE_HOME", "state"),
            ("XDG_CACHE_HOME", "cache"),
        ]
        .into_iter()
        .map(|(var, sub)| (var, root.path().join(sub)))
        .collect();
        for (_, dir) in &xdg {
            DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        // The same resolution the daemon and the shim do, from the same variables.
        let paths = Paths::resolve(
            |key| {
                xdg.iter()
                    .find(|(var, _)| *var == key)
                    .map(|(_, dir)| dir.clone().into_os_string())
            },
            current_uid(),
        );

        let command = exe
            .to_str()
            .ok_or_else(|| anyhow!("the path of mcpctl is not UTF-8: {}", exe.display()))?;
        let config = json!({
            "mcpServers": {"example": {"command": command, "args": ["example-server"], "restartDelayMs": 20}}
        });
        let config_dir = paths
            .config_file
            .parent()
            .ok_or_else(|| anyhow!("bad config path {}", paths.config_file.display()))?;
        DirBuilder::new()
            .mode(0o700)
            .create(config_dir)
            .with_context(|| format!("failed to create {}", config_dir.display()))?;
        let text = serde_json::to_string_pretty(&config).context("failed to encode the config")?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&paths.config_file)
            .and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()))
            .with_context(|| format!("failed to write {}", paths.config_file.display()))?;

        Ok(Self {
            daemon_log: root.path().join("mcpd.log"),
            shim_log: root.path().join("mcp-shim.log"),
            config_file: paths.config_file,
            socket: paths.socket,
            xdg,
            root,
        })
    }

    /// A command for `program` with the demo's environment, and nothing inherited that could
    /// point it at the user's real daemon or at a service manager.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        for var in [
            SOCKET_ENV,
            CONFIG_ENV,
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.xdg.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// A new log file for a child's stderr.
    fn log_file(path: &Path) -> Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("failed to create {}", path.display()))
    }

    /// Prints the last lines of a log to stderr, if it has any.
    fn show_log_tail(&self, what: &str, path: &Path) {
        let Ok(file) = File::open(path) else { return };
        let lines: Vec<String> = BufReader::new(file)
            .lines()
            .map_while(io::Result::ok)
            .collect();
        if lines.is_empty() {
            return;
        }
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!("last lines of the {what} log ({}):", path.display());
        for line in &lines[from..] {
            eprintln!("  {line}");
        }
        eprintln!();
    }
}

/// The demo's mcpd. Dropping it stops the daemon if it is still running.
#[derive(Debug)]
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(bins: &Binaries, dir: &DemoDir) -> Result<Self> {
        let log = DemoDir::log_file(&dir.daemon_log)?;
        let log_out = log
            .try_clone()
            .context("failed to duplicate the log file")?;
        let child = dir
            .command(&bins.mcpd)
            .arg("--config")
            .arg(&dir.config_file)
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", bins.mcpd.display()))?;
        Ok(Self {
            child,
            socket: dir.socket.clone(),
        })
    }

    /// Polls the socket until a control hello succeeds; returns how long that took.
    fn wait_until_ready(&mut self) -> Result<Duration> {
        let start = Instant::now();
        let mut last_error = None;
        while start.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.child.try_wait().context("failed to check on mcpd")? {
                bail!("mcpd exited ({status}) before its socket answered");
            }
            match ControlClient::connect(&self.socket, Duration::from_secs(1)) {
                Ok(_) => return Ok(start.elapsed()),
                Err(e) => last_error = Some(e),
            }
            thread::sleep(Duration::from_millis(50));
        }
        let why = last_error.map_or_else(String::new, |e| format!(": {e:#}"));
        bail!(
            "mcpd did not answer on {} within {} s{why}",
            self.socket.display(),
            READY_TIMEOUT.as_secs()
        )
    }

    /// Asks the daemon to shut down and waits for it to exit successfully.
    fn shutdown(&mut self) -> Result<()> {
        let mut client = ControlClient::connect(&self.socket, MCP_TIMEOUT)?;
        match client.request(&ControlRequest::Shutdown, MCP_TIMEOUT)? {
            ControlResponse::Ok => {}
            ControlResponse::Error { message, .. } => bail!("mcpd refused to shut down: {message}"),
            other => bail!("unexpected reply to shutdown: {other:?}"),
        }
        drop(client);
        match wait_for_exit(&mut self.child, STOP_TIMEOUT)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!("mcpd exited with {status} after shutdown"),
            None => bail!(
                "mcpd did not exit within {} s of shutdown",
                STOP_TIMEOUT.as_secs()
            ),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // Politely first, so that it stops its servers; then by force.
        let asked = ControlClient::connect(&self.socket, Duration::from_secs(2))
            .and_then(|mut c| c.request(&ControlRequest::Shutdown, Duration::from_secs(2)))
            .is_ok();
        if asked && matches!(wait_for_exit(&mut self.child, STOP_TIMEOUT), Ok(Some(_))) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's MCP client end: `mcp-shim` with piped stdin/stdout. Dropping it closes stdin and
/// reaps the process, killing it if it does not exit.
#[derive(Debug)]
struct Shim {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines from the shim's stdout, read by a thread so that reads can time out.
    lines: Receiver<io::Result<Line>>,
    next_id: u64,
}

impl Shim {
    fn start(bins: &Binaries, dir: &DemoDir) -> Result<Self> {
        let log = DemoDir::log_file(&dir.shim_log)?;
        let mut child = dir
            .command(&bins.shim)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", bins.shim.display()))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("mcp-shim's stdout was not captured"))?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let item = match read_line_bounded(&mut reader, MAX_MESSAGE_LINE) {
                    Ok(Some(line)) => Ok(line),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
            next_id: 1,
        })
    }

    fn send(&mut self, message: &Value) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("mcp-shim's stdin is closed"))?;
        let mut line = message.to_string();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .context("failed to write to mcp-shim")
    }

    fn notify(&mut self, method: &str) -> Result<()> {
        self.send(&json!({"jsonrpc": "2.0", "method": method}))
    }

    /// Sends a request and waits for its response; returns the result or the error as an error.
    fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + MCP_TIMEOUT;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(wait) {
                Ok(Ok(Line::Complete(bytes))) => bytes,
                Ok(Ok(Line::TooLong { len })) => {
                    bail!("mcp-shim sent a line of {len} bytes, over the limit")
                }
                Ok(Err(e)) => return Err(e).context("failed to read from mcp-shim"),
                Err(RecvTimeoutError::Timeout) => {
                    bail!("no answer within {} s", MCP_TIMEOUT.as_secs())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = match wait_for_exit(&mut self.child, Duration::from_secs(1)) {
                        Ok(Some(status)) => format!(" and exited ({status})"),
                        _ => String::new(),
                    };
                    bail!("mcp-shim closed its stdout{status} without answering");
                }
            };
            let message: Value = serde_json::from_slice(&line).with_context(|| {
                format!(
                    "mcp-shim sent a line that is not JSON: {}",
                    String::from_utf8_lossy(&line)
                )
            })?;
            if let Some(m) = message.get("method").and_then(Value::as_str) {
                // A request from the server side: answer what a client must, refuse the rest.
                if let Some(req_id) = message.get("id") {
                    let reply = if m == "ping" {
                        json!({"jsonrpc": "2.0", "id": req_id, "result": {}})
                    } else {
                        json!({"jsonrpc": "2.0", "id": req_id,
                               "error": {"code": -32601, "message": format!("the demo client does not support {m}")}})
                    };
                    self.send(&reply)?;
                }
                continue;
            }
            if message.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = message.get("error") {
                let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
                let text = error.get("message").and_then(Value::as_str).unwrap_or("");
                bail!("error {code}: {text}");
            }
            return message
                .get("result")
                .cloned()
                .ok_or_else(|| anyhow!("a response without `result` or `error`: {message}"));
        }
    }

    /// Closes stdin, as a client does when it is done, and expects the shim to exit cleanly.
    fn close(&mut self) -> Result<()> {
        drop(self.stdin.take());
        match wait_for_exit(&mut self.child, SHIM_EXIT_TIMEOUT)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!("mcp-shim exited with {status} after its stdin was closed"),
            None => bail!(
                "mcp-shim did not exit within {} s of its stdin being closed",
                SHIM_EXIT_TIMEOUT.as_secs()
            ),
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(
            wait_for_exit(&mut self.child, Duration::from_secs(2)),
            Ok(Some(_))
        ) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
fn wait_for_exit(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .context("failed to wait for a child process")?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}
