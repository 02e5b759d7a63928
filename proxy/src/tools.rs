//! Tool calls between two LLM exchanges, inferred by the gateway: an answer asks for tool
//! calls (OpenAI `tool_calls`, Responses `function_call`, Anthropic `tool_use`); a later
//! request carries their results under the same ids. The time between is the tool's run (and
//! the client's own work around it): an `execute_tool {name}` span in the trace of the
//! request that carries the results, linked to the GenAI span that asked.
//!
//! Pending calls are bounded by count ([`MAX_PENDING`]) and age ([`MAX_AGE`]); ids are the
//! provider's, names are cut to 128 bytes by the core.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use llmtrace::semconv::{gen_ai, llmtrace as names};

/// Tool calls awaiting their results at most; the oldest goes first.
pub const MAX_PENDING: usize = 10_000;
/// A tool call whose result has not come after this is forgotten.
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// One call awaiting its result.
#[derive(Debug, Clone)]
struct Pending {
    name: String,
    asked_by: SpanContext,
    handed_at: SystemTime,
}

#[derive(Debug, Default)]
struct Book {
    pending: HashMap<String, Pending>,
    /// `(id, handed_at)` in the order they came: the front is the oldest.
    order: VecDeque<(String, SystemTime)>,
}

/// The pending tool calls of every exchange through the gateway.
#[derive(Debug, Default)]
pub struct ToolCalls {
    book: Mutex<Book>,
}

impl ToolCalls {
    /// An answer ended at `at` asking for `calls` (`(id, name)`), from the GenAI span
    /// `asked_by`.
    pub fn asked(&self, calls: &[(String, String)], asked_by: &SpanContext, at: SystemTime) {
        if calls.is_empty() || !asked_by.is_valid() {
            return;
        }
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        for (id, name) in calls {
            book.order.push_back((id.clone(), at));
            book.pending.insert(
                id.clone(),
                Pending {
                    name: name.clone(),
                    asked_by: asked_by.clone(),
                    handed_at: at,
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
                book.pending.remove(&id);
            }
        }
    }

    /// A request that arrived at `arrived`, under `parent` (its SERVER span), carries the
    /// results of `ids`: an `execute_tool` span for each call the gateway saw asked. Returns
    /// how many.
    pub fn answered<T: Tracer>(
        &self,
        tracer: &T,
        ids: &[String],
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
                .filter_map(|id| Some((id.clone(), book.pending.remove(id)?)))
                .collect()
        };
        for (id, call) in &found {
            Self::span(tracer, id, call, parent, arrived);
        }
        found.len()
    }

    fn span<T: Tracer>(tracer: &T, id: &str, call: &Pending, parent: &Context, arrived: SystemTime)
    where
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
