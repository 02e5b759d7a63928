//! The `tracestate` header: an ordered list of vendor `key=value` members.
//!
//! # Which revision of the specification
//!
//! The rules are those of the current editor's draft of W3C Trace Context
//! (<https://w3c.github.io/trace-context/>, Level 3, which keeps Level 2's header format), as of
//! `w3c/trace-context` commit `acab820` (2026-06-30), whose test suite has 41 tests:
//!
//! ```text
//! list        = list-member 0*31( OWS "," OWS list-member )
//! list-member = (key "=" value) / OWS
//! key         = ( lcalpha / DIGIT ) 0*255 ( keychar )
//! keychar     = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
//! value       = 0*255(chr) nblk-chr
//! nblk-chr    = %x21-2B / %x2D-3C / %x3E-7E
//! chr         = %x20 / nblk-chr
//! ```
//!
//! - **Keys** are one grammar: a lower-case letter or digit, then up to 255 more characters
//!   among `a-z 0-9 _ - * / @`. The `@` has no special place any more: `foo@`, `foo@@bar`,
//!   `foo@bar@baz`, a 256-character key and `t@` followed by 15 characters are all valid; a key
//!   that *starts* with `@` is not. (Earlier revisions had a separate `tenant@system` form with a
//!   241-character tenant and a 14-character system; it was folded into this grammar.)
//! - **Values** are 1 to 256 printable ASCII characters other than `,` and `=`, not ending with a
//!   space; leading spaces belong to the value, trailing ones are optional white space.
//! - **Duplicate keys** are the *sender's* responsibility ("tracing tools are not supposed to add
//!   the same header multiple times"; a vendor MAY discard duplicates it did not generate). A
//!   receiver that finds `foo=1,foo=2` keeps both members, in order, and passes them on.
//!   [`TraceState::from_members`], which builds a tracestate we send, still refuses them.
//! - **At most 32 members.** Empty and white-space-only members (left when several headers are
//!   combined) are skipped and do not count. A 33rd member refuses the whole list.
//! - **Length.** The specification asks to propagate *at least* 512 characters of the combined
//!   header and, when a vendor truncates, to drop whole entries (over 128 characters first). We
//!   never truncate: a valid list is sent on whole, and it is bounded by the grammar itself
//!   (32 members of at most 256 + 1 + 256 characters, 16,447 bytes with the commas).

use std::fmt;
use std::str::FromStr;

use super::traceparent::is_ows;

/// A validated W3C `tracestate`: at most 32 members, order kept, repeated keys kept.
///
/// Parsing accepts what the specification calls a valid header (the grammar and the revision
/// followed are in this file's module comment): members separated by
/// `,`, optional white space (spaces and tabs) around each member, empty members (skipped; they
/// arise when several headers are combined). Anything else refuses the *whole* list: a 33rd
/// member, one malformed member. Several header values are one list, joined in order
/// ([`TraceState::parse_values`]). A key that appears more than once is kept each time: making
/// keys unique is the sender's job, and the receiver passes the list on as it came.
///
/// Formatting writes the members in order, separated by `,` without white space, so
/// `parse(s).to_string() == s` for any canonical `s`.
///
/// ```
/// use llmtrace::propagation::TraceState;
///
/// let ts = TraceState::parse_values(["congo=t61rcWkgMzE, ,rojo=00f067aa0ba902b7", "tenant@vendor=x"]).unwrap();
/// assert_eq!(ts.get("rojo"), Some("00f067aa0ba902b7"));
/// assert_eq!(ts.to_string(), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,tenant@vendor=x");
///
/// // A repeated key is the sender's mistake, not a reason to drop the list: it is passed on.
/// let ts = TraceState::parse("foo=1,foo=2").unwrap();
/// assert_eq!((ts.get("foo"), ts.to_string().as_str()), (Some("1"), "foo=1,foo=2"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    /// The most members a tracestate may hold.
    pub const MAX_MEMBERS: usize = 32;

    /// An empty tracestate.
    pub fn new() -> Self {
        TraceState::default()
    }

    /// Parses one `tracestate` header value.
    pub fn parse(value: &str) -> Result<Self, ParseTraceStateError> {
        TraceState::parse_values([value])
    }

    /// Parses several `tracestate` header values as one list, in the order received.
    pub fn parse_values<'a, I>(values: I) -> Result<Self, ParseTraceStateError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut members: Vec<(String, String)> = Vec::new();
        for value in values {
            for member in value.split(',') {
                let member = member.trim_matches(is_ows);
                if member.is_empty() {
                    continue;
                }
                if members.len() == Self::MAX_MEMBERS {
                    return Err(ParseTraceStateError::TooManyMembers);
                }
                let (key, value) = member
                    .split_once('=')
                    .ok_or_else(|| ParseTraceStateError::MissingEquals(member.to_owned()))?;
                check_member(key, value)?;
                members.push((key.to_owned(), value.to_owned()));
            }
        }
        Ok(TraceState { members })
    }

    /// Builds a tracestate to send from members, validating each one as [`TraceState::parse`]
    /// would and, since this library is then the sender, refusing a key given twice.
    ///
    /// ```
    /// use llmtrace::propagation::TraceState;
    ///
    /// let ts = TraceState::from_members([("a", "1"), ("t@v", "2")]).unwrap();
    /// assert_eq!(ts.to_string(), "a=1,t@v=2");
    /// assert!(TraceState::from_members([("A", "1")]).is_err());
    /// assert!(TraceState::from_members([("a", "1"), ("a", "2")]).is_err());
    /// ```
    pub fn from_members<I, K, V>(members: I) -> Result<Self, ParseTraceStateError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut ts = TraceState::new();
        for (key, value) in members {
            let (key, value) = (key.as_ref(), value.as_ref());
            if ts.members.len() == Self::MAX_MEMBERS {
                return Err(ParseTraceStateError::TooManyMembers);
            }
            check_member(key, value)?;
            if ts.get(key).is_some() {
                return Err(ParseTraceStateError::DuplicateKey(key.to_owned()));
            }
            ts.members.push((key.to_owned(), value.to_owned()));
        }
        Ok(ts)
    }

    /// The value of `key`, if present; for a repeated key, the left-most (most recent) one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The members in order, repeated keys included.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of members, repeated keys counted each time.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members (no header should be sent).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `key` is a valid tracestate key: 1 to 256 characters among `a-z 0-9 _ - * / @`,
    /// the first a lower-case letter or a digit.
    pub fn is_valid_key(key: &str) -> bool {
        valid_key(key.as_bytes())
    }

    /// Whether `value` is a valid tracestate value (1 to 256 printable ASCII characters other
    /// than `,` and `=`, not ending with a space).
    pub fn is_valid_value(value: &str) -> bool {
        valid_value(value.as_bytes())
    }

    /// Converts to OpenTelemetry's `TraceState`, keeping the order.
    ///
    /// OpenTelemetry 0.33 validates tracestate keys by an older grammar: it refuses some valid
    /// keys (two `@`, 14 or more characters after the `@`), so those members are left out here.
    /// The module documentation of `propagation` explains how the exact header still reaches
    /// the next hop.
    pub fn to_otel(&self) -> opentelemetry::trace::TraceState {
        use opentelemetry::trace::TraceState as OtelTraceState;
        if self.is_empty() {
            return OtelTraceState::NONE;
        }
        let accepted = self
            .iter()
            .filter(|member| OtelTraceState::from_key_value([*member]).is_ok());
        OtelTraceState::from_key_value(accepted).unwrap_or_default()
    }

    /// Converts from OpenTelemetry's `TraceState`, which is more lenient than the specification
    /// in places (it accepts empty values, for instance): members that are not valid here, and
    /// members past the 32nd, are left out, so the result is always safe to send. Repeated keys
    /// are kept, as [`TraceState::parse`] keeps them.
    pub fn from_otel(trace_state: &opentelemetry::trace::TraceState) -> Self {
        let members = trace_state
            .into_iter()
            .filter(|(key, value)| check_member(key, value).is_ok())
            .take(Self::MAX_MEMBERS)
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        TraceState { members }
    }
}

impl FromStr for TraceState {
    type Err = ParseTraceStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceState::parse(s)
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{key}={value}")?;
        }
        Ok(())
    }
}

/// Why a `tracestate` was refused. The whole list is dropped; `traceparent` is still used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseTraceStateError {
    /// A non-empty member without `=`.
    MissingEquals(String),
    /// A key outside the key grammar: empty, over 256 characters, a first character other than
    /// a lower-case letter or digit, or a character outside `a-z 0-9 _ - * / @`.
    InvalidKey(String),
    /// The value of this key is empty, too long, or has a character outside the grammar.
    InvalidValue(String),
    /// This key was given more than once to [`TraceState::from_members`]. Parsing a received
    /// header never returns it: repeated keys there are kept.
    DuplicateKey(String),
    /// More than 32 members.
    TooManyMembers,
    /// A header value is not visible ASCII.
    NotAscii,
}

impl fmt::Display for ParseTraceStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseTraceStateError::MissingEquals(member) => {
                write!(f, "tracestate member {member:?} has no '='")
            }
            ParseTraceStateError::InvalidKey(key) => write!(f, "invalid tracestate key {key:?}"),
            ParseTraceStateError::InvalidValue(key) => {
                write!(f, "invalid tracestate value for key {key:?}")
            }
            ParseTraceStateError::DuplicateKey(key) => {
                write!(f, "tracestate key {key:?} appears more than once")
            }
            ParseTraceStateError::TooManyMembers => write!(
                f,
                "tracestate has more than {} members",
                TraceState::MAX_MEMBERS
            ),
            ParseTraceStateError::NotAscii => {
                f.write_str("tracestate header value is not visible ASCII")
            }
        }
    }
}

impl std::error::Error for ParseTraceStateError {}

/// The most characters in a key and in a value.
const MAX_KEY_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 256;

fn check_member(key: &str, value: &str) -> Result<(), ParseTraceStateError> {
    if !valid_key(key.as_bytes()) {
        return Err(ParseTraceStateError::InvalidKey(key.to_owned()));
    }
    if !valid_value(value.as_bytes()) {
        return Err(ParseTraceStateError::InvalidValue(key.to_owned()));
    }
    Ok(())
}

/// ```text
/// key     = ( lcalpha / DIGIT ) 0*255 ( keychar )
/// keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
/// ```
fn valid_key(key: &[u8]) -> bool {
    let keychar = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@');
    match key.first() {
        Some(first) => {
            key.len() <= MAX_KEY_LEN
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && key.iter().all(|&b| keychar(b))
        }
        None => false,
    }
}

/// ```text
/// value    = 0*255(chr) nblk-chr
/// nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
/// chr      = %x20 / nblk-chr
/// ```
fn valid_value(value: &[u8]) -> bool {
    let nblk = |b: u8| matches!(b, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    match value.split_last() {
        Some((&last, rest)) => {
            value.len() <= MAX_VALUE_LEN && nblk(last) && rest.iter().all(|&b| b == b' ' || nblk(b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ParseTraceStateError as E;

    fn n(c: char, count: usize) -> String {
        c.to_string().repeat(count)
    }

    /// `count` members `m00=00`, `m01=01`, ..., joined with `,`.
    fn members(count: usize) -> String {
        let member = |i: usize| format!("m{i:02}={i:02}");
        (0..count).map(member).collect::<Vec<_>>().join(",")
    }

    #[test]
    fn key_grammar() {
        #[rustfmt::skip]
        let rows: Vec<(&str, String, bool)> = vec![
            ("one letter", "a".into(), true),
            ("one digit", "0".into(), true),
            ("digit first", "1foo".into(), true),
            ("every keychar", "az09_-*/@".into(), true),
            ("256 characters", n('z', 256), true),
            ("257 characters", n('z', 257), false),
            ("@ then 255 more, 256 in all", format!("a{}", n('@', 255)), true),
            ("@ in a 257-character key", format!("a@{}", n('v', 255)), false),
            ("ends with @", "foo@".into(), true),
            ("two @ in a row", "foo@@bar".into(), true),
            ("two @", "foo@bar@baz".into(), true),
            ("15 characters after @", format!("t@{}", n('v', 15)), true),
            ("241 @ 14 (the old tenant@system limits)", format!("{}@{}", n('t', 241), n('v', 14)), true),
            ("242 before @", format!("{}@v", n('t', 242)), true),
            ("digit after @", "foo@1bar".into(), true),
            ("empty", "".into(), false),
            ("starts with @", "@foo".into(), false),
            ("only @", "@".into(), false),
            ("starts with _", "_foo".into(), false),
            ("starts with -", "-foo".into(), false),
            ("starts with *", "*foo".into(), false),
            ("starts with /", "/foo".into(), false),
            ("upper case", "Foo".into(), false),
            ("upper case after @", "foo@Bar".into(), false),
            ("dot", "foo.bar".into(), false),
            ("space", "foo bar".into(), false),
            ("tab", "foo\tbar".into(), false),
            ("non-ASCII", "f\u{f6}o".into(), false),
        ];
        for (rule, key, valid) in rows {
            assert_eq!(TraceState::is_valid_key(&key), valid, "{rule}: {key:?}");
        }
    }

    #[test]
    fn value_grammar() {
        let every_nblk: String = (0x21u8..=0x7e)
            .filter(|&b| b != b',' && b != b'=')
            .map(char::from)
            .collect();
        #[rustfmt::skip]
        let rows: Vec<(&str, String, bool)> = vec![
            ("one character", "1".into(), true),
            ("every allowed character", every_nblk, true),
            ("inner spaces", "a b  c".into(), true),
            ("leading spaces belong to the value", "  x".into(), true),
            ("256 characters", n('v', 256), true),
            ("256 with a leading space", format!(" {}", n('v', 255)), true),
            ("257 characters", n('v', 257), false),
            ("257 with a leading space", format!(" {}", n('v', 256)), false),
            ("empty", "".into(), false),
            ("only a space", " ".into(), false),
            ("ends with a space", "x ".into(), false),
            ("=", "a=b".into(), false),
            (",", "a,b".into(), false),
            ("tab", "a\tb".into(), false),
            ("DEL", "a\u{7f}".into(), false),
            ("control character", "a\u{1}b".into(), false),
            ("non-ASCII", "\u{e9}".into(), false),
        ];
        for (rule, value, valid) in rows {
            assert_eq!(
                TraceState::is_valid_value(&value),
                valid,
                "{rule}: {value:?}"
            );
        }
    }

    #[test]
    fn lists_and_repeated_keys() {
        // (rule, header values, Ok(sent on) or Err(why the list is dropped))
        #[rustfmt::skip]
        let rows: Vec<(&str, Vec<String>, Result<String, E>)> = vec![
            ("repeated key, same value", vec!["foo=1,foo=1".into()], Ok("foo=1,foo=1".into())),
            ("repeated key, other value", vec!["foo=1,foo=2".into()], Ok("foo=1,foo=2".into())),
            ("repeated across headers", vec!["foo=1".into(), "foo=2".into()], Ok("foo=1,foo=2".into())),
            ("repeated, not adjacent", vec!["a=1,b=2,a=3".into()], Ok("a=1,b=2,a=3".into())),
            ("@ keys kept beside others", vec!["foo@=1,bar=2".into()], Ok("foo@=1,bar=2".into())),
            ("@@ key", vec!["foo@@bar=1,bar=2".into()], Ok("foo@@bar=1,bar=2".into())),
            ("key starting with @", vec!["@foo=1,bar=2".into()], Err(E::InvalidKey("@foo".into()))),
            ("256-character key", vec!["foo=1".into(), format!("{}=1", n('z', 256))], Ok(format!("foo=1,{}=1", n('z', 256)))),
            ("257-character key", vec!["foo=1".into(), format!("{}=1", n('z', 257))], Err(E::InvalidKey(n('z', 257)))),
            ("empty headers and members", vec!["".into(), " ,\t,foo=1,, ".into(), "".into()], Ok("foo=1".into())),
            ("OWS around members", vec![" \tfoo=1 \t, bar= 2\t".into()], Ok("foo=1,bar= 2".into())),
            ("space before =", vec!["foo =1".into()], Err(E::InvalidKey("foo ".into()))),
            ("member without =", vec!["foo=1,bar".into()], Err(E::MissingEquals("bar".into()))),
            ("= in value", vec!["foo=1=2".into()], Err(E::InvalidValue("foo".into()))),
            ("empty value", vec!["foo=,bar=2".into()], Err(E::InvalidValue("foo".into()))),
            ("empty key", vec!["=1".into()], Err(E::InvalidKey("".into()))),
            ("32 members", vec![members(32)], Ok(members(32))),
            ("33 members", vec![members(33)], Err(E::TooManyMembers)),
            ("32 members and empty ones", vec![format!(",{},,", members(32))], Ok(members(32))),
            ("one key 32 times", vec![["k=1"; 32].join(",")], Ok(["k=1"; 32].join(","))),
            ("one key 33 times", vec![["k=1"; 33].join(",")], Err(E::TooManyMembers)),
        ];
        for (rule, values, expected) in rows {
            let parsed = TraceState::parse_values(values.iter().map(String::as_str));
            assert_eq!(parsed.map(|ts| ts.to_string()), expected, "{rule}");
        }
    }

    #[test]
    fn the_longest_valid_list_is_kept_whole() {
        // Far past the 512 characters the specification asks receivers to propagate at least.
        let member = |i: usize| format!("{i:02}{}={}", n('k', 254), n('v', 256));
        let text = (0..32).map(member).collect::<Vec<_>>().join(",");
        assert_eq!(text.len(), 16_447);
        assert_eq!(TraceState::parse(&text).unwrap().to_string(), text);
    }

    #[test]
    fn lookup_finds_the_left_most_of_a_repeated_key() {
        let ts = TraceState::parse("foo=2,bar=1,foo=1").unwrap();
        assert_eq!((ts.get("foo"), ts.len()), (Some("2"), 3));
    }

    #[test]
    fn building_a_tracestate_to_send_refuses_a_repeated_key() {
        assert_eq!(
            TraceState::from_members([("a", "1"), ("b", "2"), ("a", "3")]),
            Err(E::DuplicateKey("a".into()))
        );
        let ts = TraceState::from_members([("foo@@bar", "1"), ("foo@", "2")]).unwrap();
        assert_eq!(ts.to_string(), "foo@@bar=1,foo@=2");
        let too_many = (0..33).map(|i| (format!("k{i}"), "1"));
        assert_eq!(TraceState::from_members(too_many), Err(E::TooManyMembers));
    }

    #[test]
    fn otel_conversion_leaves_out_what_otel_refuses() {
        let ts =
            TraceState::parse_values(["a=1", &format!("t@{}=2", n('v', 14)), "foo@@bar=3,b=4,b=5"])
                .unwrap();
        assert_eq!(ts.to_otel().header(), "a=1,b=4,b=5");
    }

    #[test]
    fn from_otel_keeps_repeated_keys_and_drops_what_may_not_be_sent() {
        let otel = opentelemetry::trace::TraceState::from_key_value([
            ("foo", "1"),
            ("empty", ""),
            ("foo", "2"),
        ])
        .unwrap();
        assert_eq!(TraceState::from_otel(&otel).to_string(), "foo=1,foo=2");
    }
}
