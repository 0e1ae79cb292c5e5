//! SSE encoders: the inverse of the decoder, for events the proxy writes itself.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Event, SseText};

/// Encodes one event as a frame: `event`, `id`, `retry`, then one `data:` line per line of
/// the payload, then the blank line.
///
/// `data` is split at LF, CRLF and lone CR, so decoding gives it back with `\n` line
/// breaks. A CR or LF in `event` or `id`, and a NUL in `id`, is replaced with a space: a
/// value can never inject another field, and an `id` is never dropped by the decoder. An
/// event with no field at all encodes as a lone blank line.
pub fn encode_event(event: &Event) -> Bytes {
    let len = [&event.event, &event.id, &event.data]
        .iter()
        .filter_map(|field| field.as_ref().map(|text| text.len() + 8))
        .sum::<usize>()
        + 32;
    let mut out = BytesMut::with_capacity(len);
    if let Some(name) = &event.event {
        put_single_line(&mut out, b"event: ", name, b'\n');
    }
    if let Some(id) = &event.id {
        put_single_line(&mut out, b"id: ", id, 0);
    }
    if let Some(retry) = event.retry {
        out.put_slice(b"retry: ");
        out.put_slice(retry.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(data) = &event.data {
        put_lines(&mut out, b"data: ", data.as_bytes());
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// Encodes `data: <payload>\n\n` with a single allocation of the exact size (a payload
/// containing line breaks becomes several `data:` lines, as in [`encode_event`]).
pub fn encode_data(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    if memchr::memchr2(b'\n', b'\r', payload).is_none() {
        out.put_slice(b"data: ");
        out.put_slice(payload);
        out.put_slice(b"\n\n");
    } else {
        put_lines(&mut out, b"data: ", payload);
        out.put_u8(b'\n');
    }
    out.freeze()
}

/// Encodes a comment-only frame (`: <text>\n\n`), the usual keep-alive.
pub fn encode_comment(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 4);
    put_lines(&mut out, b": ", text.as_bytes());
    out.put_u8(b'\n');
    out.freeze()
}

/// Writes `prefix value\n` with CR, LF and `also` in `value` replaced by spaces.
fn put_single_line(out: &mut BytesMut, prefix: &[u8], value: &SseText, also: u8) {
    out.put_slice(prefix);
    out.extend(value.as_bytes().iter().map(|&b| match b {
        b'\r' | b'\n' => b' ',
        b if b == also => b' ',
        other => other,
    }));
    out.put_u8(b'\n');
}

/// Writes one `prefix line\n` for each line of `value` (split at LF, CRLF or lone CR).
fn put_lines(out: &mut BytesMut, prefix: &[u8], mut value: &[u8]) {
    loop {
        let Some(at) = memchr::memchr2(b'\n', b'\r', value) else {
            out.put_slice(prefix);
            out.put_slice(value);
            out.put_u8(b'\n');
            return;
        };
        out.put_slice(prefix);
        out.put_slice(&value[..at]);
        out.put_u8(b'\n');
        let skip = if value[at..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        value = &value[at + skip..];
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SseDecoder, SseFrame};
    use super::*;

    fn decode_one(bytes: &[u8]) -> SseFrame {
        let mut decoder = SseDecoder::new();
        let frames: Vec<_> = decoder.feed(bytes).collect();
        assert_eq!(decoder.finish(), None, "trailing bytes in {bytes:?}");
        assert_eq!(frames.len(), 1, "frames of {bytes:?}");
        frames.into_iter().next().unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn encodes_data_frames() {
        assert_eq!(encode_data(b"{\"a\":1}"), &b"data: {\"a\":1}\n\n"[..]);
        assert_eq!(encode_data(b""), &b"data: \n\n"[..]);
        assert_eq!(
            encode_data(b"a\r\nb\rc\n"),
            &b"data: a\ndata: b\ndata: c\ndata: \n\n"[..]
        );
        assert_eq!(decode_one(&encode_data(b"a\nb")).data_str(), Some("a\nb"));
    }

    #[test]
    fn encodes_full_events() {
        let event = Event {
            event: Some("response.output_text.delta".into()),
            data: Some(" lead\n\nend".into()),
            id: Some("42".into()),
            retry: Some(3000),
        };
        let bytes = encode_event(&event);
        assert_eq!(
            bytes,
            &b"event: response.output_text.delta\nid: 42\nretry: 3000\ndata:  lead\ndata: \ndata: end\n\n"[..]
        );
        assert_eq!(decode_one(&bytes).event(), Some(&event));
    }

    #[test]
    fn field_values_cannot_inject_fields() {
        let event = Event {
            event: Some("x\ndata: injected".into()),
            id: Some("1\r\0".into()),
            ..Event::default()
        };
        let frame = decode_one(&encode_event(&event));
        let decoded = frame.event().cloned().unwrap_or_default();
        assert_eq!(decoded.event, Some("x data: injected".into()));
        assert_eq!(decoded.id, Some("1  ".into()));
        assert_eq!(decoded.data, None);
    }

    #[test]
    fn encodes_comments() {
        assert_eq!(encode_comment("keep-alive"), &b": keep-alive\n\n"[..]);
        assert!(decode_one(&encode_comment("a\nb")).is_keep_alive());
        assert_eq!(encode_event(&Event::default()), &b"\n"[..]);
    }
}
