//! Unit tests of the SSE types, decoder and its edge cases (the encoders test themselves;
//! properties are in `proptests.rs`).

use bytes::Bytes;

use super::*;

fn decode_all(chunks: &[&[u8]]) -> (Vec<SseFrame>, Option<SseTail>) {
    let mut decoder = SseDecoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        frames.extend(decoder.feed(chunk));
    }
    (frames, decoder.finish())
}

fn event(frame: &SseFrame) -> &Event {
    match &frame.kind {
        FrameKind::Event(event) => event,
        FrameKind::KeepAlive => panic!("expected an event, got keep-alive {frame:?}"),
    }
}

#[test]
fn decodes_an_openai_stream() {
    let input = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
    let (frames, tail) = decode_all(&[input]);
    assert_eq!(tail, None);
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].raw, &b"data: {\"a\":1}\n\n"[..]);
    assert_eq!(frames[0].json_str(), Some("{\"a\":1}"));
    assert_eq!(frames[1].data_str(), Some("{\"b\":2}"));
    assert!(frames[2].is_done());
}

#[test]
fn single_line_data_is_a_slice_of_raw() {
    let (frames, _) = decode_all(&[b"data: {\"x\":true}\n\n"]);
    let data = event(&frames[0])
        .data
        .as_ref()
        .map(|d| d.as_bytes().as_ptr());
    assert_eq!(data, Some(frames[0].raw[6..].as_ptr()));
}

#[test]
fn handles_every_line_ending() {
    for input in [
        &b"event: x\r\ndata: 1\r\n\r\n"[..],
        b"event: x\rdata: 1\r\r",
        b"event: x\ndata: 1\r\n\n",
    ] {
        let mut decoder = SseDecoder::new();
        let frames: Vec<_> = decoder.feed(input).collect();
        let tail = decoder.finish();
        let frame = frames
            .into_iter()
            .next()
            .or(match tail {
                Some(SseTail::Frame(frame)) => Some(frame),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no frame in {input:?}"));
        assert_eq!(frame.raw, input);
        assert_eq!(event(&frame).event_type(), "x");
        assert_eq!(event(&frame).data_str(), Some("1"));
    }
}

#[test]
fn crlf_split_across_chunks_is_one_line_ending() {
    let (frames, tail) = decode_all(&[b"data: a\r", b"\n\r", b"\n"]);
    assert_eq!(tail, None);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].raw, &b"data: a\r\n\r\n"[..]);
}

#[test]
fn lone_cr_at_end_of_input_completes_a_frame() {
    let (frames, tail) = decode_all(&[b"data: a\r\r"]);
    assert!(frames.is_empty());
    let Some(SseTail::Frame(frame)) = tail else {
        panic!("expected a final frame, got {tail:?}");
    };
    assert_eq!(frame.data_str(), Some("a"));
}

#[test]
fn joins_multi_line_data_with_lf() {
    let (frames, _) = decode_all(&[b"data: a\ndata:b\ndata\ndata:  c\n\n"]);
    assert_eq!(event(&frames[0]).data_str(), Some("a\nb\n\n c"));
}

#[test]
fn bom_is_ignored_at_stream_start_only() {
    let (frames, _) = decode_all(&[b"\xEF\xBB", b"\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n"]);
    assert_eq!(frames[0].raw, &b"\xEF\xBB\xBFdata: x\n\n"[..]);
    assert_eq!(frames[0].data_str(), Some("x"));
    // A second BOM is part of the field name, which is then unknown.
    assert!(frames[1].is_keep_alive());
}

#[test]
fn comments_and_unknown_fields_are_keep_alives() {
    let input = b": ping\n\nfoo: bar\n\n\n";
    let (frames, _) = decode_all(&[input]);
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(SseFrame::is_keep_alive));
    let raw: Vec<u8> = frames.iter().flat_map(|f| f.raw.to_vec()).collect();
    assert_eq!(raw, input);
}

#[test]
fn id_and_retry_follow_the_spec() {
    let (frames, _) = decode_all(&[b"id: 7\nid: a\0b\nretry: 150\nretry: x1\ndata\n\n"]);
    let ev = event(&frames[0]);
    assert_eq!(ev.id.as_ref().map(SseText::as_str), Some("7"));
    assert_eq!(ev.retry, Some(150));
    assert_eq!(ev.data_str(), Some(""));
    let (frames, _) = decode_all(&[b"retry: 99999999999999999999999\n\n"]);
    assert!(frames[0].is_keep_alive());
    let (frames, _) = decode_all(&[b"retry: 5\n\n"]);
    assert_eq!(event(&frames[0]).retry, Some(5));
}

#[test]
fn invalid_utf8_is_replaced_but_raw_is_exact() {
    let input = b"data: a\xffb\n\n";
    let (frames, _) = decode_all(&[input]);
    assert_eq!(frames[0].data_str(), Some("a\u{FFFD}b"));
    assert_eq!(frames[0].raw, &input[..]);
}

#[test]
fn reports_a_stream_cut_mid_frame() {
    let (frames, tail) = decode_all(&[b"data: 1\n\nevent: e\ndata: {\"par"]);
    assert_eq!(frames.len(), 1);
    let Some(SseTail::Incomplete { raw, partial }) = tail else {
        panic!("expected incomplete, got {tail:?}");
    };
    assert_eq!(raw, &b"event: e\ndata: {\"par"[..]);
    let partial = partial.event().map(Event::event_type);
    assert_eq!(partial, Some("e"));
}

#[test]
fn finish_resets_for_a_new_stream() {
    let mut decoder = SseDecoder::new();
    assert_eq!(decoder.feed(b"id: 1\ndata: x\n\ndata").count(), 1);
    assert_eq!(decoder.last_event_id().map(SseText::as_str), Some("1"));
    assert!(decoder.finish().is_some_and(|t| t.is_incomplete()));
    assert_eq!(decoder.pending_len(), 0);
    assert_eq!(decoder.last_event_id(), None);
    assert_eq!(decoder.feed(b"\xEF\xBB\xBFdata: y\n\n").count(), 1);
    assert_eq!(decoder.finish(), None);
}

#[test]
fn finish_returns_untaken_frames_one_by_one() {
    let mut decoder = SseDecoder::new();
    decoder.push(b"data: 1\n\ndata: 2\n\ndata: 3");
    let first = decoder.finish();
    assert!(matches!(&first, Some(SseTail::Frame(f)) if f.data_str() == Some("1")));
    let second = decoder.finish();
    assert!(matches!(&second, Some(SseTail::Frame(f)) if f.data_str() == Some("2")));
    assert!(decoder.finish().is_some_and(|t| t.is_incomplete()));
    assert_eq!(decoder.finish(), None);
}

#[test]
fn long_line_in_many_chunks() {
    let payload = "x".repeat(10_000);
    let input = format!("data: {payload}\n\n");
    let mut decoder = SseDecoder::new();
    let mut frames = Vec::new();
    for chunk in input.as_bytes().chunks(7) {
        frames.extend(decoder.feed(chunk));
    }
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].data_str(), Some(payload.as_str()));
}

#[test]
fn text_lossy_keeps_valid_utf8_without_copying() {
    let bytes = Bytes::from_static("héllo".as_bytes());
    let text = SseText::from_utf8_lossy(bytes.clone());
    assert_eq!(text.as_shared_bytes().as_ptr(), bytes.as_ptr());
    assert_eq!(text, "héllo");
}

#[test]
fn text_lossy_replaces_invalid_utf8() {
    let text = SseText::from_utf8_lossy(Bytes::from_static(b"a\xffb"));
    assert_eq!(text.as_str(), "a\u{FFFD}b");
}

#[test]
fn event_type_defaults_to_message() {
    let mut event = Event::with_data("x");
    assert_eq!(event.event_type(), "message");
    event.event = Some(SseText::from_static(""));
    assert_eq!(event.event_type(), "message");
    event.event = Some("ping".into());
    assert_eq!(event.event_type(), "ping");
}

#[test]
fn json_str_skips_done_and_blank() {
    let json = FrameKind::Event(Event::with_data("{\"a\":1}"));
    assert_eq!(json.json_str(), Some("{\"a\":1}"));
    assert!(!json.is_done());
    let done = FrameKind::Event(Event::with_data(DONE));
    assert!(done.is_done());
    assert_eq!(done.json_str(), None);
    assert_eq!(FrameKind::Event(Event::with_data(" ")).json_str(), None);
    assert_eq!(FrameKind::KeepAlive.data_str(), None);
}
