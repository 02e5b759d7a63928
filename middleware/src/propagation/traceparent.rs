//! The `traceparent` header: `version "-" trace-id "-" parent-id "-" trace-flags`.

use std::fmt;
use std::str::FromStr;

use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

/// The `sampled` trace flag (`0x01`).
pub const FLAG_SAMPLED: u8 = 0x01;
/// The Level 2 `random` trace flag (`0x02`): the trace id's rightmost 7 bytes are random.
pub const FLAG_RANDOM: u8 = 0x02;
/// The flags this crate understands and propagates; every other bit is dropped on inject.
pub const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

/// Length of a version `00` header, and the minimum length of any version.
const V00_LEN: usize = 55;

/// A parsed `traceparent` header.
///
/// [`TraceParent::parse`] follows the W3C Trace Context Level 2 parsing rules, including the
/// forward-compatible rules for versions above `00`. Formatting ([`fmt::Display`]) always
/// writes version `00` and only the flags this crate knows ([`KNOWN_FLAGS`]), which is what a
/// version `00` participant must send whatever version it received.
///
/// ```
/// use llmtrace::propagation::TraceParent;
///
/// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
/// assert!(tp.is_sampled() && tp.is_random());
/// assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
///
/// // A future version is parsed as far as version 00 goes, and re-emitted as version 00.
/// let tp: TraceParent = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future".parse().unwrap();
/// assert_eq!(tp.version, 0xcc);
/// assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The version received (`0x00`..=`0xfe`). Formatting always writes `00`.
    pub version: u8,
    /// The trace id; never all zeros once parsed.
    pub trace_id: TraceId,
    /// The caller's span id (`parent-id`); never all zeros once parsed.
    pub parent_id: SpanId,
    /// The flags byte as received, unknown bits included. Formatting keeps [`KNOWN_FLAGS`] only.
    pub flags: u8,
}

impl TraceParent {
    /// Creates a version `00` traceparent.
    pub fn new(trace_id: TraceId, parent_id: SpanId, flags: u8) -> Self {
        TraceParent {
            version: 0,
            trace_id,
            parent_id,
            flags,
        }
    }

    /// Parses one `traceparent` header value. Optional white space (spaces and tabs) around the
    /// value is ignored; everything else must match the specification exactly (lowercase hex,
    /// exact field lengths, no all-zero ids, version `ff` refused, version `00` exactly 55
    /// characters, a higher version followed by nothing or by `-`).
    pub fn parse(value: &str) -> Result<Self, ParseTraceParentError> {
        let s = trim_ows(value.as_bytes());
        if s.len() < V00_LEN {
            return Err(ParseTraceParentError::Length(s.len()));
        }
        let version = parse_hex_byte(&s[0..2]).ok_or(ParseTraceParentError::Version)?;
        if version == 0xff {
            return Err(ParseTraceParentError::Version);
        }
        if s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return Err(ParseTraceParentError::Delimiter);
        }
        let trace_id = parse_hex_u128(&s[3..35]).ok_or(ParseTraceParentError::TraceId)?;
        if trace_id == 0 {
            return Err(ParseTraceParentError::ZeroTraceId);
        }
        let parent_id = parse_hex_u64(&s[36..52]).ok_or(ParseTraceParentError::ParentId)?;
        if parent_id == 0 {
            return Err(ParseTraceParentError::ZeroParentId);
        }
        let flags = parse_hex_byte(&s[53..55]).ok_or(ParseTraceParentError::Flags)?;
        if s.len() > V00_LEN {
            if version == 0 {
                return Err(ParseTraceParentError::Length(s.len()));
            }
            // Forward compatibility: a later version may append fields after a dash.
            if s[V00_LEN] != b'-' {
                return Err(ParseTraceParentError::Delimiter);
            }
        }
        Ok(TraceParent {
            version,
            trace_id: TraceId::from(trace_id),
            parent_id: SpanId::from(parent_id),
            flags,
        })
    }

    /// The flags this crate propagates (unknown bits cleared), as OpenTelemetry `TraceFlags`.
    pub fn trace_flags(&self) -> TraceFlags {
        TraceFlags::new(self.flags & KNOWN_FLAGS)
    }

    /// Whether the `sampled` flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// Whether the Level 2 `random` flag is set.
    pub fn is_random(&self) -> bool {
        self.flags & FLAG_RANDOM != 0
    }
}

impl FromStr for TraceParent {
    type Err = ParseTraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceParent::parse(s)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().as_str())
    }
}

impl TraceParent {
    /// The header value, `00-{trace-id}-{parent-id}-{flags}`, formatted on the stack (the
    /// gateway writes one per request; `fmt` machinery costs several times more).
    pub fn encode(&self) -> Hex<55> {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id.to_bytes(), &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.parent_id.to_bytes(), &mut out[36..52]);
        out[52] = b'-';
        hex_into(&[self.flags & KNOWN_FLAGS], &mut out[53..55]);
        Hex(out)
    }
}

/// Lower-case hex text of a fixed length, on the stack: a trace id (32), a span id (16), or a
/// `traceparent` value (55).
///
/// ```
/// use llmtrace::propagation::hex_trace_id;
/// use opentelemetry::trace::TraceId;
///
/// let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
/// assert_eq!(hex_trace_id(id).as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and `-` are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A trace id as 32 lower-case hex digits, as W3C and OTLP/JSON write it.
pub fn hex_trace_id(id: TraceId) -> Hex<32> {
    let mut out = [0u8; 32];
    hex_into(&id.to_bytes(), &mut out);
    Hex(out)
}

/// A span id as 16 lower-case hex digits.
pub fn hex_span_id(id: SpanId) -> Hex<16> {
    let mut out = [0u8; 16];
    hex_into(&id.to_bytes(), &mut out);
    Hex(out)
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Why a `traceparent` value was refused. Any of these means: start a new trace.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseTraceParentError {
    /// Shorter than 55 characters, or a version `00` value longer than 55 (after trimming OWS).
    Length(usize),
    /// The version is not two lowercase hex digits, or is the forbidden `ff`.
    Version,
    /// A `-` is missing where the format requires one (also: a later version whose flags are
    /// followed by something other than `-`).
    Delimiter,
    /// The trace id is not 32 lowercase hex digits.
    TraceId,
    /// The trace id is all zeros.
    ZeroTraceId,
    /// The parent id is not 16 lowercase hex digits.
    ParentId,
    /// The parent id is all zeros.
    ZeroParentId,
    /// The flags are not two lowercase hex digits.
    Flags,
    /// More than one `traceparent` header value was received.
    Multiple,
    /// The header value is not visible ASCII.
    NotAscii,
}

impl fmt::Display for ParseTraceParentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseTraceParentError::Length(n) => write!(
                f,
                "traceparent has {n} characters (version 00 needs exactly 55, later versions at least 55)"
            ),
            ParseTraceParentError::Version => {
                f.write_str("traceparent version is not two lowercase hex digits other than ff")
            }
            ParseTraceParentError::Delimiter => {
                f.write_str("traceparent is missing a '-' delimiter")
            }
            ParseTraceParentError::TraceId => {
                f.write_str("traceparent trace-id is not 32 lowercase hex digits")
            }
            ParseTraceParentError::ZeroTraceId => f.write_str("traceparent trace-id is all zeros"),
            ParseTraceParentError::ParentId => {
                f.write_str("traceparent parent-id is not 16 lowercase hex digits")
            }
            ParseTraceParentError::ZeroParentId => {
                f.write_str("traceparent parent-id is all zeros")
            }
            ParseTraceParentError::Flags => {
                f.write_str("traceparent trace-flags is not two lowercase hex digits")
            }
            ParseTraceParentError::Multiple => {
                f.write_str("more than one traceparent header value was received")
            }
            ParseTraceParentError::NotAscii => {
                f.write_str("traceparent header value is not visible ASCII")
            }
        }
    }
}

impl std::error::Error for ParseTraceParentError {}

/// Optional white space of RFC 7230: space and horizontal tab.
pub(crate) fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Trims optional white space (spaces and tabs, nothing else) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn parse_hex_byte(s: &[u8]) -> Option<u8> {
    Some((hex_digit(s[0])? << 4) | hex_digit(s[1])?)
}

/// Lowercase hex digit values; 0xff marks every other byte. A table keeps the per-request
/// parse of 48 digits branch-light.
const HEX: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

fn parse_hex_u64(s: &[u8]) -> Option<u64> {
    let mut acc = 0u64;
    let mut bad = 0u8;
    for &b in s {
        let v = HEX[b as usize];
        bad |= v;
        acc = (acc << 4) | u64::from(v & 0x0f);
    }
    // Any invalid digit set the high bits of `bad`; valid digits never do.
    (bad & 0xf0 == 0).then_some(acc)
}

fn parse_hex_u128(s: &[u8]) -> Option<u128> {
    let (high, low) = s.split_at(s.len().saturating_sub(16));
    let high = parse_hex_u64(high)?;
    let low = parse_hex_u64(low)?;
    Some((u128::from(high) << 64) | u128::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-12345678901234567890123456789012-1234567890123456-01";

    #[test]
    fn parses_and_formats_version_00() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.version, 0);
        assert_eq!(
            tp.trace_id,
            TraceId::from_hex("12345678901234567890123456789012").unwrap()
        );
        assert_eq!(tp.parent_id, SpanId::from_hex("1234567890123456").unwrap());
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_string(), VALID);
    }

    #[test]
    fn multibyte_input_of_the_right_length_does_not_panic() {
        // 55 bytes with a multi-byte character straddling a field boundary.
        let s = "00-1234567890123456789012345678901é-234567890123456-01";
        assert!(TraceParent::parse(s).is_err());
    }
}
