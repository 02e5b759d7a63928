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

use std::borrow::Cow;
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
            if has_control(&rest[..at]) {
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

/// Whether `bytes` holds a control character (below 0x20), which a JSON string may not.
/// Written as a reduction over blocks, not a short-circuiting `any`, so the compiler
/// vectorises it: a 100 KB prompt is checked in a fraction of an instruction per byte, where
/// the byte-at-a-time loop took ~5 (callgrind, `instructions.sh --prompt-words 17000`).
pub(crate) fn has_control(bytes: &[u8]) -> bool {
    bytes
        .chunks(256)
        .any(|block| block.iter().fold(0x20u8, |low, &b| low.min(b)) < 0x20)
}

#[cfg(test)]
mod has_control_tests {
    #[test]
    fn a_control_character_is_found_wherever_it_is() {
        for len in [0, 1, 31, 255, 256, 257, 1000] {
            let mut text = vec![b'a'; len];
            assert!(!super::has_control(&text));
            for at in 0..len {
                for control in [0x00, 0x0a, 0x1f] {
                    text[at] = control;
                    assert!(super::has_control(&text), "{len} {at} {control}");
                }
                text[at] = 0x20;
                assert!(!super::has_control(&text));
                text[at] = 0xff;
                assert!(!super::has_control(&text));
            }
        }
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
        at = string_stop(bytes, at, false)?;
        if bytes[at] == b'"' {
            return Some(at + 1);
        }
        at += 2;
    }
}

/// `0x01` in every byte.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
/// How far [`string_stop`] looks eight bytes at a time before it calls `memchr2`.
const SHORT_STRING: usize = 32;

/// The high bit of each byte of `word` that is below `limit` (at most 0x80). Exact for the
/// lowest such byte; a byte above it may be marked wrongly (a borrow), which a search for
/// the first one never sees.
fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS
}

/// The high bit of each byte of `word` equal to `byte`, exact for the lowest as above.
fn bytes_equal(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ (ONES * u64::from(byte)), 1)
}

/// The first `"` or `\` in `bytes` at or after `from`, or (with `controls`) the first
/// control character (below 0x20) if it comes before them. Keys and most string values are
/// short, where a call to `memchr2` costs more than the search: the first
/// [`SHORT_STRING`] bytes are looked at eight at a time in a word.
fn string_stop(bytes: &[u8], from: usize, controls: bool) -> Option<usize> {
    let mut at = from;
    while at - from < SHORT_STRING {
        let Some(chunk) = bytes.get(at..at + 8) else {
            break;
        };
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let mut stops = bytes_equal(word, b'"') | bytes_equal(word, b'\\');
        if controls {
            stops |= bytes_below(word, 0x20);
        }
        if stops != 0 {
            return Some(at + (stops.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = bytes.get(at..)?;
    let end = memchr2(b'"', b'\\', rest);
    if controls {
        let scanned = &rest[..end.unwrap_or(rest.len())];
        // The vectorised check first: a long string is clean almost always.
        if has_control(scanned) {
            let control = scanned.iter().position(|&b| b < 0x20)?;
            return Some(at + control);
        }
    }
    end.map(|end| at + end)
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

/// How deeply [`Reader`] follows nesting: as deep as serde_json parses (it fails deeper).
const MAX_DEPTH: usize = 127;

/// A JSON number as serde_json reads it: a non-negative integer that fits `u64`, a negative
/// one that fits `i64`, else a float (`1.5`, `1e3`, `-0`, integers that fit neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Number {
    U64(u64),
    I64(i64),
    Float,
}

impl Number {
    /// What `Value::as_u64` answers.
    pub(crate) fn as_u64(self) -> Option<u64> {
        match self {
            Number::U64(n) => Some(n),
            Number::I64(n) => u64::try_from(n).ok(),
            Number::Float => None,
        }
    }

    /// What `Value::as_i64` answers.
    pub(crate) fn as_i64(self) -> Option<i64> {
        match self {
            Number::U64(n) => i64::try_from(n).ok(),
            Number::I64(n) => Some(n),
            Number::Float => None,
        }
    }
}

/// A one-pass reader of a few members of a JSON document, straight from its bytes.
///
/// The caller walks the document: [`object`](Reader::object) hands it each member's key,
/// and for each value it either reads it ([`string`](Reader::string),
/// [`number`](Reader::number), a nested object or array) or [`skip`](Reader::skip)s it.
/// Reading a value of another type than asked skips it and answers `Some(None)` (or
/// `Some(false)`), as `Value::as_str` and its kin answer `None`.
///
/// The strings read are checked as serde_json checks them (escapes, paired surrogates, no
/// raw control characters, UTF-8) and unescaped, borrowed when they hold no escape. Skipped
/// values are checked for the grammar only: a skipped string is searched for its closing
/// quote, its contents unchecked. Every method answers `None` when the bytes are not what it
/// expects, and for what it leaves to serde_json: a key spelled with escapes, nesting deeper
/// than [`MAX_DEPTH`], numbers with more than 100 digits or an exponent of 100 or more (which
/// serde_json may find out of range). The reader never recurses on its own: callers nest as
/// deep as the members they read, skipping is iterative, and each byte is looked at a bounded
/// number of times.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The objects and arrays open around `pos`.
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            pos: 0,
            depth: 0,
        }
    }

    /// The next byte that is not white space, where the reader now stands.
    fn peek(&mut self) -> Option<u8> {
        self.pos = skip_ws(self.bytes, self.pos);
        self.bytes.get(self.pos).copied()
    }

    /// Whether only white space is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Runs one of the validator's steps from the reader's position.
    fn validate(&mut self, step: impl FnOnce(&mut Validator<'a>) -> bool) -> Option<()> {
        let mut validator = Validator {
            bytes: self.bytes,
            pos: self.pos,
        };
        let valid = step(&mut validator);
        self.pos = validator.pos;
        valid.then_some(())
    }

    /// Steps into the object or array whose bracket the reader stands on.
    fn open(&mut self) -> Option<()> {
        self.pos += 1;
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Steps out of the object or array whose closing bracket the reader stands on.
    fn close(&mut self) {
        self.pos += 1;
        self.depth -= 1;
    }

    /// Hands each member of an object to `member`, with its key as written (without the
    /// quotes); `member` must read or skip the value. `Some(false)`: another value, skipped.
    pub(crate) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<bool> {
        if self.peek()? != b'{' {
            self.skip()?;
            return Some(false);
        }
        self.open()?;
        if self.peek()? != b'}' {
            loop {
                let key = self.key()?;
                member(self, key)?;
                match self.peek()? {
                    b',' => self.pos += 1,
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        self.close();
        Some(true)
    }

    /// A member's key and its `:`; `None` for a key spelled with escapes.
    fn key(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos + 1;
        let end = string_stop(self.bytes, start, false)?;
        if self.bytes[end] != b'"' {
            return None;
        }
        self.pos = end + 1;
        if self.peek()? != b':' {
            return None;
        }
        self.pos += 1;
        Some(&self.bytes[start..end])
    }

    /// Hands each element of an array to `element`, which must read or skip it.
    /// `Some(false)`: another value, skipped.
    pub(crate) fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<bool> {
        if self.peek()? != b'[' {
            self.skip()?;
            return Some(false);
        }
        self.open()?;
        if self.peek()? != b']' {
            loop {
                element(self)?;
                match self.peek()? {
                    b',' => self.pos += 1,
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.close();
        Some(true)
    }

    /// A string, unescaped; `Some(None)`: another value, skipped.
    pub(crate) fn string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? != b'"' {
            self.skip()?;
            return Some(None);
        }
        let start = self.pos + 1;
        let end = string_stop(self.bytes, start, true)?;
        match self.bytes[end] {
            b'"' => {}
            b'\\' => return self.unescape(start).map(|s| Some(Cow::Owned(s))),
            // A raw control character, which serde_json rejects.
            _ => return None,
        }
        let raw = &self.bytes[start..end];
        self.pos = end + 1;
        std::str::from_utf8(raw)
            .ok()
            .map(|s| Some(Cow::Borrowed(s)))
    }

    /// The string with escapes that starts at `start` (just past its opening quote).
    fn unescape(&mut self, start: usize) -> Option<String> {
        let mut out = Vec::new();
        let mut pos = start;
        loop {
            let rest = self.bytes.get(pos..)?;
            let at = memchr2(b'"', b'\\', rest)?;
            if has_control(&rest[..at]) {
                return None;
            }
            out.extend_from_slice(&rest[..at]);
            pos += at + 1;
            if rest[at] == b'"' {
                break;
            }
            let byte = match *self.bytes.get(pos)? {
                b'"' => b'"',
                b'\\' => b'\\',
                b'/' => b'/',
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'u' => {
                    self.pos = pos + 1;
                    let c = self.unicode_escape()?;
                    pos = self.pos;
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    continue;
                }
                _ => return None,
            };
            out.push(byte);
            pos += 1;
        }
        self.pos = pos;
        String::from_utf8(out).ok()
    }

    /// The character of a `\u` escape whose four hex digits start at the reader's position,
    /// a surrogate pair's second escape included.
    fn unicode_escape(&mut self) -> Option<char> {
        let mut validator = Validator {
            bytes: self.bytes,
            pos: self.pos,
        };
        let code = match validator.hex4()? {
            high @ 0xD800..=0xDBFF => {
                if !(validator.eat(b'\\') && validator.eat(b'u')) {
                    return None;
                }
                let low = validator
                    .hex4()
                    .filter(|low| (0xDC00..=0xDFFF).contains(low))?;
                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
            }
            code => code,
        };
        self.pos = validator.pos;
        char::from_u32(code)
    }

    /// A number; `Some(None)`: another value, skipped.
    pub(crate) fn number(&mut self) -> Option<Option<Number>> {
        if !matches!(self.peek()?, b'-' | b'0'..=b'9') {
            self.skip()?;
            return Some(None);
        }
        let text = self.number_text()?;
        let (negative, digits) = match text.strip_prefix(b"-") {
            Some(digits) => (true, digits),
            None => (false, text),
        };
        let mut n: u64 = 0;
        for &digit in digits {
            if !digit.is_ascii_digit() {
                return Some(Some(Number::Float));
            }
            match n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(digit - b'0')))
            {
                Some(next) => n = next,
                None => return Some(Some(Number::Float)),
            }
        }
        if !negative {
            return Some(Some(Number::U64(n)));
        }
        // serde_json reads `-0` and integers below `i64::MIN` as floats.
        let negated = (n as i64).wrapping_neg();
        Some(Some(if negated >= 0 {
            Number::Float
        } else {
            Number::I64(negated)
        }))
    }

    /// The text of the number the reader stands on; `None` when it breaks the grammar or
    /// may be out of serde_json's range (see [`Reader`]).
    fn number_text(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        self.validate(Validator::number)?;
        let text = &self.bytes[start..self.pos];
        let mantissa = text
            .iter()
            .position(|&b| matches!(b, b'e' | b'E'))
            .unwrap_or(text.len());
        let exponent = text[mantissa..]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .skip_while(|&&b| b == b'0')
            .count();
        (mantissa <= 100 && exponent <= 2).then_some(text)
    }

    /// Whether the value is anything but `null`; it is skipped.
    pub(crate) fn present(&mut self) -> Option<bool> {
        let null = self.peek()? == b'n';
        self.skip()?;
        Some(!null)
    }

    /// Skips one value, checking its grammar but not the contents of its strings.
    pub(crate) fn skip(&mut self) -> Option<()> {
        // Bit `i` of `objects`: whether the container `i` levels in from the innermost is an
        // object (rather than an array); `MAX_DEPTH` levels fit.
        let mut objects: u128 = 0;
        let mut open = 0;
        loop {
            match self.peek()? {
                bracket @ (b'{' | b'[') => {
                    self.open()?;
                    let object = bracket == b'{';
                    let empty = self.peek()? == if object { b'}' } else { b']' };
                    if empty {
                        self.close();
                    } else {
                        objects = (objects << 1) | u128::from(object);
                        open += 1;
                        if object {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                b'"' => self.pos = string_end(self.bytes, self.pos)?,
                b'-' | b'0'..=b'9' => {
                    self.number_text()?;
                }
                b't' => self.validate(|v| v.literal(b"true"))?,
                b'f' => self.validate(|v| v.literal(b"false"))?,
                b'n' => self.validate(|v| v.literal(b"null"))?,
                _ => return None,
            }
            // A value ended: a separator, or the ends of the containers it completes.
            loop {
                if open == 0 {
                    return Some(());
                }
                let object = objects & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.pos += 1;
                        if object {
                            self.skip_key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                self.close();
                objects >>= 1;
                open -= 1;
            }
        }
    }

    /// Skips a member's key (escapes and all) and its `:`.
    fn skip_key(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.pos = string_end(self.bytes, self.pos)?;
        if self.peek()? != b':' {
            return None;
        }
        self.pos += 1;
        Some(())
    }
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

    /// The reader's numbers and strings are serde_json's.
    #[test]
    fn the_reader_reads_as_serde_json() {
        for text in [
            "0",
            "-0",
            "7",
            "-7",
            "1.5",
            "-0.0",
            "1e3",
            "1E+2",
            "2e-1",
            "0e0",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "-18446744073709551616",
            "123456789012345678901234567890",
            "1e99",
        ] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            let number = Reader::new(text.as_bytes()).number().unwrap().unwrap();
            assert_eq!(number.as_u64(), value.as_u64(), "{text}");
            assert_eq!(number.as_i64(), value.as_i64(), "{text}");
        }
        for text in [
            r#""""#,
            r#""plain""#,
            r#""\"\\\/\b\f\n\r\t""#,
            r#""\u00e9\u0000\uFFFF""#,
            r#""\ud83d\ude00 \uD83D\uDE00""#,
            "\"h\u{e9}llo \u{1F600}\"",
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83d\u0041""#,
            r#""\ud83d\""#,
            r#""\u12""#,
            r#""\x""#,
            "\"a\tb\"",
            "\"a\\\u{1}\"",
            r#""abc"#,
            r#""abc\"#,
        ] {
            let serde = serde_json::from_str::<String>(text).ok();
            let mut reader = Reader::new(text.as_bytes());
            let read = reader.string().map(|s| s.unwrap().into_owned());
            assert_eq!(read, serde, "{text}");
            if read.is_some() {
                assert!(reader.at_end(), "{text}");
            }
        }
        for bytes in [&b"\"\xff\""[..], b"\"\xc3\"", b"\"\\u00e9\xff\""] {
            assert_eq!(Reader::new(bytes).string(), None);
        }
        // Other types are skipped: `Some(None)`, the reader past them.
        let mut reader = Reader::new(br#"[ "s" , {"a":[1,{"b":"}"}]} , null ]"#);
        let mut seen = Vec::new();
        let array = reader.array(|r| {
            seen.push(r.number()?);
            Some(())
        });
        assert_eq!(array, Some(true));
        assert_eq!(seen, [None, None, None]);
        assert!(reader.at_end());
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

    /// What [`string_stop`] answers, byte by byte.
    fn string_stop_naive(bytes: &[u8], from: usize, controls: bool) -> Option<usize> {
        let stop = bytes
            .get(from..)?
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || (controls && b < 0x20))?;
        Some(from + stop)
    }

    #[test]
    fn string_stops_are_the_first_stop_byte() {
        let mut cases: Vec<Vec<u8>> = vec![b"".to_vec(), b"\"".to_vec(), b"abc".to_vec()];
        // Every stop byte, and the bytes next to them in value, at every offset of a string
        // longer than the word-at-a-time part.
        for stop in [b'"', b'\\', 0x00, 0x01, 0x1f] {
            for at in 0..48 {
                for filler in [
                    b'a',
                    b' ',
                    b'!',
                    b'#',
                    b'[',
                    b']',
                    0x7f,
                    0x80,
                    0xff,
                    b'"' - 1,
                ] {
                    let mut bytes = vec![filler; 48];
                    bytes[at] = stop;
                    cases.push(bytes);
                }
            }
        }
        // A stop after a byte that borrows in the word arithmetic.
        cases.push(b"\x00\"xxxxxxxxxx".to_vec());
        cases.push(b"\x1f\x00\x22\\".to_vec());
        for bytes in &cases {
            for from in 0..=bytes.len() + 1 {
                for controls in [false, true] {
                    assert_eq!(
                        string_stop(bytes, from, controls),
                        string_stop_naive(bytes, from, controls),
                        "{bytes:?} from {from}, controls {controls}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// [`string_stop`] finds what a byte-by-byte search finds, in any bytes.
        #[test]
        fn string_stops_agree_with_a_byte_search(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff]),
                0..80,
            ),
            from in 0usize..90,
            controls in proptest::bool::ANY,
        ) {
            proptest::prop_assert_eq!(
                string_stop(&bytes, from, controls),
                string_stop_naive(&bytes, from, controls)
            );
        }
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
