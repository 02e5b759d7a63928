//! The W3C `baggage` header.
//!
//! ```text
//! baggage-string =  list-member *( OWS "," OWS list-member )
//! list-member    =  key OWS "=" OWS value *( OWS ";" OWS property )
//! property       =  key OWS "=" OWS value
//! property       =/ key OWS
//! key            =  token                      ; RFC 7230
//! value          =  *baggage-octet             ; percent-encoded UTF-8
//! baggage-octet  =  %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
//! ```

use std::fmt::Write as _;

use opentelemetry::baggage::Baggage;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode, utf8_percent_encode};

/// At most this many list members are extracted or injected.
pub const MAX_BAGGAGE_MEMBERS: usize = 64;
/// At most this many bytes of `baggage-string` are extracted or injected.
pub const MAX_BAGGAGE_BYTES: usize = 8192;

/// Everything outside `baggage-octet`, plus `%` itself, is percent-encoded. Non-ASCII bytes are
/// always encoded by `percent-encoding`.
const VALUE_ENCODE_SET: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

/// Characters outside `baggage-octet`, for property values (which are kept as received, so an
/// existing `%` escape is not encoded again).
const PROPERTY_ENCODE_SET: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b',').add(b';').add(b'\\');

/// One extracted list member: decoded value, properties kept as text.
struct Member {
    key: String,
    value: String,
    properties: String,
    /// The bytes it takes in a `baggage-string` (white space removed), for the size limit.
    len: usize,
}

/// Decodes one or more `baggage` header values (in order) into OpenTelemetry `Baggage`.
///
/// - Keys and values are trimmed of optional white space; values are percent-decoded as
///   UTF-8, and percent-encoded octets that are not UTF-8 become U+FFFD, as the
///   specification requires.
/// - Properties are kept as the member's metadata, `;`-separated, white space around them and
///   around their `=` removed, otherwise as received (not decoded: their meaning is opaque).
/// - A malformed member (bad key, a character outside `baggage-octet`, an empty property, an
///   empty member) is dropped alone; the others are kept.
/// - A repeated key keeps its last value.
/// - Oversized input is tolerated: members are kept in order while there are at most 64 of
///   them and their `baggage-string` stays within 8192 bytes; the rest is dropped.
///
/// ```
/// use llmtrace::propagation::decode_baggage;
///
/// let baggage = decode_baggage([&b"userId=alice, serverNode = DF%2028;p1;k=v"[..], b"bad key=1"]);
/// assert_eq!(baggage.len(), 2);
/// assert_eq!(baggage.get("serverNode").unwrap().as_str(), "DF 28");
/// let (_, metadata) = baggage.get_with_metadata("serverNode").unwrap();
/// assert_eq!(metadata.as_str(), "p1;k=v");
/// ```
pub fn decode_baggage<'a, I>(values: I) -> Baggage
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut members: Vec<Member> = Vec::new();
    let mut bytes = 0usize;
    'values: for value in values {
        for raw in value.split(|&b| b == b',') {
            let raw = trim_ows(raw);
            let Some(member) = parse_member(raw) else {
                continue;
            };
            if let Some(existing) = members.iter_mut().find(|m| m.key == member.key) {
                // The last value wins, if it fits in place of the earlier one.
                if bytes - existing.len + member.len <= MAX_BAGGAGE_BYTES {
                    bytes = bytes - existing.len + member.len;
                    *existing = member;
                }
                continue;
            }
            if members.len() == MAX_BAGGAGE_MEMBERS {
                break 'values;
            }
            let separator = usize::from(!members.is_empty());
            if bytes + separator + member.len > MAX_BAGGAGE_BYTES {
                continue; // too big to keep; a smaller member further on may still fit
            }
            bytes += separator + member.len;
            members.push(member);
        }
    }
    let mut baggage = Baggage::new();
    for m in members {
        baggage.insert_with_metadata(m.key, m.value, m.properties);
    }
    baggage
}

/// Encodes `baggage` as one `baggage` header value, or `None` when there is nothing to send.
///
/// Members are written sorted by key (OpenTelemetry's `Baggage` has no order). Values are
/// percent-encoded (everything outside `baggage-octet`, and `%`). A member whose key is not an
/// RFC 7230 token is skipped, as are metadata properties that are not valid. Members that would
/// take the header past 64 members or 8192 bytes are skipped, so the header is always valid.
///
/// ```
/// use llmtrace::propagation::encode_baggage;
/// use opentelemetry::baggage::Baggage;
///
/// let mut baggage = Baggage::new();
/// baggage.insert("userId", "alice");
/// baggage.insert_with_metadata("serverNode", "DF 28", "p1");
/// assert_eq!(encode_baggage(&baggage).unwrap(), "serverNode=DF%2028;p1,userId=alice");
/// ```
pub fn encode_baggage(baggage: &Baggage) -> Option<String> {
    let mut entries: Vec<_> = baggage
        .iter()
        .map(|(key, (value, metadata))| (key.as_str(), value.as_str(), metadata.as_str()))
        .filter(|(key, _, _)| is_token(key.as_bytes()))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));

    let mut header = String::new();
    let mut count = 0;
    let mut member = String::new();
    for (key, value, metadata) in entries {
        member.clear();
        member.push_str(key);
        member.push('=');
        let _ = write!(member, "{}", utf8_percent_encode(value, VALUE_ENCODE_SET));
        for property in metadata.split(';') {
            if let Some(property) = normalize_property(property) {
                member.push(';');
                member.push_str(&property);
            }
        }
        let separator = usize::from(count > 0);
        if count == MAX_BAGGAGE_MEMBERS
            || header.len() + separator + member.len() > MAX_BAGGAGE_BYTES
        {
            continue;
        }
        if count > 0 {
            header.push(',');
        }
        header.push_str(&member);
        count += 1;
    }
    (!header.is_empty()).then_some(header)
}

fn parse_member(raw: &[u8]) -> Option<Member> {
    let mut parts = raw.split(|&b| b == b';');
    let key_value = parts.next()?;
    let eq = key_value.iter().position(|&b| b == b'=')?;
    let key = trim_ows(&key_value[..eq]);
    let value = trim_ows(&key_value[eq + 1..]);
    if !is_token(key) || !value.iter().all(|&b| is_baggage_octet(b)) {
        return None;
    }
    let mut properties = String::new();
    for property in parts {
        let property = parse_property(property)?;
        if !properties.is_empty() {
            properties.push(';');
        }
        properties.push_str(&property);
    }
    let len = key.len() + 1 + value.len() + properties.len() + usize::from(!properties.is_empty());
    Some(Member {
        // The key was checked to be ASCII above.
        key: String::from_utf8_lossy(key).into_owned(),
        // Not UTF-8 after decoding: U+FFFD replaces the offending octets (W3C Baggage, value).
        value: String::from_utf8_lossy(&percent_decode(value).collect::<Vec<u8>>()).into_owned(),
        properties,
        len,
    })
}

/// A received property, `key` or `key=value` with OWS removed; `None` when malformed.
fn parse_property(raw: &[u8]) -> Option<String> {
    let raw = trim_ows(raw);
    match raw.iter().position(|&b| b == b'=') {
        None => is_token(raw).then(|| String::from_utf8_lossy(raw).into_owned()),
        Some(eq) => {
            let key = trim_ows(&raw[..eq]);
            let value = trim_ows(&raw[eq + 1..]);
            (is_token(key) && value.iter().all(|&b| is_baggage_octet(b))).then(|| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value)
                )
            })
        }
    }
}

/// A property from metadata set by the application, made valid for sending: `None` when its
/// key is not a token (or it is empty); characters outside `baggage-octet` in its value are
/// percent-encoded.
fn normalize_property(raw: &str) -> Option<String> {
    let raw = raw.trim_matches(|c| c == ' ' || c == '\t');
    match raw.split_once('=') {
        None => is_token(raw.as_bytes()).then(|| raw.to_owned()),
        Some((key, value)) => {
            let key = key.trim_matches(|c| c == ' ' || c == '\t');
            let value = value.trim_matches(|c| c == ' ' || c == '\t');
            is_token(key.as_bytes())
                .then(|| format!("{key}={}", utf8_percent_encode(value, PROPERTY_ENCODE_SET)))
        }
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 7230 `token = 1*tchar`.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_set_is_exactly_the_complement_of_baggage_octet_plus_percent() {
        for b in 0u8..=0x7f {
            let s = (b as char).to_string();
            let encoded = utf8_percent_encode(&s, VALUE_ENCODE_SET).to_string();
            let kept = encoded == s;
            assert_eq!(kept, is_baggage_octet(b) && b != b'%', "byte {b:#x}");
        }
    }
}
