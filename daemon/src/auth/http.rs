//! The HTTP client of the OAuth machinery: bounded bodies, no redirects for anything that
//! carries a credential, and errors that never echo a request body.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;
use zeroize::Zeroizing;

/// Largest metadata or token response read.
const MAX_BODY: usize = 256 * 1024;
/// Time one request to an authorization server may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects followed for metadata documents (never for token requests).
const MAX_REDIRECTS: usize = 3;

/// One client for every OAuth request of the daemon.
#[derive(Debug, Clone)]
pub struct Http {
    /// For metadata: a few redirects, to https or loopback only.
    get: reqwest::Client,
    /// For registration, token and revocation requests: no redirects.
    post: reqwest::Client,
}

/// A failed request to an authorization server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// It could not be reached or did not answer: nothing was decided, stored tokens stay.
    #[error("{0}")]
    Network(String),
    /// It answered with an OAuth error (`error`, and `error_description` when given).
    #[error("HTTP {status}, error {error}{}", .description.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The `error` code, e.g. `invalid_grant`.
        error: String,
        /// `error_description`, shortened.
        description: Option<String>,
    },
    /// It answered something else that is not what was asked for.
    #[error("{0}")]
    Protocol(String),
}

impl Http {
    /// Builds the clients (rustls, the ring provider).
    pub fn new() -> Result<Self, super::AuthError> {
        crate::net::install_tls_provider();
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if !crate::net::secure_enough(attempt.url()) {
                attempt.error("a redirect to plain http was refused")
            } else {
                attempt.follow()
            }
        });
        let build = |policy| {
            reqwest::Client::builder()
                .user_agent(concat!("mcpd/", env!("CARGO_PKG_VERSION")))
                .timeout(TIMEOUT)
                .connect_timeout(Duration::from_secs(10))
                .redirect(policy)
                .build()
                .map_err(super::AuthError::HttpClient)
        };
        Ok(Self {
            get: build(redirects)?,
            post: build(reqwest::redirect::Policy::none())?,
        })
    }

    /// GETs a JSON document; `Ok(None)` for 404 and other 4xx answers (try the next URL).
    pub async fn get_json<T: DeserializeOwned>(&self, url: &Url) -> Result<Option<T>, HttpError> {
        let response = self
            .get
            .get(url.clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(
                "MCP-Protocol-Version",
                HeaderValue::from_static("2025-11-25"),
            )
            .send()
            .await
            .map_err(|e| HttpError::Network(network(&e)))?;
        let status = response.status();
        if status.is_client_error() {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(HttpError::Protocol(format!("HTTP {status}")));
        }
        let body = read_body(response).await?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| HttpError::Protocol(format!("not the expected JSON document: {e}")))
    }

    /// Asks the MCP endpoint without credentials to learn its challenge: an `initialize`
    /// POST; a 401's `WWW-Authenticate` is returned. Anything else: `None`.
    pub async fn probe(&self, server: &Url) -> Option<super::challenge::Challenge> {
        let body = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcpd","version":"0"}}}"#;
        let response = self
            .post
            .post(server.clone())
            .header(
                ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            )
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .ok()?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return None;
        }
        let challenge = response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(super::challenge::Challenge::parse)
            .find(|c| *c != super::challenge::Challenge::default())
            .unwrap_or_default();
        Some(challenge)
    }

    /// POSTs a JSON body (registration); returns the JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<T, HttpError> {
        let body = serde_json::to_vec(body).map_err(|e| HttpError::Protocol(e.to_string()))?;
        let response = self
            .post
            .post(url)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .map_err(|e| HttpError::Network(network(&e)))?;
        json_answer(response).await
    }

    /// POSTs a form (token and revocation requests), with HTTP Basic client authentication
    /// when `basic` is given. The form holds secrets: it is zeroed after sending.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &SecretString)>,
    ) -> Result<Response, HttpError> {
        let body = Zeroizing::new(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        );
        let mut request = self
            .post
            .post(url)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(body.as_bytes().to_vec());
        if let Some((id, secret)) = basic {
            // RFC 6749 §2.3.1: both form-urlencoded before Basic encoding.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(enc(id), Some(enc(secret.expose_secret())));
        }
        request
            .send()
            .await
            .map_err(|e| HttpError::Network(network(&e)))
    }
}

/// Reads a JSON answer, turning OAuth error bodies into [`HttpError::OAuth`].
pub async fn json_answer<T: DeserializeOwned>(response: Response) -> Result<T, HttpError> {
    let status = response.status();
    let body = read_body(response).await?;
    if !status.is_success() {
        return Err(oauth_error(status, &body));
    }
    serde_json::from_slice(&body)
        .map_err(|e| HttpError::Protocol(format!("the answer is not the expected JSON: {e}")))
}

/// The error an unsuccessful answer stands for.
pub fn oauth_error(status: StatusCode, body: &[u8]) -> HttpError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => HttpError::OAuth {
            status: status.as_u16(),
            error: e.error.chars().take(64).collect(),
            description: e.error_description.map(|d| d.chars().take(300).collect()),
        },
        Err(_) if status.is_server_error() => {
            HttpError::Network(format!("the authorization server answered HTTP {status}"))
        }
        Err(_) => HttpError::Protocol(format!("the authorization server answered HTTP {status}")),
    }
}

/// The body, at most [`MAX_BODY`] bytes, zeroed when dropped (it may hold tokens).
pub async fn read_body(mut response: Response) -> Result<Zeroizing<Vec<u8>>, HttpError> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError::Network(network(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(HttpError::Protocol(format!(
                "the answer is larger than {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error without the URL's query (it never holds secrets here, but stay safe).
fn network(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if let Some(url) = e.url() {
        let mut shown = url.clone();
        shown.set_query(None);
        text = format!("{shown}: {text}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oauth_error_says_the_status_the_code_and_the_description_when_given() {
        let e = oauth_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"the code expired"}"#,
        );
        assert!(matches!(e, HttpError::OAuth { status: 400, .. }));
        assert_eq!(
            e.to_string(),
            "HTTP 400, error invalid_grant: the code expired"
        );
        let e = oauth_error(StatusCode::UNAUTHORIZED, br#"{"error":"invalid_client"}"#);
        assert_eq!(e.to_string(), "HTTP 401, error invalid_client");
        let e = oauth_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(matches!(e, HttpError::Network(_)));
        assert_eq!(
            e.to_string(),
            "the authorization server answered HTTP 502 Bad Gateway"
        );
    }
}
