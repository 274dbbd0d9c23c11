//! The loopback redirect listener of one login: bound once to `127.0.0.1` (port 0 unless a
//! fixed port is configured), it accepts only `GET /callback` with the expected `Host` and
//! `state`, answers with a short page, and closes when the login ends. Requests that are not
//! the awaited redirect are answered with an error page and do not end the login.
//!
//! A tiny HTTP/1.1 reader over a tokio `TcpListener` is all this needs: one request per
//! connection, headers only, bounded in size and time. Connections are served concurrently,
//! each in a task of its own ([`Listener::serve`]): anyone on the machine can connect to the
//! port, and an idle connection must not hold the browser's redirect back. At most
//! [`MAX_PENDING`] connections are read at once; past that the oldest one is dropped.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use url::Url;

use super::pkce::same_state;

/// The callback path in the redirect URI.
pub const CALLBACK_PATH: &str = "/callback";
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a connection has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections read and judged at once; a new one beyond this drops the oldest.
pub const MAX_PENDING: usize = 64;

/// A bound callback listener.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    port: u16,
}

/// What the authorization response must carry.
#[derive(Debug)]
pub struct Expected {
    /// The `state` sent.
    pub state: SecretString,
    /// The issuer recorded before redirecting (RFC 9207).
    pub issuer: String,
    /// The authorization server advertised `authorization_response_iss_parameter_supported`.
    pub iss_required: bool,
}

/// How a candidate authorization response was judged.
#[derive(Debug)]
pub enum Verdict {
    /// The code to exchange.
    Code(SecretString),
    /// Not the awaited response (wrong path, host or state): refused, keep waiting.
    Refused(String),
    /// The awaited response, carrying an error or a wrong issuer: the login ends.
    Failed(String),
}

impl Listener {
    /// Binds `127.0.0.1:port` (port 0: the system picks one). Bound once; never re-bound.
    pub async fn bind(port: Option<u16>) -> std::io::Result<Self> {
        let listener =
            TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port.unwrap_or(0)))).await?;
        let port = listener.local_addr()?.port();
        Ok(Self { listener, port })
    }

    /// Its port.
    #[cfg(test)]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}{CALLBACK_PATH}", self.port)
    }

    /// Starts serving: every connection is read, judged against `expected` and answered in a
    /// task of its own; the verdicts come out of [`Serving::next`] in the order they are
    /// reached. Dropping the [`Serving`] closes the port and ends every connection task.
    pub fn serve(self, expected: Arc<Expected>, server: String) -> Serving {
        let (tx, verdicts) = mpsc::channel(MAX_PENDING);
        let port = self.port;
        let accept = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            let mut pending: VecDeque<AbortHandle> = VecDeque::new();
            loop {
                let (stream, _) = match self.listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        if tx
                            .send(Verdict::Refused(format!("accept failed: {e}")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        // Out of descriptors and the like: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                while tasks.try_join_next().is_some() {}
                pending.retain(|h| !h.is_finished());
                if pending.len() >= MAX_PENDING
                    && let Some(oldest) = pending.pop_front()
                {
                    oldest.abort();
                }
                let (expected, server, tx) = (Arc::clone(&expected), server.clone(), tx.clone());
                pending.push_back(tasks.spawn(async move {
                    let verdict = one_request(stream, port, &expected, &server).await;
                    let _ = tx.send(verdict).await;
                }));
            }
        });
        Serving {
            verdicts,
            port,
            accept,
        }
    }
}

/// A callback listener being served: see [`Listener::serve`].
#[derive(Debug)]
pub struct Serving {
    verdicts: mpsc::Receiver<Verdict>,
    port: u16,
    accept: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// The next verdict on a request to the port (pending forever once the port is closed).
    pub async fn next(&mut self) -> Verdict {
        match self.verdicts.recv().await {
            Some(verdict) => verdict,
            None => std::future::pending().await,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // The accept task owns the listener and the connection tasks: all end with it.
        self.accept.abort();
    }
}

/// Reads, judges and answers the one request of a connection.
async fn one_request(
    mut stream: TcpStream,
    port: u16,
    expected: &Expected,
    server: &str,
) -> Verdict {
    let verdict = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => judge_request(&head, port, expected),
        Ok(Err(e)) => Verdict::Refused(e.to_string()),
        Err(_) => Verdict::Refused("the request did not arrive in time".into()),
    };
    let (status, text) = match &verdict {
        Verdict::Code(_) => (
            "200 OK",
            format!(
                "Authorization for {server} received. You can close this tab and return to the terminal."
            ),
        ),
        Verdict::Refused(why) => (
            "400 Bad Request",
            format!("mcpd refused this request: {why}."),
        ),
        Verdict::Failed(why) => (
            "400 Bad Request",
            format!("Login to {server} failed: {why}."),
        ),
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, respond(&mut stream, status, &text)).await;
    verdict
}

/// Judges a URL pasted back by the user (headless mode) like a request to the listener.
pub fn judge_pasted(url: &str, port: u16, expected: &Expected) -> Verdict {
    let Ok(url) = Url::parse(url.trim()) else {
        return Verdict::Refused("that is not a URL".into());
    };
    if url.scheme() != "http"
        || url.host_str() != Some("127.0.0.1")
        || url.port() != Some(port)
        || url.path() != CALLBACK_PATH
    {
        return Verdict::Refused(format!(
            "that is not the redirect to http://127.0.0.1:{port}{CALLBACK_PATH}"
        ));
    }
    judge_query(url.query().unwrap_or(""), expected)
}

fn judge_request(head: &str, port: u16, expected: &Expected) -> Verdict {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Verdict::Refused("not an HTTP request".into());
    };
    if !version.starts_with("HTTP/1.") {
        return Verdict::Refused("not an HTTP/1 request".into());
    }
    if method != "GET" {
        return Verdict::Refused(format!("method {method} is not GET"));
    }
    let hosts: Vec<&str> = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim())
        .collect();
    let expected_host = format!("127.0.0.1:{port}");
    if hosts != [expected_host.as_str()] {
        return Verdict::Refused(format!("the Host is not {expected_host}"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != CALLBACK_PATH {
        return Verdict::Refused(format!("{path} is not the callback path"));
    }
    judge_query(query, expected)
}

/// Checks `state` (constant time), then RFC 9207 `iss`, then `code` or `error`.
fn judge_query(query: &str, expected: &Expected) -> Verdict {
    let mut state = None;
    let mut iss = None;
    let mut code = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*k {
            "state" => &mut state,
            "iss" => &mut iss,
            "code" => &mut code,
            "error" => &mut error,
            "error_description" => &mut description,
            _ => continue,
        };
        if slot.is_some() {
            return Verdict::Refused(format!("the parameter {k} appears twice"));
        }
        *slot = Some(v.into_owned());
    }
    match state {
        Some(s) if same_state(&expected.state, &s) => {}
        Some(_) => return Verdict::Refused("the state does not match this login".into()),
        None => return Verdict::Refused("the state is missing".into()),
    }
    match iss {
        // Simple string comparison, no normalisation (RFC 9207 §2.4).
        Some(iss) if iss != expected.issuer => {
            // On a mismatch the error fields are neither used nor shown.
            return Verdict::Failed(format!(
                "the response came from issuer {iss:?}, not {:?} (a mix-up attack?)",
                expected.issuer
            ));
        }
        Some(_) => {}
        None if expected.iss_required => {
            return Verdict::Failed(
                "the authorization server promised an iss parameter and sent none".into(),
            );
        }
        None => {}
    }
    if let Some(error) = error {
        let error: String = error.chars().take(64).collect();
        return Verdict::Failed(match description {
            Some(d) => format!(
                "the authorization server answered {error}: {}",
                d.chars().take(300).collect::<String>()
            ),
            None => format!("the authorization server answered {error}"),
        });
    }
    match code {
        Some(code) if !code.is_empty() => Verdict::Code(SecretString::from(code)),
        _ => Verdict::Failed("the redirect carries no code".into()),
    }
}

/// Why a connection to the callback port brought no request head (the request is refused).
#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("read failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("the connection closed early")]
    ClosedEarly,
    #[error("the request is not UTF-8")]
    NotUtf8,
    #[error("the request is too long")]
    TooLong,
}

async fn read_head(stream: &mut TcpStream) -> Result<String, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(HeadError::Read)?;
        if n == 0 {
            return Err(HeadError::ClosedEarly);
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return String::from_utf8(head).map_err(|_| HeadError::NotUtf8);
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLong);
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, text: &str) -> std::io::Result<()> {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>mcpd</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>mcpd</h1><p>{escaped}</p></body></html>\n"
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(iss_required: bool) -> Expected {
        Expected {
            state: SecretString::from("st4te".to_owned()),
            issuer: "https://as.example".into(),
            iss_required,
        }
    }

    fn head(target: &str, host: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t")
    }

    fn is_code(v: &Verdict) -> bool {
        matches!(v, Verdict::Code(_))
    }

    #[test]
    fn only_the_expected_path_host_and_state_are_accepted() {
        let e = expected(false);
        assert!(is_code(&judge_request(
            &head("/callback?code=c&state=st4te", "127.0.0.1:5000"),
            5000,
            &e
        )));
        for (target, host) in [
            ("/callback?code=c&state=wrong", "127.0.0.1:5000"),
            ("/callback?code=c", "127.0.0.1:5000"),
            ("/other?code=c&state=st4te", "127.0.0.1:5000"),
            ("/callback?code=c&state=st4te", "localhost:5000"),
            ("/callback?code=c&state=st4te", "127.0.0.1:5001"),
            ("/callback?code=c&state=st4te&state=st4te", "127.0.0.1:5000"),
        ] {
            let v = judge_request(&head(target, host), 5000, &e);
            assert!(matches!(v, Verdict::Refused(_)), "{target} {host}: {v:?}");
        }
        let post = "POST /callback?code=c&state=st4te HTTP/1.1\r\nHost: 127.0.0.1:5000";
        assert!(matches!(judge_request(post, 5000, &e), Verdict::Refused(_)));
    }

    #[test]
    fn iss_is_checked_per_rfc_9207() {
        let q = |iss: &str| format!("code=c&state=st4te{iss}");
        assert!(is_code(&judge_query(
            &q("&iss=https%3A%2F%2Fas.example"),
            &expected(true)
        )));
        assert!(matches!(
            judge_query(&q(""), &expected(true)),
            Verdict::Failed(_)
        ));
        assert!(is_code(&judge_query(&q(""), &expected(false))));
        for wrong in [
            "https%3A%2F%2Fas.example%2F",
            "https%3A%2F%2FAS.example",
            "https%3A%2F%2Fevil.example",
        ] {
            assert!(matches!(
                judge_query(&q(&format!("&iss={wrong}")), &expected(false)),
                Verdict::Failed(_)
            ));
        }
        // An error with the wrong issuer is not shown.
        let v = judge_query(
            "error=access_denied&error_description=evil&state=st4te&iss=x",
            &expected(false),
        );
        let Verdict::Failed(why) = v else { panic!() };
        assert!(!why.contains("evil"), "{why}");
        let v = judge_query("error=access_denied&state=st4te", &expected(false));
        assert!(
            matches!(&v, Verdict::Failed(w) if w == "the authorization server answered access_denied"),
            "{v:?}"
        );
    }

    #[test]
    fn pasted_urls_are_judged_like_requests() {
        let e = expected(false);
        assert!(is_code(&judge_pasted(
            " http://127.0.0.1:5000/callback?code=c&state=st4te\n",
            5000,
            &e
        )));
        assert!(matches!(
            judge_pasted(
                "http://127.0.0.1:5001/callback?code=c&state=st4te",
                5000,
                &e
            ),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            judge_pasted("nonsense", 5000, &e),
            Verdict::Refused(_)
        ));
    }

    #[tokio::test]
    async fn the_listener_answers_and_refuses_over_tcp() {
        let listener = Listener::bind(None).await.unwrap();
        let port = listener.port();
        assert!(listener.redirect_uri().starts_with("http://127.0.0.1:"));
        let mut serving = listener.serve(Arc::new(expected(false)), "x".into());
        let client = tokio::spawn(async move {
            let mut replies = Vec::new();
            for target in ["/nope?state=st4te&code=c", "/callback?state=st4te&code=c"] {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                s.write_all(
                    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
                let mut reply = String::new();
                s.read_to_string(&mut reply).await.unwrap();
                replies.push(reply);
            }
            replies
        });
        assert!(matches!(serving.next().await, Verdict::Refused(_)));
        assert!(is_code(&serving.next().await));
        let replies = client.await.unwrap();
        assert!(replies[0].starts_with("HTTP/1.1 400"), "{}", replies[0]);
        assert!(replies[1].starts_with("HTTP/1.1 200"), "{}", replies[1]);
    }

    /// `read_head` on the server side of a connection the client wrote `bytes` to and closed.
    async fn head_of(bytes: Vec<u8>) -> Result<String, HeadError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            s.shutdown().await.unwrap();
            s
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        drop(client.await.unwrap());
        head
    }

    #[tokio::test]
    async fn a_request_head_is_read_to_its_blank_line_or_refused_with_the_reason() {
        let head = head_of(b"GET /callback HTTP/1.1\r\nHost: h\r\n\r\nbody".to_vec()).await;
        assert_eq!(head.unwrap(), "GET /callback HTTP/1.1\r\nHost: h");
        let e = head_of(b"GET /callback HTTP/1.1\r\n".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(e, HeadError::ClosedEarly));
        assert_eq!(e.to_string(), "the connection closed early");
        let e = head_of(b"GET /\xff HTTP/1.1\r\n\r\n".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(e, HeadError::NotUtf8));
        assert_eq!(e.to_string(), "the request is not UTF-8");
        let e = head_of(vec![b'a'; MAX_HEAD + 2048]).await.unwrap_err();
        assert!(matches!(e, HeadError::TooLong));
        assert_eq!(e.to_string(), "the request is too long");
    }

    #[tokio::test]
    async fn idle_connections_do_not_hold_the_browsers_redirect_back() {
        let listener = Listener::bind(None).await.unwrap();
        let port = listener.port();
        let mut serving = listener.serve(Arc::new(expected(false)), "x".into());
        // Connections that never send a byte, held open for the whole test.
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        let mut browser = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        browser
            .write_all(
                format!(
                    "GET /callback?state=st4te&code=c HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // The first verdict is the browser's: the idle connections are still being waited on
        // (one at a time, they would each have held it back for the read timeout).
        assert!(is_code(&serving.next().await));
        let mut reply = String::new();
        browser.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        drop(idle);
    }

    #[tokio::test]
    async fn past_the_cap_the_oldest_pending_connection_is_dropped() {
        let listener = Listener::bind(None).await.unwrap();
        let port = listener.port();
        let _serving = listener.serve(Arc::new(expected(false)), "x".into());
        let mut first = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut rest = Vec::new();
        for _ in 0..MAX_PENDING {
            rest.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        // The oldest idle connection was closed without an answer to make room.
        let mut got = Vec::new();
        assert_eq!(first.read_to_end(&mut got).await.unwrap(), 0);
    }
}
