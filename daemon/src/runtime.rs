//! The daemon's async runtime: one thread by default.
//!
//! A call crosses four tasks in the daemon (the session that reads it, the upstream actor, the
//! upstream's stdin writer, the session's socket writer) and back. On tokio's multi-thread
//! runtime each hand-off could wake the other worker: two `futex` wake-ups and a context switch
//! per call, most of the daemon's CPU time with one call in flight, and cross-thread scheduling
//! under load (docs/BENCHMARKS.md, "Hot path"). On one thread every hand-off is a queue push.
//! Disk I/O and other blocking work already run on the blocking pool (`spawn_blocking`) or
//! their own threads (audit), never on a runtime worker, so one thread starves nothing.
//!
//! `MCPD_WORKER_THREADS=N` (N ≥ 2) brings back the multi-thread runtime with N workers, for a
//! daemon that does CPU-heavy work per request on a machine with cores to spare.

/// The environment variable that chooses a multi-thread runtime.
pub(crate) const WORKER_THREADS_ENV: &str = "MCPD_WORKER_THREADS";

/// Builds the runtime `MCPD_WORKER_THREADS` asks for: a current-thread runtime unless it names
/// two workers or more.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    build_for(std::env::var(WORKER_THREADS_ENV).ok().as_deref())
}

/// [`build`] for a value of `MCPD_WORKER_THREADS` (unset, or not a number: one thread).
fn build_for(setting: Option<&str>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = setting
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(1);
    if workers >= 2 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::build_for;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn the_daemon_runs_on_one_thread_unless_told_otherwise() {
        for setting in [None, Some("1"), Some("0"), Some("many")] {
            let rt = build_for(setting).unwrap();
            assert_eq!(
                rt.handle().runtime_flavor(),
                RuntimeFlavor::CurrentThread,
                "{setting:?}"
            );
        }
        let rt = build_for(Some(" 2 ")).unwrap();
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
    }
}
