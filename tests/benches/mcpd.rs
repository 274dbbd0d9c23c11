//! mcpd's benchmark harness: the figures of `docs/BENCHMARKS.md`, printed as Markdown tables.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo bench -p mcpd-tests --bench mcpd -- [FILTER...] [--quick]
//! ```
//!
//! It runs the release binaries next to this bench executable (`target/release/`), or those in
//! `$MCPD_BIN_DIR`. A FILTER selects the benches whose name contains it (`shim_start`,
//! `latency`, `rss`, `catalog`, `startup`, `recovery`); `--quick` takes a tenth of the samples,
//! to check the harness itself. `MCPD_BENCH_DAEMON_ENV="K=V ..."` adds environment variables to
//! every daemon measured (e.g. `MCPD_WORKER_THREADS=2`), to compare settings without a rebuild; `MCPD_BENCH_BEFORE=DIR` measures the `mcpd` and `mcp-shim` of another build beside this one (`peers_latency`, `throughput`, `callgrind`). server-everything rows need the pinned peers (`scripts/test`
//! or `npm ci` in `tests/peers`) and are left out, with a note, when they are missing.
//!
//! Nothing here asserts a timing: it measures and prints. A bench that fails says why on stderr
//! and the others still run. Every daemon lives in its own temp tree under `/tmp` and is stopped,
//! with whatever it started, when its bench ends.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::cast_precision_loss
)]

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcpd_proto::{PROTOCOL_VERSION, ServerState};
use mcpd_tests::process::{ProcessId, descendants_of, process_alive, signal};
use mcpd_tests::{TestDaemon, bin, fixture};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The binaries every bench needs.
const BINARIES: [&str; 3] = ["mcpd", "mcp-shim", "mcpd-fixture"];
/// How long one answer may take before the bench gives up (a hung daemon, not a slow one).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// `RUST_LOG` for the daemons measured: what a user runs by default.
const DAEMON_LOG: &str = "info";

type Bench = fn(&Ctx);

const BENCHES: [(&str, &str, Bench); 14] = [
    (
        "shim_start",
        "mcp-shim start to a tools/list answer, warm daemon (issue 2)",
        shim_start,
    ),
    (
        "latency",
        "tools/call round trip: direct stdio vs through mcpd (issue 2)",
        latency,
    ),
    (
        "rss",
        "resident memory of mcp-shim and of an idle mcpd (issue 2)",
        rss,
    ),
    (
        "catalog",
        "tools/list with 10 upstreams and 570 tools (issue 3)",
        catalog,
    ),
    (
        "startup",
        "daemon start to a complete catalog, cache cold and warm (issue 3)",
        startup,
    ),
    (
        "recovery",
        "upstream crash and daemon restart to the next good call (issue 4)",
        recovery,
    ),
    (
        "peers_latency",
        "tools/call round trip: direct vs mcpd vs mcpzip vs dynamic-mcp (issue 18)",
        compare::peers_latency,
    ),
    (
        "throughput",
        "calls/s and CPU per call at 1×1, 1×16, 8×8, 32×4 (issue 18)",
        compare::throughput,
    ),
    (
        "slow4",
        "a 1 s tool called 4 times at once by one client (issue 18)",
        compare::slow4,
    ),
    (
        "scaling",
        "full tools/list up to 5,000 tools, raw socket and through mcp-shim (issue 18)",
        compare::scaling,
    ),
    (
        "fleet",
        "5 clients × 10 server-everything: memory and processes (issue 18)",
        compare::fleet,
    ),
    (
        "per_upstream",
        "daemon memory per added upstream (issue 18)",
        compare::per_upstream,
    ),
    (
        "new_client",
        "a new client to a complete tools/list, 10 server-everything (issue 18)",
        compare::new_client,
    ),
    (
        "callgrind",
        "instructions per tools/call in mcpd and mcp-shim, from callgrind (issue 18)",
        hot::callgrind,
    ),
];

#[path = "mcpd/compare.rs"]
mod compare;
#[path = "mcpd/hot.rs"]
mod hot;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let ctx = Ctx::new(quick);
    print_header(&ctx, &args);
    let mut failed = Vec::new();
    for (name, what, bench) in BENCHES {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f)) {
            continue;
        }
        println!("\n## `{name}`: {what}\n");
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| bench(&ctx));
        match outcome {
            Ok(()) => println!(
                "\n({name} took {:.1} s; load average after it: {})",
                started.elapsed().as_secs_f64(),
                loadavg()
            ),
            Err(_) => {
                println!("\n**{name} failed** (see stderr)");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("failed benches: {failed:?}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Context: binaries, peers, sample counts.

struct Ctx {
    quick: bool,
    /// `node` and server-everything's entry point, when the peers are installed.
    everything: Option<(PathBuf, PathBuf)>,
    /// Why server-everything rows are missing.
    no_everything: String,
}

impl Ctx {
    fn new(quick: bool) -> Self {
        let dir = bin_dir();
        let missing: Vec<String> = BINARIES
            .iter()
            .map(|b| dir.join(b))
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "error: the release binaries are missing: {}\n\
                 Build them first:  cargo build --release --workspace --bins\n\
                 (or set MCPD_BIN_DIR to a directory that holds mcpd, mcp-shim and mcpd-fixture)",
                missing.join(", ")
            );
            std::process::exit(2);
        }
        let (everything, no_everything) = match find_everything() {
            Ok(e) => (Some(e), String::new()),
            Err(why) => (None, why),
        };
        Self {
            quick,
            everything,
            no_everything,
        }
    }

    /// A sample count: `full`, or a tenth of it (at least 3) with `--quick`.
    fn n(&self, full: usize) -> usize {
        if self.quick { (full / 10).max(3) } else { full }
    }

    /// An `mcpServers` entry for server-everything on stdio, node started directly.
    fn everything_server(&self) -> Option<Value> {
        self.everything.as_ref().map(|(node, js)| {
            json!({"command": node.display().to_string(),
                   "args": [js.display().to_string(), "stdio"]})
        })
    }

    fn everything_command(&self) -> Option<Command> {
        self.everything.as_ref().map(|(node, js)| {
            let mut c = Command::new(node);
            c.arg(js).arg("stdio");
            c
        })
    }

    fn note_no_everything(&self) {
        println!(
            "\n(server-everything rows left out: {})",
            self.no_everything
        );
    }
}

/// Where the binaries are: `$MCPD_BIN_DIR`, else the directory above this executable's `deps/`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(mcpd_tests::BIN_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the bench executable has a path");
    let mut dir = exe.parent().expect("it is in a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

fn find_everything() -> Result<(PathBuf, PathBuf), String> {
    let peers = std::env::var_os(mcpd_tests::peers::PEERS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers"));
    let js = peers.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if !js.is_file() {
        return Err(format!(
            "{} is missing; run `npm ci` in tests/peers (scripts/test does)",
            js.display()
        ));
    }
    let node = std::env::var_os(mcpd_tests::peers::NODE_ENV)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join("node"))
                .find(|p| p.is_file())
        })
        .ok_or("node is not on PATH")?;
    Ok((node, js))
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_header(ctx: &Ctx, args: &[String]) {
    let sh = |cmd: &str| {
        Command::new("sh")
            .args(["-c", cmd])
            .current_dir(mcpd_tests::repo_root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("# mcpd benchmarks\n");
    println!("- date: {}", sh("date -u '+%Y-%m-%d %H:%M UTC'"));
    println!(
        "- command: `cargo bench -p mcpd-tests --bench mcpd --{}`",
        args.iter()
            .filter(|a| *a != "--bench")
            .fold(String::new(), |mut s, a| {
                let _ = write!(s, " {a}");
                s
            })
    );
    println!(
        "- commit: {} ({} changed files in the working tree)",
        sh("git rev-parse --short HEAD"),
        sh("git status --porcelain --untracked-files=no | wc -l")
    );
    println!(
        "- machine: {cores} cores, {cpu}; Linux {}; load average at start {}",
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        loadavg()
    );
    println!("- binaries: {}", bin_dir().display());
    if let Ok(extra) = std::env::var(DAEMON_ENV) {
        println!("- daemon environment added ({DAEMON_ENV}): `{extra}`");
    }
    if let Some((node, _)) = &ctx.everything {
        println!("- node: {} ({})", node.display(), sh("node --version"));
    }
    if ctx.quick {
        println!(
            "- **--quick**: a tenth of the samples; for checking the harness, not for figures"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and tables.

#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    min: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

/// Summary of `samples`, in microseconds. Percentiles are nearest-rank.
fn stats(samples: &[Duration]) -> Stats {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let n = us.len();
    if n == 0 {
        return Stats {
            n,
            min: f64::NAN,
            p50: f64::NAN,
            p95: f64::NAN,
            p99: f64::NAN,
            max: f64::NAN,
            mean: f64::NAN,
        };
    }
    let rank = |p: f64| us[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    Stats {
        n,
        min: us[0],
        p50: rank(0.50),
        p95: rank(0.95),
        p99: rank(0.99),
        max: us[n - 1],
        mean: us.iter().sum::<f64>() / n as f64,
    }
}

/// Microseconds as a short human figure.
fn t(us: f64) -> String {
    if us.is_nan() {
        "–".to_owned()
    } else if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn kib(kib: u64) -> String {
    if kib >= 10 * 1024 {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    } else {
        format!("{kib} KiB ({:.2} MiB)", kib as f64 / 1024.0)
    }
}

fn table(header: &[&str], rows: &[Vec<String>]) {
    println!("| {} |", header.join(" | "));
    println!(
        "|{}",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}

// ---------------------------------------------------------------------------------------------
// A JSON-RPC peer over a pipe pair (a spawned process) or a socket (a raw attach to mcpd).

/// Reads whole lines from a descriptor, waiting at most a deadline for each.
struct LineReader {
    file: File,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl LineReader {
    fn new(fd: OwnedFd) -> Self {
        Self {
            file: File::from(fd),
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        }
    }

    fn line(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line =
                    String::from_utf8_lossy(&self.buf[self.start..self.start + pos]).into_owned();
                self.start += pos + 1;
                return Ok(line);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if ready == 0 {
                return Err(format!("no line within {timeout:?}"));
            }
            if ready < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {e}"));
            }
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err("end of output".to_owned()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// One MCP client session, driven by hand: requests get ids 1, 2, 3, ...
struct Conn {
    what: String,
    child: Option<Child>,
    writer: Option<File>,
    reader: LineReader,
    next_id: u64,
    timeout: Duration,
}

/// A request's answer and how long it took (write to the answer's last byte read).
struct Answer {
    took: Duration,
    msg: Value,
    bytes: usize,
}

impl Answer {
    fn ok(&self) -> bool {
        self.msg.get("result").is_some()
    }
}

impl Conn {
    /// Spawns `cmd` with piped stdin and stdout; its stderr goes to `stderr`.
    fn spawn(what: &str, cmd: &mut Command, stderr: Stdio) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let writer = File::from(OwnedFd::from(child.stdin.take().expect("piped stdin")));
        let reader = LineReader::new(OwnedFd::from(child.stdout.take().expect("piped stdout")));
        Self {
            what: what.to_owned(),
            child: Some(child),
            writer: Some(writer),
            reader,
            next_id: 1,
            timeout: ANSWER_TIMEOUT,
        }
    }

    /// Attaches to the daemon at `socket` directly, as the shim would (no shim process).
    fn attach(what: &str, socket: &Path) -> Result<Self, String> {
        let stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
        let writer = File::from(OwnedFd::from(
            stream.try_clone().map_err(|e| e.to_string())?,
        ));
        let mut conn = Self {
            what: what.to_owned(),
            child: None,
            writer: Some(writer),
            reader: LineReader::new(OwnedFd::from(stream)),
            next_id: 1,
            timeout: ANSWER_TIMEOUT,
        };
        conn.send(&format!(
            r#"{{"op":"attach","v":{PROTOCOL_VERSION},"profile":"default","client":{{"pid":{},"shim_version":"bench"}}}}"#,
            std::process::id()
        ))?;
        let reply = conn.reader.line(Duration::from_secs(10))?;
        if reply.contains(r#""op":"welcome""#) {
            Ok(conn)
        } else {
            Err(format!("hello refused: {reply}"))
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.writer
            .as_mut()
            .ok_or("stdin is closed")?
            .write_all(&bytes)
            .map_err(|e| format!("{}: write: {e}", self.what))
    }

    /// Sends a request (`params` is JSON text) and waits for its answer, skipping anything else.
    fn request(&mut self, method: &str, params: &str) -> Answer {
        self.try_request(method, params)
            .unwrap_or_else(|e| panic!("{}: {method}: {e}", self.what))
    }

    fn try_request(&mut self, method: &str, params: &str) -> Result<Answer, String> {
        let id = self.next_id;
        self.next_id += 1;
        let line =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
        let started = Instant::now();
        self.send(&line)?;
        loop {
            let line = self.reader.line(self.timeout)?;
            let took = started.elapsed();
            let msg: Value =
                serde_json::from_str(&line).map_err(|e| format!("not JSON ({e}): {line:.200}"))?;
            if msg.get("method").is_none() && msg.get("id") == Some(&json!(id)) {
                return Ok(Answer {
                    took,
                    msg,
                    bytes: line.len(),
                });
            }
        }
    }

    /// `initialize` then `notifications/initialized`; returns the `initialize` answer.
    fn initialize(&mut self) -> Answer {
        let a = self.request(
            "initialize",
            r#"{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcpd-bench","version":"0"}}"#,
        );
        assert!(a.ok(), "{}: initialize failed: {}", self.what, a.msg);
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .unwrap();
        a
    }

    /// Every tool, following `nextCursor`: (time spent waiting for the pages, tools, pages,
    /// bytes). The time leaves out this client's own parsing of each page.
    fn list_tools(&mut self) -> (Duration, usize, usize, usize) {
        let mut waited = Duration::ZERO;
        let (mut tools, mut pages, mut bytes) = (0, 0, 0);
        let mut params = "{}".to_owned();
        loop {
            let a = self.request("tools/list", &params);
            let result = a
                .msg
                .get("result")
                .unwrap_or_else(|| panic!("{}: tools/list failed: {}", self.what, a.msg));
            tools += result["tools"].as_array().map_or(0, Vec::len);
            pages += 1;
            bytes += a.bytes;
            waited += a.took;
            match result.get("nextCursor") {
                Some(c) if !c.is_null() => params = json!({ "cursor": c }).to_string(),
                _ => return (waited, tools, pages, bytes),
            }
        }
    }

    fn call(&mut self, tool: &str, arguments: &str) -> Answer {
        self.request(
            "tools/call",
            &format!(r#"{{"name":"{tool}","arguments":{arguments}}}"#),
        )
    }

    fn try_call(&mut self, tool: &str, arguments: &str) -> Result<Answer, String> {
        self.try_request(
            "tools/call",
            &format!(r#"{{"name":"{tool}","arguments":{arguments}}}"#),
        )
    }

    /// Closes stdin and waits (up to 5 s) for the process to exit; kills it after that.
    fn close(mut self) {
        self.writer = None;
        if let Some(mut child) = self.child.take()
            && !poll_until(Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(Some(_)))
            })
        {
            eprintln!("{}: did not exit within 5 s of stdin closing", self.what);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The text of the first content item of a `tools/call` result.
fn text_of(a: &Answer) -> String {
    a.msg["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Daemons.

/// Extra environment for every daemon measured: `MCPD_BENCH_DAEMON_ENV="K=V K2=V2"`, to compare
/// runtime settings without rebuilding (e.g. `MCPD_WORKER_THREADS=2`).
const DAEMON_ENV: &str = "MCPD_BENCH_DAEMON_ENV";

fn extra_daemon_env() -> Vec<(String, String)> {
    std::env::var(DAEMON_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A `TestDaemon` as the benches want it: default log level, and its upstreams ready.
fn daemon(config: Value, servers: &[&str]) -> TestDaemon {
    daemon_of(None, config, servers)
}

/// A directory with the `mcpd` and `mcp-shim` of an earlier build, to measure against in the
/// same run (`peers_latency`, `throughput` and `callgrind` add its routes).
const BEFORE_DIR: &str = "MCPD_BENCH_BEFORE";

fn before_dir() -> Option<PathBuf> {
    std::env::var_os(BEFORE_DIR).map(PathBuf::from)
}

/// [`daemon`] of the `mcpd` in `dir` (an earlier build), or of this build.
fn daemon_of(dir: Option<&Path>, config: Value, servers: &[&str]) -> TestDaemon {
    let mut builder = TestDaemon::builder()
        .env("RUST_LOG", DAEMON_LOG)
        .env("RUST_BACKTRACE", "0")
        .die_with_parent();
    for (k, v) in extra_daemon_env() {
        builder = builder.env(k, v);
    }
    if let Some(dir) = dir {
        builder = builder.binary(dir.join("mcpd"));
    }
    let d = builder.start(config);
    for s in servers {
        d.wait_server_state(s, ServerState::Ready);
    }
    d
}

fn shim_command(socket: &Path) -> Command {
    shim_command_of(None, socket)
}

/// [`shim_command`] of the `mcp-shim` in `dir` (an earlier build), or of this build.
fn shim_command_of(dir: Option<&Path>, socket: &Path) -> Command {
    let mut cmd = Command::new(dir.map_or_else(|| bin("mcp-shim"), |d| d.join("mcp-shim")));
    cmd.env_clear()
        .env("MCPD_SOCKET", socket)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

/// A daemon that can be stopped and started again in the same temp tree (same socket, same
/// catalog cache), unlike `TestDaemon`.
struct BenchDaemon {
    _dir: TempDir,
    root: PathBuf,
    socket: PathBuf,
    cache_file: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Every process it started, to kill if it does not stop them itself.
    seen: Vec<ProcessId>,
}

impl BenchDaemon {
    fn new(config: &Value) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mcpd-bench-")
            .tempdir_in("/tmp")
            .expect("a temp dir in /tmp");
        let root = dir.path().to_path_buf();
        let mk = |name: &str| {
            let p = root.join(name);
            fs::create_dir_all(&p).unwrap();
            p
        };
        let run = mk("run");
        fs::set_permissions(&run, fs::Permissions::from_mode(0o700)).unwrap();
        let cfg = mk("cfg");
        let cache = mk("cache");
        let env: Vec<(String, String)> = vec![
            ("XDG_RUNTIME_DIR".into(), s(&run)),
            ("XDG_CONFIG_HOME".into(), s(&cfg)),
            ("XDG_STATE_HOME".into(), s(&mk("state"))),
            ("XDG_CACHE_HOME".into(), s(&cache)),
            ("HOME".into(), s(&mk("home"))),
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            ),
            ("RUST_LOG".into(), DAEMON_LOG.into()),
        ];
        let mut env = env;
        env.extend(extra_daemon_env());
        fs::create_dir_all(cfg.join("mcpd")).unwrap();
        let config_path = cfg.join("mcpd/config.json");
        fs::write(&config_path, serde_json::to_string_pretty(config).unwrap()).unwrap();
        fs::set_permissions(&config_path, fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            socket: run.join("mcpd").join(mcpd_proto::paths::SOCKET_NAME),
            cache_file: cache.join("mcpd/catalog.json"),
            _dir: dir,
            root,
            env,
            child: None,
            seen: Vec::new(),
        }
    }

    /// Starts `mcpd`; returns the instant just before the spawn.
    fn start(&mut self) -> Instant {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("mcpd.log"))
            .unwrap();
        let mut cmd = Command::new(bin("mcpd"));
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        // A harness killed by a timeout must not leave this daemon running.
        mcpd_tests::process::die_with_parent(&mut cmd);
        let started = Instant::now();
        self.child = Some(cmd.spawn().expect("cannot start mcpd"));
        started
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Attaches as soon as the socket answers, trying every millisecond.
    fn attach_asap(&mut self, timeout: Duration) -> Conn {
        let deadline = Instant::now() + timeout;
        loop {
            match Conn::attach("socket session", &self.socket) {
                Ok(c) => return c,
                Err(e) => {
                    if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                        panic!("mcpd exited with {status}:\n{}", self.log_tail());
                    }
                    assert!(
                        Instant::now() < deadline,
                        "mcpd did not answer within {timeout:?} ({e}):\n{}",
                        self.log_tail()
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    fn remember_children(&mut self) {
        let pid = self.pid();
        if pid != 0 {
            for p in descendants_of(pid) {
                if let Some(id) = ProcessId::of(p)
                    && !self.seen.contains(&id)
                {
                    self.seen.push(id);
                }
            }
        }
    }

    /// Sends `sig` and waits for the daemon to exit; returns how long that took.
    fn stop(&mut self, sig: i32) -> Duration {
        self.remember_children();
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        let started = Instant::now();
        signal(child.id(), sig);
        let exited = poll_until(Duration::from_secs(15), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            eprintln!("mcpd did not stop within 15 s of signal {sig}; killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
        started.elapsed()
    }

    /// Kills whatever a stopped daemon left behind; how many there were.
    fn reap_leftovers(&mut self) -> usize {
        let alive: Vec<ProcessId> = self.seen.iter().copied().filter(ProcessId::alive).collect();
        for p in &alive {
            p.kill();
        }
        self.seen.clear();
        alive.len()
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.root.join("mcpd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop(libc::SIGTERM);
        }
        self.reap_leftovers();
    }
}

/// Polls `cond` every millisecond (the test helpers poll every 20 ms, too coarse to time with)
/// until it holds (true) or `timeout` passes (false).
fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn s(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_owned()
}

// ---------------------------------------------------------------------------------------------
// /proc memory figures.

#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
    threads: u64,
    /// Proportional set size: shared pages divided among the processes that map them.
    pss: u64,
    /// Pages no other process maps (what one more such process costs, page tables aside).
    private: u64,
}

fn mem(pid: u32) -> Option<Mem> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let rolled = |name: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(Mem {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        threads: field("Threads:"),
        pss: rolled("Pss:"),
        private: rolled("Private_Clean:") + rolled("Private_Dirty:"),
    })
}

/// Resident KiB per mapped file (or `[heap]`, `[stack]`, anonymous), largest first.
fn rss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: Vec<(String, u64)> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: range perms offset dev inode [path]
            current = words.nth(4).unwrap_or("[anonymous]").to_owned();
        } else if first == "Rss:" {
            let kb: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match by.iter_mut().find(|(name, _)| *name == current) {
                Some((_, total)) => *total += kb,
                None => by.push((current.clone(), kb)),
            }
        }
    }
    by.retain(|(_, kb)| *kb > 0);
    by.sort_by_key(|e| std::cmp::Reverse(e.1));
    by
}

fn mem_row(what: &str, m: Option<Mem>) -> Vec<String> {
    let m = m.unwrap_or_default();
    vec![
        what.to_owned(),
        kib(m.rss),
        kib(m.hwm),
        kib(m.anon),
        kib(m.file),
        kib(m.pss),
        kib(m.private),
        m.threads.to_string(),
    ]
}

const MEM_HEADER: [&str; 8] = [
    "process",
    "**VmRSS**",
    "VmHWM (peak)",
    "RssAnon",
    "RssFile",
    "Pss",
    "Private (USS)",
    "threads",
];

// ---------------------------------------------------------------------------------------------
// 1. shim start to a tools/list answer.

/// Spawns `make()` `n` times (after a few warm-up runs) and times, from just before the spawn,
/// the `initialize` answer and then the `tools/list` answer.
/// With a `gap`, each start comes after that long with nothing to do (a client starting its
/// servers after a pause, not in a tight loop that keeps every CPU awake).
fn start_to_answer(
    what: &str,
    n: usize,
    gap: Duration,
    make: &dyn Fn() -> Command,
) -> (Vec<Duration>, Vec<Duration>, usize) {
    let warmup = (n / 20).clamp(2, 10);
    let (mut init, mut list) = (Vec::new(), Vec::new());
    let mut tools = 0;
    for i in 0..warmup + n {
        let mut cmd = make();
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let started = Instant::now();
        let mut c = Conn::spawn(what, &mut cmd, Stdio::null());
        c.initialize();
        let t_init = started.elapsed();
        let a = c.request("tools/list", "{}");
        let t_list = started.elapsed();
        tools = a.msg["result"]["tools"].as_array().map_or(0, Vec::len);
        c.close();
        if i >= warmup {
            init.push(t_init);
            list.push(t_list);
        }
    }
    (init, list, tools)
}

fn start_row(
    what: &str,
    (init, list, tools): &(Vec<Duration>, Vec<Duration>, usize),
) -> Vec<String> {
    let (i, l) = (stats(init), stats(list));
    vec![
        what.to_owned(),
        l.n.to_string(),
        tools.to_string(),
        t(i.p50),
        t(l.p50),
        t(l.p95),
        t(l.p99),
        t(l.max),
    ]
}

const START_HEADER: [&str; 8] = [
    "client starts",
    "runs",
    "tools (1st page)",
    "initialize answered, median",
    "**tools/list answered, median**",
    "**p95**",
    "p99",
    "max",
];

fn shim_start(ctx: &Ctx) {
    let n = ctx.n(200);
    let mut rows = Vec::new();

    // The shim's own cost: spawn to exit, no daemon involved.
    let mut own = Vec::new();
    for _ in 0..n {
        let mut cmd = Command::new(bin("mcp-shim"));
        cmd.arg("--version").stdout(Stdio::null());
        let started = Instant::now();
        let status = cmd.status().expect("mcp-shim --version runs");
        own.push(started.elapsed());
        assert!(status.success());
    }
    let o = stats(&own);

    let gap = Duration::from_millis(100);
    let d = daemon(fixture::config(&[("fx", &[])]), &["fx"]);
    let socket = d.socket().to_path_buf();
    let shim = || shim_command(&socket);
    let fixture = || Command::new(bin("mcpd-fixture"));
    let r = start_to_answer("mcp-shim → mcpd (fixture)", n, Duration::ZERO, &shim);
    rows.push(start_row(
        "**`mcp-shim` → warm mcpd, 1 fixture upstream**, back to back",
        &r,
    ));
    let r = start_to_answer("mcp-shim → mcpd (fixture)", n, gap, &shim);
    rows.push(start_row(
        "**`mcp-shim` → warm mcpd, 1 fixture upstream**, 100 ms idle before each",
        &r,
    ));
    let direct = || {
        let mut cmd = shim_command(&socket);
        cmd.arg("--direct");
        cmd
    };
    let r = start_to_answer(
        "mcp-shim --direct → mcpd (fixture)",
        n,
        Duration::ZERO,
        &direct,
    );
    rows.push(start_row(
        "`mcp-shim --direct` → warm mcpd, 1 fixture upstream, back to back",
        &r,
    ));
    let r = start_to_answer("mcpd-fixture directly", n, Duration::ZERO, &fixture);
    rows.push(start_row(
        "`mcpd-fixture` spawned directly (baseline), back to back",
        &r,
    ));
    let r = start_to_answer("mcpd-fixture directly", n, gap, &fixture);
    rows.push(start_row(
        "`mcpd-fixture` spawned directly (baseline), 100 ms idle before each",
        &r,
    ));
    drop(d);

    if let Some(server) = ctx.everything_server() {
        let d = daemon(
            json!({"mcpServers": {"everything": server}}),
            &["everything"],
        );
        let socket = d.socket().to_path_buf();
        let r = start_to_answer("mcp-shim → mcpd (everything)", n, gap, &|| {
            shim_command(&socket)
        });
        rows.push(start_row(
            "**`mcp-shim` → warm mcpd, server-everything upstream**, 100 ms idle before each",
            &r,
        ));
        drop(d);
        let r = start_to_answer("server-everything directly", ctx.n(20), gap, &|| {
            ctx.everything_command().unwrap()
        });
        rows.push(start_row(
            "server-everything spawned directly with node (what a client pays without mcpd)",
            &r,
        ));
    }
    table(&START_HEADER, &rows);
    println!(
        "\n`mcp-shim --version`, spawn to exit (process start cost alone): median {}, p95 {} \
         over {} runs.",
        t(o.p50),
        t(o.p95),
        o.n
    );
    println!(
        "Timed from just before `spawn()`; `initialize` is sent at once, `notifications/initialized` \
         and `tools/list` after its answer (as SDK clients do). Target (issue 2): under 5 ms."
    );
    if ctx.everything.is_none() {
        ctx.note_no_everything();
    }
}

// ---------------------------------------------------------------------------------------------
// 2. tools/call round trip.

/// One way of reaching the `echo` tool, and the processes that work for each call on it.
struct Route {
    what: String,
    conn: Conn,
    tool: &'static str,
    /// (role, pid) of every process on the way, for CPU time per call.
    procs: Vec<(&'static str, u32)>,
}

/// What [`round_trips`] measured on one route.
struct Measured {
    samples: Vec<Duration>,
    /// CPU time per role, summed over the timed calls.
    cpu: Vec<(&'static str, Duration)>,
}

/// CPU time `pid` has used so far, all its threads (`se.sum_exec_runtime`, nanosecond
/// precision, unlike the clock ticks of `/proc/PID/stat`).
fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let mut ms = 0.0;
    for task in tasks.flatten() {
        let text = fs::read_to_string(task.path().join("sched")).unwrap_or_default();
        ms += text
            .lines()
            .find(|l| l.starts_with("se.sum_exec_runtime"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    Duration::from_secs_f64(ms / 1e3)
}

/// Calls `echo` `calls` times on every route, one call in flight, after a warm-up. Routes take
/// turns in blocks of 500 calls so that a slow spell of a noisy machine hits all of them alike.
fn round_trips(routes: &mut [Route], calls: usize, arguments: &str) -> Vec<Measured> {
    let block = 500.min(calls);
    let warmup = (calls / 10).max(100);
    for r in routes.iter_mut() {
        for _ in 0..warmup {
            let a = r.conn.call(r.tool, arguments);
            assert!(a.ok(), "{}: {} failed: {}", r.conn.what, r.tool, a.msg);
        }
    }
    let mut out: Vec<Measured> = routes
        .iter()
        .map(|r| Measured {
            samples: Vec::with_capacity(calls),
            cpu: r
                .procs
                .iter()
                .map(|(role, _)| (*role, Duration::ZERO))
                .collect(),
        })
        .collect();
    let mut done = 0;
    while done < calls {
        let k = block.min(calls - done);
        for (r, m) in routes.iter_mut().zip(out.iter_mut()) {
            let before: Vec<Duration> = r.procs.iter().map(|(_, pid)| cpu_time(*pid)).collect();
            for _ in 0..k {
                let a = r.conn.call(r.tool, arguments);
                assert!(a.ok(), "{}: {} failed: {}", r.conn.what, r.tool, a.msg);
                m.samples.push(a.took);
            }
            for (i, (_, pid)) in r.procs.iter().enumerate() {
                m.cpu[i].1 += cpu_time(*pid).saturating_sub(before[i]);
            }
        }
        done += k;
    }
    out
}

/// `+12.3 µs` or `-4.5 µs`.
fn signed(us: f64) -> String {
    if us < 0.0 {
        format!("−{}", t(-us))
    } else {
        format!("+{}", t(us))
    }
}

fn latency_table(routes: &[Route], measured: &[Measured]) {
    let base = stats(&measured[0].samples);
    let rows: Vec<Vec<String>> = routes
        .iter()
        .zip(measured)
        .enumerate()
        .map(|(i, (r, m))| {
            let st = stats(&m.samples);
            let (added50, ratio50, added99, ratio99) = if i == 0 {
                (
                    "–".to_owned(),
                    "1.00×".to_owned(),
                    "–".to_owned(),
                    "1.00×".to_owned(),
                )
            } else {
                (
                    format!("**{}**", signed(st.p50 - base.p50)),
                    format!("{:.2}×", st.p50 / base.p50),
                    signed(st.p99 - base.p99),
                    format!("{:.2}×", st.p99 / base.p99),
                )
            };
            vec![
                r.what.clone(),
                st.n.to_string(),
                t(st.p50),
                t(st.p99),
                t(st.mean),
                added50,
                ratio50,
                added99,
                ratio99,
            ]
        })
        .collect();
    table(
        &[
            "route",
            "calls",
            "median",
            "p99",
            "mean",
            "**added at median**",
            "ratio at median",
            "added at p99",
            "ratio at p99",
        ],
        &rows,
    );
    println!("\nCPU time per call (all threads, from `/proc/PID/task/*/sched`):\n");
    let rows: Vec<Vec<String>> = routes
        .iter()
        .zip(measured)
        .map(|(r, m)| {
            let n = m.samples.len().max(1) as f64;
            let per = |d: Duration| d.as_secs_f64() * 1e6 / n;
            let total: f64 = m.cpu.iter().map(|(_, d)| per(*d)).sum();
            let parts = m
                .cpu
                .iter()
                .map(|(role, d)| format!("{role} {}", t(per(*d))))
                .collect::<Vec<_>>()
                .join(", ");
            vec![r.what.clone(), parts, t(total)]
        })
        .collect();
    table(&["route", "per process", "total"], &rows);
}

fn latency(ctx: &Ctx) {
    let calls = ctx.n(10_000);
    let hello = r#"{"message":"hello"}"#;
    let d = daemon(fixture::config(&[("fx", &[])]), &["fx"]);
    let mut direct = Conn::spawn(
        "mcpd-fixture directly",
        &mut Command::new(bin("mcpd-fixture")),
        Stdio::null(),
    );
    direct.initialize();
    let direct_pid = direct.pid().unwrap();
    let mut socket = Conn::attach("socket session", d.socket()).unwrap();
    socket.initialize();
    let upstream: u32 = text_of(&socket.call("fx__pid", "{}")).parse().unwrap();
    let mut shim = Conn::spawn("mcp-shim", &mut shim_command(d.socket()), Stdio::null());
    shim.initialize();
    let shim_pid = shim.pid().unwrap();
    let shim_fresh = mem(shim_pid).unwrap_or_default();
    let mut routes = vec![
        Route {
            what: "`mcpd-fixture` over stdio, directly".to_owned(),
            conn: direct,
            tool: "echo",
            procs: vec![("fixture", direct_pid)],
        },
        Route {
            what: "raw socket → mcpd → fixture (no shim)".to_owned(),
            conn: socket,
            tool: "fx__echo",
            procs: vec![("mcpd", d.pid()), ("fixture", upstream)],
        },
        Route {
            what: "**`mcp-shim` → mcpd → fixture**".to_owned(),
            conn: shim,
            tool: "fx__echo",
            procs: vec![
                ("mcp-shim", shim_pid),
                ("mcpd", d.pid()),
                ("fixture", upstream),
            ],
        },
    ];
    println!("### `echo` of the Rust fixture (a 5-byte message)\n");
    let m = round_trips(&mut routes, calls, hello);
    latency_table(&routes, &m);
    let shim_after = mem(shim_pid).unwrap_or_default();
    println!(
        "\n`mcp-shim` while attached: VmRSS {} fresh; after {} calls VmRSS {}, VmHWM {}.",
        kib(shim_fresh.rss),
        calls + (calls / 10).max(100),
        kib(shim_after.rss),
        kib(shim_after.hwm)
    );
    let daemon_mem = mem(d.pid()).unwrap_or_default();
    println!(
        "mcpd (1 fixture upstream) after the run: VmRSS {}, VmHWM {}, {} threads.",
        kib(daemon_mem.rss),
        kib(daemon_mem.hwm),
        daemon_mem.threads
    );

    // A 4 KiB message shows the per-byte costs (line splitting, envelope parsing, copies).
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(4096));
    println!("\n### `echo` of the Rust fixture, 4 KiB message\n");
    let m = round_trips(&mut routes, ctx.n(2_000), &big);
    latency_table(&routes, &m);
    for r in routes {
        r.conn.close();
    }
    drop(d);

    if let Some(server) = ctx.everything_server() {
        let d = daemon(
            json!({"mcpServers": {"everything": server}}),
            &["everything"],
        );
        let mut direct = Conn::spawn(
            "server-everything directly",
            &mut ctx.everything_command().unwrap(),
            Stdio::null(),
        );
        direct.initialize();
        let direct_pid = direct.pid().unwrap();
        let mut shim = Conn::spawn("mcp-shim", &mut shim_command(d.socket()), Stdio::null());
        shim.initialize();
        let node = descendants_of(d.pid()).first().copied().unwrap_or(0);
        let mut routes = vec![
            Route {
                what: "server-everything (node) over stdio, directly".to_owned(),
                conn: direct,
                tool: "echo",
                procs: vec![("node", direct_pid)],
            },
            Route {
                what: "**`mcp-shim` → mcpd → server-everything**".to_owned(),
                procs: vec![
                    ("mcp-shim", shim.pid().unwrap()),
                    ("mcpd", d.pid()),
                    ("node", node),
                ],
                conn: shim,
                tool: "everything__echo",
            },
        ];
        println!("\n### `echo` of server-everything (node)\n");
        let m = round_trips(&mut routes, calls, hello);
        latency_table(&routes, &m);
        for r in routes {
            r.conn.close();
        }
    }
    println!(
        "\nEach call is written, then its answer awaited (one in flight); timed from the write \
         to the answer's newline. Routes take turns in blocks of 500 calls, after {} warm-up \
         calls each. Target (issue 2): under 50 µs added at the median.",
        (calls / 10).max(100)
    );
    if ctx.everything.is_none() {
        ctx.note_no_everything();
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Memory.

fn rss(ctx: &Ctx) {
    let mut rows = Vec::new();
    // A floor: what the smallest dynamically linked program costs on this machine.
    let mut floor = Command::new("sleep").arg("30").spawn().expect("sleep runs");
    std::thread::sleep(Duration::from_millis(100));
    rows.push(mem_row(
        "`sleep 30` (coreutils, a floor for comparison)",
        mem(floor.id()),
    ));
    let _ = floor.kill();
    let _ = floor.wait();

    let empty = daemon(json!({"mcpServers": {}}), &[]);
    std::thread::sleep(Duration::from_millis(500));
    rows.push(mem_row("mcpd, no upstreams, no clients", mem(empty.pid())));
    drop(empty);

    let mut upstreams = String::from("–");
    let shim_maps;
    if let Some(server) = ctx.everything_server() {
        let d = daemon(
            json!({"mcpServers": {"everything": server}}),
            &["everything"],
        );
        let mut shim = Conn::spawn("mcp-shim", &mut shim_command(d.socket()), Stdio::null());
        shim.initialize();
        let (_, tools, _, _) = shim.list_tools();
        let a = shim.call("everything__echo", r#"{"message":"hi"}"#);
        assert!(a.ok(), "{}", a.msg);
        // Idle: let start-up garbage settle.
        std::thread::sleep(Duration::from_secs(2));
        let kids = descendants_of(d.pid());
        let status = d.status();
        upstreams = format!(
            "{} configured upstream(s) ({} ready, {tools} tools); {} child process(es) of mcpd: {}",
            status.servers.len(),
            status
                .servers
                .iter()
                .filter(|s| s.state == ServerState::Ready)
                .count(),
            kids.len(),
            kids.iter()
                .map(|p| mcpd_tests::process::cmdline(*p)
                    .unwrap_or_default()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        );
        rows.push(mem_row(
            "**mcpd, idle, server-everything attached, 1 client** (daemon only)",
            mem(d.pid()),
        ));
        rows.push(mem_row(
            "its child: server-everything (node), for comparison",
            kids.first().and_then(|p| mem(*p)),
        ));
        rows.push(mem_row(
            "**`mcp-shim`, attached, idle**",
            mem(shim.pid().unwrap()),
        ));
        shim_maps = rss_by_mapping(shim.pid().unwrap());
        shim.close();
    } else {
        let d = daemon(fixture::config(&[("fx", &[])]), &["fx"]);
        let mut shim = Conn::spawn("mcp-shim", &mut shim_command(d.socket()), Stdio::null());
        shim.initialize();
        shim.list_tools();
        std::thread::sleep(Duration::from_secs(2));
        rows.push(mem_row(
            "mcpd, idle, 1 fixture upstream, 1 client",
            mem(d.pid()),
        ));
        rows.push(mem_row(
            "**`mcp-shim`, attached, idle**",
            mem(shim.pid().unwrap()),
        ));
        shim_maps = rss_by_mapping(shim.pid().unwrap());
        shim.close();
    }

    let names: Vec<String> = (0..10).map(|i| format!("fx{i}")).collect();
    let servers: Vec<(&str, &[&str])> = names
        .iter()
        .map(|n| (n.as_str(), &["--tools", "50"][..]))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let d = daemon(fixture::config(&servers), &refs);
    let mut shim = Conn::spawn("mcp-shim", &mut shim_command(d.socket()), Stdio::null());
    shim.initialize();
    shim.list_tools();
    std::thread::sleep(Duration::from_secs(1));
    rows.push(mem_row(
        "mcpd, idle, 10 fixture upstreams / 570 tools, 1 client",
        mem(d.pid()),
    ));
    shim.close();

    table(&MEM_HEADER, &rows);
    println!("\nUpstreams: {upstreams}.");
    println!("\nThe attached `mcp-shim`'s resident pages by mapping (`/proc/PID/smaps`):\n");
    let rows: Vec<Vec<String>> = shim_maps
        .iter()
        .map(|(name, kb)| vec![format!("`{name}`"), format!("{kb} KiB")])
        .collect();
    table(&["mapping", "Rss"], &rows);
    println!(
        "From `/proc/PID/status`. RssFile is mostly shared libraries' and the executable's pages, \
         shared with other processes mapping the same files; RssAnon is the process's own. Pss \
         divides shared pages among the processes that map them; Private (USS) is what one \
         more such process adds. Target (issue 2): shim RSS under 2 MiB."
    );
    if ctx.everything.is_none() {
        ctx.note_no_everything();
    }
}

// ---------------------------------------------------------------------------------------------
// 4. tools/list with 10 upstreams and 500+ tools.

fn ten_fixtures(extra: &[&str]) -> Value {
    let mut args: Vec<&str> = vec!["--tools", "50"];
    args.extend_from_slice(extra);
    let names: Vec<String> = (0..10).map(|i| format!("fx{i}")).collect();
    let servers: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), &args[..])).collect();
    fixture::config(&servers)
}

const TEN_FIXTURE_TOOLS: usize = 10 * (50 + fixture::FIXED_TOOLS.len());

fn catalog(ctx: &Ctx) {
    let names: Vec<String> = (0..10).map(|i| format!("fx{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let d = daemon(ten_fixtures(&[]), &refs);
    let mut rows = Vec::new();

    // An attached client listing again and again.
    let mut c = Conn::attach("socket session", d.socket()).unwrap();
    c.initialize();
    let mut full = Vec::new();
    let mut first = Vec::new();
    let (mut tools, mut pages, mut bytes) = (0, 0, 0);
    let n = ctx.n(500);
    for i in 0..n + 20 {
        let a = c.request("tools/list", "{}");
        let (took, t_, p, b) = c.list_tools();
        if i >= 20 {
            first.push(a.took);
            full.push(took);
        }
        (tools, pages, bytes) = (t_, p, b);
    }
    c.close();
    let mut shim = Conn::spawn("mcp-shim", &mut shim_command(d.socket()), Stdio::null());
    shim.initialize();
    let mut full_shim = Vec::new();
    for i in 0..n + 20 {
        let (took, _, _, _) = shim.list_tools();
        if i >= 20 {
            full_shim.push(took);
        }
    }
    shim.close();
    let row = |what: &str, s: &[Duration], pages: usize| {
        let st = stats(s);
        vec![
            what.to_owned(),
            st.n.to_string(),
            pages.to_string(),
            t(st.p50),
            t(st.p95),
            t(st.p99),
            t(st.max),
        ]
    };
    rows.push(row("first page (100 tools), raw socket session", &first, 1));
    rows.push(row(
        &format!("**all {tools} tools**, raw socket session"),
        &full,
        pages,
    ));
    rows.push(row(
        &format!("**all {tools} tools**, through `mcp-shim`"),
        &full_shim,
        pages,
    ));

    // A new client each time: spawn the shim, initialize, list everything.
    let mut fresh = Vec::new();
    for i in 0..ctx.n(100) + 5 {
        let started = Instant::now();
        let mut c = Conn::spawn("mcp-shim", &mut shim_command(d.socket()), Stdio::null());
        c.initialize();
        let (_, got, _, _) = c.list_tools();
        let took = started.elapsed();
        assert_eq!(got, tools);
        c.close();
        if i >= 5 {
            fresh.push(took);
        }
    }
    rows.push(row(
        &format!("**new `mcp-shim` client: spawn + initialize + all {tools} tools**"),
        &fresh,
        pages,
    ));
    table(
        &["what", "runs", "pages", "median", "p95", "p99", "max"],
        &rows,
    );
    println!(
        "\n10 `mcpd-fixture --tools 50` upstreams ({TEN_FIXTURE_TOOLS} tools with the fixed ones), \
         all ready; the daemon pages by 100. The full list is {bytes} bytes of JSON over {pages} \
         pages. \"All tools\" rows add up the waits for each page (this client's own JSON parsing \
         between pages left out); the new-client row is wall-clock from spawn to the last page \
         parsed, as a client would see it."
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Daemon start to a complete catalog.

/// The fixture's `--delay-init-ms` flag, if this build of it has one.
fn fixture_has_delay_flag() -> bool {
    Command::new(bin("mcpd-fixture"))
        .args(["--delay-init-ms", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct StartSample {
    socket: Duration,
    init: Duration,
    full: Duration,
    complete_at_first: bool,
}

/// Starts `d`, attaches as soon as possible, and lists until the catalog is complete.
fn start_to_catalog(d: &mut BenchDaemon) -> StartSample {
    let t0 = d.start();
    let mut c = d.attach_asap(Duration::from_secs(30));
    let socket = t0.elapsed();
    c.initialize();
    let init = t0.elapsed();
    let mut complete_at_first = true;
    loop {
        let (_, tools, _, _) = c.list_tools();
        if tools >= TEN_FIXTURE_TOOLS {
            break;
        }
        complete_at_first = false;
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the catalog never became complete ({tools} tools)"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let full = t0.elapsed();
    c.close();
    StartSample {
        socket,
        init,
        full,
        complete_at_first,
    }
}

/// Waits until the daemon's cache file lists all ten servers.
fn wait_cache(d: &BenchDaemon) -> bool {
    mcpd_tests::wait_until(Duration::from_secs(10), || {
        fs::read(&d.cache_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["servers"].as_object().map(serde_json::Map::len))
            .is_some_and(|n| n >= 10)
    })
}

fn startup(ctx: &Ctx) {
    let mut delays = vec![0u64];
    if fixture_has_delay_flag() {
        delays.push(500);
    } else {
        println!(
            "(this `mcpd-fixture` has no `--delay-init-ms`: only the no-delay rows are measured)\n"
        );
    }
    let n = ctx.n(10);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for delay in delays {
        let ms = delay.to_string();
        let extra: Vec<&str> = if delay > 0 {
            vec!["--delay-init-ms", &ms]
        } else {
            vec![]
        };
        let config = ten_fixtures(&extra);
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let mut d = BenchDaemon::new(&config);
            cold.push(start_to_catalog(&mut d));
            if !wait_cache(&d) {
                notes.push(format!("delay {delay} ms: the cache file was not complete"));
            }
            d.stop(libc::SIGTERM);
            d.reap_leftovers();
            warm.push(start_to_catalog(&mut d));
            d.stop(libc::SIGTERM);
            d.reap_leftovers();
        }
        for (cache, samples) in [
            ("cold (empty cache)", &cold),
            ("warm (cache from the first start)", &warm),
        ] {
            let sock = stats(&samples.iter().map(|s| s.socket).collect::<Vec<_>>());
            let init = stats(&samples.iter().map(|s| s.init).collect::<Vec<_>>());
            let full = stats(&samples.iter().map(|s| s.full).collect::<Vec<_>>());
            let first = samples.iter().filter(|s| s.complete_at_first).count();
            rows.push(vec![
                format!("{delay} ms"),
                cache.to_owned(),
                full.n.to_string(),
                t(sock.p50),
                t(init.p50),
                format!("**{}**", t(full.p50)),
                t(full.p95),
                t(full.max),
                format!("{first}/{}", samples.len()),
            ]);
        }
    }
    table(
        &[
            "upstream start delay",
            "catalog cache",
            "runs",
            "socket answers",
            "initialize answered",
            "**complete catalog, median**",
            "p95",
            "max",
            "complete at the first tools/list",
        ],
        &rows,
    );
    println!(
        "\n10 `mcpd-fixture --tools 50` upstreams ({TEN_FIXTURE_TOOLS} tools), each answering \
         `initialize` only after the delay (a slow `npx` start). Timed from just before mcpd is \
         spawned; the client attaches over the socket as soon as it answers (tried every \
         millisecond), initializes and pages through `tools/list` until it has all \
         {TEN_FIXTURE_TOOLS} tools. Warm: mcpd stopped (SIGTERM) once the cache file holds all \
         ten servers, then started again in the same tree."
    );
    for note in notes {
        println!("- {note}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Recovery: an upstream crash, a daemon restart.

/// Calls `fx__echo` until it succeeds; (time since `since`, failed attempts, first error).
fn until_ok(c: &mut Conn, since: Instant) -> (Duration, usize, Option<String>) {
    let mut failed = 0;
    let mut first_error = None;
    loop {
        match c.try_call("fx__echo", r#"{"message":"back?"}"#) {
            Ok(a) if a.ok() => return (since.elapsed(), failed, first_error),
            Ok(a) => {
                failed += 1;
                if first_error.is_none() {
                    first_error =
                        Some(a.msg["error"]["message"].as_str().unwrap_or("?").to_owned());
                }
            }
            Err(e) => panic!("{}: no answer while recovering: {e}", c.what),
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "no recovery within 120 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn shim_reconnects() -> bool {
    Command::new(bin("mcp-shim"))
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--reconnect-timeout"))
}

fn recovery(ctx: &Ctx) {
    let n = ctx.n(5);
    let mut rows = Vec::new();
    let mut errors = Vec::new();

    // Upstream crash: a fresh daemon each time, so that each crash is the first (the restart
    // backoff doubles while a server keeps failing); then a second crash soon after.
    let mut crashes: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut crash_fails = [0usize; 2];
    for _ in 0..n {
        let d = daemon(fixture::config(&[("fx", &[])]), &["fx"]);
        let mut c = Conn::spawn("mcp-shim", &mut shim_command(d.socket()), Stdio::null());
        c.initialize();
        for k in 0..2 {
            let pid: u32 = text_of(&c.call("fx__pid", "{}")).parse().expect("a pid");
            let t0 = Instant::now();
            signal(pid, libc::SIGKILL);
            let (took, failed, err) = until_ok(&mut c, t0);
            crashes[k].push(took);
            crash_fails[k] += failed;
            if let Some(e) = err
                && !errors.contains(&e)
            {
                errors.push(e);
            }
            let new_pid: u32 = text_of(&c.call("fx__pid", "{}")).parse().expect("a pid");
            assert_ne!(pid, new_pid, "the upstream was not restarted");
            assert!(!process_alive(pid));
        }
        c.close();
    }
    let row = |what: &str, s: &[Duration], fails: usize| {
        let st = stats(s);
        vec![
            what.to_owned(),
            st.n.to_string(),
            format!("**{}**", t(st.p50)),
            t(st.min),
            t(st.max),
            format!("{:.0}", fails as f64 / st.n.max(1) as f64),
        ]
    };
    rows.push(row(
        "upstream SIGKILLed → first good `tools/call` (first crash)",
        &crashes[0],
        crash_fails[0],
    ));
    rows.push(row(
        "the same upstream SIGKILLed again right after it came back",
        &crashes[1],
        crash_fails[1],
    ));

    let mut orphans = 0;
    if shim_reconnects() {
        for (sig, name) in [(libc::SIGKILL, "SIGKILL"), (libc::SIGTERM, "SIGTERM")] {
            let mut took = Vec::new();
            let mut after_spawn = Vec::new();
            let mut stops = Vec::new();
            let mut fails = 0;
            for _ in 0..n {
                let mut d = BenchDaemon::new(&fixture::config(&[("fx", &[])]));
                d.start();
                d.attach_asap(Duration::from_secs(30)).close();
                let mut cmd = Command::new(bin("mcp-shim"));
                cmd.env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .args(["--socket", &s(&d.socket), "--reconnect-timeout", "30"]);
                let mut c = Conn::spawn("mcp-shim --reconnect-timeout 30", &mut cmd, Stdio::null());
                c.initialize();
                let (_, _, _) = until_ok(&mut c, Instant::now());
                let t0 = Instant::now();
                stops.push(d.stop(sig));
                let spawned = d.start();
                let (_, failed, err) = until_ok(&mut c, t0);
                took.push(t0.elapsed());
                after_spawn.push(spawned.elapsed());
                fails += failed;
                if let Some(e) = err
                    && !errors.contains(&e)
                {
                    errors.push(e);
                }
                // Whatever the killed daemon left running, still alive once the new one serves.
                d.remember_children();
                let new_children = descendants_of(d.pid());
                orphans += d
                    .seen
                    .iter()
                    .filter(|p| p.alive() && !new_children.contains(&p.pid))
                    .count();
                c.close();
            }
            let st = stats(&stops);
            let mut r = row(
                &format!("mcpd {name}ed and started again → first good call through the same shim"),
                &took,
                fails,
            );
            let a = stats(&after_spawn);
            r[0] = format!(
                "{} (the stop took {} at the median; from the new mcpd's spawn: {})",
                r[0],
                t(st.p50),
                t(a.p50)
            );
            rows.push(r);
        }
    } else {
        println!(
            "(this `mcp-shim` has no `--reconnect-timeout`: the daemon-restart rows are left out)\n"
        );
    }
    table(
        &[
            "event → recovery",
            "runs",
            "median",
            "min",
            "max",
            "errors seen per run",
        ],
        &rows,
    );
    println!(
        "\nThe client calls `fx__echo` every millisecond until one succeeds; the calls in between \
         are answered with errors (`errors seen`). Errors seen: {errors:?}."
    );
    if shim_reconnects() {
        println!(
            "Processes of the killed daemon still alive after the new one answered: {orphans} \
             (over {} restarts).",
            2 * n
        );
    }
}
