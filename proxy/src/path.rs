//! One path for routing, client keys and endpoint detection.
//!
//! The gateway routes on the request path as the client wrote it and forwards it unchanged.
//! An upstream that normalizes paths (decodes `%63` to `c`, resolves `..`, merges `//`) would
//! then serve a different resource than the one the gateway routed, checked keys for, and
//! traced: `/v1/chat/%63ompletions` reaches the chat endpoint without a GenAI span, usage
//! injection or limits; `/public/../v1/chat/completions` passes a keyless `/public` route.
//!
//! Rather than guess how each upstream normalizes, the gateway refuses (400) any path whose
//! meaning could change under normalization. A path the gateway accepts is already in normal
//! form, so the gateway and every upstream read it the same way. Refused:
//!
//! - a percent-encoded unreserved character (`A-Z a-z 0-9 - . _ ~`), which an upstream may
//!   decode;
//! - an encoded `/`, `\` or NUL (`%2F`, `%5C`, `%00`), which some servers decode into path
//!   separators;
//! - a dot segment (`/./`, `/../`, or `/.`, `/..` at the end), also encoded;
//! - an empty segment (`//`), which some servers merge;
//! - a backslash, which some servers read as `/`.
//!
//! Other percent-encodings (`%20`, `%25`, `%3A`, UTF-8 bytes) are kept as sent: decoding them
//! never turns one route into another.

/// Why a path is refused, or `None` when it is in normal form.
///
/// ```
/// use llmtrace_proxy::path::ambiguity;
///
/// assert_eq!(ambiguity("/v1/chat/completions"), None);
/// assert_eq!(ambiguity("/v1/models/ft%3Agpt-4o%20x"), None);
/// assert!(ambiguity("/v1/chat/%63ompletions").is_some());
/// assert!(ambiguity("/public/../v1/chat/completions").is_some());
/// assert!(ambiguity("//v1/chat/completions").is_some());
/// ```
pub fn ambiguity(path: &str) -> Option<&'static str> {
    // One pass (every request's path goes through it); the reasons rank as listed above:
    // a backslash, then the first bad percent-encoding, then `//`, then a dot segment.
    let bytes = path.as_bytes();
    let mut percent = None;
    let (mut empty, mut dot) = (false, false);
    let mut segment_start = 0;
    // Bytes before this are a percent-encoding's two digits (not read for one of their own).
    let mut encoded_until = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Some("a backslash"),
            b'%' if i >= encoded_until && percent.is_none() => {
                percent = percent_problem(bytes.get(i + 1..i + 3));
                encoded_until = i + 3;
            }
            b'/' => {
                dot |= is_dot_segment(&bytes[segment_start..i]);
                empty |= i > 0 && bytes[i - 1] == b'/';
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    dot |= is_dot_segment(&bytes[segment_start..]);
    percent
        .or(empty.then_some("an empty segment (//)"))
        .or(dot.then_some("a dot segment"))
}

/// What is wrong with the percent-encoding whose two digits are `hex`, if anything.
fn percent_problem(hex: Option<&[u8]>) -> Option<&'static str> {
    let digit = |d: u8| (d as char).to_digit(16);
    let decoded = match hex {
        Some(&[hi, lo]) => digit(hi).zip(digit(lo)).map(|(h, l)| (h * 16 + l) as u8),
        _ => None,
    };
    match decoded {
        None => Some("an invalid percent-encoding"),
        Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
            Some("a percent-encoded unreserved character")
        }
        Some(b'/' | b'\\' | 0) => Some("an encoded slash, backslash or NUL"),
        Some(_) => None,
    }
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three-pass check the one-pass [`ambiguity`] replaced, as the reference.
    fn reference(path: &str) -> Option<&'static str> {
        let bytes = path.as_bytes();
        if bytes.contains(&b'\\') {
            return Some("a backslash");
        }
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let decoded = bytes
                    .get(i + 1..i + 3)
                    // `from_str_radix` takes a sign (`%+5`), which is no percent-encoding.
                    .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
                match decoded {
                    None => return Some("an invalid percent-encoding"),
                    Some(b)
                        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') =>
                    {
                        return Some("a percent-encoded unreserved character");
                    }
                    Some(b'/' | b'\\' | 0) => return Some("an encoded slash, backslash or NUL"),
                    Some(_) => {}
                }
                i += 3;
            } else {
                i += 1;
            }
        }
        if path.contains("//") {
            return Some("an empty segment (//)");
        }
        if path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Some("a dot segment");
        }
        None
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_reference_on_random_paths() {
        const ALPHABET: &[u8] = b"a/.%2eEfF5cC0\\4+1z7-";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let len = (next() % 12) as usize;
            let path: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
                .collect();
            assert_eq!(ambiguity(&path), reference(&path), "{path:?}");
        }
    }

    #[test]
    fn normal_paths_pass() {
        for path in [
            "/",
            "/v1/chat/completions",
            "/v1/chat/completions/",
            "/openai/deployments/gpt-4o_prod.v2/chat/completions",
            "/v1/models/ft%3Agpt-4o%3Aorg",
            "/v1/files/file%20name",
            "/v1/%E2%82%AC",
            "/v1/a%25b",
            "/v1/.well-known",
            "/v1/..x",
        ] {
            assert_eq!(ambiguity(path), None, "{path}");
        }
    }

    #[test]
    fn paths_an_upstream_may_read_differently_are_refused() {
        for path in [
            "/v1/chat/%63ompletions",
            "/v1/chat/%43ompletions",
            "/v1%2Fchat/completions",
            "/v1%2fchat/completions",
            "/v1/chat%5Ccompletions",
            "/v1/chat/completions%00",
            "/v1/%2e%2e/admin",
            "/v1/%7Euser",
            "/public/../v1/chat/completions",
            "/public/./v1",
            "/v1/..",
            "/v1/.",
            "//v1/chat/completions",
            "/v1//chat/completions",
            "/v1\\chat",
            "/v1/%zz",
            "/v1/%4",
            "/v1/%+5",
        ] {
            assert!(ambiguity(path).is_some(), "{path}");
        }
    }
}
