//! The `WWW-Authenticate` challenge of a protected MCP server (RFC 6750 §3, RFC 9728 §5.1):
//! read by the HTTP client (`http.rs`, a probe) and by discovery (`discovery.rs`).

/// The parameters of a `Bearer` challenge (RFC 6750 §3, RFC 9728 §5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    /// `resource_metadata`: where the protected resource metadata is.
    pub resource_metadata: Option<String>,
    /// `scope`: what the server wants, space-separated.
    pub scope: Option<String>,
    /// `error`: `invalid_token`, `insufficient_scope`, ...
    pub error: Option<String>,
}

impl Challenge {
    /// Reads the `Bearer` challenge of a `WWW-Authenticate` value; other schemes are ignored.
    pub fn parse(header: &str) -> Self {
        let mut out = Self::default();
        let mut rest = header;
        let mut in_bearer = false;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let word_end = rest
                .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            let word = &rest[..word_end];
            let after = rest[word_end..].trim_start_matches([' ', '\t']);
            if let Some(value_part) = after.strip_prefix('=')
                && !value_part.starts_with('=')
            {
                // name=value (token or quoted string)
                let value_part = value_part.trim_start_matches([' ', '\t']);
                let (value, remaining) = if let Some(q) = value_part.strip_prefix('"') {
                    let mut value = String::new();
                    let mut chars = q.char_indices();
                    let mut end = q.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, n)) = chars.next() {
                                    value.push(n);
                                }
                            }
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    (value, &q[end..])
                } else {
                    let end = value_part
                        .find([',', ' ', '\t'])
                        .unwrap_or(value_part.len());
                    (value_part[..end].to_owned(), &value_part[end..])
                };
                if in_bearer {
                    match word.to_ascii_lowercase().as_str() {
                        "resource_metadata" => out.resource_metadata = Some(value),
                        "scope" => out.scope = Some(value),
                        "error" => out.error = Some(value),
                        _ => {}
                    }
                }
                rest = remaining;
            } else {
                // A scheme name (or a token68, which Bearer challenges do not use).
                in_bearer = word.eq_ignore_ascii_case("bearer");
                rest = &rest[word_end..];
            }
        }
        out
    }

    /// The scopes of `scope`, in order.
    pub fn scopes(&self) -> Vec<String> {
        self.scope
            .as_deref()
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_quoted_and_token_values() {
        let c = Challenge::parse(
            r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource", scope="files:read files:write", error="insufficient_scope""#,
        );
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("https://mcp.example.com/.well-known/oauth-protected-resource")
        );
        assert_eq!(c.scopes(), ["files:read", "files:write"]);
        assert_eq!(c.error.as_deref(), Some("insufficient_scope"));

        let c = Challenge::parse(r#"Basic realm="x", Bearer error=invalid_token, scope="a\"b""#);
        assert_eq!(c.error.as_deref(), Some("invalid_token"));
        assert_eq!(c.scope.as_deref(), Some("a\"b"));
        assert!(c.resource_metadata.is_none());
        assert_eq!(
            Challenge::parse(r#"Basic realm="x", scope="no""#),
            Challenge::default()
        );
        assert_eq!(Challenge::parse(""), Challenge::default());
    }
}
