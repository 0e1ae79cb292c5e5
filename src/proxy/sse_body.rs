//! Step 7 for event streams: a body that passes each SSE event on as soon as it is
//! complete, reading usage on the way, dropping the usage-only chunk the proxy asked for
//! on the client's behalf, holding tool-call deltas until the call validates, and turning
//! a cut upstream into a final `data: {"error": …}` event instead of a clean end.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::openai::errors::stream_error_event;
use crate::openai::sse::{SseDecoder, SseFrame, SseTail};
use crate::openai::usage::{extract_usage, is_usage_only_chunk, StreamTracker, Usage};
use crate::tls::client::BoxError;
use crate::toolcalls::StreamToolCheck;

/// Called once when the stream ends: usage seen (if any), whether it was cut, and how
/// many protection tokens failed authentication.
pub type OnEnd = Box<dyn FnOnce(Option<Usage>, StreamEnd, u64) + Send>;

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream finished with its terminal event.
    Complete,
    /// The upstream failed or ended early; an error event was sent.
    Cut,
    /// A tool call failed validation; an error event was sent.
    ToolCallInvalid(String),
}

/// The streaming response body.
pub struct SseBody {
    inner: super::pipeline::RespBody,
    decoder: SseDecoder,
    tracker: StreamTracker,
    out: VecDeque<Bytes>,
    drop_usage_chunk: bool,
    usage: Option<Usage>,
    tools: Option<StreamToolCheck>,
    restore: Option<super::sse_restore::SseRestore>,
    on_end: Option<OnEnd>,
    done: bool,
}

// === impl SseBody ===

impl SseBody {
    /// Wraps an upstream event stream.
    pub fn new(
        inner: super::pipeline::RespBody,
        tracker: StreamTracker,
        drop_usage_chunk: bool,
        tools: Option<StreamToolCheck>,
        restore: Option<super::sse_restore::SseRestore>,
        on_end: OnEnd,
    ) -> Self {
        SseBody {
            inner,
            decoder: SseDecoder::new(),
            tracker,
            out: VecDeque::new(),
            drop_usage_chunk,
            usage: None,
            tools,
            restore,
            on_end: Some(on_end),
            done: false,
        }
    }

    fn frame(&mut self, f: SseFrame) {
        if self.done {
            return;
        }
        let Some(json) = f.json_str() else {
            // Keep-alives, comments, [DONE]: pass through (after any held tool deltas).
            if f.is_done() {
                self.tracker.observe("[DONE]");
            }
            self.emit(f.raw);
            return;
        };
        self.tracker.observe(json);
        let has_usage = memchr::memmem::find(json.as_bytes(), b"\"usage\":{").is_some()
            || memchr::memmem::find(json.as_bytes(), b"\"usage\": {").is_some();
        let has_tools = self.tools.as_ref().is_some_and(|t| {
            t.holding() || memchr::memmem::find(json.as_bytes(), b"\"tool_calls\"").is_some()
        });
        if !(has_usage || has_tools || self.restore.is_some()) {
            self.out.push_back(f.raw);
            return;
        }
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json) else {
            self.out.push_back(f.raw);
            return;
        };
        let mut raw = f.raw;
        if let Some(r) = self.restore.as_mut() {
            if r.rewrite(&mut v) {
                raw = crate::openai::sse::encode_data(&serde_json::to_vec(&v).unwrap_or_default());
            }
        }
        if has_usage {
            if let Some(u) = extract_usage(&v) {
                self.usage = Some(u);
            }
            if self.drop_usage_chunk && is_usage_only_chunk(&v) {
                return;
            }
        }
        if has_tools {
            if let Some(t) = self.tools.as_mut() {
                match t.observe(&v, raw) {
                    Ok(released) => self.out.extend(released),
                    Err(msg) => self.fail(StreamEnd::ToolCallInvalid(msg)),
                }
                return;
            }
        }
        self.out.push_back(raw);
    }

    /// Chunks for text the restorer still holds when the stream ends without finish_reason.
    fn flush_restore(&mut self) {
        if let Some(r) = self.restore.as_mut() {
            for v in r.flush() {
                let b =
                    crate::openai::sse::encode_data(&serde_json::to_vec(&v).unwrap_or_default());
                self.out.push_back(b);
            }
        }
    }

    fn emit(&mut self, raw: Bytes) {
        self.flush_restore();
        if let Some(t) = self.tools.as_mut() {
            match t.flush() {
                Ok(released) => self.out.extend(released),
                Err(msg) => {
                    self.fail(StreamEnd::ToolCallInvalid(msg));
                    return;
                }
            }
        }
        self.out.push_back(raw);
    }

    fn fail(&mut self, why: StreamEnd) {
        if self.done {
            return;
        }
        let (code, msg) = match &why {
            StreamEnd::ToolCallInvalid(m) => {
                ("tool_call_invalid", format!("tool call rejected: {m}"))
            }
            _ => (
                "upstream_stream_cut",
                "the upstream ended the stream before it was complete".to_owned(),
            ),
        };
        self.out.push_back(stream_error_event(code, &msg));
        self.finish(why);
    }

    fn finish(&mut self, how: StreamEnd) {
        self.done = true;
        let failed = self.restore.as_ref().map_or(0, |r| r.stats.failed);
        if let Some(f) = self.on_end.take() {
            f(self.usage, how, failed);
        }
    }

    fn end_of_input(&mut self) {
        match self.decoder.finish() {
            Some(SseTail::Frame(f)) => self.frame(f),
            Some(SseTail::Incomplete { .. }) | None => {}
        }
        if self.done {
            return;
        }
        if self.tracker.is_complete() || self.tracker.saw_error() {
            if let Some(t) = self.tools.as_mut() {
                match t.flush() {
                    Ok(released) => self.out.extend(released),
                    Err(msg) => return self.fail(StreamEnd::ToolCallInvalid(msg)),
                }
            }
            self.finish(StreamEnd::Complete);
        } else {
            self.fail(StreamEnd::Cut);
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let frames: Vec<SseFrame> = this.decoder.feed(&data).collect();
                        for f in frames {
                            this.frame(f);
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!("upstream stream failed: {e}");
                    this.fail(StreamEnd::Cut);
                }
                Poll::Ready(None) => this.end_of_input(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        // The client went away mid-stream: account what was seen.
        let failed = self.restore.as_ref().map_or(0, |r| r.stats.failed);
        if let Some(f) = self.on_end.take() {
            f(self.usage, StreamEnd::Complete, failed);
        }
    }
}
