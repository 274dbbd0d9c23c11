//! What remote upstreams (`upstream/http.rs`) and OAuth (`auth/`) decide alike about URLs and
//! TLS. The URL decisions live with the configuration (`mcpd_config::net`), which makes them
//! first; they are re-exported here for the rest of the daemon.

use std::sync::Once;

pub use mcpd_config::net::{redact_url, secure_enough};

/// Installs rustls's ring provider as the process default, once, before the first HTTP client
/// is built. Another part of the process may have installed one already; that one is used.
pub fn install_tls_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
