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
use std::sync::LazyLock;

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
        let code = hex4(self.bytes.get(self.pos..)?)?;
        self.pos += 4;
        Some(code)
    }
}

/// The value of the four hex digits `bytes` starts with (a `\u` escape's).
fn hex4(bytes: &[u8]) -> Option<u32> {
    let mut code = 0;
    for &digit in bytes.get(..4)? {
        code = code * 16 + char::from(digit).to_digit(16)?;
    }
    Some(code)
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

/// The end (exclusive) of the string whose opening quote is at `pos`, checked as serde_json
/// checks a string it ignores (`IgnoredAny`, its `ignore_str`): no raw control character,
/// every escape one of JSON's, `\u` followed by four hex digits. It pairs no surrogates and
/// does not check UTF-8, as serde_json does not there.
fn ignored_string_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let mut at = pos + 1;
    loop {
        at = string_stop(bytes, at, true)?;
        match bytes[at] {
            b'"' => return Some(at + 1),
            b'\\' => match *bytes.get(at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                b'u' => {
                    let hex = bytes.get(at + 2..at + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    at += 6;
                }
                _ => return None,
            },
            // A raw control character.
            _ => return None,
        }
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
#[inline(always)]
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

/// The length in bytes of the JSON string starting at `s[0] == '"'` once unescaped: its
/// text's UTF-8 length, as the full read counts it (`\"` is one byte, `\u00e9` two, a
/// surrogate pair four). `None` when the string does not end or an escape is invalid.
pub(crate) fn string_len(s: &[u8]) -> Option<usize> {
    let body = s.strip_prefix(b"\"")?;
    let (mut len, mut at) = (0, 0);
    loop {
        let stop = at + memchr2(b'"', b'\\', &body[at..])?;
        len += stop - at;
        if body[stop] == b'"' {
            return Some(len);
        }
        at = stop + 2;
        len += match *body.get(stop + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 1,
            b'u' => {
                let (bytes, used) = escaped_char_len(body.get(at..)?)?;
                at += used;
                bytes
            }
            _ => return None,
        };
    }
}

/// The UTF-8 length of the character of a `\u` escape whose hex digits start `rest`, and how
/// many bytes of `rest` it takes (a surrogate pair's second escape included); `None` for a
/// lone surrogate or digits that are not hex, which serde_json rejects.
pub(crate) fn escaped_char_len(rest: &[u8]) -> Option<(usize, usize)> {
    Some(match hex4(rest)? {
        0xD800..=0xDBFF => {
            let low = rest
                .get(4..6)
                .filter(|e| *e == b"\\u")
                .and(hex4(rest.get(6..)?))?;
            (0xDC00..=0xDFFF).contains(&low).then_some((4, 10))?
        }
        0xDC00..=0xDFFF => return None,
        0..=0x7F => (1, 4),
        0x80..=0x7FF => (2, 4),
        _ => (3, 4),
    })
}

/// The end (exclusive) of the number at `pos` when it is the common kind, an integer of 1 to
/// 19 digits (`-` allowed, no leading zero, no fraction or exponent after it), where
/// [`Validator::number`] would stop too; `None` for any other, left to it.
fn short_integer_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let first = pos + usize::from(bytes.get(pos) == Some(&b'-'));
    let rest = bytes.get(first..)?;
    let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let plain = (1..=19).contains(&len)
        && (len == 1 || rest[0] != b'0')
        && !matches!(rest.get(len), Some(b'.' | b'e' | b'E'));
    plain.then_some(first + len)
}

/// The number serde_json reads from `text`, an integer [`short_integer_end`] found (its
/// digits fit a `u64`): as [`serde_number`] values it, without its general walk.
fn short_integer(text: &[u8]) -> Number {
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    let n = digits
        .iter()
        .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0'));
    match (negative, n) {
        (false, n) => Number::U64(n),
        // serde_json reads `-0` and integers below `i64::MIN` as floats.
        (true, 0) => Number::Float(-0.0),
        (true, n) if n <= 1 << 63 => Number::I64((n as i64).wrapping_neg()),
        (true, n) => Number::Float(-(n as f64)),
    }
}

/// How deeply [`Reader`] follows nesting: as deep as serde_json parses (it fails deeper).
const MAX_DEPTH: usize = 127;

/// A JSON number as serde_json reads it: a non-negative integer that fits `u64`, a negative
/// one that fits `i64`, else a float (`1.5`, `1e3`, `-0`, integers that fit neither), with the
/// value serde_json gives it (see [`serde_number`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    U64(u64),
    I64(i64),
    Float(f64),
}

impl Number {
    /// What `Value::as_u64` answers.
    pub(crate) fn as_u64(self) -> Option<u64> {
        match self {
            Number::U64(n) => Some(n),
            Number::I64(n) => u64::try_from(n).ok(),
            Number::Float(_) => None,
        }
    }

    /// What `Value::as_i64` answers.
    pub(crate) fn as_i64(self) -> Option<i64> {
        match self {
            Number::U64(n) => i64::try_from(n).ok(),
            Number::I64(n) => Some(n),
            Number::Float(_) => None,
        }
    }

    /// What `Value::as_f64` answers: any number, integers converted with `as`.
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Number::U64(n) => n as f64,
            Number::I64(n) => n as f64,
            Number::Float(f) => f,
        }
    }
}

/// The powers of ten serde_json's float parser holds, `1e0` to `1e308`, each the float
/// closest to it (as its literals are).
static POW10: LazyLock<[f64; 309]> =
    LazyLock::new(|| std::array::from_fn(|i| format!("1e{i}").parse().expect("a float literal")));

/// `n` with the ASCII digit `digit` appended, when that fits a `u64`.
fn push_digit(n: u64, digit: u8) -> Option<u64> {
    n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
}

/// The number serde_json reads from `text`, a number that passed the grammar, as its parser
/// reads it without its `float_roundtrip` feature (this build's): an integer when it fits, else
/// a float made as serde_json makes it, which is not always the float closest to the text
/// (`str::parse` finds that one): the first digits that fit a `u64` (further integer digits
/// count as powers of ten, further fraction digits are dropped), converted with `as f64`, then
/// multiplied or divided by a power of ten from [`POW10`]. `None` where serde_json fails: the
/// float is infinite.
fn serde_number(text: &[u8]) -> Option<Number> {
    let (positive, text) = match text.strip_prefix(b"-") {
        Some(rest) => (false, rest),
        None => (true, text),
    };
    let mut at = 0;
    let mut significand = 0u64;
    // The power of ten the significand is to be scaled by.
    let mut exponent = 0i32;
    let mut full = false;
    while let Some(&digit @ b'0'..=b'9') = text.get(at) {
        at += 1;
        match push_digit(significand, digit).filter(|_| !full) {
            Some(next) => significand = next,
            None => {
                full = true;
                exponent += 1;
            }
        }
    }
    if at == text.len() && !full {
        return Some(match (positive, (significand as i64).wrapping_neg()) {
            (true, _) => Number::U64(significand),
            // serde_json reads `-0` and integers below `i64::MIN` as floats.
            (false, 0..) => Number::Float(-(significand as f64)),
            (false, negated) => Number::I64(negated),
        });
    }
    if text.get(at) == Some(&b'.') {
        at += 1;
        // Fraction digits are appended again even after an integer part too long for a
        // `u64` (serde_json's `parse_decimal` starts afresh), and dropped once one does not fit.
        let mut full = false;
        while let Some(&digit @ b'0'..=b'9') = text.get(at) {
            at += 1;
            match push_digit(significand, digit).filter(|_| !full) {
                Some(next) => {
                    significand = next;
                    exponent -= 1;
                }
                None => full = true,
            }
        }
    }
    if matches!(text.get(at), Some(b'e' | b'E')) {
        let (positive_exp, digits) = match text.get(at + 1) {
            Some(b'-') => (false, &text[at + 2..]),
            Some(b'+') => (true, &text[at + 2..]),
            _ => (true, &text[at + 1..]),
        };
        let exp = digits.iter().try_fold(0i32, |exp, &digit| {
            exp.checked_mul(10)?.checked_add(i32::from(digit - b'0'))
        });
        exponent = match (exp, positive_exp) {
            (Some(exp), true) => exponent.saturating_add(exp),
            (Some(exp), false) => exponent.saturating_sub(exp),
            // An exponent beyond `i32`: zero, or out of range.
            (None, _) if significand != 0 && positive_exp => return None,
            (None, _) => return Some(Number::Float(if positive { 0.0 } else { -0.0 })),
        };
    }
    let f = f64_from_parts(significand, exponent)?;
    Some(Number::Float(if positive { f } else { -f }))
}

/// `significand` times ten to the `exponent`, as serde_json's `f64_from_parts` computes it
/// (without `float_roundtrip`); `None` when it overflows, where serde_json fails.
fn f64_from_parts(significand: u64, mut exponent: i32) -> Option<f64> {
    let mut f = significand as f64;
    loop {
        match POW10.get(exponent.unsigned_abs() as usize) {
            Some(&pow) if exponent >= 0 => {
                f *= pow;
                return (!f.is_infinite()).then_some(f);
            }
            Some(&pow) => return Some(f / pow),
            None if f == 0.0 => return Some(f),
            None if exponent >= 0 => return None,
            None => {
                f /= 1e308;
                exponent += 308;
            }
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
///
/// A reader made [`like_serde`](Reader::like_serde) checks more, to answer `Some` exactly
/// where serde_json reading a view (a `#[derive(Deserialize)]` struct of [`Loose`] members,
/// see [`view`]) succeeds.
///
/// [`Loose`]: super::view::Loose
/// [`view`]: super::view
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The objects and arrays open around `pos`.
    depth: usize,
    /// Made [`like_serde`](Reader::like_serde).
    like_serde: bool,
    /// The document as text, when it is known to be UTF-8 throughout
    /// ([`from_text`](Reader::from_text)): a string without escapes is then a slice of it,
    /// not checked again.
    text: Option<&'a str>,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            pos: 0,
            depth: 0,
            like_serde: false,
            text: None,
        }
    }

    /// A reader at the start of `text`, which reads as [`new`](Reader::new)'s reads its
    /// bytes: a string is UTF-8 in a `str`, so the strings read need no check of their own.
    pub(crate) fn from_text(text: &'a str) -> Self {
        Reader {
            text: Some(text),
            ..Reader::new(text.as_bytes())
        }
    }

    /// A reader at the start of `bytes` that fails where serde_json fails reading a view of
    /// them with `from_slice`. Beyond what a reader made with [`new`](Reader::new) checks:
    ///
    /// - [`skip`](Reader::skip) checks the strings it skips (keys too) as serde_json checks
    ///   those it ignores (`IgnoredAny`): no raw control character, only JSON's escapes, four
    ///   hex digits after `\u`. It does not pair surrogates nor check UTF-8, as serde_json
    ///   does not there.
    /// - A value of another type than asked (a `Loose` member `None`) is read as serde_json
    ///   reads it (`deserialize_any`): a string in full (as [`string`](Reader::string)), an
    ///   object's keys in full and its values as `skip` does, an array's elements as `skip`
    ///   does.
    /// - The keys [`object`](Reader::object) hands out are checked as strings: no raw control
    ///   character, UTF-8 (serde_json reads them as `str`).
    ///
    /// It still leaves to serde_json what `new`'s does (escaped keys, deep nesting, long
    /// numbers), and it is stricter about depth: serde_json does not count the containers it
    /// ignores.
    pub(crate) fn like_serde(bytes: &'a [u8]) -> Self {
        Reader {
            like_serde: true,
            ..Reader::new(bytes)
        }
    }

    /// A reader of `text` (as [`from_text`](Reader::from_text)'s) standing at `pos`, at the
    /// value of a member of the top-level object: the caller read the bytes before, and
    /// reads the rest of that object ([`object_rest`](Reader::object_rest)) after the value.
    pub(crate) fn from_text_at(text: &'a str, pos: usize) -> Self {
        Reader {
            pos,
            depth: 1,
            ..Reader::from_text(text)
        }
    }

    /// The next byte that is not white space, where the reader now stands: the first byte of
    /// the next value (or a separator).
    #[inline]
    pub(crate) fn peek(&mut self) -> Option<u8> {
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
    #[inline(always)]
    pub(crate) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<bool> {
        if self.peek()? != b'{' {
            self.skip_other()?;
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

    /// The rest of an object after one of its members' values, where the reader stands: its
    /// other members, handed to `member` as [`object`](Reader::object) hands them, and its
    /// closing brace.
    pub(crate) fn object_rest(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        loop {
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    let key = self.key()?;
                    member(self, key)?;
                }
                b'}' => break,
                _ => return None,
            }
        }
        self.close();
        Some(())
    }

    /// A member's key and its `:`; `None` for a key spelled with escapes.
    #[inline(always)]
    fn key(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos + 1;
        let end = string_stop(self.bytes, start, self.like_serde)?;
        if self.bytes[end] != b'"' {
            return None;
        }
        let key = &self.bytes[start..end];
        if self.like_serde && self.text.is_none() && std::str::from_utf8(key).is_err() {
            return None;
        }
        self.pos = end + 1;
        if self.peek()? != b':' {
            return None;
        }
        self.pos += 1;
        Some(key)
    }

    /// Hands each element of an array to `element`, which must read or skip it.
    /// `Some(false)`: another value, skipped.
    pub(crate) fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<bool> {
        if self.peek()? != b'[' {
            self.skip_other()?;
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
    #[inline]
    pub(crate) fn string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? != b'"' {
            self.skip_other()?;
            return Some(None);
        }
        self.read_string().map(Some)
    }

    /// The string whose opening quote the reader stands on, unescaped.
    #[inline]
    fn read_string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.pos + 1;
        let end = string_stop(self.bytes, start, true)?;
        match self.bytes[end] {
            b'"' => {}
            b'\\' => return self.unescape(start).map(Cow::Owned),
            // A raw control character, which serde_json rejects.
            _ => return None,
        }
        self.pos = end + 1;
        // Both ends are ASCII quotes, so the slice of a `str` is on its character boundaries.
        match self.text {
            Some(text) => text.get(start..end).map(Cow::Borrowed),
            None => std::str::from_utf8(&self.bytes[start..end])
                .ok()
                .map(Cow::Borrowed),
        }
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

    /// A number, valued as serde_json values it; `Some(None)`: another value, skipped.
    #[inline]
    pub(crate) fn number(&mut self) -> Option<Option<Number>> {
        if !matches!(self.peek()?, b'-' | b'0'..=b'9') {
            self.skip_other()?;
            return Some(None);
        }
        let start = self.pos;
        if let Some(end) = short_integer_end(self.bytes, start) {
            self.pos = end;
            return Some(Some(short_integer(&self.bytes[start..end])));
        }
        let text = self.number_text()?;
        serde_number(text).map(Some)
    }

    /// `true` or `false`; `Some(None)`: another value, skipped.
    pub(crate) fn boolean(&mut self) -> Option<Option<bool>> {
        let word: &[u8] = match self.peek()? {
            b't' => b"true",
            b'f' => b"false",
            _ => {
                self.skip_other()?;
                return Some(None);
            }
        };
        self.validate(|v| v.literal(word))?;
        Some(Some(word == b"true"))
    }

    /// Skips a value of another type than the one asked for: as [`skip`](Reader::skip) does,
    /// or (made [`like_serde`](Reader::like_serde)) as serde_json reads it for a member that
    /// does not take it.
    fn skip_other(&mut self) -> Option<()> {
        if !self.like_serde {
            return self.skip();
        }
        match self.peek()? {
            b'"' => self.read_string().map(drop),
            b'{' => self.object(|reader, _| reader.skip()).map(drop),
            b'[' => self.array(Reader::skip).map(drop),
            _ => self.skip(),
        }
    }

    /// The end (exclusive) of the string whose opening quote is at `pos`, for a value or key
    /// skipped: checked as serde_json checks it when the reader is made
    /// [`like_serde`](Reader::like_serde).
    fn skipped_string_end(&self, pos: usize) -> Option<usize> {
        if self.like_serde {
            ignored_string_end(self.bytes, pos)
        } else {
            string_end(self.bytes, pos)
        }
    }

    /// The text of the number the reader stands on; `None` when it breaks the grammar or
    /// may be out of serde_json's range (see [`Reader`]).
    fn number_text(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        if let Some(end) = short_integer_end(self.bytes, start) {
            self.pos = end;
            return Some(&self.bytes[start..end]);
        }
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

    /// Skips one value, checking its grammar but not the contents of its strings (unless
    /// [`like_serde`](Reader::like_serde)).
    #[inline]
    pub(crate) fn skip(&mut self) -> Option<()> {
        // A string or a number, the values skipped most, without the containers' bookkeeping.
        match self.peek()? {
            b'"' => {
                self.pos = self.skipped_string_end(self.pos)?;
                Some(())
            }
            b'-' | b'0'..=b'9' => self.number_text().map(drop),
            _ => self.skip_any(),
        }
    }

    /// [`skip`](Reader::skip) of any value: containers, literals, strings and numbers.
    fn skip_any(&mut self) -> Option<()> {
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
                b'"' => self.pos = self.skipped_string_end(self.pos)?,
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
        self.pos = self.skipped_string_end(self.pos)?;
        if self.peek()? != b':' {
            return None;
        }
        self.pos += 1;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::test_docs;
    use super::*;
    use crate::genai::view::Loose;
    use serde::de::IgnoredAny;

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
            "0.1",
            "-0.0",
            "1e-99",
            "18446744073709551616.5",
            "2.2250738585072014e-99",
        ] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            let number = Reader::new(text.as_bytes()).number().unwrap().unwrap();
            assert_eq!(number.as_u64(), value.as_u64(), "{text}");
            assert_eq!(number.as_i64(), value.as_i64(), "{text}");
            assert_eq!(
                number.as_f64().to_bits(),
                value.as_f64().unwrap().to_bits(),
                "{text}"
            );
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

    /// serde_json (without `float_roundtrip`) does not always read the float closest to the
    /// text, which `str::parse` reads: the reader reads serde_json's.
    #[test]
    fn floats_are_serde_json_s_not_the_closest() {
        for (text, serde, closest) in [
            ("3e23", 2.9999999999999997e23, 3e23),
            ("9.036769477128741", 9.03676947712874, 9.036769477128741),
        ] {
            assert_eq!(serde_json::from_str::<f64>(text).unwrap(), serde);
            assert_eq!(text.parse::<f64>().unwrap(), closest);
            assert_ne!(serde, closest);
            let read = Reader::new(text.as_bytes()).number().unwrap().unwrap();
            assert_eq!(read.as_f64(), serde, "{text}");
        }
        let mut differ = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let exponent = (state % 90) as i32 - 45;
            let text = format!("{}.{}e{exponent}", state % 10, state / 10);
            let serde = serde_json::from_str::<f64>(&text).unwrap();
            let read = Reader::new(text.as_bytes()).number().unwrap().unwrap();
            assert_eq!(read.as_f64().to_bits(), serde.to_bits(), "{text}");
            if text.parse::<f64>().unwrap() != serde {
                differ.push(text);
            }
        }
        assert!(!differ.is_empty(), "str::parse would do");
    }

    /// Strings as serde_json checks those it ignores, values it reads, and those it reads for
    /// a view member that does not take them.
    #[test]
    fn a_reader_like_serde_checks_what_serde_json_checks() {
        let skip = |doc: &[u8]| {
            let mut reader = Reader::like_serde(doc);
            reader.skip().is_some() && reader.at_end()
        };
        // Ignored: unpaired surrogates and bytes that are not UTF-8 pass, in keys too.
        for good in [
            &br#"["\ud800", "\udc00 \ud83d\u0041", {"\ud800": 1}]"#[..],
            b"[\"\xff\", {\"\xc3\": \"\xed\xa0\x80\"}]",
            br#"{"a\"b": "\"\\\/\b\f\n\r\t\u00e9\uABCD"}"#,
        ] {
            assert!(serde_json::from_slice::<serde::de::IgnoredAny>(good).is_ok());
            assert!(skip(good), "{}", String::from_utf8_lossy(good));
            assert!(Reader::new(good).skip().is_some());
        }
        // Raw control characters and broken escapes fail, in keys too; the plain reader
        // lets them pass.
        for bad in [
            &b"[\"a\x01\"]"[..],
            b"[\"tab\there\"]",
            b"{\"k\x1f\": 1}",
            br#"["\x"]"#,
            br#"["\u12"]"#,
            br#"["\u12", "abcd"]"#,
            br#"["\uZZZZ"]"#,
            br#"{"\'": 1}"#,
            br#"["\"#,
        ] {
            assert!(serde_json::from_slice::<serde::de::IgnoredAny>(bad).is_err());
            assert!(!skip(bad), "{}", String::from_utf8_lossy(bad));
        }
        assert!(Reader::new(br#"["\x"]"#).skip().is_some());
        // A value of another type, read in full: its string, its keys.
        for other in [
            &br#""\ud800""#[..],
            b"\"\xff\"",
            br#"{"\ud800": 1}"#,
            b"{\"\xff\": 1}",
        ] {
            assert!(serde_json::from_slice::<Loose<bool>>(other).is_err());
            assert_eq!(Reader::like_serde(other).boolean(), None);
            assert_eq!(Reader::new(other).boolean(), Some(None));
        }
        // Its values are ignored.
        let other = b"{\"a\": \"\\ud800\", \"b\": [\"\xff\"]}";
        assert!(serde_json::from_slice::<Loose<bool>>(other).is_ok());
        assert_eq!(Reader::like_serde(other).boolean(), Some(None));
        // Keys handed out are checked.
        let mut reader = Reader::like_serde(b"{\"\xff\": 1}");
        assert_eq!(reader.object(|r, _| r.skip()), None);
    }

    /// What a reader like serde reads from `bytes` with `read`, to its end.
    fn read_like_serde(
        bytes: &[u8],
        read: impl FnOnce(&mut Reader<'_>) -> Option<String>,
    ) -> Option<String> {
        let mut reader = Reader::like_serde(bytes);
        read(&mut reader).filter(|_| reader.at_end())
    }

    /// What serde_json reads from `bytes` as a `T`, written with `show`.
    fn read_serde<'a, T: serde::Deserialize<'a>>(
        bytes: &'a [u8],
        show: impl FnOnce(T) -> String,
    ) -> Option<String> {
        serde_json::from_slice::<T>(bytes).ok().map(show)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Numbers are valued as serde_json values them, and left to it only when long.
        #[test]
        fn numbers_are_valued_as_serde_json_values_them(text in test_docs::number(test_docs::Dirt::Broken)) {
            let value = serde_json::from_str::<serde_json::Value>(&text);
            let mut reader = Reader::new(text.as_bytes());
            match reader.number() {
                Some(number) => {
                    let value = value.unwrap();
                    let number = number.unwrap();
                    proptest::prop_assert!(reader.at_end());
                    proptest::prop_assert_eq!(number.as_u64(), value.as_u64());
                    proptest::prop_assert_eq!(number.as_i64(), value.as_i64());
                    proptest::prop_assert_eq!(
                        number.as_f64().to_bits(),
                        value.as_f64().unwrap().to_bits()
                    );
                }
                None => {
                    let (mantissa, exponent) = text.split_once(['e', 'E']).unwrap_or((&text, ""));
                    let long = mantissa.len() > 100
                        || exponent.trim_start_matches(['+', '-', '0']).len() > 2;
                    proptest::prop_assert!(value.is_err() || long, "{}", text);
                }
            }
        }

        /// A reader of a `str` reads what a reader of the same bytes reads: values, strings
        /// borrowed or unescaped, failures.
        #[test]
        fn reading_text_agrees_with_reading_bytes(
            doc in test_docs::any_doc(&["a", "id"], test_docs::Dirt::Broken),
            space in proptest::sample::select(vec!["", " ", "\n\t\r "]),
        ) {
            let bytes = doc.bytes(space);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
                proptest::prop_assert_eq!(
                    read_all(|| Reader::from_text(leaked)),
                    read_all(|| Reader::new(leaked.as_bytes()))
                );
            }
        }

        /// A reader like serde skips what serde_json ignores (`IgnoredAny`), and reads a
        /// value as serde_json reads a view member of that type (`Loose`); what it leaves to
        /// serde_json is long numbers and escaped keys.
        #[test]
        fn reading_like_serde_agrees_with_serde_json(
            doc in test_docs::any_doc(&["a", "id"], test_docs::Dirt::Broken),
            space in proptest::sample::select(vec!["", " ", "\n\t\r "]),
        ) {
            let bytes = doc.bytes(space);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let left = Reader::new(&bytes).skip().is_none() || doc.has_escaped_key();
            let cases = [
                (
                    read_like_serde(&bytes, |r| r.skip().map(|()| String::new())),
                    read_serde(&bytes, |_: IgnoredAny| String::new()),
                ),
                (
                    read_like_serde(&bytes, |r| r.boolean().map(|b| format!("{b:?}"))),
                    read_serde(&bytes, |b: Loose<bool>| format!("{:?}", b.0)),
                ),
                (
                    read_like_serde(&bytes, |r| r.string().map(|s| format!("{s:?}"))),
                    read_serde(&bytes, |s: Loose<Cow<'_, str>>| format!("{:?}", s.0)),
                ),
                (
                    read_like_serde(&bytes, |r| {
                        r.number().map(|n| format!("{:?}", n.map(Number::as_f64)))
                    }),
                    read_serde(&bytes, |n: Loose<f64>| format!("{:?}", n.0)),
                ),
                (
                    read_like_serde(&bytes, |r| {
                        r.number().map(|n| format!("{:?}", n.and_then(Number::as_i64)))
                    }),
                    read_serde(&bytes, |n: Loose<i64>| format!("{:?}", n.0)),
                ),
            ];
            for (i, (reader, serde)) in cases.into_iter().enumerate() {
                match reader {
                    Some(reader) => proptest::prop_assert_eq!(Some(reader), serde, "{} {}", i, text),
                    None => proptest::prop_assert!(serde.is_none() || left, "{} {}", i, text),
                }
            }
        }
    }

    /// The integers [`short_integer_end`] takes are valued as [`serde_number`] values them;
    /// every other number is left to the grammar's walk.
    #[test]
    fn short_integers_are_valued_as_serde_number_values_them() {
        for text in [
            "0",
            "-0",
            "7",
            "-7",
            "10",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "9999999999999999999",
            "-9999999999999999999",
            "1000000000000000000",
        ] {
            let bytes = text.as_bytes();
            assert_eq!(short_integer_end(bytes, 0), Some(bytes.len()), "{text}");
            let fast = short_integer(bytes);
            let slow = serde_number(bytes).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
        }
        for text in [
            "",
            "-",
            "--1",
            "01",
            "-01",
            "00",
            "1.5",
            "1e3",
            "1E3",
            "0.0",
            "-0e1",
            "x",
            // Twenty digits: beyond what a `u64` always holds.
            "10000000000000000000",
            "18446744073709551615",
        ] {
            assert_eq!(short_integer_end(text.as_bytes(), 0), None, "{text}");
        }
        // The end is where the grammar's number ends, whatever follows.
        for (text, end) in [("12,", 2), ("-3}", 2), ("0]", 1), ("45 ", 2), ("6\"", 1)] {
            assert_eq!(short_integer_end(text.as_bytes(), 0), Some(end), "{text}");
            let mut reader = Reader::new(text.as_bytes());
            assert!(reader.number().is_some(), "{text}");
            assert_eq!(reader.pos, end, "{text}");
        }
    }

    /// Every value of the document at the reader, read as what it is, written to `out`.
    fn walk(reader: &mut Reader<'_>, out: &mut String) -> Option<()> {
        match reader.peek()? {
            b'{' => {
                reader.object(|reader, key| {
                    out.push_str(&format!("{key:?}:"));
                    walk(reader, out)
                })?;
            }
            b'[' => {
                reader.array(|reader| walk(reader, out))?;
            }
            b'"' => out.push_str(&format!("{:?}", reader.string()?)),
            b't' | b'f' => out.push_str(&format!("{:?}", reader.boolean()?)),
            b'n' => out.push_str(&format!("{:?}", reader.present()?)),
            _ => out.push_str(&format!("{:?}", reader.number()?)),
        }
        out.push(',');
        Some(())
    }

    /// What [`walk`] reads from the whole document, and what [`Reader::skip`] answers.
    fn read_all(make: impl Fn() -> Reader<'static>) -> (Option<String>, bool) {
        let mut reader = make();
        let mut out = String::new();
        let read = walk(&mut reader, &mut out)
            .filter(|()| reader.at_end())
            .map(|()| out);
        let mut reader = make();
        let skipped = reader.skip().is_some() && reader.at_end();
        (read, skipped)
    }

    #[test]
    fn a_reader_of_text_reads_as_a_reader_of_bytes() {
        for text in [
            r#"{"a":"caf\u00e9","id":["é😀",1,-0,1.5e3,true,null,{}],"b":"\"x\""}"#,
            r#"{"a":"tab\there","id":"\ud83d"}"#,
            "{\"a\":\"x\u{1}y\"}",
            r#"{"a":"unterminated}"#,
        ] {
            let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
            assert_eq!(
                read_all(|| Reader::from_text(leaked)),
                read_all(|| Reader::new(leaked.as_bytes())),
                "{text}"
            );
        }
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
        value_after(data, &finder(key))
    }

    #[test]
    fn key_values_are_found_with_or_without_spaces() {
        let compact = br#"{"a":1,"finish_reason":null,"content":"hi"}"#;
        assert_eq!(
            value(compact, "finish_reason"),
            Some(&br#"null,"content":"hi"}"#[..])
        );
        assert_eq!(value(compact, "content").and_then(string_len), Some(2));
        let spaced = br#"{"finish_reason" : "stop", "content": "h\"i\\"}"#;
        assert!(
            value(spaced, "finish_reason")
                .unwrap()
                .starts_with(b"\"stop\"")
        );
        // `h"i\`: four bytes of text, six as written.
        assert_eq!(value(spaced, "content").and_then(string_len), Some(4));
        assert_eq!(value(spaced, "text"), None);
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
    fn string_lengths_are_of_the_unescaped_text() {
        for (json, text) in [
            (r#""""#, ""),
            (r#""plain""#, "plain"),
            (r#""say \"hi\"""#, "say \"hi\""),
            (
                r#""caf\u00e9 \u20ac \ud83d\ude00 \n\t\/""#,
                "café € 😀 \n\t/",
            ),
            (r#""é raw""#, "é raw"),
        ] {
            assert_eq!(string_len(json.as_bytes()), Some(text.len()), "{json}");
            let parsed: String = serde_json::from_str(json).unwrap();
            assert_eq!(parsed, text);
        }
        for broken in [
            r#""open"#,
            r#""\q""#,
            r#""\u12""#,
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\u00g0""#,
        ] {
            assert_eq!(string_len(broken.as_bytes()), None, "{broken}");
        }
    }

    #[test]
    fn a_key_inside_a_string_value_is_not_a_key() {
        // The text mentions "finish_reason": but escaped, so it is not a key.
        let data = br#"{"content":"say \"finish_reason\": stop","finish_reason":null}"#;
        assert_eq!(value(data, "finish_reason"), Some(&b"null}"[..]));
        // A string value equal to a key name is not a key either.
        let data = br#"{"type":"content","content":"x"}"#;
        assert_eq!(value(data, "content").and_then(string_len), Some(1));
    }
}

/// JSON documents for property tests, good and bad: strings with escapes, unpaired
/// surrogates, bytes that are not UTF-8, raw control characters and broken escapes; numbers
/// in every spelling, in and out of range.
#[cfg(test)]
pub(crate) mod test_docs {
    use proptest::prelude::*;

    /// A document, written out by [`Doc::bytes`]; strings and tokens as written.
    #[derive(Debug, Clone)]
    pub(crate) enum Doc {
        /// A literal or number.
        Token(String),
        /// A string's contents, escapes as written.
        Str(Vec<u8>),
        Array(Vec<Doc>),
        /// Members, each key as written between its quotes.
        Object(Vec<(Vec<u8>, Doc)>),
    }

    impl Doc {
        /// Whether any key in the document is spelled with an escape.
        pub(crate) fn has_escaped_key(&self) -> bool {
            match self {
                Doc::Array(items) => items.iter().any(Doc::has_escaped_key),
                Doc::Object(members) => members
                    .iter()
                    .any(|(key, value)| key.contains(&b'\\') || value.has_escaped_key()),
                _ => false,
            }
        }

        /// The document, with `space` before every value, key and closing bracket.
        pub(crate) fn bytes(&self, space: &str) -> Vec<u8> {
            let mut out = Vec::new();
            self.write(space.as_bytes(), &mut out);
            out
        }

        fn write(&self, space: &[u8], out: &mut Vec<u8>) {
            out.extend_from_slice(space);
            match self {
                Doc::Token(token) => out.extend_from_slice(token.as_bytes()),
                Doc::Str(s) => {
                    out.push(b'"');
                    out.extend_from_slice(s);
                    out.push(b'"');
                }
                Doc::Array(items) => {
                    out.push(b'[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        item.write(space, out);
                    }
                    out.extend_from_slice(space);
                    out.push(b']');
                }
                Doc::Object(members) => {
                    out.push(b'{');
                    for (i, (key, value)) in members.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(space);
                        out.push(b'"');
                        out.extend_from_slice(key);
                        out.push(b'"');
                        out.extend_from_slice(space);
                        out.push(b':');
                        value.write(space, out);
                    }
                    out.extend_from_slice(space);
                    out.push(b'}');
                }
            }
        }
    }

    /// How far from clean the generated strings may be.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Dirt {
        /// Strings every serde_json path reads.
        Clean,
        /// Also what serde_json accepts only in strings it ignores: unpaired surrogates,
        /// bytes that are not UTF-8.
        Ignorable,
        /// Also what serde_json rejects everywhere: raw control characters, broken escapes.
        Broken,
    }

    /// Numbers as written: the usual ones, the edges of `i64`, `u64` and `f64`, and any in the
    /// grammar; unless `dirt` is [`Dirt::Clean`], now and then one out of range or longer than
    /// [`Reader`](super::Reader) reads.
    pub(crate) fn number(dirt: Dirt) -> BoxedStrategy<String> {
        let usual = prop::sample::select(vec![
            "0",
            "1",
            "7",
            "-1",
            "-0",
            "-0.0",
            "1.5",
            "0.0",
            "0.1",
            "0.7",
            "1e3",
            "1E+2",
            "-2.5e-3",
            "2e0",
            "0.30000000000000004",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "18446744073709551616.5",
            "-18446744073709551616",
            "123456789012345678901234567890",
            "1e99",
            "1e-99",
            "9.999999999999999e22",
            "2.2250738585072014e-99",
            "1e0000000000000000000001",
        ]);
        let extreme = prop::sample::select(vec![
            "1.7976931348623157e308",
            "1e308",
            "2e308",
            "2.2250738585072014e-308",
            "4.9e-324",
            "5e-324",
            "1e-400",
            "-1e-400",
            "1e400",
            "0e999",
            "1e2147483648",
            "0e2147483648",
            "1e-2147483648",
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901",
        ]);
        let grammar = "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,2})?";
        let long_exponent = "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,25})?[eE][+-]?[0-9]{3,4}";
        let in_range = prop_oneof![usual.prop_map(str::to_owned), grammar];
        if dirt == Dirt::Clean {
            return in_range.boxed();
        }
        prop_oneof![
            48 => in_range,
            1 => extreme.prop_map(str::to_owned),
            1 => long_exponent,
        ]
        .boxed()
    }

    /// A string's contents: pieces as clean as `dirt` allows.
    pub(crate) fn string(dirt: Dirt) -> BoxedStrategy<Vec<u8>> {
        let clean = prop::sample::select(vec![
            &b"a"[..],
            b"lorem ipsum ",
            b" ",
            b"\\\"",
            b"\\\\",
            b"\\/",
            b"\\n",
            b"\\t",
            b"\\b\\f\\r",
            b"\\u0000",
            b"\\u00e9",
            b"\\u00E9",
            b"\\ud83d\\ude00",
            b"\\uD83D\\uDE00",
            b"\\u006f",
            "é".as_bytes(),
            "😀".as_bytes(),
            b"\x7f",
            b"{",
            b"}",
            b"[",
            b"]",
            b":",
            b",",
            b"\\\"model\\\":",
        ]);
        let piece = match dirt {
            Dirt::Clean => clean.boxed(),
            Dirt::Ignorable => prop_oneof![40 => clean, 1 => ignorable()].boxed(),
            Dirt::Broken => prop_oneof![150 => clean, 4 => ignorable(), 1 => broken()].boxed(),
        };
        prop::collection::vec(piece, 0..6)
            .prop_map(|pieces| pieces.concat())
            .boxed()
    }

    /// What serde_json accepts only in strings it ignores.
    fn ignorable() -> impl Strategy<Value = &'static [u8]> {
        prop::sample::select(vec![
            &b"\\ud800"[..],
            b"\\udc00",
            b"\\ud83d\\u0041",
            b"\\ud83d\\n",
            b"\\ud83d\\ud83d",
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\x80",
        ])
    }

    /// What serde_json rejects in any string.
    fn broken() -> impl Strategy<Value = &'static [u8]> {
        prop::sample::select(vec![
            &b"\x01"[..],
            b"\x00",
            b"\t",
            b"\n",
            b"\x1f",
            b"\\x",
            b"\\u12",
            b"\\uZZZZ",
            b"\\u00g0",
            b"\\U0041",
            b"\\'",
        ])
    }

    /// One flaw for a string: what serde_json accepts only in strings it ignores, or rejects.
    pub(crate) fn flaw() -> BoxedStrategy<&'static [u8]> {
        prop_oneof![ignorable(), broken()].boxed()
    }

    /// Keys: `names` most often, else plain ones, now and then strings as clean as `dirt`
    /// allows (escapes and all).
    pub(crate) fn key(names: &[&'static str], dirt: Dirt) -> BoxedStrategy<Vec<u8>> {
        let names = prop::sample::select(names.to_vec()).prop_map(|name| name.as_bytes().to_vec());
        let plain = "[a-z_]{0,8}".prop_map(String::into_bytes);
        prop_oneof![32 => names, 8 => plain, 1 => string(dirt)].boxed()
    }

    /// Any value, three levels deep at most, its keys from `names`.
    pub(crate) fn any_doc(names: &[&'static str], dirt: Dirt) -> BoxedStrategy<Doc> {
        let leaf = prop_oneof![
            prop::sample::select(vec!["null", "true", "false"])
                .prop_map(|t| Doc::Token(t.to_owned())),
            number(dirt).prop_map(Doc::Token),
            string(dirt).prop_map(Doc::Str),
        ];
        let key = key(names, dirt);
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Array),
                prop::collection::vec((key.clone(), inner), 0..4).prop_map(Doc::Object),
            ]
        })
        .boxed()
    }
}
