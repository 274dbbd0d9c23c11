//! Which socket protocol versions a build speaks, and the one check each side makes: the
//! daemon on an attach or control hello, the shim and `mcpctl` on the welcome. A hello carries
//! one version (the peer's newest), so the check is whether this build speaks it; a peer it
//! does not is refused, and the refusal says which side to upgrade.

use crate::wire::PROTOCOL_VERSION;

/// The oldest socket protocol this build still speaks. [`PROTOCOL_VERSION`] is the newest.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Whether this build speaks socket protocol `v`.
pub fn supported(v: u32) -> bool {
    (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v)
}

/// The versions this build speaks, for messages: `1`, or `1 to 3`.
pub fn spoken() -> String {
    if MIN_PROTOCOL_VERSION == PROTOCOL_VERSION {
        PROTOCOL_VERSION.to_string()
    } else {
        format!("{MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}")
    }
}

/// Why a peer speaking `theirs` cannot be served, `None` if it can. `me` and `peer` name the
/// two programs (`mcpd`, `mcp-shim`, `mcpctl`): the one with the older protocol is the one to
/// upgrade.
pub fn mismatch(theirs: u32, me: &str, peer: &str) -> Option<String> {
    if supported(theirs) {
        return None;
    }
    let upgrade = if theirs > PROTOCOL_VERSION { me } else { peer };
    Some(format!(
        "{peer} speaks socket protocol {theirs} and this {me} speaks {}; upgrade {upgrade}",
        spoken()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_versions_between_min_and_max_are_spoken() {
        assert!(!supported(MIN_PROTOCOL_VERSION - 1));
        assert!(supported(MIN_PROTOCOL_VERSION));
        assert!(supported(PROTOCOL_VERSION));
        assert!(!supported(PROTOCOL_VERSION + 1));
    }

    #[test]
    fn a_mismatch_names_the_side_to_upgrade() {
        assert_eq!(mismatch(PROTOCOL_VERSION, "mcpd", "mcp-shim"), None);
        let newer = mismatch(PROTOCOL_VERSION + 1, "mcpd", "mcp-shim").unwrap_or_default();
        assert!(newer.ends_with("upgrade mcpd"), "{newer}");
        let older = mismatch(0, "mcpctl", "mcpd").unwrap_or_default();
        assert!(older.ends_with("upgrade mcpd"), "{older}");
    }
}
