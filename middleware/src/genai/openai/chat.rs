//! Chat Completions and (legacy) Completions: streamed chunks and whole bodies.

use std::sync::LazyLock;

use std::borrow::Cow;
use std::marker::PhantomData;

use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::Value;

use super::super::json::{self, Number, Reader};
use super::super::response::{EventKind, ResponseState, Usage};
use super::super::view::{self, Loose, Present};
use super::error_of;

static CONTENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\""));
static TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\""));
static TOOL_CALLS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"tool_calls\""));
static FINISH_REASON: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"finish_reason\""));
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static NAME: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"name\""));

impl ResponseState {
    pub(super) fn openai_chunk(&mut self, data: &str) -> EventKind {
        let data = trim_unicode_ws(data);
        if data == "[DONE]" {
            self.complete = true;
            return EventKind::Other;
        }
        // Fast path, for the plain deltas that make up almost all of a stream: a non-empty
        // `content` (chat) or `text` (completions) string, or a `tool_calls` fragment, with
        // no finish reason and no usage. Providers put `finish_reason` and `usage` after the
        // delta, so each key is searched from where the previous one was found: about one
        // pass over the chunk. A key missing from that tail is looked for in the head too,
        // so an unusual order costs time, never correctness. Anything else (the first chunk,
        // finish and usage chunks, errors, refusals, chunks without content) is parsed in full.
        if !self.capture && self.id.is_some() {
            let bytes = data.as_bytes();
            let output = [&*CONTENT, &*TEXT, &*TOOL_CALLS]
                .iter()
                .find_map(|key| json::key_at(bytes, 0, key));
            if let Some((at, value)) = output {
                let text_len = json::string_len(value);
                // A tool call's first fragment names it (`"name"`; a name inside the
                // arguments is escaped): parsed in full, for its id and name.
                let carries_output = match text_len {
                    Some(len) => len > 0,
                    None => value.starts_with(b"[") && NAME.find(bytes).is_none(),
                };
                if carries_output
                    && json::is_null(json::key_after_or_before(bytes, at, &FINISH_REASON))
                    && json::is_null(json::key_after_or_before(bytes, at, &USAGE))
                {
                    self.content_bytes += text_len.unwrap_or(0) as u64;
                    return EventKind::Content;
                }
            }
        }
        if let Some(kind) = self.openai_bytes(data.as_bytes(), true) {
            return kind;
        }
        match self.parse_event(data) {
            Some(value) => self.openai_value(&value, true),
            None => EventKind::Other,
        }
    }

    /// A chat/completions chunk (`streamed`) or whole response body.
    pub(super) fn openai_value(&mut self, value: &Value, streamed: bool) -> EventKind {
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            self.set_error(error_of(error));
            return EventKind::Other;
        }
        // vLLM and some other servers: `{"object": "error", "message": ..., "type": ...}`.
        if value.get("object").and_then(Value::as_str) == Some("error") {
            self.set_error(error_of(value));
            return EventKind::Other;
        }
        match view::of::<ChatView<'_>>(value) {
            Some(chat) => self.openai_view(&chat, streamed),
            None => EventKind::Other,
        }
    }

    /// A chat/completions chunk or body read straight from its bytes in one pass
    /// ([`ChatView::scan`]): `None` when it is an error, not an object or not read there,
    /// which `openai_value` reads.
    pub(super) fn openai_bytes(&mut self, bytes: &[u8], streamed: bool) -> Option<EventKind> {
        let chat = ChatView::scan(bytes, streamed)?;
        if chat.error.get().is_some() || chat.object.str() == Some("error") {
            return None;
        }
        Some(self.openai_view(&chat, streamed))
    }

    /// What a chat/completions chunk or body that is not an error says.
    fn openai_view(&mut self, chat: &ChatView<'_>, streamed: bool) -> EventKind {
        self.take_first_id_model(chat.id.str(), chat.model.str());
        if let Some(usage) = chat.usage.get() {
            self.set_usage(usage.counts());
        }
        let mut kind = EventKind::Other;
        for choice in chat.choices.get().into_iter().flatten() {
            let index = choice.index.value().unwrap_or(0) as u32;
            let part = if streamed {
                choice.delta.get()
            } else {
                choice.message.get()
            };
            let text = part
                .and_then(|p| p.content.str())
                .or_else(|| choice.text.str());
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                kind = EventKind::Content;
                self.content_bytes += text.len() as u64;
                self.capture_text(index, text);
            }
            if let Some(refusal) = part.and_then(|p| p.refusal.str()).filter(|r| !r.is_empty()) {
                kind = EventKind::Content;
                self.guardrail = Some("refusal");
                self.capture_text(index, refusal);
            }
            if let Some(calls) = part.and_then(|p| p.tool_calls.get()) {
                if !calls.is_empty() {
                    kind = EventKind::Content;
                }
                self.chat_tool_calls(index, calls);
            }
            if let Some(reason) = choice.finish_reason.str() {
                if reason == "content_filter" {
                    self.guardrail = Some("content_filter");
                }
                self.set_finish_reason(index, reason);
            }
        }
        kind
    }
}

impl ResponseState {
    /// The tool calls of a choice's message or delta: each id and name, and with capture on
    /// the arguments. A stream sends the id and name in a call's first fragment only; the
    /// fragments after name the call by its `index` (a whole message's calls have none: their
    /// position stands in).
    fn chat_tool_calls(&mut self, choice: u32, calls: &[ToolCallView<'_>]) {
        for (position, call) in calls.iter().enumerate() {
            let function = call.function.get();
            let name = function.and_then(|f| f.name.str()).unwrap_or("");
            if let Some(id) = call.id.str() {
                self.note_tool_call(id, name);
            }
            if self.capture {
                let slot = call.index.value().unwrap_or(position as u64) as u32;
                self.capture_tool_call(choice, slot, call.id.str().unwrap_or(""), name);
                if let Some(arguments) = function.and_then(|f| f.arguments.str()) {
                    self.capture_tool_arguments(choice, slot, arguments);
                }
            }
        }
    }
}

/// `data` without leading and trailing white space, as `str::trim` has it; a chunk that
/// starts and ends with ASCII other than white space (`{` and `}`) is as it is, unsearched.
fn trim_unicode_ws(data: &str) -> &str {
    let plain = |byte: &u8| byte.is_ascii() && !char::from(*byte).is_whitespace();
    match data.as_bytes() {
        [first, .., last] if plain(first) && plain(last) => data,
        _ => data.trim(),
    }
}

/// The members of a chat/completions body or chunk the span reads: read from the bytes by
/// [`ChatView::scan`], from a `Value` by serde (see [`view`]).
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct ChatView<'a> {
    #[serde(default, borrow)]
    id: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    object: Loose<Cow<'a, str>>,
    #[serde(default)]
    error: Loose<Present>,
    #[serde(default, borrow)]
    usage: Loose<UsageView<'a>>,
    #[serde(default, borrow)]
    choices: Loose<Vec<ChoiceView<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct ChoiceView<'a> {
    #[serde(default)]
    index: Loose<u64>,
    #[serde(default, borrow)]
    message: Loose<PartView<'a>>,
    #[serde(default, borrow)]
    delta: Loose<PartView<'a>>,
    #[serde(default, borrow)]
    text: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Loose<Cow<'a, str>>,
}

/// A choice's `message` (a body) or `delta` (a chunk).
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct PartView<'a> {
    #[serde(default, borrow)]
    content: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Loose<Vec<ToolCallView<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct ToolCallView<'a> {
    #[serde(default)]
    index: Loose<u64>,
    #[serde(default, borrow)]
    id: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Loose<FunctionView<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct FunctionView<'a> {
    #[serde(default, borrow)]
    name: Loose<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Loose<Cow<'a, str>>,
}

/// `usage` of Chat Completions and Completions.
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct UsageView<'a> {
    #[serde(default)]
    prompt_tokens: Loose<i64>,
    #[serde(default)]
    completion_tokens: Loose<i64>,
    #[serde(default, borrow)]
    prompt_tokens_details: Loose<CountView<'a>>,
    #[serde(default, borrow)]
    completion_tokens_details: Loose<CountView<'a>>,
}

/// `prompt_tokens_details` / `completion_tokens_details`.
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct CountView<'a> {
    #[serde(default)]
    cached_tokens: Loose<i64>,
    #[serde(default)]
    reasoning_tokens: Loose<i64>,
    #[serde(skip)]
    _borrow: PhantomData<&'a ()>,
}

view::lenient_object!(
    ChoiceView,
    PartView,
    ToolCallView,
    FunctionView,
    UsageView,
    CountView
);

/// Reads a string member as its [`Loose`] view does.
fn scan_str<'a>(reader: &mut Reader<'a>) -> Option<Loose<Cow<'a, str>>> {
    reader.string().map(Loose)
}

/// Reads a non-negative integer member as its [`Loose`] view does.
fn scan_u64(reader: &mut Reader<'_>) -> Option<Loose<u64>> {
    reader.number().map(|n| Loose(n.and_then(Number::as_u64)))
}

/// Reads an integer member as its [`Loose`] view does.
fn scan_i64(reader: &mut Reader<'_>) -> Option<Loose<i64>> {
    reader.number().map(|n| Loose(n.and_then(Number::as_i64)))
}

/// Reads an object member as its [`Loose`] view `T` does: `member` reads the members `T`
/// declares and skips the others.
fn scan_object<'a, T: Default>(
    reader: &mut Reader<'a>,
    mut member: impl FnMut(&mut T, &mut Reader<'a>, &'a [u8]) -> Option<()>,
) -> Option<Loose<T>> {
    let mut view = T::default();
    let object = reader.object(|reader, key| member(&mut view, reader, key))?;
    Some(Loose(object.then_some(view)))
}

/// Reads an array member as its [`Loose`] view does: the elements `element` reads (the
/// objects), the others dropped.
fn scan_list<'a, T>(
    reader: &mut Reader<'a>,
    mut element: impl FnMut(&mut Reader<'a>) -> Option<Loose<T>>,
) -> Option<Loose<Vec<T>>> {
    let mut items = Vec::new();
    let array = reader.array(|reader| {
        items.extend(element(reader)?.0);
        Some(())
    })?;
    Some(Loose(array.then_some(items)))
}

impl<'a> ChatView<'a> {
    /// Reads a chunk (`streamed`) or body straight from its bytes in one pass, as serde
    /// reads the view (the last of repeated members winning, as in a `Value`), with
    /// [`Reader`]: the members the view declares are read, the others skipped unread (a
    /// chunk's `message` and a body's `delta` too). `None` when the bytes are not one JSON
    /// object or the reader leaves them to serde_json.
    fn scan(bytes: &'a [u8], streamed: bool) -> Option<Self> {
        let mut reader = Reader::new(bytes);
        let chat = scan_object(&mut reader, |chat: &mut Self, reader, key| {
            match key {
                b"id" => chat.id = scan_str(reader)?,
                b"model" => chat.model = scan_str(reader)?,
                b"object" => chat.object = scan_str(reader)?,
                b"error" => chat.error = Loose(reader.present()?.then_some(Present)),
                b"usage" => chat.usage = UsageView::scan(reader)?,
                b"choices" => {
                    chat.choices = scan_list(reader, |reader| ChoiceView::scan(reader, streamed))?
                }
                _ => reader.skip()?,
            }
            Some(())
        })?;
        if !reader.at_end() {
            return None;
        }
        chat.0
    }
}

impl<'a> ChoiceView<'a> {
    /// Reads a choice from the bytes: of `message` and `delta`, only the one `streamed`
    /// reads (the other stays `None`).
    fn scan(reader: &mut Reader<'a>, streamed: bool) -> Option<Loose<Self>> {
        let part: &[u8] = if streamed { b"delta" } else { b"message" };
        scan_object(reader, |choice: &mut Self, reader, key| {
            match key {
                b"index" => choice.index = scan_u64(reader)?,
                b"text" => choice.text = scan_str(reader)?,
                b"finish_reason" => choice.finish_reason = scan_str(reader)?,
                _ if key == part && streamed => choice.delta = PartView::scan(reader)?,
                _ if key == part => choice.message = PartView::scan(reader)?,
                _ => reader.skip()?,
            }
            Some(())
        })
    }
}

impl<'a> PartView<'a> {
    /// Reads a choice's `message` or `delta` from the bytes.
    fn scan(reader: &mut Reader<'a>) -> Option<Loose<Self>> {
        scan_object(reader, |part: &mut Self, reader, key| {
            match key {
                b"content" => part.content = scan_str(reader)?,
                b"refusal" => part.refusal = scan_str(reader)?,
                b"tool_calls" => part.tool_calls = scan_list(reader, ToolCallView::scan)?,
                _ => reader.skip()?,
            }
            Some(())
        })
    }
}

impl<'a> ToolCallView<'a> {
    /// Reads a tool call, its `function` included, from the bytes.
    fn scan(reader: &mut Reader<'a>) -> Option<Loose<Self>> {
        scan_object(reader, |call: &mut Self, reader, key| {
            match key {
                b"index" => call.index = scan_u64(reader)?,
                b"id" => call.id = scan_str(reader)?,
                b"function" => {
                    call.function =
                        scan_object(reader, |function: &mut FunctionView<'a>, reader, key| {
                            match key {
                                b"name" => function.name = scan_str(reader)?,
                                b"arguments" => function.arguments = scan_str(reader)?,
                                _ => reader.skip()?,
                            }
                            Some(())
                        })?
                }
                _ => reader.skip()?,
            }
            Some(())
        })
    }
}

impl<'a> UsageView<'a> {
    /// Reads `usage` from the bytes.
    fn scan(reader: &mut Reader<'a>) -> Option<Loose<Self>> {
        scan_object(reader, |usage: &mut Self, reader, key| {
            match key {
                b"prompt_tokens" => usage.prompt_tokens = scan_i64(reader)?,
                b"completion_tokens" => usage.completion_tokens = scan_i64(reader)?,
                b"prompt_tokens_details" => usage.prompt_tokens_details = CountView::scan(reader)?,
                b"completion_tokens_details" => {
                    usage.completion_tokens_details = CountView::scan(reader)?
                }
                _ => reader.skip()?,
            }
            Some(())
        })
    }
}

impl<'a> CountView<'a> {
    /// Reads `prompt_tokens_details` or `completion_tokens_details` from the bytes.
    fn scan(reader: &mut Reader<'a>) -> Option<Loose<Self>> {
        scan_object(reader, |counts: &mut Self, reader, key| {
            match key {
                b"cached_tokens" => counts.cached_tokens = scan_i64(reader)?,
                b"reasoning_tokens" => counts.reasoning_tokens = scan_i64(reader)?,
                _ => reader.skip()?,
            }
            Some(())
        })
    }
}

impl UsageView<'_> {
    /// The counts, as `usage_of` with `CHAT_USAGE` reads them from a `Value`.
    fn counts(&self) -> Usage {
        Usage {
            input: self.prompt_tokens.value(),
            output: self.completion_tokens.value(),
            cache_read: self
                .prompt_tokens_details
                .get()
                .and_then(|d| d.cached_tokens.value()),
            cache_creation: None,
            reasoning: self
                .completion_tokens_details
                .get()
                .and_then(|d| d.reasoning_tokens.value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fresh(capture: bool) -> ResponseState {
        ResponseState {
            capture,
            capture_cap: 1 << 16,
            ..ResponseState::default()
        }
    }

    /// How [`check`] judges the scanner on a body.
    #[derive(Clone, Copy, PartialEq)]
    enum Expect {
        /// Valid JSON it reads: it must, as the `Value` path does.
        Scan,
        /// It may leave the body to the `Value` path; what it reads, it reads the same.
        Either,
        /// Bytes serde_json may reject for what the scanner does not check (the contents of
        /// skipped strings): what both read, they read the same.
        Junk,
    }

    /// Reads `body` from its bytes and from a `Value`, with capture on and off, as a body and
    /// as a chunk, and compares what each leaves in the state.
    fn check(body: &[u8], expect: Expect) {
        let text = String::from_utf8_lossy(body);
        let value = serde_json::from_slice::<Value>(body).ok();
        // What the `Value` path reads as an answer rather than an error or nothing.
        let answer = value.as_ref().is_some_and(|v| {
            v.is_object()
                && v.get("error").is_none_or(Value::is_null)
                && v.get("object").and_then(Value::as_str) != Some("error")
        });
        for capture in [false, true] {
            for streamed in [false, true] {
                let mut from_bytes = fresh(capture);
                let Some(kind) = from_bytes.openai_bytes(body, streamed) else {
                    assert!(!(answer && expect == Expect::Scan), "not scanned: {text}");
                    assert_eq!(format!("{from_bytes:?}"), format!("{:?}", fresh(capture)));
                    continue;
                };
                if expect == Expect::Junk && value.is_none() {
                    continue;
                }
                assert!(answer, "scanned, but not an answer to serde_json: {text}");
                let mut from_value = fresh(capture);
                let kind_value = from_value.openai_value(value.as_ref().unwrap(), streamed);
                assert_eq!(kind, kind_value, "{text}");
                assert_eq!(
                    format!("{from_bytes:?}"),
                    format!("{from_value:?}"),
                    "{text}"
                );
            }
        }
    }

    /// Reading a body from its bytes (the scanner) and from a `Value` (the view) leaves the
    /// same state, whatever the members' types, repeats, nesting, escapes or spacing.
    #[test]
    fn bytes_and_value_read_the_same() {
        let bodies: &[&str] = &[
            r#"{"id":"c1","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":1}}}"#,
            r#"{"id":"","model":"m","choices":[{"index":1,"message":{"content":null,"tool_calls":[{"id":"t","function":{"name":"f","arguments":"{\"a\":1}"}},7]},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":5,"model":["x"],"choices":{"index":0},"usage":[1]}"#,
            r#"{"choices":[3,"x",{"index":-1,"text":"legacy","finish_reason":"length"}],"usage":{"prompt_tokens":1.5,"completion_tokens":"2"}}"#,
            r#"{"choices":[{"message":{"content":"a","refusal":"no"},"finish_reason":"content_filter"}]}"#,
            r#"{"id":"a","id":"b","usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#,
            r#"{"choices":[{"delta":{"content":"streamed only"}}]}"#,
            // Escapes in the members read, and in those skipped.
            r#"{"id":"q\"uo\\te\/","model":"caf\u00e9 \ud83d\ude00","choices":[{"message":{"content":"line\nnext\ttab \b\f\r \u0000 \u001f"},"finish_reason":"st\u006fp"}]}"#,
            r#"{"x":"\"}]{[\\","choices":[{"message":{"content":"}{][\"\\"},"y":{"z":"\"{"}}]}"#,
            r#"{"x":{"a\"b":1,"\u0069d":{"\\":[]}},"id":"a"}"#,
            // Numbers in every form.
            r#"{"choices":[{"index":1e3,"text":"a"},{"index":-0,"text":"b"},{"index":1.5,"text":"c"},{"index":0.0,"text":"d"},{"index":18446744073709551615,"text":"e"},{"index":18446744073709551616,"text":"f"},{"index":-1,"text":"g"},{"index":1E2,"text":"h"}]}"#,
            r#"{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775808,"prompt_tokens_details":{"cached_tokens":-9223372036854775808},"completion_tokens_details":{"reasoning_tokens":-9223372036854775809}}}"#,
            r#"{"usage":{"prompt_tokens":-0,"completion_tokens":123456789012345678901234567890,"prompt_tokens_details":{"cached_tokens":2e0},"completion_tokens_details":{"reasoning_tokens":-5}}}"#,
            r#"{"usage":{"prompt_tokens":0,"completion_tokens":-0.0e-5,"extra":[1e99,-1E-99,0.5]}}"#,
            // Unknown members nesting what looks like known ones.
            r#"{"meta":{"choices":[{"message":{"content":"no"}}],"id":"no","s":"{\"id\":1}"},"id":"yes","list":[[[{"usage":{"prompt_tokens":1}}]]],"choices":[{"message":{"content":"x","extra":{"content":"no","tool_calls":[{"id":"no"}]}}}]}"#,
            // White space everywhere.
            " \r\n\t{ \"id\" \n: \"a\" ,\t\"choices\" : [ { \"index\" : 0 , \"message\" : { \"content\" : \"hi\" , \"tool_calls\" : [ { \"index\" : 2 , \"id\" : \"t\" , \"function\" : { \"name\" : \"f\" , \"arguments\" : \"{}\" } } ] } , \"finish_reason\" : \"stop\" } ] , \"usage\" : { \"prompt_tokens\" : 3 } } \n",
            // `null` for every member.
            r#"{"id":null,"model":null,"object":null,"error":null,"usage":null,"choices":null}"#,
            r#"{"choices":[null,{"index":null,"message":null,"delta":null,"text":null,"finish_reason":null}],"usage":{"prompt_tokens":null,"completion_tokens":null,"prompt_tokens_details":null,"completion_tokens_details":null}}"#,
            r#"{"choices":[{"message":{"content":null,"refusal":null,"tool_calls":null},"delta":{"content":null,"tool_calls":[null,{"index":null,"id":null,"function":null},{"function":{"name":null,"arguments":null}}]}}]}"#,
            // Empty, and wrong types everywhere.
            r#"{}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":[{}],"usage":{}}"#,
            r#"{"id":true,"model":false,"object":{},"choices":"x","usage":"y"}"#,
            r#"{"choices":[{"index":"0","message":"m","text":["t"],"finish_reason":1}]}"#,
            r#"{"choices":[{"message":{"content":1,"refusal":{},"tool_calls":{"id":"t"}}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"index":"1","id":2,"function":"f"},{"function":{"name":3,"arguments":{}}}]}}]}"#,
            // Repeats: the last wins, whatever its type.
            r#"{"choices":[{"message":{"content":"one"}}],"choices":[{"message":{"content":"two"}}]}"#,
            r#"{"choices":[{"message":{"content":"one"}}],"choices":null}"#,
            r#"{"choices":[{"index":1,"index":"x","message":{"content":"a","content":"b"},"finish_reason":"stop","finish_reason":7}]}"#,
            r#"{"usage":{"prompt_tokens_details":{"cached_tokens":1},"prompt_tokens_details":[]}}"#,
            r#"{"id":"a","model":"m","id":null}"#,
            r#"{"error":{"message":"m"},"error":null,"id":"x"}"#,
            r#"{"object":"error","object":"chat.completion","id":"x"}"#,
            // Errors: left to the `Value` path.
            r#"{"id":"x","choices":[],"error":{"message":"late"}}"#,
            r#"{"object":"error","message":"bad"}"#,
            r#"{"error":0}"#,
            // Unicode as is.
            "{\"id\":\"é\",\"choices\":[{\"message\":{\"content\":\"日本語 😀 ü\",\"refusal\":\"ñ\"}}]}",
        ];
        for body in bodies {
            check(body.as_bytes(), Expect::Scan);
        }
        // A lone surrogate: serde_json rejects the body, and so does the scanner when it reads
        // the string (a chunk's `message` is skipped, its strings unchecked).
        for body in [
            r#"{"id":"a","choices":[{"message":{"content":"\ud83d x"}}]}"#,
            r#"{"id":"a","choices":[{"message":{"content":"\ude00"}}]}"#,
            r#"{"id":"\ud83d\u0041"}"#,
            r#"{"id":"a","choices":[{"message":{"content":"\ud83d"}}]}"#,
        ] {
            check(body.as_bytes(), Expect::Junk);
            assert_eq!(fresh(true).openai_bytes(body.as_bytes(), false), None);
        }
    }

    /// Bytes that are not one JSON object, or that the scanner leaves to serde_json, are
    /// not read from the bytes.
    #[test]
    fn the_scanner_falls_back() {
        let deep = |depth: usize| {
            format!(
                r#"{{"id":"a","x":{}1{}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        // serde_json parses 127 levels and fails deeper; so does the scanner.
        assert!(serde_json::from_str::<Value>(&deep(127)).is_ok());
        assert!(serde_json::from_str::<Value>(&deep(128)).is_err());
        check(deep(127).as_bytes(), Expect::Scan);
        let hostile = format!(r#"{{"id":"a","x":{}"#, "[".repeat(1 << 20));
        for body in [
            deep(128).as_str(),
            &hostile,
            "",
            " ",
            "[1]",
            "\"s\"",
            "null",
            "{",
            r#"{"id":"a"} x"#,
            r#"{"id":"a"}{}"#,
            r#"{"id":"a",}"#,
            r#"{"id" "a"}"#,
            r#"{"id":"a" "model":"m"}"#,
            r#"{"x":[1,]}"#,
            r#"{"x":[1 2]}"#,
            r#"{"x":{"a"}}"#,
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":-}"#,
            r#"{"x":tru}"#,
            r#"{"x":nulll}"#,
            r#"{"x":[}"#,
            r#"{"x":{]}"#,
            r#"{"id":"\x"}"#,
            r#"{"id":"\u12"}"#,
            "{\"id\":\"tab\there\"}",
            // Left to serde_json: an escaped key, numbers it may find out of range.
            r#"{"\u0069d":"a"}"#,
            r#"{"x":1e400}"#,
            r#"{"x":1e-400}"#,
        ] {
            check(body.as_bytes(), Expect::Either);
        }
        for body in [br#"{"id":"\xff"}"#.as_slice(), b"{\"id\":\"a\xc3\"}"] {
            check(body, Expect::Either);
        }
        let mut state = fresh(false);
        assert_eq!(state.openai_bytes(br#"{"\u0069d":"a"}"#, false), None);
        assert_eq!(state.openai_bytes(br#"{"x":1e400}"#, false), None);
        assert_eq!(state.openai_bytes(deep(128).as_bytes(), false), None);
    }

    /// Error bodies are left to the `Value` path, which reads their message.
    #[test]
    fn errors_are_left_to_the_value_path() {
        let mut state = ResponseState::default();
        for body in [
            r#"{"error":{"message":"m","type":"invalid_request_error"}}"#,
            r#"{"object":"error","message":"bad","type":"BadRequestError"}"#,
            r#"[1]"#,
        ] {
            assert_eq!(state.openai_bytes(body.as_bytes(), false), None, "{body}");
        }
        assert!(
            state
                .openai_bytes(br#"{"error":null,"id":"x"}"#, false)
                .is_some()
        );
    }

    /// A JSON document for the property tests, written out by [`write`].
    #[derive(Debug, Clone)]
    enum Doc {
        /// A literal or number, as written.
        Token(&'static str),
        /// A string's contents, escapes as written.
        Str(String),
        Array(Vec<Doc>),
        Object(Vec<(String, Doc)>),
    }

    fn write(doc: &Doc, space: &str, out: &mut String) {
        out.push_str(space);
        match doc {
            Doc::Token(token) => out.push_str(token),
            Doc::Str(s) => {
                out.push('"');
                out.push_str(s);
                out.push('"');
            }
            Doc::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, space, out);
                }
                out.push_str(space);
                out.push(']');
            }
            Doc::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(space);
                    out.push('"');
                    out.push_str(key);
                    out.push('"');
                    out.push_str(space);
                    out.push(':');
                    write(value, space, out);
                }
                out.push_str(space);
                out.push('}');
            }
        }
    }

    fn number() -> impl Strategy<Value = Doc> {
        prop::sample::select(vec![
            "0",
            "1",
            "7",
            "-1",
            "-0",
            "1.5",
            "0.0",
            "1e3",
            "1E+2",
            "-2.5e-3",
            "2e0",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "123456789012345678901234567890",
        ])
        .prop_map(Doc::Token)
    }

    /// Strings with escapes, unicode, and the JSON punctuation inside.
    fn string() -> impl Strategy<Value = Doc> {
        let piece = prop::sample::select(vec![
            "a",
            "stop",
            "content_filter",
            "error",
            " ",
            "\\\"",
            "\\\\",
            "\\/",
            "\\n",
            "\\t",
            "\\b",
            "\\u0000",
            "\\u00e9",
            "\\ud83d\\ude00",
            "\\u006f",
            "é",
            "😀",
            "日本",
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\\\"id\\\":",
        ]);
        prop::collection::vec(piece, 0..6).prop_map(|pieces| Doc::Str(pieces.concat()))
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "id",
            "model",
            "object",
            "error",
            "usage",
            "choices",
            "index",
            "message",
            "delta",
            "text",
            "content",
            "refusal",
            "tool_calls",
            "function",
            "name",
            "arguments",
            "finish_reason",
            "prompt_tokens",
            "cached_tokens",
            "x",
            "role",
            "",
            "{}[],:",
        ])
        .prop_map(str::to_owned)
    }

    fn any_doc() -> BoxedStrategy<Doc> {
        let leaf = prop_oneof![
            prop::sample::select(vec!["null", "true", "false"]).prop_map(Doc::Token),
            number(),
            string(),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Array),
                prop::collection::vec((key(), inner), 0..4).prop_map(Doc::Object),
            ]
        })
        .boxed()
    }

    /// An object with the members `known` (each absent, once or repeated; most often of
    /// the type read, else anything), unknown members, in any order.
    fn object(known: Vec<(&'static str, BoxedStrategy<Doc>)>) -> BoxedStrategy<Doc> {
        let known: Vec<_> = known
            .into_iter()
            .map(|(name, value)| {
                let value = prop_oneof![4 => value, 1 => any_doc()];
                prop::collection::vec(value, 0..=2).prop_map(move |values| {
                    values
                        .into_iter()
                        .map(|v| (name.to_owned(), v))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let unknown = prop::collection::vec((key(), any_doc()), 0..3);
        (known, unknown)
            .prop_flat_map(|(known, unknown)| {
                let mut members: Vec<_> = known.concat();
                members.extend(unknown);
                Just(members).prop_shuffle()
            })
            .prop_map(Doc::Object)
            .boxed()
    }

    fn list(item: BoxedStrategy<Doc>) -> BoxedStrategy<Doc> {
        prop::collection::vec(prop_oneof![4 => item, 1 => any_doc()], 0..3)
            .prop_map(Doc::Array)
            .boxed()
    }

    fn chat_body() -> impl Strategy<Value = String> {
        let str = || string().boxed();
        let int = || number().boxed();
        let reason = prop_oneof![
            string(),
            prop::sample::select(vec!["stop", "content_filter", "tool_calls"])
                .prop_map(|r| Doc::Str(r.to_owned())),
        ]
        .boxed();
        let function = object(vec![("name", str()), ("arguments", str())]);
        let call = object(vec![
            ("index", int()),
            ("id", str()),
            ("function", function),
        ]);
        let part = || {
            object(vec![
                ("content", str()),
                ("refusal", str()),
                ("tool_calls", list(call.clone())),
            ])
        };
        let choice = object(vec![
            ("index", int()),
            ("message", part()),
            ("delta", part()),
            ("text", str()),
            ("finish_reason", reason),
        ]);
        let counts = object(vec![("cached_tokens", int()), ("reasoning_tokens", int())]);
        let usage = object(vec![
            ("prompt_tokens", int()),
            ("completion_tokens", int()),
            ("prompt_tokens_details", counts.clone()),
            ("completion_tokens_details", counts),
        ]);
        let body = object(vec![
            ("id", str()),
            ("model", str()),
            ("object", str()),
            ("error", Just(Doc::Token("null")).boxed()),
            ("usage", usage),
            ("choices", list(choice)),
        ]);
        (body, prop::sample::select(vec!["", " ", "\n\t\r "])).prop_map(|(body, space)| {
            let mut out = String::new();
            write(&body, space, &mut out);
            out
        })
    }

    #[test]
    fn chunks_are_trimmed_as_str_trim_does() {
        for data in [
            "",
            " ",
            "x",
            "{}",
            "[DONE]",
            " [DONE]\n",
            "{\"a\":1}\u{b}",
            "\u{c}{}",
            "\u{a0}{}",
            "{}\u{3000}",
            "\u{85}{}\u{2028}",
            "é{}",
            "{}é",
        ] {
            assert_eq!(trim_unicode_ws(data), data.trim(), "{data:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The chunk trim is `str::trim`, whatever the text.
        #[test]
        fn chunks_are_trimmed_as_str_trim_does_for_any_text(data in "\\PC*", pad in "[ \t\n\r\u{b}\u{c}\u{a0}\u{3000}x{}]{0,3}") {
            let padded = format!("{pad}{data}{pad}");
            prop_assert_eq!(trim_unicode_ws(&padded), padded.trim());
        }

        /// The scanner reads any chat body as the `Value` path does.
        #[test]
        fn scanner_reads_like_value(body in chat_body()) {
            check(body.as_bytes(), Expect::Scan);
        }

        /// Cut short, a body is never misread; nor is it with a byte changed.
        #[test]
        fn scanner_survives_truncation_and_damage(
            body in chat_body(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = body.as_bytes();
            for end in (0..bytes.len()).step_by(bytes.len() / 32 + 1) {
                check(&bytes[..end], Expect::Either);
            }
            check(&bytes[..cut.index(bytes.len() + 1)], Expect::Either);
            let mut damaged = bytes.to_vec();
            if !damaged.is_empty() {
                damaged[at.index(bytes.len())] = byte;
            }
            check(&damaged, Expect::Junk);
        }

        /// Arbitrary bytes never panic the scanner.
        #[test]
        fn scanner_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            check(&bytes, Expect::Junk);
            let mut framed = b"{\"choices\":[".to_vec();
            framed.extend_from_slice(&bytes);
            check(&framed, Expect::Junk);
        }
    }
}
