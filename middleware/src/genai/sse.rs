//! An incremental, sans-IO decoder for Server-Sent Events (`text/event-stream`), exact to the
//! WHATWG HTML rules for [interpreting an event stream].
//!
//! Feed the response body chunk by chunk, as it arrives, to [`SseDecoder::feed`]; call
//! [`SseDecoder::finish`] when the body ends. Chunk boundaries may fall anywhere: inside a
//! field name, between the CR and the LF of a CRLF, inside the byte-order mark, inside a
//! multi-byte UTF-8 character. The decoder reports the same events however the stream is cut.
//!
//! # When events are dispatched
//!
//! `on_event` is called from inside `feed`, once for each blank line that ends an event whose
//! data buffer is not empty, in stream order, before `feed` returns. Nothing is dispatched at
//! any other time:
//!
//! - an event without `data` lines (only `event:`, `id:`, `retry:` or comments) is not
//!   dispatched, as the spec says; its fields are forgotten at the blank line;
//! - an event not yet closed by a blank line when the stream ends is discarded by `finish`
//!   (the spec's "any pending data must be discarded");
//! - an event larger than the size cap (below) is skipped.
//!
//! The event's `data` is its `data` lines joined with `\n`; `event` is `None` for the default
//! type (`message`); `id` and `retry` are those of the event's own `id` and `retry` fields.
//! The spec's `EventSource` also carries the last `id` forward to later events (and across a
//! reconnection): a consumer that needs that keeps the last `Some` it saw.
//!
//! Lines end with CRLF, LF or CR. A byte-order mark is skipped only at the very start of the
//! stream. Invalid UTF-8 is replaced with U+FFFD exactly as the spec's UTF-8 decode does; valid
//! events are handed out as borrowed `&str` without being copied or allocated again.
//!
//! # Size cap and memory bound
//!
//! The decoder never holds the stream. It buffers only what the current event needs: the
//! values of its `data` lines (each plus a `\n`), its event type and its id. A partial line is
//! not buffered as such: its bytes go straight to the field they belong to (comments, unknown
//! fields and `retry` values are never buffered), and at most 5 bytes of a field name are
//! kept. Buffers are reused from event to event, so a stream in steady state allocates
//! nothing.
//!
//! An event for which these buffers would exceed `max_event_bytes`
//! ([`DEFAULT_MAX_EVENT_BYTES`], 1 MiB, by default) is given up on at the byte that crosses
//! the cap: its buffers are emptied, the rest of it up to its blank line is skipped without
//! buffering, it is counted in [`SseDecoder::oversized_events`], and decoding goes on cleanly
//! with the next event. The field buffers never grow past the cap (growth is clamped to it).
//! The scratch buffer that holds the decoded form of an event with invalid UTF-8 can reach up
//! to 3 × its raw size while that event is handed out (each invalid byte may become a 3-byte
//! U+FFFD), and is released afterwards if it exceeds the cap. The buffers that are rarely large
//! (event type, id) are released at the end of an event that made them larger than 1 KiB. So
//! between events the decoder holds at most the data buffer (≤ cap) plus the decode scratch
//! (≤ cap) plus a few KiB; see [`SseDecoder::buffered_capacity`].
//!
//! [interpreting an event stream]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

use std::mem;

use memchr::{memchr, memchr2};

/// The size cap of [`SseDecoder::default`]: 1 MiB per event.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// The UTF-8 byte-order mark, skipped at the start of a stream.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// The first allocation of a buffer, so that small values do not reallocate byte by byte.
const MIN_BUFFER: usize = 64;

/// Capacity above which the event-type, id and decode-scratch buffers are released at the end
/// of an event: values that large are abnormal, so keeping the memory is not worth it.
const KEEP_SMALL_BUFFER: usize = 1024;

/// One dispatched server-sent event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event` field; `None` means the default type, `message`.
    pub event: Option<&'a str>,
    /// The `data` field lines joined with `\n`.
    pub data: &'a str,
    /// The `id` field of this event, if it had one (without NUL; it may be empty).
    pub id: Option<&'a str>,
    /// The `retry` field of this event, if it had a valid one (ASCII digits only, saturating
    /// at `u64::MAX`).
    pub retry: Option<u64>,
}

/// Incremental Server-Sent Events decoder: bytes in, [`SseEvent`]s out, no I/O.
///
/// See the [module docs](self) for when events are dispatched, the size cap and the memory
/// bound.
///
/// ```
/// use llmtrace::genai::sse::SseDecoder;
///
/// let mut decoder = SseDecoder::default();
/// let mut seen = Vec::new();
/// // Chunks may split anywhere, here inside a field name and between CR and LF.
/// for chunk in [&b"event: message_start\r\nda"[..], b"ta: {\"a\":1}\r", b"\n\r\ndata: [DONE]\n\n"] {
///     decoder.feed(chunk, |event| seen.push((event.event.map(str::to_owned), event.data.to_owned())));
/// }
/// decoder.finish();
/// assert_eq!(seen, [
///     (Some("message_start".to_owned()), r#"{"a":1}"#.to_owned()),
///     (None, "[DONE]".to_owned()),
/// ]);
/// assert_eq!(decoder.oversized_events(), 0);
/// ```
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,

    // === stream state ===
    /// How many bytes of the BOM have been matched at the start of the stream; `None` once the
    /// start of the stream is behind us.
    bom_matched: Option<u8>,
    /// Where lines end, across chunks.
    lines: LineFramer,
    /// Where the current (partial) line stands.
    line: Line,
    /// The field name read so far on the current line (only while it is a prefix of a known
    /// field name, so at most 5 bytes).
    name: [u8; 5],
    name_len: u8,

    // === current event ===
    /// The current event went over the cap: skip it up to its blank line.
    skipping: bool,
    /// Raw `data` values, each followed by `\n`.
    data: Vec<u8>,
    /// Raw event type.
    event: Vec<u8>,
    /// Raw id of this event, valid when `has_id`.
    id: Vec<u8>,
    has_id: bool,
    /// The value of the `id` line being read, kept apart until it is known to be free of NUL.
    id_line: Vec<u8>,
    id_line_has_nul: bool,
    /// The value of the `retry` line being read: `Some` while it is all digits so far.
    retry_line: Option<u64>,
    retry_line_digits: bool,
    retry: Option<u64>,
    /// Where invalid UTF-8 is decoded with replacement at dispatch.
    scratch: String,

    oversized: u64,
}

/// Position within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing of the line seen yet: a line end here is a blank line.
    Start,
    /// Reading the field name, which is so far a prefix of a known field name.
    Name,
    /// Just after the colon: an optional single space is still to be dropped.
    ValueStart(Field),
    /// Reading the value.
    Value(Field),
    /// A comment, an unknown field, or a line of a skipped event: ignored up to its end.
    Ignore,
}

/// The fields the decoder acts on; all others are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Event,
    Data,
    Id,
    Retry,
}

impl Field {
    const ALL: [(&'static [u8], Field); 4] = [
        (b"event", Field::Event),
        (b"data", Field::Data),
        (b"id", Field::Id),
        (b"retry", Field::Retry),
    ];

    fn named(name: &[u8]) -> Option<Field> {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|&(_, field)| field)
    }

    fn is_prefix(name: &[u8]) -> bool {
        Self::ALL.iter().any(|(known, _)| known.starts_with(name))
    }
}

// === impl SseDecoder ===

impl Default for SseDecoder {
    /// A decoder with the [`DEFAULT_MAX_EVENT_BYTES`] (1 MiB) cap.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    /// A decoder that gives up on (skips) any single event larger than `max_event_bytes`: the
    /// bytes buffered for it, its `data` values each with a `\n`, its event type and its id.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            bom_matched: Some(0),
            lines: LineFramer::default(),
            line: Line::Start,
            name: [0; 5],
            name_len: 0,
            skipping: false,
            data: Vec::new(),
            event: Vec::new(),
            id: Vec::new(),
            has_id: false,
            id_line: Vec::new(),
            id_line_has_nul: false,
            retry_line: None,
            retry_line_digits: false,
            retry: None,
            scratch: String::new(),
            oversized: 0,
        }
    }

    /// Feeds the next chunk of the stream; calls `on_event` for each event it completes, in
    /// order, before returning.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        let mut rest = chunk;
        if rest.is_empty() {
            return;
        }
        if self.bom_matched.is_some() {
            match self.skip_bom(rest) {
                Some(after) => rest = after,
                None => return,
            }
        }
        if self.lines.continues_line_end(rest) {
            rest = &rest[1..];
        }
        while let Some(end) = self.lines.next_line_end(rest) {
            let line = &rest[..end.content];
            rest = &rest[end.next..];
            if self.whole_event(line, &mut rest, &mut on_event) {
                continue;
            }
            if !self.whole_field_line(line) {
                self.line_bytes(line);
            }
            if self.end_line() {
                if let Some(event) = self.dispatchable() {
                    on_event(event);
                }
                self.reset_event();
            }
        }
        // Usually nothing: chunks mostly end with an event.
        if !rest.is_empty() {
            self.line_bytes(rest);
        }
    }

    /// End of stream: an event without its terminating blank line is discarded (per spec).
    ///
    /// The decoder is then ready for a new stream (a BOM is skipped again at its start); the
    /// [`oversized_events`](Self::oversized_events) count is kept.
    pub fn finish(&mut self) {
        self.reset_event();
        self.line = Line::Start;
        self.name_len = 0;
        self.lines = LineFramer::default();
        self.bom_matched = Some(0);
    }

    /// Events skipped because they exceeded the size cap, since the decoder was made.
    pub fn oversized_events(&self) -> u64 {
        self.oversized
    }

    /// The size cap this decoder was made with.
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// The bytes the decoder's buffers have allocated, for checking the memory bound: at most
    /// about twice the cap between events (data buffer and decode scratch, each clamped to the
    /// cap), usually at most the size of the largest event seen.
    pub fn buffered_capacity(&self) -> usize {
        self.data.capacity()
            + self.event.capacity()
            + self.id.capacity()
            + self.id_line.capacity()
            + self.scratch.capacity()
    }

    // --- stream level ---

    /// Matches the BOM at the very start of the stream, across chunks. Returns what follows
    /// it, or `None` if the whole chunk is (so far) a prefix of the BOM.
    fn skip_bom<'c>(&mut self, chunk: &'c [u8]) -> Option<&'c [u8]> {
        let before = usize::from(self.bom_matched.unwrap_or(0));
        let mut matched = before;
        let mut used = 0;
        while matched < BOM.len() && used < chunk.len() && chunk[used] == BOM[matched] {
            matched += 1;
            used += 1;
        }
        if matched == BOM.len() {
            self.bom_matched = None;
            return Some(&chunk[used..]);
        }
        if used == chunk.len() {
            self.bom_matched = Some(matched as u8);
            return None;
        }
        // Not a BOM after all: what was held back is ordinary content (never CR or LF).
        self.bom_matched = None;
        self.line_bytes(&BOM[..matched]);
        Some(&chunk[used..])
    }

    /// Fast path for the events that make up almost every stream: one whole `data:` line
    /// (`line`) and the blank line right after it (at the start of `rest`), in one chunk,
    /// with nothing of the event buffered before. The event is what the general path would
    /// dispatch, handed out from the chunk itself rather than copied; `rest` is moved past
    /// the blank line. Returns `false`, having changed nothing, for anything else (an event
    /// over the cap or with invalid UTF-8 included).
    fn whole_event<'c>(
        &mut self,
        line: &'c [u8],
        rest: &mut &'c [u8],
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) -> bool {
        let fresh = matches!(self.line, Line::Start)
            && !self.skipping
            && self.data.is_empty()
            && self.event.is_empty()
            && !self.has_id
            && self.id_line.is_empty()
            && self.retry.is_none();
        if !fresh || !matches!(rest.first(), Some(b'\r' | b'\n')) {
            return false;
        }
        let Some(value) = line.strip_prefix(b"data:") else {
            return false;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // Buffered, the value and its `\n` would have to fit the cap.
        if value.len() >= self.max_event_bytes {
            return false;
        }
        // Every event's data is validated: vectorised, since the error's details are not used.
        let Ok(data) = simdutf8::basic::from_utf8(value) else {
            return false;
        };
        // `rest` starts with a line end, and the line before it ended: a blank line.
        let Some(blank) = self.lines.next_line_end(rest) else {
            return false;
        };
        debug_assert!(blank.blank);
        *rest = &rest[blank.next..];
        on_event(SseEvent {
            event: None,
            data,
            id: None,
            retry: None,
        });
        true
    }

    /// Fast path for the lines that make up almost every stream: a whole `data:` or
    /// `event:` line in one chunk. Does what `line_bytes` would, without routing the field
    /// name byte by byte; returns `false` to leave any other line to `line_bytes`.
    fn whole_field_line(&mut self, line: &[u8]) -> bool {
        if !matches!(self.line, Line::Start) || self.skipping {
            return false;
        }
        let (field, value) = if let Some(value) = line.strip_prefix(b"data:") {
            (Field::Data, value)
        } else if let Some(value) = line.strip_prefix(b"event:") {
            (Field::Event, value)
        } else {
            return false;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        self.begin_value(field);
        self.line = Line::Value(field);
        self.value_bytes(field, value);
        true
    }

    /// Part of the current line, without CR or LF.
    fn line_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.line {
                Line::Start => {
                    self.line = if bytes[0] == b':' || self.skipping {
                        Line::Ignore
                    } else {
                        Line::Name
                    };
                }
                Line::Name => {
                    let colon = memchr(b':', bytes);
                    let part = &bytes[..colon.unwrap_or(bytes.len())];
                    let len = usize::from(self.name_len);
                    if len + part.len() > self.name.len() {
                        self.line = Line::Ignore;
                        return;
                    }
                    self.name[len..len + part.len()].copy_from_slice(part);
                    self.name_len += part.len() as u8;
                    let name = &self.name[..usize::from(self.name_len)];
                    match colon {
                        None if Field::is_prefix(name) => return,
                        None => {
                            self.line = Line::Ignore;
                            return;
                        }
                        Some(at) => {
                            self.line = match Field::named(name) {
                                Some(field) => {
                                    self.begin_value(field);
                                    Line::ValueStart(field)
                                }
                                None => Line::Ignore,
                            };
                            bytes = &bytes[at + 1..];
                        }
                    }
                }
                Line::ValueStart(field) => {
                    if bytes[0] == b' ' {
                        bytes = &bytes[1..];
                    }
                    self.line = Line::Value(field);
                }
                Line::Value(field) => {
                    self.value_bytes(field, bytes);
                    return;
                }
                Line::Ignore => return,
            }
        }
    }

    /// The current line ended. Returns whether it was a blank line (which ends the event).
    fn end_line(&mut self) -> bool {
        match self.line {
            Line::Start => return true,
            Line::Ignore => {}
            Line::Name => {
                // A line without a colon: the whole line is the field name, the value empty.
                if let Some(field) = Field::named(&self.name[..usize::from(self.name_len)]) {
                    self.begin_value(field);
                    self.end_value(field);
                }
            }
            Line::ValueStart(field) | Line::Value(field) => self.end_value(field),
        }
        // Also after `give_up` above: the next line starts afresh (and is skipped if need be).
        self.line = Line::Start;
        self.name_len = 0;
        false
    }

    // --- fields ---

    fn begin_value(&mut self, field: Field) {
        match field {
            Field::Event => self.event.clear(),
            Field::Data => {}
            Field::Id => {
                self.id_line.clear();
                self.id_line_has_nul = false;
            }
            Field::Retry => {
                self.retry_line = Some(0);
                self.retry_line_digits = false;
            }
        }
    }

    fn value_bytes(&mut self, field: Field, bytes: &[u8]) {
        match field {
            Field::Retry => {
                for &byte in bytes {
                    self.retry_line = match (self.retry_line, byte) {
                        (Some(n), b'0'..=b'9') => {
                            Some(n.saturating_mul(10).saturating_add(u64::from(byte - b'0')))
                        }
                        _ => None,
                    };
                }
                self.retry_line_digits = true;
            }
            Field::Id if self.id_line_has_nul => {}
            Field::Id => match memchr(0, bytes) {
                None => self.append(field, bytes),
                Some(nul) => {
                    // This id will be ignored: its bytes need not be kept. Those before the NUL
                    // still count, so that the cap is crossed or not whatever the chunking.
                    self.append(field, &bytes[..nul]);
                    if !self.skipping {
                        self.id_line_has_nul = true;
                        self.id_line.clear();
                    }
                }
            },
            Field::Event | Field::Data => self.append(field, bytes),
        }
    }

    /// Buffers value bytes of `field`, or gives up on the event if they do not fit.
    fn append(&mut self, field: Field, bytes: &[u8]) {
        if !self.fits(bytes.len()) {
            self.give_up();
            return;
        }
        let buffer = match field {
            Field::Id => &mut self.id_line,
            Field::Event => &mut self.event,
            Field::Data | Field::Retry => &mut self.data, // (retry values are never buffered)
        };
        extend_clamped(buffer, bytes, self.max_event_bytes);
    }

    fn end_value(&mut self, field: Field) {
        match field {
            Field::Event => {}
            Field::Data => self.append(field, b"\n"),
            Field::Id => {
                if !self.id_line_has_nul {
                    mem::swap(&mut self.id, &mut self.id_line);
                    self.has_id = true;
                }
                self.id_line.clear();
            }
            Field::Retry => {
                if let (Some(retry), true) = (self.retry_line, self.retry_line_digits) {
                    self.retry = Some(retry);
                }
            }
        }
    }

    /// Whether `more` bytes can still be buffered for the current event.
    fn fits(&self, more: usize) -> bool {
        let held = self.data.len() + self.event.len() + self.id.len() + self.id_line.len();
        held.saturating_add(more) <= self.max_event_bytes
    }

    /// The current event is over the cap: drop it and skip to its blank line.
    fn give_up(&mut self) {
        self.oversized += 1;
        self.reset_event();
        self.skipping = true;
        self.line = Line::Ignore;
    }

    // --- events ---

    /// At a blank line: the event to dispatch, if any (its buffers are reset afterwards by
    /// `reset_event`).
    fn dispatchable(&mut self) -> Option<SseEvent<'_>> {
        if self.skipping || self.data.is_empty() {
            return None;
        }
        let data = &self.data[..self.data.len() - 1]; // without the last `\n`
        let id = if self.has_id { &self.id[..] } else { &[][..] };
        if let (Ok(data), Ok(event), Ok(id)) = (
            simdutf8::basic::from_utf8(data),
            utf8_or_empty(&self.event),
            utf8_or_empty(id),
        ) {
            return Some(self.event_of(data, event, id));
        }
        // Invalid UTF-8 somewhere: decode with replacement into the reused scratch buffer.
        let scratch = &mut self.scratch;
        scratch.clear();
        push_lossy(scratch, data);
        let data_end = scratch.len();
        push_lossy(scratch, &self.event);
        let event_end = scratch.len();
        push_lossy(scratch, id);
        let scratch = &self.scratch;
        Some(SseEvent {
            event: Some(&scratch[data_end..event_end]).filter(|event| !event.is_empty()),
            data: &scratch[..data_end],
            id: self.has_id.then_some(&scratch[event_end..]),
            retry: self.retry,
        })
    }

    fn event_of<'s>(&self, data: &'s str, event: &'s str, id: &'s str) -> SseEvent<'s> {
        SseEvent {
            event: Some(event).filter(|event| !event.is_empty()),
            data,
            id: self.has_id.then_some(id),
            retry: self.retry,
        }
    }

    /// Forgets the current event, keeping the buffers (unless they grew abnormally large).
    fn reset_event(&mut self) {
        self.skipping = false;
        self.data.clear();
        self.event.clear();
        self.id.clear();
        self.id_line.clear();
        self.has_id = false;
        self.id_line_has_nul = false;
        self.retry = None;
        self.retry_line = None;
        self.scratch.clear();
        for buffer in [&mut self.event, &mut self.id, &mut self.id_line] {
            if buffer.capacity() > KEEP_SMALL_BUFFER {
                *buffer = Vec::new();
            }
        }
        if self.scratch.capacity() > self.max_event_bytes.max(KEEP_SMALL_BUFFER) {
            self.scratch = String::new();
        }
    }
}

// === impl LineFramer ===

/// The line framing of an event stream, shared by the decoder and by filters that pass a
/// stream through ([`UsageChunkFilter`](crate::genai::UsageChunkFilter)): lines end with
/// CRLF, LF or CR, and a CRLF may be split across chunks. It keeps two flags, never bytes.
///
/// For each chunk: call [`continues_line_end`](Self::continues_line_end) first, then
/// [`next_line_end`](Self::next_line_end) on what follows each line end until it returns
/// `None` (the rest is the start of a line that goes on in the next chunk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LineFramer {
    /// The last line end was a CR that ended a chunk: an LF starting the next chunk belongs
    /// to the same line end.
    pending_cr: bool,
    /// Bytes of the current line have been seen in an earlier piece (so its end is not a
    /// blank line).
    in_line: bool,
}

/// Where a line ends, as offsets into the bytes given to [`LineFramer::next_line_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineEnd {
    /// Where the line's content (in these bytes) ends: its terminator starts here.
    pub(crate) content: usize,
    /// Just past the terminator.
    pub(crate) next: usize,
    /// The line is empty: in an event stream, the end of an event.
    pub(crate) blank: bool,
}

impl LineFramer {
    /// Whether `chunk` starts with the LF of a CRLF whose CR ended the previous chunk: that
    /// byte belongs to the line end already reported, and the caller skips it. Call once at
    /// the start of each non-empty chunk.
    pub(crate) fn continues_line_end(&mut self, chunk: &[u8]) -> bool {
        if chunk.is_empty() {
            return false;
        }
        mem::take(&mut self.pending_cr) && chunk[0] == b'\n'
    }

    /// The first line end in `bytes`, which must follow a line end or the start of a chunk.
    /// `None` when there is none: `bytes` are (part of) a line that goes on.
    // Inlined: called for every line and blank line, and small but for the search.
    #[inline(always)]
    pub(crate) fn next_line_end(&mut self, bytes: &[u8]) -> Option<LineEnd> {
        // A line end right here (the blank line after a line, or an empty piece) is told
        // without a search.
        let content = match bytes.first() {
            None => return None,
            Some(b'\r' | b'\n') => 0,
            Some(_) => {
                let Some(content) = find_line_end(bytes) else {
                    self.in_line = true;
                    return None;
                };
                content
            }
        };
        let next = if bytes[content] == b'\r' {
            match bytes.get(content + 1) {
                Some(b'\n') => content + 2,
                Some(_) => content + 1,
                None => {
                    self.pending_cr = true;
                    content + 1
                }
            }
        } else {
            content + 1
        };
        let blank = content == 0 && !self.in_line;
        self.in_line = false;
        Some(LineEnd {
            content,
            next,
            blank,
        })
    }

    /// The last line end was a CR at the very end of the bytes seen so far.
    pub(crate) fn pending_cr(&self) -> bool {
        self.pending_cr
    }

    /// Whether the next bytes start a line afresh: no line under way, no CR waiting for its
    /// LF. Bytes framed from here frame as they would at the start of a stream.
    pub(crate) fn at_line_start(&self) -> bool {
        !self.pending_cr && !self.in_line
    }
}

/// memchr's AVX2 search for CR and LF, where the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
static CR_OR_LF: std::sync::LazyLock<Option<memchr::arch::x86_64::avx2::memchr::Two>> =
    std::sync::LazyLock::new(|| memchr::arch::x86_64::avx2::memchr::Two::new(b'\r', b'\n'));

/// The first CR or LF in `bytes`. `memchr2` reaches the AVX2 search through a function
/// pointer and a second layer of dispatch, about a fifth of its cost on a line of a few
/// hundred bytes (one search per event, in the decoder and in the usage filter); the search
/// is called directly where the CPU has AVX2.
#[inline(always)]
pub(crate) fn find_line_end(bytes: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(search) = &*CR_OR_LF {
        return search.find(bytes);
    }
    memchr2(b'\r', b'\n', bytes)
}

/// Appends to a buffer whose length stays within `cap`, growing it by doubling (from
/// [`MIN_BUFFER`]) but never beyond `cap`.
fn extend_clamped(buffer: &mut Vec<u8>, bytes: &[u8], cap: usize) {
    let needed = buffer.len() + bytes.len();
    if needed > buffer.capacity() {
        let target = needed
            .max(buffer.capacity() * 2)
            .max(MIN_BUFFER)
            .min(cap)
            .max(needed);
        buffer.reserve_exact(target - buffer.len());
    }
    buffer.extend_from_slice(bytes);
}

/// `bytes` as UTF-8, the usual empty value (no event type, no id) without a check.
fn utf8_or_empty(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if bytes.is_empty() {
        Ok("")
    } else {
        std::str::from_utf8(bytes)
    }
}

/// Appends `bytes` decoded as UTF-8, each maximal invalid subsequence replaced with U+FFFD (as
/// `String::from_utf8_lossy` and the WHATWG UTF-8 decoder do).
fn push_lossy(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// Whether a `Content-Type` value is `text/event-stream`: the media type compared without
/// regard to case, parameters (`; charset=utf-8`) and surrounding spaces ignored.
///
/// ```
/// use llmtrace::genai::sse::is_event_stream;
///
/// assert!(is_event_stream("text/event-stream"));
/// assert!(is_event_stream(" Text/Event-Stream; charset=utf-8"));
/// assert!(!is_event_stream("application/json"));
/// assert!(!is_event_stream("text/event-streaming"));
/// ```
pub fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event, data, id, retry) of each event.
    type Owned = (Option<String>, String, Option<String>, Option<u64>);

    fn decode_chunks(decoder: &mut SseDecoder, chunks: &[&[u8]]) -> Vec<Owned> {
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk, |e| {
                out.push((
                    e.event.map(str::to_owned),
                    e.data.to_owned(),
                    e.id.map(str::to_owned),
                    e.retry,
                ))
            });
        }
        decoder.finish();
        out
    }

    fn data_of(events: &[Owned]) -> Vec<&str> {
        events.iter().map(|e| e.1.as_str()).collect()
    }

    #[test]
    fn bom_split_byte_by_byte_is_skipped() {
        let mut decoder = SseDecoder::default();
        let events = decode_chunks(
            &mut decoder,
            &[b"\xEF", b"\xBB", b"\xBF", b"data", b": x\n", b"\n"],
        );
        assert_eq!(data_of(&events), ["x"]);
    }

    #[test]
    fn partial_bom_is_content() {
        // EF BB then 'd': the held-back bytes start the first line's field name, so the line
        // is an unknown field; the next event is fine.
        let mut decoder = SseDecoder::default();
        let events = decode_chunks(&mut decoder, &[b"\xEF\xBB", b"data: x\n\ndata: y\n\n"]);
        assert_eq!(data_of(&events), ["y"]);
        // EF then a line end: the replayed byte is an unknown field name.
        let events = decode_chunks(&mut decoder, &[b"\xEF", b"\ndata: z\n\n"]);
        assert_eq!(data_of(&events), ["z"]);
        assert_eq!(decoder.bom_matched, Some(0), "finish re-arms the BOM check");
    }

    #[test]
    fn bom_only_once() {
        let mut decoder = SseDecoder::default();
        let events = decode_chunks(&mut decoder, &[b"\xEF\xBB\xBF", b"\xEF\xBB\xBFdata: x\n\n"]);
        assert!(events.is_empty());
    }

    /// Splits a stream cut into `chunks` into `(line, blank)` pairs with [`LineFramer`].
    fn frame(chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut framer = LineFramer::default();
        let (mut lines, mut line) = (Vec::new(), Vec::new());
        for chunk in chunks {
            let mut rest = *chunk;
            if framer.continues_line_end(rest) {
                rest = &rest[1..];
            }
            while let Some(end) = framer.next_line_end(rest) {
                line.extend_from_slice(&rest[..end.content]);
                lines.push((mem::take(&mut line), end.blank));
                rest = &rest[end.next..];
            }
            line.extend_from_slice(rest);
        }
        lines
    }

    #[test]
    fn line_framing_is_the_same_however_the_stream_is_cut() {
        let stream: &[u8] = b"data: a\r\n\r\nb\rc\n\n\r\rdata:\r\n\n";
        let want: Vec<(Vec<u8>, bool)> = [
            (&b"data: a"[..], false),
            (b"", true),
            (b"b", false),
            (b"c", false),
            (b"", true),
            (b"", true),
            (b"", true),
            (b"data:", false),
            (b"", true),
        ]
        .iter()
        .map(|(line, blank)| (line.to_vec(), *blank))
        .collect();
        assert_eq!(frame(&[stream]), want);
        for at in 0..=stream.len() {
            assert_eq!(
                frame(&[&stream[..at], &stream[at..]]),
                want,
                "split at {at}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frame(&bytes), want);
    }

    #[test]
    fn a_pending_cr_survives_empty_chunks() {
        let mut framer = LineFramer::default();
        let end = framer.next_line_end(b"x\r").unwrap();
        assert_eq!((end.content, end.next, end.blank), (1, 2, false));
        assert!(framer.pending_cr());
        assert!(!framer.continues_line_end(b""));
        assert!(framer.pending_cr());
        assert!(framer.continues_line_end(b"\n"));
        assert!(!framer.pending_cr());
        assert!(
            !framer.continues_line_end(b"\n"),
            "only one LF completes the CR"
        );
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_end() {
        let mut decoder = SseDecoder::default();
        let mut out = Vec::new();
        decoder.feed(b"data: a\r", |e| out.push(e.data.to_owned()));
        assert!(decoder.lines.pending_cr);
        // An empty chunk does not forget the pending CR.
        decoder.feed(b"", |e| out.push(e.data.to_owned()));
        assert!(decoder.lines.pending_cr);
        decoder.feed(b"\n", |e| out.push(e.data.to_owned()));
        assert!(out.is_empty(), "CR + LF across chunks is one line end");
        decoder.feed(b"\r", |e| out.push(e.data.to_owned()));
        assert_eq!(out, ["a"]);
    }

    #[test]
    fn name_longer_than_known_fields_is_ignored_without_buffering() {
        let mut decoder = SseDecoder::new(16);
        let mut long = b"x".repeat(1000);
        long.extend_from_slice(b": value\ndata: ok\n\n");
        assert_eq!(data_of(&decode_chunks(&mut decoder, &[&long])), ["ok"]);
        assert_eq!(decoder.oversized_events(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// The direct AVX2 search for line ends finds the first CR or LF, as a plain scan
        /// does, at every length (the short ones take its SSE2 and scalar paths).
        #[test]
        fn line_ends_are_found_as_a_plain_scan_finds_them(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'\r', b'\n', b':', 0xE9]),
                0..160,
            ),
            at in 0usize..160,
        ) {
            let bytes = [&vec![b'x'; at][..], &bytes].concat();
            for end in [bytes.len(), bytes.len() / 2, bytes.len().saturating_sub(31)] {
                let part = &bytes[..end];
                let want = part.iter().position(|&b| b == b'\r' || b == b'\n');
                proptest::prop_assert_eq!(find_line_end(part), want);
            }
        }
    }

    #[test]
    fn extend_clamped_never_passes_the_cap() {
        let mut buffer = Vec::new();
        for _ in 0..100 {
            extend_clamped(&mut buffer, &[b'x'; 7], 700);
            assert!(buffer.capacity() <= 700);
        }
        assert_eq!(buffer.len(), 700);
    }

    #[test]
    fn push_lossy_matches_std() {
        let cases: [&[u8]; 6] = [
            b"plain",
            b"\xFF",
            b"a\xE2\x82b",
            b"\xF0\x9F\x99",
            b"\xC0\x80",
            b"\xED\xA0\x80x",
        ];
        for bytes in cases {
            let mut out = String::new();
            push_lossy(&mut out, bytes);
            assert_eq!(out, String::from_utf8_lossy(bytes));
        }
    }

    /// Events handed out from the chunk (a `data:` line and its blank line in one chunk)
    /// are those the general path gives, byte by byte, whatever comes before and around.
    #[test]
    fn whole_events_from_the_chunk_are_those_of_the_general_path() {
        let streams: [&[u8]; 10] = [
            b"data: {\"a\":1}\n\ndata:x\r\n\r\ndata:  two spaces\r\rdata: [DONE]\n\n",
            b"event: e\ndata: typed\n\ndata: after\n\n",
            b"id: 7\ndata: with id\n\nretry: 5\ndata: with retry\n\ndata: plain\n\n",
            b"data: first\ndata: second\n\ndata: one\n\n",
            b": comment\ndata: after comment\n\n",
            b"data: bad \xff utf-8\n\ndata: fine\n\n",
            b"data: 123456789\n\ndata: 1234567890\n\ndata: ok\n\n",
            b"data\n\ndata:\n\ndata: \n\n",
            b"data: x\n\r\n\ndata: y\r\n\n",
            b"\xEF\xBB\xBFdata: bom\n\n",
        ];
        for stream in streams {
            let mut whole = SseDecoder::new(10);
            let want_whole = decode_chunks(&mut whole, &[stream]);
            let mut split = SseDecoder::new(10);
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            let want_split = decode_chunks(&mut split, &bytes);
            assert_eq!(
                want_whole,
                want_split,
                "{}",
                String::from_utf8_lossy(stream)
            );
            assert_eq!(whole.oversized_events(), split.oversized_events());
        }
    }

    #[test]
    fn steady_state_does_not_grow_buffers() {
        let mut decoder = SseDecoder::default();
        let event =
            b"event: delta\nid: 7\ndata: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
        // The id buffers swap at each `id` line: two events allocate both.
        decoder.feed(event, |_| {});
        decoder.feed(event, |_| {});
        let capacity = decoder.buffered_capacity();
        for _ in 0..1000 {
            decoder.feed(event, |_| {});
        }
        assert_eq!(decoder.buffered_capacity(), capacity);
    }

    #[test]
    fn large_event_type_is_released_after_the_event() {
        let mut decoder = SseDecoder::default();
        let mut stream = b"event: ".to_vec();
        stream.extend(std::iter::repeat_n(b'e', 100_000));
        stream.extend_from_slice(b"\ndata: x\n\n");
        let mut types = Vec::new();
        decoder.feed(&stream, |e| types.push(e.event.map(str::len)));
        assert_eq!(types, [Some(100_000)]);
        assert!(decoder.buffered_capacity() < 4 * KEEP_SMALL_BUFFER);
    }
}
