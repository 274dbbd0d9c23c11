//! A transport a test drives (unit tests only): it hands the test every message the actor
//! sends and delivers the events the test injects, so that the actor's lifecycle (handshake,
//! pings, restarts, backoff, idle stops) runs on tokio's paused clock without a process.
//!
//! A test queues one [`FakeServer`] per start it expects with [`expect`]; the actor's next
//! start of that server name takes it. A start with none queued fails, as a server that cannot
//! be started.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::transport::Event;

/// The transport side, owned by the actor.
#[derive(Debug)]
pub struct Fake {
    sent: mpsc::UnboundedSender<String>,
    events: mpsc::UnboundedReceiver<Event>,
    stopped: Option<oneshot::Sender<()>>,
    closing: Arc<AtomicBool>,
}

/// The test's side: what the actor sent, and the events to deliver.
#[derive(Debug)]
pub(crate) struct FakeServer {
    sent: mpsc::UnboundedReceiver<String>,
    events: mpsc::UnboundedSender<Event>,
    stopped: oneshot::Receiver<()>,
    closing: Arc<AtomicBool>,
}

type Queue = Mutex<HashMap<String, VecDeque<Fake>>>;

fn queue() -> &'static Queue {
    static QUEUE: std::sync::OnceLock<Queue> = std::sync::OnceLock::new();
    QUEUE.get_or_init(Queue::default)
}

/// Queues a fake for the next start of `server` (names are unique per test).
pub(crate) fn expect(server: &str) -> FakeServer {
    let (sent_tx, sent) = mpsc::unbounded_channel();
    let (events, events_rx) = mpsc::unbounded_channel();
    let (stopped_tx, stopped) = oneshot::channel();
    let closing = Arc::new(AtomicBool::new(false));
    queue()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(server.to_owned())
        .or_default()
        .push_back(Fake {
            sent: sent_tx,
            events: events_rx,
            stopped: Some(stopped_tx),
            closing: Arc::clone(&closing),
        });
    FakeServer {
        sent,
        events,
        stopped,
        closing,
    }
}

/// The fake queued for this start of `server`, if a test queued one.
pub(crate) fn take(server: &str) -> Option<Fake> {
    queue()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(server)?
        .pop_front()
}

impl Fake {
    pub(crate) fn send(&self, line: String) -> Result<(), super::transport::SendError> {
        if self.closing() {
            return Err(super::transport::SendError::Fake);
        }
        self.sent
            .send(line)
            .map_err(|_| super::transport::SendError::Fake)
    }

    pub(crate) async fn next(&mut self) -> Event {
        match self.events.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    pub(crate) fn stop(&mut self) -> String {
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.send(());
        }
        "stopped".to_owned()
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

impl FakeServer {
    /// The next message the actor sent.
    pub(crate) async fn recv(&mut self) -> Value {
        let line = self.sent.recv().await.expect("the actor sends a message");
        serde_json::from_str(&line).expect("the actor sends JSON")
    }

    /// The next message the actor sent, which must be a request for `method`.
    pub(crate) async fn request(&mut self, method: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(message["method"], method, "{message}");
        message
    }

    /// Answers `request` with `result`.
    pub(crate) fn answer(&self, request: &Value, result: Value) {
        let line = json!({"jsonrpc": "2.0", "id": request["id"], "result": result});
        self.event(Event::Message(line.to_string().as_str().into()));
    }

    /// Delivers an event to the actor.
    pub(crate) fn event(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Answers `initialize` (no capabilities) and takes `notifications/initialized`.
    pub(crate) async fn handshake(&mut self) {
        let init = self.request("initialize").await;
        self.answer(
            &init,
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "fake", "version": "1"}}),
        );
        let initialized = self.recv().await;
        assert_eq!(initialized["method"], "notifications/initialized");
    }

    /// The transport is ending by itself from now on (its process exited).
    pub(crate) fn start_closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Waits until the actor stopped this transport.
    pub(crate) async fn stopped(&mut self) {
        let _ = (&mut self.stopped).await;
    }
}
