//! What each server uses: memory and CPU time of its whole process tree (or of its cgroup,
//! where it has one), for `mcpctl status` and `mcpctl top`.

use mcpd_proto::ContainStatus;

use crate::upstream::process::InForce;
use crate::upstream::tree::Scan;

/// Bytes per page and clock ticks per second, from sysconf.
fn page_size_and_ticks() -> (u64, u64) {
    // SAFETY: sysconf has no preconditions.
    let (page, ticks) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE),
            libc::sysconf(libc::_SC_CLK_TCK),
        )
    };
    (
        u64::try_from(page).unwrap_or(4096).max(1),
        u64::try_from(ticks).unwrap_or(100).max(1),
    )
}

/// The status of one running server's containment, with its use measured in `scan`.
pub fn contain_status(in_force: &InForce, scan: &Scan, requests: u64) -> ContainStatus {
    let (page, ticks) = page_size_and_ticks();
    let members = in_force.tree.members(scan);
    let rss: u64 = members.iter().map(|p| p.rss_pages * page).sum();
    let cpu: u64 = members.iter().map(|p| p.cpu_ticks).sum::<u64>() * 1000 / ticks;
    let (memory_bytes, cpu_ms) = match crate::limits::cgroup_usage(in_force) {
        Some((mem, cpu_usec)) => (Some(mem), Some(cpu_usec / 1000)),
        None => (Some(rss), Some(cpu)),
    };
    ContainStatus {
        sandbox: in_force.sandbox.clone(),
        limits: in_force.limits.clone(),
        not_enforced: in_force.not_enforced.clone(),
        memory_bytes,
        cpu_ms,
        processes: u32::try_from(members.len()).ok(),
        requests,
    }
}
