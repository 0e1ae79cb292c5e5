//! Property tests: chunk-boundary independence, raw-byte preservation, round trips.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// Everything a decoder produced for one input: the frames and the tail items.
type Decoded = (Vec<SseFrame>, Vec<SseTail>);

/// Decodes `input` fed in chunks cut at `cuts` (positions into `input`, any order).
fn decode_split(input: &[u8], cuts: &[usize]) -> Decoded {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    cuts.sort_unstable();
    let mut decoder = SseDecoder::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        frames.extend(decoder.feed(&input[start..cut]));
        start = cut;
    }
    let mut tail = Vec::new();
    while let Some(item) = decoder.finish() {
        let last = item.is_incomplete();
        tail.push(item);
        if last {
            break;
        }
    }
    (frames, tail)
}

/// The raw bytes of every frame and tail item, concatenated.
fn raw_of((frames, tail): &Decoded) -> Vec<u8> {
    let mut out: Vec<u8> = frames.iter().flat_map(|f| f.raw.to_vec()).collect();
    for item in tail {
        out.extend_from_slice(item.raw());
    }
    out
}

/// Every event of a decode, from frames and from a final tail frame.
fn events_of((frames, tail): &Decoded) -> Vec<Event> {
    let tail_frames = tail.iter().filter_map(|t| match t {
        SseTail::Frame(frame) => Some(frame),
        SseTail::Incomplete { .. } => None,
    });
    frames
        .iter()
        .chain(tail_frames)
        .filter_map(|f| f.event().cloned())
        .collect()
}

/// Input made of the pieces that matter to the parser, BOMs and bad UTF-8 included.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let pieces: &[&[u8]] = &[
        b"data",
        b"event",
        b"id",
        b"retry",
        b":",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b"x",
        b"42",
        b"\xC3\xA9",
        b"\xEF\xBB\xBF",
        b"\xEF\xBB",
        b"\xff",
        b"\0",
        b"[DONE]",
        b"{\"a\":1}",
    ];
    prop::collection::vec(prop::sample::select(pieces), 0..60).prop_map(|p| p.concat())
}

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..12)
}

fn positions(cuts: &[Index], len: usize) -> Vec<usize> {
    cuts.iter().map(|i| i.index(len + 1)).collect()
}

fn text(pattern: &'static str) -> impl Strategy<Value = SseText> {
    pattern.prop_map(SseText::from)
}

/// Events with at least one field; values free of CR and LF (and NUL for `id`), which
/// the encoder would rewrite.
fn event() -> impl Strategy<Value = Event> {
    (
        prop::option::of(text("[a-z. é:]{0,10}")),
        prop::option::of(text("[a-z é:{}\"\\[\\]\n]{0,24}")),
        prop::option::of(text("[a-z0-9 :]{0,6}")),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(event, data, id, retry)| Event {
            event,
            data,
            id,
            retry,
        })
        .prop_filter("an event needs a field", |e| *e != Event::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_ignores_chunk_boundaries(input in soup(), cuts in cuts()) {
        let whole = decode_split(&input, &[]);
        let split = decode_split(&input, &positions(&cuts, input.len()));
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(raw_of(&whole), input);
    }

    #[test]
    fn byte_by_byte_equals_whole(input in soup()) {
        let every: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(decode_split(&input, &every), decode_split(&input, &[]));
    }

    #[test]
    fn encode_then_decode_round_trips(
        events in prop::collection::vec(event(), 0..8),
        ending in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        bom in any::<bool>(),
        cuts in cuts(),
    ) {
        // A stream holding nothing but a BOM ends "mid-frame": keep it for non-empty ones.
        let bom = bom && !events.is_empty();
        let mut input: Vec<u8> = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
        for event in &events {
            input.extend_from_slice(&encode_event(event));
            input.extend_from_slice(&encode_comment("keep-alive"));
        }
        let input = String::from_utf8_lossy(&input).replace('\n', ending).into_bytes();
        let decoded = decode_split(&input, &positions(&cuts, input.len()));
        prop_assert!(decoded.1.iter().all(|t| !t.is_incomplete()));
        prop_assert_eq!(events_of(&decoded), events);
        prop_assert_eq!(raw_of(&decoded), input);
    }

    #[test]
    fn decoded_events_re_encode_identically(input in soup()) {
        for event in events_of(&decode_split(&input, &[])) {
            let again = events_of(&decode_split(&encode_event(&event), &[]));
            prop_assert_eq!(again, vec![event]);
        }
    }

    #[test]
    fn encode_data_round_trips(payload in "[a-z{}\":\r\n é]{0,40}", cuts in cuts()) {
        let bytes = encode_data(payload.as_bytes());
        let decoded = decode_split(&bytes, &positions(&cuts, bytes.len()));
        let expected = payload.replace("\r\n", "\n").replace('\r', "\n");
        prop_assert!(decoded.1.is_empty());
        let events = events_of(&decoded);
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(events[0].data_str(), Some(expected.as_str()));
    }
}
