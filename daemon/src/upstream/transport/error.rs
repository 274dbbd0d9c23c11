//! Why a message could not be queued for an upstream (`Transport::send`).

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
