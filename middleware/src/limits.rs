//! Bounds on what clients (and upstreams) control, in one place.
//!
//! Anything a client sends that reaches a span, a log line or a metric label is bounded in
//! length ([`bounded`] with the caps below) and in cardinality (see
//! [`GenAiMetrics::with_max_model_labels`](crate::genai::GenAiMetrics::with_max_model_labels)),
//! and no loop runs to a number a client chose ([`MAX_CHOICES`]).

use std::borrow::Cow;

/// Appended to a value [`bounded`] had to cut.
pub const TRUNCATED_MARKER: &str = "…[truncated]";

/// Choices tracked per exchange: finish reasons and captured output text for choice indexes
/// beyond this many distinct ones are not recorded, and a truncated stream reports `error` for
/// at most this many choices whatever the request's `n`.
pub const MAX_CHOICES: usize = 128;

/// Model names (`gen_ai.request.model`, `gen_ai.response.model`, an Azure deployment, and so
/// the model part of a GenAI span name), response ids, finish reasons, `encoding_format`,
/// `error.type` and other short identifiers, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Stop sequences recorded in `gen_ai.request.stop_sequences` (each capped at
/// [`MAX_NAME_BYTES`]).
pub const MAX_STOP_SEQUENCES: usize = 16;

/// `url.path`, `url.full` and the path used as a route or span name, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// `user_agent.original`, in bytes.
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// `server.address` and `client.address` (a host name, an IP address or the obfuscated
/// identifier `Forwarded` allows), in bytes.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// Each captured header value (`http.request.header.*`, `http.response.header.*`), in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;

/// Values recorded per captured header (a header may repeat).
pub const MAX_HEADER_VALUES: usize = 16;

/// `exception.message` and other free-text messages that may echo the request, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Distinct model names kept as metric label values by default; see
/// [`GenAiMetrics::with_max_model_labels`](crate::genai::GenAiMetrics::with_max_model_labels).
pub const DEFAULT_MAX_MODEL_LABELS: usize = 64;

/// Distinct `error.type` values kept as metric label values (status codes, provider error
/// types, transport failures); later new values are recorded as [`OTHER_LABEL`].
pub const MAX_ERROR_TYPE_LABELS: usize = 64;

/// A client-derived metric label value (a model name, an error type), in bytes: every series
/// repeats its labels on each line of a scrape, so these are shorter than on spans.
pub const MAX_LABEL_BYTES: usize = 64;

/// The label value that stands for every value beyond a label's budget.
pub const OTHER_LABEL: &str = "_OTHER";

/// `value` when it fits in `max` bytes; otherwise its longest prefix that ends on a character
/// boundary and leaves room for [`TRUNCATED_MARKER`], followed by the marker, so the result
/// never exceeds `max` bytes (when `max` is smaller than the marker, the value is cut at `max`
/// without it).
///
/// ```
/// use llmtrace::limits::{TRUNCATED_MARKER, bounded};
///
/// assert_eq!(bounded("gpt-4o", 256), "gpt-4o");
/// let long = "é".repeat(200);
/// let cut = bounded(&long, 64);
/// assert!(cut.len() <= 64 && cut.ends_with(TRUNCATED_MARKER));
/// assert!(long.starts_with(cut.strip_suffix(TRUNCATED_MARKER).unwrap()));
/// ```
pub fn bounded(value: &str, max: usize) -> Cow<'_, str> {
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let (room, marker) = match max.checked_sub(TRUNCATED_MARKER.len()) {
        Some(room) => (room, TRUNCATED_MARKER),
        None => (max, ""),
    };
    let mut cut = room;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + marker.len());
    out.push_str(&value[..cut]);
    out.push_str(marker);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_on_a_character_boundary_with_the_marker() {
        assert!(matches!(bounded("short", 5), Cow::Borrowed("short")));
        let cut = bounded("abcdefghijklmnopqrstuvwxyz", 20);
        assert_eq!(cut, format!("abcdef{TRUNCATED_MARKER}"));
        assert_eq!(cut.len(), 20);
        // `é` is two bytes: a cut inside it moves back.
        let cut = bounded("ééééééééééé", TRUNCATED_MARKER.len() + 3);
        assert_eq!(cut, format!("é{TRUNCATED_MARKER}"));
        // Too small for the marker: a plain cut.
        assert_eq!(bounded("abcdef", 3), "abc");
        assert_eq!(bounded("😀😀", 3), "");
        for max in 0..40 {
            for value in [
                "",
                "a",
                "ab😀cd",
                "ééééééééééééééé",
                "0123456789012345678901234",
            ] {
                let out = bounded(value, max);
                assert!(
                    out.len() <= max || out == value,
                    "{value:?} at {max}: {out:?}"
                );
            }
        }
    }
}
