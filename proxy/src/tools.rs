//! Tool calls between two LLM exchanges, inferred by the gateway: an answer asks for tool
//! calls (OpenAI `tool_calls`, Responses `function_call`, Anthropic `tool_use`); a later
//! request carries their results under the same ids. The time between is the tool's run (and
//! the client's own work around it): an `execute_tool {name}` span in the trace of the
//! request that carries the results, linked to the GenAI span that asked.
//!
//! Pending calls are bounded by count ([`MAX_PENDING`]) and age ([`MAX_AGE`]); ids are the
//! provider's, names are cut to 128 bytes by the core.
//!
//! With content capture on (and only then: the core hands over nothing otherwise), the span
//! also carries the call's arguments (`gen_ai.tool.call.arguments`, as the answer gave them)
//! and its result (`gen_ai.tool.call.result`, as the request carries it), each already
//! bounded by the core's capture cap; the arguments awaiting their result are bounded in
//! total too ([`MAX_PENDING_ARGUMENT_BYTES`]). What was cut marks the span
//! `llmtrace.content.truncated`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use llmtrace::genai::ToolContent;
use llmtrace::semconv::{gen_ai, llmtrace as names};

/// Tool calls awaiting their results at most; the oldest goes first.
pub const MAX_PENDING: usize = 10_000;
/// A tool call whose result has not come after this is forgotten.
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// Bytes of captured arguments held for pending calls at most; a call asked past it keeps
/// none (its span says the content was cut).
pub const MAX_PENDING_ARGUMENT_BYTES: usize = 16 * 1024 * 1024;

/// One call awaiting its result.
#[derive(Debug, Clone)]
struct Pending {
    name: String,
    asked_by: SpanContext,
    handed_at: SystemTime,
    /// The captured arguments (content capture only).
    arguments: Option<String>,
    /// Its arguments were cut (by the core's cap, or not kept for want of room here).
    truncated: bool,
}

impl Pending {
    fn argument_bytes(&self) -> usize {
        self.arguments.as_ref().map_or(0, String::len)
    }
}

#[derive(Debug, Default)]
struct Book {
    pending: HashMap<String, Pending>,
    /// `(id, handed_at)` in the order they came: the front is the oldest.
    order: VecDeque<(String, SystemTime)>,
    /// Bytes of `arguments` in `pending`.
    argument_bytes: usize,
}

impl Book {
    fn insert(&mut self, id: String, call: Pending) {
        self.argument_bytes += call.argument_bytes();
        if let Some(old) = self.pending.insert(id, call) {
            self.argument_bytes -= old.argument_bytes();
        }
    }

    fn remove(&mut self, id: &str) -> Option<Pending> {
        let call = self.pending.remove(id)?;
        self.argument_bytes -= call.argument_bytes();
        Some(call)
    }
}

/// The pending tool calls of every exchange through the gateway.
#[derive(Debug, Default)]
pub struct ToolCalls {
    book: Mutex<Book>,
}

impl ToolCalls {
    /// An answer ended at `at` asking for `calls` (`(id, name)`), from the GenAI span
    /// `asked_by`; `arguments` are their captured arguments (empty unless content capture is
    /// on, see [`Summary::tool_arguments`](llmtrace::genai::Summary::tool_arguments)).
    pub fn asked(
        &self,
        calls: &[(String, String)],
        arguments: &[ToolContent],
        asked_by: &SpanContext,
        at: SystemTime,
    ) {
        if calls.is_empty() || !asked_by.is_valid() {
            return;
        }
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        for (id, name) in calls {
            let captured = arguments.iter().find(|a| a.id == *id);
            let room = MAX_PENDING_ARGUMENT_BYTES.saturating_sub(book.argument_bytes);
            let kept = captured.filter(|a| a.content.len() <= room);
            book.order.push_back((id.clone(), at));
            book.insert(
                id.clone(),
                Pending {
                    name: name.clone(),
                    asked_by: asked_by.clone(),
                    handed_at: at,
                    arguments: kept.map(|a| a.content.clone()),
                    // Cut by the core, or not kept here for want of room.
                    truncated: captured.is_some_and(|a| a.truncated || kept.is_none()),
                },
            );
        }
        Self::evict(&mut book, at);
    }

    /// Drops what is over the count or the age.
    fn evict(book: &mut Book, now: SystemTime) {
        while let Some((id, at)) = book.order.front().cloned() {
            let old = now.duration_since(at).unwrap_or_default() > MAX_AGE;
            if !old && book.pending.len() <= MAX_PENDING && book.order.len() <= 2 * MAX_PENDING {
                break;
            }
            book.order.pop_front();
            // Only when it is this entry's (an id asked again has a later entry).
            if book.pending.get(&id).is_some_and(|p| p.handed_at == at) {
                book.remove(&id);
            }
        }
    }

    /// A request that arrived at `arrived`, under `parent` (its SERVER span), carries the
    /// results of `ids`: an `execute_tool` span for each call the gateway saw asked. `results`
    /// are the results' content (empty unless content capture is on, see
    /// [`RequestInfo::tool_result_content`](llmtrace::genai::RequestInfo::tool_result_content)).
    /// Returns how many.
    pub fn answered<T: Tracer>(
        &self,
        tracer: &T,
        ids: &[String],
        results: &[ToolContent],
        parent: &Context,
        arrived: SystemTime,
    ) -> usize
    where
        T::Span: Send + Sync + 'static,
    {
        if ids.is_empty() {
            return 0;
        }
        let found: Vec<(String, Pending)> = {
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            Self::evict(&mut book, arrived);
            ids.iter()
                .filter_map(|id| Some((id.clone(), book.remove(id)?)))
                .collect()
        };
        for (id, call) in &found {
            let result = results.iter().find(|r| r.id == *id);
            Self::span(tracer, id, call, result, parent, arrived);
        }
        found.len()
    }

    fn span<T: Tracer>(
        tracer: &T,
        id: &str,
        call: &Pending,
        result: Option<&ToolContent>,
        parent: &Context,
        arrived: SystemTime,
    ) where
        T::Span: Send + Sync + 'static,
    {
        let name = if call.name.is_empty() {
            "execute_tool".to_owned()
        } else {
            format!("execute_tool {}", call.name)
        };
        let mut attributes = vec![
            KeyValue::new(gen_ai::OPERATION_NAME, "execute_tool"),
            KeyValue::new(gen_ai::TOOL_CALL_ID, id.to_owned()),
            KeyValue::new(gen_ai::TOOL_TYPE, "function"),
            KeyValue::new(names::INFERRED, "gateway"),
        ];
        if !call.name.is_empty() {
            attributes.push(KeyValue::new(gen_ai::TOOL_NAME, call.name.clone()));
        }
        push_content(&mut attributes, call, result);
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(call.handed_at)
            .with_attributes(attributes)
            .with_links(vec![Link::new(
                call.asked_by.clone(),
                vec![KeyValue::new(names::LINK_KIND, "tool_call")],
                0,
            )])
            .start_with_context(tracer, parent);
        let cx = Context::current_with_span(span);
        cx.span().end_with_timestamp(arrived.max(call.handed_at));
    }
}

/// The captured arguments and result, when content capture gave any (each already bounded by
/// the core), and whether either was cut.
fn push_content(attributes: &mut Vec<KeyValue>, call: &Pending, result: Option<&ToolContent>) {
    if let Some(arguments) = &call.arguments {
        attributes.push(KeyValue::new(
            gen_ai::TOOL_CALL_ARGUMENTS,
            arguments.clone(),
        ));
    }
    if let Some(result) = result {
        attributes.push(KeyValue::new(
            gen_ai::TOOL_CALL_RESULT,
            result.content.clone(),
        ));
    }
    if call.truncated || result.is_some_and(|r| r.truncated) {
        attributes.push(KeyValue::new(names::CONTENT_TRUNCATED, true));
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::noop::NoopTracer;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn asker() -> SpanContext {
        SpanContext::new(
            TraceId::from(1),
            SpanId::from(1),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    fn call(id: &str) -> Vec<(String, String)> {
        vec![(id.to_owned(), "f".to_owned())]
    }

    fn bytes(tools: &ToolCalls) -> usize {
        tools.book.lock().unwrap().argument_bytes
    }

    /// The arguments held for pending calls are counted in and out, and past the budget a
    /// call keeps none and is marked cut.
    #[test]
    fn pending_arguments_are_counted_and_bounded() {
        let tools = ToolCalls::default();
        let now = SystemTime::now();
        let arguments = [ToolContent::new("a", "0123456789", false)];
        tools.asked(&call("a"), &arguments, &asker(), now);
        assert_eq!(bytes(&tools), 10);
        // Asked again under the same id: replaced, not counted twice.
        tools.asked(&call("a"), &arguments, &asker(), now);
        assert_eq!(bytes(&tools), 10);
        let huge = [ToolContent::new(
            "b",
            "x".repeat(MAX_PENDING_ARGUMENT_BYTES),
            false,
        )];
        tools.asked(&call("b"), &huge, &asker(), now);
        assert_eq!(bytes(&tools), 10);
        {
            let book = tools.book.lock().unwrap();
            let b = &book.pending["b"];
            assert!(b.arguments.is_none() && b.truncated);
            assert!(!book.pending["a"].truncated);
        }
        let ids = ["a".to_owned(), "b".to_owned()];
        let answered = tools.answered(&NoopTracer::new(), &ids, &[], &Context::new(), now);
        assert_eq!(answered, 2);
        assert_eq!(bytes(&tools), 0);
        // Evicted by age: counted out too.
        tools.asked(
            &call("c"),
            &[ToolContent::new("c", "xyz", false)],
            &asker(),
            now,
        );
        assert_eq!(bytes(&tools), 3);
        tools.asked(&call("d"), &[], &asker(), now + MAX_AGE * 2);
        assert_eq!(bytes(&tools), 0);
    }
}
