//! POSTing messages to the MCP endpoint and reading their answers: a JSON body or an SSE
//! stream that may carry other messages first and may be resumed with `Last-Event-ID`.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Link {
    /// A request to the MCP endpoint with the configured headers, the session and the
    /// protocol version.
    pub(super) fn request_builder(&self, method: Method) -> reqwest::RequestBuilder {
        let (session, protocol) = {
            let state = self.lock();
            (state.session.clone(), state.protocol.clone())
        };
        let mut request = self
            .client
            .request(method, self.spec.url.clone())
            .headers(self.headers.clone());
        if let Some(session) = session {
            request = request.header(SESSION_HEADER.clone(), session);
        }
        if let Some(protocol) = protocol {
            request = request.header(PROTOCOL_HEADER.clone(), protocol);
        }
        request
    }

    pub(super) async fn post(&self, line: &str) -> Result<Response, Failure> {
        let mut request = self
            .request_builder(Method::POST)
            .header(ACCEPT, ACCEPT_POST)
            .header(CONTENT_TYPE, JSON);
        if crate::upstream::modern::is_modern_request(line) {
            // MCP 2026-07-28: the version, method and name as headers; no session.
            for (name, value) in crate::upstream::modern::http_headers(line) {
                request = request.header(name, value);
            }
        }
        let request = request.body(line.to_owned());
        self.send(request).await
    }

    pub(super) async fn initialize(self: &Arc<Self>, line: &str, id: &str) -> Result<(), Failure> {
        {
            let mut state = self.lock();
            state.session = None;
            state.protocol = None;
        }
        let response = self.post(line).await?;
        let status = response.status();
        if !status.is_success() {
            if self.spec.kind == HttpKind::Probe
                && matches!(
                    status,
                    StatusCode::BAD_REQUEST
                        | StatusCode::NOT_FOUND
                        | StatusCode::METHOD_NOT_ALLOWED
                )
            {
                tracing::info!(server = %self.server, "{} answered initialize with HTTP {status}; trying the legacy HTTP+SSE transport", self.url());
                self.connect_legacy().await?;
                return self.post_legacy(line, Some(id)).await;
            }
            return Err(match self.refusal("initialize", response).await {
                Refusal::SessionLost => Failure::Reply("initialize was refused".into()),
                Refusal::Failed(f) => f,
            });
        }
        let session = session_id(&response)?;
        {
            let mut state = self.lock();
            state.mode = Mode::Streamable;
            state.session = session;
        }
        let Some(answer) = self.read_answer(response, Some(id)).await? else {
            return Err(Failure::Reply(format!(
                "{} did not answer initialize",
                self.url()
            )));
        };
        self.lock().protocol = negotiated_protocol(&answer);
        self.show();
        self.emit(Event::Message(answer)).await;
        Ok(())
    }

    /// POSTs a notification or a response (the server answers 202), renewing the session once
    /// if it expired.
    pub(super) async fn notify(self: &Arc<Self>, line: &str) -> Result<(), Failure> {
        let mut renewed = false;
        loop {
            let generation = self.lock().generation;
            let request = self
                .request_builder(Method::POST)
                .header(ACCEPT, ACCEPT_POST)
                .header(CONTENT_TYPE, JSON)
                .timeout(NOTIFY_TIMEOUT)
                .body(line.to_owned());
            let response = self.send(request).await?;
            if response.status().is_success() {
                return Ok(());
            }
            let refusal = self.refusal("a notification", response).await;
            self.retry_after(refusal, generation, &mut renewed).await?;
        }
    }

    pub(super) async fn request(
        self: Arc<Self>,
        line: String,
        id: String,
        cancel: CancellationToken,
    ) {
        let result = tokio::select! {
            () = cancel.cancelled() => Ok(None),
            result = self.exchange(&line, &id) => result,
        };
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match result {
            Ok(Some(answer)) => self.emit(Event::Message(answer)).await,
            Ok(None) => {}
            Err(Failure::Reply(why)) => self.fail_request(&id, why).await,
            Err(Failure::End(end)) => self.end(end),
        }
    }

    /// POSTs a request and reads its answer, renewing the session once if it expired.
    pub(super) async fn exchange(
        self: &Arc<Self>,
        line: &str,
        id: &str,
    ) -> Result<Option<BytesMut>, Failure> {
        let mut renewed = false;
        // MCP 2026-07-28: a request is self-contained and its stream cannot be resumed, so one
        // whose response stream broke before the answer is sent again.
        let modern = crate::upstream::modern::is_modern_request(line);
        let mut reissued = 0;
        loop {
            let generation = self.lock().generation;
            let response = self.post(line).await?;
            if modern && let Some(stray) = response.headers().get(&SESSION_HEADER) {
                // A legacy server that opens a session for any request without one (the
                // `auto` probe is such a request): mcpd will not use it, so it is ended.
                self.end_stray_session(stray.clone());
            }
            if response.status().is_success() && modern {
                match self.read_modern_answer(response, id).await? {
                    Some(answer) => return Ok(Some(answer)),
                    None if reissued < MAX_REISSUES => {
                        reissued += 1;
                        tracing::info!(server = %self.server, "a response stream broke before its answer; sending the request again");
                        continue;
                    }
                    None => {
                        return Err(Failure::Reply(format!(
                            "{} broke the response stream without answering, {} times",
                            self.url(),
                            MAX_REISSUES + 1
                        )));
                    }
                }
            }
            if response.status().is_success() {
                return self.read_answer(response, Some(id)).await;
            }
            let refusal = self.refusal("the request", response).await;
            self.retry_after(refusal, generation, &mut renewed).await?;
        }
    }

    /// Ends, with a `DELETE` in the background, a session the server opened for a modern
    /// request (which has no session): it would otherwise stay open on the server.
    fn end_stray_session(self: &Arc<Self>, mut session: HeaderValue) {
        session.set_sensitive(true);
        let link = Arc::clone(self);
        self.tasks.spawn(async move {
            let request = link
                .client
                .delete(link.spec.url.clone())
                .headers(link.headers.clone())
                .header(SESSION_HEADER.clone(), session)
                .timeout(END_SESSION_TIMEOUT);
            match request.send().await {
                Ok(r) => {
                    tracing::debug!(server = %link.server, status = %r.status(), "ended the session the server opened for a 2026-07-28 request");
                }
                Err(e) => {
                    tracing::debug!(server = %link.server, "cannot end the session the server opened for a 2026-07-28 request: {}", describe_error(e));
                }
            }
        });
    }

    /// Reads a successful response: a JSON body or an SSE stream. Messages other than the
    /// answer to `id` are passed on as they come; the answer is returned.
    pub(super) async fn read_answer(
        &self,
        response: Response,
        id: Option<&str>,
    ) -> Result<Option<BytesMut>, Failure> {
        let content_type = media_type(&response);
        match content_type.as_str() {
            "text/event-stream" => self.read_stream(response, id).await,
            "application/json" => {
                let body = read_limited(response)
                    .await
                    .map_err(|e| Failure::Reply(format!("{}: {e}", self.url())))?;
                self.split_json(body, id).await
            }
            "" if response.status() == StatusCode::ACCEPTED
                || response.content_length() == Some(0) =>
            {
                // Accepted with nothing to say: an answer, if any, comes on the GET stream.
                Ok(None)
            }
            other => {
                let other = if other.is_empty() {
                    "no content type".to_owned()
                } else {
                    other.to_owned()
                };
                let preview = error_preview(response).await;
                Err(Failure::Reply(format!(
                    "{} answered with {other} instead of JSON or an event stream{preview}",
                    self.url()
                )))
            }
        }
    }

    /// A modern request's answer: as [`read_answer`](Self::read_answer), but a stream that ends
    /// or drops before the answer is `None` (it is not resumed: there is no session).
    async fn read_modern_answer(
        &self,
        response: Response,
        id: &str,
    ) -> Result<Option<BytesMut>, Failure> {
        if media_type(&response) != "text/event-stream" {
            return self.read_answer(response, Some(id)).await;
        }
        let mut decoder = SseDecoder::new(MAX_MESSAGE_LINE);
        let mut items = Vec::new();
        let mut response = response;
        loop {
            let chunk = tokio::select! {
                () = self.shutdown.cancelled() => return Err(closed()),
                chunk = response.chunk() => chunk,
            };
            match chunk {
                Ok(Some(bytes)) => decoder.feed(&bytes, &mut items),
                Ok(None) | Err(_) => return Ok(None),
            }
            for item in items.drain(..) {
                match item {
                    SseItem::Event { data, .. } if answers(&data, id) => return Ok(Some(data)),
                    SseItem::Event { data, .. } => self.emit(related(data, Some(id))).await,
                    SseItem::TooLong(len) => return Err(Failure::Reply(too_long(len))),
                }
            }
        }
    }

    /// A JSON body: one message, or a batch of them from an older server.
    pub(super) async fn split_json(
        &self,
        body: BytesMut,
        id: Option<&str>,
    ) -> Result<Option<BytesMut>, Failure> {
        let text = std::str::from_utf8(&body).map_err(|_| {
            Failure::Reply(format!(
                "{} answered with JSON that is not UTF-8",
                self.url()
            ))
        })?;
        if text.trim_start().starts_with('[') {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
                Failure::Reply(format!(
                    "{} answered with a malformed batch: {e}",
                    self.url()
                ))
            })?;
            let mut answer = None;
            for item in items {
                let bytes = BytesMut::from(item.get().as_bytes());
                if answer.is_none() && id.is_some_and(|id| answers(&bytes, id)) {
                    answer = Some(bytes);
                } else {
                    self.emit(Event::Message(bytes)).await;
                }
            }
            return Ok(answer);
        }
        if id.is_some_and(|id| answers(&body, id)) {
            return Ok(Some(body));
        }
        self.emit(Event::Message(body)).await;
        Ok(None)
    }

    /// Reads one request's SSE stream until its answer, resuming it with `Last-Event-ID` when
    /// the connection drops before the answer.
    pub(super) async fn read_stream(
        &self,
        mut response: Response,
        id: Option<&str>,
    ) -> Result<Option<BytesMut>, Failure> {
        let mut decoder = SseDecoder::new(MAX_MESSAGE_LINE);
        let mut items = Vec::new();
        let mut idle_resumes = 0;
        loop {
            let mut progressed = false;
            let dropped = loop {
                let chunk = tokio::select! {
                    () = self.shutdown.cancelled() => return Err(closed()),
                    chunk = response.chunk() => chunk,
                };
                match chunk {
                    Ok(Some(bytes)) => decoder.feed(&bytes, &mut items),
                    Ok(None) => break None,
                    Err(e) => break Some(describe_error(e)),
                }
                for item in items.drain(..) {
                    progressed = true;
                    match item {
                        SseItem::Event { data, .. } => {
                            if id.is_some_and(|id| answers(&data, id)) {
                                return Ok(Some(data));
                            }
                            self.emit(related(data, id)).await;
                        }
                        SseItem::TooLong(len) => return Err(Failure::Reply(too_long(len))),
                    }
                }
            };
            if id.is_none() {
                return Ok(None);
            }
            let how = dropped.map_or_else(
                || "ended the event stream".to_owned(),
                |e| format!("dropped the event stream ({e})"),
            );
            let Some(last) = decoder.last_event_id().map(str::to_owned) else {
                return Err(Failure::Reply(format!(
                    "{} {how} without answering",
                    self.url()
                )));
            };
            idle_resumes = if progressed { 0 } else { idle_resumes + 1 };
            if idle_resumes > MAX_IDLE_RESUMES {
                return Err(Failure::Reply(format!(
                    "{} {how} without answering, {MAX_IDLE_RESUMES} times in a row",
                    self.url()
                )));
            }
            self.pause(decoder.retry().unwrap_or(DEFAULT_RETRY)).await?;
            tracing::debug!(server = %self.server, "resuming a response stream after event {last}");
            let request = self
                .request_builder(Method::GET)
                .header(ACCEPT, ACCEPT_SSE)
                .header(LAST_EVENT_ID.clone(), header_value(&last)?);
            response = self.send(request).await?;
            if !response.status().is_success() {
                return Err(
                    match self.refusal("the resumption of a stream", response).await {
                        Refusal::SessionLost => Failure::Reply(format!(
                            "{} forgot the session while a request was in flight",
                            self.url()
                        )),
                        Refusal::Failed(f) => f,
                    },
                );
            }
            decoder.reset_connection();
        }
    }

    pub(super) async fn pause(&self, delay: Duration) -> Result<(), Failure> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(closed()),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// The `Mcp-Session-Id` of an `initialize` response: visible ASCII only.
pub(super) fn session_id(response: &Response) -> Result<Option<HeaderValue>, Failure> {
    match response.headers().get(&SESSION_HEADER) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)) => {
            let mut v = v.clone();
            v.set_sensitive(true);
            Ok(Some(v))
        }
        Some(_) => Err(Failure::Reply(
            "the server sent a session id with characters outside visible ASCII".into(),
        )),
    }
}

/// The `protocolVersion` of an `initialize` answer.
pub(super) fn negotiated_protocol(answer: &[u8]) -> Option<HeaderValue> {
    let text = std::str::from_utf8(answer).ok()?;
    let msg = Envelope::parse(text).ok()?;
    let version = envelope::member(msg.result?, "protocolVersion")?;
    let version = envelope::decode_str(version).ok()?;
    HeaderValue::from_str(&version).ok()
}

/// A message from the response stream of the request with id `id` (JSON text), other than
/// its answer: [`Event::Related`] when the id is one of mcpd's (an integer).
pub(super) fn related(data: BytesMut, id: Option<&str>) -> Event {
    match id.and_then(|id| id.parse::<u64>().ok()) {
        Some(id) => Event::Related(data, id),
        None => Event::Message(data),
    }
}

/// Whether `message` is the response to the request with id `id` (JSON text).
pub(super) fn answers(message: &[u8], id: &str) -> bool {
    let Ok(text) = std::str::from_utf8(message) else {
        return false;
    };
    match Envelope::parse(text) {
        Ok(msg) => msg.kind() == Kind::Response && msg.id.is_some_and(|i| i.get() == id),
        Err(_) => false,
    }
}

pub(super) fn header_value(text: &str) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(text).map_err(|_| {
        Failure::Reply("the server sent an event id that is not a valid header".into())
    })
}

/// The media type of a response, lowercased, without parameters.
pub(super) fn media_type(response: &Response) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

pub(super) fn too_long(len: usize) -> String {
    format!(
        "the server's answer is over the {MAX_MESSAGE_LINE} byte message limit (at least {len} bytes); it was dropped"
    )
}

/// Why a JSON answer's body was not read.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// Over [`MAX_MESSAGE_LINE`] (at least this many bytes): dropped unread.
    #[error("{}", too_long(*.0))]
    TooLong(usize),
    /// The connection failed while the body came.
    #[error("cannot read the answer: {}", super::super::error::describe(.0))]
    Read(#[source] reqwest::Error),
}

/// Reads a JSON body of at most [`MAX_MESSAGE_LINE`] bytes, never buffering more.
pub(super) async fn read_limited(mut response: Response) -> Result<BytesMut, BodyError> {
    if let Some(len) = response.content_length()
        && len > MAX_MESSAGE_LINE as u64
    {
        return Err(BodyError::TooLong(
            usize::try_from(len).unwrap_or(usize::MAX),
        ));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Read(e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_MESSAGE_LINE {
            return Err(BodyError::TooLong(body.len() + chunk.len()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(super) fn closed() -> Failure {
    Failure::Reply("the connection was closed".into())
}
