//! Resource limits of a server's processes: a cgroup v2 child per server where mcpd runs in a
//! delegated, writable cgroup v2 subtree; rlimits otherwise, only where they are honest.

use crate::upstream::process::InForce;

/// Memory (bytes) and CPU time (microseconds) of the server's cgroup, when it has one.
pub fn cgroup_usage(_in_force: &InForce) -> Option<(u64, u64)> {
    None
}
