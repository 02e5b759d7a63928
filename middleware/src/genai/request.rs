//! What an LLM request body says: model, stream flag, sampling parameters, tools, content.

use std::borrow::Cow;

use opentelemetry::StringValue;
use serde::Deserialize;
use serde_json::Value;

use super::endpoint::{ApiFormat, Endpoint};
use super::exchange::GenAiConfig;
use super::json::{self, Reader};
use super::tool_content::{self, ToolContent};
use super::view::{self, Len, Lenient, Loose, scan_f64, scan_i64, scan_str};
use crate::limits::{MAX_NAME_BYTES, MAX_STOP_SEQUENCES, bounded};

/// The parts of a request body the span records.
///
/// The strings are the client's, so they are bounded: `model`, each stop sequence and
/// `encoding_format` to [`MAX_NAME_BYTES`] (cut with a marker, see
/// [`bounded`](crate::limits::bounded)), and at most [`MAX_STOP_SEQUENCES`] stop sequences.
/// [`Exchange`](super::Exchange) applies the same bounds to values set by hand.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// `model` (for Azure, the deployment when the body names no model), at most
    /// [`MAX_NAME_BYTES`].
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// How many times the body names `stream` among its top-level members (counted to 2),
    /// where the one-pass read knows it: a body it read itself, no top-level key of which is
    /// spelled with an escape. `None` for a body read another way (kept for content capture,
    /// left to serde, not read). With `Some(0 | 1)` and `stream == false`, the body is
    /// certain not to stream (see [`request_with_usage_read`](super::request_with_usage_read)).
    pub stream_members: Option<u8>,
    /// `stream_options.include_usage: true` (OpenAI).
    pub include_usage: bool,
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens`.
    pub max_tokens: Option<i64>,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `top_k` (Anthropic).
    pub top_k: Option<f64>,
    /// `stop` / `stop_sequences`: the first [`MAX_STOP_SEQUENCES`], each at most
    /// [`MAX_NAME_BYTES`].
    pub stop_sequences: Vec<String>,
    /// `seed`.
    pub seed: Option<i64>,
    /// `n`, when present.
    pub choice_count: Option<i64>,
    /// `frequency_penalty`.
    pub frequency_penalty: Option<f64>,
    /// `presence_penalty`.
    pub presence_penalty: Option<f64>,
    /// Number of `tools` offered.
    pub tool_count: Option<i64>,
    /// `encoding_format` (embeddings), at most [`MAX_NAME_BYTES`].
    pub encoding_format: Option<String>,
    /// The conversation the request continues (OpenAI Responses `conversation`, an id or an
    /// object with an `id`), at most [`MAX_NAME_BYTES`].
    pub conversation_id: Option<String>,
    /// The response the request continues (OpenAI Responses `previous_response_id`), at most
    /// [`MAX_NAME_BYTES`].
    pub previous_response_id: Option<String>,
    /// Why the body could not be read, when it could not.
    pub parse_error: Option<String>,
    /// The ids of the [`PromptWatch`](super::PromptWatch) matchers the prompt matched
    /// (`llmtrace.prompt.matched`), set by [`parse_with`](Self::parse_with). The ids are the
    /// configuration's, not the client's; nothing of the prompt is kept.
    pub prompt_matched: Vec<StringValue>,
    /// Ids of the tool calls whose results the request carries (OpenAI chat `role: "tool"`
    /// messages' `tool_call_id`, Responses `function_call_output` items' `call_id`, Anthropic
    /// `tool_result` blocks' `tool_use_id`): the first 32, each at most 128 bytes.
    pub tool_results: Vec<String>,
    /// With content capture on only (else empty): what the request carries as the results of
    /// those tool calls (the `role: "tool"` message's `content`, the `function_call_output`'s
    /// `output`, the `tool_result` block's `content`), by id, together within
    /// [`content_cap`](GenAiConfig::content_cap), after the redactor (as
    /// [`ContentKind::ToolCallResult`](super::ContentKind::ToolCallResult)). Set by
    /// [`parse_with`](Self::parse_with).
    pub tool_result_content: Vec<ToolContent>,
    /// The parsed body, kept only when content capture is on.
    pub(crate) body: Option<Value>,
}

impl RequestInfo {
    /// Reads a request body. Never fails: what cannot be read is left out and
    /// [`parse_error`](Self::parse_error) says why; the request itself is forwarded untouched.
    ///
    /// ```
    /// use llmtrace::genai::{Endpoint, RequestInfo};
    ///
    /// let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
    /// let body = br#"{"model":"gpt-4o","stream":true,"max_tokens":64,"messages":[]}"#;
    /// let info = RequestInfo::parse(&endpoint, body, false);
    /// assert_eq!(info.model.as_deref(), Some("gpt-4o"));
    /// assert!(info.stream);
    /// assert_eq!(info.max_tokens, Some(64));
    /// ```
    pub fn parse(endpoint: &Endpoint, body: &[u8], keep_body: bool) -> RequestInfo {
        RequestInfo::parse_as(endpoint, body, keep_body, true)
    }

    /// [`parse`](Self::parse), reading a body that is not kept with [`RequestView::scan`]
    /// first when `scan` (else, and where the scan does not answer, with serde).
    fn parse_as(endpoint: &Endpoint, body: &[u8], keep_body: bool, scan: bool) -> RequestInfo {
        let mut info = RequestInfo {
            model: endpoint
                .deployment
                .as_deref()
                .map(|name| bounded(name, MAX_NAME_BYTES).into_owned()),
            ..RequestInfo::default()
        };
        if keep_body {
            // Capture keeps the whole body: parse it once, read the fields from it.
            match serde_json::from_slice::<Value>(body) {
                Ok(value) => match view::of::<RequestView<'_>>(&value) {
                    Some(fields) => {
                        fields.apply(endpoint.format, &mut info);
                        info.body = Some(value);
                    }
                    None => info.parse_error = Some(NOT_AN_OBJECT.to_owned()),
                },
                Err(error) => info.parse_error = Some(not_json(body, &error)),
            }
        } else if let Some(fields) = Some(body).filter(|_| scan).and_then(RequestView::scan) {
            fields.apply(endpoint.format, &mut info);
        } else {
            match view::read::<RequestView<'_>>(body) {
                Ok(Some(fields)) => fields.apply(endpoint.format, &mut info),
                Ok(None) => info.parse_error = Some(NOT_AN_OBJECT.to_owned()),
                Err(error) => info.parse_error = Some(not_json(body, &error.0)),
            }
        }
        if info.parse_error.is_none() {
            info.tool_results = tool_results(endpoint.format, body);
        }
        info
    }

    /// Reads a request body as `config` says: [`parse`](Self::parse)s it (keeping it when
    /// content capture is on) and runs the [`prompt_watch`](GenAiConfig::prompt_watch), when
    /// there is one, over its prompt. The tower layer and the gateway read bodies this way.
    ///
    /// ```
    /// use llmtrace::genai::{Endpoint, GenAiConfig, PromptWatch, RequestInfo};
    ///
    /// let config = GenAiConfig {
    ///     prompt_watch: Some(PromptWatch::builder().keywords("legal", ["lawsuit"]).build().unwrap()),
    ///     ..GenAiConfig::default()
    /// };
    /// let endpoint = Endpoint::detect("/v1/messages", None).unwrap();
    /// let body = br#"{"model":"claude-sonnet-4-5","max_tokens":64,
    ///     "messages":[{"role":"user","content":[{"type":"text","text":"a Lawsuit?"}]}]}"#;
    /// let info = RequestInfo::parse_with(&endpoint, body, &config);
    /// assert_eq!(info.prompt_matched[0].as_str(), "legal");
    /// ```
    pub fn parse_with(endpoint: &Endpoint, body: &[u8], config: &GenAiConfig) -> RequestInfo {
        let mut info = RequestInfo::parse(endpoint, body, config.capture_content);
        if let Some(kept) = info.body.as_ref().filter(|_| !info.tool_results.is_empty()) {
            info.tool_result_content = tool_content::tool_results(endpoint.format, kept, config);
        }
        if let Some(watch) = &config.prompt_watch {
            info.prompt_matched = watch.scan(endpoint.format, body);
        }
        info
    }

    /// What is known of a request whose body was not read because it is larger than `cap`
    /// bytes: what the endpoint says (the Azure deployment as the model), and a
    /// [`parse_error`](Self::parse_error) saying why the rest is missing. The tower layers and
    /// the gateway use it, so the message is the same in both.
    ///
    /// ```
    /// use llmtrace::genai::{Endpoint, RequestInfo};
    ///
    /// let endpoint = Endpoint::detect("/v1/chat/completions", None).unwrap();
    /// let info = RequestInfo::body_not_read(&endpoint, 1024);
    /// assert_eq!(
    ///     info.parse_error.as_deref(),
    ///     Some("request body over 1024 bytes was not read")
    /// );
    /// ```
    pub fn body_not_read(endpoint: &Endpoint, cap: usize) -> RequestInfo {
        RequestInfo {
            parse_error: Some(format!("request body over {cap} bytes was not read")),
            ..RequestInfo::from_endpoint(endpoint)
        }
    }

    /// What the endpoint alone says of a request whose body is still to come: the Azure
    /// deployment as the model, nothing else (no parse error either: nothing was read). The
    /// gateway starts the GenAI span with it, before the body arrives.
    ///
    /// ```
    /// use llmtrace::genai::{Endpoint, RequestInfo};
    ///
    /// let endpoint =
    ///     Endpoint::detect("/openai/deployments/prod-gpt4o/chat/completions", None).unwrap();
    /// let info = RequestInfo::from_endpoint(&endpoint);
    /// assert_eq!(info.model.as_deref(), Some("prod-gpt4o"));
    /// assert_eq!(info.parse_error, None);
    /// ```
    pub fn from_endpoint(endpoint: &Endpoint) -> RequestInfo {
        RequestInfo {
            model: endpoint
                .deployment
                .as_deref()
                .map(|name| bounded(name, MAX_NAME_BYTES).into_owned()),
            ..RequestInfo::default()
        }
    }

    /// Applies the bounds [`parse`](Self::parse) applies, to values set by hand.
    pub(crate) fn bound_strings(&mut self) {
        let bound = |value: &mut String| {
            if value.len() > MAX_NAME_BYTES {
                *value = bounded(value, MAX_NAME_BYTES).into_owned();
            }
        };
        self.model.iter_mut().for_each(bound);
        self.encoding_format.iter_mut().for_each(bound);
        self.conversation_id.iter_mut().for_each(bound);
        self.previous_response_id.iter_mut().for_each(bound);
        self.stop_sequences.truncate(MAX_STOP_SEQUENCES);
        self.stop_sequences.iter_mut().for_each(bound);
    }
}

const NOT_AN_OBJECT: &str = "request body is not a JSON object";

/// Why a body that is not JSON could not be read.
fn not_json(body: &[u8], error: &serde_json::Error) -> String {
    if body.is_empty() {
        "request body is empty".to_owned()
    } else {
        format!("request body is not JSON: {error}")
    }
}

/// The members of a request body the span records; the rest (messages, tools' definitions,
/// ...) is skipped unread. Each is read as `Value::as_*` would (see [`view`]), by serde or
/// straight from the bytes ([`scan`](RequestView::scan)).
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct RequestView<'a> {
    #[serde(default, borrow)]
    model: Loose<Cow<'a, str>>,
    #[serde(default)]
    stream: Loose<bool>,
    #[serde(default, borrow)]
    stream_options: Loose<StreamOptions<'a>>,
    #[serde(default)]
    max_tokens: Loose<i64>,
    #[serde(default)]
    max_completion_tokens: Loose<i64>,
    #[serde(default)]
    max_output_tokens: Loose<i64>,
    #[serde(default)]
    temperature: Loose<f64>,
    #[serde(default)]
    top_p: Loose<f64>,
    #[serde(default)]
    top_k: Loose<f64>,
    #[serde(default)]
    frequency_penalty: Loose<f64>,
    #[serde(default)]
    presence_penalty: Loose<f64>,
    #[serde(default)]
    seed: Loose<i64>,
    #[serde(default)]
    n: Loose<i64>,
    #[serde(default)]
    tools: Loose<Len>,
    #[serde(default, borrow)]
    encoding_format: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop: Loose<Stop<'a>>,
    #[serde(default, borrow)]
    stop_sequences: Loose<Stop<'a>>,
    #[serde(default, borrow)]
    conversation: Loose<Conversation<'a>>,
    #[serde(default, borrow)]
    previous_response_id: Loose<Cow<'a, str>>,
    /// How many times the scan met `stream` (counted to 2); serde leaves it `None`.
    #[serde(skip)]
    stream_members: Option<u8>,
}

/// The bit [`RequestView::scan_member`] answers for `stream` (`put`'s index 1).
const STREAM_BIT: u32 = 1 << 1;

/// The members that carry tool results, read in a second pass over bodies that name one (most
/// requests do not: their prompts are skipped once, by the first pass).
#[derive(Deserialize)]
struct ToolResultsView {
    /// Chat and Anthropic messages: only their tool results are read.
    #[serde(default)]
    messages: ToolResults,
    /// Responses API input items: only their `function_call_output`s are read.
    #[serde(default)]
    input: ToolResults,
}

/// The keys a tool result is named by; a body without any has none.
const TOOL_RESULT_KEYS: [&[u8]; 3] = [
    b"\"tool_call_id\"",
    b"\"tool_use_id\"",
    b"\"function_call_output\"",
];

/// Whether `body` names a tool result. A large body is searched once for all three keys (three
/// searches of a 100 KB prompt took ~1.4 instructions a byte); a small one by three `memmem`
/// searches, which start faster than the automaton (its search cost ~1.9k instructions on a
/// short chat request, callgrind).
fn mentions_tool_results(body: &[u8]) -> bool {
    static ONE_PASS: std::sync::LazyLock<aho_corasick::AhoCorasick> =
        std::sync::LazyLock::new(|| {
            aho_corasick::AhoCorasick::new(TOOL_RESULT_KEYS).expect("three literal patterns")
        });
    static EACH: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 3]> =
        std::sync::LazyLock::new(|| TOOL_RESULT_KEYS.map(memchr::memmem::Finder::new));
    if body.len() > 4096 {
        ONE_PASS.is_match(body)
    } else {
        EACH.iter().any(|key| key.find(body).is_some())
    }
}

/// The tool-result ids of a request body (see [`RequestInfo::tool_results`]).
fn tool_results(format: ApiFormat, body: &[u8]) -> Vec<String> {
    if !mentions_tool_results(body) {
        return Vec::new();
    }
    match serde_json::from_slice::<ToolResultsView>(body) {
        Ok(view) if format == ApiFormat::OpenAiResponses => view.input.0,
        Ok(view) => view.messages.0,
        Err(_) => Vec::new(),
    }
}

/// The tool-result ids of a `messages` or `input` array; anything else (a string prompt,
/// message text) is skipped without being copied.
#[derive(Default)]
struct ToolResults(Vec<String>);

impl<'de> Deserialize<'de> for ToolResults {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ToolResultsVisitor(Collect::Messages))
    }
}

/// What a [`ToolResultsVisitor`] reads from the array it visits.
#[derive(Clone, Copy)]
enum Collect {
    /// Messages or input items: `tool_call_id`, `function_call_output`'s `call_id`, and the
    /// `tool_result` blocks of their `content`.
    Messages,
    /// A message's content blocks: `tool_result`'s `tool_use_id`.
    Blocks,
}

struct ToolResultsVisitor(Collect);

impl<'de> serde::de::Visitor<'de> for ToolResultsVisitor {
    type Value = ToolResults;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<ToolResults, E> {
        Ok(ToolResults::default())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<ToolResults, E> {
        Ok(ToolResults::default())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<ToolResults, E> {
        Ok(ToolResults::default())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<ToolResults, E> {
        Ok(ToolResults::default())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<ToolResults, E> {
        Ok(ToolResults::default())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<ToolResults, E> {
        Ok(ToolResults::default())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ToolResults, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(ToolResults::default())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ToolResults, A::Error> {
        let mut ids = Vec::new();
        let mut keep = |id: &str| {
            if !id.is_empty() && ids.len() < super::response::MAX_TOOL_CALLS {
                ids.push(super::response::tool_text(id));
            }
        };
        while let Some(Loose(item)) = seq.next_element::<Loose<ItemView<'de>>>()? {
            let Some(item) = item else { continue };
            match self.0 {
                Collect::Messages => {
                    if let Some(id) = item.tool_call_id.str() {
                        keep(id);
                    }
                    if item.kind.str() == Some("function_call_output") {
                        keep(item.call_id.str().unwrap_or(""));
                    }
                    for id in item.content.0 {
                        keep(&id);
                    }
                }
                Collect::Blocks => {
                    if item.kind.str() == Some("tool_result") {
                        keep(item.tool_use_id.str().unwrap_or(""));
                    }
                }
            }
        }
        Ok(ToolResults(ids))
    }
}

/// A message, input item or content block: the members that name a tool result.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct ItemView<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_call_id: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    call_id: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_use_id: Loose<Cow<'a, str>>,
    #[serde(default)]
    content: ContentBlocks,
}

view::lenient_object!(ItemView);

/// A message's `content`: the ids of its `tool_result` blocks (a string is skipped).
#[derive(Default)]
struct ContentBlocks(Vec<String>);

impl<'de> Deserialize<'de> for ContentBlocks {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ToolResultsVisitor(Collect::Blocks))
            .map(|ToolResults(ids)| ContentBlocks(ids))
    }
}

/// `conversation` (OpenAI Responses): the id, or an object with the id.
struct Conversation<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Lenient<'de> for Conversation<'a> {
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(Conversation(s))
    }
    fn from_map<A: serde::de::MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        let object = <ConversationObject<'a> as Lenient<'de>>::from_map(map)?;
        Ok(object.and_then(|o| o.id.0).map(Conversation))
    }
}

/// `conversation` as an object.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct ConversationObject<'a> {
    #[serde(default, borrow)]
    id: Loose<Cow<'a, str>>,
}

view::lenient_object!(ConversationObject);

/// `stream_options` (OpenAI).
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct StreamOptions<'a> {
    #[serde(default)]
    include_usage: Loose<bool>,
    #[serde(skip)]
    _borrow: std::marker::PhantomData<&'a ()>,
}

view::lenient_object!(StreamOptions);

/// A stop member: one string or an array (its strings kept, at most [`MAX_STOP_SEQUENCES`]).
enum Stop<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl<'de: 'a, 'a> Lenient<'de> for Stop<'a> {
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(Stop::One(s))
    }
    fn from_seq<A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut items = Vec::new();
        while let Some(Loose(item)) = seq.next_element::<Loose<Cow<'a, str>>>()? {
            if items.len() < MAX_STOP_SEQUENCES {
                items.extend(item);
            }
        }
        Ok(Some(Stop::Many(items)))
    }
}

impl<'a> RequestView<'a> {
    /// Reads a body straight from its bytes in one pass, with a [`Reader`] made
    /// [`like_serde`](Reader::like_serde), as [`view::read`] reads it: `Some` only where
    /// `view::read` reads an object, with the same view. `None` where it fails or finds no
    /// object, and where the reader leaves the body to serde_json (escaped keys, deep nesting,
    /// long numbers): the caller then reads it with serde, whose messages stay its own.
    ///
    /// A member repeated (in the body, its `stream_options` or its `conversation` object) is
    /// read as its last occurrence, as `view::read` reads it: through a `Value`, because
    /// serde's derive rejects the repeat. A `Value` is stricter than the view about what it
    /// skips, so then the body must be what it reads too: [`json::is_valid`] (UTF-8
    /// throughout, surrogates paired in every string; the reader bounded depth and numbers).
    fn scan(bytes: &'a [u8]) -> Option<Self> {
        let mut reader = Reader::like_serde(bytes);
        let mut view = RequestView::default();
        let (mut seen, mut repeated, mut streams) = (0u32, false, 0u8);
        let object = reader.object(|reader, key| {
            let bit = view.scan_member(reader, key, &mut repeated)?;
            if bit == STREAM_BIT {
                streams = streams.saturating_add(1).min(2);
            }
            repeated |= seen & bit != 0;
            seen |= bit;
            Some(())
        })?;
        if !object || !reader.at_end() || (repeated && !json::is_valid(bytes)) {
            return None;
        }
        view.stream_members = Some(streams);
        Some(view)
    }

    /// Reads the member `key` into the view, or skips it when the view does not declare it;
    /// answers the member's bit (`0` for one skipped). `repeated` is set when a member of
    /// `stream_options` or a `conversation` object is repeated.
    fn scan_member(
        &mut self,
        reader: &mut Reader<'a>,
        key: &[u8],
        repeated: &mut bool,
    ) -> Option<u32> {
        let bit = match key {
            b"model" => put(&mut self.model, scan_str(reader)?, 0),
            b"stream" => put(&mut self.stream, Loose(reader.boolean()?), 1),
            b"stream_options" => put(
                &mut self.stream_options,
                StreamOptions::scan(reader, repeated)?,
                2,
            ),
            b"max_tokens" => put(&mut self.max_tokens, scan_i64(reader)?, 3),
            b"max_completion_tokens" => put(&mut self.max_completion_tokens, scan_i64(reader)?, 4),
            b"max_output_tokens" => put(&mut self.max_output_tokens, scan_i64(reader)?, 5),
            b"temperature" => put(&mut self.temperature, scan_f64(reader)?, 6),
            b"top_p" => put(&mut self.top_p, scan_f64(reader)?, 7),
            b"top_k" => put(&mut self.top_k, scan_f64(reader)?, 8),
            b"frequency_penalty" => put(&mut self.frequency_penalty, scan_f64(reader)?, 9),
            b"presence_penalty" => put(&mut self.presence_penalty, scan_f64(reader)?, 10),
            b"seed" => put(&mut self.seed, scan_i64(reader)?, 11),
            b"n" => put(&mut self.n, scan_i64(reader)?, 12),
            b"tools" => put(&mut self.tools, scan_len(reader)?, 13),
            b"encoding_format" => put(&mut self.encoding_format, scan_str(reader)?, 14),
            b"stop" => put(&mut self.stop, Stop::scan(reader)?, 15),
            b"stop_sequences" => put(&mut self.stop_sequences, Stop::scan(reader)?, 16),
            b"conversation" => put(
                &mut self.conversation,
                Conversation::scan(reader, repeated)?,
                17,
            ),
            b"previous_response_id" => put(&mut self.previous_response_id, scan_str(reader)?, 18),
            _ => {
                reader.skip()?;
                0
            }
        };
        Some(bit)
    }

    /// Records the members in `info`, bounded.
    fn apply(self, format: ApiFormat, info: &mut RequestInfo) {
        let name = |s: &str| bounded(s, MAX_NAME_BYTES).into_owned();
        if let Some(model) = self.model.str() {
            info.model = Some(name(model));
        }
        info.stream = self.stream.value().unwrap_or(false);
        info.stream_members = self.stream_members;
        info.include_usage = self
            .stream_options
            .get()
            .and_then(|o| o.include_usage.value())
            .unwrap_or(false);
        info.max_tokens = self
            .max_tokens
            .value()
            .or(self.max_completion_tokens.value())
            .or(self.max_output_tokens.value());
        info.temperature = self.temperature.value();
        info.top_p = self.top_p.value();
        info.top_k = self.top_k.value();
        info.frequency_penalty = self.frequency_penalty.value();
        info.presence_penalty = self.presence_penalty.value();
        info.seed = self.seed.value();
        info.choice_count = self.n.value();
        info.tool_count = self.tools.value().map(|Len(n)| n as i64);
        info.encoding_format = self.encoding_format.str().map(name);
        if format == ApiFormat::OpenAiResponses {
            info.conversation_id = self.conversation.0.map(|Conversation(id)| name(&id));
            info.previous_response_id = self.previous_response_id.str().map(name);
        }
        let stop = match format {
            ApiFormat::OpenAiChat
            | ApiFormat::OpenAiCompletions
            | ApiFormat::OpenAiEmbeddings
            | ApiFormat::OpenAiResponses => self.stop,
            ApiFormat::AnthropicMessages => self.stop_sequences,
        };
        info.stop_sequences = match stop.0 {
            Some(Stop::One(s)) => vec![name(&s)],
            Some(Stop::Many(items)) => items.iter().map(|s| name(s)).collect(),
            None => Vec::new(),
        };
    }
}

/// Stores a member's `value` in its `slot`; answers the member's bit, `1 << index`.
fn put<T>(slot: &mut T, value: T, index: u32) -> u32 {
    *slot = value;
    1 << index
}

/// Reads an array's length as its [`Loose`] view does, the elements skipped.
fn scan_len(reader: &mut Reader<'_>) -> Option<Loose<Len>> {
    let mut len = 0;
    let array = reader.array(|reader| {
        len += 1;
        reader.skip()
    })?;
    Some(Loose(array.then_some(Len(len))))
}

/// Reads the member of an object that `name` names, with `read`, as serde's derive reads a
/// struct of that one member: the others skipped, a repeat setting `repeated`.
/// `Some(None)`: another value than an object.
fn scan_one<'a, T>(
    reader: &mut Reader<'a>,
    name: &[u8],
    repeated: &mut bool,
    mut read: impl FnMut(&mut Reader<'a>) -> Option<T>,
) -> Option<Option<Option<T>>> {
    let mut member = None;
    let object = reader.object(|reader, key| {
        if key != name {
            return reader.skip();
        }
        *repeated |= member.is_some();
        member = Some(read(reader)?);
        Some(())
    })?;
    Some(object.then_some(member))
}

impl<'a> StreamOptions<'a> {
    /// Reads `stream_options` as its [`Loose`] view does (see [`scan_one`]).
    fn scan(reader: &mut Reader<'a>, repeated: &mut bool) -> Option<Loose<Self>> {
        let object = scan_one(reader, b"include_usage", repeated, |r| r.boolean())?;
        Some(Loose(object.map(|include_usage| StreamOptions {
            include_usage: Loose(include_usage.flatten()),
            _borrow: std::marker::PhantomData,
        })))
    }
}

impl<'a> Conversation<'a> {
    /// Reads `conversation` as its [`Loose`] view does: a string, or an object's `id` (see
    /// [`scan_one`]).
    fn scan(reader: &mut Reader<'a>, repeated: &mut bool) -> Option<Loose<Self>> {
        if reader.peek()? == b'"' {
            return Some(Loose(reader.string()?.map(Conversation)));
        }
        let object = scan_one(reader, b"id", repeated, Reader::string)?;
        Some(Loose(object.flatten().flatten().map(Conversation)))
    }
}

impl<'a> Stop<'a> {
    /// Reads a stop member as its [`Loose`] view does: a string, or an array's strings (every
    /// element read, the first [`MAX_STOP_SEQUENCES`] strings kept).
    fn scan(reader: &mut Reader<'a>) -> Option<Loose<Self>> {
        if reader.peek()? == b'"' {
            return Some(Loose(reader.string()?.map(Stop::One)));
        }
        let mut items = Vec::new();
        let array = reader.array(|reader| {
            let item = reader.string()?;
            if items.len() < MAX_STOP_SEQUENCES {
                items.extend(item);
            }
            Some(())
        })?;
        Some(Loose(array.then_some(Stop::Many(items))))
    }
}

#[cfg(test)]
mod tool_key_tests {
    #[test]
    fn small_and_large_bodies_find_the_same_keys() {
        for key in super::TOOL_RESULT_KEYS {
            for pad in [0, 10, 5000] {
                let mut body = vec![b'x'; pad];
                body.extend_from_slice(key);
                body.extend(vec![b'y'; pad]);
                assert!(super::mentions_tool_results(&body), "{pad}");
                body.retain(|b| *b != b'"');
                assert!(!super::mentions_tool_results(&body), "{pad}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unread_body_keeps_what_the_endpoint_says_and_says_why() {
        let endpoint =
            Endpoint::detect("/openai/deployments/gpt-4o-mini/chat/completions", None).unwrap();
        let info = RequestInfo::body_not_read(&endpoint, 65536);
        assert_eq!(
            info.parse_error.as_deref(),
            Some("request body over 65536 bytes was not read")
        );
        assert_eq!(info.model, endpoint.deployment);
        assert!(info.body.is_none());
        // The same as the two call sites built it by hand.
        let mut by_hand = RequestInfo::parse(&endpoint, b"", false);
        by_hand.parse_error = Some("request body over 65536 bytes was not read".to_owned());
        assert_eq!(info, by_hand);
    }

    /// The view reads each member as `Value::as_*` did: a member of another type is absent,
    /// not an error, and the rest of the body is still read.
    #[test]
    fn members_of_another_type_are_absent_and_the_rest_is_read() {
        let chat = Endpoint::detect("/v1/chat/completions", None).unwrap();
        let body = br#"{"model": 5, "stream": "yes", "max_tokens": 1.5,
            "max_completion_tokens": 7, "tools": {"a": 1}, "stop": ["a", 1, null, "b"],
            "temperature": 1, "top_p": "high", "seed": -3, "n": 18446744073709551615,
            "stream_options": [true], "messages": [{"role": "user", "content": "hi"}]}"#;
        for keep in [false, true] {
            let info = RequestInfo::parse(&chat, body, keep);
            assert_eq!(info.parse_error, None);
            assert_eq!(info.model, None);
            assert!(!info.stream && !info.include_usage);
            assert_eq!(info.max_tokens, Some(7));
            assert_eq!(info.tool_count, None);
            assert_eq!(info.stop_sequences, ["a", "b"]);
            assert_eq!(info.temperature, Some(1.0));
            assert_eq!(info.top_p, None);
            assert_eq!(info.seed, Some(-3));
            assert_eq!(info.choice_count, None, "u64::MAX does not fit an i64");
            assert_eq!(info.body.is_some(), keep);
        }
    }

    /// A repeated member: the last one counts, as in a `Value` (serde's derive alone would
    /// reject the body).
    #[test]
    fn a_repeated_member_reads_as_its_last_occurrence() {
        let chat = Endpoint::detect("/v1/chat/completions", None).unwrap();
        let body = br#"{"model":"a","stream":true,"model":"b\u0021","stream":false}"#;
        let info = RequestInfo::parse(&chat, body, false);
        assert_eq!(info.model.as_deref(), Some("b!"));
        assert!(!info.stream);
    }

    /// OpenAI Responses: `conversation` as an id or an object with one, and
    /// `previous_response_id`; other types are absent; other APIs' bodies are not read for them.
    #[test]
    fn a_responses_body_names_its_conversation_and_previous_response() {
        let responses = Endpoint::detect("/v1/responses", None).unwrap();
        let chat = Endpoint::detect("/v1/chat/completions", None).unwrap();
        let long = "c".repeat(1000);
        for keep in [false, true] {
            for (body, conversation, previous) in [
                (
                    r#"{"conversation":"conv_1","previous_response_id":"resp_1"}"#.to_owned(),
                    Some("conv_1"),
                    Some("resp_1"),
                ),
                (
                    r#"{"conversation":{"id":"conv_2","x":[1]}}"#.to_owned(),
                    Some("conv_2"),
                    None,
                ),
                (
                    r#"{"conversation":{"id":7},"previous_response_id":null}"#.to_owned(),
                    None,
                    None,
                ),
                (
                    r#"{"conversation":["conv_3"],"previous_response_id":5}"#.to_owned(),
                    None,
                    None,
                ),
                (
                    format!(r#"{{"conversation":"{long}"}}"#),
                    Some(&long[..]),
                    None,
                ),
            ] {
                let info = RequestInfo::parse(&responses, body.as_bytes(), keep);
                assert_eq!(info.parse_error, None);
                match conversation {
                    Some(c) if c.len() > MAX_NAME_BYTES => {
                        let got = info.conversation_id.unwrap();
                        assert!(got.len() <= MAX_NAME_BYTES && got.starts_with("ccc"));
                    }
                    _ => assert_eq!(info.conversation_id.as_deref(), conversation, "{body}"),
                }
                assert_eq!(info.previous_response_id.as_deref(), previous, "{body}");
                let info = RequestInfo::parse(&chat, body.as_bytes(), keep);
                assert_eq!(
                    (info.conversation_id, info.previous_response_id),
                    (None, None)
                );
            }
        }
    }

    #[test]
    fn what_is_not_an_object_or_not_json_says_so() {
        let chat = Endpoint::detect("/v1/chat/completions", None).unwrap();
        let messages = Endpoint::detect("/v1/messages", None).unwrap();
        for (body, error) in [
            (&b"[1, 2]"[..], "request body is not a JSON object"),
            (b" \"model\"", "request body is not a JSON object"),
            (b"", "request body is empty"),
            (
                b"{\"model\": ",
                "request body is not JSON: EOF while parsing a value at line 1 column 10",
            ),
        ] {
            let info = RequestInfo::parse(&chat, body, false);
            assert_eq!(info.parse_error.as_deref(), Some(error), "{body:?}");
            assert_eq!(info.model, None);
        }
        // Each provider's own stop member.
        let body = br#"{"stop": ["x"], "stop_sequences": ["y"]}"#;
        assert_eq!(RequestInfo::parse(&chat, body, false).stop_sequences, ["x"]);
        assert_eq!(
            RequestInfo::parse(&messages, body, false).stop_sequences,
            ["y"]
        );
    }
}

/// The scan ([`RequestView::scan`]) against the serde path it replaces, as the oracle.
#[cfg(test)]
mod scan_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::genai::json::test_docs::{self, Dirt, Doc};
    use crate::genai::{request_with_usage, request_with_usage_read};

    /// The members the view reads, at every level, and other keys bodies have.
    const NAMES: &[&str] = &[
        "model",
        "stream",
        "stream_options",
        "include_usage",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "temperature",
        "top_p",
        "top_k",
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "n",
        "tools",
        "encoding_format",
        "stop",
        "stop_sequences",
        "conversation",
        "id",
        "previous_response_id",
        "messages",
        "input",
        "role",
        "content",
        "type",
        "text",
        "tool_call_id",
        "",
    ];

    /// The endpoints whose bodies differ in what is read.
    fn endpoints() -> [Endpoint; 3] {
        ["/v1/chat/completions", "/v1/messages", "/v1/responses"]
            .map(|path| Endpoint::detect(path, None).unwrap())
    }

    /// Reads `body` for each endpoint with the scan and with serde alone, and compares what
    /// they read; answers whether the scan read it (without falling back).
    fn check(body: &[u8]) -> bool {
        let text = String::from_utf8_lossy(body);
        for endpoint in endpoints() {
            let scanned = RequestInfo::parse(&endpoint, body, false);
            let serde = RequestInfo::parse_as(&endpoint, body, false, false);
            assert_eq!(serde.stream_members, None);
            // A body said not to stream is one the usage splice leaves for that reason.
            assert_eq!(
                request_with_usage_read(&endpoint, body, &scanned),
                request_with_usage(&endpoint, body),
                "{text}"
            );
            let scanned = RequestInfo {
                stream_members: None,
                ..scanned
            };
            assert_eq!(format!("{scanned:?}"), format!("{serde:?}"), "{text}");
            // Capture reads through a `Value`: the same members.
            let kept = RequestInfo::parse(&endpoint, body, true);
            if kept.parse_error.is_none() {
                assert_eq!(
                    format!("{:?}", RequestInfo { body: None, ..kept }),
                    format!("{scanned:?}"),
                    "{text}"
                );
            }
        }
        RequestView::scan(body).is_some()
    }

    /// A body: `check`ed, and read by the scan itself.
    fn scans(body: &[u8]) {
        assert!(
            check(body),
            "left to serde: {}",
            String::from_utf8_lossy(body)
        );
    }

    /// A body left to serde, read the same.
    fn falls_back(body: &[u8]) {
        assert!(!check(body), "scanned: {}", String::from_utf8_lossy(body));
    }

    #[test]
    fn bodies_read_as_serde_reads_them() {
        for body in [
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}"#,
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true,"x":[1]},"max_completion_tokens":64,"temperature":0.7,"top_p":0.30000000000000004,"frequency_penalty":-0.5,"presence_penalty":1e-3,"seed":-9223372036854775808,"n":2,"tools":[{"type":"function"},2,null],"stop":["a","b\n"],"messages":[]}"#,
            r#"{"model":"claude","max_tokens":1024,"top_k":40,"stop_sequences":"END","system":"s","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
            r#"{"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"base64"}"#,
            r#"{"model":"o3","input":"hi","conversation":{"id":"conv_1","x":{"id":"no"}},"previous_response_id":"resp_1","max_output_tokens":5}"#,
            r#"{"conversation":"conv_2","conversation":null}"#,
            r#"{}"#,
            " \n\t\r{ \"model\" : \"m\" , \"stream\" : false } \n",
            // Another type than read, for every member.
            r#"{"model":5,"stream":"yes","stream_options":[true],"max_tokens":1.5,"temperature":"hot","top_p":null,"tools":{"a":1},"stop":7,"conversation":[],"seed":1e2,"n":18446744073709551615,"encoding_format":{},"previous_response_id":false}"#,
            r#"{"stop":["a",1,null,["b"],{"c":"d"},"e"],"stop_sequences":[]}"#,
            // More stop sequences than are kept: all read.
            r#"{"stop":["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17","18","19","20"]}"#,
            // Numbers valued as serde_json values them.
            r#"{"temperature":-0,"top_p":-0.0,"top_k":1E+2,"frequency_penalty":18446744073709551616.5,"presence_penalty":123456789012345678901234567890,"seed":-9223372036854775809,"max_tokens":9223372036854775807}"#,
            r#"{"temperature":2.2250738585072014e-99,"top_p":5e-99,"top_k":1.7976931348623157e99}"#,
            // Skipped strings: unpaired surrogates and bytes that are not UTF-8 pass serde's
            // view (not a `Value`).
            r#"{"model":"m","messages":[{"content":"\ud800 \udc00 \ud83d\u0041"}]}"#,
            "{\"model\":\"m\",\"messages\":[{\"content\":\"\u{e9} \\u00e9\"}]}",
        ] {
            scans(body.as_bytes());
        }
        scans(b"{\"model\":\"m\",\"messages\":[{\"content\":\"\xff\xc3 \xed\xa0\x80\"}]}");
        scans(b"{\"messages\":[{\"\xff\":1}],\"model\":\"m\"}");
    }

    /// A repeated member reads as its last occurrence, through a `Value` in serde's path:
    /// the scan reads it only where a `Value` reads the body.
    #[test]
    fn repeated_members_read_as_their_last() {
        for body in [
            r#"{"model":"a","stream":true,"model":"b\u0021","stream":false}"#,
            r#"{"model":"a","model":7}"#,
            r#"{"stream_options":{"include_usage":true,"include_usage":false}}"#,
            r#"{"stream_options":{"include_usage":true},"stream_options":null}"#,
            r#"{"conversation":{"id":"a","id":"b"}}"#,
            r#"{"stop":["a"],"stop":"b","stop_sequences":"c"}"#,
            r#"{"messages":[],"messages":[{"model":"no"}],"model":"m"}"#,
        ] {
            scans(body.as_bytes());
        }
        // A `Value` reads every string: an unpaired surrogate or a byte that is not UTF-8
        // fails it, so the scan leaves such a body to serde, which says why.
        for body in [
            &br#"{"model":"a","model":"b","messages":[{"content":"\ud800"}]}"#[..],
            b"{\"model\":\"a\",\"model\":\"b\",\"messages\":[{\"content\":\"\xff\"}]}",
            br#"{"stream_options":{"include_usage":true,"include_usage":false},"x":"\udc00"}"#,
        ] {
            falls_back(body);
            let chat = &endpoints()[0];
            let error = RequestInfo::parse(chat, body, false).parse_error.unwrap();
            assert!(error.starts_with("request body is not JSON: "), "{error}");
        }
        // A member repeated in an object the view does not read is no repeat.
        scans(br#"{"messages":[{"role":"a","role":"b","content":"\ud800"}],"model":"m"}"#);
    }

    /// What serde_json rejects, the scan does not read; serde says why.
    #[test]
    fn what_serde_rejects_is_left_to_it() {
        for body in [
            &b""[..],
            b" ",
            b"[1]",
            b"\"s\"",
            b"null",
            b"{",
            b"\xef\xbb\xbf{\"model\":\"m\"}",
            br#"{"model":"m"} x"#,
            br#"{"model":"m"}{}"#,
            br#"{"model":"m",}"#,
            br#"{"model" "m"}"#,
            br#"{"x":01}"#,
            // Skipped strings: raw control characters, broken escapes.
            b"{\"messages\":[{\"content\":\"a\x01b\"}],\"model\":\"m\"}",
            b"{\"messages\":\"tab\there\",\"model\":\"m\"}",
            br#"{"messages":"\x","model":"m"}"#,
            br#"{"messages":"\u12","model":"m"}"#,
            br#"{"messages":"\uZZZZ","model":"m"}"#,
            b"{\"messages\":{\"a\x1f\":1},\"model\":\"m\"}",
            // Keys serde reads as `str`.
            b"{\"\xff\":1,\"model\":\"m\"}",
            b"{\"mo\x01del\":1}",
            b"{\"model\":{\"\xff\":1}}",
            // Strings serde reads in full: the members read, and those of another type.
            br#"{"model":"\ud800"}"#,
            b"{\"model\":\"\xff\"}",
            br#"{"stream":"\udc00"}"#,
            br#"{"stop":["a","\ud800"]}"#,
            br#"{"tools":{"\ud800":1}}"#,
            br#"{"conversation":{"id":"\ud83d\u0041"}}"#,
            // Numbers out of range where read.
            br#"{"temperature":1e400}"#,
            br#"{"seed":-1e400}"#,
        ] {
            let chat = &endpoints()[0];
            assert!(RequestInfo::parse(chat, body, false).parse_error.is_some());
            falls_back(body);
        }
    }

    /// What serde reads but the scan leaves to it: read the same, by serde.
    #[test]
    fn what_the_scan_leaves_to_serde_reads_the_same() {
        let deep = |depth: usize| {
            format!(
                r#"{{"model":"m","messages":{}1{}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        scans(deep(127).as_bytes());
        // serde counts no depth in what it skips.
        falls_back(deep(128).as_bytes());
        falls_back(deep(1000).as_bytes());
        for body in [
            &br#"{"m\u006fdel":"m"}"#[..],
            br#"{"messages":[1e400],"model":"m"}"#,
            br#"{"temperature":1e-400}"#,
            br#"{"stream_options":{"include_\u0075sage":true}}"#,
        ] {
            let chat = &endpoints()[0];
            assert!(RequestInfo::parse(chat, body, false).parse_error.is_none());
            falls_back(body);
        }
    }

    /// Where the strings (keys too) of a JSON document start, just past their opening quote.
    fn string_starts(body: &[u8]) -> Vec<usize> {
        let (mut starts, mut inside, mut escaped) = (Vec::new(), false, false);
        for (i, &byte) in body.iter().enumerate() {
            match byte {
                _ if escaped => escaped = false,
                b'\\' if inside => escaped = true,
                b'"' => {
                    inside = !inside;
                    if inside {
                        starts.push(i + 1);
                    }
                }
                _ => {}
            }
        }
        starts
    }

    /// A value for a member the view reads: most often of the type read.
    fn member(name: &'static str, dirt: Dirt) -> BoxedStrategy<(Vec<u8>, Doc)> {
        let str = || test_docs::string(dirt).prop_map(Doc::Str).boxed();
        let num = || test_docs::number(dirt).prop_map(Doc::Token).boxed();
        let bool = || {
            prop::sample::select(vec!["true", "false"])
                .prop_map(|b| Doc::Token(b.to_owned()))
                .boxed()
        };
        let strings = || {
            prop::collection::vec(str(), 0..14)
                .prop_map(Doc::Array)
                .boxed()
        };
        let object = |key: &'static str, value: BoxedStrategy<Doc>| {
            let other = (test_docs::key(NAMES, dirt), test_docs::any_doc(NAMES, dirt));
            let member =
                prop_oneof![3 => value.prop_map(move |v| (key.as_bytes().to_vec(), v)), 1 => other];
            prop::collection::vec(member, 0..3)
                .prop_map(Doc::Object)
                .boxed()
        };
        let value = match name {
            "model" | "encoding_format" | "previous_response_id" => str(),
            "stream" => bool(),
            "stream_options" => object("include_usage", bool()),
            "tools" => prop::collection::vec(test_docs::any_doc(NAMES, dirt), 0..4)
                .prop_map(Doc::Array)
                .boxed(),
            "stop" | "stop_sequences" => prop_oneof![str(), strings()].boxed(),
            "conversation" => prop_oneof![str(), object("id", str())].boxed(),
            _ => num(),
        };
        let value = prop_oneof![4 => value, 1 => test_docs::any_doc(NAMES, dirt)];
        value
            .prop_map(move |v| (name.as_bytes().to_vec(), v))
            .boxed()
    }

    /// A request body: some of the members read (some repeated, of any type), a prompt, and
    /// other members, in any order, with strings as clean as `dirt` allows.
    fn body(dirt: Dirt) -> impl Strategy<Value = (Doc, &'static str)> {
        let read: Vec<_> = NAMES
            .iter()
            .filter(|name| {
                !matches!(
                    **name,
                    "include_usage"
                        | "id"
                        | "messages"
                        | "input"
                        | "role"
                        | "content"
                        | "type"
                        | "text"
                        | "tool_call_id"
                        | ""
                )
            })
            .map(|name| {
                let once = prop::collection::vec(member(name, dirt), 0..=1);
                prop_oneof![12 => once, 1 => prop::collection::vec(member(name, dirt), 2)]
            })
            .collect();
        let message = prop::collection::vec(
            (
                test_docs::key(&["role", "content", "type", "text", "tool_call_id"], dirt),
                test_docs::any_doc(NAMES, dirt),
            ),
            0..4,
        )
        .prop_map(Doc::Object);
        let prompt = (
            prop::sample::select(vec!["messages", "input"]),
            prop::collection::vec(message, 0..3),
        )
            .prop_map(|(key, messages)| (key.as_bytes().to_vec(), Doc::Array(messages)));
        let others = prop::collection::vec(
            (test_docs::key(NAMES, dirt), test_docs::any_doc(NAMES, dirt)),
            0..3,
        );
        (
            read,
            prop::collection::vec(prompt, 0..2),
            others,
            prop::sample::select(vec!["", " ", "\n\t\r "]),
        )
            .prop_flat_map(|(read, prompt, others, space)| {
                let mut members: Vec<_> = read.concat();
                members.extend(prompt);
                members.extend(others);
                (Just(members).prop_shuffle(), Just(space))
            })
            .prop_map(|(members, space)| (Doc::Object(members), space))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Clean bodies, escaped keys aside, are read by the scan, as serde reads them.
        #[test]
        fn clean_bodies_scan_as_serde_reads_them((doc, space) in body(Dirt::Clean)) {
            let body = doc.bytes(space);
            let read = check(&body);
            let chat = &endpoints()[0];
            let serde_reads = RequestInfo::parse_as(chat, &body, false, false).parse_error.is_none();
            // Left to serde: long numbers (the plain reader fails), escaped keys.
            let left = Reader::new(&body).skip().is_none() || doc.has_escaped_key();
            prop_assert!(read || !serde_reads || left, "{}", String::from_utf8_lossy(&body));
        }

        /// Bodies with anything in their strings read as serde reads them.
        #[test]
        fn any_bodies_read_as_serde_reads_them((doc, space) in body(Dirt::Broken)) {
            check(&doc.bytes(space));
        }

        /// A clean body with one flaw at the start of one of its strings reads as serde reads
        /// it.
        #[test]
        fn bodies_with_a_flaw_read_as_serde_reads_them(
            (doc, space) in body(Dirt::Clean),
            at in any::<prop::sample::Index>(),
            flaw in test_docs::flaw(),
        ) {
            let body = doc.bytes(space);
            let at = string_starts(&body)[at.index(string_starts(&body).len())];
            check(&[&body[..at], flaw, &body[at..]].concat());
        }

        /// Cut short or with a byte changed, a body reads as serde reads it.
        #[test]
        fn damaged_bodies_read_as_serde_reads_them(
            (doc, space) in body(Dirt::Ignorable),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let body = doc.bytes(space);
            for end in (0..body.len()).step_by(body.len() / 16 + 1) {
                check(&body[..end]);
            }
            check(&body[..cut.index(body.len() + 1)]);
            let mut damaged = body.clone();
            if !damaged.is_empty() {
                damaged[at.index(body.len())] = byte;
            }
            check(&damaged);
        }

        /// Arbitrary bytes, alone or inside a body, read as serde reads them.
        #[test]
        fn any_bytes_read_as_serde_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            check(&bytes);
            for frame in [&br#"{"messages":["#[..], br#"{"model":"m","messages":""#, br#"{"stop":["#] {
                let mut framed = frame.to_vec();
                framed.extend_from_slice(&bytes);
                check(&framed);
            }
        }
    }
}
