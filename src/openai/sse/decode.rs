//! The incremental SSE decoder: bytes in, frames out, no I/O.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{Event, FrameKind, SseFrame, SseTail, SseText};

/// The UTF-8 byte order mark, ignored once at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Room reserved when the buffer runs out, so small chunks do not reallocate each time.
const MIN_RESERVE: usize = 4096;

/// Incremental decoder for one `text/event-stream` body.
///
/// Feed it chunks as they arrive; it hands out each frame as soon as its blank line is in,
/// with the frame's raw bytes split off the internal buffer without copying. The buffer is
/// reused once the frames handed out are dropped. Nothing here bounds how much an
/// unterminated frame may buffer: the caller checks [`SseDecoder::pending_len`].
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// The bytes of the current, unfinished frame, from its first byte.
    buf: BytesMut,
    /// Where the next unparsed line of the current frame starts.
    line_start: usize,
    /// Where the search for the current line's terminator resumes (a long line arriving in
    /// many chunks is scanned once, not once per chunk).
    scan_from: usize,
    /// Whether the start of the stream has been checked for a BOM.
    bom_checked: bool,
    /// Whether [`SseDecoder::finish`] has declared the end of input.
    eof: bool,
    /// The fields of the current frame, as ranges into `buf`.
    fields: FieldRanges,
    /// The last `id` seen in a complete frame.
    last_event_id: Option<SseText>,
}

/// The iterator returned by [`SseDecoder::feed`]: the frames completed so far.
///
/// Frames it did not hand out before being dropped stay in the decoder and come out of the
/// next `feed` (or [`SseDecoder::next_frame`]).
#[derive(Debug)]
pub struct Frames<'a> {
    decoder: &'a mut SseDecoder,
}

/// The known fields of the frame being parsed, as byte ranges relative to the frame start.
#[derive(Debug, Default)]
struct FieldRanges {
    event: Option<Range<usize>>,
    data: Vec<Range<usize>>,
    id: Option<Range<usize>>,
    retry: Option<u64>,
}

// === impl SseDecoder ===

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a chunk and returns the frames it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Frames<'_> {
        self.push(chunk);
        Frames { decoder: self }
    }

    /// Appends a chunk without parsing it; take the frames with [`SseDecoder::next_frame`].
    pub fn push(&mut self, chunk: &[u8]) {
        if self.buf.capacity() - self.buf.len() < chunk.len() {
            self.buf.reserve(chunk.len().max(MIN_RESERVE));
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame in the input pushed so far, if any.
    pub fn next_frame(&mut self) -> Option<SseFrame> {
        if !self.bom_checked && !self.check_bom() {
            return None;
        }
        loop {
            let found = memchr::memchr2(b'\n', b'\r', &self.buf[self.scan_from..]);
            let Some(offset) = found else {
                self.scan_from = self.buf.len();
                return None;
            };
            let at = self.scan_from + offset;
            let next = match (self.buf[at], self.buf.get(at + 1)) {
                (b'\r', Some(b'\n')) => at + 2,
                // A CR at the end of the buffer may be the first half of a CRLF.
                (b'\r', None) if !self.eof => {
                    self.scan_from = at;
                    return None;
                }
                _ => at + 1,
            };
            let line = self.line_start..at;
            self.line_start = next;
            self.scan_from = next;
            if line.is_empty() {
                return Some(self.take_frame(next));
            }
            self.fields.parse_line(&self.buf, line);
        }
    }

    /// Declares the end of input and reports what was left after the frames already taken.
    ///
    /// `None`: the stream ended cleanly on a frame boundary. [`SseTail::Frame`]: a last frame
    /// that only the end of input completed (its blank line ended in a lone CR).
    /// [`SseTail::Incomplete`]: the stream ended mid-frame (a stream holding nothing but a
    /// BOM counts as such too, so its bytes are not lost). After `None` or `Incomplete` the
    /// decoder is reset for a new stream. If frames of earlier chunks were left untaken,
    /// each call returns the next of them as `SseTail::Frame` until the input is used up.
    pub fn finish(&mut self) -> Option<SseTail> {
        self.eof = true;
        if let Some(frame) = self.next_frame() {
            return Some(SseTail::Frame(frame));
        }
        let tail = (!self.buf.is_empty()).then(|| {
            let raw = self.buf.split().freeze();
            let partial = self.fields.take_kind(&raw);
            SseTail::Incomplete { raw, partial }
        });
        self.reset();
        tail
    }

    /// Bytes buffered for the frame not yet complete; a caller that must bound memory
    /// compares this with its limit after each chunk.
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// The `id` of the last complete frame that carried one (the browser's `lastEventId`).
    pub fn last_event_id(&self) -> Option<&SseText> {
        self.last_event_id.as_ref()
    }

    /// Skips a leading BOM. Returns false while the buffer is a strict prefix of one.
    fn check_bom(&mut self) -> bool {
        let n = self.buf.len().min(BOM.len());
        if self.buf[..n] == BOM[..n] {
            if n < BOM.len() && !self.eof {
                return false;
            }
            if n == BOM.len() {
                self.line_start = n;
                self.scan_from = n;
            }
        }
        self.bom_checked = true;
        true
    }

    /// Splits the frame ending at `end` off the buffer and parses its fields.
    fn take_frame(&mut self, end: usize) -> SseFrame {
        let raw = self.buf.split_to(end).freeze();
        self.line_start = 0;
        self.scan_from = 0;
        let kind = self.fields.take_kind(&raw);
        if let FrameKind::Event(Event { id: Some(id), .. }) = &kind {
            self.last_event_id = Some(id.clone());
        }
        SseFrame { raw, kind }
    }

    /// Back to the start of a new stream, keeping the buffer's allocation.
    fn reset(&mut self) {
        self.buf.clear();
        self.line_start = 0;
        self.scan_from = 0;
        self.bom_checked = false;
        self.eof = false;
        self.fields.clear();
        self.last_event_id = None;
    }
}

// === impl Frames ===

impl Iterator for Frames<'_> {
    type Item = SseFrame;

    fn next(&mut self) -> Option<SseFrame> {
        self.decoder.next_frame()
    }
}

// === impl FieldRanges ===

impl FieldRanges {
    /// Records the field on one non-empty line (`line` indexes `buf`).
    fn parse_line(&mut self, buf: &[u8], line: Range<usize>) {
        let bytes = &buf[line.clone()];
        if bytes.first() == Some(&b':') {
            return; // a comment
        }
        let (name, value) = match memchr::memchr(b':', bytes) {
            Some(colon) => {
                let mut start = line.start + colon + 1;
                if start < line.end && buf[start] == b' ' {
                    start += 1;
                }
                (&bytes[..colon], start..line.end)
            }
            None => (bytes, line.end..line.end),
        };
        match name {
            b"data" => self.data.push(value),
            b"event" => self.event = Some(value),
            b"id" if memchr::memchr(0, &buf[value.clone()]).is_none() => self.id = Some(value),
            b"retry" => {
                if let Some(ms) = parse_retry(&buf[value]) {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    /// Builds the frame's kind from the recorded ranges (which index `raw`) and clears them.
    fn take_kind(&mut self, raw: &Bytes) -> FrameKind {
        let text = |range: Range<usize>| SseText::from_utf8_lossy(raw.slice(range));
        let known = self.event.is_some() || !self.data.is_empty() || self.id.is_some();
        if !known && self.retry.is_none() {
            return FrameKind::KeepAlive;
        }
        let data = match self.data.as_slice() {
            [] => None,
            [one] => Some(text(one.clone())),
            lines => {
                let len = lines.iter().map(|r| r.len() + 1).sum::<usize>() - 1;
                let mut joined = BytesMut::with_capacity(len);
                for (i, range) in lines.iter().enumerate() {
                    if i > 0 {
                        joined.extend_from_slice(b"\n");
                    }
                    joined.extend_from_slice(&raw[range.clone()]);
                }
                Some(SseText::from_utf8_lossy(joined.freeze()))
            }
        };
        let event = Event {
            event: self.event.take().map(text),
            data,
            id: self.id.take().map(text),
            retry: self.retry.take(),
        };
        self.data.clear();
        FrameKind::Event(event)
    }

    fn clear(&mut self) {
        self.event = None;
        self.data.clear();
        self.id = None;
        self.retry = None;
    }
}

/// A `retry` value: ASCII digits only, at least one, fitting in a `u64`.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}
