//! The `tracestate` header: an ordered list of vendor `key=value` members.

use std::fmt;
use std::str::FromStr;

use super::traceparent::is_ows;

/// A validated W3C `tracestate`: at most 32 members, unique keys, order kept.
///
/// Parsing accepts what the specification calls a valid header: members separated by `,`,
/// optional white space (spaces and tabs) around each member, empty members (skipped; they
/// arise when several headers are combined), keys and values from the specification's grammar.
/// Anything else refuses the *whole* list, as the specification requires: a duplicate key, a
/// 33rd member, one malformed member. Several header values are one list, joined in order
/// ([`TraceState::parse_values`]).
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
/// assert!(TraceState::parse("foo=1,foo=2").is_err()); // duplicate key: the whole list is dropped
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
                if members.iter().any(|(k, _)| k == key) {
                    return Err(ParseTraceStateError::DuplicateKey(key.to_owned()));
                }
                members.push((key.to_owned(), value.to_owned()));
            }
        }
        Ok(TraceState { members })
    }

    /// Builds a tracestate from members, validating each one as [`TraceState::parse`] would.
    ///
    /// ```
    /// use llmtrace::propagation::TraceState;
    ///
    /// let ts = TraceState::from_members([("a", "1"), ("t@v", "2")]).unwrap();
    /// assert_eq!(ts.to_string(), "a=1,t@v=2");
    /// assert!(TraceState::from_members([("A", "1")]).is_err());
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

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The members in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members (no header should be sent).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `key` is a valid tracestate key (simple or multi-tenant `tenant@system`).
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
    /// OpenTelemetry 0.33 validates tracestate members differently from the specification: it
    /// refuses some valid members (a `tenant@system` key whose system part has the maximum 14
    /// characters), so those are left out here. The module documentation explains how the exact
    /// header still reaches the next hop.
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
    /// repeated keys after the first, are left out, so the result is always safe to send.
    pub fn from_otel(trace_state: &opentelemetry::trace::TraceState) -> Self {
        let mut ts = TraceState::new();
        for (key, value) in trace_state {
            if ts.members.len() == Self::MAX_MEMBERS {
                break;
            }
            if check_member(key, value).is_ok() && ts.get(key).is_none() {
                ts.members.push((key.to_owned(), value.to_owned()));
            }
        }
        ts
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
    /// A key that matches neither the simple nor the multi-tenant key grammar.
    InvalidKey(String),
    /// The value of this key is empty, too long, or has a character outside the grammar.
    InvalidValue(String),
    /// This key appears more than once.
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

fn check_member(key: &str, value: &str) -> Result<(), ParseTraceStateError> {
    if !valid_key(key.as_bytes()) {
        return Err(ParseTraceStateError::InvalidKey(key.to_owned()));
    }
    if !valid_value(value.as_bytes()) {
        return Err(ParseTraceStateError::InvalidValue(key.to_owned()));
    }
    Ok(())
}

/// `lcalpha / DIGIT / "_" / "-" / "*" / "/"`
fn key_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// ```text
/// simple-key        = lcalpha 0*255( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
/// multi-tenant-key  = tenant-id "@" system-id
/// tenant-id         = ( lcalpha / DIGIT ) 0*240( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
/// system-id         = lcalpha 0*13( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
/// ```
fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|&b| b == b'@') {
        None => {
            (1..=256).contains(&key.len())
                && key[0].is_ascii_lowercase()
                && key.iter().all(|&b| key_char(b))
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && tenant.iter().all(|&b| key_char(b))
                && (1..=14).contains(&system.len())
                && system[0].is_ascii_lowercase()
                && system.iter().all(|&b| key_char(b))
        }
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
            value.len() <= 256 && nblk(last) && rest.iter().all(|&b| b == b' ' || nblk(b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lengths_at_the_limits() {
        assert!(valid_key("z".repeat(256).as_bytes()));
        assert!(!valid_key("z".repeat(257).as_bytes()));
        assert!(valid_key(
            format!("{}@{}", "t".repeat(241), "v".repeat(14)).as_bytes()
        ));
        assert!(!valid_key(format!("{}@v", "t".repeat(242)).as_bytes()));
        assert!(!valid_key(format!("t@{}", "v".repeat(15)).as_bytes()));
    }

    #[test]
    fn value_lengths_at_the_limits() {
        assert!(valid_value("v".repeat(256).as_bytes()));
        assert!(!valid_value("v".repeat(257).as_bytes()));
        assert!(valid_value(b" leading space"));
        assert!(!valid_value(b"trailing space "));
        assert!(!valid_value(b""));
    }

    #[test]
    fn otel_conversion_leaves_out_what_otel_refuses() {
        let max_system = format!("t@{}", "v".repeat(14));
        let ts =
            TraceState::from_members([("a", "1"), (max_system.as_str(), "2"), ("b", "3")]).unwrap();
        assert_eq!(ts.to_otel().header(), "a=1,b=3");
    }
}
