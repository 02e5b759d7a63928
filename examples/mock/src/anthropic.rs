//! The Anthropic Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

use std::time::Duration;

use axum::response::Response;
use serde_json::{Map, Value};

use crate::config::UsageMode;
use crate::ids;
use crate::json::{J, obj};
use crate::plan::{
    Finish, Interrupt, Output, Plan, PlanInput, ToolChoice, ToolRequest, ToolSpec, words,
};
use crate::respond::{self, Provider, anthropic_error, invalid};
use crate::server::MockRequest;
use crate::timeline::Timeline;

const P: Provider = Provider::Anthropic;

/// Text of a `content` (string or blocks: `text`, `tool_result` with string or block content).
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match b.get("text").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                None => content_text(b.get("content")),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn prompt_tokens(body: &Map<String, Value>, messages: &[Value]) -> u64 {
    words(&content_text(body.get("system")))
        + messages
            .iter()
            .map(|m| words(&content_text(m.get("content"))))
            .sum::<u64>()
}

/// Checks the required fields; returns the model and the messages.
fn validate(
    body: &Map<String, Value>,
    need_max_tokens: bool,
) -> Result<(String, &Vec<Value>), Response> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(P, "model: Field required", None))?;
    if need_max_tokens && body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err(invalid(P, "max_tokens: Field required", None));
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(P, "messages: Field required", None))?;
    Ok((model.to_owned(), messages))
}

fn tool_request(body: &Map<String, Value>, messages: &[Value]) -> ToolRequest {
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(ToolSpec {
                name: t.get("name")?.as_str()?.to_owned(),
                schema: t.get("input_schema").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    let choice = match body.get("tool_choice") {
        Some(c) => match c.get("type").and_then(Value::as_str) {
            Some("none") => ToolChoice::None,
            Some("any") => ToolChoice::Required,
            Some("tool") => c
                .get("name")
                .and_then(Value::as_str)
                .map_or(ToolChoice::Required, |n| ToolChoice::Named(n.to_owned())),
            _ => ToolChoice::Auto,
        },
        None => ToolChoice::Auto,
    };
    let is_user = |m: &&Value| m.get("role").and_then(Value::as_str) == Some("user");
    let has_tool_result = |m: &Value| {
        m.get("content").and_then(Value::as_array).is_some_and(|b| {
            b.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        })
    };
    ToolRequest {
        tools,
        choice,
        last_user_text: messages
            .iter()
            .rev()
            .find(is_user)
            .map(|m| content_text(m.get("content")))
            .unwrap_or_default(),
        answered: messages.last().is_some_and(has_tool_result),
    }
}

fn stop_reason(plan: &Plan) -> &'static str {
    match plan.finish {
        _ if plan.is_refusal() => "refusal",
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "refusal",
    }
}

/// Anthropic's `input_tokens` are the prompt tokens neither read from nor written to the cache.
fn usage(plan: &Plan, output_tokens: u64) -> J {
    let u = plan.usage;
    obj! {
        "input_tokens" => u.prompt.saturating_sub(u.cached + u.cache_creation),
        "cache_creation_input_tokens" => u.cache_creation,
        "cache_read_input_tokens" => u.cached,
        "output_tokens" => output_tokens,
        "service_tier" => "standard",
    }
}

pub(crate) async fn messages(req: MockRequest) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let body = match req.object(P) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (model, messages) = match validate(body, true) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let plan = Plan::new(
        &req.controls,
        PlanInput {
            prompt_tokens: prompt_tokens(body, messages),
            max_tokens: body.get("max_tokens").and_then(Value::as_u64),
            tools: tool_request(body, messages),
            refusal: true,
        },
    );
    let id = ids::base62("msg_01", 22);
    let tool_id = ids::base62("toolu_01", 22);
    let with_usage = plan.usage_mode != UsageMode::Never;
    let output_tokens = plan.usage.completion(1);

    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let content = match plan.tool() {
            Some(call) => obj! {
                "type" => "tool_use",
                "id" => &tool_id,
                "name" => &call.name,
                "input" => serde_json::from_str::<Value>(&call.arguments).unwrap_or_default(),
            },
            None => obj! { "type" => "text", "text" => plan.text() },
        };
        let mut out = obj! {
            "id" => &id,
            "type" => "message",
            "role" => "assistant",
            "model" => &model,
            "content" => vec![content],
            "stop_reason" => stop_reason(&plan),
            "stop_sequence" => J::Null,
        };
        if with_usage {
            out.push("usage", usage(&plan, output_tokens));
        }
        return req.answer(P, plan.end(), plan.interrupt, &out).await;
    }

    let mut tl = Timeline::new();
    let zero = Duration::ZERO;
    let mut message = obj! {
        "id" => &id,
        "type" => "message",
        "role" => "assistant",
        "model" => &model,
        "content" => J::A(vec![]),
        "stop_reason" => J::Null,
        "stop_sequence" => J::Null,
    };
    if with_usage {
        message.push("usage", usage(&plan, 1));
    }
    tl.event(
        zero,
        "message_start",
        &obj! { "type" => "message_start", "message" => message },
    );
    let block = match plan.tool() {
        Some(call) => {
            obj! { "type" => "tool_use", "id" => &tool_id, "name" => &call.name, "input" => obj! {} }
        }
        None => obj! { "type" => "text", "text" => "" },
    };
    let block_start =
        obj! { "type" => "content_block_start", "index" => 0u64, "content_block" => block };
    let ping = obj! { "type" => "ping" };
    if plan.tool().is_some() {
        // A tool_use block starts when the model decides to call (step 0).
        tl.event(zero, "ping", &ping);
        tl.event(plan.at(0), "content_block_start", &block_start);
    } else {
        tl.event(zero, "content_block_start", &block_start);
        tl.event(zero, "ping", &ping);
    }
    let (steps, interrupt) = plan.sent_steps();
    for step in steps {
        let delta = match &plan.output {
            Output::Tool(_) if step == 0 => continue,
            Output::Tool(_) => {
                obj! { "type" => "input_json_delta", "partial_json" => plan.piece(step) }
            }
            Output::Text(_) | Output::Refusal(_) => {
                obj! { "type" => "text_delta", "text" => plan.piece(step) }
            }
        };
        tl.event(
            plan.at(step),
            "content_block_delta",
            &obj! { "type" => "content_block_delta", "index" => 0u64, "delta" => delta },
        );
    }
    if let Some((at, how)) = interrupt {
        match how {
            Interrupt::Cut => tl.abort(at),
            Interrupt::Truncate => {}
            Interrupt::ErrorEvent => tl.event(
                at,
                "error",
                &anthropic_error("overloaded_error", None, false),
            ),
        }
        return respond::sse(P, tl.into_body(req.started));
    }
    let end = plan.end();
    tl.event(
        end,
        "content_block_stop",
        &obj! { "type" => "content_block_stop", "index" => 0u64 },
    );
    let mut delta = obj! {
        "type" => "message_delta",
        "delta" => obj! { "stop_reason" => stop_reason(&plan), "stop_sequence" => J::Null },
    };
    if with_usage {
        let mut u = usage(&plan, output_tokens);
        if let J::O(fields) = &mut u {
            fields.retain(|(k, _)| *k != "service_tier");
        }
        delta.push("usage", u);
    }
    tl.event(end, "message_delta", &delta);
    tl.event(end, "message_stop", &obj! { "type" => "message_stop" });
    respond::sse(P, tl.into_body(req.started))
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`.
pub(crate) async fn count_tokens(req: MockRequest) -> Response {
    if let Some(r) = req.early_fault(P) {
        return r;
    }
    let body = match req.object(P) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (_, messages) = match validate(body, false) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let out = obj! { "input_tokens" => prompt_tokens(body, messages) };
    respond::json(P, http::StatusCode::OK, &out, Duration::ZERO)
}
