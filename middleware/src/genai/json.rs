//! Just enough JSON to read and splice bytes without parsing or re-serializing them: a
//! validator, a scanner that reports where an object's members are, and a key search for the
//! fast path over streamed events.
//!
//! The validator follows RFC 8259 (UTF-8 text, the number grammar, string escapes with paired
//! surrogates, nothing after the value). It is iterative, so deep nesting costs heap (one byte
//! per open container) rather than stack. The scanner assumes a validated document and only
//! finds boundaries; it still returns `None` rather than panicking on bytes it does not expect.
//!
//! The key search ([`key_at`]) relies on one property of JSON: the bytes `"key"` followed by
//! optional white space and `:` can only be an object key, because a quote inside a string
//! value is always escaped. It needs no validation; when it is not conclusive, callers parse.

use std::ops::Range;

use memchr::memchr2;
use memchr::memmem::Finder;

/// Whether `bytes` is one complete JSON value (optionally surrounded by whitespace).
pub(crate) fn is_valid(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok() && Validator { bytes, pos: 0 }.document()
}

struct Validator<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Validator<'_> {
    fn document(&mut self) -> bool {
        // The containers open around the current position: `{` or `[`.
        let mut open: Vec<u8> = Vec::new();
        self.ws();
        'value: loop {
            // A value starts here.
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    self.ws();
                    if !self.eat(b'}') {
                        if !self.member_key() {
                            return false;
                        }
                        open.push(b'{');
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.ws();
                    if !self.eat(b']') {
                        open.push(b'[');
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    if !self.string() {
                        return false;
                    }
                }
                Some(b'-' | b'0'..=b'9') => {
                    if !self.number() {
                        return false;
                    }
                }
                Some(b't') => {
                    if !self.literal(b"true") {
                        return false;
                    }
                }
                Some(b'f') => {
                    if !self.literal(b"false") {
                        return false;
                    }
                }
                Some(b'n') => {
                    if !self.literal(b"null") {
                        return false;
                    }
                }
                _ => return false,
            }
            // A value ended: a separator, or the ends of the containers it completes.
            loop {
                self.ws();
                let Some(&container) = open.last() else {
                    return self.pos == self.bytes.len();
                };
                match self.bump() {
                    Some(b',') => {
                        self.ws();
                        if container == b'{' && !self.member_key() {
                            return false;
                        }
                        continue 'value;
                    }
                    Some(b'}') if container == b'{' => {
                        open.pop();
                    }
                    Some(b']') if container == b'[' => {
                        open.pop();
                    }
                    _ => return false,
                }
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn ws(&mut self) {
        self.pos = skip_ws(self.bytes, self.pos);
    }

    /// `"key"` `:` and the whitespace up to the value.
    fn member_key(&mut self) -> bool {
        if self.peek() != Some(b'"') || !self.string() {
            return false;
        }
        self.ws();
        if !self.eat(b':') {
            return false;
        }
        self.ws();
        true
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.bytes[self.pos..].starts_with(word);
        if found {
            self.pos += word.len();
        }
        found
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> bool {
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return false,
        }
        if self.eat(b'.') && self.digits() == 0 {
            return false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return false;
            }
        }
        true
    }

    /// A string from its opening quote: no raw control characters, valid escapes, and
    /// `\u` surrogates only in high-low pairs (UTF-8 was checked for the whole document).
    fn string(&mut self) -> bool {
        self.pos += 1;
        loop {
            let rest = &self.bytes[self.pos..];
            let Some(at) = memchr2(b'"', b'\\', rest) else {
                return false;
            };
            if rest[..at].iter().any(|&b| b < 0x20) {
                return false;
            }
            self.pos += at + 1;
            if rest[at] == b'"' {
                return true;
            }
            match self.bump() {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                Some(b'u') => match self.hex4() {
                    Some(0xD800..=0xDBFF) => {
                        let low = self.eat(b'\\')
                            && self.eat(b'u')
                            && matches!(self.hex4(), Some(0xDC00..=0xDFFF));
                        if !low {
                            return false;
                        }
                    }
                    Some(0xDC00..=0xDFFF) | None => return false,
                    Some(_) => {}
                },
                _ => return false,
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        let mut code = 0;
        for &digit in digits {
            code = code * 16 + char::from(digit).to_digit(16)?;
        }
        self.pos += 4;
        Some(code)
    }
}

/// The first position at or after `pos` that is not JSON whitespace.
pub(crate) fn skip_ws(bytes: &[u8], mut pos: usize) -> usize {
    while matches!(bytes.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        pos += 1;
    }
    pos
}

/// The end (exclusive) of the string whose opening quote is at `pos`.
fn string_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let mut at = pos + 1;
    loop {
        at += memchr2(b'"', b'\\', bytes.get(at..)?)?;
        if bytes[at] == b'"' {
            return Some(at + 1);
        }
        at += 2;
    }
}

/// The end (exclusive) of the value starting at `pos`, in a validated document.
fn value_end(bytes: &[u8], pos: usize) -> Option<usize> {
    match *bytes.get(pos)? {
        b'"' => string_end(bytes, pos),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = pos;
            loop {
                match *bytes.get(at)? {
                    b'"' => {
                        at = string_end(bytes, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let rest = bytes.get(pos..)?;
            let len = rest
                .iter()
                .position(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}' | b']'))
                .unwrap_or(rest.len());
            Some(pos + len)
        }
    }
}

/// Where an object's members end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjectEnd {
    /// Just past the last member's value; just past the `{` when the object is empty.
    pub(crate) after_last: usize,
    /// Whether the object has members.
    pub(crate) has_members: bool,
}

/// Calls `member(key, value)` for each member of the object whose `{` is at `open`, in a
/// validated document, with the key's range (quotes included) and the value's range.
pub(crate) fn members(
    bytes: &[u8],
    open: usize,
    mut member: impl FnMut(Range<usize>, Range<usize>),
) -> Option<ObjectEnd> {
    let mut end = ObjectEnd {
        after_last: open + 1,
        has_members: false,
    };
    let mut at = skip_ws(bytes, open + 1);
    if *bytes.get(at)? == b'}' {
        return Some(end);
    }
    loop {
        let key = at..string_end(bytes, at)?;
        at = skip_ws(bytes, key.end);
        if *bytes.get(at)? != b':' {
            return None;
        }
        let start = skip_ws(bytes, at + 1);
        let value = start..value_end(bytes, start)?;
        end.after_last = value.end;
        end.has_members = true;
        member(key, value.clone());
        at = skip_ws(bytes, value.end);
        match *bytes.get(at)? {
            b',' => at = skip_ws(bytes, at + 1),
            b'}' => return Some(end),
            _ => return None,
        }
    }
}

/// Whether the key at `key` (quotes included) decodes to `name`: a key spelled with escapes
/// (`"str\u0065am"`) is the same key to the provider.
pub(crate) fn key_is(bytes: &[u8], key: Range<usize>, name: &str) -> bool {
    let Some(quoted) = bytes.get(key) else {
        return false;
    };
    let Some(raw) = quoted
        .strip_prefix(b"\"")
        .and_then(|q| q.strip_suffix(b"\""))
    else {
        return false;
    };
    if !raw.contains(&b'\\') {
        return raw == name.as_bytes();
    }
    // An escape spells one byte of an ASCII name in at most six: longer keys cannot match.
    raw.len() <= 6 * name.len()
        && serde_json::from_slice::<String>(quoted).is_ok_and(|decoded| decoded == name)
}

/// `bytes` without its leading JSON whitespace.
pub(crate) fn trim_ws(bytes: &[u8]) -> &[u8] {
    &bytes[skip_ws(bytes, 0)..]
}

/// What follows a `:` at the start of `bytes` (whitespace skipped on both sides); `None` when
/// `bytes` does not start with one.
pub(crate) fn after_colon(bytes: &[u8]) -> Option<&[u8]> {
    trim_ws(bytes).strip_prefix(b":").map(trim_ws)
}

/// The position and value (what follows, whitespace skipped) of the first `"key":` at or
/// after `from`, where `finder` searches for `"key"`.
pub(crate) fn key_at<'d>(
    data: &'d [u8],
    from: usize,
    finder: &Finder<'_>,
) -> Option<(usize, &'d [u8])> {
    let mut from = from;
    while let Some(found) = finder.find(&data[from..]) {
        let at = from + found;
        let after_key = at + finder.needle().len();
        if let Some(value) = after_colon(&data[after_key..]) {
            return Some((at, value));
        }
        from = after_key;
    }
    None
}

/// What follows the first `"key":`, whitespace skipped; `None` when the key is absent.
pub(crate) fn value_after<'d>(data: &'d [u8], finder: &Finder<'_>) -> Option<&'d [u8]> {
    key_at(data, 0, finder).map(|(_, value)| value)
}

/// The value of `"key":`, looked for after `at` first (where providers put it), then before.
pub(crate) fn key_after_or_before<'d>(
    data: &'d [u8],
    at: usize,
    finder: &Finder<'_>,
) -> Option<&'d [u8]> {
    key_at(data, at, finder)
        .map(|(_, value)| value)
        .or_else(|| value_after(&data[..at], finder))
}

/// The length of the JSON string starting at `s[0] == '"'`, in raw bytes between the quotes.
pub(crate) fn string_len(s: &[u8]) -> Option<usize> {
    let body = s.strip_prefix(b"\"")?;
    let mut from = 0;
    loop {
        let at = memchr::memchr(b'"', &body[from..])? + from;
        let backslashes = body[..at].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(at);
        }
        from = at + 1;
    }
}

/// Whether a value found by the key search is absent or `null`.
pub(crate) fn is_null(value: Option<&[u8]>) -> bool {
    value.is_none_or(|v| v.starts_with(b"null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validator_agrees_with_the_grammar() {
        for good in [
            &b"{}"[..],
            b" [ ] ",
            b"0",
            b"-0.5e+10",
            b"123456789012345678901234567890",
            b"1.0e5",
            b"1E400",
            br#""\ud83d\ude00 \" \\ \/ \b\f\n\r\t""#,
            "\"h\u{e9}llo \u{1F600}\"".as_bytes(),
            br#"{"a":[1,{"b":null},true,false,"}"],"a":{}}"#,
            b"\r\n\t {\"k\" : [ 1 , 2 ] }\n",
        ] {
            assert!(is_valid(good), "{}", String::from_utf8_lossy(good));
            assert!(
                serde_json::from_slice::<serde_json::Value>(good).is_ok()
                    || good.ends_with(b"E400")
            );
        }
        for bad in [
            &b""[..],
            b" ",
            b"{",
            b"{}}",
            b"{} x",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\"}",
            b"{a:1}",
            b"01",
            b"1.",
            b".5",
            b"1e",
            b"-",
            b"+1",
            b"tru",
            b"truex",
            b"nul",
            b"\"\x01\"",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\\u12\"",
            b"\"abc",
            b"\"\xff\"",
            b"[}",
            b"{]",
            b"[1 2]",
            b"{\"a\":1 \"b\":2}",
        ] {
            assert!(!is_valid(bad), "{}", String::from_utf8_lossy(bad));
        }
        // Nesting costs no stack.
        let deep = [vec![b'['; 1 << 20], vec![b']'; 1 << 20]].concat();
        assert!(is_valid(&deep));
        assert!(!is_valid(&deep[..deep.len() - 1]));
    }

    #[test]
    fn members_report_keys_and_values() {
        let doc = br#" { "a" : "x}\"" , "b":[{"c":1}] ,"d":-1.5e3 } "#;
        let mut seen = Vec::new();
        let end = members(doc, 1, |key, value| {
            seen.push((
                String::from_utf8_lossy(&doc[key]).into_owned(),
                String::from_utf8_lossy(&doc[value]).into_owned(),
            ))
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                (r#""a""#.to_owned(), r#""x}\"""#.to_owned()),
                (r#""b""#.to_owned(), r#"[{"c":1}]"#.to_owned()),
                (r#""d""#.to_owned(), "-1.5e3".to_owned()),
            ]
        );
        assert_eq!(&doc[end.after_last..], b" } ");
        assert!(end.has_members);
        let empty = members(b"{ }", 0, |_, _| panic!("no members")).unwrap();
        assert_eq!((empty.after_last, empty.has_members), (1, false));
    }

    #[test]
    fn keys_compare_decoded() {
        let doc = br#"{"str\u0065am":1,"stream":2,"s":3,"\"":4}"#;
        let mut keys = Vec::new();
        members(doc, 0, |key, _| keys.push(key)).unwrap();
        assert!(key_is(doc, keys[0].clone(), "stream"));
        assert!(key_is(doc, keys[1].clone(), "stream"));
        assert!(!key_is(doc, keys[2].clone(), "stream"));
        assert!(!key_is(doc, keys[3].clone(), "stream"));
        assert!(key_is(doc, keys[3].clone(), "\""));
    }

    fn finder(key: &str) -> Finder<'static> {
        let needle = format!("\"{key}\"");
        Finder::new(&needle).into_owned()
    }

    fn value<'d>(data: &'d [u8], key: &str) -> Option<&'d [u8]> {
        key_after_or_before(data, 0, &finder(key))
    }

    #[test]
    fn key_values_are_found_with_or_without_spaces() {
        let compact = br#"{"a":1,"finish_reason":null,"content":"hi"}"#;
        assert!(is_null(value(compact, "finish_reason")));
        assert_eq!(value(compact, "content").and_then(string_len), Some(2));
        let spaced = br#"{"finish_reason" : "stop", "content": "h\"i\\"}"#;
        assert!(!is_null(value(spaced, "finish_reason")));
        assert_eq!(value(spaced, "content").and_then(string_len), Some(6));
        assert_eq!(value(spaced, "text"), None);
    }

    #[test]
    fn keys_before_the_content_are_found_too() {
        let data = br#"{"usage":{"prompt_tokens":1},"content":"x","finish_reason":null}"#;
        let (at, _) = key_at(data, 0, &finder("content")).unwrap();
        assert!(!is_null(key_after_or_before(data, at, &finder("usage"))));
        assert!(is_null(key_after_or_before(
            data,
            at,
            &finder("finish_reason")
        )));
    }

    #[test]
    fn a_key_inside_a_string_value_is_not_a_key() {
        // The text mentions "finish_reason": but escaped, so it is not a key.
        let data = br#"{"content":"say \"finish_reason\": stop","finish_reason":null}"#;
        assert!(is_null(value(data, "finish_reason")));
        // A string value equal to a key name is not a key either.
        let data = br#"{"type":"content","content":"x"}"#;
        assert_eq!(value(data, "content").and_then(string_len), Some(1));
    }
}
