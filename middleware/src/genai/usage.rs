//! Reported usage without side effects: ask an OpenAI stream for its usage chunk, and take
//! that chunk out of what the client receives.
//!
//! A streamed OpenAI chat/completions request reports token usage only when it asks for it
//! (`stream_options.include_usage`). A gateway that wants reported usage for every stream
//! adds the option upstream ([`request_with_usage`]) and removes the extra usage-only chunk
//! (`"choices": []`) from the response ([`UsageChunkFilter`]), so the client receives the
//! bytes it would have received without the gateway, while the observer sees the usage.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::Value;

use super::endpoint::{ApiFormat, Endpoint};

/// The request body with `stream_options.include_usage: true` added, when it is a streamed
/// OpenAI chat or completions request that did not ask for usage; `None` to send the body
/// as it is (other APIs, not streamed, already asked, or not a JSON object).
///
/// ```
/// use llmtrace::genai::{Endpoint, request_with_usage};
///
/// let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
/// let body = br#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
/// let rewritten = request_with_usage(&endpoint, body).unwrap();
/// let value: serde_json::Value = serde_json::from_slice(&rewritten).unwrap();
/// assert_eq!(value["stream_options"]["include_usage"], true);
/// assert!(request_with_usage(&endpoint, &rewritten).is_none());
/// ```
pub fn request_with_usage(endpoint: &Endpoint, body: &[u8]) -> Option<Vec<u8>> {
    if !matches!(
        endpoint.format,
        ApiFormat::OpenAiChat | ApiFormat::OpenAiCompletions
    ) {
        return None;
    }
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    if object.get("stream").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let options = object
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()));
    let options = options.as_object_mut()?;
    if options.get("include_usage").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    options.insert("include_usage".to_owned(), Value::Bool(true));
    serde_json::to_vec(&value).ok()
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
    /// The last byte seen was the end of a line (so an empty line is a blank line).
    at_line_start: bool,
    /// The last byte seen was CR (a following LF belongs to the same line end).
    after_cr: bool,
    /// The last event ended with a CR at the end of a chunk: an LF starting the next chunk
    /// still belongs to it (and goes where it went: out, or away when it was removed).
    blank_cr_pending: Option<bool>,
    removed: u64,
    /// Whether the last finished event was removed.
    last_removed: bool,
    /// Bytes withheld because they may be the start of `,"usage":null` (split across chunks).
    tail: Vec<u8>,
}

/// The member a provider adds to every chunk once usage is asked for.
const NULL_USAGE: &[u8] = b",\"usage\":null";

// Built once: a searcher per call costs more than the search over a short SSE event.
static NULL_USAGE_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(NULL_USAGE));
static CHOICES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\""));
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));

impl UsageChunkFilter {
    /// A filter that holds at most `max_held` bytes of an undecided event.
    pub fn new(max_held: usize) -> Self {
        Self {
            state: State::Undecided,
            held: Vec::new(),
            max_held,
            at_line_start: true,
            after_cr: false,
            blank_cr_pending: None,
            removed: 0,
            last_removed: false,
            tail: Vec::new(),
        }
    }

    /// Usage-only chunks removed so far.
    pub fn removed(&self) -> u64 {
        self.removed
    }

    /// Filters the next chunk, appending what the client should receive now to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut rest = chunk;
        if rest.is_empty() {
            return;
        }
        if let Some(removed) = self.blank_cr_pending.take() {
            if rest[0] == b'\n' {
                self.after_cr = false;
                if !removed {
                    out.push(b'\n');
                }
                rest = &rest[1..];
            }
        }
        while !rest.is_empty() {
            // Find the end of this event (a blank line) within the chunk, if it is there.
            let (segment, event_ends) = match self.event_end(rest) {
                Some(end) => (&rest[..end], true),
                None => (rest, false),
            };
            rest = &rest[segment.len()..];
            self.last_removed = false;
            match self.state {
                State::Pass => self.emit(segment, out, event_ends),
                State::Undecided => {
                    self.held.extend_from_slice(segment);
                    self.decide(out, event_ends);
                }
            }
            if event_ends {
                if self.after_cr && rest.is_empty() {
                    self.blank_cr_pending = Some(self.last_removed);
                }
                self.state = State::Undecided;
            }
        }
    }

    /// End of stream: whatever is still held goes out.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        self.emit(&held, out, true);
        self.state = State::Undecided;
    }

    /// Writes `bytes` of a kept event without the `,"usage":null` members, withholding a
    /// possible start of one at the end until the next chunk shows whether it is one.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>, event_ended: bool) {
        let mut data = std::mem::take(&mut self.tail);
        data.extend_from_slice(bytes);
        let mut rest = &data[..];
        while let Some(at) = NULL_USAGE_FINDER.find(rest) {
            out.extend_from_slice(&rest[..at]);
            rest = &rest[at + NULL_USAGE.len()..];
        }
        let keep = if event_ended {
            0
        } else {
            (1..NULL_USAGE.len())
                .rev()
                .find(|n| rest.ends_with(&NULL_USAGE[..*n]))
                .unwrap_or(0)
        };
        out.extend_from_slice(&rest[..rest.len() - keep]);
        self.tail = rest[rest.len() - keep..].to_vec();
    }

    /// Settles the held event if it can be settled.
    fn decide(&mut self, out: &mut Vec<u8>, event_ended: bool) {
        if let Some(at) = CHOICES.find(&self.held) {
            let after = skip_ws_colon(&self.held[at + 9..]);
            match after {
                // The value has not arrived yet.
                Some([]) | None => {}
                Some(rest) if rest.starts_with(b"[") => {
                    let inside = skip_ws(&rest[1..]);
                    if !inside.is_empty() && inside[0] != b']' {
                        // Has choices: not a usage-only chunk.
                        self.flush_and_pass(out, event_ended);
                        return;
                    }
                    if inside.first() == Some(&b']') && event_ended {
                        let has_usage = USAGE.find(&self.held).is_some_and(|u| {
                            skip_ws_colon(&self.held[u + 7..]).is_some_and(|v| v.starts_with(b"{"))
                        });
                        if has_usage {
                            self.removed += 1;
                            self.last_removed = true;
                            self.held.clear();
                            return;
                        }
                    }
                }
                Some(_) => {
                    self.flush_and_pass(out, event_ended);
                    return;
                }
            }
        }
        if event_ended || self.held.len() > self.max_held {
            self.flush_and_pass(out, event_ended);
        }
    }

    fn flush_and_pass(&mut self, out: &mut Vec<u8>, event_ended: bool) {
        let held = std::mem::take(&mut self.held);
        self.emit(&held, out, event_ended);
        if !event_ended {
            self.state = State::Pass;
        }
    }

    /// The offset just past the blank line that ends the current event, if in `bytes`.
    fn event_end(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' if self.after_cr => {
                    // Second half of CRLF: the line end was already counted at the CR.
                    self.after_cr = false;
                }
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    if self.at_line_start {
                        // An empty line: the event ends here (take a CRLF's LF along).
                        let mut end = i + 1;
                        if b == b'\r' && bytes.get(end) == Some(&b'\n') {
                            end += 1;
                            self.after_cr = false;
                        }
                        self.at_line_start = true;
                        return Some(end);
                    }
                    self.at_line_start = true;
                }
                _ => {
                    self.after_cr = false;
                    self.at_line_start = false;
                }
            }
        }
        None
    }
}

fn skip_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\n' | b'\r', rest @ ..] = s {
        s = rest;
    }
    s
}

fn skip_ws_colon(s: &[u8]) -> Option<&[u8]> {
    skip_ws(s).strip_prefix(b":").map(skip_ws)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn requests_are_rewritten_only_when_needed() {
        let chat = Endpoint::detect("/v1/chat/completions", None).unwrap();
        let messages = Endpoint::detect("/v1/messages", None).unwrap();
        assert!(request_with_usage(&chat, br#"{"model":"m","stream":false}"#).is_none());
        assert!(request_with_usage(&chat, br#"{"model":"m"}"#).is_none());
        assert!(request_with_usage(&chat, b"{broken").is_none());
        assert!(request_with_usage(&messages, br#"{"model":"m","stream":true}"#).is_none());
        let out = request_with_usage(
            &chat,
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }
}
