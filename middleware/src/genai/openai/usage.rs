//! Reported usage without side effects: ask an OpenAI stream for its usage chunk, and take
//! that chunk out of what the client receives.
//!
//! A streamed OpenAI chat/completions request reports token usage only when it asks for it
//! (`stream_options.include_usage`). A gateway that wants reported usage for every stream
//! adds the option upstream ([`request_with_usage`]) and removes the extra usage-only chunk
//! (`"choices": []`) from the response ([`UsageChunkFilter`]), so the client receives the
//! bytes it would have received without the gateway, while the observer sees the usage.

use std::mem;
use std::ops::Range;
use std::sync::LazyLock;

use bytes::{Buf, Bytes};
use memchr::memmem::Finder;

use super::super::endpoint::Endpoint;
use super::super::json::{self, after_colon, trim_ws};
use super::super::request::RequestInfo;
use super::super::sse::{LineFramer, find_line_end};

/// Why [`request_with_usage`] left a request body as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UsageSkip {
    /// Not an OpenAI chat or completions request.
    NotApplicable,
    /// `stream` is absent or not exactly `true`. Such a body is never rewritten, so it is
    /// not validated either: it is `NotStreamed` by its top-level members alone, whether or
    /// not the rest of it is valid JSON.
    NotStreamed,
    /// `stream_options.include_usage` is already `true`.
    AlreadyAsked,
    /// The body is not valid JSON (RFC 8259, UTF-8), or its top-level members cannot be
    /// found.
    NotJson,
    /// The body is JSON but not an object.
    NotObject,
    /// `stream`, `stream_options` or `include_usage` appears more than once: providers differ
    /// on which one wins.
    Ambiguous,
    /// `stream_options` is neither an object nor `null`, or its `include_usage` is neither a
    /// boolean nor `null`.
    UnsupportedStreamOptions,
}

impl UsageSkip {
    /// The reason in snake case (`not_streamed`, `already_asked`, ...), for a span attribute
    /// such as [`USAGE_INJECTION`](crate::semconv::llmtrace::USAGE_INJECTION).
    pub fn reason(self) -> &'static str {
        match self {
            UsageSkip::NotApplicable => "not_applicable",
            UsageSkip::NotStreamed => "not_streamed",
            UsageSkip::AlreadyAsked => "already_asked",
            UsageSkip::NotJson => "not_json",
            UsageSkip::NotObject => "not_object",
            UsageSkip::Ambiguous => "ambiguous",
            UsageSkip::UnsupportedStreamOptions => "unsupported_stream_options",
        }
    }

    /// `skipped:` and the [`reason`](Self::reason), the gateway's value of
    /// [`USAGE_INJECTION`](crate::semconv::llmtrace::USAGE_INJECTION) for a body left as is.
    ///
    /// ```
    /// use llmtrace::genai::UsageSkip;
    ///
    /// assert_eq!(UsageSkip::NotStreamed.outcome(), "skipped:not_streamed");
    /// ```
    pub fn outcome(self) -> &'static str {
        match self {
            UsageSkip::NotApplicable => "skipped:not_applicable",
            UsageSkip::NotStreamed => "skipped:not_streamed",
            UsageSkip::AlreadyAsked => "skipped:already_asked",
            UsageSkip::NotJson => "skipped:not_json",
            UsageSkip::NotObject => "skipped:not_object",
            UsageSkip::Ambiguous => "skipped:ambiguous",
            UsageSkip::UnsupportedStreamOptions => "skipped:unsupported_stream_options",
        }
    }
}

/// The request body with `stream_options.include_usage: true` spliced in, when it is a
/// streamed OpenAI chat or completions request that did not ask for usage; otherwise why not
/// (send the body as it is).
///
/// The body is never re-serialized: every byte the client sent stays where it was (whitespace,
/// key order, number spelling, escapes, duplicate keys), and the only change is one of
///
/// - `,"stream_options":{"include_usage":true}` inserted after the last top-level member;
/// - `"include_usage":true` (with a `,` when needed) inserted after the `{` of an existing
///   `stream_options` object;
/// - an `include_usage` of `false` or `null` replaced by `true`;
/// - a `stream_options` of `null` replaced by `{"include_usage":true}`.
///
/// ```
/// use llmtrace::genai::{Endpoint, UsageSkip, request_with_usage};
///
/// let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
/// let body = br#"{"model":"gpt-4o", "stream":true, "n":1.0e0}"#;
/// let rewritten = request_with_usage(&endpoint, body).unwrap();
/// assert_eq!(
///     rewritten,
///     br#"{"model":"gpt-4o", "stream":true, "n":1.0e0,"stream_options":{"include_usage":true}}"#
/// );
/// assert_eq!(request_with_usage(&endpoint, &rewritten), Err(UsageSkip::AlreadyAsked));
/// assert_eq!(UsageSkip::AlreadyAsked.reason(), "already_asked");
/// ```
pub fn request_with_usage(endpoint: &Endpoint, body: &[u8]) -> Result<Vec<u8>, UsageSkip> {
    if !endpoint.format.accepts_stream_usage() {
        return Err(UsageSkip::NotApplicable);
    }
    // The top-level members first: most requests do not stream, and a body that is not
    // rewritten needs no validation (a pass over every byte of the prompt). Every other
    // answer comes from a validated body.
    let splice = match usage_splice(body) {
        Err(UsageSkip::NotStreamed) => return Err(UsageSkip::NotStreamed),
        _ if !json::is_valid(body) => return Err(UsageSkip::NotJson),
        splice => splice?,
    };
    let mut out = Vec::with_capacity(body.len() + splice.insert.len());
    out.extend_from_slice(&body[..splice.replace.start]);
    out.extend_from_slice(splice.insert);
    out.extend_from_slice(&body[splice.replace.end..]);
    Ok(out)
}

/// [`request_with_usage`] for a body `read` is the [`RequestInfo`] of: a body the read
/// knows to name `stream` at most once at its top level, and not as `true`, is
/// [`UsageSkip::NotStreamed`] at once, without the second walk over its members (over the
/// whole prompt: 25k instructions for a 100 KB one, callgrind). Every other body goes to
/// [`request_with_usage`]; the answer is the same either way (a proptest over the request
/// read's bodies, `genai::request`'s tests).
///
/// ```
/// use llmtrace::genai::{Endpoint, RequestInfo, UsageSkip, request_with_usage_read};
///
/// let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
/// let read = RequestInfo::parse(&endpoint, body, false);
/// assert_eq!(read.stream_members, Some(0));
/// assert_eq!(request_with_usage_read(&endpoint, body, &read), Err(UsageSkip::NotStreamed));
/// // Named twice: ambiguous, as `request_with_usage` says.
/// let twice = br#"{"stream":false,"stream":true}"#;
/// let read = RequestInfo::parse(&endpoint, twice, false);
/// assert_eq!(request_with_usage_read(&endpoint, twice, &read), Err(UsageSkip::Ambiguous));
/// ```
pub fn request_with_usage_read(
    endpoint: &Endpoint,
    body: &[u8],
    read: &RequestInfo,
) -> Result<Vec<u8>, UsageSkip> {
    let known_not_streamed =
        read.parse_error.is_none() && matches!(read.stream_members, Some(0 | 1)) && !read.stream;
    if known_not_streamed && endpoint.format.accepts_stream_usage() {
        return Err(UsageSkip::NotStreamed);
    }
    request_with_usage(endpoint, body)
}

/// Bytes to put in place of a range of the body (an empty range for an insertion).
struct Splice {
    replace: Range<usize>,
    insert: &'static [u8],
}

impl Splice {
    /// `member` inserted at `at` in an object, with the `,` that `member` carries at one end
    /// dropped when the object has no other members.
    fn member(at: usize, member: &'static [u8], has_members: bool) -> Splice {
        let insert = match (has_members, member) {
            (false, [b',', rest @ ..]) => rest,
            (false, [rest @ .., b',']) => rest,
            _ => member,
        };
        Splice {
            replace: at..at,
            insert,
        }
    }
}

/// A top-level member the splice depends on: the value of its first occurrence, and how many
/// times it occurs.
#[derive(Default)]
struct Seen {
    value: Option<Range<usize>>,
    count: usize,
}

impl Seen {
    fn saw(&mut self, value: Range<usize>) {
        self.value.get_or_insert(value);
        self.count += 1;
    }
}

/// Where `include_usage: true` goes, found from the top-level members alone: the answer holds
/// for a validated body, and on any other bytes it is some answer, never a panic.
fn usage_splice(body: &[u8]) -> Result<Splice, UsageSkip> {
    let open = json::skip_ws(body, 0);
    if body.get(open) != Some(&b'{') {
        return Err(UsageSkip::NotObject);
    }
    let (mut stream, mut options) = (Seen::default(), Seen::default());
    let object = json::members(body, open, |key, value| {
        if json::key_is(body, key.clone(), "stream") {
            stream.saw(value);
        } else if json::key_is(body, key, "stream_options") {
            options.saw(value);
        }
    })
    .ok_or(UsageSkip::NotJson)?;
    if stream.count > 1 {
        return Err(UsageSkip::Ambiguous);
    }
    if stream.value.is_none_or(|value| &body[value] != b"true") {
        return Err(UsageSkip::NotStreamed);
    }
    if options.count > 1 {
        return Err(UsageSkip::Ambiguous);
    }
    let Some(options) = options.value else {
        return Ok(Splice::member(
            object.after_last,
            b",\"stream_options\":{\"include_usage\":true}",
            object.has_members,
        ));
    };
    match &body[options.clone()] {
        b"null" => {
            return Ok(Splice {
                replace: options,
                insert: b"{\"include_usage\":true}",
            });
        }
        [b'{', ..] => {}
        _ => return Err(UsageSkip::UnsupportedStreamOptions),
    }
    let mut include = Seen::default();
    let inner = json::members(body, options.start, |key, value| {
        if json::key_is(body, key, "include_usage") {
            include.saw(value);
        }
    })
    .ok_or(UsageSkip::NotJson)?;
    if include.count > 1 {
        return Err(UsageSkip::Ambiguous);
    }
    let Some(include) = include.value else {
        return Ok(Splice::member(
            options.start + 1,
            b"\"include_usage\":true,",
            inner.has_members,
        ));
    };
    match &body[include.clone()] {
        b"true" => Err(UsageSkip::AlreadyAsked),
        b"false" | b"null" => Ok(Splice {
            replace: include,
            insert: b"true",
        }),
        _ => Err(UsageSkip::UnsupportedStreamOptions),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not yet known whether this event is a usage-only chunk: its bytes are held.
    Undecided,
    /// Not a usage-only chunk: bytes go through at once until the event ends.
    Pass,
}

/// Removes what asking for usage added to an OpenAI stream: the usage-only chunk
/// (`"choices": []` with a `usage` object), and the `,"usage":null` member the provider then
/// puts in every other chunk. Every other byte passes through unchanged.
///
/// An event's bytes are held only until it is clear it is not a usage chunk, which is as soon
/// as its `"choices":[` shows an element (a few hundred bytes into the event), or at its end.
/// Events larger than `max_held` are passed through undecided rather than held.
///
/// Two ways to feed it, with the same output for the same bytes however they are split:
/// [`push`](Self::push) and [`finish`](Self::finish) append to a `Vec`;
/// [`filter`](Self::filter) takes and returns [`Bytes`] (a proxy's body chunks), with no
/// allocation per chunk.
///
/// ```
/// use llmtrace::genai::UsageChunkFilter;
///
/// let mut filter = UsageChunkFilter::new(1 << 20);
/// let mut out = Vec::new();
/// filter.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n", &mut out);
/// filter.push(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n", &mut out);
/// filter.finish(&mut out);
/// assert_eq!(out, b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n");
/// ```
#[derive(Debug)]
pub struct UsageChunkFilter {
    state: State,
    held: Vec<u8>,
    max_held: usize,
    /// Where lines, and so events, end: the framing the SSE decoder uses.
    lines: LineFramer,
    /// The last event ended with a CR at the end of a chunk: an LF starting the next chunk
    /// still belongs to it (and goes where it went: out, or away when it was removed).
    blank_cr_pending: Option<bool>,
    removed: u64,
    /// Whether the last finished event was removed.
    last_removed: bool,
    /// Bytes withheld because they may be the start of `,"usage":null` (split across chunks).
    tail: Vec<u8>,
    /// Where [`filter`](Self::filter)'s output lies in the chunk (kept between calls for its
    /// capacity).
    parts: Vec<Range<usize>>,
}

/// The member a provider adds to every chunk once usage is asked for.
const NULL_USAGE: &[u8] = b",\"usage\":null";

// Built once: a searcher per call costs more than the search over a short SSE event.
static NULL_USAGE_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(NULL_USAGE));
static CHOICES: LazyLock<KeySearch> = LazyLock::new(|| KeySearch::new(b"\"choices\""));
static USAGE: LazyLock<KeySearch> = LazyLock::new(|| KeySearch::new(b"\"usage\""));

/// The search for a key such as `"usage"` in an SSE event of a few hundred bytes (searched in
/// every event): memchr's AVX2 pair search called directly where the CPU has AVX2, else its
/// general searcher. The general searcher reaches the same pair search through a layer of
/// dispatch that costs about as much again as the search itself on such short events
/// (~250 instructions against ~150 on a 300-byte chunk).
struct KeySearch {
    /// The key (what `pair` is told to search for, and what the tests check against).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    needle: &'static [u8],
    /// memchr's general searcher: for haystacks too short for the pair search, and CPUs
    /// without AVX2.
    general: Finder<'static>,
    /// memchr's AVX2 pair search, where the CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    pair: Option<memchr::arch::x86_64::avx2::packedpair::Finder>,
}

impl KeySearch {
    fn new(needle: &'static [u8]) -> Self {
        Self {
            needle,
            general: Finder::new(needle),
            #[cfg(target_arch = "x86_64")]
            pair: memchr::arch::x86_64::avx2::packedpair::Finder::new(needle),
        }
    }

    /// The first occurrence of the key in `haystack`.
    #[inline]
    fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(pair) = &self.pair {
            // The pair search takes haystacks from a minimum length (a few tens of bytes).
            if haystack.len() >= pair.min_haystack_len() {
                return pair.find(haystack, self.needle);
            }
        }
        self.general.find(haystack)
    }
}

impl UsageChunkFilter {
    /// A filter that holds at most `max_held` bytes of an undecided event.
    pub fn new(max_held: usize) -> Self {
        Self {
            state: State::Undecided,
            held: Vec::new(),
            max_held,
            lines: LineFramer::default(),
            blank_cr_pending: None,
            removed: 0,
            last_removed: false,
            tail: Vec::new(),
            parts: Vec::new(),
        }
    }

    /// Usage-only chunks removed so far.
    pub fn removed(&self) -> u64 {
        self.removed
    }

    /// Filters the next chunk, appending what the client should receive now to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.push_to(chunk, out);
    }

    /// End of stream: whatever is still held goes out.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.finish_to(out);
    }

    /// Filters the next chunk of a stream, and with `end_of_stream` ends the stream:
    /// [`push`](Self::push) (then [`finish`](Self::finish)) for a chunk held as [`Bytes`],
    /// returning what the client should receive now (the same bytes `push` and `finish`
    /// would append).
    ///
    /// Made of the chunk itself, without copying it or allocating, whenever possible: a chunk
    /// that loses nothing is returned as it is, one that loses its start (or everything) is
    /// the rest of it, and when `chunk` is the only handle to its buffer (as a chunk just
    /// read from an upstream is) the kept bytes are moved within that buffer. Otherwise (a
    /// shared or static buffer, or bytes held from earlier chunks) the output is a copy.
    /// An empty `chunk` with `end_of_stream` flushes what is held.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use llmtrace::genai::UsageChunkFilter;
    ///
    /// let mut filter = UsageChunkFilter::new(1 << 20);
    /// let content = Bytes::from(b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\n".to_vec());
    /// assert_eq!(filter.filter(content, false), &b"data: {\"choices\":[{\"delta\":{}}]}\n\n"[..]);
    /// let usage = Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n");
    /// assert!(filter.filter(usage, false).is_empty());
    /// let done = Bytes::from_static(b"data: [DONE]\n\n");
    /// assert_eq!(filter.filter(done.clone(), true), done);
    /// assert_eq!(filter.removed(), 1);
    /// ```
    pub fn filter(&mut self, chunk: Bytes, end_of_stream: bool) -> Bytes {
        let mut parts = mem::take(&mut self.parts);
        parts.clear();
        let mut out = Runs {
            chunk: &chunk,
            parts: &mut parts,
            copied: None,
        };
        if self.is_whole_event(&chunk) {
            self.settle_whole(&chunk, &mut out);
        } else {
            self.push_to(&chunk, &mut out);
        }
        if end_of_stream {
            self.finish_to(&mut out);
        }
        let copied = out.copied;
        self.parts = parts;
        match copied {
            Some(copied) => Bytes::from(copied),
            None => keep_parts(chunk, &self.parts),
        }
    }

    /// Whether `chunk` is one whole event that [`push_to`](Self::push_to) would settle
    /// where it lies, with [`settle_whole`](Self::settle_whole), leaving the framing as it
    /// was: nothing held or withheld, a line starting afresh, and the chunk one line (not
    /// empty) ended by LF LF or CR LF CR LF. That is how providers send almost every event;
    /// telling it takes one search for the first line end, instead of the general framing.
    /// (Not CR CR: a CR ending the chunk may be followed by an LF in the next one.)
    fn is_whole_event(&mut self, chunk: &[u8]) -> bool {
        let fresh = self.state == State::Undecided
            && self.held.is_empty()
            && self.tail.is_empty()
            && self.blank_cr_pending.is_none()
            && self.lines.at_line_start();
        if !fresh {
            return false;
        }
        let whole = match find_line_end(chunk) {
            Some(end) if end > 0 => matches!(&chunk[end..], b"\n\n" | b"\r\n\r\n"),
            _ => false,
        };
        if whole {
            // As `push_to` does at the start of each event it frames.
            self.last_removed = false;
        }
        whole
    }

    /// [`push`](Self::push) to any [`Out`].
    fn push_to<O: Out>(&mut self, chunk: &[u8], out: &mut O) {
        let mut rest = chunk;
        if rest.is_empty() {
            return;
        }
        // What this call writes when no event is held (almost always): one allocation
        // rather than a growth per piece of an event. Held bytes (rare, and up to
        // `max_held`) are not reserved for on every chunk.
        out.reserve(self.tail.len() + chunk.len());
        // An LF completing a CRLF from the previous chunk: it goes where its line went, and
        // the search for line ends starts after it.
        let mut scan_from = usize::from(self.lines.continues_line_end(rest));
        if let Some(removed) = self.blank_cr_pending.take() {
            if scan_from == 1 {
                if !removed {
                    out.put(&rest[..1]);
                }
                rest = &rest[1..];
                scan_from = 0;
            }
        }
        while !rest.is_empty() {
            // Find the end of this event (a blank line) within the chunk, if it is there.
            let (segment, event_ends) = match self.event_end(rest, scan_from) {
                Some(end) => (&rest[..end], true),
                None => (rest, false),
            };
            scan_from = 0;
            rest = &rest[segment.len()..];
            self.last_removed = false;
            match self.state {
                State::Pass => self.emit(segment, out, event_ends),
                // A whole event in this chunk, nothing held: settled where it lies (the
                // common case: providers send each event in one write).
                State::Undecided if event_ends && self.held.is_empty() => {
                    self.settle_whole(segment, out);
                }
                State::Undecided => {
                    self.held.extend_from_slice(segment);
                    self.decide(out, event_ends);
                }
            }
            if event_ends {
                if self.lines.pending_cr() && rest.is_empty() {
                    self.blank_cr_pending = Some(self.last_removed);
                }
                self.state = State::Undecided;
            }
        }
    }

    /// [`finish`](Self::finish) to any [`Out`].
    fn finish_to<O: Out>(&mut self, out: &mut O) {
        let held = mem::take(&mut self.held);
        self.emit(&held, out, true);
        self.state = State::Undecided;
    }

    /// A whole event in one chunk, nothing held: removed, or written out at once.
    ///
    /// Only an event whose first `"usage"` is followed by an object can be the usage-only
    /// chunk ([`verdict`] looks at that first occurrence), so one search for `"usage"`
    /// settles almost every event without looking for `"choices"`. The same search tells
    /// where `,"usage":null` may start: not before the first `"usage"`, which it contains.
    fn settle_whole<O: Out>(&mut self, event: &[u8], out: &mut O) {
        let first_usage = USAGE.find(event);
        if let Some(at) = first_usage {
            // What `verdict` decides for a whole event, its `"usage"` already found. The
            // provider's `,"usage":null` (in every other chunk) is told at once to be no
            // object.
            let after_key = &event[at + USAGE_KEY_LEN..];
            if !after_key.starts_with(b":null")
                && is_object_member(after_key)
                && matches!(choices(event), Choices::Empty)
            {
                self.removed += 1;
                self.last_removed = true;
                return;
            }
        }
        let from = first_usage.map_or(event.len(), |at| at.saturating_sub(1));
        match first_usage {
            Some(at) if self.tail.is_empty() => emit_whole_event(event, at, out),
            _ => self.emit_from(event, from, out, true),
        }
    }

    /// Writes `bytes` of a kept event without the `,"usage":null` members, withholding a
    /// possible start of one at the end until the next chunk shows whether it is one.
    fn emit<O: Out>(&mut self, bytes: &[u8], out: &mut O, event_ended: bool) {
        self.emit_from(bytes, 0, out, event_ended);
    }

    /// [`emit`](Self::emit), knowing that no `,"usage":null` starts in `bytes` before `from`.
    #[inline(always)]
    fn emit_from<O: Out>(&mut self, bytes: &[u8], from: usize, out: &mut O, event_ended: bool) {
        if self.tail.is_empty() {
            self.emit_joined(bytes, from, out, event_ended);
        } else {
            // One may start in the tail and end in `bytes`: searched from the start.
            let mut data = mem::take(&mut self.tail);
            data.extend_from_slice(bytes);
            self.emit_joined(&data, 0, out, event_ended);
        }
    }

    /// [`emit`](Self::emit) of the withheld tail and the new bytes, joined; no
    /// `,"usage":null` starts in `data` before `from`.
    fn emit_joined<O: Out>(&mut self, data: &[u8], from: usize, out: &mut O, event_ended: bool) {
        let mut rest = data;
        let mut from = from;
        while let Some(at) = find_null_usage(rest, from) {
            out.put(&rest[..at]);
            rest = &rest[at + NULL_USAGE.len()..];
            from = 0;
        }
        let keep = if event_ended {
            0
        } else {
            (1..NULL_USAGE.len())
                .rev()
                .find(|n| rest.ends_with(&NULL_USAGE[..*n]))
                .unwrap_or(0)
        };
        out.put(&rest[..rest.len() - keep]);
        self.tail.clear();
        if keep > 0 {
            self.tail.extend_from_slice(&rest[rest.len() - keep..]);
        }
    }

    /// Settles the held event if it can be settled.
    fn decide<O: Out>(&mut self, out: &mut O, event_ended: bool) {
        match verdict(&self.held, event_ended) {
            Verdict::Remove => {
                self.removed += 1;
                self.last_removed = true;
                self.held.clear();
            }
            Verdict::Pass => self.flush_and_pass(out, event_ended),
            Verdict::Wait if self.held.len() > self.max_held => {
                self.flush_and_pass(out, event_ended);
            }
            Verdict::Wait => {}
        }
    }

    fn flush_and_pass<O: Out>(&mut self, out: &mut O, event_ended: bool) {
        let held = mem::take(&mut self.held);
        self.emit(&held, out, event_ended);
        if !event_ended {
            self.state = State::Pass;
        }
    }

    /// The offset just past the blank line that ends the current event, if in `bytes`
    /// (searched from `from`, which is 0 or the LF that completes an earlier line end).
    fn event_end(&mut self, bytes: &[u8], from: usize) -> Option<usize> {
        let mut at = from;
        while let Some(end) = self.lines.next_line_end(&bytes[at..]) {
            at += end.next;
            if end.blank {
                return Some(at);
            }
        }
        None
    }
}

/// Where the filter writes what the client receives: a `Vec`, or [`Runs`].
trait Out {
    /// Room for `additional` more bytes, a hint.
    fn reserve(&mut self, additional: usize);
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }

    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The output of [`UsageChunkFilter::filter`] for one chunk: while it is all bytes of the
/// chunk itself, where they lie; once anything else is written (held bytes), a copy.
struct Runs<'a> {
    chunk: &'a [u8],
    /// The parts of `chunk` written so far, in order, adjacent ones joined.
    parts: &'a mut Vec<Range<usize>>,
    /// Everything written, once something that is not a part of `chunk` was.
    copied: Option<Vec<u8>>,
}

impl Runs<'_> {
    /// Bytes from elsewhere: from now on, everything is copied, the parts so far first.
    #[cold]
    fn copy(&mut self, bytes: &[u8]) {
        let mut copied = Vec::with_capacity(self.chunk.len() + bytes.len());
        for part in self.parts.iter() {
            copied.extend_from_slice(&self.chunk[part.clone()]);
        }
        copied.extend_from_slice(bytes);
        self.copied = Some(copied);
    }
}

impl Out for Runs<'_> {
    /// Nothing to reserve: parts are only noted.
    fn reserve(&mut self, _additional: usize) {}

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(copied) = &mut self.copied {
            copied.extend_from_slice(bytes);
            return;
        }
        // Where `bytes` start in the chunk: any slice within the chunk's memory is a part of
        // the chunk (the filter's own buffers are other allocations).
        let start = (bytes.as_ptr() as usize).wrapping_sub(self.chunk.as_ptr() as usize);
        if start > self.chunk.len() || bytes.len() > self.chunk.len() - start {
            return self.copy(bytes);
        }
        let end = start + bytes.len();
        match self.parts.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => self.parts.push(start..end),
        }
    }
}

/// `chunk` with only `parts` of it left (in order, not overlapping), as far as possible
/// without a copy or an allocation.
fn keep_parts(chunk: Bytes, parts: &[Range<usize>]) -> Bytes {
    match parts {
        [] => return Bytes::new(),
        // All of it, or its end: `advance` moves a pointer.
        [only] if only.end == chunk.len() => {
            let mut chunk = chunk;
            chunk.advance(only.start);
            return chunk;
        }
        _ => {}
    }
    // The chunk's own buffer when `chunk` is its only handle (as a chunk just read from an
    // upstream is), else a copy of it. The parts are moved to its end and what is before
    // them skipped: a `Bytes` made from a `Vec` whose length is its capacity (as this one,
    // unless the chunk had dropped its start) costs no allocation, and can drop its start
    // without one, but not its end.
    let mut buffer = Vec::from(chunk);
    let mut start = buffer.len();
    for part in parts.iter().rev() {
        start -= part.len();
        // The last part often ends the chunk: already where it goes.
        if part.start != start {
            buffer.copy_within(part.clone(), start);
        }
    }
    let mut kept = Bytes::from(buffer);
    kept.advance(start);
    kept
}

/// The length of `"usage"`.
const USAGE_KEY_LEN: usize = 7;

/// What [`UsageChunkFilter::emit`] writes for a whole `event` with nothing withheld before it,
/// whose first `"usage"` is at `first_usage`: the event without its `,"usage":null` members.
/// The first `"usage"` is usually the one such member (a provider's `,"usage":null` in each
/// chunk), told by the bytes around it rather than by a search; after it, the search runs
/// on what is left.
#[inline]
fn emit_whole_event<O: Out>(event: &[u8], first_usage: usize, out: &mut O) {
    let mut rest = event;
    // No `,"usage":null` starts before the comma in front of the first `"usage"`.
    let mut from = first_usage.saturating_sub(1);
    let after_key = first_usage + USAGE_KEY_LEN;
    if first_usage > 0 && event[from] == b',' && event[after_key..].starts_with(b":null") {
        out.put(&event[..from]);
        rest = &event[from + NULL_USAGE.len()..];
        from = 0;
    }
    while let Some(at) = find_null_usage(rest, from) {
        out.put(&rest[..at]);
        rest = &rest[at + NULL_USAGE.len()..];
        from = 0;
    }
    out.put(rest);
}

/// The first `,"usage":null` in `bytes` at or after `from`.
#[inline]
fn find_null_usage(bytes: &[u8], from: usize) -> Option<usize> {
    let haystack = bytes.get(from..)?;
    if haystack.len() < NULL_USAGE.len() {
        return None;
    }
    // `from` is often where the first `"usage"` showed one to start.
    if haystack.starts_with(NULL_USAGE) {
        return Some(from);
    }
    let found = if haystack.len() <= SHORT_HAYSTACK {
        find_null_usage_short(haystack)
    } else {
        NULL_USAGE_FINDER.find(haystack)
    };
    found.map(|at| from + at)
}

/// Up to this length, [`find_null_usage`] searches with [`find_null_usage_short`]: what
/// follows the member just removed (say `,"obfuscation":"…"}` and the blank line) is short,
/// and the searcher's setup costs more than this search over it.
const SHORT_HAYSTACK: usize = 96;

/// How far [`find_null_usage_short`] moves on when the byte under the end of
/// `,"usage":null` is the index: from that byte's last place in it (the final `l` aside) to
/// its end, or all its length for a byte not in it (Horspool's bad-character rule).
static NULL_USAGE_SHIFT: [u8; 256] = {
    let mut shift = [NULL_USAGE.len() as u8; 256];
    let mut i = 0;
    while i < NULL_USAGE.len() - 1 {
        shift[NULL_USAGE[i] as usize] = (NULL_USAGE.len() - 1 - i) as u8;
        i += 1;
    }
    shift
};

/// The first `,"usage":null` in a short `haystack` (Boyer-Moore-Horspool): a few steps over
/// text without the member's letters, no setup.
fn find_null_usage_short(haystack: &[u8]) -> Option<usize> {
    let last = NULL_USAGE.len() - 1;
    let mut end = last;
    while let Some(&byte) = haystack.get(end) {
        if byte == b'l' && haystack[end - last..=end] == *NULL_USAGE {
            return Some(end - last);
        }
        end += usize::from(NULL_USAGE_SHIFT[usize::from(byte)]);
    }
    None
}

/// Whether `after_key`, what follows a key, is `:` and an object (white space allowed).
fn is_object_member(after_key: &[u8]) -> bool {
    after_colon(after_key).is_some_and(|value| value.starts_with(b"{"))
}

/// What to do with an event (or the start of one) a usage-only chunk might be.
enum Verdict {
    /// A usage-only chunk, ended: it goes.
    Remove,
    /// Not one: its bytes go through.
    Pass,
    /// Not known yet: hold it.
    Wait,
}

/// What the first `"choices"` of an event (or the start of one) shows.
enum Choices {
    /// An array with an element, or not an array: not a usage-only chunk.
    NotEmpty,
    /// An empty array.
    Empty,
    /// No `"choices"`, or not its value yet.
    Unknown,
}

/// The first `"choices"` in `event`.
fn choices(event: &[u8]) -> Choices {
    let Some(at) = CHOICES.find(event) else {
        return Choices::Unknown;
    };
    match after_colon(&event[at + 9..]) {
        // The value has not arrived yet.
        Some([]) | None => Choices::Unknown,
        Some(rest) if rest.starts_with(b"[") => match trim_ws(&rest[1..]).first() {
            None => Choices::Unknown,
            Some(b']') => Choices::Empty,
            Some(_) => Choices::NotEmpty,
        },
        Some(_) => Choices::NotEmpty,
    }
}

/// Whether `event` (whole when `event_ended`) is the usage-only chunk: `"choices":[]` and a
/// `usage` object.
fn verdict(event: &[u8], event_ended: bool) -> Verdict {
    match choices(event) {
        Choices::NotEmpty => return Verdict::Pass,
        Choices::Empty if event_ended => {
            let has_usage = USAGE
                .find(event)
                .is_some_and(|u| is_object_member(&event[u + USAGE_KEY_LEN..]));
            if has_usage {
                return Verdict::Remove;
            }
        }
        Choices::Empty | Choices::Unknown => {}
    }
    if event_ended {
        Verdict::Pass
    } else {
        Verdict::Wait
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn outcomes_are_the_reasons_prefixed() {
        for skip in [
            UsageSkip::NotApplicable,
            UsageSkip::NotStreamed,
            UsageSkip::AlreadyAsked,
            UsageSkip::NotJson,
            UsageSkip::NotObject,
            UsageSkip::Ambiguous,
            UsageSkip::UnsupportedStreamOptions,
        ] {
            assert_eq!(skip.outcome(), format!("skipped:{}", skip.reason()));
        }
    }

    const STREAM: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":null}\r\n\r\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\r\n\r\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\r\n\r\n\
data: [DONE]\r\n\r\n";

    fn expected() -> Vec<u8> {
        let text = String::from_utf8(STREAM.to_vec()).unwrap();
        text.split_inclusive("\r\n\r\n")
            .filter(|event| !event.contains("\"choices\":[]"))
            .collect::<String>()
            .replace(",\"usage\":null", "")
            .into_bytes()
    }

    #[test]
    fn the_usage_chunk_is_removed_at_every_split() {
        for at in 0..=STREAM.len() {
            let mut filter = UsageChunkFilter::new(1 << 20);
            let mut out = Vec::new();
            filter.push(&STREAM[..at], &mut out);
            filter.push(&STREAM[at..], &mut out);
            filter.finish(&mut out);
            assert_eq!(out, expected(), "split at {at}");
            assert_eq!(filter.removed(), 1);
        }
        let mut filter = UsageChunkFilter::new(1 << 20);
        let mut out = Vec::new();
        for byte in STREAM.chunks(1) {
            filter.push(byte, &mut out);
        }
        filter.finish(&mut out);
        assert_eq!(out, expected());
    }

    #[test]
    fn every_line_end_frames_events_at_every_split() {
        let crlf = String::from_utf8(STREAM.to_vec()).unwrap();
        let want = String::from_utf8(expected()).unwrap();
        for line_end in ["\n", "\r", "\r\n"] {
            let stream = crlf.replace("\r\n", line_end);
            let want = want.replace("\r\n", line_end);
            let stream = stream.as_bytes();
            for a in 0..=stream.len() {
                for b in a..=stream.len().min(a + 3) {
                    let mut filter = UsageChunkFilter::new(1 << 20);
                    let mut out = Vec::new();
                    for chunk in [&stream[..a], &stream[a..b], &stream[b..]] {
                        filter.push(chunk, &mut out);
                    }
                    filter.finish(&mut out);
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        want,
                        "{line_end:?} split at {a}, {b}"
                    );
                    assert_eq!(filter.removed(), 1);
                }
            }
        }
    }

    #[test]
    fn content_chunks_are_not_held_past_their_choices() {
        let mut filter = UsageChunkFilter::new(1 << 20);
        let mut out = Vec::new();
        let partial = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a";
        filter.push(partial, &mut out);
        assert_eq!(out, partial, "released as soon as a choice shows");
    }

    #[test]
    fn other_streams_pass_untouched() {
        for stream in [
            &b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"[..],
            b"garbage without structure",
            b": comment\n\ndata: {\"choices\":[]}\n\n",
        ] {
            let mut filter = UsageChunkFilter::new(1 << 20);
            let mut out = Vec::new();
            filter.push(stream, &mut out);
            filter.finish(&mut out);
            assert_eq!(out, stream);
        }
    }

    #[test]
    fn null_usage_members_split_anywhere_are_removed() {
        let stream = b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"say ,\\\"usage\\\":null\"}}],\"usage\":null}\n\n";
        let want = b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"say ,\\\"usage\\\":null\"}}]}\n\n";
        for at in 0..=stream.len() {
            let mut filter = UsageChunkFilter::new(1 << 20);
            let mut out = Vec::new();
            filter.push(&stream[..at], &mut out);
            filter.push(&stream[at..], &mut out);
            filter.finish(&mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "split at {at}"
            );
        }
    }

    /// What the filter writes for `chunks` in turn, and how many events it removed.
    fn filtered(chunks: &[&[u8]]) -> (String, u64) {
        let mut filter = UsageChunkFilter::new(1 << 20);
        let mut out = Vec::new();
        for chunk in chunks {
            filter.push(chunk, &mut out);
        }
        filter.finish(&mut out);
        (String::from_utf8(out).unwrap(), filter.removed())
    }

    /// What the filter should write for whole `events`, each ending with its blank line:
    /// those [`verdict`] removes dropped, every `,"usage":null` taken out of the others.
    fn reference(events: &[&str]) -> (String, u64) {
        let mut out = String::new();
        let mut removed = 0;
        for event in events {
            if matches!(verdict(event.as_bytes(), true), Verdict::Remove) {
                removed += 1;
            } else {
                out.push_str(&event.replace(",\"usage\":null", ""));
            }
        }
        (out, removed)
    }

    /// Events that are, or look like, usage-only chunks and `,"usage":null` members: keys as
    /// string values, inside strings, escaped, spaced, repeated, in unusual order.
    const HOSTILE: &[&str] = &[
        "data: {\"x\":\"usage\",\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n",
        "data: {\"choices\" : [ ] ,\"usage\" :\t{ \"prompt_tokens\":1}}\n\n",
        "data: {\"usage\":{\"prompt_tokens\":1},\"choices\":[]}\n\n",
        "data: {\"choices\":[],\"usage\":null}\n\n",
        "data: {\"usage\":null,\"choices\":[],\"usage\":{\"a\":1}}\n\n",
        "data: {\"id\":\"c\",\"usage\":null,\"choices\":[{\"index\":0}],\"usage\":null,\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{ ,\\\"usage\\\":null\"}}],\"usage\":null}\n\n",
        "data: {\"a\":\"x\",\"usage\" :null,\"usage\": null}\n\n",
        "data: {\"choices\":[],\"us\\u0061ge\":{\"prompt_tokens\":1}}\n\n",
        "data: {\"choices\":[],\"usage\":[],\"usage\":{}}\n\n",
        "data: {\"choices\":\"none\",\"usage\":{}}\n\n",
        "\"usage\":{}\n\n",
        ",\"usage\":null\n\n",
        ": comment ,\"usage\":null\r\n\r\n",
        "event: x\r\ndata: {\"choices\":[],\r\ndata: \"usage\":{}}\r\n\r\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2}}\n\n",
        "data: [DONE]\n\n",
    ];

    #[test]
    fn whole_events_settle_as_the_reference_and_as_split_ones() {
        for event in HOSTILE {
            let want = reference(&[event]);
            assert_eq!(filtered(&[event.as_bytes()]), want, "whole: {event}");
            let bytes: Vec<&[u8]> = event.as_bytes().chunks(1).collect();
            assert_eq!(filtered(&bytes), want, "byte by byte: {event}");
        }
        let want = reference(HOSTILE);
        let stream = HOSTILE.concat();
        let stream = stream.as_bytes();
        assert_eq!(filtered(&[stream]), want);
        for at in 0..=stream.len() {
            assert_eq!(
                filtered(&[&stream[..at], &stream[at..]]),
                want,
                "split at {at}"
            );
        }
    }

    #[test]
    fn the_output_is_reserved_once_per_chunk() {
        let mut filter = UsageChunkFilter::new(1 << 20);
        for event in STREAM.split_inclusive(|&b| b == b'\n') {
            let mut out = Vec::new();
            filter.push(event, &mut out);
            assert!(out.capacity() >= event.len() || out.is_empty());
        }
    }

    /// A chunk in a buffer of the given kind: 0 its own (from a `Vec`), 1 its own (split off
    /// a `BytesMut`), 2 from a `Vec` and shared (the other handle in `aliases`).
    fn chunk_of_kind(bytes: &[u8], kind: u8, aliases: &mut Vec<(Bytes, Vec<u8>)>) -> Bytes {
        match kind {
            0 => Bytes::from(bytes.to_vec()),
            1 => {
                let mut whole = bytes::BytesMut::from(bytes);
                whole.split().freeze()
            }
            _ => {
                let chunk = Bytes::from(bytes.to_vec());
                aliases.push((chunk.clone(), bytes.to_vec()));
                chunk
            }
        }
    }

    /// What [`UsageChunkFilter::filter`] returns for `chunks` in turn (the last one ending
    /// the stream, or an empty one after them when `end_apart`), joined, and how many events
    /// it removed; each chunk in a buffer of kind `kinds[i % kinds.len()]`
    /// ([`chunk_of_kind`]). Checks that the chunks returned stay as they were while the
    /// filter goes on, and that shared buffers are left alone.
    fn filtered_bytes(
        chunks: &[&[u8]],
        max_held: usize,
        kinds: &[u8],
        end_apart: bool,
    ) -> (Vec<u8>, u64) {
        let mut filter = UsageChunkFilter::new(max_held);
        let (mut out, mut kept, mut aliases) = (Vec::new(), Vec::new(), Vec::new());
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.iter().enumerate() {
            let chunk = chunk_of_kind(chunk, kinds[i % kinds.len()], &mut aliases);
            let piece = filter.filter(chunk, i == last && !end_apart);
            out.extend_from_slice(&piece);
            kept.push(piece);
        }
        if end_apart || chunks.is_empty() {
            let piece = filter.filter(Bytes::new(), true);
            out.extend_from_slice(&piece);
            kept.push(piece);
        }
        assert_eq!(kept.concat(), out);
        for (alias, was) in aliases {
            assert_eq!(alias, was);
        }
        (out, filter.removed())
    }

    /// What [`UsageChunkFilter::push`] and [`finish`](UsageChunkFilter::finish) write.
    fn pushed(chunks: &[&[u8]], max_held: usize) -> (Vec<u8>, u64) {
        let mut filter = UsageChunkFilter::new(max_held);
        let mut out = Vec::new();
        for chunk in chunks {
            filter.push(chunk, &mut out);
        }
        filter.finish(&mut out);
        (out, filter.removed())
    }

    #[test]
    fn bytes_out_are_the_bytes_pushed_at_every_split() {
        let crlf = String::from_utf8(STREAM.to_vec()).unwrap();
        let hostile = HOSTILE.concat();
        for stream in [
            crlf.clone(),
            crlf.replace("\r\n", "\n"),
            crlf.replace("\r\n", "\r"),
            hostile,
        ] {
            let stream = stream.as_bytes();
            for a in 0..=stream.len() {
                for b in a..=stream.len().min(a + 14) {
                    let chunks = [&stream[..a], &stream[a..b], &stream[b..]];
                    let want = pushed(&chunks, 1 << 20);
                    for (kinds, end_apart) in [([0, 1, 2], false), ([2, 0, 1], true)] {
                        assert_eq!(
                            filtered_bytes(&chunks, 1 << 20, &kinds, end_apart),
                            want,
                            "split at {a}, {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bytes_out_are_made_of_the_chunk_when_it_is_not_shared() {
        let content: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n";
        let want = [&content[..content.len() - 16], b"}\n\n"].concat();
        let mut filter = UsageChunkFilter::new(1 << 20);
        // Its own buffer: the kept bytes moved to its end, in place.
        let split_off = || bytes::BytesMut::from(content).split().freeze();
        for chunk in [Bytes::from(content.to_vec()), split_off()] {
            let end = chunk.as_ptr_range().end;
            let out = filter.filter(chunk, false);
            assert_eq!(out, want);
            assert_eq!(out.as_ptr_range().end, end, "in the chunk's buffer");
        }
        // A shared or static buffer is left as it is: a copy.
        let chunk = Bytes::from(content.to_vec());
        let alias = chunk.clone();
        assert_eq!(filter.filter(chunk, false), want);
        assert_eq!(alias, content);
        assert_eq!(filter.filter(Bytes::from_static(content), false), want);
        // A chunk that loses nothing, or only its start, is the chunk.
        let done = Bytes::from_static(b"data: [DONE]\n\n");
        assert_eq!(filter.filter(done.clone(), false).as_ptr(), done.as_ptr());
        let usage = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n";
        let both = Bytes::from([&usage[..], &done[..]].concat());
        let out = filter.filter(both.clone(), true);
        assert_eq!(out, done);
        assert_eq!(out.as_ptr(), both[usage.len()..].as_ptr());
        assert_eq!(filter.removed(), 1);
    }

    #[test]
    fn an_lf_after_a_removed_event_ending_in_cr_goes_with_it() {
        let usage: &[u8] = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\r";
        let chunks = [usage, b"\n", b"data: [DONE]\r\r", b"\n"];
        let want = (b"data: [DONE]\r\r\n".to_vec(), 1);
        assert_eq!(pushed(&chunks, 1 << 20), want);
        assert_eq!(filtered_bytes(&chunks, 1 << 20, &[0], false), want);
    }

    /// An event for the proptest: one of [`HOSTILE`], with `\n`, `\r` or `\r\n` line ends.
    fn any_event() -> impl Strategy<Value = String> {
        let line_ends = prop::sample::select(vec!["\n", "\r", "\r\n"]);
        (prop::sample::select(HOSTILE.to_vec()), line_ends)
            .prop_map(|(event, end)| event.replace("\r\n", "\n").replace('\n', end))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn bytes_out_are_the_bytes_pushed(
            events in prop::collection::vec(any_event(), 0..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            max_held in prop::sample::select(vec![0usize, 8, 40, 1 << 20]),
            kinds in prop::collection::vec(0u8..3, 1..4),
            end_apart in any::<bool>(),
        ) {
            let stream = events.concat();
            let stream = stream.as_bytes();
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for to in at.into_iter().chain([stream.len()]) {
                chunks.push(&stream[from..to]);
                from = to;
            }
            prop_assert_eq!(
                filtered_bytes(&chunks, max_held, &kinds, end_apart),
                pushed(&chunks, max_held)
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Streams cut only between events, as providers send them (each chunk one event or
        /// a few), so that `filter` settles most chunks by its whole-event path: it writes
        /// what `push` writes, which is what the reference writes. Some chunks are a lone
        /// line end, which completes a CR that ended the chunk before.
        #[test]
        fn whole_event_chunks_are_filtered_as_pushed(
            events in prop::collection::vec(
                prop_oneof![
                    4 => any_event(),
                    1 => prop::sample::select(vec!["\n", "\r", "\r\n"]).prop_map(String::from),
                ],
                0..10,
            ),
            joined in prop::collection::vec(any::<bool>(), 10),
            max_held in prop::sample::select(vec![0usize, 40, 1 << 20]),
            kinds in prop::collection::vec(0u8..3, 1..4),
            end_apart in any::<bool>(),
        ) {
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            for (event, join) in events.iter().zip(&joined) {
                match chunks.last_mut() {
                    Some(last) if *join => last.extend_from_slice(event.as_bytes()),
                    _ => chunks.push(event.as_bytes().to_vec()),
                }
            }
            let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let want = pushed(&chunks, max_held);
            prop_assert_eq!(filtered_bytes(&chunks, max_held, &kinds, end_apart), want.clone());
            let lone_line_ends = events.iter().any(|event| event.trim().is_empty());
            if max_held == 1 << 20 && !lone_line_ends {
                let events: Vec<&str> = events.iter().map(String::as_str).collect();
                let (text, removed) = reference(&events);
                prop_assert_eq!((text.into_bytes(), removed), want);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn the_short_search_finds_what_the_searcher_finds(
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    ",\"usage\":null", ",\"usage\":nul", "\"usage\":null", "l", "ll", "u", ",",
                    "\"", ":", "null", "usage", "x", "obfuscation", "\n",
                ]),
                0..12,
            ),
        ) {
            let haystack = pieces.concat();
            let haystack = haystack.as_bytes();
            prop_assert_eq!(find_null_usage_short(haystack), NULL_USAGE_FINDER.find(haystack));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The key searches (the AVX2 pair search from its minimum length, the general
        /// searcher below it) find the first occurrence, as a plain scan does, at every
        /// length around the switch between them.
        #[test]
        fn key_searches_find_the_first_occurrence(
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    "\"usage\"", "\"usag", "usage\"", "\"choices\"", "\"choice", "\"", "g",
                    "u", "s", "e", ":", "null", "x", "0123456789abcdef", "\n",
                ]),
                0..24,
            ),
        ) {
            let haystack = pieces.concat();
            let haystack = haystack.as_bytes();
            for search in [&*USAGE, &*CHOICES] {
                for end in 0..=haystack.len() {
                    let part = &haystack[..end];
                    let want = part.windows(search.needle.len()).position(|w| w == search.needle);
                    prop_assert_eq!(search.find(part), want);
                }
            }
        }
    }

    fn chat() -> Endpoint {
        Endpoint::detect("/v1/chat/completions", None).unwrap()
    }

    /// Asserts that `input` was rewritten to exactly `input[..at] + inserted +
    /// input[at + removed.len()..]`, with `removed` the bytes that were at `at`, and that the
    /// result is JSON asking for usage.
    #[track_caller]
    fn assert_spliced(input: &str, at: usize, removed: &str, inserted: &str) {
        let output = request_with_usage(&chat(), input.as_bytes()).unwrap();
        assert_eq!(&input[at..at + removed.len()], removed, "removed bytes");
        let expected = [&input[..at], inserted, &input[at + removed.len()..]].concat();
        assert_eq!(String::from_utf8(output.clone()).unwrap(), expected);
        let value: serde_json::Value = serde_json::from_slice(&output).unwrap();
        assert_eq!(value["stream_options"]["include_usage"], true);
        // A second pass finds nothing to do.
        assert_eq!(
            request_with_usage(&chat(), &output),
            Err(UsageSkip::AlreadyAsked)
        );
    }

    const MEMBER: &str = r#","stream_options":{"include_usage":true}"#;

    #[test]
    fn absent_stream_options_are_added_after_the_last_member() {
        let input = r#"{"model":"m","stream":true}"#;
        assert_spliced(input, input.len() - 1, "", MEMBER);
        // Whitespace everywhere stays where it was.
        let input = " \r\n{ \"model\" :\t\"m\" ,\n  \"stream\" : true \n} \n";
        assert_spliced(input, input.find(" \n}").unwrap(), "", MEMBER);
        // Big integers, number spellings, unicode escapes and duplicate unrelated keys too.
        let input = r#"{"seed":123456789012345678901234567890,"temperature":1.0e5,"top_p":-0.50E-1,"user":"\u00e9\ud83d\ude00 é","user":"again","stream":true,"n":1}"#;
        assert_spliced(input, input.len() - 1, "", MEMBER);
    }

    #[test]
    fn nested_look_alikes_are_not_members() {
        let input = r#"{"messages":[{"role":"user","content":"{\"stream\":false,\"stream_options\":{}} }"}],"metadata":{"stream":false,"stream_options":null,"x":{"include_usage":false}},"stream":true,"tail":"\\\"}"}"#;
        assert_spliced(input, input.len() - 1, "", MEMBER);
        // `stream` only inside nested values: not streamed.
        assert_eq!(
            request_with_usage(
                &chat(),
                br#"{"metadata":{"stream":true},"x":["stream",true]}"#
            ),
            Err(UsageSkip::NotStreamed)
        );
    }

    #[test]
    fn an_existing_object_gets_the_member_first() {
        let input = r#"{"stream":true,"stream_options":{"continuous_usage_stats":true}}"#;
        let at = input.find("{\"cont").unwrap() + 1;
        assert_spliced(input, at, "", r#""include_usage":true,"#);
        let input = r#"{"stream":true,"stream_options":{ }}"#;
        let at = input.find("{ }").unwrap() + 1;
        assert_spliced(input, at, "", r#""include_usage":true"#);
        let input = r#"{"stream":true,"stream_options":{}, "model":"m"}"#;
        let at = input.find("{}").unwrap() + 1;
        assert_spliced(input, at, "", r#""include_usage":true"#);
    }

    #[test]
    fn false_and_null_become_true() {
        for value in ["false", "null"] {
            let input = format!(
                r#"{{"stream":true,"stream_options":{{"x":1, "include_usage" : {value} ,"y":2}}}}"#
            );
            let at = input.find(value).unwrap();
            assert_spliced(&input, at, value, "true");
        }
        let input = r#"{"stream":true,"stream_options":null,"model":"m"}"#;
        let at = input.find("null").unwrap();
        assert_spliced(input, at, "null", r#"{"include_usage":true}"#);
    }

    #[test]
    fn escaped_keys_are_the_same_keys() {
        let input = r#"{"str\u0065am":true,"stream_options":{"include\u005fusage":false}}"#;
        let at = input.find("false").unwrap();
        assert_spliced(input, at, "false", "true");
        assert_eq!(
            request_with_usage(&chat(), br#"{"stream":true,"stre\u0061m":true}"#),
            Err(UsageSkip::Ambiguous)
        );
    }

    #[test]
    fn everything_else_is_left_alone_with_a_reason() {
        let messages = Endpoint::detect("/v1/messages", None).unwrap();
        let completions = Endpoint::detect("/v1/completions", None).unwrap();
        assert!(request_with_usage(&completions, br#"{"stream":true}"#).is_ok());
        assert_eq!(
            request_with_usage(&messages, br#"{"model":"m","stream":true}"#),
            Err(UsageSkip::NotApplicable)
        );
        for (body, skip) in [
            (
                &br#"{"model":"m","stream":false}"#[..],
                UsageSkip::NotStreamed,
            ),
            (br#"{"model":"m"}"#, UsageSkip::NotStreamed),
            (br#"{"stream":"true"}"#, UsageSkip::NotStreamed),
            (br#"{"stream":1}"#, UsageSkip::NotStreamed),
            (br#"{}"#, UsageSkip::NotStreamed),
            (
                br#"{"stream":true,"stream_options":{"include_usage":true}}"#,
                UsageSkip::AlreadyAsked,
            ),
            (b"{broken", UsageSkip::NotJson),
            (br#"{"stream":true} x"#, UsageSkip::NotJson),
            (br#"{"stream":true}{}"#, UsageSkip::NotJson),
            (br#"{"stream":true,}"#, UsageSkip::NotJson),
            (b"{\"stream\":true,\"s\":\"\xff\"}", UsageSkip::NotJson),
            (b"", UsageSkip::NotJson),
            // A body that does not stream is never rewritten, so not validated.
            (b"{\"stream\":false,\"s\":\"\xff\"}", UsageSkip::NotStreamed),
            (br#"{"model":"m"} x"#, UsageSkip::NotStreamed),
            (
                br#"{"model":"m","stream":true,"s":"\x"}"#,
                UsageSkip::NotJson,
            ),
            (br#"[{"stream":true}]"#, UsageSkip::NotObject),
            (br#""stream""#, UsageSkip::NotObject),
            (b" 1 ", UsageSkip::NotObject),
            (br#"{"stream":true,"stream":true}"#, UsageSkip::Ambiguous),
            (br#"{"stream":false,"stream":true}"#, UsageSkip::Ambiguous),
            (
                br#"{"stream":true,"stream_options":{},"stream_options":null}"#,
                UsageSkip::Ambiguous,
            ),
            (
                br#"{"stream":true,"stream_options":{"include_usage":false,"include_usage":true}}"#,
                UsageSkip::Ambiguous,
            ),
            (
                br#"{"stream":true,"stream_options":[]}"#,
                UsageSkip::UnsupportedStreamOptions,
            ),
            (
                br#"{"stream":true,"stream_options":"x"}"#,
                UsageSkip::UnsupportedStreamOptions,
            ),
            (
                br#"{"stream":true,"stream_options":{"include_usage":"yes"}}"#,
                UsageSkip::UnsupportedStreamOptions,
            ),
        ] {
            assert_eq!(
                request_with_usage(&chat(), body),
                Err(skip),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn reasons_are_snake_case() {
        for (skip, reason) in [
            (UsageSkip::NotApplicable, "not_applicable"),
            (UsageSkip::NotStreamed, "not_streamed"),
            (UsageSkip::AlreadyAsked, "already_asked"),
            (UsageSkip::NotJson, "not_json"),
            (UsageSkip::NotObject, "not_object"),
            (UsageSkip::Ambiguous, "ambiguous"),
            (
                UsageSkip::UnsupportedStreamOptions,
                "unsupported_stream_options",
            ),
        ] {
            assert_eq!(skip.reason(), reason);
        }
    }
}
