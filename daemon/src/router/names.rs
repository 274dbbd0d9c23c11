//! Namespaced names: `<server><sep><tool>`.
//!
//! Clients accept tool names of `[A-Za-z0-9_-]` up to 64 characters. A name that already fits is
//! used as is; otherwise invalid characters become `_`, the name is cut to fit, and a short hash
//! of the full original name is appended, so that the result is deterministic, does not depend
//! on which other servers or tools exist, and stays distinct from its neighbours.

/// Longest namespaced name.
pub const MAX_NAME: usize = 64;
const HASH_LEN: usize = 6;

/// The namespaced name of `item` (a tool or prompt) of `server`.
pub fn namespaced(server: &str, sep: &str, item: &str) -> String {
    let full = format!("{server}{sep}{item}");
    if full.len() <= MAX_NAME && full.chars().all(valid_char) {
        return full;
    }
    with_hash(&full, full.as_bytes())
}

/// Whether `server<sep>item` also reads as `<other server><sep><rest>` for another configured
/// server: `a` + `b__echo` and `a__b` + `echo` both spell `a__b__echo`. Decided by the
/// configured names alone, so the answer does not depend on which servers are up or which tools
/// the others list, and is the same after every restart and whatever order servers start in.
pub fn is_ambiguous(server: &str, sep: &str, item: &str, servers: &[&str]) -> bool {
    !sep.is_empty()
        && item.match_indices(sep).any(|(at, _)| {
            let longer = format!("{server}{sep}{}", &item[..at]);
            servers.contains(&longer.as_str())
        })
}

/// The name of `item` of `server` when [`namespaced`] would spell another server's name too:
/// the plain name cut to fit, a `-`, and 6 hex digits of a hash of the pair (not of the joined
/// text, which both pairs share).
pub fn disambiguated(server: &str, sep: &str, item: &str) -> String {
    let pair = format!("{server}\0{item}");
    with_hash(&format!("{server}{sep}{item}"), pair.as_bytes())
}

/// `text` with invalid characters replaced, cut to fit, then `-` and 6 hex digits of a hash of
/// `key`.
fn with_hash(text: &str, key: &[u8]) -> String {
    let hash = format!("{:016x}", fnv1a(key));
    let mut out: String = text
        .chars()
        .map(|c| if valid_char(c) { c } else { '_' })
        .collect();
    out.truncate(MAX_NAME - HASH_LEN - 1);
    out.push('-');
    out.push_str(&hash[..HASH_LEN]);
    out
}

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// FNV-1a, 64 bit: stable across builds and platforms, unlike `DefaultHasher`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_are_joined() {
        assert_eq!(
            namespaced("everything", "__", "get-sum"),
            "everything__get-sum"
        );
    }

    #[test]
    fn invalid_or_long_names_get_a_hash() {
        let n = namespaced("my server", "__", "do.it");
        assert!(n.starts_with("my_server__do_it-"), "{n}");
        assert_eq!(n, namespaced("my server", "__", "do.it"));
        assert_ne!(n, namespaced("my_server", "__", "do_it"));
        let long = namespaced("s", "__", &"x".repeat(100));
        assert_eq!(long.len(), MAX_NAME);
    }

    #[test]
    fn a_split_that_spells_another_servers_name_is_ambiguous() {
        let servers = ["a", "a__b", "c"];
        assert!(is_ambiguous("a", "__", "b__echo", &servers));
        assert!(!is_ambiguous("a__b", "__", "echo", &servers));
        assert!(!is_ambiguous("c", "__", "b__echo", &servers));
        assert!(!is_ambiguous("a", "__", "echo", &servers));
        let one = disambiguated("a", "__", "b__echo");
        assert!(one.starts_with("a__b__echo-"), "{one}");
        assert_ne!(one, namespaced("a__b", "__", "echo"));
        assert_ne!(one, disambiguated("a__b", "__", "echo"));
        assert_eq!(one, disambiguated("a", "__", "b__echo"));
    }

    proptest! {
        #[test]
        fn every_name_is_valid_and_deterministic(server in "\\PC{1,40}", tool in "\\PC{1,80}") {
            let n = namespaced(&server, "__", &tool);
            prop_assert!(n.len() <= MAX_NAME);
            prop_assert!(n.chars().all(valid_char));
            prop_assert_eq!(n, namespaced(&server, "__", &tool));
        }
    }
}
