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
    let bytes = path.as_bytes();
    if bytes.contains(&b'\\') {
        return Some("a backslash");
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let decoded = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
            match decoded {
                None => return Some("an invalid percent-encoding"),
                Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(ambiguity(path).is_some(), "{path}");
        }
    }
}
