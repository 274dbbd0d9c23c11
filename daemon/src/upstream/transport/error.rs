//! Why a transport could not start (`Transport::start`) or a message could not be queued for
//! an upstream (`Transport::send`).

/// Why a message was not queued; nothing was sent. The actor fails the request (or drops an
/// internal one) and says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A child's stdin queue is full (it reads more slowly than requests come).
    #[error("its input queue is full")]
    StdinFull,
    /// A child's stdin is closed (it exited or is being stopped).
    #[error("its stdin is closed")]
    StdinClosed,
    /// An HTTP transport's outgoing queue is full.
    #[error("too many messages are waiting to be sent")]
    QueueFull,
    /// An HTTP transport's connection is closed.
    #[error("the connection is closed")]
    ConnectionClosed,
    /// A fake transport (unit tests) is closing or its test has ended.
    #[cfg(test)]
    #[error("the fake transport is closing or its test is gone")]
    Fake,
}

/// Why the handshake could not begin: its first request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot send {method}: {source}")]
pub struct HandshakeError {
    /// `initialize` or `server/discover`.
    pub method: &'static str,
    /// Why.
    #[source]
    pub source: SendError,
}

/// Why a server could not be started or connected to; the actor counts it as a failed start
/// and shows the message in `mcpctl status`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A `${secret:NAME}` of the definition could not be filled in (the message says which
    /// and what to do).
    #[error(transparent)]
    Secret(#[from] crate::config::secret_refs::ResolveError),
    /// The child process could not be spawned.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The configured command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP transport could not be set up.
    #[error(transparent)]
    Http(#[from] HttpStartError),
}

/// Why an HTTP transport could not be set up (nothing was sent yet).
#[derive(Debug, thiserror::Error)]
pub enum HttpStartError {
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot set up the HTTP client: {}", describe(.0))]
    Client(#[source] reqwest::Error),
    /// A configured header name is not a valid one (checked when the configuration was
    /// read, so this is a defence).
    #[error("header `{name}`: {source}")]
    HeaderName {
        /// The configured name.
        name: String,
        /// Why.
        #[source]
        source: reqwest::header::InvalidHeaderName,
    },
    /// A configured header value is not a valid one.
    #[error("header `{name}` has an invalid value")]
    HeaderValue {
        /// The header's name.
        name: String,
    },
}

/// An error and its causes in one line (the URL, if any, included: strip it first).
pub(super) fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
