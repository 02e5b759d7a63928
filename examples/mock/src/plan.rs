//! What one answer will be, independent of the provider's format: its tokens, finish reason,
//! usage, timing and interruption. Each provider module renders a [`Plan`] in its own wire format.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::config::{Controls, Fault, UsageMode};

/// The text of the `refusal` fault.
pub const REFUSAL: &str = "I'm sorry, but I can't help with that.";

/// The deterministic text of `n` output tokens: `tok0 tok1 … tok{n-1}`.
///
/// ```
/// assert_eq!(llmtrace_mock::generated_text(3), "tok0 tok1 tok2");
/// ```
pub fn generated_text(n: usize) -> String {
    token_pieces(n).concat()
}

/// The `n` pieces of [`generated_text`], one per streamed event: `["tok0", " tok1", …]`.
pub fn token_pieces(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i == 0 {
                "tok0".to_owned()
            } else {
                format!(" tok{i}")
            }
        })
        .collect()
}

/// Counts prompt tokens the mock's way: whitespace-separated words.
pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The text of a message `content`: a string, or an array of parts with a `text` field.
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A tool the request declares.
#[derive(Clone, Debug)]
pub(crate) struct ToolSpec {
    pub name: String,
    /// JSON Schema of the arguments.
    pub schema: Value,
}

/// The request's `tool_choice`, normalised across providers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ToolChoice {
    None,
    Auto,
    /// OpenAI `required`, Anthropic `any`.
    Required,
    Named(String),
}

/// What the request says about tools.
pub(crate) struct ToolRequest {
    pub tools: Vec<ToolSpec>,
    pub choice: ToolChoice,
    /// The text of the last user message, searched for "tool" or a tool's name.
    pub last_user_text: String,
    /// The conversation ends with a tool result: the model answers in text.
    pub answered: bool,
}

impl ToolRequest {
    pub(crate) fn none() -> Self {
        ToolRequest {
            tools: Vec::new(),
            choice: ToolChoice::Auto,
            last_user_text: String::new(),
            answered: false,
        }
    }

    /// The tool the mock model calls, if any.
    ///
    /// With the `tools` fault: the named or first tool, or an invented `get_weather`. Otherwise
    /// only when tools are declared, the last message is not a tool result, `tool_choice` is
    /// not `none`, and either `tool_choice` demands a tool or the last user message mentions
    /// "tool" or a tool's name.
    fn select(self, forced: bool) -> Option<ToolSpec> {
        let named = |name: &str| self.tools.iter().find(|t| t.name == name).cloned();
        if forced {
            if let ToolChoice::Named(name) = &self.choice {
                if let Some(t) = named(name) {
                    return Some(t);
                }
            }
            return Some(self.tools.first().cloned().unwrap_or_else(|| ToolSpec {
                name: "get_weather".to_owned(),
                schema: json!({
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"]
                }),
            }));
        }
        if self.tools.is_empty() || self.answered {
            return None;
        }
        match &self.choice {
            ToolChoice::None => None,
            ToolChoice::Named(name) => named(name).or_else(|| self.tools.first().cloned()),
            ToolChoice::Required => self.tools.first().cloned(),
            ToolChoice::Auto => {
                let prompt = self.last_user_text.to_lowercase();
                self.tools
                    .iter()
                    .find(|t| prompt.contains(&t.name.to_lowercase()))
                    .or_else(|| {
                        prompt
                            .split(|c: char| !c.is_alphanumeric())
                            .any(|w| w == "tool" || w == "tools")
                            .then(|| &self.tools[0])
                    })
                    .cloned()
            }
        }
    }
}

/// Deterministic arguments for a tool: every property of its schema with a mock value
/// (`"mock"`, `1`, `true`, the first `enum` value, `[]`, `{}`).
fn mock_arguments(schema: &Value) -> String {
    fn value_for(schema: &Value) -> Value {
        if let Some(first) = schema
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return first.clone();
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("integer" | "number") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!("mock"),
        }
    }
    let mut args = Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            args.insert(name.clone(), value_for(prop));
        }
    }
    Value::Object(args).to_string()
}

/// Splits `s` into pieces of at most `n` characters (one streamed fragment each).
fn fragments(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// A tool call the mock model makes.
#[derive(Clone, Debug)]
pub(crate) struct ToolCall {
    pub name: String,
    pub arguments: String,
    /// `arguments` in streamed pieces.
    pub fragments: Vec<String>,
}

/// What the model outputs.
#[derive(Clone, Debug)]
pub(crate) enum Output {
    Text(Vec<String>),
    Refusal(Vec<String>),
    /// Step 0 announces the call; steps 1.. carry the argument fragments.
    Tool(ToolCall),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl Finish {
    pub(crate) fn openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
            Finish::ContentFilter => "content_filter",
        }
    }
}

/// How a stream is interrupted halfway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    Cut,
    Truncate,
    ErrorEvent,
}

impl Interrupt {
    /// The interruption the faults ask for (`cut` wins over `truncate` over `error-event`).
    pub(crate) fn of(controls: &Controls) -> Option<Self> {
        if controls.has(Fault::Cut) {
            Some(Interrupt::Cut)
        } else if controls.has(Fault::Truncate) {
            Some(Interrupt::Truncate)
        } else if controls.has(Fault::ErrorEvent) {
            Some(Interrupt::ErrorEvent)
        } else {
            None
        }
    }
}

/// Token counts of one answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    pub prompt: u64,
    /// Visible output tokens of one choice (= token events).
    pub per_choice: u64,
    pub cached: u64,
    pub cache_creation: u64,
    pub reasoning: u64,
}

impl Usage {
    /// Completion tokens over `choices` choices, reasoning included.
    pub(crate) fn completion(&self, choices: usize) -> u64 {
        self.per_choice * choices as u64 + self.reasoning
    }
}

/// Everything about one answer but its format.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub output: Output,
    pub finish: Finish,
    pub interrupt: Option<Interrupt>,
    pub usage: Usage,
    pub usage_mode: UsageMode,
    ttft: Duration,
    gap: Duration,
    stall: Option<(usize, Duration)>,
}

/// What a provider module learned from the request.
pub(crate) struct PlanInput {
    pub prompt_tokens: u64,
    pub max_tokens: Option<u64>,
    pub tools: ToolRequest,
    /// The endpoint can express a refusal (chat, Responses, Anthropic; not legacy completions).
    pub refusal: bool,
}

impl Plan {
    pub(crate) fn new(controls: &Controls, input: PlanInput) -> Plan {
        let tool = input.tools.select(controls.has(Fault::Tools));
        let wanted = controls.tokens;
        let allowed = input
            .max_tokens
            .map_or(wanted, |m| wanted.min(m.min(usize::MAX as u64) as usize));
        let (output, finish) = if let Some(tool) = tool {
            let arguments = mock_arguments(&tool.schema);
            let call = ToolCall {
                name: tool.name,
                fragments: fragments(&arguments, 4),
                arguments,
            };
            (Output::Tool(call), Finish::ToolCalls)
        } else if input.refusal && controls.has(Fault::Refusal) {
            let pieces = REFUSAL
                .split(' ')
                .enumerate()
                .map(|(i, w)| {
                    if i == 0 {
                        w.to_owned()
                    } else {
                        format!(" {w}")
                    }
                })
                .collect();
            (Output::Refusal(pieces), Finish::Stop)
        } else if controls.has(Fault::ContentFilter) {
            let n = if allowed == 0 { 0 } else { allowed.div_ceil(2) };
            (Output::Text(token_pieces(n)), Finish::ContentFilter)
        } else if allowed < wanted {
            (Output::Text(token_pieces(allowed)), Finish::Length)
        } else {
            (Output::Text(token_pieces(allowed)), Finish::Stop)
        };
        let interrupt = Interrupt::of(controls);
        let mut plan = Plan {
            output,
            finish,
            interrupt,
            usage: Usage {
                prompt: input.prompt_tokens,
                per_choice: 0,
                cached: controls.cached_tokens.min(input.prompt_tokens),
                cache_creation: controls.cache_creation_tokens,
                reasoning: controls.reasoning_tokens,
            },
            usage_mode: controls.usage,
            ttft: controls.ttft,
            gap: controls.gap,
            stall: None,
        };
        plan.usage.per_choice = plan.steps() as u64;
        if controls.has(Fault::Stall) {
            plan.stall = Some((plan.halfway(), controls.stall));
        }
        plan
    }

    /// Token events per choice.
    pub(crate) fn steps(&self) -> usize {
        match &self.output {
            Output::Text(p) | Output::Refusal(p) => p.len(),
            Output::Tool(call) => 1 + call.fragments.len(),
        }
    }

    fn halfway(&self) -> usize {
        self.steps() / 2
    }

    /// When token event `step` is due, counted from the request's arrival.
    pub(crate) fn at(&self, step: usize) -> Duration {
        let mut t = self.ttft + self.gap * step as u32;
        if let Some((from, pause)) = self.stall {
            if step >= from {
                t += pause;
            }
        }
        t
    }

    /// The steps that are sent, and when and how the stream is interrupted (after them).
    pub(crate) fn sent_steps(&self) -> (std::ops::Range<usize>, Option<(Duration, Interrupt)>) {
        match self.interrupt {
            Some(i) => (0..self.halfway(), Some((self.at(self.halfway()), i))),
            None => (0..self.steps(), None),
        }
    }

    /// When the last token is due (the final events follow at once).
    pub(crate) fn end(&self) -> Duration {
        self.at(self.steps().saturating_sub(1))
    }

    /// The piece of text (or refusal) of step `step`.
    pub(crate) fn piece(&self, step: usize) -> &str {
        match &self.output {
            Output::Text(p) | Output::Refusal(p) => &p[step],
            Output::Tool(call) => &call.fragments[step - 1],
        }
    }

    /// The whole visible text (or refusal).
    pub(crate) fn text(&self) -> String {
        match &self.output {
            Output::Text(p) | Output::Refusal(p) => p.concat(),
            Output::Tool(_) => String::new(),
        }
    }

    pub(crate) fn tool(&self) -> Option<&ToolCall> {
        match &self.output {
            Output::Tool(call) => Some(call),
            _ => None,
        }
    }

    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self.output, Output::Refusal(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MockConfig;
    use http::HeaderMap;

    fn controls(faults: &str) -> Controls {
        let mut map = HeaderMap::new();
        map.insert(crate::headers::FAULT, faults.parse().unwrap());
        Controls::new(&MockConfig::default(), &map).unwrap()
    }

    fn input(max: Option<u64>, tools: ToolRequest) -> PlanInput {
        PlanInput {
            prompt_tokens: 5,
            max_tokens: max,
            tools,
            refusal: true,
        }
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let plan = Plan::new(&controls("none"), input(Some(3), ToolRequest::none()));
        assert_eq!(plan.text(), "tok0 tok1 tok2");
        assert_eq!(plan.finish, Finish::Length);
        let plan = Plan::new(&controls("none"), input(Some(16), ToolRequest::none()));
        assert_eq!(plan.finish, Finish::Stop);
        assert_eq!(plan.steps(), 16);
    }

    #[test]
    fn timing_with_stall() {
        let plan = Plan::new(&controls("stall"), input(None, ToolRequest::none()));
        assert_eq!(plan.at(0), Duration::from_millis(50));
        assert_eq!(plan.at(7), Duration::from_millis(50 + 7 * 20));
        assert_eq!(plan.at(8), Duration::from_millis(50 + 8 * 20 + 1000));
    }

    #[test]
    fn tool_selection() {
        let tools = || {
            vec![
                ToolSpec {
                    name: "lookup".into(),
                    schema: json!({"properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}),
                },
                ToolSpec {
                    name: "get_time".into(),
                    schema: json!({}),
                },
            ]
        };
        let req = |text: &str, choice| ToolRequest {
            tools: tools(),
            choice,
            last_user_text: text.into(),
            answered: false,
        };
        assert!(req("hello", ToolChoice::Auto).select(false).is_none());
        assert_eq!(
            req("use a tool", ToolChoice::Auto)
                .select(false)
                .unwrap()
                .name,
            "lookup"
        );
        assert_eq!(
            req("call get_time", ToolChoice::Auto)
                .select(false)
                .unwrap()
                .name,
            "get_time"
        );
        assert!(req("use a tool", ToolChoice::None).select(false).is_none());
        assert_eq!(
            req("hi", ToolChoice::Named("get_time".into()))
                .select(false)
                .unwrap()
                .name,
            "get_time"
        );
        assert_eq!(
            ToolRequest::none().select(true).unwrap().name,
            "get_weather"
        );
        assert_eq!(mock_arguments(&tools()[0].schema), r#"{"n":1,"q":"mock"}"#);
    }
}
