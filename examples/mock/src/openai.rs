//! The OpenAI API: chat completions, completions, embeddings, the Responses API, models.

use std::time::Duration;

use axum::response::Response;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::config::UsageMode;
use crate::ids;
use crate::json::{J, obj};
use crate::plan::{
    Finish, Interrupt, Output, Plan, PlanInput, ToolChoice, ToolRequest, ToolSpec, content_text,
    words,
};
use crate::respond::{self, Provider, invalid, openai_error};
use crate::server::MockRequest;
use crate::timeline::Timeline;

const P: Provider = Provider::OpenAi;

/// The `system_fingerprint` of every chat answer.
pub(crate) const FINGERPRINT: &str = "fp_5d3f1c9b27";

// === request helpers ===

fn flag(body: &Map<String, Value>, key: &str) -> bool {
    body.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn stream_option(body: &Map<String, Value>, key: &str) -> Option<bool> {
    body.get("stream_options")
        .and_then(|o| o.get(key))
        .and_then(Value::as_bool)
}

fn uint(body: &Map<String, Value>, key: &str) -> Option<u64> {
    body.get(key).and_then(Value::as_u64)
}

fn model(body: &Map<String, Value>, deployment: &Option<String>) -> Result<String, Response> {
    match (body.get("model").and_then(Value::as_str), deployment) {
        (Some(m), _) => Ok(m.to_owned()),
        (None, Some(d)) => Ok(d.clone()),
        (None, None) => Err(invalid(P, "you must provide a model parameter", None)),
    }
}

/// Whether the stream ends with a usage chunk.
fn usage_chunk(mode: UsageMode, include_usage: bool) -> bool {
    match mode {
        UsageMode::Auto => include_usage,
        UsageMode::Always => true,
        UsageMode::Never => false,
    }
}

/// Random padding that normalises event sizes, as `stream_options.include_obfuscation` does.
fn obfuscation(piece: &str) -> String {
    ids::base62("", 16usize.saturating_sub(piece.len()).max(1))
}

/// Chat tools: `[{"type": "function", "function": {"name", "parameters"}}]`.
fn chat_tools(tools: Option<&Value>) -> Vec<ToolSpec> {
    tools
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function").unwrap_or(t);
            Some(ToolSpec {
                name: f.get("name")?.as_str()?.to_owned(),
                schema: f.get("parameters").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// `"none" | "auto" | "required" | {"type": "function", "function": {"name"}}` (chat) or
/// `{"type": "function", "name"}` (Responses API).
fn tool_choice(choice: Option<&Value>) -> ToolChoice {
    match choice {
        Some(Value::String(s)) if s == "none" => ToolChoice::None,
        Some(Value::String(s)) if s == "required" => ToolChoice::Required,
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .or_else(|| o.get("name"))
            .and_then(Value::as_str)
            .map_or(ToolChoice::Required, |n| ToolChoice::Named(n.to_owned())),
        _ => ToolChoice::Auto,
    }
}

fn usage_object(plan: &Plan, choices: usize) -> J {
    let u = plan.usage;
    let completion = u.completion(choices);
    obj! {
        "prompt_tokens" => u.prompt,
        "completion_tokens" => completion,
        "total_tokens" => u.prompt + completion,
        "prompt_tokens_details" => obj! { "cached_tokens" => u.cached, "audio_tokens" => 0u64 },
        "completion_tokens_details" => obj! {
            "reasoning_tokens" => u.reasoning,
            "audio_tokens" => 0u64,
            "accepted_prediction_tokens" => 0u64,
            "rejected_prediction_tokens" => 0u64,
        },
    }
}

/// Azure's per-prompt and per-choice content filter verdicts.
fn azure_filters() -> J {
    let safe = || obj! { "filtered" => false, "severity" => "safe" };
    obj! { "hate" => safe(), "self_harm" => safe(), "sexual" => safe(), "violence" => safe() }
}

fn azure_prompt_filters() -> J {
    J::A(vec![
        obj! { "prompt_index" => 0u64, "content_filter_results" => azure_filters() },
    ])
}

/// Streams are scheduled whole before the first byte: keep one answer below a million events.
fn check_size(plan: &Plan, choices: usize) -> Result<(), Response> {
    const MAX_EVENTS: usize = 1_000_000;
    if plan.steps().saturating_mul(choices) > MAX_EVENTS {
        return Err(invalid(
            P,
            &format!(
                "the mock sends at most {MAX_EVENTS} token events per answer (tokens x choices)"
            ),
            None,
        ));
    }
    Ok(())
}

// === chat completions ===

struct Chat {
    id: String,
    created: u64,
    model: String,
    azure: bool,
    n: usize,
    /// One tool call id per choice.
    call_ids: Vec<String>,
}

pub(crate) async fn chat(req: MockRequest, deployment: Option<String>) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let body = match req.object(P) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let model = match model(body, &deployment) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return invalid(
            P,
            "Missing required parameter: 'messages'.",
            Some("messages"),
        );
    };
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_owned);
    let tools = ToolRequest {
        tools: chat_tools(body.get("tools")),
        choice: tool_choice(body.get("tool_choice")),
        last_user_text: messages
            .iter()
            .rev()
            .find(|m| role(m).as_deref() == Some("user"))
            .map(|m| content_text(m.get("content")))
            .unwrap_or_default(),
        answered: messages.last().and_then(role).as_deref() == Some("tool"),
    };
    let plan = Plan::new(
        &req.controls,
        PlanInput {
            prompt_tokens: messages
                .iter()
                .map(|m| words(&content_text(m.get("content"))))
                .sum(),
            max_tokens: uint(body, "max_completion_tokens").or_else(|| uint(body, "max_tokens")),
            tools,
            refusal: true,
        },
    );
    let n = uint(body, "n").unwrap_or(1).clamp(1, 128) as usize;
    if let Err(r) = check_size(&plan, n) {
        return r;
    }
    let chat = Chat {
        id: ids::base62("chatcmpl-", 29),
        created: ids::unix_now(),
        model,
        azure: deployment.is_some(),
        n,
        call_ids: (0..n).map(|_| ids::base62("call_", 24)).collect(),
    };
    if flag(body, "stream") {
        let with_usage = usage_chunk(
            plan.usage_mode,
            stream_option(body, "include_usage") == Some(true),
        );
        let obfuscate = stream_option(body, "include_obfuscation") != Some(false);
        chat_stream(&req, &plan, &chat, with_usage, obfuscate)
    } else {
        let body = chat_body(&plan, &chat);
        req.answer(P, plan.end(), plan.interrupt, &body).await
    }
}

fn chat_body(plan: &Plan, chat: &Chat) -> J {
    let choices = (0..chat.n)
        .map(|i| {
            let mut message = obj! { "role" => "assistant" };
            match &plan.output {
                Output::Text(_) => {
                    message.push("content", plan.text());
                    message.push("refusal", J::Null);
                }
                Output::Refusal(_) => {
                    message.push("content", J::Null);
                    message.push("refusal", plan.text());
                }
                Output::Tool(call) => {
                    message.push("content", J::Null);
                    message.push(
                        "tool_calls",
                        vec![obj! {
                            "id" => &chat.call_ids[i],
                            "type" => "function",
                            "function" => obj! { "name" => &call.name, "arguments" => &call.arguments },
                        }],
                    );
                    message.push("refusal", J::Null);
                }
            }
            message.push("annotations", J::A(vec![]));
            let mut choice = obj! {
                "index" => i,
                "message" => message,
                "logprobs" => J::Null,
                "finish_reason" => plan.finish.openai(),
            };
            if chat.azure {
                choice.push("content_filter_results", azure_filters());
            }
            choice
        })
        .collect::<Vec<_>>();
    let mut body = obj! {
        "id" => &chat.id,
        "object" => "chat.completion",
        "created" => chat.created,
        "model" => &chat.model,
        "choices" => choices,
    };
    if plan.usage_mode != UsageMode::Never {
        body.push("usage", usage_object(plan, chat.n));
    }
    if chat.azure {
        body.push("prompt_filter_results", azure_prompt_filters());
    }
    body.push("service_tier", "default");
    body.push("system_fingerprint", FINGERPRINT);
    body
}

fn chat_stream(
    req: &MockRequest,
    plan: &Plan,
    chat: &Chat,
    with_usage: bool,
    obfuscate: bool,
) -> Response {
    let chunk = |choices: Vec<J>, usage: J| {
        let mut c = obj! {
            "id" => &chat.id,
            "object" => "chat.completion.chunk",
            "created" => chat.created,
            "model" => &chat.model,
            "service_tier" => "default",
            "system_fingerprint" => FINGERPRINT,
            "choices" => choices,
        };
        // With include_usage every chunk carries `usage`, null but on the last.
        if with_usage {
            c.push("usage", usage);
        }
        c
    };
    let choice = |i: usize, delta: J, finish: Option<&str>| {
        let mut c = obj! { "index" => i, "delta" => delta, "logprobs" => J::Null, "finish_reason" => finish };
        if chat.azure {
            c.push(
                "content_filter_results",
                if finish.is_some() {
                    obj! {}
                } else {
                    azure_filters()
                },
            );
        }
        c
    };
    let mut tl = Timeline::new();
    let first = plan.at(0);
    if chat.azure {
        // Azure opens with a chunk of prompt filter verdicts and no choices.
        tl.data(
            first,
            &obj! {
                "choices" => J::A(vec![]),
                "created" => 0u64,
                "id" => "",
                "model" => "",
                "object" => "",
                "prompt_filter_results" => azure_prompt_filters(),
            },
        );
    }
    for i in 0..chat.n {
        let delta = match &plan.output {
            Output::Text(_) => {
                obj! { "role" => "assistant", "content" => "", "refusal" => J::Null }
            }
            Output::Refusal(_) => {
                obj! { "role" => "assistant", "content" => J::Null, "refusal" => "" }
            }
            Output::Tool(call) => obj! {
                "role" => "assistant",
                "content" => J::Null,
                "tool_calls" => vec![obj! {
                    "index" => 0u64,
                    "id" => &chat.call_ids[i],
                    "type" => "function",
                    "function" => obj! { "name" => &call.name, "arguments" => "" },
                }],
                "refusal" => J::Null,
            },
        };
        tl.data(first, &chunk(vec![choice(i, delta, None)], J::Null));
    }
    let (steps, interrupt) = plan.sent_steps();
    for step in steps {
        if plan.tool().is_some() && step == 0 {
            continue; // announced with the role
        }
        let at = plan.at(step);
        let piece = plan.piece(step);
        for i in 0..chat.n {
            let delta = match &plan.output {
                Output::Text(_) => obj! { "content" => piece },
                Output::Refusal(_) => obj! { "refusal" => piece },
                Output::Tool(_) => obj! {
                    "tool_calls" => vec![obj! { "index" => 0u64, "function" => obj! { "arguments" => piece } }],
                },
            };
            let mut c = chunk(vec![choice(i, delta, None)], J::Null);
            if obfuscate {
                c.push("obfuscation", obfuscation(piece));
            }
            tl.data(at, &c);
        }
    }
    if let Some((at, how)) = interrupt {
        interrupt_openai(&mut tl, at, how);
    } else {
        let end = plan.end();
        for i in 0..chat.n {
            tl.data(
                end,
                &chunk(
                    vec![choice(i, obj! {}, Some(plan.finish.openai()))],
                    J::Null,
                ),
            );
        }
        if with_usage {
            tl.data(end, &chunk(vec![], usage_object(plan, chat.n)));
        }
        tl.raw(end, "data: [DONE]\n\n");
    }
    respond::sse(P, tl.into_body(req.started))
}

/// Ends a chat or completions stream early: abort, stop, or `data: {"error": {...}}`.
fn interrupt_openai(tl: &mut Timeline, at: Duration, how: Interrupt) {
    match how {
        Interrupt::Cut => tl.abort(at),
        Interrupt::Truncate => {}
        Interrupt::ErrorEvent => tl.data(at, &obj! { "error" => openai_error(500, None, None) }),
    }
}

// === completions (legacy) ===

/// The prompts of a completions or embeddings request: a string, strings, tokens, or token
/// arrays; with their token counts.
fn inputs(value: Option<&Value>) -> Option<Vec<(String, u64)>> {
    let one = |v: &Value| match v {
        Value::String(s) => Some((s.clone(), words(s))),
        Value::Array(tokens) if tokens.iter().all(Value::is_number) => Some((
            Value::Array(tokens.clone()).to_string(),
            tokens.len() as u64,
        )),
        _ => None,
    };
    match value? {
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if !items.iter().all(Value::is_number) => {
            items.iter().map(one).collect()
        }
        v => one(v).map(|x| vec![x]),
    }
}
pub(crate) async fn completions(req: MockRequest, deployment: Option<String>) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let body = match req.object(P) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let model = match model(body, &deployment) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(prompts) = inputs(body.get("prompt")) else {
        return invalid(P, "Missing required parameter: 'prompt'.", Some("prompt"));
    };
    let plan = Plan::new(
        &req.controls,
        PlanInput {
            prompt_tokens: prompts.iter().map(|(_, n)| n).sum(),
            max_tokens: uint(body, "max_tokens"),
            tools: ToolRequest::none(),
            refusal: false,
        },
    );
    let choices = prompts.len() * uint(body, "n").unwrap_or(1).clamp(1, 128) as usize;
    if let Err(r) = check_size(&plan, choices) {
        return r;
    }
    let id = ids::base62("cmpl-", 29);
    let created = ids::unix_now();
    let usage = || {
        let completion = plan.usage.completion(choices);
        obj! {
            "prompt_tokens" => plan.usage.prompt,
            "completion_tokens" => completion,
            "total_tokens" => plan.usage.prompt + completion,
        }
    };
    let choice = |i: usize, text: &str, finish: Option<&str>| {
        obj! { "text" => text, "index" => i, "logprobs" => J::Null, "finish_reason" => finish }
    };
    if !flag(body, "stream") {
        let text = plan.text();
        let mut out = obj! {
            "id" => &id,
            "object" => "text_completion",
            "created" => created,
            "model" => &model,
            "choices" => (0..choices).map(|i| choice(i, &text, Some(plan.finish.openai()))).collect::<Vec<_>>(),
        };
        if plan.usage_mode != UsageMode::Never {
            out.push("usage", usage());
        }
        return req.answer(P, plan.end(), plan.interrupt, &out).await;
    }
    let with_usage = usage_chunk(
        plan.usage_mode,
        stream_option(body, "include_usage") == Some(true),
    );
    let chunk = |choices: Vec<J>, usage: J| {
        let mut c = obj! {
            "id" => &id,
            "object" => "text_completion",
            "created" => created,
            "choices" => choices,
            "model" => &model,
        };
        if with_usage {
            c.push("usage", usage);
        }
        c
    };
    let mut tl = Timeline::new();
    let (steps, interrupt) = plan.sent_steps();
    for step in steps {
        for i in 0..choices {
            tl.data(
                plan.at(step),
                &chunk(vec![choice(i, plan.piece(step), None)], J::Null),
            );
        }
    }
    if let Some((at, how)) = interrupt {
        interrupt_openai(&mut tl, at, how);
    } else {
        let end = plan.end();
        for i in 0..choices {
            tl.data(
                end,
                &chunk(vec![choice(i, "", Some(plan.finish.openai()))], J::Null),
            );
        }
        if with_usage {
            tl.data(end, &chunk(vec![], usage()));
        }
        tl.raw(end, "data: [DONE]\n\n");
    }
    respond::sse(P, tl.into_body(req.started))
}

// === embeddings ===

/// A deterministic unit vector for `input`.
pub(crate) fn embedding(input: &str, dimensions: usize) -> Vec<f32> {
    // FNV-1a of the input seeds the sequence.
    let seed = input.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let raw: Vec<f64> = (0..dimensions as u64)
        .map(|j| {
            (ids::splitmix64(seed ^ j.wrapping_mul(0x9E37_79B9)) >> 11) as f64 / (1u64 << 53) as f64
                * 2.0
                - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

pub(crate) async fn embeddings(req: MockRequest, deployment: Option<String>) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let body = match req.object(P) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let model = match model(body, &deployment) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(items) = inputs(body.get("input")) else {
        return invalid(
            P,
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            Some("input"),
        );
    };
    let dimensions = uint(body, "dimensions").map_or_else(
        || {
            if model.contains("3-large") {
                3072
            } else {
                1536
            }
        },
        |d| d.clamp(1, 16_384) as usize,
    );
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return invalid(
                P,
                &format!(
                    "Invalid value for 'encoding_format': {other:?}; expected 'float' or 'base64'."
                ),
                Some("encoding_format"),
            );
        }
    };
    let data = items
        .iter()
        .enumerate()
        .map(|(i, (text, _))| {
            let vector = embedding(text, dimensions);
            let value = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                J::S(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                J::A(vector.into_iter().map(J::F32).collect())
            };
            obj! { "object" => "embedding", "index" => i, "embedding" => value }
        })
        .collect::<Vec<_>>();
    let prompt: u64 = items.iter().map(|(_, n)| n).sum();
    let out = obj! {
        "object" => "list",
        "data" => data,
        "model" => &model,
        "usage" => obj! { "prompt_tokens" => prompt, "total_tokens" => prompt },
    };
    req.answer(P, req.controls.ttft, Interrupt::of(&req.controls), &out)
        .await
}

// === Responses API ===

struct Resp<'a> {
    id: String,
    created: u64,
    model: String,
    body: &'a Map<String, Value>,
    item_id: String,
    call_id: String,
}

impl Resp<'_> {
    /// The `response` object in a state.
    fn object(&self, status: &str, incomplete: Option<&str>, output: Vec<J>, usage: J) -> J {
        let echo = |k: &str, default: J| self.body.get(k).cloned().map_or(default, J::V);
        obj! {
            "id" => &self.id,
            "object" => "response",
            "created_at" => self.created,
            "status" => status,
            "background" => false,
            "error" => J::Null,
            "incomplete_details" => incomplete.map(|r| obj! { "reason" => r }),
            "instructions" => echo("instructions", J::Null),
            "max_output_tokens" => echo("max_output_tokens", J::Null),
            "max_tool_calls" => J::Null,
            "model" => &self.model,
            "output" => output,
            "parallel_tool_calls" => true,
            "previous_response_id" => echo("previous_response_id", J::Null),
            "prompt_cache_key" => J::Null,
            "reasoning" => obj! { "effort" => J::Null, "summary" => J::Null },
            "safety_identifier" => J::Null,
            "service_tier" => "default",
            "store" => echo("store", J::Bool(true)),
            "temperature" => echo("temperature", J::F(1.0)),
            "text" => obj! { "format" => obj! { "type" => "text" }, "verbosity" => "medium" },
            "tool_choice" => echo("tool_choice", J::from("auto")),
            "tools" => echo("tools", J::A(vec![])),
            "top_logprobs" => 0u64,
            "top_p" => echo("top_p", J::F(1.0)),
            "truncation" => "disabled",
            "usage" => usage,
            "user" => J::Null,
            "metadata" => echo("metadata", obj! {}),
        }
    }

    fn part(&self, plan: &Plan, text: &str) -> J {
        if plan.is_refusal() {
            obj! { "type" => "refusal", "refusal" => text }
        } else {
            obj! { "type" => "output_text", "annotations" => J::A(vec![]), "logprobs" => J::A(vec![]), "text" => text }
        }
    }

    /// The output item: a message, or a function call.
    fn item(&self, plan: &Plan, status: &str, done: bool) -> J {
        match plan.tool() {
            Some(call) => obj! {
                "id" => &self.item_id,
                "type" => "function_call",
                "status" => status,
                "arguments" => if done { call.arguments.as_str() } else { "" },
                "call_id" => &self.call_id,
                "name" => &call.name,
            },
            None => obj! {
                "id" => &self.item_id,
                "type" => "message",
                "status" => status,
                "content" => if done { vec![self.part(plan, &plan.text())] } else { vec![] },
                "role" => "assistant",
            },
        }
    }
}

/// `(status, incomplete reason)` of a finished response.
fn response_status(finish: Finish) -> (&'static str, Option<&'static str>) {
    match finish {
        Finish::Stop | Finish::ToolCalls => ("completed", None),
        Finish::Length => ("incomplete", Some("max_output_tokens")),
        Finish::ContentFilter => ("incomplete", Some("content_filter")),
    }
}

fn responses_usage(plan: &Plan) -> J {
    if plan.usage_mode == UsageMode::Never {
        return J::Null;
    }
    let u = plan.usage;
    let output = u.completion(1);
    obj! {
        "input_tokens" => u.prompt,
        "input_tokens_details" => obj! { "cached_tokens" => u.cached },
        "output_tokens" => output,
        "output_tokens_details" => obj! { "reasoning_tokens" => u.reasoning },
        "total_tokens" => u.prompt + output,
    }
}

/// Text of Responses API `input` items (messages with string or part content, tool outputs).
fn input_text(item: &Value) -> String {
    match item {
        Value::String(s) => s.clone(),
        _ => match item.get("output") {
            Some(Value::String(s)) => s.clone(),
            _ => content_text(item.get("content")),
        },
    }
}

pub(crate) async fn responses(req: MockRequest) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let body = match req.object(P) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let model = match model(body, &None) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let items: Vec<Value> = match body.get("input") {
        Some(Value::Array(items)) => items.clone(),
        Some(s @ Value::String(_)) => vec![s.clone()],
        _ => return invalid(P, "Missing required parameter: 'input'.", Some("input")),
    };
    let instructions = body
        .get("instructions")
        .and_then(Value::as_str)
        .unwrap_or("");
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_owned);
    let tools = ToolRequest {
        tools: chat_tools(body.get("tools")),
        choice: tool_choice(body.get("tool_choice")),
        last_user_text: items
            .iter()
            .rev()
            .find(|m| m.is_string() || role(m).as_deref() == Some("user"))
            .map(input_text)
            .unwrap_or_default(),
        answered: items
            .last()
            .and_then(|m| m.get("type"))
            .and_then(Value::as_str)
            == Some("function_call_output"),
    };
    let plan = Plan::new(
        &req.controls,
        PlanInput {
            prompt_tokens: words(instructions)
                + items.iter().map(|i| words(&input_text(i))).sum::<u64>(),
            max_tokens: uint(body, "max_output_tokens"),
            tools,
            refusal: true,
        },
    );
    let resp = Resp {
        id: ids::hex("resp_", 48),
        created: ids::unix_now(),
        model,
        body,
        item_id: ids::hex(if plan.tool().is_some() { "fc_" } else { "msg_" }, 48),
        call_id: ids::base62("call_", 24),
    };
    let (status, reason) = response_status(plan.finish);
    if !flag(body, "stream") {
        let out = resp.object(
            status,
            reason,
            vec![resp.item(&plan, status, true)],
            responses_usage(&plan),
        );
        return req.answer(P, plan.end(), plan.interrupt, &out).await;
    }

    let mut tl = Timeline::new();
    let mut seq = 0u64;
    let mut send = |tl: &mut Timeline, at: Duration, kind: &'static str, mut event: J| {
        if let J::O(fields) = &mut event {
            fields.insert(0, ("type", J::from(kind)));
            fields.insert(1, ("sequence_number", J::U(seq)));
        }
        seq += 1;
        tl.event(at, kind, &event);
    };
    let zero = Duration::ZERO;
    send(
        &mut tl,
        zero,
        "response.created",
        obj! { "response" => resp.object("in_progress", None, vec![], J::Null) },
    );
    send(
        &mut tl,
        zero,
        "response.in_progress",
        obj! { "response" => resp.object("in_progress", None, vec![], J::Null) },
    );
    let first = plan.at(0);
    send(
        &mut tl,
        first,
        "response.output_item.added",
        obj! { "output_index" => 0u64, "item" => resp.item(&plan, "in_progress", false) },
    );
    let part_event = |kind: &'static str, text: &str| {
        (
            kind,
            obj! { "item_id" => &resp.item_id, "output_index" => 0u64, "content_index" => 0u64, "part" => resp.part(&plan, text) },
        )
    };
    if plan.tool().is_none() {
        let (kind, e) = part_event("response.content_part.added", "");
        send(&mut tl, first, kind, e);
    }
    let (steps, interrupt) = plan.sent_steps();
    for step in steps {
        let at = plan.at(step);
        match &plan.output {
            Output::Tool(_) if step == 0 => {}
            Output::Tool(_) => send(
                &mut tl,
                at,
                "response.function_call_arguments.delta",
                obj! {
                    "item_id" => &resp.item_id,
                    "output_index" => 0u64,
                    "delta" => plan.piece(step),
                    "obfuscation" => obfuscation(plan.piece(step)),
                },
            ),
            Output::Refusal(_) => send(
                &mut tl,
                at,
                "response.refusal.delta",
                obj! {
                    "item_id" => &resp.item_id,
                    "output_index" => 0u64,
                    "content_index" => 0u64,
                    "delta" => plan.piece(step),
                },
            ),
            Output::Text(_) => send(
                &mut tl,
                at,
                "response.output_text.delta",
                obj! {
                    "item_id" => &resp.item_id,
                    "output_index" => 0u64,
                    "content_index" => 0u64,
                    "delta" => plan.piece(step),
                    "logprobs" => J::A(vec![]),
                    "obfuscation" => obfuscation(plan.piece(step)),
                },
            ),
        }
    }
    if let Some((at, how)) = interrupt {
        match how {
            Interrupt::Cut => tl.abort(at),
            Interrupt::Truncate => {}
            Interrupt::ErrorEvent => send(
                &mut tl,
                at,
                "error",
                obj! {
                    "code" => "server_error",
                    "message" => "The server had an error while processing your request. Sorry about that!",
                    "param" => J::Null,
                },
            ),
        }
        return respond::sse(P, tl.into_body(req.started));
    }
    let end = plan.end();
    let text = plan.text();
    match plan.tool() {
        Some(call) => send(
            &mut tl,
            end,
            "response.function_call_arguments.done",
            obj! {
                "item_id" => &resp.item_id,
                "output_index" => 0u64,
                "arguments" => &call.arguments,
            },
        ),
        None if plan.is_refusal() => send(
            &mut tl,
            end,
            "response.refusal.done",
            obj! {
                "item_id" => &resp.item_id,
                "output_index" => 0u64,
                "content_index" => 0u64,
                "refusal" => &text,
            },
        ),
        None => send(
            &mut tl,
            end,
            "response.output_text.done",
            obj! {
                "item_id" => &resp.item_id,
                "output_index" => 0u64,
                "content_index" => 0u64,
                "text" => &text,
                "logprobs" => J::A(vec![]),
            },
        ),
    }
    if plan.tool().is_none() {
        let (kind, e) = part_event("response.content_part.done", &text);
        send(&mut tl, end, kind, e);
    }
    send(
        &mut tl,
        end,
        "response.output_item.done",
        obj! { "output_index" => 0u64, "item" => resp.item(&plan, status, true) },
    );
    let last = if status == "completed" {
        "response.completed"
    } else {
        "response.incomplete"
    };
    let final_response = resp.object(
        status,
        reason,
        vec![resp.item(&plan, status, true)],
        responses_usage(&plan),
    );
    send(&mut tl, end, last, obj! { "response" => final_response });
    respond::sse(P, tl.into_body(req.started))
}

// === models ===

const OPENAI_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
];
const ANTHROPIC_MODELS: &[(&str, &str)] = &[
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
    ("claude-opus-4-7", "Claude Opus 4.7"),
];

fn openai_model(id: &str) -> J {
    obj! { "id" => id, "object" => "model", "created" => 1_715_367_049u64, "owned_by" => "system" }
}

fn anthropic_model(id: &str, name: &str) -> J {
    obj! { "type" => "model", "id" => id, "display_name" => name, "created_at" => "2025-09-29T00:00:00Z" }
}

/// `GET /v1/models`: the OpenAI list, or Anthropic's when `anthropic-version` is sent.
pub(crate) async fn list_models(req: MockRequest) -> Response {
    if req.headers.contains_key("anthropic-version") {
        if let Some(r) = req.early_fault(Provider::Anthropic) {
            return r;
        }
        let data = ANTHROPIC_MODELS
            .iter()
            .map(|(id, name)| anthropic_model(id, name))
            .collect::<Vec<_>>();
        let body = obj! {
            "data" => data,
            "has_more" => false,
            "first_id" => ANTHROPIC_MODELS[0].0,
            "last_id" => ANTHROPIC_MODELS[ANTHROPIC_MODELS.len() - 1].0,
        };
        return respond::json(
            Provider::Anthropic,
            http::StatusCode::OK,
            &body,
            Duration::ZERO,
        );
    }
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let body = obj! {
        "object" => "list",
        "data" => OPENAI_MODELS.iter().map(|id| openai_model(id)).collect::<Vec<_>>(),
    };
    respond::json(P, http::StatusCode::OK, &body, Duration::ZERO)
}

/// `GET /v1/models/{id}`: any id exists.
pub(crate) async fn get_model(req: MockRequest) -> Response {
    let id = req.uri.path().trim_start_matches("/v1/models/").to_owned();
    if req.headers.contains_key("anthropic-version") {
        let body = anthropic_model(&id, &id);
        return respond::json(
            Provider::Anthropic,
            http::StatusCode::OK,
            &body,
            Duration::ZERO,
        );
    }
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    respond::json(P, http::StatusCode::OK, &openai_model(&id), Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello", 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("world", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn inputs_accept_every_shape() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(inputs(Some(&v(r#""a b c""#))).unwrap()[0].1, 3);
        assert_eq!(inputs(Some(&v(r#"["a", "b c"]"#))).unwrap().len(), 2);
        assert_eq!(
            inputs(Some(&v("[1, 2, 3]"))).unwrap(),
            vec![("[1,2,3]".into(), 3)]
        );
        assert_eq!(inputs(Some(&v("[[1], [2, 3]]"))).unwrap().len(), 2);
        assert!(inputs(Some(&v("[]"))).is_none());
        assert!(inputs(Some(&v("{}"))).is_none());
    }
}
