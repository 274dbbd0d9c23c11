//! Sending a request with the configured headers or an OAuth bearer token, and what an error
//! status means (session lost, credentials refused, a failure to report).

#[allow(clippy::wildcard_imports)]
use super::*;

impl Link {
    pub(super) async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, Failure> {
        let Some(auth) = self.auth.clone() else {
            return self.send_once(request).await;
        };
        // Kept to send again once after a 401 that a refresh fixed (bodies here are strings).
        let again = request.try_clone();
        let (request, sent) = self.authorize(&auth, request).await;
        let response = self.send_once(request).await?;
        match response.status() {
            StatusCode::UNAUTHORIZED => {
                let challenge = www_authenticate(&response);
                match auth
                    .on_unauthorized(&self.server, challenge.as_deref(), sent.as_ref())
                    .await
                {
                    crate::auth::Unauthorized::Retry => match again {
                        Some(again) => {
                            let (again, _) = self.authorize(&auth, again).await;
                            // A second 401 goes the usual way: `auth-required`.
                            self.send_once(again).await
                        }
                        None => Ok(response),
                    },
                    // The refusal path turns the 401 into `auth-required`.
                    crate::auth::Unauthorized::AuthRequired(_) => Ok(response),
                    crate::auth::Unauthorized::Unavailable(why) => Err(Failure::Reply(why)),
                }
            }
            StatusCode::FORBIDDEN => {
                let challenge = www_authenticate(&response);
                match auth.on_forbidden(&self.server, challenge.as_deref()) {
                    crate::auth::Forbidden::StepUp(why) | crate::auth::Forbidden::Denied(why) => {
                        Err(Failure::Reply(why))
                    }
                }
            }
            _ => Ok(response),
        }
    }

    /// Adds `Authorization: Bearer` (marked sensitive) when mcpd holds a token.
    pub(super) async fn authorize(
        &self,
        auth: &crate::auth::AuthManager,
        request: reqwest::RequestBuilder,
    ) -> (reqwest::RequestBuilder, Option<secrecy::SecretString>) {
        let Some(token) = auth.bearer(&self.server).await else {
            return (request, None);
        };
        let value = {
            use secrecy::ExposeSecret;
            HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        };
        match value {
            Ok(mut value) => {
                value.set_sensitive(true);
                (
                    request.header(reqwest::header::AUTHORIZATION, value),
                    Some(token),
                )
            }
            Err(_) => (request, None),
        }
    }

    pub(super) async fn send_once(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, Failure> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Failure::Reply("the connection was closed".into())),
            response = request.send() => response.map_err(|e| self.transport_error(e)),
        }
    }

    pub(super) fn transport_error(&self, e: reqwest::Error) -> Failure {
        if e.is_connect() {
            Failure::End(End::Closed(format!(
                "cannot connect to {}: {}",
                self.url(),
                describe_error(e)
            )))
        } else if e.is_timeout() {
            Failure::Reply(format!("{} did not answer in time", self.url()))
        } else {
            Failure::Reply(format!(
                "HTTP request to {} failed: {}",
                self.url(),
                describe_error(e)
            ))
        }
    }

    /// The failure for a 401: `auth-required` when no headers are configured (OAuth is the
    /// way in), otherwise the configured credentials are wrong.
    pub(super) fn unauthorized(&self) -> Failure {
        Failure::End(if self.headers.is_empty() {
            End::Auth(format!(
                "{} requires authorization (HTTP 401); run `mcpctl login {}`",
                self.url(),
                self.server
            ))
        } else {
            End::Closed(format!(
                "{} refused the configured headers (HTTP 401 Unauthorized); check their values",
                self.url()
            ))
        })
    }

    /// What an error status means: the session is gone (404 as the specification says, or
    /// the 400 "No valid session ID provided" that servers built from the TypeScript SDK's
    /// example answer instead), or a failure to report.
    pub(super) async fn refusal(&self, what: &str, response: Response) -> Refusal {
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Refusal::Failed(self.unauthorized());
        }
        let had_session = self.lock().session.is_some();
        let preview = error_preview(response).await;
        if had_session
            && (status == StatusCode::NOT_FOUND
                || (status == StatusCode::BAD_REQUEST
                    && preview.to_ascii_lowercase().contains("session")))
        {
            return Refusal::SessionLost;
        }
        Refusal::Failed(Failure::Reply(format!(
            "{} answered {what} with HTTP {status}{preview}",
            self.url()
        )))
    }
}

/// What an error status meant.
pub(super) enum Refusal {
    SessionLost,
    Failed(Failure),
}

/// `": <the start of the body>"` for error messages, or nothing.
pub(super) async fn error_preview(mut response: Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_PREVIEW {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_PREVIEW)]);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return String::new();
    }
    let more = if body.len() > ERROR_PREVIEW {
        "…"
    } else {
        ""
    };
    format!(": {}{more}", escape_control(&text))
}

/// A reqwest error with its causes, without the URL (its query may hold a secret).
pub(super) fn describe_error(e: reqwest::Error) -> String {
    super::super::error::describe(&e.without_url())
}

/// The `WWW-Authenticate` value of a response (the Bearer challenge, if several).
pub(super) fn www_authenticate(response: &Response) -> Option<String> {
    let values: Vec<&str> = response
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    values
        .iter()
        .find(|v| v.to_ascii_lowercase().contains("bearer"))
        .or(values.first())
        .map(|v| (*v).to_owned())
}

/// One client per server: connection reuse, HTTP/2 by ALPN, certificate validation unless
/// explicitly turned off, redirects only within the server's origin.
pub(super) fn build_client(spec: &HttpSpec) -> Result<reqwest::Client, HttpStartError> {
    crate::net::install_tls_provider();
    let origin = spec.url.origin();
    let https = spec.url.scheme() == "https";
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if attempt.url().origin() != origin {
            attempt.error("a redirect to another origin was refused")
        } else if https && attempt.url().scheme() != "https" {
            attempt.error("a redirect from https to http was refused")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .user_agent(concat!("mcpd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(spec.connect_timeout)
        .redirect(redirects)
        .tls_danger_accept_invalid_certs(spec.insecure_skip_verify)
        .build()
        .map_err(|e| HttpStartError::Client(e.without_url()))
}
