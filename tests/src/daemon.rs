//! [`TestDaemon`]: a real `mcpd` process in a private temp tree.

use std::fs;
use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use mcpd_proto::line::{Line, MAX_CONTROL_LINE, read_line_bounded};
use mcpd_proto::{
    ControlHello, ControlRequest, ControlResponse, DaemonStatus, Hello, HelloReply,
    PROTOCOL_VERSION, ReloadReport, ServerState, ServerStatus,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::process::{self, ProcessId, run_with_timeout, wait_timeout};
use crate::{TIMEOUT, bin};

/// How many lines of the daemon's log a failing test prints.
const LOG_TAIL_LINES: usize = 200;

/// Options for starting a [`TestDaemon`]; [`TestDaemon::start`] takes the defaults.
#[derive(Debug, Clone)]
pub struct DaemonBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    write_config: bool,
    ready_timeout: Duration,
    binary: Option<PathBuf>,
    wrapper: Vec<String>,
    die_with_parent: bool,
}

impl Default for DaemonBuilder {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            env: vec![
                ("RUST_LOG".into(), "debug".into()),
                ("RUST_BACKTRACE".into(), "1".into()),
            ],
            write_config: true,
            ready_timeout: TIMEOUT,
            binary: None,
            wrapper: Vec::new(),
            die_with_parent: false,
        }
    }
}

impl DaemonBuilder {
    /// An extra command-line argument for `mcpd`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// An extra environment variable for `mcpd` (overrides the defaults, e.g. `RUST_LOG`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Starts the daemon with no configuration file at all (the `config` given to
    /// [`start`](Self::start) is ignored).
    pub fn without_config_file(mut self) -> Self {
        self.write_config = false;
        self
    }

    /// Runs this `mcpd` executable instead of the one [`bin`] finds (benchmarks compare builds).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Runs `mcpd` under a program, e.g. `valgrind --tool=callgrind` (the program execs or
    /// runs `mcpd` in its own process, so the pid stays the daemon's).
    pub fn wrapper(mut self, argv: &[&str]) -> Self {
        self.wrapper = argv.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// The daemon gets SIGTERM (and so stops its servers) when the thread that started it
    /// ends, however it ends: a benchmark killed by a timeout or SIGKILL leaves no daemon
    /// behind. Only for a daemon started from a thread that outlives it (a bench's main thread).
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    /// How long to wait for the socket to answer a control hello (default [`TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Creates the temp tree, writes `config`, starts `mcpd` and waits until its socket answers.
    pub fn start(self, config: Value) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("mcpd-")
            .tempdir_in("/tmp")
            .expect("cannot create a temp dir in /tmp");
        let root = dir.path().to_path_buf();
        let xdg = |name: &str| {
            let p = root.join(name);
            fs::create_dir_all(&p).expect("cannot create a temp XDG dir");
            p
        };
        let runtime = xdg("run");
        // XDG_RUNTIME_DIR must be private to its user, as pam_systemd makes it.
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700))
            .expect("cannot chmod the temp runtime dir");
        let config_home = xdg("cfg");
        let state = xdg("state");
        let cache = xdg("cache");
        let home = xdg("home");
        let socket = runtime.join("mcpd").join(mcpd_proto::paths::SOCKET_NAME);
        let config_path = config_home.join("mcpd").join("config.json");
        let log_path = root.join("mcpd.log");

        let mut env = vec![
            ("XDG_RUNTIME_DIR".to_owned(), path_str(&runtime)),
            ("XDG_CONFIG_HOME".to_owned(), path_str(&config_home)),
            ("XDG_STATE_HOME".to_owned(), path_str(&state)),
            ("XDG_CACHE_HOME".to_owned(), path_str(&cache)),
            ("HOME".to_owned(), path_str(&home)),
            (mcpd_proto::paths::SOCKET_ENV.to_owned(), path_str(&socket)),
            // This harness starts and stops the daemon itself: its shims must not start one
            // when it is down (a test that wants that removes the variable).
            ("MCPD_NO_AUTOSTART".to_owned(), "1".to_owned()),
        ];
        if let Some(path) = std::env::var_os("PATH") {
            env.push(("PATH".to_owned(), path.to_string_lossy().into_owned()));
        }

        let mut daemon = TestDaemon {
            dir: Some(dir),
            root,
            socket,
            config_path,
            log_path,
            child: None,
            exit: None,
            env,
            args: Vec::new(),
            extra_env: Vec::new(),
            binary: self.binary.unwrap_or_else(|| bin("mcpd")),
            wrapper: self.wrapper,
            die_with_parent: self.die_with_parent,
        };
        if self.write_config {
            daemon.write_config(&config);
        }

        daemon.args = self.args;
        daemon.extra_env = self.env;
        daemon.spawn();
        daemon.wait_ready(self.ready_timeout);
        daemon
    }
}

fn path_str(p: &Path) -> String {
    p.to_str()
        .unwrap_or_else(|| panic!("temp path {} is not UTF-8", p.display()))
        .to_owned()
}

/// A running `mcpd` with its own `XDG_*` and `HOME` under a short `/tmp/mcpd-XXXXXX` (a
/// socket path must fit in `sun_path`'s 108 bytes).
///
/// Dropping it stops the daemon (SIGTERM, then SIGKILL) and kills whatever it left behind; if
/// the test is panicking, the daemon's log is printed and its temp tree kept.
#[derive(Debug)]
pub struct TestDaemon {
    dir: Option<TempDir>,
    root: PathBuf,
    socket: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    extra_env: Vec<(String, String)>,
    binary: PathBuf,
    wrapper: Vec<String>,
    die_with_parent: bool,
}

impl TestDaemon {
    /// Starts the `mcpd` process (again) with this daemon's arguments, environment and
    /// directories; its output is appended to the log.
    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("cannot open the daemon log file");
        let log2 = log.try_clone().expect("cannot clone the log file handle");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        cmd.args(&self.args)
            .env_clear()
            .envs(
                self.env
                    .iter()
                    .filter(|(k, _)| k != mcpd_proto::paths::SOCKET_ENV)
                    .map(|(k, v)| (k, v)),
            )
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log2))
            .stderr(Stdio::from(log));
        if self.die_with_parent {
            process::die_with_parent(&mut cmd);
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
        );
        self.exit = None;
    }

    /// Starts a new `mcpd` in the same directories after this one exited (or was killed), and
    /// waits until it answers: a daemon restart as a user or an upgrade does it.
    pub fn start_again(&mut self) {
        assert!(
            self.try_exit_status().is_some(),
            "start_again needs the previous mcpd to have exited"
        );
        self.spawn();
        self.wait_ready(crate::PEER_TIMEOUT);
    }

    /// Starts `mcpd` with `config` as its `config.json` and waits until it answers.
    pub fn start(config: Value) -> Self {
        DaemonBuilder::default().start(config)
    }

    /// Options for a daemon that needs more than a config.
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Lets any user reach the socket (its directories 0755 up to the temp root, the socket
    /// 0777; they are 0700 normally), so that only the daemon's own checks can refuse them.
    pub fn open_socket_to_other_users(&self) {
        let dirs: Vec<&Path> = self
            .socket
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(&self.root))
            .collect();
        for dir in dirs {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod a dir");
        }
        fs::set_permissions(&self.socket, fs::Permissions::from_mode(0o777))
            .expect("chmod the socket");
    }

    /// The root of its temp tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Its log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The environment for a client of this daemon: `MCPD_SOCKET`, the `XDG_*` dirs, `HOME`
    /// and `PATH`.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// A command for one of the workspace binaries (`mcpctl`, `mcp-shim`), with a clean
    /// environment made of [`env`](Self::env) only.
    pub fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(bin(binary));
        cmd.env_clear().envs(self.env.clone());
        cmd
    }

    /// Runs `mcpctl ARGS` against this daemon to completion.
    pub fn mcpctl(&self, args: &[&str]) -> Output {
        run_with_timeout(self.command("mcpctl").args(args), TIMEOUT)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the daemon's log contains `needle`; panics (with the log) after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        if !process::wait_until(timeout, || self.log().contains(needle)) {
            self.fail(&format!(
                "timed out after {timeout:?} waiting for the log to say {needle:?}"
            ));
        }
    }

    /// Replaces its configuration file with `config` (atomically, as an editor would).
    pub fn write_config(&self, config: &Value) {
        let dir = self
            .config_path
            .parent()
            .expect("the config path has a parent");
        fs::create_dir_all(dir).expect("cannot create the config dir");
        let tmp = dir.join(".config.json.tmp");
        let text = serde_json::to_string_pretty(config).expect("a JSON value serialises");
        fs::write(&tmp, text).expect("cannot write the config");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .expect("cannot chmod the config");
        fs::rename(&tmp, &self.config_path).expect("cannot move the config into place");
    }

    /// Opens a control connection: connect, hello, welcome.
    pub fn try_control_connection(&self) -> Result<ControlConnection, String> {
        let stream = UnixStream::connect(&self.socket)
            .map_err(|e| format!("connect {}: {e}", self.socket.display()))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let hello = Hello::Control(ControlHello {
            v: PROTOCOL_VERSION,
        });
        send_line(&mut writer, &hello)?;
        let reply = read_line(&mut reader)?;
        match serde_json::from_str::<HelloReply>(&reply) {
            Ok(HelloReply::Welcome(_)) => Ok(ControlConnection { writer, reader }),
            Ok(other) => Err(format!("hello refused: {other:?}")),
            Err(e) => Err(format!("bad hello reply {reply:?}: {e}")),
        }
    }

    /// Sends one control request on a new connection and returns the answer, or why there was
    /// none.
    pub fn try_control(&self, request: &ControlRequest) -> Result<ControlResponse, String> {
        self.try_control_connection()?.request(request)
    }

    /// Sends one control request; panics (with the log) if the daemon does not answer.
    pub fn control(&self, request: &ControlRequest) -> ControlResponse {
        self.try_control(request)
            .unwrap_or_else(|e| self.fail(&format!("control request {request:?} failed: {e}")))
    }

    /// The daemon's status, over the control socket.
    pub fn status(&self) -> DaemonStatus {
        match self.control(&ControlRequest::Status) {
            ControlResponse::Status(s) => s,
            other => self.fail(&format!("status answered {other:?}")),
        }
    }

    /// One server's status; panics if the daemon does not list it.
    pub fn server(&self, name: &str) -> ServerStatus {
        let status = self.status();
        status
            .servers
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| self.fail(&format!("no server {name:?} in {status:#?}")))
    }

    /// Waits until the status satisfies `pred`, and returns that status.
    pub fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&DaemonStatus) -> bool,
    ) -> DaemonStatus {
        let mut last = None;
        let found = process::wait_until(timeout, || {
            let s = self.status();
            let ok = pred(&s);
            last = Some(s);
            ok
        });
        let last = last.expect("the status was read at least once");
        if !found {
            self.fail(&format!(
                "timed out after {timeout:?} waiting for: {what}\nlast status: {last:#?}"
            ));
        }
        last
    }

    /// Waits until server `name` is in `state`, and returns its status.
    pub fn wait_server_state(&self, name: &str, state: ServerState) -> ServerStatus {
        self.wait_server_state_timeout(name, state, crate::PEER_TIMEOUT)
    }

    /// [`wait_server_state`](Self::wait_server_state) with a deadline of your own.
    pub fn wait_server_state_timeout(
        &self,
        name: &str,
        state: ServerState,
        timeout: Duration,
    ) -> ServerStatus {
        let what = format!("server {name:?} to be {}", state.as_str());
        let status = self.wait_status(timeout, &what, |s| {
            s.servers.iter().any(|x| x.name == name && x.state == state)
        });
        status
            .servers
            .into_iter()
            .find(|x| x.name == name)
            .expect("the server was found by the wait")
    }

    /// Asks the daemon to re-read its configuration: the report, or the daemon's error message.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        match self.control(&ControlRequest::Reload) {
            ControlResponse::Reloaded(r) => Ok(r),
            ControlResponse::Error { message, .. } => Err(message),
            other => self.fail(&format!("reload answered {other:?}")),
        }
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    /// Its exit status, if it has exited (reaping it).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.exit = child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        if self.exit.is_none() {
            process::signal(self.pid(), signal);
        }
    }

    /// Waits up to `timeout` for the daemon to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.exit = wait_timeout(child, timeout);
        }
        self.exit
    }

    /// SIGTERM, and the exit status once it has stopped; panics (with the log) if it does not
    /// stop within 15 s.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(Duration::from_secs(15)) {
            Some(status) => status,
            None => {
                self.kill();
                self.fail("mcpd did not exit within 15 s of SIGTERM")
            }
        }
    }

    /// SIGKILL, and waits for it to be gone. Its children are left as a crash would leave them.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.wait_exit(TIMEOUT)
            .unwrap_or_else(|| panic!("mcpd pid {} survived SIGKILL", self.pid()))
    }

    /// Panics with `message` and the tail of the daemon's log.
    pub fn fail(&self, message: &str) -> ! {
        panic!(
            "{message}\n--- mcpd log {} (last {LOG_TAIL_LINES} lines) ---\n{}",
            self.log_path.display(),
            self.log_tail()
        )
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let mut last_error = String::new();
        let ready = process::wait_until(timeout, || {
            if self.try_exit_status().is_some() {
                return true;
            }
            if !self.socket.exists() {
                last_error = format!("{} does not exist yet", self.socket.display());
                return false;
            }
            match self.try_control_connection() {
                Ok(_) => true,
                Err(e) => {
                    last_error = e;
                    false
                }
            }
        });
        if let Some(status) = self.exit {
            self.fail(&format!("mcpd exited during startup with {status}"));
        }
        if !ready {
            self.fail(&format!(
                "mcpd did not answer on its socket within {timeout:?}: {last_error}"
            ));
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let leftovers: Vec<ProcessId> = if self.exit.is_none() && self.child.is_some() {
            process::descendants_of(self.pid())
                .into_iter()
                .filter_map(ProcessId::of)
                .collect()
        } else {
            Vec::new()
        };
        if self.try_exit_status().is_none() && self.child.is_some() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                self.signal(libc::SIGKILL);
                self.wait_exit(TIMEOUT);
            }
        }
        // Whatever the daemon did not stop must not outlive the test and confuse the next one.
        for p in &leftovers {
            p.kill();
        }
        if std::thread::panicking() {
            let kept = self.dir.take().map(TempDir::keep);
            eprintln!(
                "--- mcpd log {} (last {LOG_TAIL_LINES} lines; temp tree kept at {}) ---\n{}",
                self.log_path.display(),
                kept.as_deref().unwrap_or(&self.root).display(),
                self.log_tail()
            );
        }
    }
}

/// An open control connection (after the welcome), for tests of the control protocol itself.
#[derive(Debug)]
pub struct ControlConnection {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl ControlConnection {
    /// Sends `request` and reads one reply.
    pub fn request(&mut self, request: &ControlRequest) -> Result<ControlResponse, String> {
        send_line(&mut self.writer, request)?;
        let reply = self.read_line()?;
        serde_json::from_str(&reply).map_err(|e| format!("bad control reply {reply:?}: {e}"))
    }

    /// Sends one raw line (a newline is added).
    pub fn send_raw(&mut self, line: &str) -> Result<(), String> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads one reply line.
    pub fn read_line(&mut self) -> Result<String, String> {
        read_line(&mut self.reader)
    }
}

fn send_line(w: &mut impl Write, value: &impl serde::Serialize) -> Result<(), String> {
    let mut line = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    line.push(b'\n');
    w.write_all(&line).map_err(|e| format!("write: {e}"))
}

fn read_line(r: &mut BufReader<UnixStream>) -> Result<String, String> {
    match read_line_bounded(r, MAX_CONTROL_LINE) {
        Ok(Some(Line::Complete(bytes))) => {
            String::from_utf8(bytes).map_err(|e| format!("reply is not UTF-8: {e}"))
        }
        Ok(Some(Line::TooLong { len })) => Err(format!("reply line of {len} bytes is too long")),
        Ok(None) => Err("the daemon closed the connection".to_owned()),
        Err(e) => Err(format!("read: {e}")),
    }
}
