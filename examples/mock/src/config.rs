//! What a mock does by default ([`MockConfig`]) and how a request overrides it (the
//! `x-mock-*` headers, see [`headers`](crate::headers)).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;

use crate::headers;

/// How the mock generates its answers, unless a request's `x-mock-*` headers say otherwise.
///
/// ```
/// use std::time::Duration;
/// use llmtrace_mock::{Fault, MockConfig};
///
/// let config = MockConfig {
///     ttft: Duration::from_millis(5),
///     gap: Duration::from_millis(1),
///     tokens: 4,
///     ..MockConfig::default()
/// };
/// // A mock whose every answer is cut off mid-stream:
/// let flaky = MockConfig { faults: vec![Fault::Cut], ..MockConfig::default() };
/// # let _ = (config, flaky);
/// ```
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Time from the request's arrival to the first token-bearing event (default 50 ms).
    ///
    /// Events that the real APIs send before the model has produced anything (the Responses
    /// API's `response.created`/`response.in_progress`, Anthropic's `message_start`,
    /// `content_block_start` and `ping`) go out at once; everything else is scheduled from here.
    /// A non-streaming answer is sent whole when its last token is due. Header `x-mock-ttft-ms`.
    pub ttft: Duration,
    /// Time between two tokens (default 20 ms). Header `x-mock-gap-ms`.
    pub gap: Duration,
    /// Output tokens per choice (default 16), cut down by the request's `max_tokens`,
    /// `max_completion_tokens` or `max_output_tokens` (finish reason `length`/`max_tokens`).
    /// Token `i` is the text `tok{i}`, preceded by a space except for the first: 3 tokens read
    /// `tok0 tok1 tok2`. Header `x-mock-tokens`.
    pub tokens: usize,
    /// How long the `stall` fault pauses the stream (default 1 s). Header `x-mock-stall-ms`.
    pub stall: Duration,
    /// When usage is reported (default [`UsageMode::Auto`], as the real APIs). Header `x-mock-usage`.
    pub usage: UsageMode,
    /// Faults applied to every request that does not send `x-mock-fault` (default none).
    pub faults: Vec<Fault>,
    /// Prompt tokens reported as read from the prompt cache (OpenAI `cached_tokens`, Anthropic
    /// `cache_read_input_tokens`; default 0, capped at the prompt's size).
    /// Header `x-mock-cached-tokens`.
    pub cached_tokens: u64,
    /// Prompt tokens reported as written to the cache (Anthropic `cache_creation_input_tokens`;
    /// default 0). Header `x-mock-cache-creation-tokens`.
    pub cache_creation_tokens: u64,
    /// Reasoning tokens reported on top of the visible ones (OpenAI `reasoning_tokens`, included
    /// in `completion_tokens`/`output_tokens`; default 0). Header `x-mock-reasoning-tokens`.
    pub reasoning_tokens: u64,
    /// How many of the latest requests [`Mock::received_requests`](crate::Mock::received_requests)
    /// and `GET /__mock/requests` keep, with headers and body (default 64; 0 keeps none,
    /// counting goes on). Each holds its whole body: mind large ones.
    pub keep_requests: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            ttft: Duration::from_millis(50),
            gap: Duration::from_millis(20),
            tokens: 16,
            stall: Duration::from_secs(1),
            usage: UsageMode::Auto,
            faults: Vec::new(),
            cached_tokens: 0,
            cache_creation_tokens: 0,
            reasoning_tokens: 0,
            keep_requests: 64,
        }
    }
}

/// When token usage is reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UsageMode {
    /// As the real APIs: always in non-streaming answers, the Responses API and Anthropic
    /// streams; in OpenAI chat/completions streams only with `stream_options.include_usage: true`.
    #[default]
    Auto,
    /// Also in OpenAI streams that did not ask (as some OpenAI-compatible servers do).
    Always,
    /// Never: no usage chunk, `usage` absent (OpenAI chat/completions, Anthropic) or `null`
    /// (Responses API). The SDKs may reject this for Anthropic, whose `usage` is required.
    Never,
}

impl FromStr for UsageMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(UsageMode::Auto),
            "always" => Ok(UsageMode::Always),
            "never" => Ok(UsageMode::Never),
            other => Err(format!(
                "{}: unknown value {other:?}; expected always, never or auto",
                headers::USAGE
            )),
        }
    }
}

/// Something that goes wrong on purpose. Several can be combined (`x-mock-fault: tools,stall`).
///
/// Faults that interrupt a stream (`cut`, `truncate`, `error-event`) and `stall` act halfway:
/// after `steps / 2` token events have been sent (so with 16 tokens, after `tok0 … tok7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `cut`: the connection is closed mid-stream, without the final events and without
    /// `[DONE]`; over HTTP/1.1 the chunked body lacks its terminating chunk, as when a peer
    /// dies. A non-streaming answer is cut halfway through its JSON.
    Cut,
    /// `truncate`: like `cut`, but the body ends cleanly (last chunk sent), as a proxy that
    /// gives up on a stream would do.
    Truncate,
    /// `error-event`: an in-stream error halfway: OpenAI chat/completions
    /// `data: {"error": {...}}`, Responses API `event: error`, Anthropic `event: error` with an
    /// `overloaded_error`; then the stream ends. A non-streaming request gets the status error
    /// instead (500 OpenAI, 529 Anthropic).
    ErrorEvent,
    /// `429`, `500`, or any status from 400 to 599: an immediate error answer shaped as the
    /// provider's (`{"error": {...}}` or `{"type": "error", "error": {...}}`); 429 adds
    /// `retry-after`.
    Status(u16),
    /// `garbage`: status 200, `content-type: text/event-stream`, and a body that is neither SSE
    /// nor JSON (an HTML error page).
    Garbage,
    /// `stall`: the stream pauses halfway for [`MockConfig::stall`] (`x-mock-stall-ms`), then
    /// goes on.
    Stall,
    /// `tools`: answer with a tool call even if the prompt does not ask for one (the first
    /// declared tool, or an invented `get_weather` if the request declares none).
    Tools,
    /// `content-filter`: stop after half the tokens with finish reason `content_filter`
    /// (Responses API: `incomplete`, reason `content_filter`; Anthropic: `refusal`).
    ContentFilter,
    /// `refusal`: the model refuses (`delta.refusal` / `message.refusal`, a Responses `refusal`
    /// part; Anthropic: stop reason `refusal`). The text is [`REFUSAL`](crate::REFUSAL).
    Refusal,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        Ok(match s.as_str() {
            "cut" => Fault::Cut,
            "truncate" => Fault::Truncate,
            "error-event" | "error_event" => Fault::ErrorEvent,
            "garbage" => Fault::Garbage,
            "stall" => Fault::Stall,
            "tools" | "tool" => Fault::Tools,
            "content-filter" | "content_filter" => Fault::ContentFilter,
            "refusal" => Fault::Refusal,
            code => match code.parse::<u16>() {
                Ok(n) if (400..=599).contains(&n) => Fault::Status(n),
                _ => {
                    return Err(format!(
                        "{}: unknown fault {code:?}; expected cut, truncate, error-event, \
                         garbage, stall, tools, content-filter, refusal, none, or a status \
                         400..=599",
                        headers::FAULT
                    ));
                }
            },
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Cut => f.write_str("cut"),
            Fault::Truncate => f.write_str("truncate"),
            Fault::ErrorEvent => f.write_str("error-event"),
            Fault::Status(n) => write!(f, "{n}"),
            Fault::Garbage => f.write_str("garbage"),
            Fault::Stall => f.write_str("stall"),
            Fault::Tools => f.write_str("tools"),
            Fault::ContentFilter => f.write_str("content-filter"),
            Fault::Refusal => f.write_str("refusal"),
        }
    }
}

/// Parses an `x-mock-fault` value: a comma-separated list; `none` or empty means no fault.
pub fn parse_faults(value: &str) -> Result<Vec<Fault>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("none"))
        .map(str::parse)
        .collect()
}

/// The largest `x-mock-tokens` (answers are scheduled whole before they start).
const MAX_TOKENS: u64 = 1_000_000;

/// The effective settings of one request: the config overridden by its headers.
#[derive(Clone, Debug)]
pub(crate) struct Controls {
    pub ttft: Duration,
    pub gap: Duration,
    pub tokens: usize,
    pub stall: Duration,
    pub usage: UsageMode,
    pub faults: Vec<Fault>,
    pub cached_tokens: u64,
    pub cache_creation_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Controls {
    pub(crate) fn new(config: &MockConfig, map: &HeaderMap) -> Result<Self, String> {
        fn text<'a>(map: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
            map.get(name)
                .map(|v| v.to_str().map_err(|_| format!("{name}: not visible ASCII")))
                .transpose()
        }
        fn number(map: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
            text(map, name)?
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{name}: expected a whole number, got {v:?}"))
                })
                .transpose()
        }
        let ms = |name: &str, default: Duration| -> Result<Duration, String> {
            Ok(number(map, name)?.map_or(default, Duration::from_millis))
        };
        // Applied around the handler (ids are drawn there); checked here so a bad one is a 400.
        number(map, headers::SEED)?;
        Ok(Controls {
            ttft: ms(headers::TTFT_MS, config.ttft)?,
            gap: ms(headers::GAP_MS, config.gap)?,
            stall: ms(headers::STALL_MS, config.stall)?,
            tokens: match number(map, headers::TOKENS)? {
                Some(n) if n > MAX_TOKENS => {
                    return Err(format!(
                        "{}: at most {MAX_TOKENS}, got {n}",
                        headers::TOKENS
                    ));
                }
                Some(n) => n as usize,
                None => config.tokens,
            },
            usage: text(map, headers::USAGE)?.map_or(Ok(config.usage), str::parse)?,
            faults: text(map, headers::FAULT)?
                .map_or_else(|| Ok(config.faults.clone()), parse_faults)?,
            cached_tokens: number(map, headers::CACHED_TOKENS)?.unwrap_or(config.cached_tokens),
            cache_creation_tokens: number(map, headers::CACHE_CREATION_TOKENS)?
                .unwrap_or(config.cache_creation_tokens),
            reasoning_tokens: number(map, headers::REASONING_TOKENS)?
                .unwrap_or(config.reasoning_tokens),
        })
    }

    pub(crate) fn has(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }

    pub(crate) fn status_fault(&self) -> Option<u16> {
        self.faults.iter().find_map(|f| match f {
            Fault::Status(n) => Some(*n),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_override_config() {
        let mut map = HeaderMap::new();
        map.insert(headers::TTFT_MS, "7".parse().unwrap());
        map.insert(headers::FAULT, "tools, 429 ,stall".parse().unwrap());
        map.insert(headers::USAGE, "Never".parse().unwrap());
        let c = Controls::new(&MockConfig::default(), &map).unwrap();
        assert_eq!(c.ttft, Duration::from_millis(7));
        assert_eq!(c.gap, Duration::from_millis(20));
        assert_eq!(
            c.faults,
            vec![Fault::Tools, Fault::Status(429), Fault::Stall]
        );
        assert_eq!(c.usage, UsageMode::Never);
        assert_eq!(c.status_fault(), Some(429));
    }

    #[test]
    fn bad_values_are_explained() {
        let mut map = HeaderMap::new();
        map.insert(headers::FAULT, "explode".parse().unwrap());
        let err = Controls::new(&MockConfig::default(), &map).unwrap_err();
        assert!(
            err.contains("x-mock-fault") && err.contains("explode"),
            "{err}"
        );
        assert_eq!(parse_faults("none").unwrap(), vec![]);
        assert!("200".parse::<Fault>().is_err());
    }
}
