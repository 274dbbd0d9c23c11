//! What the configuration's `${secret:NAME}` values have to do with the client side: recognising
//! credentials written in plaintext ([`detect`]) and the largest value a secret may have. The
//! store itself is the daemon's (`mcpd::secrets`), which re-exports these.

pub mod detect;

/// Longest value accepted (a key or token is far smaller; this stops a pasted file).
pub const MAX_VALUE: usize = 64 * 1024;
