//! `mcpctl top`: a live view of the servers by memory or CPU, with the request rate, like
//! `htop` or `systemd-cgtop`. On a terminal it redraws every interval and `q` quits; with
//! `--once` (or `--iterations N`) it prints that many frames and exits, which is what scripts
//! and pipes use.

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use mcpd_proto::{ControlRequest, ControlResponse, DaemonStatus};

use crate::client::ControlClient;
use crate::contain::{bytes, cpu};

/// What to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Memory of the server's tree, largest first.
    Mem,
    /// CPU use over the last interval, largest first.
    Cpu,
}

/// `mcpctl top` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time between frames.
    pub interval: Duration,
    /// Frames to print before exiting; `None`: until `q`.
    pub iterations: Option<u64>,
    /// Sort order.
    pub sort: SortBy,
}

/// One server's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Server name.
    pub name: String,
    /// State.
    pub state: String,
    /// Leader pid.
    pub pid: Option<u32>,
    /// Processes in its tree.
    pub processes: Option<u32>,
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// CPU use over the interval, in percent of one CPU.
    pub cpu_percent: Option<f64>,
    /// CPU time so far, in ms.
    pub cpu_ms: Option<u64>,
    /// Requests per second over the interval.
    pub requests_per_s: Option<f64>,
    /// The sandbox, shortened.
    pub sandbox: String,
}

/// Rows from two samples `elapsed` apart (`before` may be missing: no rates yet).
pub fn rows(
    before: Option<&DaemonStatus>,
    now: &DaemonStatus,
    elapsed: Duration,
    sort: SortBy,
) -> Vec<Row> {
    let secs = elapsed.as_secs_f64().max(0.001);
    let mut rows: Vec<Row> = now
        .servers
        .iter()
        .map(|s| {
            let c = s.contain.as_ref();
            let prev = before
                .and_then(|b| {
                    b.servers
                        .iter()
                        .find(|p| p.name == s.name && p.pid == s.pid)
                })
                .and_then(|p| p.contain.as_ref());
            let cpu_percent = match (c.and_then(|c| c.cpu_ms), prev.and_then(|p| p.cpu_ms)) {
                (Some(n), Some(p)) => Some(n.saturating_sub(p) as f64 / 10.0 / secs),
                _ => None,
            };
            let requests_per_s = match (c, prev) {
                (Some(n), Some(p)) => Some(n.requests.saturating_sub(p.requests) as f64 / secs),
                _ => None,
            };
            Row {
                name: s.name.clone(),
                state: s.state.as_str().to_owned(),
                pid: s.pid,
                processes: c.and_then(|c| c.processes),
                memory: c.and_then(|c| c.memory_bytes),
                cpu_percent,
                cpu_ms: c.and_then(|c| c.cpu_ms),
                requests_per_s,
                sandbox: c.map(|c| short_sandbox(&c.sandbox)).unwrap_or_default(),
            }
        })
        .collect();
    let key = |r: &Row| match sort {
        SortBy::Mem => r.memory.unwrap_or(0) as f64,
        SortBy::Cpu => r.cpu_percent.unwrap_or(0.0),
    };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    rows
}

/// `landlock ABI 7, protect (38 paths protected)` → `protect`; `off (...)` → `off`.
fn short_sandbox(s: &str) -> String {
    let mode = ["protect", "strict", "off", "none"]
        .into_iter()
        .find(|m| s.contains(m))
        .unwrap_or("?");
    if s.contains("TCP") {
        format!("{mode}+net")
    } else {
        mode.to_owned()
    }
}

/// The frame as text.
pub fn render(status: &DaemonStatus, rows: &[Row], sort: SortBy, interactive: bool) -> String {
    let mut out = String::new();
    let total: u64 = rows.iter().filter_map(|r| r.memory).sum();
    let total_cpu: f64 = rows.iter().filter_map(|r| r.cpu_percent).sum();
    out.push_str(&format!(
        "mcpd {} (pid {}): {} servers, {} sessions, memory {}, cpu {:.1}%  sorted by {}{}\n",
        status.version,
        status.pid,
        rows.len(),
        status.sessions.len(),
        bytes(total),
        total_cpu,
        match sort {
            SortBy::Mem => "memory",
            SortBy::Cpu => "cpu",
        },
        if interactive {
            "  (q quits, m/c sort)"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "{:<24} {:<12} {:>8} {:>5} {:>9} {:>6} {:>9} {:>7} {}\n",
        "SERVER", "STATE", "PID", "PROCS", "MEM", "CPU%", "CPU-TIME", "REQ/S", "SANDBOX"
    ));
    let dash = || "-".to_owned();
    for r in rows {
        let name: String = r
            .name
            .chars()
            .filter(|c| !c.is_control())
            .take(24)
            .collect();
        out.push_str(&format!(
            "{:<24} {:<12} {:>8} {:>5} {:>9} {:>6} {:>9} {:>7} {}\n",
            name,
            r.state,
            r.pid.map_or_else(dash, |p| p.to_string()),
            r.processes.map_or_else(dash, |p| p.to_string()),
            r.memory.map_or_else(dash, bytes),
            r.cpu_percent.map_or_else(dash, |c| format!("{c:.1}")),
            r.cpu_ms.map_or_else(dash, cpu),
            r.requests_per_s.map_or_else(dash, |q| format!("{q:.1}")),
            r.sandbox,
        ));
    }
    out
}

fn sample(client: &mut ControlClient) -> Result<DaemonStatus> {
    match client.request(&ControlRequest::Status, Duration::from_secs(10))? {
        ControlResponse::Status(s) => Ok(s),
        other => anyhow::bail!("mcpd answered status with {other:?}"),
    }
}

/// Runs `mcpctl top`.
pub fn run(socket: &std::path::Path, options: &Options) -> Result<()> {
    let mut client = ControlClient::connect(socket, Duration::from_secs(10))?;
    let interactive = options.iterations.is_none()
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal();
    let quit = Arc::new(AtomicBool::new(false));
    let sort = Arc::new(std::sync::Mutex::new(options.sort));
    let _raw = if interactive {
        let guard = RawMode::enter();
        let (quit, sort) = (Arc::clone(&quit), Arc::clone(&sort));
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut byte = [0u8; 1];
            while stdin.read(&mut byte).is_ok_and(|n| n == 1) {
                match byte[0] {
                    b'q' | b'Q' | 3 => {
                        quit.store(true, Ordering::SeqCst);
                        return;
                    }
                    b'm' => *sort.lock().unwrap_or_else(|e| e.into_inner()) = SortBy::Mem,
                    b'c' => *sort.lock().unwrap_or_else(|e| e.into_inner()) = SortBy::Cpu,
                    _ => {}
                }
            }
        });
        guard
    } else {
        None
    };
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&quit));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&quit));

    // Rates need two samples: the first frame comes one interval after the first sample.
    let mut before = sample(&mut client)?;
    let mut at = Instant::now();
    let mut printed = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        if !wait(options.interval, &quit) {
            break;
        }
        let now = sample(&mut client)?;
        let elapsed = at.elapsed();
        at = Instant::now();
        let sort_by = *sort.lock().unwrap_or_else(|e| e.into_inner());
        let frame = render(
            &now,
            &rows(Some(&before), &now, elapsed, sort_by),
            sort_by,
            interactive,
        );
        let text = if interactive {
            // Home, clear, frame; in raw mode lines need \r\n.
            format!("\x1b[H\x1b[2J{}", frame.replace('\n', "\r\n"))
        } else if printed > 0 {
            format!("\n{frame}")
        } else {
            frame
        };
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break; // the reader went away (a pipe closed)
        }
        printed += 1;
        before = now;
        if options.iterations.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(())
}

/// Sleeps `d` unless asked to quit; false when asked.
fn wait(d: Duration, quit: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if quit.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25).min(end - Instant::now()));
    }
    !quit.load(Ordering::SeqCst)
}

/// The terminal in non-canonical, no-echo mode (keys arrive one by one); restored on drop.
struct RawMode(libc::termios);

impl RawMode {
    fn enter() -> Option<Self> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a valid termios struct.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(Self(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
        let _ = std::io::stdout().write_all(b"\n");
    }
}

/// Parses `--interval` (seconds, fractions allowed).
pub fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err("the interval is between 0.1 and 3600 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}
