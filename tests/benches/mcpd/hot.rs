//! Issue 18, the per-call hot path: instructions per `tools/call` from callgrind, a figure the
//! load of a shared machine does not move (CPU time and latency do).
//!
//! `callgrind`: the daemon runs under `valgrind --tool=callgrind --trace-children=no`; after a
//! warm-up its counters are zeroed (`callgrind_control -z`), the calls are made, and the counters
//! dumped (`callgrind_control -d`): the total divided by the calls is the daemon's instructions
//! per call, all threads included. Three phases per build: one call in flight on a raw socket
//! session (the daemon alone), one in flight through an `mcp-shim` that runs under callgrind too
//! (the shim's own figure), and 8 raw sessions × 8 calls in flight (the daemon under load; under
//! callgrind the threads run one at a time, so this shows batching, not parallelism). A modern
//! (2026-07-28) client's call, stateless with its per-request `_meta`, is measured beside the
//! legacy socket session (issue 12). With `$MCPD_BENCH_BEFORE` naming the directory of an
//! earlier build, its rows come next.

use std::sync::{Arc, Barrier};

use super::*;

/// `echo` from a modern (2026-07-28) client: no `initialize`, the era in every request's `_meta`.
const MODERN_ECHO: &str = r#"{"name":"fx__echo","arguments":{"message":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcpd-bench","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}}"#;

/// Instructions of `pid` since the last zeroing, from a fresh callgrind dump in `dir`.
fn dump(pid: u32, dir: &Path, prefix: &str) -> u64 {
    let before = dumps(dir, prefix);
    let out = Command::new("callgrind_control")
        .args(["-d", &pid.to_string()])
        .output()
        .expect("callgrind_control runs");
    assert!(
        out.status.success(),
        "callgrind_control -d {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fresh = Vec::new();
    let found = poll_until(Duration::from_secs(30), || {
        fresh = dumps(dir, prefix)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        !fresh.is_empty()
    });
    assert!(
        found,
        "no callgrind dump of {pid} appeared in {}",
        dir.display()
    );
    let text = fs::read_to_string(&fresh[0]).expect("a callgrind dump");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .expect("a totals line in the callgrind dump")
}

fn dumps(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix) && n.contains(".out."))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn zero(pid: u32) {
    let out = Command::new("callgrind_control")
        .args(["-z", &pid.to_string()])
        .output()
        .expect("callgrind_control runs");
    assert!(
        out.status.success(),
        "callgrind_control -z {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn callgrind_argv(dir: &Path, prefix: &str) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--trace-children=no".into(),
        format!("--callgrind-out-file={}/{prefix}.out", dir.display()),
    ]
}

/// The directory of a build's dumps: removed afterwards, or kept for `callgrind_annotate`.
enum Kept {
    Temp(tempfile::TempDir),
    Dir(PathBuf),
}

impl Kept {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(t) => t.path(),
            Self::Dir(d) => d,
        }
    }
}

pub(crate) fn callgrind(ctx: &Ctx) {
    let calls = ctx.n(4_000) as u64;
    let echo = r#"{"name":"fx__echo","arguments":{"message":"hello"}}"#;
    let mut builds: Vec<(&str, Option<PathBuf>)> = vec![("this build", None)];
    if let Some(dir) = before_dir() {
        builds.push(("before", Some(dir)));
    }
    let mut rows = Vec::new();
    for (build, dir) in builds {
        let out = tempfile::Builder::new()
            .prefix("mcpd-callgrind-")
            .tempdir_in("/tmp")
            .expect("a temp dir");
        // `MCPD_BENCH_KEEP_DUMPS=1`: the dumps stay for `callgrind_annotate` (one per phase, in
        // the order above: legacy, modern, via shim, loaded).
        let out = if std::env::var_os("MCPD_BENCH_KEEP_DUMPS").is_some() {
            let kept = out.keep();
            println!("callgrind dumps of {build}: {}", kept.display());
            Kept::Dir(kept)
        } else {
            Kept::Temp(out)
        };
        let argv = callgrind_argv(out.path(), "mcpd");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut builder = TestDaemon::builder()
            .env("RUST_LOG", DAEMON_LOG)
            .env("RUST_BACKTRACE", "0")
            .die_with_parent()
            .wrapper(&argv)
            .ready_timeout(Duration::from_secs(120));
        for (k, v) in extra_daemon_env() {
            builder = builder.env(k, v);
        }
        if let Some(dir) = &dir {
            builder = builder.binary(dir.join("mcpd"));
        }
        let d = builder.start(json!({"mcpServers": {"fx": fixture::server(&[])}}));
        d.wait_server_state("fx", ServerState::Ready);
        let pid = d.pid();

        // One call in flight, raw socket session: the daemon alone.
        let mut conn = Conn::attach("socket session", d.socket()).expect("attach");
        conn.initialize();
        for _ in 0..calls / 10 {
            conn.request("tools/call", echo);
        }
        zero(pid);
        for _ in 0..calls {
            let a = conn.request("tools/call", echo);
            assert!(a.ok(), "{}", a.msg);
        }
        let alone = dump(pid, out.path(), "mcpd");
        drop(conn);

        // The same, from a modern (2026-07-28) client: no initialize, the per-request `_meta`.
        let mut conn = Conn::attach("modern session", d.socket()).expect("attach");
        for _ in 0..calls / 10 {
            conn.request("tools/call", MODERN_ECHO);
        }
        zero(pid);
        for _ in 0..calls {
            let a = conn.request("tools/call", MODERN_ECHO);
            assert!(a.ok(), "{}", a.msg);
        }
        let modern = dump(pid, out.path(), "mcpd");
        drop(conn);

        // One call in flight through a shim under callgrind.
        let shim_argv = callgrind_argv(out.path(), "shim");
        let mut cmd = Command::new(&shim_argv[0]);
        cmd.args(&shim_argv[1..])
            .arg(
                dir.as_ref()
                    .map_or_else(|| bin("mcp-shim"), |d| d.join("mcp-shim")),
            )
            .env_clear()
            .envs(d.env());
        let mut shim = Conn::spawn("shim", &mut cmd, Stdio::null());
        shim.timeout = Duration::from_secs(120);
        shim.initialize();
        for _ in 0..calls / 10 {
            shim.request("tools/call", echo);
        }
        let shim_pid = shim.pid().unwrap_or(0);
        zero(pid);
        zero(shim_pid);
        for _ in 0..calls {
            let a = shim.request("tools/call", echo);
            assert!(a.ok(), "{}", a.msg);
        }
        let via_shim = dump(pid, out.path(), "mcpd");
        let shim_ir = dump(shim_pid, out.path(), "shim");
        shim.close();

        // 8 raw sessions × 8 in flight.
        let conns: Vec<Conn> = (0..8)
            .map(|i| {
                let mut c = Conn::attach(&format!("session {i}"), d.socket()).expect("attach");
                c.initialize();
                c
            })
            .collect();
        let barrier = Arc::new(Barrier::new(conns.len() + 1));
        zero(pid);
        let threads: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    super::compare::drive(conn, echo, 8, Duration::from_secs(3), &barrier)
                })
            })
            .collect();
        barrier.wait();
        let runs: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().expect("a client thread"))
            .collect();
        let loaded = dump(pid, out.path(), "mcpd");
        let answered: u64 = runs.iter().map(|(_, r)| r.answered + r.errors).sum();
        drop(d);
        let per = |ir: u64, n: u64| format!("{:.0}", ir as f64 / n.max(1) as f64);
        rows.push(vec![
            build.to_owned(),
            format!("**{}**", per(alone, calls)),
            format!("**{}**", per(modern, calls)),
            per(via_shim, calls),
            format!("**{}**", per(shim_ir, calls)),
            format!("**{}** ({answered} calls)", per(loaded, answered)),
        ]);
    }
    table(
        &[
            "build",
            "mcpd, 1 in flight, socket",
            "mcpd, 1 in flight, socket, modern client (2026-07-28 `_meta`)",
            "mcpd, 1 in flight, via shim",
            "mcp-shim, 1 in flight",
            "mcpd, 8 sessions × 8 in flight",
        ],
        &rows,
    );
    println!(
        "\nInstructions per `tools/call` (`echo`, 5 bytes, the Rust fixture), all threads, from \
         callgrind: {calls} calls after {} of warm-up.",
        calls / 10
    );
}
