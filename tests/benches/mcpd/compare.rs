//! Issue 18: the figures users compare side by side. mcpd against the direct route and against
//! two other MCP proxies from crates.io, mcpzip 0.1.0 and dynamic-mcp 1.5.0 (binary `dmcp`),
//! installed pinned by [`peer_bin`] on first use into a cache directory and reused after.
//!
//! - `peers_latency`: one call in flight, the fixture's `echo`, the routes interleaved (in
//!   blocks of `$MCPD_BENCH_BLOCK` calls, 250 by default, `$MCPD_BENCH_CALLS` per route, 5,000;
//!   with `mcp-shim --direct`, whose shim hands its stdio to mcpd, beside the relaying shim), the
//!   floors: the same number of processes between client and fixture as mcpd's routes, each a
//!   plain line copier (`mcpd-hop`), so that what mcpd costs beyond its hops shows as a ratio.
//! - `throughput`: clients × calls in flight (1×1, 1×16, 8×8, 32×4), calls/s and CPU per call of
//!   each kind of process (also with `mcp-shim --direct`).
//! - `slow4`: the fixture's `sleep 1000 ms` called 4 times at once by one client.
//! - `scaling`: the full `tools/list` through `mcp-shim` as the catalog grows to 5,000 tools.
//! - `fleet`: 5 clients × 10 server-everything: memory (Pss) and processes.
//! - `new_client`: a new `mcp-shim` client to its complete `tools/list`, 10 server-everything.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use mcpd_proto::wire::{ControlRequest, ControlResponse};

use super::*;

/// The two seeds, as `(crate, version, binary)`.
const PEERS: [(&str, &str, &str); 2] = [
    ("mcpzip", "0.1.0", "mcpzip"),
    ("dynamic-mcp", "1.5.0", "dmcp"),
];

/// Where the seeds are installed: `$MCPD_BENCH_PEERS_DIR`, else
/// `$XDG_CACHE_HOME/mcpd-bench/peers` (`~/.cache/...`).
fn peers_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("MCPD_BENCH_PEERS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("mcpd-bench/peers")
}

/// The path of a seed's binary, installing it (pinned, `--locked`, from crates.io) the first
/// time. `Err` says why it is missing; the rows that need it are then left out.
fn peer_bin(krate: &str) -> Result<PathBuf, String> {
    let (krate, version, binary) = PEERS
        .iter()
        .copied()
        .find(|(c, _, _)| *c == krate)
        .ok_or_else(|| format!("unknown peer {krate}"))?;
    let root = peers_root().join(format!("{krate}-{version}"));
    let path = root.join("bin").join(binary);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!(
        "installing {krate} {version} into {} (once)",
        root.display()
    );
    let status = Command::new("cargo")
        .args(["install", "--locked", "--quiet", "--root"])
        .arg(&root)
        .args([krate, "--version", version])
        .env("CARGO_INCREMENTAL", "0")
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if status.success() && path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "`cargo install --locked --root {} {krate} --version {version}` failed ({status})",
            root.display()
        ))
    }
}

/// A seed proxy with `servers` as its upstreams, in its own temp tree (its `HOME`).
struct Seed {
    _dir: TempDir,
    command: Command,
}

impl Seed {
    fn new(krate: &str, servers: &Value) -> Result<Self, String> {
        let binary = peer_bin(krate)?;
        let dir = tempfile::Builder::new()
            .prefix("mcpd-bench-seed-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let config = dir.path().join("config.json");
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(dir.path());
        match krate {
            "mcpzip" => {
                fs::write(&config, json!({"mcpServers": servers}).to_string())
                    .map_err(|e| e.to_string())?;
                command.arg("serve").arg("--config").arg(&config);
            }
            _ => {
                // dynamic-mcp wants a description per server (its "groups").
                let mut servers = servers.clone();
                for (name, s) in servers.as_object_mut().into_iter().flatten() {
                    s["description"] = json!(format!("the {name} server"));
                }
                fs::write(&config, json!({"mcpServers": servers}).to_string())
                    .map_err(|e| e.to_string())?;
                command.arg(&config);
            }
        }
        Ok(Self { _dir: dir, command })
    }

    fn spawn(&mut self, what: &str) -> Conn {
        Conn::spawn(what, &mut self.command, Stdio::null())
    }
}

/// How a route spells a call of `server`'s `tool`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spelling {
    /// `tools/call` of `tool` itself (the server spoken to directly).
    Direct,
    /// `tools/call` of `server__tool` (mcpd).
    Namespaced,
    /// mcpzip's `execute_tool {name: server__tool, arguments}`.
    Mcpzip,
    /// dynamic-mcp's `call_dynamic_tool {group: server, name: tool, args}`.
    Dynamic,
}

impl Spelling {
    fn params(self, server: &str, tool: &str, arguments: &str) -> String {
        match self {
            Self::Direct => format!(r#"{{"name":"{tool}","arguments":{arguments}}}"#),
            Self::Namespaced => {
                format!(r#"{{"name":"{server}__{tool}","arguments":{arguments}}}"#)
            }
            Self::Mcpzip => format!(
                r#"{{"name":"execute_tool","arguments":{{"name":"{server}__{tool}","arguments":{arguments}}}}}"#
            ),
            Self::Dynamic => format!(
                r#"{{"name":"call_dynamic_tool","arguments":{{"group":"{server}","name":"{tool}","args":{arguments}}}}}"#
            ),
        }
    }
}

/// Whether a `tools/call` answer is a success (the seeds wrap upstream errors in a result).
fn call_ok(a: &Answer) -> bool {
    a.ok() && a.msg["result"]["isError"] != json!(true)
}

/// One of the four ways to the fixture.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Direct,
    Mcpd,
    /// `mcp-shim --direct`: the shim hands the client's stdio to mcpd and leaves the data path.
    McpdDirect,
    /// mcpd and mcp-shim of the build in `$MCPD_BENCH_BEFORE`.
    McpdBefore,
    /// `mcp-shim --direct` and mcpd of the build in `$MCPD_BENCH_BEFORE`.
    McpdDirectBefore,
    Mcpzip,
    Dynamic,
    /// Floor of [`McpdDirect`](Self::McpdDirect): one `mcpd-hop` between client and fixture.
    Hop1,
    /// Floor of [`McpdBefore`](Self::McpdBefore) (a relay over the socket): two `mcpd-hop`s
    /// between client and fixture, a Unix socket between them.
    Hop2,
    /// Floor of [`Mcpd`](Self::Mcpd), whose shim relays over a pair of pipes (docs/SHIM.md,
    /// "The relay's pipes"): two `mcpd-hop`s with pipes between them.
    Hop2Pipes,
}

impl Way {
    /// The ways measured: the four, and the earlier build's when `$MCPD_BENCH_BEFORE` names one.
    fn all() -> Vec<Way> {
        let mut ways = vec![Way::Direct, Way::Mcpd];
        if before_dir().is_some() {
            ways.push(Way::McpdBefore);
        }
        ways.extend([Way::Mcpzip, Way::Dynamic]);
        ways
    }

    /// [`all`](Self::all) with `mcp-shim --direct` next to the relaying shim.
    fn all_and_direct() -> Vec<Way> {
        let mut ways = Self::all();
        ways.insert(2, Way::McpdDirect);
        if let Some(at) = ways.iter().position(|w| *w == Way::McpdBefore) {
            ways.insert(at + 1, Way::McpdDirectBefore);
        }
        ways
    }

    /// [`all_and_direct`](Self::all_and_direct) with the floors after the direct route.
    fn with_floors() -> Vec<Way> {
        let mut ways = Self::all_and_direct();
        ways.splice(1..1, [Way::Hop1, Way::Hop2Pipes, Way::Hop2]);
        ways
    }

    /// The floor a route of mcpd is compared with: as many plain hops as it has processes.
    fn floor(self) -> Option<Way> {
        match self {
            Way::Mcpd => Some(Way::Hop2Pipes),
            Way::McpdBefore => Some(Way::Hop2),
            Way::McpdDirect | Way::McpdDirectBefore => Some(Way::Hop1),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Way::Direct => "fixture directly",
            Way::Mcpd => "mcp-shim → mcpd",
            Way::McpdDirect => "mcp-shim --direct → mcpd",
            Way::McpdBefore => "mcp-shim → mcpd, before",
            Way::McpdDirectBefore => "mcp-shim --direct → mcpd, before",
            Way::Mcpzip => "mcpzip 0.1.0",
            Way::Dynamic => "dynamic-mcp 1.5.0",
            Way::Hop1 => "floor: 1 plain hop",
            Way::Hop2 => "floor: 2 plain hops, a socket between",
            Way::Hop2Pipes => "floor: 2 plain hops, pipes between",
        }
    }

    fn spelling(self) -> Spelling {
        match self {
            Way::Direct | Way::Hop1 | Way::Hop2 | Way::Hop2Pipes => Spelling::Direct,
            Way::Mcpd | Way::McpdDirect | Way::McpdBefore | Way::McpdDirectBefore => {
                Spelling::Namespaced
            }
            Way::Mcpzip => Spelling::Mcpzip,
            Way::Dynamic => Spelling::Dynamic,
        }
    }

    fn krate(self) -> Option<&'static str> {
        match self {
            Way::Mcpzip => Some("mcpzip"),
            Way::Dynamic => Some("dynamic-mcp"),
            _ => None,
        }
    }
}

/// `n` clients on one way to the fixture `fx`, initialized, with the processes to measure.
struct Clients {
    conns: Vec<Conn>,
    /// (role, pid) of every process on the way.
    procs: Vec<(&'static str, u32)>,
    _daemon: Option<TestDaemon>,
    _seeds: Vec<Seed>,
}

fn clients(way: Way, n: usize) -> Result<Clients, String> {
    let fx = || json!({"fx": fixture::server(&[])});
    let mut conns = Vec::new();
    let mut procs = Vec::new();
    let mut seeds = Vec::new();
    let mut daemon_kept = None;
    match way {
        Way::Direct => {
            for i in 0..n {
                let mut c = Conn::spawn(
                    &format!("fixture {i}"),
                    &mut Command::new(bin("mcpd-fixture")),
                    Stdio::null(),
                );
                c.initialize();
                procs.push(("fixture", c.pid().unwrap_or(0)));
                conns.push(c);
            }
        }
        Way::Hop1 | Way::Hop2 | Way::Hop2Pipes => {
            let hops = if way == Way::Hop1 { 1 } else { 2 };
            for i in 0..n {
                // Two hops talk over a socket pair, as mcp-shim and mcpd do (or over pipes).
                let mut command = Command::new(bin("mcpd-hop"));
                for _ in 1..hops {
                    if way == Way::Hop2 {
                        command.arg("--socket");
                    }
                    command.arg(bin("mcpd-hop"));
                }
                command.arg(bin("mcpd-fixture"));
                let mut c = Conn::spawn(&format!("{hops} hops {i}"), &mut command, Stdio::null());
                c.initialize();
                let first = c.pid().unwrap_or(0);
                procs.push(("hop", first));
                for pid in descendants_of(first) {
                    // A hop's command line names the fixture too; its program name does not.
                    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    let role = if comm.trim() == "mcpd-hop" {
                        "hop"
                    } else {
                        "fixture"
                    };
                    procs.push((role, pid));
                }
                conns.push(c);
            }
        }
        Way::Mcpd | Way::McpdDirect | Way::McpdBefore | Way::McpdDirectBefore => {
            let before = matches!(way, Way::McpdBefore | Way::McpdDirectBefore);
            let dir = before.then(before_dir).flatten();
            let d = daemon_of(dir.as_deref(), json!({"mcpServers": fx()}), &["fx"]);
            procs.push(("mcpd", d.pid()));
            for i in 0..n {
                let mut command = shim_command_of(dir.as_deref(), d.socket());
                if matches!(way, Way::McpdDirect | Way::McpdDirectBefore) {
                    command.arg("--direct");
                }
                let mut c = Conn::spawn(&format!("shim {i}"), &mut command, Stdio::null());
                c.initialize();
                procs.push(("mcp-shim", c.pid().unwrap_or(0)));
                conns.push(c);
            }
            let mut first = Conn::attach("socket session", d.socket())?;
            first.initialize();
            let upstream: u32 = text_of(&first.call("fx__pid", "{}"))
                .parse()
                .map_err(|e| format!("pid: {e}"))?;
            procs.push(("fixture", upstream));
            daemon_kept = Some(d);
        }
        Way::Mcpzip | Way::Dynamic => {
            let krate = way.krate().unwrap_or_default();
            for i in 0..n {
                let mut seed = Seed::new(krate, &fx())?;
                let mut c = seed.spawn(&format!("{krate} {i}"));
                c.initialize();
                // A first call connects the upstream (mcpzip connects lazily).
                let params = way.spelling().params("fx", "echo", r#"{"message":"warm"}"#);
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let a = c.try_request("tools/call", &params)?;
                    if call_ok(&a) {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(format!("{krate}: echo never succeeded: {}", a.msg));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let role = if way == Way::Mcpzip { "mcpzip" } else { "dmcp" };
                let pid = c.pid().unwrap_or(0);
                procs.push((role, pid));
                for child in descendants_of(pid) {
                    procs.push(("fixture", child));
                }
                conns.push(c);
                seeds.push(seed);
            }
        }
    }
    Ok(Clients {
        conns,
        procs,
        _daemon: daemon_kept,
        _seeds: seeds,
    })
}

/// CPU time per role, summed over the processes of that role.
fn cpu_by_role(procs: &[(&'static str, u32)]) -> Vec<(&'static str, Duration)> {
    let mut out: Vec<(&'static str, Duration)> = Vec::new();
    for (role, pid) in procs {
        let t = cpu_time(*pid);
        match out.iter_mut().find(|(r, _)| r == role) {
            Some((_, sum)) => *sum += t,
            None => out.push((role, t)),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------

pub(crate) fn peers_latency(ctx: &Ctx) {
    // `MCPD_BENCH_CALLS=N`: calls per route (5,000 by default; p99.9 is the 5th slowest).
    let calls = ctx.n(std::env::var("MCPD_BENCH_CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(5_000));
    let hello = r#"{"message":"hello"}"#;
    let mut routes: Vec<(Way, Clients)> = Vec::new();
    for way in Way::with_floors() {
        match clients(way, 1) {
            Ok(c) => routes.push((way, c)),
            Err(why) => println!("({} left out: {why})\n", way.name()),
        }
    }
    // `MCPD_BENCH_BLOCK=N`: calls per interleaved block (250 by default). A block much longer
    // than the audit writer's gathering (2 ms of calls and more) keeps each daemon's batches
    // among its own calls rather than the next route's.
    let block = std::env::var("MCPD_BENCH_BLOCK")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(250)
        .clamp(1, calls.max(1));
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); routes.len()];
    let mut cpu: Vec<Vec<(&'static str, Duration)>> = routes
        .iter()
        .map(|(_, c)| {
            cpu_by_role(&c.procs)
                .into_iter()
                .map(|(r, _)| (r, Duration::ZERO))
                .collect()
        })
        .collect();
    for (way, c) in &mut routes {
        let params = way.spelling().params("fx", "echo", hello);
        for _ in 0..(calls / 10).max(50) {
            c.conns[0].request("tools/call", &params);
        }
    }
    let mut done = 0;
    while done < calls {
        let k = block.min(calls - done);
        for (i, (way, c)) in routes.iter_mut().enumerate() {
            let params = way.spelling().params("fx", "echo", hello);
            let before = cpu_by_role(&c.procs);
            for _ in 0..k {
                let a = c.conns[0].request("tools/call", &params);
                assert!(call_ok(&a), "{}: {}", way.name(), a.msg);
                samples[i].push(a.took);
            }
            for ((_, b), (acc, a)) in before
                .iter()
                .zip(cpu[i].iter_mut().zip(cpu_by_role(&c.procs)))
            {
                acc.1 += a.1.saturating_sub(*b);
                let _ = acc.0;
            }
        }
        done += k;
    }
    let base = stats(&samples[0]);
    let rows: Vec<Vec<String>> = routes
        .iter()
        .enumerate()
        .map(|(i, (way, _))| {
            let st = stats(&samples[i]);
            let n = samples[i].len().max(1) as f64;
            let per = cpu[i]
                .iter()
                .map(|(role, d)| format!("{role} {}", t(d.as_secs_f64() * 1e6 / n)))
                .collect::<Vec<_>>()
                .join(", ");
            let floor = way
                .floor()
                .and_then(|f| routes.iter().position(|(w, _)| *w == f))
                .map_or("–".to_owned(), |j| {
                    format!("{:.2}×", st.p50 / stats(&samples[j]).p50)
                });
            vec![
                way.name().to_owned(),
                format!("**{:.2}×**", st.p50 / base.p50),
                floor,
                format!("{:.2}×", st.p99 / base.p99),
                t(st.p50),
                t(st.p99),
                t(quantile(&samples[i], 0.999)),
                t(st.max),
                per,
            ]
        })
        .collect();
    table(
        &[
            "route",
            "**÷ direct, p50**",
            "÷ its floor, p50",
            "÷ direct, p99",
            "p50",
            "p99",
            "p99.9",
            "max",
            "CPU per call",
        ],
        &rows,
    );
    println!(
        "\n`echo` (5 bytes) of the Rust fixture, one call in flight, {calls} calls per route in \
         interleaved blocks of {block}."
    );
}

/// The nearest-rank `p` quantile of `samples`, in microseconds (as [`stats`] takes them).
fn quantile(samples: &[Duration], p: f64) -> f64 {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let n = us.len();
    if n == 0 {
        return f64::NAN;
    }
    us[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
}

/// What one client thread measured.
pub(super) struct Run {
    pub(super) answered: u64,
    pub(super) errors: u64,
    latencies: Vec<Duration>,
}

/// Drives one client for `for_how_long` with `inflight` calls in flight, then drains.
pub(super) fn drive(
    conn: Conn,
    params: &str,
    inflight: usize,
    for_how_long: Duration,
    start: &Barrier,
) -> (Conn, Run) {
    let mut conn = conn;
    let mut run = Run {
        answered: 0,
        errors: 0,
        latencies: Vec::new(),
    };
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let write = |conn: &mut Conn, sent_at: &mut HashMap<u64, Instant>| {
        let id = conn.next_id;
        conn.next_id += 1;
        let line =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}"#);
        sent_at.insert(id, Instant::now());
        conn.send(&line).expect("write a call");
    };
    start.wait();
    let until = Instant::now() + for_how_long;
    for _ in 0..inflight {
        write(&mut conn, &mut sent_at);
    }
    while !sent_at.is_empty() {
        let line = conn.reader.line(ANSWER_TIMEOUT).expect("an answer");
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            continue;
        };
        if msg.get("method").is_some() {
            continue;
        }
        if let Some(at) = sent_at.remove(&id) {
            run.latencies.push(at.elapsed());
            if msg.get("result").is_some() && msg["result"]["isError"] != json!(true) {
                run.answered += 1;
            } else {
                run.errors += 1;
            }
            if Instant::now() < until {
                write(&mut conn, &mut sent_at);
            }
        }
    }
    (conn, run)
}

pub(crate) fn throughput(ctx: &Ctx) {
    // `MCPD_BENCH_SHAPES=8x8,1x16`: only those shapes.
    let want = std::env::var("MCPD_BENCH_SHAPES").unwrap_or_default();
    let shapes: Vec<(usize, usize)> = [(1, 1), (1, 16), (8, 8), (32, 4)]
        .into_iter()
        .filter(|(n, i)| want.is_empty() || want.split(',').any(|w| w == format!("{n}x{i}")))
        .collect();
    let seconds = if ctx.quick { 0.5 } else { 3.0 };
    let mut rows = Vec::new();
    let mut direct_rate: HashMap<(usize, usize), f64> = HashMap::new();
    for (n, inflight) in shapes {
        for way in Way::all_and_direct() {
            let c = match clients(way, n) {
                Ok(c) => c,
                Err(why) => {
                    println!("({} {n}×{inflight} left out: {why})", way.name());
                    continue;
                }
            };
            let params = way
                .spelling()
                .params("fx", "echo", r#"{"message":"hello"}"#);
            let Clients {
                conns,
                procs,
                _daemon,
                _seeds,
            } = c;
            let barrier = Arc::new(Barrier::new(conns.len() + 1));
            let before = cpu_by_role(&procs);
            let threads: Vec<_> = conns
                .into_iter()
                .map(|conn| {
                    let params = params.clone();
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        drive(
                            conn,
                            &params,
                            inflight,
                            Duration::from_secs_f64(seconds),
                            &barrier,
                        )
                    })
                })
                .collect();
            barrier.wait();
            let started = Instant::now();
            let runs: Vec<(Conn, Run)> = threads
                .into_iter()
                .map(|t| t.join().expect("a client thread"))
                .collect();
            let wall = started.elapsed().as_secs_f64();
            let after = cpu_by_role(&procs);
            // Lines the audit writer could not keep up with (counted as the calls finish).
            let audit_dropped = _daemon
                .as_ref()
                .and_then(|d| match d.try_control(&ControlRequest::Stats) {
                    Ok(ControlResponse::Stats(report)) => Some(report.audit_dropped.to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| "–".to_owned());
            let answered: u64 = runs.iter().map(|(_, r)| r.answered).sum();
            let errors: u64 = runs.iter().map(|(_, r)| r.errors).sum();
            let all: Vec<Duration> = runs
                .iter()
                .flat_map(|(_, r)| r.latencies.iter().copied())
                .collect();
            let st = stats(&all);
            let rate = answered as f64 / wall;
            if way == Way::Direct {
                direct_rate.insert((n, inflight), rate);
            }
            let ratio = direct_rate
                .get(&(n, inflight))
                .map_or("–".to_owned(), |d| format!("{:.2}×", rate / d));
            let per_call = before
                .iter()
                .zip(&after)
                .map(|((role, b), (_, a))| {
                    format!(
                        "{role} {}",
                        t(a.saturating_sub(*b).as_secs_f64() * 1e6 / answered.max(1) as f64)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            rows.push(vec![
                format!("{n}×{inflight}"),
                way.name().to_owned(),
                format!("**{rate:.0}**"),
                ratio,
                t(st.p50),
                t(st.p99),
                per_call,
                errors.to_string(),
                audit_dropped,
            ]);
            for (conn, _) in runs {
                conn.close();
            }
        }
    }
    table(
        &[
            "clients × in flight",
            "route",
            "**calls/s**",
            "÷ direct",
            "p50",
            "p99",
            "CPU per call, by process kind",
            "errors",
            "audit lines dropped",
        ],
        &rows,
    );
    println!(
        "\nEach client keeps its calls in flight for {seconds} s, then drains. Direct: one fixture \
         per client. mcpd: one shared fixture upstream, one `mcp-shim` per client. The seeds: one \
         proxy per client, each with its own fixture. CPU per call is the process kind's CPU time \
         over the run (all its processes, all threads) divided by the calls answered."
    );
}

pub(crate) fn slow4(_ctx: &Ctx) {
    let mut rows = Vec::new();
    for way in Way::all() {
        let mut c = match clients(way, 1) {
            Ok(c) => c,
            Err(why) => {
                println!("({} left out: {why})", way.name());
                continue;
            }
        };
        let params = way.spelling().params("fx", "sleep", r#"{"ms":1000}"#);
        let conn = &mut c.conns[0];
        let started = Instant::now();
        let mut ids = Vec::new();
        for _ in 0..4 {
            let id = conn.next_id;
            conn.next_id += 1;
            conn.send(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}"#
            ))
            .unwrap();
            ids.push(id);
        }
        let mut at = Vec::new();
        let mut errors = 0;
        while at.len() < ids.len() {
            let line = conn.reader.line(ANSWER_TIMEOUT).expect("an answer");
            let msg: Value = serde_json::from_str(&line).unwrap_or_default();
            if msg.get("method").is_none()
                && msg
                    .get("id")
                    .and_then(Value::as_u64)
                    .is_some_and(|i| ids.contains(&i))
            {
                at.push(started.elapsed());
                if msg.get("result").is_none() || msg["result"]["isError"] == json!(true) {
                    errors += 1;
                }
            }
        }
        let times = at
            .iter()
            .map(|d| t(d.as_secs_f64() * 1e6))
            .collect::<Vec<_>>()
            .join(", ");
        rows.push(vec![
            way.name().to_owned(),
            format!("**{}**", t(at[3].as_secs_f64() * 1e6)),
            times,
            errors.to_string(),
        ]);
    }
    table(
        &["route", "**all 4 answered**", "each answer at", "errors"],
        &rows,
    );
    println!(
        "\nOne client writes four `sleep {{ms: 1000}}` calls at once (the fixture sleeps without blocking)."
    );
}

/// Per route: whole lists, first pages, last pages, every page.
type Samples = (Vec<Duration>, Vec<Duration>, Vec<Duration>, Vec<Duration>);

/// One full `tools/list` on `c`, page by page: the wait for each page, and the tool count.
fn pages_of(c: &mut Conn) -> (Vec<Duration>, usize) {
    let mut params = "{}".to_owned();
    let mut pages = Vec::new();
    let mut count = 0;
    loop {
        let a = c.request("tools/list", &params);
        count += a.msg["result"]["tools"].as_array().map_or(0, Vec::len);
        pages.push(a.took);
        match a.msg["result"].get("nextCursor") {
            Some(c) if !c.is_null() => params = json!({ "cursor": c }).to_string(),
            _ => return (pages, count),
        }
    }
}

pub(crate) fn scaling(ctx: &Ctx) {
    let sizes = [500usize, 1_000, 5_000];
    let runs = ctx.n(20);
    let mut rows = Vec::new();
    for total in sizes {
        // Ten servers share the tools (each also has the fixture's 7 fixed tools).
        let per = total / 10 - fixture::FIXED_TOOLS.len();
        let per_s = per.to_string();
        let servers: Vec<(String, Vec<&str>)> = (0..10)
            .map(|i| (format!("s{i}"), vec!["--tools", per_s.as_str()]))
            .collect();
        let refs: Vec<(&str, &[&str])> = servers
            .iter()
            .map(|(n, a)| (n.as_str(), a.as_slice()))
            .collect();
        let names: Vec<&str> = servers.iter().map(|(n, _)| n.as_str()).collect();
        let started = Instant::now();
        let d = daemon(fixture::config(&refs), &names);
        eprintln!(
            "scaling: {total} tools: daemon ready after {:?}",
            started.elapsed()
        );
        let mut raw = Conn::attach("socket session", d.socket()).expect("attach");
        let mut shim = Conn::spawn("mcp-shim", &mut shim_command(d.socket()), Stdio::null());
        for c in [&mut raw, &mut shim] {
            c.initialize();
            c.list_tools();
        }
        // (whole, first page, last page, every page) per route; the routes take turns.
        let mut measured: [Samples; 2] = Default::default();
        let (mut count, mut npages) = (0, 0);
        for _ in 0..runs {
            for (k, c) in [&mut raw, &mut shim].into_iter().enumerate() {
                let (pages, n) = pages_of(c);
                count = n;
                npages = pages.len();
                let m = &mut measured[k];
                m.0.push(pages.iter().sum());
                m.1.push(pages[0]);
                m.2.push(*pages.last().unwrap_or(&Duration::ZERO));
                m.3.extend(pages);
            }
        }
        let (_, _, _, bytes) = raw.list_tools();
        for (k, what) in ["raw socket session", "**through `mcp-shim`**"]
            .into_iter()
            .enumerate()
        {
            let (w, f, l, p) = (
                stats(&measured[k].0),
                stats(&measured[k].1),
                stats(&measured[k].2),
                stats(&measured[k].3),
            );
            rows.push(vec![
                format!("{count} ({npages} pages, {} KB)", bytes / 1000),
                what.to_owned(),
                format!("**{}**", t(w.p50)),
                t(w.p50 / count.max(1) as f64 * 1000.0),
                t(p.p50),
                t(f.p50),
                t(l.p50),
                format!("{:.2}×", l.p50 / f.p50),
            ]);
        }
        raw.close();
        shim.close();
    }
    table(
        &[
            "tools",
            "route",
            "**full tools/list, median**",
            "per 1,000 tools",
            "a page, median",
            "first page",
            "last page",
            "last ÷ first",
        ],
        &rows,
    );
    println!(
        "\nTen fixture servers share the tools; the daemon's default page size (100); {runs} runs \
         per size, the two routes taking turns; the time is the sum of the waits for the pages \
         (the client's parsing left out). Linear in tools: \"per 1,000 tools\" stays flat and the \
         last page costs what the first does."
    );
}

/// Pss (KiB) and count of `pids` and all their descendants.
fn tree_pss(pids: &[u32]) -> (u64, usize) {
    let mut all: Vec<u32> = pids.to_vec();
    for p in pids {
        all.extend(descendants_of(*p));
    }
    all.sort_unstable();
    all.dedup();
    let pss = all.iter().filter_map(|p| mem(*p)).map(|m| m.pss).sum();
    (pss, all.len())
}

pub(crate) fn fleet(ctx: &Ctx) {
    let Some(server) = ctx.everything_server() else {
        ctx.note_no_everything();
        return;
    };
    let names: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    let servers: serde_json::Map<String, Value> =
        names.iter().map(|n| (n.clone(), server.clone())).collect();
    let servers = Value::Object(servers);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut direct_pss = 0u64;
    let wait_all = |c: &mut Conn, spelling: Spelling| {
        for n in &names {
            let params = spelling.params(n, "echo", r#"{"message":"hi"}"#);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let a = c.request("tools/call", &params);
                if call_ok(&a) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: {n} never answered: {}",
                    c.what,
                    a.msg
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let mut row = |what: &str, roots: &[u32], pss_of_direct: &mut u64| {
        std::thread::sleep(Duration::from_secs(1));
        let (pss, procs) = tree_pss(roots);
        if *pss_of_direct == 0 {
            *pss_of_direct = pss;
        }
        rows.push(vec![
            what.to_owned(),
            format!("**{:.2}×**", pss as f64 / *pss_of_direct as f64),
            kib(pss),
            procs.to_string(),
        ]);
    };
    {
        let mut conns = Vec::new();
        for c in 0..5 {
            for n in &names {
                let mut conn = Conn::spawn(
                    &format!("client {c} {n}"),
                    &mut ctx.everything_command().unwrap(),
                    Stdio::null(),
                );
                conn.initialize();
                conn.call("echo", r#"{"message":"hi"}"#);
                conns.push(conn);
            }
        }
        let pids: Vec<u32> = conns.iter().filter_map(Conn::pid).collect();
        row(
            "each client starts its own 10 servers (direct)",
            &pids,
            &mut direct_pss,
        );
        for c in conns {
            c.close();
        }
    }
    {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let d = daemon(json!({ "mcpServers": servers }), &refs);
        let mut conns = Vec::new();
        for c in 0..5 {
            let mut conn = Conn::spawn(
                &format!("shim {c}"),
                &mut shim_command(d.socket()),
                Stdio::null(),
            );
            conn.initialize();
            wait_all(&mut conn, Spelling::Namespaced);
            conns.push(conn);
        }
        let mut pids: Vec<u32> = conns.iter().filter_map(Conn::pid).collect();
        pids.push(d.pid());
        row(
            "mcpd: 5 `mcp-shim` + 1 daemon sharing 10 servers",
            &pids,
            &mut direct_pss,
        );
        for c in conns {
            c.close();
        }
    }
    for (krate, spelling) in [
        ("mcpzip", Spelling::Mcpzip),
        ("dynamic-mcp", Spelling::Dynamic),
    ] {
        let mut seeds = Vec::new();
        let mut conns = Vec::new();
        for c in 0..5 {
            let mut seed = match Seed::new(krate, &servers) {
                Ok(s) => s,
                Err(why) => {
                    println!("({krate} left out: {why})");
                    break;
                }
            };
            let mut conn = seed.spawn(&format!("{krate} {c}"));
            conn.initialize();
            wait_all(&mut conn, spelling);
            conns.push(conn);
            seeds.push(seed);
        }
        if conns.len() == 5 {
            let pids: Vec<u32> = conns.iter().filter_map(Conn::pid).collect();
            row(
                &format!("{krate}: one proxy per client, each with 10 servers"),
                &pids,
                &mut direct_pss,
            );
        }
        for c in conns {
            c.close();
        }
    }
    table(
        &[
            "5 clients × 10 server-everything",
            "**Pss ÷ direct**",
            "Pss, all processes",
            "processes",
        ],
        &rows,
    );
    println!(
        "\nEvery client called `echo` on each of its 10 servers first (so lazy proxies have \
         started them); Pss is summed over the clients' processes and all their descendants."
    );
}

/// A new client against a warm daemon with 10 server-everything running: spawn `mcp-shim`,
/// initialize, page through `tools/list`.
pub(crate) fn new_client(ctx: &Ctx) {
    let Some(server) = ctx.everything_server() else {
        ctx.note_no_everything();
        return;
    };
    let names: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let servers: serde_json::Map<String, Value> =
        names.iter().map(|n| (n.clone(), server.clone())).collect();
    let d = daemon(json!({ "mcpServers": servers }), &refs);
    // One client attached all along, as in use.
    let mut first = Conn::spawn("shim 0", &mut shim_command(d.socket()), Stdio::null());
    first.initialize();
    first.list_tools();
    let fresh = new_clients(d.socket(), ctx.n(200));
    first.close();
    new_client_table(&fresh);
}

/// One new client's timeline, each phase from just before the spawn of its `mcp-shim`.
struct Fresh {
    initialized: Duration,
    first_page: Duration,
    complete: Duration,
    tools: usize,
}

/// `runs` new clients one after the other: spawn `mcp-shim`, `initialize`, every page of
/// `tools/list` (wall clock, this client's parsing included), close.
fn new_clients(socket: &Path, runs: usize) -> Vec<Fresh> {
    let mut out = Vec::new();
    for i in 0..runs + 5 {
        let started = Instant::now();
        let mut c = Conn::spawn("mcp-shim", &mut shim_command(socket), Stdio::null());
        c.initialize();
        let initialized = started.elapsed();
        let mut params = "{}".to_owned();
        let mut first_page = None;
        let mut tools = 0;
        loop {
            let a = c.request("tools/list", &params);
            first_page.get_or_insert_with(|| started.elapsed());
            tools += a.msg["result"]["tools"].as_array().map_or(0, Vec::len);
            match a.msg["result"].get("nextCursor") {
                Some(c) if !c.is_null() => params = json!({ "cursor": c }).to_string(),
                _ => break,
            }
        }
        let complete = started.elapsed();
        c.close();
        if i >= 5 {
            out.push(Fresh {
                initialized,
                first_page: first_page.unwrap_or(complete),
                complete,
                tools,
            });
        }
    }
    out
}

fn new_client_table(fresh: &[Fresh]) {
    let col = |f: fn(&Fresh) -> Duration| -> Vec<Duration> { fresh.iter().map(f).collect() };
    let tools = fresh.first().map_or(0, |f| f.tools);
    let rows: Vec<Vec<String>> = [
        ("`initialize` answered", col(|f| f.initialized)),
        ("first `tools/list` page", col(|f| f.first_page)),
        ("**every tool listed**", col(|f| f.complete)),
    ]
    .into_iter()
    .map(|(what, samples)| {
        let st = stats(&samples);
        vec![
            what.to_owned(),
            st.n.to_string(),
            t(st.p50),
            t(st.p95),
            t(st.max),
        ]
    })
    .collect();
    table(
        &[
            "from the spawn of `mcp-shim` to",
            "runs",
            "median",
            "p95",
            "max",
        ],
        &rows,
    );
    println!(
        "\n{tools} tools; wall clock from just before the spawn, the client's own parsing \
         included; new clients one after the other."
    );
}

/// What one more upstream costs the daemon: its memory with 0, 10 and 40 fixture upstreams
/// (each with the fixture's 7 tools), after every upstream is ready and a client listed them.
/// "From 10 to 40" is the marginal cost; "from 0" also counts what the first upstream brings
/// once (the code pages of the actor and transports, first touched then).
pub(crate) fn per_upstream(_ctx: &Ctx) {
    let mut rows = Vec::new();
    let mut at: Vec<(usize, Mem)> = Vec::new();
    for n in [0usize, 10, 40] {
        let names: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
        let servers: Vec<(&str, &[&str])> = names.iter().map(|s| (s.as_str(), &[][..])).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let d = daemon(fixture::config(&servers), &refs);
        let mut c = Conn::attach("socket session", d.socket()).expect("attach");
        c.initialize();
        c.list_tools();
        std::thread::sleep(Duration::from_secs(1));
        let m = mem(d.pid()).unwrap_or_default();
        let per = |now: u64, then: u64, added: usize| {
            format!("{:.0} KiB", (now as f64 - then as f64) / added as f64)
        };
        let (from0, marginal) = match (at.first(), at.last()) {
            (Some((_, b)), Some((k, p))) => (
                format!("{} / {}", per(m.rss, b.rss, n), per(m.anon, b.anon, n)),
                if *k > 0 {
                    format!(
                        "**{}** / {}",
                        per(m.rss, p.rss, n - k),
                        per(m.anon, p.anon, n - k)
                    )
                } else {
                    "–".to_owned()
                },
            ),
            _ => ("–".to_owned(), "–".to_owned()),
        };
        at.push((n, m));
        rows.push(vec![
            n.to_string(),
            kib(m.rss),
            kib(m.anon),
            m.threads.to_string(),
            from0,
            marginal,
        ]);
        drop(c);
    }
    table(
        &[
            "upstreams",
            "mcpd VmRSS",
            "RssAnon",
            "threads",
            "per upstream from 0: VmRSS / RssAnon",
            "**per upstream from the row before: VmRSS** / RssAnon",
        ],
        &rows,
    );
    println!("\nThe daemon alone (not its children), 1 s after a client listed every tool.");
}
