//! [`PromptWatch`]: keywords and regular expressions looked for in a request's prompt while
//! its body is read; what is scanned and what it costs is on the type.

use std::fmt;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use opentelemetry::StringValue;
use regex::{RegexSet, RegexSetBuilder};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::endpoint::ApiFormat;

/// Text scanned per request at most, by default: 1 MiB.
pub const DEFAULT_MAX_SCAN_BYTES: usize = 1024 * 1024;

/// Compiled size of the regular expressions at most (the `regex` crate's `size_limit`, also
/// its lazy DFA's cache): a configuration that needs more is refused when it is built.
const REGEX_SIZE_LIMIT: usize = 2 * 1024 * 1024;

/// Keywords and regular expressions looked for in a request's prompt while its body is read,
/// so a tail sampler can keep the trace without the prompt being kept.
///
/// The prompt is on no span unless content capture is on, and a tail sampler only sees
/// finished spans. So the watch runs where the whole request body is at hand (when the
/// request is read, see [`RequestInfo::parse_with`](super::RequestInfo::parse_with)) and the
/// span records only which matchers matched, as the string array
/// [`llmtrace.prompt.matched`](crate::semconv::llmtrace::PROMPT_MATCHED) of their ids. Nothing
/// of the prompt is kept: the decoded text is scanned in place and dropped with the body.
///
/// What is scanned is the prompt's *text*, JSON strings decoded (so `\n`, `\u00e9` or `\"`
/// in the body do not hide a keyword), from the members each format keeps it in:
///
/// | format | members |
/// |---|---|
/// | OpenAI chat | `messages[].content`: a string, or the `text` of its parts |
/// | OpenAI completions | `prompt`: a string or an array of strings |
/// | OpenAI embeddings | `input`: a string or an array of strings |
/// | OpenAI Responses | `instructions`; `input`: a string, or its items' `content` (string or parts' `text`) |
/// | Anthropic messages | `system` (string or text blocks); `messages[].content` (string, text blocks, tool results' `content`) |
///
/// Image data, tool definitions, tool-call arguments and every other member are not scanned.
///
/// **Cost.** Each matcher's keywords are one Aho-Corasick automaton, and the regular
/// expressions of all matchers one [`RegexSet`] (the `regex` crate: linear time in the text,
/// no backtracking, compiled size capped). A string is run through the automaton of each
/// matcher that has not matched yet (stopping at the first keyword) and through the set once:
/// the cost is linear in the text, times the number of prompt matchers (a handful, from the
/// configuration), and does not grow with the number of keywords. At most
/// [`max_scan_bytes`](PromptWatchBuilder::max_scan_bytes) of text (1 MiB by default) is
/// scanned per request: a keyword past that is not found, and the body's parse stops at the
/// string that used the budget up (a string is read whole before it is scanned; the body
/// itself is bounded by the caller's read cap). Each string is matched on its own (a keyword
/// split across two messages is not found; `^` and `$` anchor to one string's ends).
///
/// Cheap to clone (one `Arc`); set it on
/// [`GenAiConfig::prompt_watch`](super::GenAiConfig::prompt_watch).
///
/// Keywords match anywhere in the text, ignoring ASCII case (`Refund` matches `refund` and
/// `REFUNDS`); for whole words, or case folding beyond ASCII, use a regular expression
/// (`(?i)\brückerstattung\b`).
///
/// ```
/// use llmtrace::genai::{ApiFormat, PromptWatch};
///
/// let watch = PromptWatch::builder()
///     .keywords("legal", ["refund", "lawsuit"])
///     .regex("card", r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b")
///     .build()
///     .unwrap();
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"I want a REFUND"}]}"#;
/// let matched = watch.scan(ApiFormat::OpenAiChat, body);
/// assert_eq!(matched.iter().map(|id| id.as_str()).collect::<Vec<_>>(), ["legal"]);
/// ```
#[derive(Clone)]
pub struct PromptWatch {
    inner: Arc<Inner>,
}

struct Inner {
    /// Matcher ids, in the order they were added.
    ids: Vec<StringValue>,
    /// Each matcher's keywords, as one automaton: `(matcher index, automaton)`.
    keywords: Vec<(usize, AhoCorasick)>,
    regexes: Option<RegexSet>,
    /// For each regular expression of the set, its matcher's index.
    regex_owner: Vec<usize>,
    max_scan_bytes: usize,
}

impl fmt::Debug for PromptWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptWatch")
            .field("ids", &self.inner.ids)
            .field("keyword_automata", &self.inner.keywords.len())
            .field("regexes", &self.inner.regex_owner.len())
            .field("max_scan_bytes", &self.inner.max_scan_bytes)
            .finish()
    }
}

impl PromptWatch {
    /// Starts a watch; add matchers, then [`build`](PromptWatchBuilder::build).
    pub fn builder() -> PromptWatchBuilder {
        PromptWatchBuilder {
            matchers: Vec::new(),
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
        }
    }

    /// The matchers' ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.inner.ids.iter().map(StringValue::as_str)
    }

    /// Text scanned per request at most.
    pub fn max_scan_bytes(&self) -> usize {
        self.inner.max_scan_bytes
    }

    /// The ids of the matchers that match the prompt in `body`, a request body in `format`,
    /// in the order the matchers were added. A body that is not JSON (or is cut short) is
    /// scanned as far as it parses.
    pub fn scan(&self, format: ApiFormat, body: &[u8]) -> Vec<StringValue> {
        let inner = &*self.inner;
        let mut scan = Scan {
            watch: inner,
            budget: inner.max_scan_bytes,
            hits: vec![false; inner.ids.len()],
            missing: inner.ids.len(),
            done: inner.ids.is_empty() || inner.max_scan_bytes == 0,
        };
        if !scan.done {
            let mut de = serde_json::Deserializer::from_slice(body);
            // An error is a body that is not JSON, or the scan stopping early: what was
            // scanned before it counts either way.
            let _ = Top {
                scan: &mut scan,
                members: prompt_members(format),
            }
            .deserialize(&mut de);
        }
        scan.hits
            .iter()
            .zip(&inner.ids)
            .filter(|(hit, _)| **hit)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

/// The top-level members that hold a format's prompt text.
fn prompt_members(format: ApiFormat) -> &'static [&'static str] {
    match format {
        ApiFormat::OpenAiChat => &["messages"],
        ApiFormat::OpenAiCompletions => &["prompt"],
        ApiFormat::OpenAiEmbeddings => &["input"],
        ApiFormat::OpenAiResponses => &["instructions", "input"],
        ApiFormat::AnthropicMessages => &["system", "messages"],
    }
}

// === impl PromptWatchBuilder ===

/// Builds a [`PromptWatch`].
#[derive(Debug, Clone)]
pub struct PromptWatchBuilder {
    matchers: Vec<(String, Vec<String>, Option<String>)>,
    max_scan_bytes: usize,
}

impl PromptWatchBuilder {
    /// A matcher `id` that matches a prompt containing one of `keywords` (ignoring ASCII
    /// case) or, when `regex` is given, matching it.
    pub fn matcher<I, S>(mut self, id: impl Into<String>, keywords: I, regex: Option<&str>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.matchers.push((
            id.into(),
            keywords.into_iter().map(Into::into).collect(),
            regex.map(str::to_owned),
        ));
        self
    }

    /// A matcher `id` that matches a prompt containing one of `keywords`, ignoring ASCII case.
    pub fn keywords<I, S>(self, id: impl Into<String>, keywords: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.matcher(id, keywords, None)
    }

    /// A matcher `id` that matches a prompt one of whose strings matches `regex` (the
    /// `regex` crate's syntax; `(?i)` for case-insensitive).
    pub fn regex(self, id: impl Into<String>, regex: &str) -> Self {
        self.matcher(id, Vec::<String>::new(), Some(regex))
    }

    /// Scans at most this many bytes of prompt text per request (default
    /// [`DEFAULT_MAX_SCAN_BYTES`], 1 MiB).
    pub fn max_scan_bytes(mut self, max: usize) -> Self {
        self.max_scan_bytes = max;
        self
    }

    /// Compiles the matchers. Fails on a matcher with neither keywords nor a regular
    /// expression, an empty keyword, an invalid or too large regular expression, or two
    /// matchers with one id.
    pub fn build(self) -> Result<PromptWatch, PromptWatchError> {
        let mut ids: Vec<StringValue> = Vec::with_capacity(self.matchers.len());
        let mut keywords = Vec::new();
        let (mut regexes, mut regex_owner) = (Vec::new(), Vec::new());
        for (index, (id, words, regex)) in self.matchers.into_iter().enumerate() {
            check_matcher(&id, &words, regex.as_deref())?;
            if ids.iter().any(|known| known.as_str() == id) {
                return Err(PromptWatchError(format!(
                    "two prompt matchers are named `{id}`: give each its own name"
                )));
            }
            if !words.is_empty() {
                let automaton = AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&words)
                    .map_err(|e| PromptWatchError(format!("prompt matcher `{id}`: {e}")))?;
                keywords.push((index, automaton));
            }
            if let Some(regex) = regex {
                regexes.push(regex);
                regex_owner.push(index);
            }
            ids.push(StringValue::from(Arc::<str>::from(id)));
        }
        let regexes = (!regexes.is_empty())
            .then(|| compile_regexes(&regexes))
            .transpose()?;
        Ok(PromptWatch {
            inner: Arc::new(Inner {
                ids,
                keywords,
                regexes,
                regex_owner,
                max_scan_bytes: self.max_scan_bytes,
            }),
        })
    }
}

/// Checks one matcher alone: what [`PromptWatchBuilder::build`] refuses about it.
pub(crate) fn check_matcher(
    id: &str,
    keywords: &[String],
    regex: Option<&str>,
) -> Result<(), PromptWatchError> {
    if keywords.is_empty() && regex.is_none() {
        return Err(PromptWatchError(format!(
            "prompt matcher `{id}` needs keywords or a regex"
        )));
    }
    if keywords.iter().any(String::is_empty) {
        return Err(PromptWatchError(format!(
            "prompt matcher `{id}` has an empty keyword (it would match every prompt)"
        )));
    }
    if let Some(regex) = regex {
        compile_regexes(&[regex])
            .map_err(|e| PromptWatchError(format!("prompt matcher `{id}`: {}", e.0)))?;
    }
    Ok(())
}

fn compile_regexes<S: AsRef<str>>(patterns: &[S]) -> Result<RegexSet, PromptWatchError> {
    RegexSetBuilder::new(patterns)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| PromptWatchError(format!("invalid regex: {e}")))
}

/// A [`PromptWatch`] that cannot be built; the message says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptWatchError(String);

impl fmt::Display for PromptWatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PromptWatchError {}

// === impl Scan ===

/// One request's scan: the text budget left and which matchers have matched.
struct Scan<'w> {
    watch: &'w Inner,
    budget: usize,
    hits: Vec<bool>,
    /// Matchers not matched yet.
    missing: usize,
    /// Out of budget, or everything matched: the parse stops.
    done: bool,
}

impl Scan<'_> {
    /// Scans one decoded string, as much of it as the budget allows.
    fn text(&mut self, s: &str) {
        if self.done {
            return;
        }
        let text = &s[..floor_char_boundary(s, self.budget)];
        self.budget -= text.len();
        let watch = self.watch;
        // One pass per matcher not matched yet, stopping at its first keyword: linear in the
        // text whatever the keywords (an overlapping search over one automaton of every
        // matcher's keywords could report a match per keyword at each position).
        for (matcher, automaton) in &watch.keywords {
            if !self.hits[*matcher] && automaton.is_match(text) {
                self.hit(*matcher);
            }
        }
        if let Some(regexes) = watch.regexes.as_ref().filter(|_| self.missing > 0) {
            for i in regexes.matches(text).iter() {
                self.hit(watch.regex_owner[i]);
            }
        }
        self.done = self.budget == 0 || self.missing == 0;
    }

    fn hit(&mut self, matcher: usize) {
        if !std::mem::replace(&mut self.hits[matcher], true) {
            self.missing -= 1;
        }
    }

    /// Stops the parse once the scan is done.
    fn check<E: de::Error>(&self) -> Result<(), E> {
        if self.done {
            Err(E::custom("prompt scan done"))
        } else {
            Ok(())
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

// === the body, read for its text ===

/// The body: an object whose `members` hold prompt text; the others are skipped unread.
struct Top<'s, 'w> {
    scan: &'s mut Scan<'w>,
    members: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Every occurrence of a repeated member is scanned: which one the provider reads is
        // its business, and a keyword must not hide behind a duplicate.
        while let Some(picked) = map.next_key_seed(PickKey(self.members))? {
            if picked {
                map.next_value_seed(Text(&mut *self.scan))?;
                self.scan.check()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A member name: whether it is one of these.
struct PickKey(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for PickKey {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PickKey {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(self.0.contains(&key))
    }
}

/// Prompt text in any of its shapes: a string is scanned; an array's elements are read the
/// same way; an object is a message or content part, whose `text` and `content` are.
/// Numbers (token arrays), booleans and other members are skipped. Nesting is bounded by
/// the JSON parser's recursion limit.
struct Text<'s, 'w>(&'s mut Scan<'w>);

impl<'de> DeserializeSeed<'de> for Text<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("prompt text")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.0.text(s);
        self.0.check()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Text(&mut *self.0))?.is_some() {
            self.0.check()?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(picked) = map.next_key_seed(PickKey(&["text", "content"]))? {
            if picked {
                map.next_value_seed(Text(&mut *self.0))?;
                self.0.check()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> PromptWatch {
        PromptWatch::builder()
            .keywords("legal", ["refund", "lawsuit"])
            .keywords("fund", ["fund"])
            .regex("card", r"\b\d{4}-\d{4}-\d{4}-\d{4}\b")
            .matcher("both", ["zebra"], Some("(?i)^über"))
            .build()
            .unwrap()
    }

    fn ids(format: ApiFormat, body: &str) -> Vec<String> {
        watch()
            .scan(format, body.as_bytes())
            .iter()
            .map(|id| id.as_str().to_owned())
            .collect()
    }

    fn chat(body: &str) -> Vec<String> {
        ids(ApiFormat::OpenAiChat, body)
    }

    #[test]
    fn keywords_match_decoded_text_ignoring_ascii_case() {
        // Plain, upper case, and hidden behind each kind of JSON escape.
        for content in [
            "I want a refund",
            "REFUND now",
            r"I want a r\u0065fund",
            r"line one\nrefund",
            r#"she said \"refund\""#,
            r"re\/fund? no: \u0072\u0065\u0066\u0075\u006E\u0064",
        ] {
            let body = format!(
                r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{content}"}}]}}"#
            );
            assert!(chat(&body).contains(&"legal".to_owned()), "{content}");
        }
        // One keyword inside another: both matchers see it.
        let body = r#"{"messages":[{"role":"user","content":"Refunds?"}]}"#;
        assert_eq!(chat(body), ["legal", "fund"]);
        assert!(chat(r#"{"messages":[{"role":"user","content":"hello"}]}"#).is_empty());
        // A regex and its matcher's keywords: either matches.
        assert_eq!(chat(r#"{"messages":[{"content":"Über alles"}]}"#), ["both"]);
        assert_eq!(chat(r#"{"messages":[{"content":"a ZEBRA"}]}"#), ["both"]);
        assert_eq!(
            chat(r#"{"messages":[{"content":"x über"}]}"#),
            Vec::<String>::new()
        );
        assert_eq!(
            chat(r#"{"messages":[{"content":"card 4111-1111-1111-1111."}]}"#),
            ["card"]
        );
    }

    #[test]
    fn only_prompt_text_is_scanned() {
        // Content parts: text is scanned, an image's URL is not.
        let body = r#"{"messages":[{"role":"user","content":[
            {"type":"image_url","image_url":{"url":"https://x/refund.png"}},
            {"type":"text","text":"about my lawsuit"}]}]}"#;
        assert_eq!(chat(body), ["legal"]);
        let body = r#"{"messages":[{"role":"user","content":[
            {"type":"image_url","image_url":{"url":"https://x/refund.png"}}]}]}"#;
        assert!(chat(body).is_empty());
        // Model, tool definitions, tool-call arguments, roles, names: not prompt text.
        let body = r#"{"model":"refund","user":"refund","tools":[{"type":"function",
            "function":{"name":"refund","description":"refund"}}],
            "messages":[{"role":"assistant","name":"refund","content":null,
            "tool_calls":[{"id":"1","type":"function","function":{"name":"refund","arguments":"{\"refund\":1}"}}]}]}"#;
        assert!(chat(body).is_empty());
        // A repeated member: both occurrences are scanned.
        let body = r#"{"messages":[{"content":"hi"}],"messages":[{"content":"lawsuit"}]}"#;
        assert_eq!(chat(body), ["legal"]);
        // A body cut short, or not JSON: as far as it parses.
        assert_eq!(
            chat(r#"{"messages":[{"content":"lawsuit"},{"content":"#),
            ["legal"]
        );
        assert!(chat("refund").is_empty());
        assert!(chat(r#"["refund"]"#).is_empty());
    }

    #[test]
    fn each_format_keeps_its_prompt_in_its_own_members() {
        use ApiFormat::*;
        for (format, body) in [
            (OpenAiCompletions, r#"{"prompt":"a lawsuit"}"#),
            (OpenAiCompletions, r#"{"prompt":["x","a lawsuit"]}"#),
            (OpenAiEmbeddings, r#"{"input":["x","a lawsuit"]}"#),
            (OpenAiResponses, r#"{"input":"a lawsuit"}"#),
            (
                OpenAiResponses,
                r#"{"instructions":"mention the lawsuit","input":"hi"}"#,
            ),
            (
                OpenAiResponses,
                r#"{"input":[{"role":"user","content":[{"type":"input_text","text":"a lawsuit"}]}]}"#,
            ),
            (AnthropicMessages, r#"{"system":"a lawsuit","messages":[]}"#),
            (
                AnthropicMessages,
                r#"{"system":[{"type":"text","text":"a lawsuit"}],"messages":[]}"#,
            ),
            (
                AnthropicMessages,
                r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a lawsuit"}]}]}"#,
            ),
            (
                AnthropicMessages,
                r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t",
                    "content":[{"type":"text","text":"a lawsuit"}]}]}]}"#,
            ),
        ] {
            assert_eq!(ids(format, body), ["legal"], "{format:?} {body}");
        }
        for (format, body) in [
            // Token arrays, another format's members, tool inputs.
            (
                OpenAiCompletions,
                r#"{"prompt":[[1,2,3]],"messages":[{"content":"lawsuit"}]}"#,
            ),
            (OpenAiEmbeddings, r#"{"prompt":"lawsuit","input":[1,2]}"#),
            (
                OpenAiChat,
                r#"{"input":"lawsuit","prompt":"lawsuit","system":"lawsuit"}"#,
            ),
            (
                AnthropicMessages,
                r#"{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t",
                    "name":"lawsuit","input":{"q":"lawsuit"}}]}]}"#,
            ),
        ] {
            assert!(ids(format, body).is_empty(), "{format:?} {body}");
        }
    }

    #[test]
    fn at_most_max_scan_bytes_of_text_are_scanned() {
        let watch = PromptWatch::builder()
            .keywords("legal", ["refund"])
            .max_scan_bytes(16)
            .build()
            .unwrap();
        let scan = |content: &str| {
            let body = format!(r#"{{"messages":[{{"content":"{content}"}}]}}"#);
            !watch
                .scan(ApiFormat::OpenAiChat, body.as_bytes())
                .is_empty()
        };
        assert!(scan("0123456789refund"), "within the first 16 bytes");
        assert!(!scan("0123456789Xrefund"), "past them");
        // The budget is over all strings, and a cut never splits a character.
        let body = r#"{"messages":[{"content":"0123456789"},{"content":"ééé refund"}]}"#;
        assert!(
            watch
                .scan(ApiFormat::OpenAiChat, body.as_bytes())
                .is_empty()
        );
        assert_eq!(floor_char_boundary("ééé", 3), 2);
        assert_eq!(floor_char_boundary("ééé", 0), 0);
        assert_eq!(floor_char_boundary("ééé", 9), 6);
    }

    /// A multi-megabyte prompt: the default bound stops the scan (and the parse) after
    /// 1 MiB of text, however many keywords there are.
    #[test]
    fn a_multi_megabyte_prompt_is_scanned_up_to_the_bound() {
        let many: Vec<String> = (0..10_000).map(|i| format!("needle{i:05}")).collect();
        let watch = PromptWatch::builder()
            .keywords("many", many)
            .keywords("late", ["refund"])
            .regex("re", "(?i)lawsuit")
            .build()
            .unwrap();
        let filler = "lorem ipsum dolor sit amet ".repeat(8 * 1024 * 1024 / 27);
        let body = format!(
            r#"{{"messages":[{{"content":"needle09999 {filler}"}},{{"content":"refund lawsuit"}}]}}"#
        );
        assert!(body.len() > 8 * 1024 * 1024);
        let inner = &*watch.inner;
        let mut scan = Scan {
            watch: inner,
            budget: inner.max_scan_bytes,
            hits: vec![false; 3],
            missing: 3,
            done: false,
        };
        let mut de = serde_json::Deserializer::from_slice(body.as_bytes());
        let stopped = Top {
            scan: &mut scan,
            members: prompt_members(ApiFormat::OpenAiChat),
        }
        .deserialize(&mut de);
        assert!(stopped.is_err(), "the parse stops at the bound");
        assert_eq!(scan.budget, 0);
        assert_eq!(scan.hits, [true, false, false]);
        let ids = watch.scan(ApiFormat::OpenAiChat, body.as_bytes());
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].as_str(), "many");
    }

    #[test]
    fn a_watch_that_cannot_work_is_refused() {
        let err = |b: PromptWatchBuilder| b.build().unwrap_err().to_string();
        assert!(
            err(PromptWatch::builder().keywords("a", Vec::<String>::new()))
                .contains("needs keywords or a regex")
        );
        assert!(err(PromptWatch::builder().keywords("a", ["x", ""])).contains("empty keyword"));
        assert!(err(PromptWatch::builder().regex("a", "(")).contains("invalid regex"));
        assert!(
            err(PromptWatch::builder().regex("a", r"\w{1000}{1000}")).contains("invalid regex")
        );
        assert!(
            err(PromptWatch::builder().keywords("a", ["x"]).regex("a", "y"))
                .contains("two prompt matchers are named `a`")
        );
        let empty = PromptWatch::builder().build().unwrap();
        assert!(
            empty
                .scan(ApiFormat::OpenAiChat, br#"{"messages":[]}"#)
                .is_empty()
        );
    }
}
