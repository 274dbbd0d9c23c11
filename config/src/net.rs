//! What the configuration, remote upstreams and OAuth decide alike about URLs: one answer each,
//! so that a URL the configuration accepts quietly is one a login also trusts, and all show it
//! the same way. (`mcpd::net` re-exports these next to the TLS set-up.)

use url::Url;

/// Whether the URL's host is this machine: `localhost`, 127.0.0.0/8 or `::1`.
///
/// Not `*.localhost`: RFC 6761 asks resolvers to answer those with loopback, but glibc without
/// nss-myhostname sends them to DNS, so a request (and a token) could leave the machine in
/// clear. Only the names the resolver cannot send elsewhere count.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// https, or plain http to this machine ([`is_loopback`]).
pub fn secure_enough(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => is_loopback(url),
        _ => false,
    }
}

/// `url` without user info, query and fragment (a query is shown as `?…`), for messages,
/// status and logs: any of them may carry a secret.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let query = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    let mut text = shown.to_string();
    if query {
        text.push_str("?…");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a URL")
    }

    #[test]
    fn only_names_that_cannot_leave_the_machine_are_loopback() {
        for here in [
            "http://localhost:8080/mcp",
            "http://LOCALHOST/",
            "http://127.0.0.1/",
            "http://127.3.2.1/",
            "http://[::1]:9/",
        ] {
            assert!(is_loopback(&url(here)), "{here}");
            assert!(secure_enough(&url(here)), "{here}");
        }
        for away in [
            "http://app.localhost/",
            "http://localhost.example.com/",
            "http://10.0.0.1/",
            "http://[::2]/",
        ] {
            assert!(!is_loopback(&url(away)), "{away}");
            assert!(!secure_enough(&url(away)), "{away}");
        }
        assert!(secure_enough(&url("https://app.localhost/")));
        assert!(secure_enough(&url("https://example.com/")));
        assert!(!secure_enough(&url("ftp://localhost/")));
    }

    #[test]
    fn a_shown_url_has_no_user_info_query_or_fragment() {
        assert_eq!(
            redact_url(&url("https://user:pw@example.com/mcp?key=s3cret#frag")),
            "https://example.com/mcp?…"
        );
        assert_eq!(
            redact_url(&url("https://example.com/mcp")),
            "https://example.com/mcp"
        );
    }
}
