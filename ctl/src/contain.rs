//! Servers' containment in `mcpctl status` (sandbox, limits, what they use) and the live
//! `mcpctl top` view.

use std::fmt::Write as _;

use mcpd_proto::{ContainStatus, ServerStatus};

/// One line per running stdio server: its sandbox, limits and what it uses.
pub fn status_lines(servers: &[ServerStatus]) -> String {
    let mut out = String::new();
    for s in servers {
        let Some(c) = &s.contain else { continue };
        let _ = writeln!(out, "  {}: sandbox: {}", clean(&s.name), clean(&c.sandbox));
        let _ = writeln!(out, "  {}: uses {}", clean(&s.name), usage(c));
        if !c.limits.is_empty() {
            let _ = writeln!(
                out,
                "  {}: limits: {}",
                clean(&s.name),
                clean(&c.limits.join(", "))
            );
        }
        for why in &c.not_enforced {
            let _ = writeln!(out, "  {}: not enforced: {}", clean(&s.name), clean(why));
        }
    }
    out
}

/// `memory 41.2M, cpu 1.3s, 3 processes`.
pub fn usage(c: &ContainStatus) -> String {
    format!(
        "memory {}, cpu {}, {} processes",
        c.memory_bytes.map_or_else(|| "-".into(), bytes),
        c.cpu_ms.map_or_else(|| "-".into(), cpu),
        c.processes.map_or_else(|| "-".into(), |n| n.to_string())
    )
}

/// `41.2M`.
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return format!("{:.1}{unit}", n as f64 / size as f64);
        }
    }
    format!("{n}B")
}

/// `1.3s`, `2m05s`.
pub fn cpu(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
