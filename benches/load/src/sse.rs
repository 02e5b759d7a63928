//! Client-side reading of an OpenAI chat stream, as it arrives: which body frames carry
//! tokens (for time to first token and inter-token gaps) and whether `data: [DONE]` came.
//!
//! Deliberately a byte scanner rather than a JSON parser: the load generator shares the
//! machine with the target, so it must stay cheap at thousands of events per second. A token
//! event is a `data:` line whose `"content":` is a non-empty string; the role announcement
//! (`"content":""`), the finish chunk and the usage chunk are not tokens.

/// What one body frame held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// Token-bearing events completed in this frame.
    pub tokens: usize,
    /// `data: [DONE]` was completed in this frame.
    pub done: bool,
}

/// Incremental scanner over a `text/event-stream` body; lines may be split across frames.
#[derive(Debug, Default)]
pub struct SseScanner {
    partial: Vec<u8>,
    /// Token events seen so far.
    pub tokens: usize,
    /// Whether `data: [DONE]` has been seen.
    pub done: bool,
}

impl SseScanner {
    /// Scans the next body frame.
    pub fn feed(&mut self, chunk: &[u8]) -> Frame {
        let mut frame = Frame::default();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(newline);
            rest = &tail[1..];
            if self.partial.is_empty() {
                classify(line, &mut frame);
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                classify(&whole, &mut frame);
            }
        }
        self.partial.extend_from_slice(rest);
        self.tokens += frame.tokens;
        self.done |= frame.done;
        frame
    }
}

fn classify(line: &[u8], frame: &mut Frame) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(payload) = line.strip_prefix(b"data:") else {
        return;
    };
    let payload = payload.trim_ascii();
    if payload == b"[DONE]" {
        frame.done = true;
    } else if has_content(payload) {
        frame.tokens += 1;
    }
}

/// Whether a chunk's JSON has a `"content"` member whose value is a non-empty string.
pub fn has_content(json: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\"";
    let mut at = 0;
    while let Some(found) = find(&json[at..], KEY) {
        let after = &json[at + found + KEY.len()..];
        let after = after.trim_ascii_start();
        if let Some(value) = after.strip_prefix(b":") {
            let value = value.trim_ascii_start();
            if let Some(string) = value.strip_prefix(b"\"") {
                if string.first().is_some_and(|&b| b != b'"') {
                    return true;
                }
            }
        }
        at += found + KEY.len();
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = r#"data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null}}]}"#;
    const TOK0: &str = r#"data: {"id":"c","choices":[{"index":0,"delta":{"content":"tok0"}}]}"#;
    const TOK1: &str = r#"data: {"id":"c","choices":[{"index":0,"delta":{"content": " tok1"}}]}"#;
    const FINISH: &str =
        r#"data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;

    #[test]
    fn tokens_and_done_per_frame() {
        let mut s = SseScanner::default();
        assert_eq!(s.feed(format!("{ROLE}\n\n").as_bytes()), Frame::default());
        assert_eq!(
            s.feed(format!("{TOK0}\n\n").as_bytes()),
            Frame {
                tokens: 1,
                done: false
            }
        );
        assert_eq!(
            s.feed(format!("{TOK1}\r\n\r\n{FINISH}\n\ndata: [DONE]\n\n").as_bytes()),
            Frame {
                tokens: 1,
                done: true
            }
        );
        assert_eq!((s.tokens, s.done), (2, true));
    }

    #[test]
    fn lines_split_across_frames() {
        let text = format!("{TOK0}\n\n{TOK1}\n\ndata: [DONE]\n\n");
        for split in 0..text.len() {
            let mut s = SseScanner::default();
            let (a, b) = text.as_bytes().split_at(split);
            let first = s.feed(a);
            let second = s.feed(b);
            assert_eq!(first.tokens + second.tokens, 2, "split at {split}");
            assert!(s.done, "split at {split}");
        }
    }

    #[test]
    fn content_detection() {
        assert!(has_content(br#"{"content":"x"}"#));
        assert!(has_content(br#"{"content" : "x"}"#));
        assert!(!has_content(br#"{"content":""}"#));
        assert!(!has_content(br#"{"content":null}"#));
        assert!(has_content(br#"{"content":null,"x":{"content":"y"}}"#));
        assert!(!has_content(b"{}"));
    }
}
