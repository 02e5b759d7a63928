//! Feeds arbitrary bytes to the incremental SSE decoder, cut into chunks at fuzzer-chosen
//! points, checking that nothing panics, that the chunked decoding gives exactly the events
//! (and oversized count) of the whole-stream decoding, that dispatched events respect the size
//! cap, and that with a cap out of reach the events are those of a plain whole-stream reading
//! of the spec.
//!
//! Input layout: byte 0 = number of cut points (mod 16); then 2 bytes per cut point (offsets,
//! taken modulo the stream length); then 1 byte choosing the size cap; the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtrace::genai::sse::{SseDecoder, SseEvent};

/// (event, data, id, retry)
type Ev = (Option<String>, String, Option<String>, Option<u64>);

fn owned(event: SseEvent<'_>) -> Ev {
    (
        event.event.map(str::to_owned),
        event.data.to_owned(),
        event.id.map(str::to_owned),
        event.retry,
    )
}

fn decode(cap: usize, chunks: &[&[u8]]) -> (Vec<Ev>, u64) {
    let mut decoder = SseDecoder::new(cap);
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk, |event| events.push(owned(event)));
    }
    decoder.finish();
    (events, decoder.oversized_events())
}

/// The spec read plainly over the whole stream (no cap).
fn reference(bytes: &[u8]) -> Vec<Ev> {
    let text = String::from_utf8_lossy(bytes);
    let mut rest = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    let mut events = Vec::new();
    let (mut data, mut event, mut id, mut retry) = (String::new(), String::new(), None, None);
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        rest = &rest[end
            + if rest[end..].starts_with("\r\n") {
                2
            } else {
                1
            }..];
        if line.is_empty() {
            if let Some(body) = data.strip_suffix('\n') {
                let event = Some(event.clone()).filter(|e: &String| !e.is_empty());
                events.push((event, body.to_owned(), id.clone(), retry));
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

fuzz_target!(|input: &[u8]| {
    let Some((&count, rest)) = input.split_first() else {
        return;
    };
    let count = usize::from(count % 16);
    if rest.len() < 2 * count + 1 {
        return;
    }
    let (offsets, rest) = rest.split_at(2 * count);
    let (&cap_byte, stream) = rest.split_first().expect("checked length");
    // Small caps exercise the give-up path; 255 means no cap in reach.
    let cap = if cap_byte == 255 {
        usize::MAX
    } else {
        usize::from(cap_byte) * 4
    };

    let mut cuts: Vec<usize> = offsets
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        chunks.push(&stream[start..cut]);
        start = cut;
    }
    chunks.push(&stream[start..]);

    let whole = decode(cap, &[stream]);
    let chunked = decode(cap, &chunks);
    assert_eq!(
        chunked, whole,
        "chunked decoding differs from whole-stream decoding"
    );
    for (event, data, id, _) in &whole.0 {
        // Buffered raw bytes stay within the cap; replacement at most triples them.
        let raw = data.len()
            + 1
            + event.as_ref().map_or(0, String::len)
            + id.as_ref().map_or(0, String::len);
        assert!(raw <= cap.saturating_mul(3), "event over the cap");
    }
    if cap == usize::MAX {
        assert_eq!(whole.1, 0);
        assert_eq!(
            whole.0,
            reference(stream),
            "differs from the whole-stream reference"
        );
    }
});
