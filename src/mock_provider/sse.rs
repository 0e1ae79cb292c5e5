//! Streamed bodies: server-sent events produced one frame at a time, lazily, so each event's
//! `mock_ts_us` is the time it was handed to hyper, with the pacing and the stream faults
//! (`first_byte`, `chunk_delay`, `cut_after`, `end_early_after`, `gzip`) applied here.
//!
//! A stream is a [`Source`] (which knows how to write event *i* of its API's stream and where
//! its content events are) driven by an [`EventStream`] (which knows when to write them).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use hyper::body::Frame;
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use super::body::{BodyError, Gzip};
use super::chat::ChatStream;
use super::completions::TextStream;
use super::faults::Stop;
use super::responses::ResponsesStream;

/// How long a cut stream stays open after its last event, so hyper flushes what was sent
/// (it flushes while the body is pending) before the abort discards its buffers.
const CUT_GRACE: Duration = Duration::from_millis(20);

/// The end of an OpenAI chat or completions stream.
pub(crate) const DONE: Bytes = Bytes::from_static(b"data: [DONE]\n\n");

/// What a stream sends, event by event.
#[derive(Debug)]
pub(crate) enum Source {
    /// `chat.completion.chunk` events.
    Chat(ChatStream),
    /// Legacy `text_completion` events.
    Text(TextStream),
    /// Responses API events.
    Responses(ResponsesStream),
    /// A whole (possibly truncated) non-streaming body sent as one frame: used when a fault
    /// (`first_byte`, `cut_after`, `end_early_after`) turns a JSON response into a stream.
    Static(Bytes),
}

/// When and how far a stream goes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pacing {
    /// Pause before each event but the first.
    pub delay: Duration,
    /// Pause before the first event (after the headers were sent).
    pub first_byte: Duration,
    /// Stop after this many content events.
    pub stop: Option<Stop>,
    /// Compress with gzip.
    pub gzip: bool,
}

/// A [`Source`] paced into body frames (wrapped in `http_body_util::StreamBody`).
#[derive(Debug)]
pub(crate) struct EventStream {
    source: Source,
    /// The next event to write.
    next: usize,
    /// Events to write in all.
    end: usize,
    /// Whether the body ends with an error after `end` events.
    cut: bool,
    delay: Duration,
    first_byte: Duration,
    /// Reused for every pause; `armed` while it counts down for the current one.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    gzip: Option<Gzip>,
    done: bool,
}

// === impl Source ===

impl Source {
    /// Events before the first content event (role chunk, `response.created`, ...).
    fn prelude(&self) -> usize {
        match self {
            Source::Chat(chat) => chat.prelude(),
            Source::Text(_) | Source::Static(_) => 0,
            Source::Responses(responses) => responses.prelude(),
        }
    }

    /// Content events (deltas), which `cut_after` and `end_early_after` count.
    fn content(&self) -> usize {
        match self {
            Source::Chat(chat) => chat.content(),
            Source::Text(text) => text.content(),
            Source::Responses(responses) => responses.content(),
            Source::Static(_) => 1,
        }
    }

    /// Events in the complete stream.
    fn len(&self) -> usize {
        match self {
            Source::Chat(chat) => chat.len(),
            Source::Text(text) => text.len(),
            Source::Responses(responses) => responses.len(),
            Source::Static(_) => 1,
        }
    }

    /// Writes event `index`.
    fn event(&self, index: usize) -> Result<Bytes, serde_json::Error> {
        match self {
            Source::Chat(chat) => chat.event(index),
            Source::Text(text) => text.event(index),
            Source::Responses(responses) => responses.event(index),
            Source::Static(body) => Ok(body.clone()),
        }
    }
}

/// `data: <json>\n\n`.
pub(crate) fn data_event<T: Serialize>(value: &T) -> Result<Bytes, serde_json::Error> {
    let mut out = Vec::with_capacity(320);
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut out, value)?;
    out.extend_from_slice(b"\n\n");
    Ok(Bytes::from(out))
}

/// `event: <name>\ndata: <json>\n\n`.
pub(crate) fn named_event<T: Serialize>(name: &str, value: &T) -> Result<Bytes, serde_json::Error> {
    let mut out = Vec::with_capacity(320 + name.len());
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut out, value)?;
    out.extend_from_slice(b"\n\n");
    Ok(Bytes::from(out))
}

// === impl EventStream ===

impl EventStream {
    /// A stream of `source`'s events, paced and cut as `pacing` says.
    pub(crate) fn new(source: Source, pacing: Pacing) -> Self {
        let shortened = |n: usize| source.prelude() + n.min(source.content());
        let (end, cut) = match pacing.stop {
            None => (source.len(), false),
            Some(Stop::CutAfter(n)) => (shortened(n), true),
            Some(Stop::EndAfter(n)) => (shortened(n), false),
        };
        Self {
            source,
            next: 0,
            end,
            cut,
            delay: pacing.delay,
            first_byte: pacing.first_byte,
            sleep: None,
            armed: false,
            gzip: pacing.gzip.then(Gzip::new),
            done: false,
        }
    }

    /// Waits `duration` (arming the shared timer on the first poll of this pause).
    fn pause(&mut self, cx: &mut Context<'_>, duration: Duration) -> Poll<()> {
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if !self.armed {
                    sleep.as_mut().reset(Instant::now() + duration);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep(duration))),
        };
        self.armed = true;
        ready!(sleep.as_mut().poll(cx));
        self.armed = false;
        Poll::Ready(())
    }

    /// The end of the stream: the error of a cut, the gzip trailer, or nothing.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.cut {
            ready!(self.pause(cx, CUT_GRACE));
            self.done = true;
            return Poll::Ready(Some(Err(BodyError::Cut)));
        }
        self.done = true;
        match self.gzip.as_mut().map(Gzip::finish) {
            Some(Ok(trailer)) if !trailer.is_empty() => Poll::Ready(Some(Ok(Frame::data(trailer)))),
            Some(Err(err)) => Poll::Ready(Some(Err(err.into()))),
            _ => Poll::Ready(None),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Frame<Bytes>, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.next >= this.end {
            return this.poll_end(cx);
        }
        let pause = if this.next == 0 {
            this.first_byte
        } else {
            this.delay
        };
        if !pause.is_zero() {
            ready!(this.pause(cx, pause));
        }
        let index = this.next;
        this.next += 1;
        let event = this.source.event(index).map_err(BodyError::from);
        let event = match (&mut this.gzip, event) {
            (Some(gzip), Ok(event)) => gzip.chunk(&event).map_err(BodyError::from),
            (_, event) => event,
        };
        if event.is_err() {
            this.done = true;
        }
        Poll::Ready(Some(event.map(Frame::data)))
    }
}
