//! The legacy HTTP+SSE transport (2024-11-05): one GET event stream carries every message
//! from the server; messages to it are POSTed to the endpoint the stream names.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Link {
    /// The legacy transport: GETs the SSE endpoint, waits for the `endpoint` event naming
    /// where to POST, and leaves a task reading the stream.
    pub(super) async fn connect_legacy(self: &Arc<Self>) -> Result<(), Failure> {
        let request = self
            .client
            .get(self.spec.url.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, ACCEPT_SSE);
        let mut response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(match self.refusal("the SSE connection", response).await {
                Refusal::SessionLost => Failure::Reply("the SSE connection was refused".into()),
                Refusal::Failed(f) => f,
            });
        }
        if media_type(&response) != "text/event-stream" {
            let what = media_type(&response);
            return Err(Failure::Reply(format!(
                "{} answered the SSE connection with {what}, not an event stream{}",
                self.url(),
                error_preview(response).await
            )));
        }
        let mut decoder = SseDecoder::new(MAX_MESSAGE_LINE);
        let mut items = Vec::new();
        let endpoint = 'found: loop {
            let chunk = tokio::select! {
                () = self.shutdown.cancelled() => return Err(closed()),
                chunk = response.chunk() => chunk,
            };
            match chunk {
                Ok(Some(bytes)) => decoder.feed(&bytes, &mut items),
                Ok(None) => {
                    return Err(Failure::Reply(format!(
                        "{} closed the SSE stream before naming its endpoint",
                        self.url()
                    )));
                }
                Err(e) => {
                    return Err(Failure::Reply(format!(
                        "{} dropped the SSE stream: {}",
                        self.url(),
                        describe_error(e)
                    )));
                }
            }
            for item in items.drain(..) {
                if let SseItem::Event { event, data } = item
                    && event == "endpoint"
                {
                    break 'found data;
                }
            }
        };
        let endpoint = std::str::from_utf8(&endpoint)
            .ok()
            .and_then(|e| self.spec.url.join(e.trim()).ok())
            .ok_or_else(|| Failure::Reply(format!("{} named an invalid endpoint", self.url())))?;
        if endpoint.origin() != self.spec.url.origin() {
            return Err(Failure::Reply(format!(
                "{} named an endpoint on another origin ({}); refused",
                self.url(),
                redact_url(&endpoint)
            )));
        }
        tracing::info!(server = %self.server, "legacy HTTP+SSE transport, posting to {}", redact_url(&endpoint));
        self.lock().mode = Mode::Legacy { endpoint };
        self.show();
        self.tasks
            .spawn(Arc::clone(self).read_legacy(response, decoder, items));
        Ok(())
    }

    pub(super) async fn read_legacy(
        self: Arc<Self>,
        mut response: Response,
        mut decoder: SseDecoder,
        mut items: Vec<SseItem>,
    ) {
        loop {
            for item in items.drain(..) {
                match item {
                    SseItem::Event { event, data } if event == "message" => {
                        self.emit(Event::Message(data)).await;
                    }
                    SseItem::Event { .. } => {}
                    SseItem::TooLong(len) => self.emit(Event::TooLong(len, None)).await,
                }
            }
            let chunk = tokio::select! {
                () = self.shutdown.cancelled() => return,
                chunk = response.chunk() => chunk,
            };
            match chunk {
                Ok(Some(bytes)) => decoder.feed(&bytes, &mut items),
                Ok(None) => {
                    return self.end(End::Closed(format!("{} closed the SSE stream", self.url())));
                }
                Err(e) => {
                    return self.end(End::Closed(format!(
                        "{} dropped the SSE stream: {}",
                        self.url(),
                        describe_error(e)
                    )));
                }
            }
        }
    }

    /// POSTs one message to the legacy endpoint; answers come on the SSE stream.
    pub(super) async fn post_legacy(&self, line: &str, id: Option<&str>) -> Result<(), Failure> {
        let endpoint = match &self.lock().mode {
            Mode::Legacy { endpoint } => endpoint.clone(),
            _ => return Err(Failure::Reply("no legacy endpoint".into())),
        };
        let request = self
            .client
            .post(endpoint)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, JSON)
            .timeout(NOTIFY_TIMEOUT)
            .body(line.to_owned());
        let result = match self.send(request).await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                Err(Failure::End(End::Closed(format!(
                    "{} no longer knows the SSE session (HTTP 404)",
                    self.url()
                ))))
            }
            Ok(response) => match self.refusal("a message", response).await {
                Refusal::SessionLost => Err(Failure::End(End::Closed(format!(
                    "{} no longer knows the SSE session",
                    self.url()
                )))),
                Refusal::Failed(f) => Err(f),
            },
            Err(f) => Err(f),
        };
        match (result, id) {
            (Err(Failure::Reply(why)), Some(id)) => {
                self.fail_request(id, why).await;
                Ok(())
            }
            (result, _) => result,
        }
    }
}
