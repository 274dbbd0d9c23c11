//! The session: renewing it when the server forgot it (replaying the actor's `initialize`), and
//! the GET stream for server-initiated messages, reopened after a drop.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Link {
    /// After a refusal: renews a lost session once (the caller then retries the request),
    /// else fails with why.
    pub(super) async fn retry_after(
        self: &Arc<Self>,
        refusal: Refusal,
        generation: u64,
        renewed: &mut bool,
    ) -> Result<(), Failure> {
        match refusal {
            Refusal::SessionLost if !*renewed => {
                self.renew(generation).await?;
                *renewed = true;
                Ok(())
            }
            Refusal::SessionLost => Err(Failure::Reply(format!(
                "{} does not know the new session either",
                self.url()
            ))),
            Refusal::Failed(f) => Err(f),
        }
    }

    /// Starts a new session after the server forgot ours (the one of generation `seen`). One
    /// renewal at a time: a caller that finds one under way waits for it.
    pub(super) async fn renew(self: &Arc<Self>, seen: u64) -> Result<(), Failure> {
        let mut generation = self.generation.subscribe();
        if self.lock().generation != seen {
            return Ok(());
        }
        if !self.renewing.swap(true, Ordering::AcqRel) {
            let result = self.replay_initialize().await;
            self.renewing.store(false, Ordering::Release);
            return result.map_err(|f| {
                let end = f.fatal();
                let why = match &end {
                    End::Closed(w) | End::Auth(w) => w.clone(),
                };
                self.end(end);
                Failure::Reply(why)
            });
        }
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Failure::Reply("the session could not be renewed".into())),
            _ = generation.wait_for(|g| *g != seen) => Ok(()),
        }
    }

    /// Replays the actor's `initialize` (its answer is not passed on: the actor has it) and
    /// `notifications/initialized`, then opens the new session's GET stream.
    pub(super) async fn replay_initialize(self: &Arc<Self>) -> Result<(), Failure> {
        let (initialize, initialized) = {
            let mut state = self.lock();
            state.session = None;
            state.protocol = None;
            (state.initialize.clone(), state.initialized.clone())
        };
        let Some((line, id)) = initialize else {
            return Err(Failure::Reply(
                "the session expired before it was set up".into(),
            ));
        };
        let response = self.post(&line).await?;
        if !response.status().is_success() {
            return Err(match self.refusal("a new initialize", response).await {
                Refusal::SessionLost => Failure::Reply("a new initialize was refused".into()),
                Refusal::Failed(f) => f,
            });
        }
        let session = session_id(&response)?;
        self.lock().session = session;
        let Some(answer) = self.read_answer(response, Some(&id)).await? else {
            return Err(Failure::Reply(format!(
                "{} did not answer the new initialize",
                self.url()
            )));
        };
        self.lock().protocol = negotiated_protocol(&answer);
        if let Some(initialized) = initialized {
            let request = self
                .request_builder(Method::POST)
                .header(ACCEPT, ACCEPT_POST)
                .header(CONTENT_TYPE, JSON)
                .timeout(NOTIFY_TIMEOUT)
                .body(initialized);
            let response = self.send(request).await?;
            if !response.status().is_success() {
                return Err(
                    match self.refusal("notifications/initialized", response).await {
                        Refusal::SessionLost => {
                            Failure::Reply("the new session was lost at once".into())
                        }
                        Refusal::Failed(f) => f,
                    },
                );
            }
        }
        let generation = {
            let mut state = self.lock();
            state.renewals += 1;
            state.generation += 1;
            state.stream = Stream::Closed;
            state.generation
        };
        tracing::info!(server = %self.server, "started a new session");
        self.generation.send_replace(generation);
        self.tasks.spawn(Arc::clone(self).listen(generation));
        self.show();
        Ok(())
    }

    pub(super) fn set_stream(&self, stream: Stream, generation: u64) {
        {
            let mut state = self.lock();
            if state.generation != generation {
                return;
            }
            state.stream = stream;
        }
        self.show();
    }

    /// Holds the GET stream for server-initiated messages of session `generation`: reopens it
    /// when it drops, with `Last-Event-ID` so that the server can replay what was missed.
    pub(super) fn listen(
        self: Arc<Self>,
        generation: u64,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // Boxed: a renewal started here spawns the next session's listener.
        Box::pin(self.listen_inner(generation))
    }

    pub(super) async fn listen_inner(self: Arc<Self>, generation: u64) {
        let mut decoder = SseDecoder::new(MAX_MESSAGE_LINE);
        let mut items = Vec::new();
        let mut failures: u32 = 0;
        loop {
            if self.lock().generation != generation {
                return;
            }
            let mut request = self.request_builder(Method::GET).header(ACCEPT, ACCEPT_SSE);
            if let Some(last) = decoder
                .last_event_id()
                .and_then(|l| HeaderValue::from_str(l).ok())
            {
                request = request.header(LAST_EVENT_ID.clone(), last);
            }
            let problem = match self.send(request).await {
                Err(Failure::End(End::Closed(why)) | Failure::Reply(why)) => why,
                Err(Failure::End(end)) => return self.end(end),
                Ok(response) if response.status() == StatusCode::METHOD_NOT_ALLOWED => {
                    tracing::debug!(server = %self.server, "the server offers no GET stream");
                    return self.set_stream(Stream::NotOffered, generation);
                }
                Ok(response) if response.status().is_success() => {
                    if media_type(&response) != "text/event-stream" {
                        tracing::debug!(server = %self.server, "the GET stream is not an event stream; not reopened");
                        return self.set_stream(Stream::NotOffered, generation);
                    }
                    self.set_stream(Stream::Open, generation);
                    decoder.reset_connection();
                    let mut response = response;
                    let mut received = false;
                    let ended = loop {
                        let chunk = tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            _ = wait_generation_change(&self.generation, generation) => return,
                            chunk = response.chunk() => chunk,
                        };
                        match chunk {
                            Ok(Some(bytes)) => {
                                received = true;
                                decoder.feed(&bytes, &mut items);
                            }
                            Ok(None) => break "the server closed it".to_owned(),
                            Err(e) => break describe_error(e),
                        }
                        for item in items.drain(..) {
                            match item {
                                SseItem::Event { data, .. } => {
                                    self.emit(Event::Message(data)).await
                                }
                                SseItem::TooLong(len) => self.emit(Event::TooLong(len, None)).await,
                            }
                        }
                    };
                    if received {
                        failures = 0;
                    }
                    ended
                }
                Ok(response) => match self.refusal("the GET stream", response).await {
                    Refusal::SessionLost => {
                        tracing::info!(server = %self.server, "the server no longer knows the session; starting a new one");
                        let link = Arc::clone(&self);
                        // The renewal opens the next session's stream.
                        let _ = link.renew(generation).await;
                        return;
                    }
                    Refusal::Failed(Failure::End(end)) => return self.end(end),
                    Refusal::Failed(Failure::Reply(why)) => why,
                },
            };
            failures = failures.saturating_add(1);
            let delay = decoder
                .retry()
                .unwrap_or(DEFAULT_RETRY)
                .saturating_mul(1 << failures.min(5).saturating_sub(1))
                .min(MAX_STREAM_BACKOFF);
            tracing::debug!(server = %self.server, "GET stream: {problem}; reopening in {}ms", delay.as_millis());
            self.set_stream(Stream::Reconnecting(problem), generation);
            if self.pause(delay).await.is_err() {
                return;
            }
        }
    }
}

pub(super) async fn wait_generation_change(generation: &watch::Sender<u64>, current: u64) {
    let mut rx = generation.subscribe();
    let _ = rx.wait_for(|g| *g != current).await;
}

pub(super) fn describe_state(state: &LinkState) -> String {
    let mut text = match &state.mode {
        Mode::Unknown => return "connecting".to_owned(),
        Mode::Legacy { endpoint } => {
            return format!("legacy SSE stream open, posting to {}", endpoint.path());
        }
        Mode::Streamable if state.session.is_some() => "session active".to_owned(),
        Mode::Streamable => "no session (stateless server)".to_owned(),
    };
    if let Some(protocol) = state.protocol.as_ref().and_then(|p| p.to_str().ok()) {
        text.push_str(&format!(", protocol {protocol}"));
    }
    if state.renewals > 0 {
        text.push_str(&format!(", renewed {} times", state.renewals));
    }
    text.push_str(match &state.stream {
        Stream::Closed => "",
        Stream::Open => ", server stream open",
        Stream::Reconnecting(_) => ", server stream reconnecting",
        Stream::NotOffered => ", no server stream",
    });
    text
}
