//! The CLI's reader of server-sent events (`…?follow=true`). The
//! `text/event-stream` framing (fields, comments, CRLF, events split across
//! chunks) is eventsource-stream's; this owns reading one response as
//! events and wording its failures as [`ClientError`]s.

use std::pin::Pin;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource as _};
use futures_util::{Stream, StreamExt as _};

use super::error::{ClientError, root_cause};

pub use eventsource_stream::Event;

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// A server-sent-event stream being read.
pub struct EventStream {
    events: Events,
    /// The stream's URL and the server as given, for messages.
    url: String,
    server: String,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// Reads `response`'s body as events.
    pub fn new(response: reqwest::Response, server: String) -> EventStream {
        let url = response.url().to_string();
        EventStream::from_bytes(response.bytes_stream(), url, server)
    }

    /// Reads any byte stream as events (a response body, or a test's chunks).
    pub fn from_bytes<S, E>(bytes: S, url: String, server: String) -> EventStream
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        let events = bytes.eventsource().map(|item| {
            item.map_err(|e| match e {
                EventStreamError::Transport(e) => root_cause(&e),
                other => other.to_string(),
            })
        });
        EventStream {
            events: Box::pin(events),
            url,
            server,
        }
    }

    /// The next event; `None` once the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        match self.events.next().await {
            None => Ok(None),
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(reason)) => Err(ClientError::Transport {
                url: self.url.clone(),
                reason: format!("{reason} ({})", self.server),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&'static str]) -> EventStream {
        let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c.as_bytes())))
            .collect();
        EventStream::from_bytes(
            futures_util::stream::iter(chunks),
            "http://h/logs".into(),
            "http://h".into(),
        )
    }

    async fn all(mut s: EventStream) -> Vec<(String, String)> {
        let mut events = Vec::new();
        while let Some(e) = s.next().await.unwrap() {
            events.push((e.event, e.data));
        }
        events
    }

    #[tokio::test]
    async fn chunks_become_events_whatever_their_boundaries() {
        let s = stream(&[
            ": keep-alive\n\nevent: log\nda",
            "ta: {\"id\":1}\n\nevent:log\r\ndata:{\"id\":2}\r\n\r\n",
            "data: a\ndata: b\nid: 7\n\nevent: end\ndata: {\"state\":\"SUCCESS\"}\n\n",
        ]);
        let ev = |e: &str, d: &str| (e.to_string(), d.to_string());
        assert_eq!(
            all(s).await,
            vec![
                ev("log", r#"{"id":1}"#),
                ev("log", r#"{"id":2}"#),
                ev("message", "a\nb"),
                ev("end", r#"{"state":"SUCCESS"}"#),
            ]
        );
    }

    #[tokio::test]
    async fn a_broken_connection_is_a_transport_error() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"event: log\ndata: 1\n\n")),
            Err(std::io::Error::other("connection reset")),
        ];
        let mut s = EventStream::from_bytes(
            futures_util::stream::iter(chunks),
            "http://h/logs".into(),
            "http://h".into(),
        );
        assert_eq!(s.next().await.unwrap().unwrap().data, "1");
        assert_eq!(
            s.next().await.unwrap_err().to_string(),
            "request to http://h/logs failed: connection reset (http://h)"
        );
    }
}
