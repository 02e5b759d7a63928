//! `llmtrace::genai::sse`: table-driven cases for each rule of the WHATWG event-stream
//! interpretation, "split anywhere" properties over realistic LLM streams, the size cap, and
//! no panics on arbitrary bytes in arbitrary chunkings.

use llmtrace::genai::sse::{SseDecoder, SseEvent};
use proptest::prelude::*;

/// An owned [`SseEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev {
    event: Option<String>,
    data: String,
    id: Option<String>,
    retry: Option<u64>,
}

impl Ev {
    fn of(event: SseEvent<'_>) -> Self {
        Self {
            event: event.event.map(str::to_owned),
            data: event.data.to_owned(),
            id: event.id.map(str::to_owned),
            retry: event.retry,
        }
    }
}

/// An expected event with `data` and nothing else.
fn ev(data: &str) -> Ev {
    Ev {
        event: None,
        data: data.to_owned(),
        id: None,
        retry: None,
    }
}

impl Ev {
    fn event(mut self, event: &str) -> Self {
        self.event = Some(event.to_owned());
        self
    }
    fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }
    fn retry(mut self, retry: u64) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// Decodes the chunks as one stream with a fresh decoder; returns the events and the
/// oversized count.
fn decode_with(max_event_bytes: usize, chunks: &[&[u8]]) -> (Vec<Ev>, u64) {
    let mut decoder = SseDecoder::new(max_event_bytes);
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk, |event| events.push(Ev::of(event)));
    }
    decoder.finish();
    (events, decoder.oversized_events())
}

fn decode(chunks: &[&[u8]]) -> Vec<Ev> {
    decode_with(1 << 20, chunks).0
}

/// A plain, whole-stream transcription of the spec's algorithm (no size cap), to compare
/// against: decode the whole stream with replacement, drop one leading BOM, split lines on
/// CRLF, LF or CR, discard the unterminated tail, then process the lines.
fn reference(bytes: &[u8]) -> Vec<Ev> {
    let text = String::from_utf8_lossy(bytes);
    let mut rest = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    let mut lines = Vec::new();
    while let Some(end) = rest.find(['\r', '\n']) {
        lines.push(&rest[..end]);
        rest = if rest[end..].starts_with("\r\n") {
            &rest[end + 2..]
        } else {
            &rest[end + 1..]
        };
    }
    let (mut events, mut data, mut event, mut id, mut retry) =
        (Vec::new(), String::new(), String::new(), None, None);
    for line in lines {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                events.push(Ev {
                    event: Some(event.clone()).filter(|e: &String| !e.is_empty()),
                    data: data.clone(),
                    id: id.clone(),
                    retry,
                });
            }
            (data, event, id, retry) = (String::new(), String::new(), None, None);
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry = Some(value.parse().unwrap_or(u64::MAX))
            }
            _ => {}
        }
    }
    events
}

// === rules, one table ===

#[test]
fn event_stream_rules() {
    let cases: Vec<(&str, &[u8], Vec<Ev>)> = vec![
        // line endings
        ("LF", b"data: a\n\n", vec![ev("a")]),
        ("CR", b"data: a\r\r", vec![ev("a")]),
        ("CRLF", b"data: a\r\n\r\n", vec![ev("a")]),
        (
            "mixed",
            b"data: a\rdata: b\ndata: c\r\n\n",
            vec![ev("a\nb\nc")],
        ),
        (
            "LF CR is two line ends",
            b"data: a\n\rdata: b\n\n",
            vec![ev("a"), ev("b")],
        ),
        (
            "CR CR LF",
            b"data: a\r\r\ndata: b\n\n",
            vec![ev("a"), ev("b")],
        ),
        ("blank lines only", b"\n\r\n\r\r\n\n", vec![]),
        ("extra blank lines", b"data: a\n\n\n\n\r\n", vec![ev("a")]),
        // comments
        ("comment", b": hello\ndata: a\n: x\n\n", vec![ev("a")]),
        ("comment only event", b": keep-alive\n\n", vec![]),
        ("bare colon", b":\ndata: a\n\n", vec![ev("a")]),
        ("comment with data inside", b": data: x\n\n", vec![]),
        // data
        ("multi-line data", b"data: a\ndata: b\n\n", vec![ev("a\nb")]),
        ("data without space", b"data:a\n\n", vec![ev("a")]),
        ("only one space removed", b"data:  a\n\n", vec![ev(" a")]),
        ("trailing space kept", b"data: a \n\n", vec![ev("a ")]),
        ("tab not removed", b"data:\ta\n\n", vec![ev("\ta")]),
        ("colon in value", b"data: a:b: c\n\n", vec![ev("a:b: c")]),
        ("empty data line", b"data:\n\n", vec![ev("")]),
        ("data: with space only", b"data: \n\n", vec![ev("")]),
        ("two empty data lines", b"data:\ndata:\n\n", vec![ev("\n")]),
        (
            "empty line in data",
            b"data: a\ndata:\ndata: b\n\n",
            vec![ev("a\n\nb")],
        ),
        ("NUL in data kept", b"data: a\0b\n\n", vec![ev("a\0b")]),
        // field without colon
        ("data without colon", b"data\n\n", vec![ev("")]),
        (
            "data without colon then data",
            b"data\ndata: x\n\n",
            vec![ev("\nx")],
        ),
        (
            "event without colon",
            b"event: a\nevent\ndata: x\n\n",
            vec![ev("x")],
        ),
        ("id without colon", b"id\ndata: x\n\n", vec![ev("x").id("")]),
        ("retry without colon", b"retry\ndata: x\n\n", vec![ev("x")]),
        ("unknown without colon", b"foo\ndata: x\n\n", vec![ev("x")]),
        // unknown fields, case-sensitive names
        ("unknown field", b"foo: bar\ndata: a\n\n", vec![ev("a")]),
        (
            "names are case-sensitive",
            b"DATA: b\nData: c\ndata: a\n\n",
            vec![ev("a")],
        ),
        (
            "leading space in name",
            b" data: x\ndata: a\n\n",
            vec![ev("a")],
        ),
        ("longer name", b"datas: x\ndata: a\n\n", vec![ev("a")]),
        (
            "prefix of a name",
            b"dat: x\nev: y\ndata: a\n\n",
            vec![ev("a")],
        ),
        (
            "space before colon",
            b"data : x\ndata: a\n\n",
            vec![ev("a")],
        ),
        ("unknown only", b"foo: bar\n\n", vec![]),
        // event type
        (
            "event",
            b"event: add\ndata: a\n\n",
            vec![ev("a").event("add")],
        ),
        ("empty event", b"event:\ndata: a\n\n", vec![ev("a")]),
        (
            "event replaced",
            b"event: a\nevent: b\ndata: x\n\n",
            vec![ev("x").event("b")],
        ),
        (
            "event after data",
            b"data: x\nevent: late\n\n",
            vec![ev("x").event("late")],
        ),
        (
            "event type reset after dispatch",
            b"event: add\ndata: a\n\ndata: b\n\n",
            vec![ev("a").event("add"), ev("b")],
        ),
        (
            "event type reset when nothing dispatched",
            b"event: add\n\ndata: b\n\n",
            vec![ev("b")],
        ),
        // empty data buffer
        (
            "no data no dispatch",
            b"event: x\nid: 1\nretry: 5\n\n",
            vec![],
        ),
        // id
        ("id", b"id: 1\ndata: a\n\n", vec![ev("a").id("1")]),
        ("empty id", b"id:\ndata: a\n\n", vec![ev("a").id("")]),
        (
            "id with NUL ignored",
            b"id: 1\0\ndata: a\n\n",
            vec![ev("a")],
        ),
        (
            "NUL id keeps earlier id",
            b"id: 1\nid: 2\0\ndata: a\n\n",
            vec![ev("a").id("1")],
        ),
        (
            "later id wins",
            b"id: 1\nid: 2\ndata: a\n\n",
            vec![ev("a").id("2")],
        ),
        (
            "id is per event",
            b"id: 1\ndata: a\n\ndata: b\n\n",
            vec![ev("a").id("1"), ev("b")],
        ),
        ("id space", b"id:  7\ndata: a\n\n", vec![ev("a").id(" 7")]),
        // retry
        (
            "retry",
            b"retry: 1000\ndata: a\n\n",
            vec![ev("a").retry(1000)],
        ),
        (
            "retry zero",
            b"retry:0\ndata: a\n\n",
            vec![ev("a").retry(0)],
        ),
        ("retry letters", b"retry: 10a\ndata: a\n\n", vec![ev("a")]),
        ("retry negative", b"retry: -1\ndata: a\n\n", vec![ev("a")]),
        ("retry decimal", b"retry: 1.5\ndata: a\n\n", vec![ev("a")]),
        ("retry empty", b"retry:\ndata: a\n\n", vec![ev("a")]),
        ("retry two spaces", b"retry:  5\ndata: a\n\n", vec![ev("a")]),
        (
            "retry trailing space",
            b"retry: 5 \ndata: a\n\n",
            vec![ev("a")],
        ),
        (
            "invalid retry keeps earlier",
            b"retry: 5\nretry: x\ndata: a\n\n",
            vec![ev("a").retry(5)],
        ),
        (
            "retry saturates",
            b"retry: 99999999999999999999999999\ndata: a\n\n",
            vec![ev("a").retry(u64::MAX)],
        ),
        (
            "retry is per event",
            b"retry: 5\ndata: a\n\ndata: b\n\n",
            vec![ev("a").retry(5), ev("b")],
        ),
        // BOM
        ("BOM", b"\xEF\xBB\xBFdata: a\n\n", vec![ev("a")]),
        (
            "BOM then blank line",
            b"\xEF\xBB\xBF\ndata: a\n\n",
            vec![ev("a")],
        ),
        (
            "two BOMs",
            b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n",
            vec![ev("b")],
        ),
        (
            "BOM mid-stream",
            b"data: a\n\n\xEF\xBB\xBFdata: b\n\n",
            vec![ev("a")],
        ),
        (
            "BOM in value kept",
            b"data: \xEF\xBB\xBFa\n\n",
            vec![ev("\u{FEFF}a")],
        ),
        (
            "partial BOM",
            b"\xEF\xBBdata: a\n\ndata: b\n\n",
            vec![ev("b")],
        ),
        // end of stream
        (
            "incomplete event discarded",
            b"data: a\n\ndata: b\n",
            vec![ev("a")],
        ),
        ("incomplete line discarded", b"data: a", vec![]),
        ("CR-ended event discarded", b"data: a\r", vec![]),
        ("empty stream", b"", vec![]),
        // UTF-8
        (
            "multi-byte UTF-8",
            "data: héllo wörld 你好 🙂\n\n".as_bytes(),
            vec![ev("héllo wörld 你好 🙂")],
        ),
        ("invalid byte", b"data: a\xFFb\n\n", vec![ev("a\u{FFFD}b")]),
        (
            "truncated sequence at line end",
            b"data: \xE4\xBD\ndata: ok\n\n",
            vec![ev("\u{FFFD}\nok")],
        ),
        (
            "overlong",
            b"data: \xC0\x80\n\n",
            vec![ev("\u{FFFD}\u{FFFD}")],
        ),
        (
            "surrogate",
            b"data: \xED\xA0\x80\n\n",
            vec![ev("\u{FFFD}\u{FFFD}\u{FFFD}")],
        ),
        (
            "invalid event type",
            b"event: \xFF\ndata: x\n\n",
            vec![ev("x").event("\u{FFFD}")],
        ),
        (
            "invalid id",
            b"id: \xC3\ndata: x\n\n",
            vec![ev("x").id("\u{FFFD}")],
        ),
        ("invalid field name", b"d\xFFta: x\n\n", vec![]),
        (
            "invalid then valid event",
            b"data: \xFF\n\nevent: e\ndata: ok\nid: 1\n\n",
            vec![ev("\u{FFFD}"), ev("ok").event("e").id("1")],
        ),
    ];
    let mut failures = Vec::new();
    for (name, input, expected) in &cases {
        let whole = decode(&[input]);
        if &whole != expected {
            failures.push(format!("{name}: got {whole:?}, expected {expected:?}"));
        }
        if &reference(input) != expected {
            failures.push(format!("{name}: the reference disagrees"));
        }
        // Every case also holds fed byte by byte.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let split = decode(&bytes);
        if &split != expected {
            failures.push(format!("{name} (byte by byte): got {split:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} cases", cases.len());
}

#[test]
fn decoder_is_reusable_after_finish() {
    let mut decoder = SseDecoder::default();
    let mut events = Vec::new();
    decoder.feed(b"data: a\n\ndata: partial", |e| events.push(Ev::of(e)));
    decoder.finish();
    decoder.feed(b"\xEF\xBB\xBFdata: b\n\n", |e| events.push(Ev::of(e)));
    decoder.finish();
    assert_eq!(events, [ev("a"), ev("b")]);
}

#[test]
fn crlf_split_between_chunks_is_one_line_end() {
    // If the LF were a second line end, the first event would be dispatched early and the
    // second data line would become its own event.
    let events = decode(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
    assert_eq!(events, [ev("a\nb")]);
    // A CR ending a chunk followed by a chunk that does not start with LF.
    let events = decode(&[b"data: a\r", b"\r"]);
    assert_eq!(events, [ev("a")]);
    // Empty chunks in between do not matter.
    let events = decode(&[b"data: a\r", b"", b"\n", b"", b"\r", b"", b"\ndata: b\n\n"]);
    assert_eq!(events, [ev("a"), ev("b")]);
}

#[test]
fn bom_split_across_chunks() {
    assert_eq!(decode(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]), [ev("a")]);
    assert_eq!(decode(&[b"\xEF\xBB", b"\xBF", b"data: a\n\n"]), [ev("a")]);
    // Not a BOM: the held-back bytes are the start of an (unknown) field name.
    assert_eq!(decode(&[b"\xEF", b"\xBBX\n", b"data: a\n\n"]), [ev("a")]);
    assert_eq!(
        decode(&[b"\xEF", b"\xBB", b"\n", b"data: a\n\n"]),
        [ev("a")]
    );
}

// === split anywhere ===

const OPENAI: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

const ANTHROPIC: &[u8] = b"event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

const CRLF: &[u8] = b": ok\r\n\r\nid: 1\r\nevent: delta\r\ndata: {\"t\":\"a\"}\r\n\r\nretry: 3000\r\ndata: line one\r\ndata: line two\r\n\r\nid: 2\r\ndata: [DONE]\r\n\r\n";

const UTF8: &str =
    "\u{FEFF}event: text\ndata: héllo wörld 你好 🙂\n\ndata: 🙂🙂\rdata: ü\r\rdata: 你\r\n\r\n";

/// Short streams with every tricky spot close together (for every 3-way split).
const SHORT: [&[u8]; 6] = [
    b"\xEF\xBB\xBFdata: a\r\n\r\n",
    b"data:\xF0\x9F\x99\x82\r\rid: \xE4\xBD\xA0\n\n",
    b"event: e\r\ndata: 1\r\n\r\nevent:\rdata\r\r",
    b": c\ndata: x\xFFy\nretry: 12\n\ndata: z\n",
    b"id: 1\0\ndata:  x\n\n\xEF\xBB\xBF\n\n",
    "data: héllo 你好 🙂\r\n\r\n".as_bytes(),
];

fn streams() -> Vec<&'static [u8]> {
    let mut all = vec![OPENAI, ANTHROPIC, CRLF, UTF8.as_bytes()];
    all.extend(SHORT);
    all
}

#[test]
fn realistic_streams_decode_as_expected() {
    let openai = decode(&[OPENAI]);
    assert_eq!(openai.len(), 4);
    assert_eq!(openai[3], ev("[DONE]"));
    assert!(openai[1].data.contains("\"Hello\""));

    let anthropic = decode(&[ANTHROPIC]);
    let types: Vec<_> = anthropic.iter().map(|e| e.event.as_deref()).collect();
    assert_eq!(
        types,
        [
            Some("message_start"),
            Some("content_block_start"),
            Some("ping"),
            Some("content_block_delta"),
            Some("message_delta"),
            Some("message_stop"),
        ]
    );

    assert_eq!(
        decode(&[CRLF]),
        [
            ev("{\"t\":\"a\"}").event("delta").id("1"),
            ev("line one\nline two").retry(3000),
            ev("[DONE]").id("2"),
        ]
    );
    assert_eq!(
        decode(&[UTF8.as_bytes()]),
        [
            ev("héllo wörld 你好 🙂").event("text"),
            ev("🙂🙂\nü"),
            ev("你"),
        ]
    );
}

#[test]
fn every_two_way_split_decodes_like_the_whole() {
    let mut checked = 0;
    for stream in streams() {
        let whole = decode(&[stream]);
        for at in 0..=stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(
                decode(&[a, b]),
                whole,
                "split at {at} of {:?}",
                String::from_utf8_lossy(stream)
            );
            checked += 1;
        }
    }
    println!("{checked} two-way splits");
}

#[test]
fn every_three_way_split_of_short_streams_decodes_like_the_whole() {
    let mut checked = 0;
    for stream in SHORT {
        let whole = decode(&[stream]);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let chunks = [&stream[..i], &stream[i..j], &stream[j..]];
                assert_eq!(decode(&chunks), whole, "splits at {i}, {j} of {stream:?}");
                checked += 1;
            }
        }
    }
    println!("{checked} three-way splits");
}

/// Cuts `bytes` at the given points (taken modulo its length, in any order).
fn cut<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for point in points {
        chunks.push(&bytes[start..point]);
        start = point;
    }
    chunks.push(&bytes[start..]);
    chunks
}

proptest! {
    #[test]
    fn random_chunkings_decode_like_the_whole(
        which in 0..streams().len(),
        points in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let stream = streams()[which];
        prop_assert_eq!(decode(&cut(stream, &points)), decode(&[stream]));
    }

    #[test]
    fn concatenated_streams_in_random_chunkings(
        picks in prop::collection::vec(0..8usize, 1..6),
        points in prop::collection::vec(any::<usize>(), 0..60),
    ) {
        // Streams glued together (only the first may start with a BOM that is skipped).
        let all = streams();
        let stream: Vec<u8> = picks.iter().flat_map(|&i| all[i].iter().copied()).collect();
        prop_assert_eq!(decode(&cut(&stream, &points)), decode(&[&stream]));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes_in_arbitrary_chunkings(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                2 => prop::sample::select(b"\r\n: \0".to_vec()),
                1 => prop::sample::select(vec![0xEF, 0xBB, 0xBF, 0xF0, 0x9F, 0x80]),
                1 => prop::sample::select(b"dataeventidretry".to_vec()),
            ],
            0..400,
        ),
        points in prop::collection::vec(any::<usize>(), 0..30),
        cap in 0usize..64,
    ) {
        let (whole, whole_oversized) = decode_with(cap, &[&bytes]);
        let (chunked, chunked_oversized) = decode_with(cap, &cut(&bytes, &points));
        prop_assert_eq!(&chunked, &whole);
        prop_assert_eq!(chunked_oversized, whole_oversized);
        for event in &whole {
            // What fits the cap: the data plus a newline per line.
            prop_assert!(event.data.len() < 3 * cap.max(1));
        }
    }

    #[test]
    fn agrees_with_the_whole_stream_reference(
        bytes in prop::collection::vec(
            prop_oneof![
                3 => prop::sample::select(b"\r\n: \0x19".to_vec()),
                2 => prop::sample::select(vec![0xEF, 0xBB, 0xBF, 0xC3, 0xA9, 0xF0, 0x9F, 0x99, 0x82, 0xFF]),
                3 => prop::sample::select(b"deivntar".to_vec()),
                1 => any::<u8>(),
            ],
            0..300,
        ),
        tokens in prop::collection::vec(
            prop::sample::select(vec!["data", "event", "id", "retry", "data: ", ":", " ", "\n\n", "\r\n", "\r", "\u{FEFF}", "é", "🙂", "7"]),
            0..60,
        ),
        points in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        // Raw bytes, and a stream of SSE-ish tokens with the bytes sprinkled in.
        let mut stream: Vec<u8> = tokens.concat().into_bytes();
        for (i, b) in bytes.iter().enumerate() {
            let at = (i * 7919) % (stream.len() + 1);
            stream.insert(at, *b);
        }
        let expected = reference(&stream);
        prop_assert_eq!(decode(&[&bytes]), reference(&bytes));
        prop_assert_eq!(decode(&cut(&stream, &points)), expected);
    }

    #[test]
    fn field_lines_of_any_text_round_trip(
        lines in prop::collection::vec("[^\r\n]{0,40}", 1..6),
        points in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut stream = String::new();
        for line in &lines {
            stream.push_str("data: ");
            stream.push_str(line);
            stream.push_str("\r\n");
        }
        stream.push_str("\r\n");
        let events = decode(&cut(stream.as_bytes(), &points));
        prop_assert_eq!(events, vec![ev(&lines.join("\n"))]);
    }
}

// === size cap ===

const MIB: usize = 1 << 20;

#[test]
fn ten_megabyte_line_with_a_one_mebibyte_cap() {
    let mut decoder = SseDecoder::new(MIB);
    let mut events = Vec::new();
    decoder.feed(b"event: big\ndata: before\n", |e| events.push(Ev::of(e)));
    decoder.feed(b"data: ", |e| events.push(Ev::of(e)));
    let piece = vec![b'x'; 64 * 1024];
    let mut max_capacity = 0;
    for _ in 0..(10 * MIB / piece.len()) {
        decoder.feed(&piece, |e| events.push(Ev::of(e)));
        max_capacity = max_capacity.max(decoder.buffered_capacity());
    }
    // The data buffer is clamped to the cap; the event type's buffer adds a few bytes.
    assert!(max_capacity <= MIB + 4096, "capacity {max_capacity}");
    decoder.feed(b"\ndata: still the same event\n\n", |e| {
        events.push(Ev::of(e))
    });
    decoder.feed(b"id: 2\ndata: after\n\ndata: [DONE]\n\n", |e| {
        events.push(Ev::of(e))
    });
    decoder.finish();
    assert_eq!(events, [ev("after").id("2"), ev("[DONE]")]);
    assert_eq!(decoder.oversized_events(), 1);
    assert!(decoder.buffered_capacity() < 2 * MIB);
}

#[test]
fn ten_megabyte_line_in_one_chunk_is_never_buffered() {
    let mut stream = b"data: ".to_vec();
    stream.resize(10 * MIB, b'y');
    stream.extend_from_slice(b"\n\ndata: next\n\n");
    let mut decoder = SseDecoder::new(MIB);
    let mut events = Vec::new();
    decoder.feed(&stream, |e| events.push(Ev::of(e)));
    assert_eq!(events, [ev("next")]);
    assert_eq!(decoder.oversized_events(), 1);
    assert!(decoder.buffered_capacity() < 2 * MIB);
}

#[test]
fn many_data_lines_adding_up_over_the_cap() {
    let line = format!("data: {}\n", "z".repeat(999)); // 1000 bytes buffered per line
    let mut stream = String::new();
    for _ in 0..2000 {
        stream.push_str(&line);
    }
    stream.push_str("\ndata: ok\n\n");
    let mut decoder = SseDecoder::new(MIB);
    let mut events = Vec::new();
    for chunk in stream.as_bytes().chunks(4096) {
        decoder.feed(chunk, |e| events.push(Ev::of(e)));
        assert!(decoder.buffered_capacity() <= MIB + 4096);
    }
    assert_eq!(events, [ev("ok")]);
    assert_eq!(decoder.oversized_events(), 1);
}

#[test]
fn cap_boundary_is_exact() {
    // Buffered: the data value plus its newline.
    assert_eq!(
        decode_with(10, &[b"data: 123456789\n\n"]),
        (vec![ev("123456789")], 0)
    );
    assert_eq!(decode_with(10, &[b"data: 1234567890\n\n"]), (vec![], 1));
    // The value fits but its newline does not: the very next blank line ends the skip.
    assert_eq!(
        decode_with(10, &[b"data: 1234567890\n\ndata: ok\n\n"]),
        (vec![ev("ok")], 1)
    );
    // Event type and id count too.
    assert_eq!(
        decode_with(10, &[b"event: abc\nid: de\ndata: fgh\n\n"]),
        (vec![ev("fgh").event("abc").id("de")], 0)
    );
    assert_eq!(
        decode_with(10, &[b"event: abc\nid: de\ndata: fghij\n\n"]),
        (vec![], 1)
    );
    // Zero cap: nothing with data fits; nothing panics.
    assert_eq!(decode_with(0, &[b"data\n\ndata: x\n\n"]), (vec![], 2));
}

#[test]
fn oversized_events_are_counted_and_skipped_cleanly() {
    let stream = b"data: 0123456789abcdef\ndata: more of the same event\nevent: skipped\n\n\
                   data: small\n\n\
                   event: big\nid: 9\ndata: 0123456789abcdef\n\n\
                   data: small again\n\n";
    for chunk_len in [1, 2, 3, 7, stream.len()] {
        let chunks: Vec<&[u8]> = stream.chunks(chunk_len).collect();
        let (events, oversized) = decode_with(16, &chunks);
        assert_eq!(
            events,
            [ev("small"), ev("small again")],
            "chunks of {chunk_len}"
        );
        assert_eq!(oversized, 2);
    }
}

#[test]
fn comments_unknown_fields_and_retry_are_not_buffered() {
    let mut stream = b":".to_vec();
    stream.resize(100_000, b'c');
    stream.extend_from_slice(b"\nunknown: ");
    stream.resize(200_000, b'u');
    stream.extend_from_slice(b"\nretry: ");
    stream.resize(300_000, b'7');
    stream.extend_from_slice(b"\ndata: x\n\n");
    let mut decoder = SseDecoder::new(64);
    let mut events = Vec::new();
    for chunk in stream.chunks(1000) {
        decoder.feed(chunk, |e| events.push(Ev::of(e)));
        assert!(decoder.buffered_capacity() <= 64);
    }
    assert_eq!(events, [ev("x").retry(u64::MAX)]);
    assert_eq!(decoder.oversized_events(), 0);
}

#[test]
fn id_with_nul_past_the_cap_gives_up_whatever_the_chunking() {
    // Found by the fuzzer: the bytes before the NUL went over the cap only when they came in a
    // chunk of their own.
    let stream = b"id: 0123456789abcdefghij\0\ndata: a\n\ndata: b\n\n";
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(
            decode_with(16, &[a, b]),
            (vec![ev("b")], 1),
            "split at {at}"
        );
    }
    let stream = b"id: 0123456789\0abcdefghij\ndata: a\n\n";
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(
            decode_with(16, &[a, b]),
            (vec![ev("a")], 0),
            "split at {at}"
        );
    }
}

#[test]
fn id_with_nul_is_not_buffered() {
    let mut stream = b"id: \0".to_vec();
    stream.resize(100_000, b'i');
    stream.extend_from_slice(b"\ndata: x\n\n");
    let (events, oversized) = decode_with(64, &[&stream]);
    assert_eq!((events, oversized), (vec![ev("x")], 0));
}

#[test]
fn default_cap_is_one_mebibyte() {
    assert_eq!(SseDecoder::default().max_event_bytes(), MIB);
    assert_eq!(llmtrace::genai::sse::DEFAULT_MAX_EVENT_BYTES, MIB);
}
