//! What an LLM request body says: model, stream flag, sampling parameters, tools, content.

use std::borrow::Cow;

use opentelemetry::StringValue;
use serde::Deserialize;
use serde_json::Value;

use super::endpoint::{ApiFormat, Endpoint};
use super::exchange::GenAiConfig;
use super::tool_content::{self, ToolContent};
use super::view::{self, Len, Lenient, Loose};
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
/// ...) is skipped unread. Each is read as `Value::as_*` would (see [`view`]).
#[derive(Deserialize)]
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
}

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
#[derive(Deserialize)]
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

impl RequestView<'_> {
    /// Records the members in `info`, bounded.
    fn apply(self, format: ApiFormat, info: &mut RequestInfo) {
        let name = |s: &str| bounded(s, MAX_NAME_BYTES).into_owned();
        if let Some(model) = self.model.str() {
            info.model = Some(name(model));
        }
        info.stream = self.stream.value().unwrap_or(false);
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
