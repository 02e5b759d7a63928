//! Chat Completions and (legacy) Completions: streamed chunks and whole bodies.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::Deserialize;
use serde_json::Value;

use super::super::json::{self, Reader};
use super::super::response::{
    ChatTemplate, EventKind, MAX_TEMPLATE_HEAD, MAX_TEMPLATE_TAIL, ResponseState, Usage,
};
use super::super::view::{self, Loose, Present, scan_i64, scan_str, scan_u64};
use super::error_of;

impl ResponseState {
    pub(super) fn openai_chunk(&mut self, data: &str) -> EventKind {
        let data = trim_unicode_ws(data);
        if data == "[DONE]" {
            self.complete = true;
            return EventKind::Other;
        }
        if let Some(kind) = self.openai_chunk_fast(data) {
            return kind;
        }
        self.openai_chunk_in_full(data)
    }

    /// A chunk read in full: from its bytes by the scanner, else from a `Value`.
    ///
    /// A chunk that starts with the template's head members (see [`Self::head_members`]) is
    /// scanned from its `choices` on: those members set only the view's `id`, `model` and
    /// `object` (`error` and `usage` are `null` there), the first two already known, which
    /// [`Self::take_first_id_model`] then keeps, and `object` not `"error"`; the members
    /// after, repeats included, are read as from the start.
    fn openai_chunk_in_full(&mut self, data: &str) -> EventKind {
        let chat = match self.head_members(data.as_bytes()) {
            Some(at) => ChatView::scan_from_choices(Reader::from_text_at(data, at), true),
            None => ChatView::scan(Reader::from_text(data), true),
        };
        if let Some(kind) = self.openai_scanned(chat, true) {
            return kind;
        }
        match self.parse_event(data) {
            Some(value) => self.openai_value(&value, true),
            None => EventKind::Other,
        }
    }

    /// Where the top-level `choices` array of a chunk starts, when the chunk starts with the
    /// members of the template's head before it ([`ChatTemplate::choices`]), which
    /// [`plain_chunk`] read counting nothing (no `error`, `usage` nor `choices`, an `object`
    /// other than `"error"`, strings without escapes), and the id and model are known.
    fn head_members(&self, bytes: &[u8]) -> Option<usize> {
        let template = &self.chat_template;
        let at = template.choices;
        let known = self.id.is_some() && self.model.is_some();
        (known && at > 0 && bytes.starts_with(&template.head[..at])).then_some(at)
    }

    /// Fast path, for the plain deltas that make up almost all of a stream: past its first
    /// chunk (id and model known) and with capture off, what the full read would leave,
    /// when [`plain_chunk`] can tell for certain (the common chunk in under half the scanner's
    /// instructions and time); `None` leaves the chunk to the full read.
    ///
    /// A chunk that starts with the head of the [`ChatTemplate`] is read from there on
    /// ([`templated_chunk`], which answers as `plain_chunk` would, and learns the tail); any
    /// other, by `plain_chunk`, whose head, if it has one, the template learns (forgetting
    /// the tail, which was the old head's); one that starts with the head's members before
    /// `choices` ([`Self::head_members`]), by `plain_chunk` from its `choices` on.
    fn openai_chunk_fast(&mut self, data: &str) -> Option<EventKind> {
        if self.capture || self.id.is_none() || self.model.is_none() {
            return None;
        }
        let bytes = data.as_bytes();
        let choices = self.head_members(bytes);
        let template = &mut self.chat_template;
        let (kind, content_bytes) =
            if !template.head.is_empty() && bytes.starts_with(&template.head) {
                #[cfg(test)]
                tests::TEMPLATE_HITS.with(|hits| hits.set(hits.get() + 1));
                templated_chunk(bytes, template)?
            } else {
                #[cfg(test)]
                if choices.is_some() {
                    tests::CHOICES_HITS.with(|hits| hits.set(hits.get() + 1));
                }
                let (kind, content_bytes, head) = plain_chunk(bytes, choices)?;
                if let Some(head) = head.filter(|head| head.len <= MAX_TEMPLATE_HEAD) {
                    template.head.clear();
                    template.head.extend_from_slice(&bytes[..head.len]);
                    template.choice = head.choice;
                    template.delta = head.delta;
                    template.choices = head.choices;
                    template.tail.clear();
                    template.gap = None;
                }
                (kind, content_bytes)
            };
        self.content_bytes += content_bytes as u64;
        Some(kind)
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
        // One check of the whole body spares one per string; a body that is not UTF-8 (in
        // a string the reader skips unchecked) is read as bytes.
        let reader = match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => Reader::from_text(text),
            Err(_) => Reader::new(bytes),
        };
        self.openai_scanned(ChatView::scan(reader, streamed), streamed)
    }

    /// What [`openai_bytes`](Self::openai_bytes) answers for the view it scanned.
    fn openai_scanned(&mut self, chat: Option<ChatView<'_>>, streamed: bool) -> Option<EventKind> {
        let chat = chat?;
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
    /// Reads a chunk (`streamed`) or body straight from its bytes, `reader` at their start,
    /// in one pass, as serde reads the view (the last of repeated members winning, as in a
    /// `Value`): the members the view declares are read, the others skipped unread (a
    /// chunk's `message` and a body's `delta` too). `None` when the bytes are not one JSON
    /// object or the reader leaves them to serde_json.
    fn scan(mut reader: Reader<'a>, streamed: bool) -> Option<Self> {
        let chat = scan_object(&mut reader, |chat: &mut Self, reader, key| {
            chat.member(reader, key, streamed)
        })?;
        if !reader.at_end() {
            return None;
        }
        chat.0
    }

    /// [`scan`](Self::scan) from the value of the top-level `choices`, where `reader`
    /// stands (the members before it left out of the view), to the end.
    fn scan_from_choices(mut reader: Reader<'a>, streamed: bool) -> Option<Self> {
        let mut chat = Self::default();
        chat.member(&mut reader, b"choices", streamed)?;
        reader.object_rest(|reader, key| chat.member(reader, key, streamed))?;
        reader.at_end().then_some(chat)
    }

    /// Reads the member `key` of a chunk or body into the view, or skips it.
    #[inline(always)]
    fn member(&mut self, reader: &mut Reader<'a>, key: &[u8], streamed: bool) -> Option<()> {
        match key {
            b"id" => self.id = scan_str(reader)?,
            b"model" => self.model = scan_str(reader)?,
            b"object" => self.object = scan_str(reader)?,
            b"error" => self.error = Loose(reader.present()?.then_some(Present)),
            b"usage" => self.usage = UsageView::scan(reader)?,
            b"choices" => {
                self.choices = scan_list(reader, |reader| ChoiceView::scan(reader, streamed))?
            }
            _ => reader.skip()?,
        }
        Some(())
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

/// A streamed chunk the fast path answers: `(kind, bytes of text, head)`, when the chunk is
/// certainly one whose full read would only count its text, and change nothing else.
///
/// It reads a strict subset of JSON in one pass, without building anything: no white space,
/// no escapes in keys; at the top level, `choices`, `usage` and `error` `null`, an `object`
/// other than `"error"`, and members of other names holding a string without escapes, a
/// number in digits, `true`, `false` or `null` (`id` and `model` among them: the caller
/// knows both already). A choice holds only `index`, `logprobs` and `finish_reason` `null`,
/// the legacy `text`, and a `delta` of `role`, `refusal` `null`, `content`, and
/// `tool_calls` fragments that only continue arguments (no id, no name). Of `choices`,
/// `delta`, `content`, `text` and `tool_calls`, one each per object (the full read takes
/// the last of repeated members). Anything else is `None`, left to the full read: what this
/// answers, it answers as the full read does (`the_fast_path_agrees_with_the_full_read`).
///
/// With the answer comes the chunk's head, when it has one for a [`ChatTemplate`].
///
/// With `choices`, the chunk starts with the bytes of a template's head up to its `choices`
/// array (its [`ChatTemplate::choices`]), which this read before and which count nothing:
/// it is read from the array on, in the state it was in there (`choices` seen), as
/// [`templated_chunk`] reads from the content on.
fn plain_chunk(bytes: &[u8], choices: Option<usize>) -> Option<(EventKind, usize, Option<Head>)> {
    let mut read = Read::default();
    let mut once = Once::default();
    let reader = match choices {
        None => {
            let mut reader = Plain::at(bytes, 0);
            reader.object(|reader, key| reader.top_member(key, &mut once, &mut read))?;
            reader
        }
        Some(at) => {
            let mut reader = Plain::at(bytes, at);
            once.check(0)?;
            read.choices = at;
            reader.array(|reader| reader.choice(&mut read))?;
            reader.after_member(|reader, key| reader.top_member(key, &mut once, &mut read))?;
            reader
        }
    };
    let head = read.head.take();
    let (kind, content_bytes) = read.answer(&reader)?;
    Some((kind, content_bytes, head))
}

/// A chunk read by [`plain_chunk`] from the end of its head on, the head being the
/// `template`'s (the caller has compared the bytes): the content string, then the rest of the
/// delta, the choice, the `choices` array and the top-level object, by the same rules. The
/// same bytes leave `plain_chunk` in the same state, so this answers as it would: `None`
/// where it would.
///
/// The tail after the content string is first matched against the template's
/// ([`tail_matches`]); where it differs, it is read, and a tail that counts nothing teaches
/// the template.
fn templated_chunk(bytes: &[u8], template: &mut ChatTemplate) -> Option<(EventKind, usize)> {
    let mut reader = Plain::at(bytes, template.head.len());
    let content = reader.string_rest()?;
    let tail = reader.pos;
    if tail_matches(&bytes[tail..], template) {
        #[cfg(test)]
        tests::TAIL_HITS.with(|hits| hits.set(hits.get() + 1));
        let kind = if content > 0 {
            EventKind::Content
        } else {
            EventKind::Other
        };
        return Some((kind, content));
    }
    // The tail is read with an empty content, which the choice does not count (`count`
    // skips an empty text, and a string content hides the `text`): what `read` holds at
    // the end is what the tail alone counts, to which the content is added after. The
    // reader's path does not depend on the content's length, only the choice's count does.
    let mut read = Read::default();
    let mut choice = Choice {
        once: Once(template.choice),
        delta: Once(template.delta),
        content: Some(0),
        ..Choice::default()
    };
    reader.after_member(|reader, key| reader.delta_member(key, &mut choice, &mut read))?;
    reader.after_member(|reader, key| reader.choice_member(key, &mut choice, &mut read))?;
    choice.count(&mut read);
    reader.after_element(|reader| reader.choice(&mut read))?;
    // At the top level, `choices` is read.
    let mut once = Once(1);
    reader.after_member(|reader, key| reader.top_member(key, &mut once, &mut read))?;
    let answer = read.with_content(content).answer(&reader)?;
    if !read.content && read.bytes == 0 {
        // The reader started past the content string: what it skipped, it skipped in the tail.
        let unread = reader.unread.map(|(start, end)| (start - tail, end - tail));
        learn_tail(template, &bytes[tail..], unread);
    }
    Some(answer)
}

/// Whether `rest`, the bytes after a templated chunk's content string, are the `template`'s
/// tail: the same bytes but for the contents of the string at its gap, which must be what
/// [`Plain::plain_string`] steps over there (no quote, escape or control character; `rest`
/// is UTF-8, a `str`'s). Then the reader, in the same state at the tail's start as when it
/// read the template's (the same head and the content a string), accepts the chunk with
/// nothing counted in the tail: it takes the same path through the same bytes, and the
/// value at the gap is one whose contents it skips unread (see [`Plain::unread_string`]).
#[inline]
fn tail_matches(rest: &[u8], template: &ChatTemplate) -> bool {
    let tail = &template.tail[..];
    let Some(gap) = template.gap else {
        return !tail.is_empty() && rest == tail;
    };
    if !rest.starts_with(&tail[..gap]) {
        return false;
    }
    let mut reader = Plain::at(rest, gap);
    // `tail[gap]` is the closing quote: stopped at an escape or a control character, the
    // rest differs.
    reader.skip_to_stop().is_some() && rest[reader.pos..] == tail[gap..]
}

/// Keeps `tail`, which the reader accepted counting nothing in it, as the `template`'s, the
/// contents of the string it skipped unread at `unread` (tail offsets of its contents'
/// first byte and closing quote) cut out; a tail longer than [`MAX_TEMPLATE_TAIL`] leaves
/// the template's as it is (it still holds: the head is the same).
fn learn_tail(template: &mut ChatTemplate, tail: &[u8], unread: Option<(usize, usize)>) {
    let (start, end) = unread.unwrap_or((tail.len(), tail.len()));
    if tail.len() - (end - start) > MAX_TEMPLATE_TAIL {
        return;
    }
    template.tail.clear();
    template.tail.extend_from_slice(&tail[..start]);
    template.tail.extend_from_slice(&tail[end..]);
    template.gap = unread.map(|_| start);
}

/// Where a chunk's head ends, and what [`plain_chunk`] knows there: a [`ChatTemplate`].
///
/// The reader's state at that point is its position, the `Once` bits of the top-level
/// object (`choices` read), the choice and the delta, the choice's `text`, and [`Read`]. A
/// head is only taken where `Read` is still empty (no content, tool call fragment or text
/// counted before it), and the choice's `text` does not matter: its `content` a string, a
/// choice counts that, never its `text`. Every value in the head ends before its end (the
/// last byte is the content's opening quote), so nothing after the head changes how the
/// head was read.
#[derive(Clone, Copy)]
struct Head {
    /// Bytes, up to and including the opening quote of the delta's `content`.
    len: usize,
    /// The choice's [`Once`] bits.
    choice: u8,
    /// The delta's [`Once`] bits, `content`'s set.
    delta: u8,
    /// Where the top-level `choices` array starts.
    choices: usize,
}

/// What [`plain_chunk`] has read so far: whether the chunk carries content, and how many
/// bytes of text; and the chunk's head, when its first content string came before anything
/// was counted.
#[derive(Default)]
struct Read {
    content: bool,
    bytes: usize,
    head: Option<Head>,
    /// Where the top-level `choices` array starts, once read.
    choices: usize,
}

impl Read {
    /// What [`plain_chunk`] answers, `reader` at the end of the top-level object: the
    /// chunk's kind and bytes of text, if nothing follows.
    fn answer(&self, reader: &Plain<'_>) -> Option<(EventKind, usize)> {
        let kind = if self.content {
            EventKind::Content
        } else {
            EventKind::Other
        };
        (reader.pos == reader.bytes.len()).then_some((kind, self.bytes))
    }

    /// This read with a content string of `len` bytes counted, as [`Choice::count`] counts
    /// it (the head, only ever taken before anything is counted, left out).
    fn with_content(&self, len: usize) -> Read {
        Read {
            content: self.content || len > 0,
            bytes: self.bytes + len,
            head: None,
            choices: self.choices,
        }
    }
}

/// What [`plain_chunk`] knows of a choice as it reads it.
#[derive(Default)]
struct Choice {
    /// Of the choice's members, `text` (bit 0) and `delta` (bit 1) are read.
    once: Once,
    /// Of the delta's members, `content` (bit 0) and `tool_calls` (bit 1) are read.
    delta: Once,
    /// The length of the delta's content, if a string.
    content: Option<usize>,
    /// The length of the legacy `text`, if a string.
    text: Option<usize>,
}

impl Choice {
    /// Adds the choice's text, at its end, to `read`: the delta's `content`, else `text`.
    fn count(&self, read: &mut Read) {
        if let Some(len) = self.content.or(self.text).filter(|&len| len > 0) {
            read.content = true;
            read.bytes += len;
        }
    }
}

/// The members of one object that may appear once only, by bit.
#[derive(Default)]
struct Once(u8);

impl Once {
    /// Member `bit` is read; `None` when it was already.
    fn check(&mut self, bit: u8) -> Option<()> {
        let seen = self.0 & (1 << bit) != 0;
        self.0 |= 1 << bit;
        (!seen).then_some(())
    }
}

/// The reader of [`plain_chunk`]: at `pos` in `bytes`, every method answers `None` for
/// what is not in its subset of JSON.
struct Plain<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The last string value read whose contents change nothing the reader knows
    /// ([`Self::unread_string`]): where its contents start, and its closing quote.
    unread: Option<(usize, usize)>,
}

impl<'a> Plain<'a> {
    /// A reader of `bytes` at `pos`.
    fn at(bytes: &'a [u8], pos: usize) -> Self {
        Plain {
            bytes,
            pos,
            unread: None,
        }
    }

    /// Steps over `expected`, which must come next.
    fn byte(&mut self, expected: u8) -> Option<()> {
        let next = self.bytes.get(self.pos) == Some(&expected);
        next.then(|| self.pos += 1)
    }

    /// Steps over `expected`, which must come next.
    fn eat(&mut self, expected: &[u8]) -> Option<()> {
        let next = self.bytes.get(self.pos..)?.starts_with(expected);
        next.then(|| self.pos += expected.len())
    }

    /// Hands each member of an object to `member` with its key; `member` reads the value.
    fn object(&mut self, member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.byte(b'{')?;
        if self.byte(b'}').is_some() {
            return Some(());
        }
        self.members(member)
    }

    /// An object's members from the next key on, and its closing brace.
    #[inline(always)]
    fn members(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        loop {
            let key = self.plain_string()?;
            self.byte(b':')?;
            member(self, key)?;
            if self.byte(b',').is_none() {
                return self.byte(b'}');
            }
        }
    }

    /// An object's rest after a member's value: more members, as [`Self::object`] reads
    /// them, and its closing brace.
    fn after_member(
        &mut self,
        member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        if self.byte(b',').is_some() {
            return self.members(member);
        }
        self.byte(b'}')
    }

    /// Hands each element of an array to `element`, which reads it.
    fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.byte(b'[')?;
        if self.byte(b']').is_some() {
            return Some(());
        }
        self.elements(element)
    }

    /// An array's elements from the next on, and its closing bracket.
    #[inline(always)]
    fn elements(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        loop {
            element(self)?;
            if self.byte(b',').is_none() {
                return self.byte(b']');
            }
        }
    }

    /// An array's rest after an element: more elements, as [`Self::array`] reads them, and
    /// its closing bracket.
    fn after_element(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.byte(b',').is_some() {
            return self.elements(element);
        }
        self.byte(b']')
    }

    /// A member of the top-level object (`once`: `choices`, bit 0, is read).
    fn top_member(&mut self, key: &[u8], once: &mut Once, read: &mut Read) -> Option<()> {
        match key {
            b"choices" => {
                once.check(0)?;
                read.choices = self.pos;
                self.array(|reader| reader.choice(read))
            }
            b"usage" | b"error" => self.eat(b"null"),
            b"object" => (self.plain_string()? != b"error").then_some(()),
            _ => self.scalar(),
        }
    }

    /// A choice: its text (the delta's `content`, else the legacy `text`) and tool call
    /// fragments added to `read`.
    fn choice(&mut self, read: &mut Read) -> Option<()> {
        let mut choice = Choice::default();
        self.object(|reader, key| reader.choice_member(key, &mut choice, read))?;
        choice.count(read);
        Some(())
    }

    /// A member of a choice.
    fn choice_member(&mut self, key: &[u8], choice: &mut Choice, read: &mut Read) -> Option<()> {
        match key {
            b"index" => self.digits(),
            b"logprobs" | b"finish_reason" => self.eat(b"null"),
            b"text" => {
                choice.once.check(0)?;
                choice.text = self.string_or_null()?;
                Some(())
            }
            b"delta" => {
                choice.once.check(1)?;
                self.object(|reader, key| reader.delta_member(key, choice, read))
            }
            _ => None,
        }
    }

    /// A member of a choice's delta. A `content` string reached with nothing counted (in
    /// this chunk, the first) ends the chunk's head, which `read` notes.
    fn delta_member(&mut self, key: &[u8], choice: &mut Choice, read: &mut Read) -> Option<()> {
        match key {
            b"role" => self.unread_string(),
            b"refusal" => self.eat(b"null"),
            b"content" => {
                choice.delta.check(0)?;
                if self.bytes.get(self.pos) == Some(&b'"')
                    && !read.content
                    && read.bytes == 0
                    && read.head.is_none()
                {
                    read.head = Some(Head {
                        len: self.pos + 1,
                        choice: choice.once.0,
                        delta: choice.delta.0,
                        choices: read.choices,
                    });
                }
                choice.content = self.string_or_null()?;
                Some(())
            }
            b"tool_calls" => {
                choice.delta.check(1)?;
                self.array(|reader| {
                    read.content = true;
                    reader.tool_call_fragment()
                })
            }
            _ => None,
        }
    }

    /// A tool call's fragment that only continues its arguments: an id or a name (the
    /// call's first fragment) is left to the full read.
    fn tool_call_fragment(&mut self) -> Option<()> {
        self.object(|reader, key| match key {
            b"index" => reader.digits(),
            b"type" => reader.plain_string().map(drop),
            b"function" => reader.object(|reader, key| match key {
                b"arguments" => reader.string_len().map(drop),
                _ => None,
            }),
            _ => None,
        })
    }

    /// A value the full read skips: a string without escapes, a number in digits, `true`,
    /// `false` or `null`.
    fn scalar(&mut self) -> Option<()> {
        match *self.bytes.get(self.pos)? {
            b'"' => self.unread_string(),
            b't' => self.eat(b"true"),
            b'f' => self.eat(b"false"),
            b'n' => self.eat(b"null"),
            _ => self.digits(),
        }
    }

    /// A non-negative integer, without leading zeros, of at most 19 digits (it fits `u64`).
    fn digits(&mut self) -> Option<()> {
        let rest = self.bytes.get(self.pos..)?;
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > 19 || (len > 1 && rest[0] == b'0') {
            return None;
        }
        self.pos += len;
        Some(())
    }

    /// A string value whose contents the reader ignores (a top-level member's other than
    /// `object`, a delta's `role`), as [`Self::plain_string`] reads it; noted in
    /// `self.unread`, for the tail a [`ChatTemplate`] keeps, where it may differ.
    fn unread_string(&mut self) -> Option<()> {
        let start = self.pos + 1;
        self.plain_string()?;
        self.unread = Some((start, self.pos - 1));
        Some(())
    }

    /// The contents of a string without escapes or control characters.
    #[inline(always)]
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b"\"")?;
        let start = self.pos;
        self.skip_to_stop()?;
        self.eat(b"\"")?;
        Some(&self.bytes[start..self.pos - 1])
    }

    /// Steps to the next `"`, `\\` or control character: eight bytes at a time (most
    /// strings are short, where a call to `memchr2` costs more than the search).
    fn skip_to_stop(&mut self) -> Option<()> {
        /// The bytes of `word` below `n` (`n` ≤ 0x80), by their high bit: exact for the
        /// lowest one, which is all that is asked.
        fn below(word: u64, n: u8) -> u64 {
            const LOW: u64 = u64::from_le_bytes([1; 8]);
            word.wrapping_sub(LOW * u64::from(n)) & !word & (LOW << 7)
        }
        let mut at = self.pos;
        while let Some(eight) = self.bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(eight.try_into().ok()?);
            const QUOTE: u64 = u64::from_le_bytes([b'"'; 8]);
            const BACKSLASH: u64 = u64::from_le_bytes([b'\\'; 8]);
            let stops = below(word ^ QUOTE, 1) | below(word ^ BACKSLASH, 1) | below(word, 0x20);
            if stops != 0 {
                self.pos = at + (stops.trailing_zeros() / 8) as usize;
                return Some(());
            }
            at += 8;
        }
        let rest = self.bytes.get(at..)?;
        let end = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        self.pos = at + end;
        Some(())
    }

    /// A string's length unescaped, or `None` for `null`: `Some(None)`.
    fn string_or_null(&mut self) -> Option<Option<usize>> {
        if self.eat(b"null").is_some() {
            return Some(None);
        }
        self.string_len().map(Some)
    }

    /// A string's length in bytes unescaped, its escapes checked as serde_json checks them
    /// (surrogates paired, no control characters).
    fn string_len(&mut self) -> Option<usize> {
        self.eat(b"\"")?;
        self.string_rest()
    }

    /// [`Self::string_len`] past the opening quote.
    fn string_rest(&mut self) -> Option<usize> {
        let mut len = 0;
        loop {
            let from = self.pos;
            self.skip_to_stop()?;
            len += self.pos - from;
            let stop = self.bytes[self.pos];
            self.pos += 1;
            let escape = match stop {
                b'"' => return Some(len),
                b'\\' => *self.bytes.get(self.pos)?,
                _ => return None,
            };
            self.pos += 1;
            len += match escape {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 1,
                b'u' => self.unicode_len()?,
                _ => return None,
            };
        }
    }

    /// The UTF-8 length of a `\u` escape's character, whose hex digits come next (with the
    /// second escape of a surrogate pair).
    fn unicode_len(&mut self) -> Option<usize> {
        let (len, used) = json::escaped_char_len(self.bytes.get(self.pos..)?)?;
        self.pos += used;
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    thread_local! {
        /// Chunks of this thread that started with their state's template head.
        pub(super) static TEMPLATE_HITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    thread_local! {
        /// Templated chunks of this thread whose tail matched their template's.
        pub(super) static TAIL_HITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    thread_local! {
        /// Chunks of this thread read from the `choices` of their template's head on.
        pub(super) static CHOICES_HITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn choices_hits() -> u64 {
        CHOICES_HITS.with(std::cell::Cell::get)
    }

    fn template_hits() -> u64 {
        TEMPLATE_HITS.with(std::cell::Cell::get)
    }

    fn tail_hits() -> u64 {
        TAIL_HITS.with(std::cell::Cell::get)
    }

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

    /// A body that is not UTF-8 in a string the scanner skips is still read from its bytes
    /// (string by string, as before the whole-body check); in a string it reads, it is not.
    #[test]
    fn bodies_not_utf8_are_read_string_by_string() {
        let body = b"{\"x\":\"\xff\",\"id\":\"a\",\"choices\":[{\"message\":{\"content\":\"h\xc3\xa9\"}}]}";
        let mut state = fresh(false);
        assert_eq!(state.openai_bytes(body, false), Some(EventKind::Content));
        assert_eq!(state.content_bytes, 3);
        assert_eq!(state.id.as_deref(), Some("a"));
        for body in [&b"{\"id\":\"a\xff\"}"[..], b"{\"id\":\"\xc3\"}"] {
            assert_eq!(fresh(false).openai_bytes(body, false), None);
        }
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

    /// Optional members of a [`shaped`] object: `key` present with probability `p` (always
    /// from 1 up).
    fn maybe(p: f64, key: &'static str, value: BoxedStrategy<Doc>) -> BoxedStrategy<Member> {
        if p >= 1.0 {
            return value.prop_map(move |v| Some((key.to_owned(), v))).boxed();
        }
        prop::option::weighted(p, value)
            .prop_map(move |v| v.map(|v| (key.to_owned(), v)))
            .boxed()
    }

    type Member = Option<(String, Doc)>;

    /// An object of the members present among `members`: mostly in the order given (as
    /// providers send them), else shuffled.
    fn shaped(members: Vec<BoxedStrategy<Member>>) -> BoxedStrategy<Doc> {
        members
            .prop_flat_map(|members| {
                let members: Vec<_> = members.into_iter().flatten().collect();
                prop_oneof![3 => Just(members.clone()), 1 => Just(members).prop_shuffle()]
            })
            .prop_map(Doc::Object)
            .boxed()
    }

    fn null() -> BoxedStrategy<Doc> {
        Just(Doc::Token("null")).boxed()
    }

    fn literal(text: &'static str) -> BoxedStrategy<Doc> {
        Just(Doc::Str(text.to_owned())).boxed()
    }

    /// Text as a stream sends it: plain words, or [`string`]'s escapes and punctuation.
    fn text() -> BoxedStrategy<Doc> {
        prop_oneof![literal("Hello"), literal(" tok17"), string()].boxed()
    }

    /// A content: mostly a string, else `null`, an escaped lone surrogate or anything.
    fn content() -> BoxedStrategy<Doc> {
        prop_oneof![
            6 => text(),
            1 => null(),
            1 => literal("a\\ud83d"),
            1 => any_doc(),
        ]
        .boxed()
    }

    /// A `tool_calls` fragment: the first names the call, the others carry arguments.
    fn stream_tool_call() -> BoxedStrategy<Doc> {
        let function = shaped(vec![
            maybe(0.3, "name", literal("get_weather")),
            maybe(
                0.9,
                "arguments",
                prop_oneof![text(), literal("{\\\"city\\\":")].boxed(),
            ),
        ]);
        shaped(vec![
            maybe(
                0.9,
                "index",
                prop_oneof![literal("0").prop_map(|_| Doc::Token("0")), number()].boxed(),
            ),
            maybe(
                0.3,
                "id",
                prop_oneof![literal("call_1"), literal("")].boxed(),
            ),
            maybe(0.3, "type", literal("function")),
            maybe(
                0.9,
                "function",
                prop_oneof![4 => function, 1 => any_doc()].boxed(),
            ),
        ])
    }

    fn stream_delta() -> BoxedStrategy<Doc> {
        let calls = prop_oneof![
            4 => prop::collection::vec(stream_tool_call(), 0..3).prop_map(Doc::Array),
            1 => null(),
        ];
        shaped(vec![
            maybe(0.2, "role", literal("assistant")),
            maybe(0.8, "content", content()),
            maybe(0.2, "refusal", prop_oneof![null(), text()].boxed()),
            maybe(0.2, "tool_calls", calls.boxed()),
            // Repeated, spelled with an escape, or unknown.
            maybe(0.05, "content", content()),
            maybe(0.05, "\\u0063ontent", text()),
            maybe(0.05, "x", any_doc()),
        ])
    }

    /// `logprobs`: mostly `null`, else `content` tokens (strings under a `content` key).
    fn logprobs() -> BoxedStrategy<Doc> {
        let token = shaped(vec![
            maybe(1.0, "token", text()),
            maybe(
                1.0,
                "logprob",
                literal("-0.1").prop_map(|_| Doc::Token("-0.1")).boxed(),
            ),
            maybe(
                1.0,
                "bytes",
                Just(Doc::Array(vec![Doc::Token("97")])).boxed(),
            ),
            maybe(1.0, "top_logprobs", Just(Doc::Array(vec![])).boxed()),
        ]);
        let tokens = prop::collection::vec(token, 0..2).prop_map(Doc::Array);
        prop_oneof![
            3 => null(),
            1 => shaped(vec![
                maybe(0.9, "content", prop_oneof![tokens, null()].boxed()),
                maybe(0.3, "refusal", null()),
            ]),
        ]
        .boxed()
    }

    fn stream_choice() -> BoxedStrategy<Doc> {
        let reason = prop_oneof![
            6 => null(),
            1 => literal("stop"),
            1 => literal("content_filter"),
            1 => literal("tool_calls"),
            1 => any_doc(),
        ];
        shaped(vec![
            maybe(
                0.9,
                "index",
                prop_oneof![Just(Doc::Token("0")), Just(Doc::Token("1")), number()].boxed(),
            ),
            maybe(
                0.9,
                "delta",
                prop_oneof![8 => stream_delta(), 1 => any_doc()].boxed(),
            ),
            maybe(0.1, "message", stream_delta()),
            maybe(0.15, "text", prop_oneof![text(), null()].boxed()),
            maybe(0.5, "logprobs", logprobs()),
            maybe(0.8, "finish_reason", reason.boxed()),
            maybe(0.05, "delta", stream_delta()),
            maybe(0.05, "content_filter_results", any_doc()),
        ])
    }

    /// A streamed chat (or completions) chunk: mostly as OpenAI sends a content delta,
    /// with the members that change what it says (several choices, logprobs, errors,
    /// refusals, tool calls, usage, repeats, unknown members holding `content`) now and then.
    fn stream_chunk() -> BoxedStrategy<Doc> {
        let choices = prop_oneof![
            8 => prop::collection::vec(stream_choice(), 1..=1),
            2 => prop::collection::vec(stream_choice(), 2..=3),
            1 => prop::collection::vec(stream_choice(), 0..=0),
        ]
        .prop_map(Doc::Array);
        let counts = || {
            prop_oneof![Just(Doc::Token("3")), number()]
                .prop_map(|n| Doc::Object(vec![("prompt_tokens".into(), n)]))
                .boxed()
        };
        let usage = prop_oneof![4 => null(), 1 => counts(), 1 => Just(Doc::Object(vec![])).boxed()];
        let error = prop_oneof![
            2 => null(),
            1 => shaped(vec![maybe(1.0, "message", text()), maybe(0.5, "type", literal("server_error"))]),
            1 => any_doc(),
        ];
        let object = prop_oneof![
            8 => literal("chat.completion.chunk"),
            1 => literal("text_completion"),
            1 => literal("error"),
        ];
        let unknown = prop_oneof![shaped(vec![maybe(1.0, "content", text())]), any_doc(),];
        shaped(vec![
            maybe(
                0.95,
                "id",
                prop_oneof![literal("chatcmpl-1"), text()].boxed(),
            ),
            maybe(0.9, "object", object.boxed()),
            maybe(
                0.9,
                "created",
                prop_oneof![Just(Doc::Token("1767225600")), number()].boxed(),
            ),
            maybe(0.9, "model", prop_oneof![literal("gpt-4o"), text()].boxed()),
            maybe(0.3, "service_tier", literal("default")),
            maybe(
                0.4,
                "system_fingerprint",
                prop_oneof![literal("fp_0aa8d3e20b"), null()].boxed(),
            ),
            maybe(0.2, "x", unknown.boxed()),
            maybe(
                0.95,
                "choices",
                prop_oneof![8 => choices.boxed(), 1 => null()].boxed(),
            ),
            maybe(0.5, "usage", usage.boxed()),
            maybe(0.15, "error", error.boxed()),
            maybe(0.3, "obfuscation", literal("q8Rk2")),
            maybe(
                0.05,
                "choices",
                stream_choice().prop_map(|c| Doc::Array(vec![c])).boxed(),
            ),
            maybe(0.05, "usage", usage_like().boxed()),
        ])
    }

    /// A content delta as providers stream them, in their order or another, with the
    /// members that leave it a plain delta (several choices and tool call fragments too):
    /// the chunks the fast path answers.
    fn provider_chunk() -> BoxedStrategy<Doc> {
        let calls = prop::collection::vec(stream_tool_call(), 0..3).prop_map(Doc::Array);
        let delta = shaped(vec![
            maybe(0.2, "role", literal("assistant")),
            maybe(
                0.9,
                "content",
                prop_oneof![6 => text(), 1 => null()].boxed(),
            ),
            maybe(0.2, "refusal", null()),
            maybe(0.2, "tool_calls", calls.boxed()),
        ]);
        let choice = shaped(vec![
            maybe(
                0.9,
                "index",
                prop_oneof![Just(Doc::Token("0")), Just(Doc::Token("1"))].boxed(),
            ),
            maybe(0.95, "delta", delta),
            maybe(0.1, "text", prop_oneof![text(), null()].boxed()),
            maybe(0.5, "logprobs", null()),
            maybe(0.9, "finish_reason", null()),
        ]);
        let choices = prop_oneof![
            6 => prop::collection::vec(choice.clone(), 1..=1),
            1 => prop::collection::vec(choice, 0..=3),
        ]
        .prop_map(Doc::Array);
        shaped(vec![
            maybe(0.95, "id", literal("chatcmpl-1")),
            maybe(0.9, "object", literal("chat.completion.chunk")),
            maybe(0.9, "created", Just(Doc::Token("1767225600")).boxed()),
            maybe(0.9, "model", literal("gpt-4o")),
            maybe(0.3, "service_tier", literal("default")),
            maybe(
                0.4,
                "system_fingerprint",
                prop_oneof![literal("fp_0aa8d3e20b"), null()].boxed(),
            ),
            maybe(0.95, "choices", choices.boxed()),
            maybe(0.5, "usage", null()),
            maybe(0.3, "obfuscation", literal("q8Rk2")),
        ])
    }

    fn usage_like() -> impl Strategy<Value = Doc> {
        prop_oneof![
            Just(Doc::Token("null")),
            Just(Doc::Object(vec![("prompt_tokens".into(), Doc::Token("5"))])),
        ]
    }

    /// A state past a stream's first chunk, as the fast path needs it: capture off, the id
    /// known, and the model too unless `model` is false.
    fn past_first(model: bool) -> ResponseState {
        let mut state = fresh(false);
        state.id = Some("chatcmpl-1".into());
        if model {
            state.model = Some("gpt-4o".into());
        }
        state
    }

    /// What a chunk leaves: the event's kind and the whole state.
    type Outcome = (EventKind, String);

    /// `data` read by `openai_chunk` (through the fast path when it answers) and in full
    /// (the reference), each from a state past the first chunk.
    fn fast_and_full(data: &str, model: bool) -> (Outcome, Outcome) {
        let mut fast = past_first(model);
        let kind = fast.openai_chunk(data);
        let mut full = past_first(model);
        let kind_full = full.openai_chunk_in_full(trim_unicode_ws(data));
        (
            (kind, format!("{fast:?}")),
            (kind_full, format!("{full:?}")),
        )
    }

    /// The fast path leaves what the full read leaves, with the model known or not.
    fn assert_fast_agrees(data: &str) {
        for model in [true, false] {
            let (fast, full) = fast_and_full(data, model);
            assert_eq!(fast, full, "model known: {model}, chunk: {data}");
        }
    }

    /// Writes a document with `space` between its tokens.
    fn written(doc: &Doc, space: &str) -> String {
        let mut out = String::new();
        write(doc, space, &mut out);
        out
    }

    /// The fast path answers the chunks providers stream most, and as the full read does.
    #[test]
    fn the_fast_path_reads_plain_content_deltas() {
        for chunk in COMMON_CHUNKS {
            let mut state = past_first(true);
            assert_eq!(
                state.openai_chunk_fast(chunk),
                Some(EventKind::Content),
                "{chunk}"
            );
            assert_fast_agrees(chunk);
        }
        let mut state = past_first(true);
        state.openai_chunk_fast(COMMON_CHUNKS[0]);
        assert_eq!(state.content_bytes, 5);
        // An arguments fragment, a legacy completion, escapes: answered too.
        for (chunk, bytes) in [
            (
                r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"logprobs":null,"finish_reason":null}]}"#,
                0,
            ),
            (
                r#"{"id":"cmpl-1","object":"text_completion","created":1,"choices":[{"text":" world","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}"#,
                6,
            ),
            (
                r#"{"id":"c","choices":[{"index":0,"delta":{"content":"caf\u00e9 \"\ud83d\ude00\"\n"}}]}"#,
                13,
            ),
        ] {
            let mut state = past_first(true);
            assert_eq!(
                state.openai_chunk_fast(chunk),
                Some(EventKind::Content),
                "{chunk}"
            );
            assert_eq!(state.content_bytes, bytes, "{chunk}");
            assert_fast_agrees(chunk);
        }
        // What says more than content is left to the full read.
        for chunk in [
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":20}}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":""}}]}}]}"#,
        ] {
            assert_eq!(past_first(true).openai_chunk_fast(chunk), None, "{chunk}");
            assert_fast_agrees(chunk);
        }
    }

    // Chunks the fast path once answered otherwise than the full read, one test each.

    #[test]
    fn fast_path_counts_every_choice() {
        assert_fast_agrees(
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"bc"},"finish_reason":null}]}"#,
        );
    }

    #[test]
    fn fast_path_sees_a_later_choice_finish() {
        assert_fast_agrees(
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{},"finish_reason":"stop"}]}"#,
        );
    }

    #[test]
    fn fast_path_ignores_content_in_an_unknown_member() {
        assert_fast_agrees(r#"{"x":{"content":"hi"},"choices":[{"delta":{}}]}"#);
        assert_fast_agrees(r#"{"x":{"content":"hi"},"choices":[{"delta":{"content":"a"}}]}"#);
    }

    #[test]
    fn fast_path_ignores_logprobs_content() {
        let logprobs = r#""logprobs":{"content":[{"token":"a","logprob":-0.1,"bytes":[97],"top_logprobs":[]}]}"#;
        assert_fast_agrees(&format!(
            r#"{{"id":"c","choices":[{{"index":0,{logprobs},"delta":{{"content":"ab"}}}}]}}"#
        ));
        assert_fast_agrees(&format!(
            r#"{{"id":"c","choices":[{{"index":0,{logprobs},"delta":{{}},"finish_reason":null}}]}}"#
        ));
    }

    #[test]
    fn fast_path_records_a_top_level_error() {
        assert_fast_agrees(
            r#"{"error":{"message":"overloaded","type":"server_error"},"choices":[{"delta":{"content":"a"}}]}"#,
        );
        assert_fast_agrees(
            r#"{"object":"error","message":"bad","choices":[{"delta":{"content":"a"}}]}"#,
        );
    }

    #[test]
    fn fast_path_records_a_refusal() {
        assert_fast_agrees(r#"{"choices":[{"delta":{"content":"a","refusal":"no"}}]}"#);
    }

    #[test]
    fn fast_path_counts_unescaped_bytes() {
        for chunk in [
            r#"{"choices":[{"delta":{"content":"say \"hi\""}}]}"#,
            r#"{"choices":[{"delta":{"content":"caf\u00e9"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a\nb\\c"}}]}"#,
            r#"{"choices":[{"delta":{"content":"\ud83d\ude00"}}]}"#,
        ] {
            assert_fast_agrees(chunk);
        }
    }

    #[test]
    fn fast_path_rejects_what_is_not_json() {
        for chunk in [
            r#"{"choices":[{"delta":{"content":"hi"}}"#,
            r#"{"choices":[{"delta":{"content":"a\ud83d"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a\q"}}]}"#,
            "{\"choices\":[{\"delta\":{\"content\":\"tab\there\"}}]}",
            r#"{"choices":[{"delta":{"content":"hi"}}]} x"#,
        ] {
            assert_fast_agrees(chunk);
        }
    }

    #[test]
    fn fast_path_notes_a_tool_call_id() {
        assert_fast_agrees(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"arguments":""}}]}}]}"#,
        );
    }

    #[test]
    fn fast_path_calls_an_empty_tool_call_list_no_content() {
        assert_fast_agrees(r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#);
        assert_fast_agrees(r#"{"choices":[{"delta":{"tool_calls":[1]}}]}"#);
    }

    #[test]
    fn fast_path_reads_only_the_delta_of_a_chunk() {
        assert_fast_agrees(r#"{"choices":[{"message":{"content":"hi"}}]}"#);
        assert_fast_agrees(r#"{"text":[]}"#);
        assert_fast_agrees(r#"{"choices":[{"text":"ab","x":{"content":"c"}}]}"#);
    }

    #[test]
    fn fast_path_sees_usage_at_the_top_level() {
        assert_fast_agrees(
            r#"{"choices":[{"delta":{"content":"a"}}],"x":{"usage":null},"usage":{"prompt_tokens":3}}"#,
        );
    }

    #[test]
    fn fast_path_takes_the_last_of_repeated_members() {
        for chunk in [
            r#"{"choices":[{"delta":{"content":"a"}}],"choices":[{"delta":{"content":"bcd"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"bcd"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a","\u0063ontent":"bcd"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"},"delta":{}}]}"#,
        ] {
            assert_fast_agrees(chunk);
        }
    }

    #[test]
    fn fast_path_leaves_the_model_to_the_full_read() {
        let chunk = r#"{"id":"c","model":"gpt-4o","choices":[{"delta":{"content":"a"}}]}"#;
        let (fast, full) = fast_and_full(chunk, false);
        assert_eq!(fast, full);
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

    /// The chunks a provider streams most: plain content deltas, in OpenAI's spellings.
    const COMMON_CHUNKS: [&str; 3] = [
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"chatcmpl-CiT4r0a8Qe2LkV7mZpXw1bNfY3uJd","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0aa8d3e20b","choices":[{"index":0,"delta":{"content":" tok17"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"q8Rk2"}"#,
    ];

    /// Nanoseconds per call of `read` on each common chunk, from a state past the first
    /// chunk (id and model known, capture off): the least of seven runs, the machine noisy.
    /// `CHUNK_COST_ROUNDS` sets the calls per run, `CHUNK_COST_CHUNK` one chunk to time (as
    /// under `valgrind --tool=callgrind`, which counts instructions however busy the machine).
    fn time_per_chunk(label: &str, read: impl Fn(&mut ResponseState, &str)) {
        let env = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
        let rounds = env("CHUNK_COST_ROUNDS").unwrap_or(50_000);
        let only = env("CHUNK_COST_CHUNK").map(|i| i as usize);
        for (i, chunk) in COMMON_CHUNKS.iter().enumerate() {
            if only.is_some_and(|only| only != i) {
                continue;
            }
            let mut state = past_first(true);
            let ns = (0..7)
                .map(|_| {
                    let start = std::time::Instant::now();
                    for _ in 0..rounds {
                        read_one(&read, &mut state, std::hint::black_box(chunk));
                    }
                    start.elapsed().as_nanos() as f64 / f64::from(rounds)
                })
                .fold(f64::INFINITY, f64::min);
            std::hint::black_box(&state);
            println!("{label:>12} chunk {i} ({} bytes): {ns:7.1} ns", chunk.len());
        }
    }

    /// One call of `read`, never inlined: what `valgrind --tool=callgrind` counts per chunk,
    /// as the inclusive cost of `read_one::<…chunk_cost::{closure#0}>` over its calls.
    fn read_one<F: Fn(&mut ResponseState, &str)>(read: &F, state: &mut ResponseState, chunk: &str) {
        read(state, chunk);
    }

    /// Nanoseconds per chunk of `openai_chunk` over a stream as OpenAI sends one: 16 chunks
    /// with their own token and `obfuscation`, read in turn again and again (the least of
    /// seven runs), from a state past the first chunk. Under callgrind, the per-chunk count
    /// is `read_one::<…time_stream…>`'s inclusive cost over `CHUNK_COST_ROUNDS` × 7 calls.
    fn time_stream() {
        let env = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
        let rounds = env("CHUNK_COST_ROUNDS").unwrap_or(50_000) / 16;
        let chunks: Vec<String> = (0..16)
            .map(|i| {
                format!(
                    r#"{{"id":"chatcmpl-DulSaIuPk2WVzIh1ATUc3kKJq3tMX","object":"chat.completion.chunk","created":1796205257,"model":"gpt-4o","service_tier":"default","system_fingerprint":"fp_5d3f1c9b27","choices":[{{"index":0,"delta":{{"content":" tok{i}"}},"logprobs":null,"finish_reason":null}}],"obfuscation":"{}"}}"#,
                    &"k2joxp6gf2Y7Q5"[..i % 8 + 4]
                )
            })
            .collect();
        let read = |state: &mut ResponseState, chunk: &str| {
            state.openai_chunk(chunk);
        };
        let mut state = past_first(true);
        let ns = (0..7)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..rounds {
                    for chunk in &chunks {
                        read_one(&read, &mut state, std::hint::black_box(chunk));
                    }
                }
                start.elapsed().as_nanos() as f64 / f64::from(rounds * 16)
            })
            .fold(f64::INFINITY, f64::min);
        std::hint::black_box(&state);
        println!(
            "{:>12} 16 chunks (~{} bytes): {ns:7.1} ns",
            "stream",
            chunks[0].len()
        );
    }

    /// The cost of a common chunk through `openai_chunk`, the scanner and the `Value` path,
    /// and of a chunk of an OpenAI stream through `openai_chunk`.
    /// Timing, not a check: run it optimized, `cargo test -p llmtrace --release --lib
    /// chunk_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run optimized"]
    fn chunk_cost() {
        {
            time_per_chunk("openai_chunk", |state, chunk| {
                state.openai_chunk(chunk);
            });
            time_per_chunk("scanner", |state, chunk| {
                state.openai_bytes(chunk.as_bytes(), true);
            });
            time_per_chunk("value", |state, chunk| {
                let value = state.parse_event(chunk).unwrap();
                state.openai_value(&value, true);
            });
        }
        time_stream();
    }

    /// OpenAI's chunk, as it streams them: `{created}` and `{content}` to fill in.
    const OPENAI_CHUNK: &str = r#"{"id":"chatcmpl-DulSaIuPk2WVzIh1ATUc3kKJq3tMX","object":"chat.completion.chunk","created":{created},"model":"gpt-4o","service_tier":"default","system_fingerprint":"fp_5d3f1c9b27","choices":[{"index":0,"delta":{"content":{content}},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"k2joxp6gf2Y7"}"#;

    /// [`OPENAI_CHUNK`] made at `created` with `content` (a JSON value, as written).
    fn openai_chunk_at(created: &str, content: &str) -> String {
        OPENAI_CHUNK
            .replace("{created}", created)
            .replace("{content}", content)
    }

    /// `chunks` read in turn by `openai_chunk` (the template and fast path when they
    /// answer) and in full, each from a state past the first chunk: the same kind for each,
    /// and the same state at the end; and where the template is used, it answers as
    /// [`plain_chunk`] does, with its tail and without. The first state is returned.
    fn stream_agrees<S: AsRef<str>>(chunks: &[S]) -> ResponseState {
        let mut fast = past_first(true);
        let mut full = past_first(true);
        for chunk in chunks {
            let chunk = chunk.as_ref();
            let (bytes, template) = (trim_unicode_ws(chunk).as_bytes(), &fast.chat_template);
            let at = template.choices;
            if at > 0 && bytes.starts_with(&template.head[..at]) {
                let answer = |choices| {
                    plain_chunk(bytes, choices).map(|(kind, len, head)| {
                        (
                            kind,
                            len,
                            head.map(|h| (h.len, h.choice, h.delta, h.choices)),
                        )
                    })
                };
                assert_eq!(answer(Some(at)), answer(None), "chunk: {chunk}");
            }
            if !template.head.is_empty() && bytes.starts_with(&template.head) {
                let plain = plain_chunk(bytes, None).map(|(kind, len, _)| (kind, len));
                let with_tail = templated_chunk(bytes, &mut template.clone());
                assert_eq!(with_tail, plain, "chunk: {chunk}");
                let mut tailless = template.clone();
                tailless.tail.clear();
                tailless.gap = None;
                assert_eq!(
                    templated_chunk(bytes, &mut tailless),
                    plain,
                    "chunk: {chunk}"
                );
            }
            let kind = fast.openai_chunk(chunk);
            let kind_full = full.openai_chunk_in_full(trim_unicode_ws(chunk));
            assert_eq!(kind, kind_full, "chunk: {chunk}");
        }
        assert_eq!(
            format!("{fast:?}"),
            format!("{full:?}"),
            "chunks: {:#?}",
            chunks.iter().map(AsRef::as_ref).collect::<Vec<_>>()
        );
        fast
    }

    /// A chunk that starts with the template's head up to its `choices` but not with the
    /// whole head (OpenAI's finish and usage chunks) is read from its `choices` on, as it
    /// would be from its start.
    #[test]
    fn chunks_of_the_head_s_members_are_read_from_choices_on() {
        let head = r#"{"id":"chatcmpl-DulSaIuPk2WVzIh1ATUc3kKJq3tMX","object":"chat.completion.chunk","created":1796205257,"model":"gpt-4o","service_tier":"default","system_fingerprint":"fp_5d3f1c9b27","choices":"#;
        let chunks = [
            openai_chunk_at("1796205257", r#""tok0""#),
            format!(
                r#"{head}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
            ),
            format!(
                r#"{head}[{{"index":0,"delta":{{"role":"assistant","content":"x"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
            ),
            format!(
                r#"{head}[{{"index":1,"delta":{{"content":"y"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
            ),
            format!(r#"{head}[{{"index":0,"delta":{{"content":"z"}}}}],"choices":[]}}"#),
            format!(r#"{head}[],"usage":null,"id":"again","object":"error"}}"#),
            format!(
                r#"{head}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],"usage":null}}"#
            ),
            format!(
                r#"{head}[],"usage":{{"prompt_tokens":10,"completion_tokens":16,"total_tokens":26}}}}"#
            ),
            format!(r#"{head}[]}} "#),
            format!(r#"{head}[]"#),
            head.to_string(),
        ];
        let before = choices_hits();
        stream_agrees(&chunks);
        assert!(choices_hits() - before >= 8);
    }

    /// A chunk teaches the template its head, up to the content's opening quote; the next,
    /// starting with it, is read from its content on.
    #[test]
    fn template_reads_the_content_after_the_head() {
        let first = openai_chunk_at("1796205257", r#""tok0""#);
        let second = openai_chunk_at("1796205257", r#"" t\u00e9k\n1""#);
        let mut state = past_first(true);
        let hits = template_hits();
        assert_eq!(state.openai_chunk(&first), EventKind::Content);
        assert_eq!(template_hits(), hits);
        let head = first.find(r#""content":""#).unwrap() + r#""content":""#.len();
        assert_eq!(state.chat_template.head, first.as_bytes()[..head]);
        assert_eq!(state.openai_chunk(&second), EventKind::Content);
        assert_eq!(template_hits(), hits + 1);
        assert_eq!(state.content_bytes, 4 + 7);
        assert_eq!(
            templated_chunk(second.as_bytes(), &mut state.chat_template.clone()),
            Some((EventKind::Content, 7))
        );
        let empty = openai_chunk_at("1796205257", r#""""#);
        assert_eq!(
            templated_chunk(empty.as_bytes(), &mut state.chat_template.clone()),
            Some((EventKind::Other, 0))
        );
        stream_agrees(&[first, second, empty]);
    }

    /// A chunk whose `created` changed does not start with the head: the strict reader
    /// answers it, and the template learns its head.
    #[test]
    fn template_falls_back_when_created_changes() {
        let chunks = [
            openai_chunk_at("1796205257", r#""tok0""#),
            openai_chunk_at("1796205258", r#""tok1""#),
            openai_chunk_at("1796205258", r#""tok2""#),
        ];
        let mut state = past_first(true);
        let hits = template_hits();
        state.openai_chunk(&chunks[0]);
        assert_eq!(state.openai_chunk(&chunks[1]), EventKind::Content);
        assert_eq!(template_hits(), hits);
        assert!(
            state
                .chat_template
                .head
                .starts_with(&chunks[1].as_bytes()[..100])
        );
        assert_eq!(state.openai_chunk(&chunks[2]), EventKind::Content);
        assert_eq!(template_hits(), hits + 1);
        assert_eq!(state.content_bytes, 12);
        stream_agrees(&chunks);
    }

    /// A second `content` in the delta, after the head's, is refused as the strict reader
    /// refuses it, and left to the full read (which takes the last).
    #[test]
    fn template_refuses_a_repeated_content_in_the_tail() {
        let first = openai_chunk_at("1796205257", r#""tok0""#);
        let repeated = openai_chunk_at("1796205257", r#""tok1","content":"x""#);
        let mut state = past_first(true);
        state.openai_chunk(&first);
        let hits = template_hits();
        assert_eq!(
            templated_chunk(repeated.as_bytes(), &mut state.chat_template.clone()),
            None
        );
        assert!(plain_chunk(repeated.as_bytes(), None).is_none());
        assert_eq!(state.openai_chunk(&repeated), EventKind::Content);
        assert_eq!(template_hits(), hits + 1);
        assert_eq!(state.content_bytes, 4 + 1);
        stream_agrees(&[first, repeated]);
    }

    /// The finish chunk after content chunks, with the head (an empty content) or without
    /// (OpenAI's empty delta), is left to the full read, which records the reason.
    #[test]
    fn template_sees_a_finish_chunk_after_content() {
        let finish = |delta: &str| {
            openai_chunk_at("1796205257", r#""tok0""#)
                .replace(r#"{"content":"tok0"}"#, delta)
                .replace(r#""finish_reason":null"#, r#""finish_reason":"stop""#)
        };
        for last in [finish(r#"{"content":""}"#), finish("{}")] {
            let chunks = [
                openai_chunk_at("1796205257", r#""tok0""#),
                openai_chunk_at("1796205257", r#"" tok1""#),
                last,
            ];
            let mut state = past_first(true);
            state.openai_chunk(&chunks[0]);
            state.openai_chunk(&chunks[1]);
            assert_eq!(
                templated_chunk(chunks[2].as_bytes(), &mut state.chat_template.clone()),
                None
            );
            assert_eq!(state.openai_chunk(&chunks[2]), EventKind::Other);
            assert_eq!(state.finish_reasons, [(0, "stop".to_owned())]);
            assert_eq!(stream_agrees(&chunks).content_bytes, 9);
        }
    }

    /// [`OPENAI_CHUNK`] at the stream's `created`, with `content` (a JSON value, as written)
    /// and `obfuscation` (the string's contents, as written).
    fn obfuscated(content: &str, obfuscation: &str) -> String {
        openai_chunk_at("1796205257", content).replace("k2joxp6gf2Y7", obfuscation)
    }

    /// OpenAI's tail, as the template keeps it: the obfuscation's contents cut out.
    const OPENAI_TAIL: &[u8] =
        br#"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":""}"#;

    /// A state taught the head (by the first chunk) and the tail (by the second, read from
    /// the head) of [`OPENAI_CHUNK`]s.
    fn taught() -> ResponseState {
        let mut state = past_first(true);
        state.openai_chunk(&obfuscated(r#""tok0""#, "k2joxp6gf2Y7"));
        assert!(state.chat_template.tail.is_empty());
        state.openai_chunk(&obfuscated(r#"" tok1""#, "5KWs0aDjx4s"));
        assert_eq!(state.chat_template.tail, OPENAI_TAIL);
        assert_eq!(state.chat_template.gap, Some(OPENAI_TAIL.len() - 2));
        state
    }

    /// The second chunk of a head teaches the template its tail, the obfuscation's contents
    /// cut out; the chunks after it match it whatever their content and obfuscation (empty,
    /// non-ASCII, long), and count their content.
    #[test]
    fn tail_template_skips_the_obfuscation() {
        let long = "x".repeat(4 * MAX_TEMPLATE_TAIL);
        let later = [
            obfuscated(r#"" tok2""#, "q8Rk2"),
            obfuscated(r#""t\u00e9k\n3""#, ""),
            obfuscated(r#""""#, "é日本😀 ~{}[],:"),
            obfuscated(r#""\"}],\"usage\":null,\"obfuscation\":\"""#, &long),
        ];
        let mut state = taught();
        let hits = tail_hits();
        let kinds: Vec<_> = later.iter().map(|c| state.openai_chunk(c)).collect();
        use EventKind::{Content, Other};
        assert_eq!(kinds, [Content, Content, Other, Content]);
        assert_eq!(tail_hits(), hits + later.len() as u64);
        assert_eq!(state.content_bytes, 4 + 5 + 5 + 6 + 32);
        assert_eq!(state.chat_template.tail, OPENAI_TAIL);
        let mut chunks = vec![
            obfuscated(r#""tok0""#, "k2joxp6gf2Y7"),
            obfuscated(r#"" tok1""#, "5KWs0aDjx4s"),
        ];
        chunks.extend(later);
        stream_agrees(&chunks);
    }

    /// A tail without a string the reader skips (no `obfuscation`) is kept whole, and
    /// matched whole.
    #[test]
    fn tail_template_matches_a_tail_without_obfuscation() {
        let chunk = |content: &str| {
            openai_chunk_at("1796205257", content).replace(r#","obfuscation":"k2joxp6gf2Y7""#, "")
        };
        let chunks = [
            chunk(r#""a""#),
            chunk(r#""bb""#),
            chunk(r#""ccc""#),
            chunk("\"\""),
        ];
        let mut state = past_first(true);
        state.openai_chunk(&chunks[0]);
        state.openai_chunk(&chunks[1]);
        assert_eq!(
            state.chat_template.tail,
            br#"},"logprobs":null,"finish_reason":null}],"usage":null}"#
        );
        assert_eq!(state.chat_template.gap, None);
        let hits = tail_hits();
        state.openai_chunk(&chunks[2]);
        state.openai_chunk(&chunks[3]);
        assert_eq!(tail_hits(), hits + 2);
        assert_eq!(state.content_bytes, 6);
        stream_agrees(&chunks);
    }

    /// What a state must say after a chunk.
    type Says = dyn Fn(&ResponseState) -> bool;

    /// A tail that differs from the template's anywhere but in the obfuscation's contents,
    /// or whose obfuscation the reader's string skip refuses, is not matched: the chunk is
    /// read as before, and says what the full read says. Each case, were it matched,
    /// would be answered as a content delta of 4 bytes and nothing else.
    #[test]
    fn tail_template_refuses_any_other_difference() {
        let with_tail = |tail: &str| {
            let chunk = obfuscated(r#""tok2""#, "");
            let head = chunk.find(r#""content":"#).unwrap() + r#""content":"#.len();
            format!(r#"{}"tok2"{tail}"#, &chunk[..head])
        };
        let openai = r#"},"logprobs":null,"finish_reason":null}],"usage":null"#;
        let usage = |state: &ResponseState| state.usage_reported;
        let error = |state: &ResponseState| state.error.is_some();
        let not_json = |state: &ResponseState| state.parse_error.is_some();
        let stop = |state: &ResponseState| state.finish_reasons == [(0, "stop".to_owned())];
        let agree = |_: &ResponseState| true;
        let cases: Vec<(String, &Says)> = vec![
            // Another value before the obfuscation.
            (
                r#"},"logprobs":null,"finish_reason":"stop"}],"usage":null,"obfuscation":"ab"}"#
                    .into(),
                &stop,
            ),
            (
                r#"},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":3},"obfuscation":"ab"}"#.into(),
                &usage,
            ),
            // Members after it, repeating one the reader reads (the full read takes the last).
            (
                format!(r#"{openai},"obfuscation":"ab","usage":{{"prompt_tokens":3}}}}"#),
                &usage,
            ),
            (
                format!(r#"{openai},"obfuscation":"ab","choices":[{{"delta":{{"content":"x"}}}}]}}"#),
                &|state: &ResponseState| state.content_bytes == 4 + 5 + 1,
            ),
            (
                format!(r#"{openai},"obfuscation":"ab","error":{{"message":"m"}}}}"#),
                &error,
            ),
            (format!(r#"{openai},"obfuscation":"ab","object":"error"}}"#), &error),
            // Another member in its place, or another value.
            (format!(r#"{openai},"object":"error"}}"#), &error),
            (format!(r#"{openai},"obfuscation":null}}"#), &agree),
            (format!(r#"{openai},"obfuscation":["ab"]}}"#), &agree),
            // White space, which the reader refuses and the full read skips.
            (format!(r#"{openai}, "obfuscation":"ab"}}"#), &agree),
            // Contents the reader's string skip refuses: escapes, control characters (which
            // the full read skips unchecked, in a member it does not read), a quote.
            (format!(r#"{openai},"obfuscation":"a\"b"}}"#), &agree),
            (format!(r#"{openai},"obfuscation":"a\u0041"}}"#), &agree),
            (format!("{openai},\"obfuscation\":\"a\u{1}b\"}}"), &agree),
            (format!("{openai},\"obfuscation\":\"a\tb\"}}"), &agree),
            (format!(r#"{openai},"obfuscation":"a"}}"}}"#), &not_json),
            (format!(r#"{openai},"obfuscation":"ab\"#), &not_json),
            // Cut short, or more after the end.
            (format!(r#"{openai},"obfuscation":"ab"#), &not_json),
            (format!(r#"{openai},"obfuscation":"ab""#), &not_json),
            (format!(r#"{openai},"obfuscation":"ab"}}}}"#), &not_json),
            (format!(r#"{openai},"obfuscation":"ab"}} x"#), &not_json),
            (format!(r#"{openai},"obfuscation":"ab"}},"#), &not_json),
        ];
        for (tail, says) in cases {
            let chunk = with_tail(&tail);
            let mut state = taught();
            let hits = tail_hits();
            state.openai_chunk(&chunk);
            assert_eq!(tail_hits(), hits, "{chunk}");
            assert!(says(&state), "{tail:?} in {chunk}: {state:?}");
            let full = stream_agrees(&[
                obfuscated(r#""tok0""#, "k2joxp6gf2Y7"),
                obfuscated(r#"" tok1""#, "5KWs0aDjx4s"),
                chunk.clone(),
            ]);
            assert_eq!(format!("{state:?}"), format!("{full:?}"), "{chunk}");
        }
    }

    /// A tail that counts something itself (another choice's content, tool call fragments)
    /// does not teach the template, nor one longer than [`MAX_TEMPLATE_TAIL`]; and a new
    /// head forgets the tail.
    #[test]
    fn tail_template_learns_only_tails_that_count_nothing() {
        let choice = r#"{"index":1,"delta":{"content":"yy"}}"#;
        let counting = [
            obfuscated(r#""tok0""#, "k2joxp6gf2Y7"),
            obfuscated(r#"" tok1""#, "5KWs0aDjx4s").replace("}],", &format!("}},{choice}],")),
            obfuscated(r#""""#, "5KWs0aDjx4s").replace(
                r#""""#,
                r#""","tool_calls":[{"index":0,"function":{"arguments":"{}"}}]"#,
            ),
        ];
        let mut state = past_first(true);
        for chunk in &counting {
            assert_eq!(state.openai_chunk(chunk), EventKind::Content, "{chunk}");
            assert!(state.chat_template.tail.is_empty(), "{chunk}");
        }
        assert_eq!(state.content_bytes, 4 + 5 + 2);
        stream_agrees(&counting);

        let key = "k".repeat(MAX_TEMPLATE_TAIL);
        let long = obfuscated(r#""tok2""#, "ab").replace(
            r#","obfuscation""#,
            &format!(r#","{key}":null,"obfuscation""#),
        );
        let mut state = taught();
        state.openai_chunk(&long);
        assert_eq!(state.chat_template.tail, OPENAI_TAIL);
        stream_agrees(&[
            obfuscated(r#""tok0""#, "k2joxp6gf2Y7"),
            obfuscated(r#"" tok1""#, "5KWs0aDjx4s"),
            long,
        ]);

        let mut state = taught();
        state.openai_chunk(&openai_chunk_at("1796205258", r#""tok2""#));
        assert!(state.chat_template.tail.is_empty());
        assert_eq!(state.chat_template.gap, None);
    }

    /// The head of a chunk for [`the_template_agrees_with_the_full_read_over_streams`], up
    /// to `"content":`: mostly OpenAI's, now and then another `created`, members before the
    /// delta's content (an earlier choice among them, which may count text), or white space.
    fn stream_head() -> impl Strategy<Value = String> {
        let created = prop_oneof![6 => Just("1796205257"), 1 => Just("1796205258")];
        let before_choice = prop::sample::select(vec![
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            r#"{"index":1,"delta":{}},"#,
            r#"{"index":1,"delta":{"content":"z"}},"#,
            r#"{"text":"é"},"#,
        ]);
        let in_choice = prop::sample::select(vec![
            "",
            "",
            "",
            "",
            "",
            r#""text":null,"#,
            r#""text":"t","#,
            r#""logprobs":null,"#,
        ]);
        let in_delta = prop::sample::select(vec![
            "",
            "",
            "",
            "",
            "",
            r#""role":"assistant","#,
            r#""tool_calls":[],"#,
            r#""refusal":null,"#,
        ]);
        let space = prop::sample::select(vec!["", "", "", "", "", "", " ", "\n"]);
        (created, before_choice, in_choice, in_delta, space).prop_map(
            |(created, before_choice, in_choice, in_delta, space)| {
                format!(
                    r#"{space}{{"id":"chatcmpl-DulSaIuPk2WVzIh1ATUc3kKJq3tMX","object":"chat.completion.chunk","created":{created},"model":"gpt-4o","service_tier":"default","system_fingerprint":"fp_5d3f1c9b27","choices":[{before_choice}{{{in_choice}"index":0,"delta":{{{in_delta}"content":"#
                )
            },
        )
    }

    /// The contents of an `obfuscation` string, as written: mostly OpenAI's random letters and
    /// digits, of any length; now and then any text (quotes, backslashes and control
    /// characters among it), or an escape.
    fn obfuscation() -> impl Strategy<Value = String> {
        prop_oneof![
            12 => "[A-Za-z0-9]{0,24}",
            1 => "\\PC{0,6}",
            1 => r#"[a"\\/}\],:\x01\t\n é]{0,6}"#,
            1 => prop::sample::select(vec![r#"\""#, r#"\\"#, r#"a\u0041"#, r#"\ud83d"#, "\u{7f}"])
                .prop_map(str::to_owned),
        ]
    }

    /// The rest of a chunk after its head: the content (escapes, empty, non-ASCII, invalid),
    /// then mostly OpenAI's tail with its random obfuscation, now and then members that
    /// change what the chunk says, repeated members, more choices, white space.
    fn stream_tail() -> impl Strategy<Value = String> {
        let content = prop_oneof![
            8 => text(),
            1 => literal(""),
            1 => literal("a\\ud83d"),
            1 => literal("\\x"),
            1 => literal("\u{1}"),
            1 => null(),
        ]
        .prop_map(|content| written(&content, ""));
        let delta_tail = prop::sample::select(vec![
            "",
            "",
            "",
            "",
            "",
            "",
            r#","refusal":null"#,
            r#","content":"b""#,
            r#","content":null"#,
            r#","tool_calls":[]"#,
            r#","tool_calls":[{"index":0,"function":{"arguments":"{}"}}]"#,
            r#","tool_calls":[{"index":0,"id":"call_1","function":{"name":"f"}}]"#,
            r#","role":"assistant""#,
            r#","x":1"#,
            " ",
        ]);
        let choice_tail = prop::sample::select(vec![
            r#","logprobs":null,"finish_reason":null"#,
            r#","logprobs":null,"finish_reason":null"#,
            r#","logprobs":null,"finish_reason":null"#,
            r#","logprobs":null,"finish_reason":"stop""#,
            r#","finish_reason":"length""#,
            r#","finish_reason":null,"text":"t""#,
            r#","delta":{}"#,
            r#","index":1"#,
            r#","logprobs":{"content":[]}"#,
            r#","text":null"#,
            "",
        ]);
        let more_choices = prop::sample::select(vec![
            "",
            "",
            "",
            "",
            "",
            r#",{"index":1,"delta":{"content":"y"},"finish_reason":null}"#,
            r#",{"index":1,"delta":{},"finish_reason":"length"}"#,
            r#",{"index":1,"delta":{"content":""}}"#,
            r#",{"index":1,"text":"é"}"#,
            ",",
        ]);
        let top_tail = prop::sample::select(vec![
            r#","usage":null,"obfuscation":"{obfuscation}""#,
            r#","usage":null,"obfuscation":"{obfuscation}""#,
            r#","obfuscation":"{obfuscation}""#,
            r#","usage":null,"obfuscation":"{obfuscation}","usage":{"prompt_tokens":3}"#,
            r#","usage":null,"obfuscation":"{obfuscation}","choices":[]"#,
            r#","usage":null,"obfuscation":"{obfuscation}","object":"error""#,
            r#","usage":null,"obfuscation":"{obfuscation}","x":"{obfuscation}""#,
            r#","usage":null,"obfuscation":{obfuscation}"#,
            "",
            r#","usage":null"#,
            r#","usage":{"prompt_tokens":3,"completion_tokens":5}"#,
            r#","error":{"message":"x"}"#,
            r#","error":null"#,
            r#","object":"error""#,
            r#","choices":[]"#,
            r#","x":{"content":"a"}"#,
            r#","model":"gpt-4o-mini""#,
            r#","obfuscation":"a\"b""#,
            r#","created":-1"#,
            " ",
        ]);
        let end = prop::sample::select(vec!["", "", "", "", "", "", "\n", " x", "}"]);
        let varied = (delta_tail, choice_tail, more_choices, top_tail, end).prop_map(
            |(delta_tail, choice_tail, more_choices, top_tail, end)| {
                format!("{delta_tail}}}{choice_tail}}}{more_choices}]{top_tail}}}{end}")
            },
        );
        let openai = r#"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"{obfuscation}"}"#;
        let rest = prop_oneof![3 => Just(openai.to_owned()), 2 => varied];
        (content, rest, obfuscation()).prop_map(|(content, rest, obfuscation)| {
            content + &rest.replace("{obfuscation}", &obfuscation)
        })
    }

    /// A stream of 2 to 6 chunks: most with the stream's head, some with another; and
    /// some damaged (a byte changed, or cut short).
    fn template_stream() -> impl Strategy<Value = Vec<String>> {
        let damage = prop_oneof![
            8 => Just(None),
            1 => (any::<prop::sample::Index>(), prop::sample::select(b"\"\\},]: x0\x01".to_vec()))
                .prop_map(|(at, byte)| Some((at, Some(byte)))),
            1 => any::<prop::sample::Index>().prop_map(|at| Some((at, None))),
        ];
        let chunk = (
            prop::bool::weighted(0.85),
            stream_head(),
            stream_tail(),
            damage,
        );
        (stream_head(), prop::collection::vec(chunk, 2..=6)).prop_map(|(head, chunks)| {
            let chunks = chunks.into_iter();
            chunks
                .map(|(same, other, tail, damage)| {
                    let chunk = format!("{}{tail}", if same { &head } else { &other });
                    damaged(chunk, damage)
                })
                .collect()
        })
    }

    /// `chunk` with the byte at an index changed, or cut there.
    fn damaged(mut chunk: String, damage: Option<(prop::sample::Index, Option<u8>)>) -> String {
        match damage {
            None => chunk,
            Some((at, Some(byte))) => {
                let mut bytes = chunk.into_bytes();
                let at = at.index(bytes.len());
                bytes[at] = byte;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Some((at, None)) => {
                let mut end = at.index(chunk.len() + 1);
                while !chunk.is_char_boundary(end) {
                    end -= 1;
                }
                chunk.truncate(end);
                chunk
            }
        }
    }

    /// Over streams of chunks, mostly of the same head and OpenAI's tail, the template
    /// answers each as the strict reader and so as the full read does, and leaves the same
    /// state; and it is used (its head answers chunks of most streams, its tail many).
    #[test]
    fn the_template_agrees_with_the_full_read_over_streams() {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2048));
        let (hits, tail) = (template_hits(), tail_hits());
        let streams = template_stream();
        runner
            .run(&streams, |chunks| {
                stream_agrees(&chunks);
                Ok(())
            })
            .unwrap();
        let (hits, tail) = (template_hits() - hits, tail_hits() - tail);
        assert!(hits > 1000, "template hits: {hits}");
        assert!(tail > 150, "tail hits: {tail}");
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

    proptest! {
        // Most chunks are refused at once, or answered in a few hundred bytes: many cases.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The fast path answers a streamed chunk as the full read does, or leaves it to
        /// the full read: whatever the chunk's shape, spacing or damage.
        #[test]
        fn the_fast_path_agrees_with_the_full_read(
            chunk in prop_oneof![2 => provider_chunk(), 2 => stream_chunk(), 1 => any_doc()],
            space in prop::sample::select(vec!["", "", "", " ", "\n\t\r "]),
            cut in any::<prop::sample::Index>(),
        ) {
            let data = written(&chunk, space);
            assert_fast_agrees(&data);
            let mut end = cut.index(data.len() + 1);
            while !data.is_char_boundary(end) {
                end -= 1;
            }
            assert_fast_agrees(&data[..end]);
        }

        /// So it does for any chat body, read as a chunk.
        #[test]
        fn the_fast_path_agrees_on_chat_bodies(body in chat_body()) {
            assert_fast_agrees(&body);
        }
    }
}
