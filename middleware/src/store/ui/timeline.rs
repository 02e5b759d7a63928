//! The trace page's LLM timelines: for each GenAI exchange, when the request went out, the
//! first byte and the first token came, every recorded chunk as a tick, stalls as bands, and
//! the gateway's share of the time beside the provider's.
//!
//! Everything is read from the exported span: `llmtrace.response.time_to_first_byte`,
//! `gen_ai.response.time_to_first_chunk`, `llmtrace.stream.chunk_offsets_ms` (the core's capped
//! chunk series, see `genai::ChunkTimeline`), `llmtrace.stream.stall` events, and the
//! `llmtrace.gateway.*` attributes; the parent SERVER span gives the gateway's whole time.

use std::fmt::Write as _;
use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry::{Array, Value};

use super::html::{esc, format_duration};
use crate::semconv::{gateway, gen_ai, llmtrace};
use crate::store::StoredSpan;
use crate::store::trace::{as_f64, as_i64, find};

/// Exchanges given a timeline per trace (the waterfall shows them all).
const MAX_TIMELINES: usize = 16;
/// Chunk ticks drawn per exchange; a longer series is thinned evenly.
const MAX_DRAWN_TICKS: usize = 1024;
/// Width of the SVG coordinate space; the drawing stretches to the page's width.
const WIDTH: f64 = 1000.0;

/// What one exchange's span says about its timing, in seconds from its start.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Phases {
    pub duration: f64,
    pub first_byte: Option<f64>,
    pub first_token: Option<f64>,
    pub chunks: Option<i64>,
    pub stride: Option<i64>,
    pub offsets: Vec<f64>,
    pub stalls: Vec<(f64, f64)>,
}

impl Phases {
    pub(super) fn of(span: &StoredSpan) -> Self {
        let data = &span.data;
        let attr = |key| find(&data.attributes, key);
        let offsets = match attr(llmtrace::CHUNK_OFFSETS_MS) {
            Some(Value::Array(Array::I64(ms))) => {
                ms.iter().map(|ms| *ms.max(&0) as f64 / 1000.0).collect()
            }
            _ => Vec::new(),
        };
        let stalls = data
            .events
            .iter()
            .filter(|e| e.name == llmtrace::EVENT_STALL)
            .filter_map(|e| {
                let at = e.timestamp.duration_since(data.start_time).ok()?;
                let length = as_f64(find(&e.attributes, llmtrace::STALL_DURATION))?;
                Some((at.as_secs_f64(), length.max(0.0)))
            })
            .collect();
        Self {
            duration: span.duration().as_secs_f64(),
            first_byte: as_f64(attr(llmtrace::TIME_TO_FIRST_BYTE)),
            first_token: as_f64(attr(gen_ai::RESPONSE_TIME_TO_FIRST_CHUNK)),
            chunks: as_i64(attr(llmtrace::STREAM_CHUNKS)),
            stride: as_i64(attr(llmtrace::CHUNK_STRIDE)),
            offsets,
            stalls,
        }
    }

    /// `at` (seconds) as an x coordinate in `[0, WIDTH]`.
    fn x(&self, at: f64) -> f64 {
        if self.duration <= 0.0 {
            return 0.0;
        }
        (at / self.duration * WIDTH).clamp(0.0, WIDTH)
    }
}

/// The LLM timelines of the trace's GenAI CLIENT spans (`rows` in tree order); nothing when
/// it has none.
pub(super) fn llm_timelines(out: &mut String, rows: &[(usize, &StoredSpan)]) {
    let exchanges: Vec<&StoredSpan> = rows
        .iter()
        .map(|(_, span)| *span)
        .filter(|span| span.is_genai_client())
        .collect();
    if exchanges.is_empty() {
        return;
    }
    out.push_str("<section class=\"llm-timelines\"><h2>LLM timeline</h2>");
    for span in exchanges.iter().take(MAX_TIMELINES) {
        let parent = parent_server(span, rows);
        exchange_timeline(out, span, parent);
    }
    if exchanges.len() > MAX_TIMELINES {
        let _ = write!(
            out,
            "<p class=\"muted\">{} more exchanges: see the waterfall.</p>",
            exchanges.len() - MAX_TIMELINES
        );
    }
    out.push_str("</section>");
}

/// The span's parent when it is a SERVER span of the same service: the gateway (or service)
/// that made the call.
fn parent_server<'a>(
    span: &StoredSpan,
    rows: &[(usize, &'a StoredSpan)],
) -> Option<&'a StoredSpan> {
    let parent = span.data.parent_span_id;
    if parent == SpanId::INVALID {
        return None;
    }
    rows.iter()
        .map(|(_, s)| *s)
        .find(|s| s.data.span_context.span_id() == parent)
        .filter(|s| s.data.span_kind == SpanKind::Server && s.service == span.service)
}

fn exchange_timeline(out: &mut String, span: &StoredSpan, parent: Option<&StoredSpan>) {
    let phases = Phases::of(span);
    let id = span.data.span_context.span_id();
    let _ = write!(
        out,
        "<div class=\"timeline\" data-span-id=\"{id}\"><h3><a href=\"#span-{id}\">{}</a> \
         <span class=\"muted\">{}</span></h3>",
        esc(&span.data.name),
        format_duration(span.duration()),
    );
    provider_row(out, &phases);
    if let Some(parent) = parent {
        gateway_row(out, span, parent);
    }
    facts(out, span, &phases);
    out.push_str("</div>");
}

/// The exchange on its own scale: waiting for the first byte, then for the first token,
/// then streaming; a tick per recorded chunk, stalls as red bands.
fn provider_row(out: &mut String, p: &Phases) {
    out.push_str(
        "<div class=\"tl-row\"><div class=\"tl-label\">provider</div><svg class=\"tl\" \
         viewBox=\"0 0 1000 20\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"exchange timeline\">",
    );
    let end = p.duration;
    let byte = p.first_byte.unwrap_or(0.0).clamp(0.0, end.max(0.0));
    let token = p.first_token.map(|t| t.clamp(byte, end));
    segment(out, "wait", 0.0, byte, p, "waiting for the first byte");
    match token {
        Some(token) => {
            segment(out, "head", byte, token, p, "first byte to first token");
            segment(out, "stream", token, end, p, "streaming");
        }
        None => segment(out, "body", byte, end, p, "reading the answer"),
    }
    for (at, length) in &p.stalls {
        let (x0, x1) = (p.x(*at), p.x(at + length));
        let _ = write!(
            out,
            "<rect class=\"stall\" x=\"{x0:.2}\" y=\"0\" width=\"{:.2}\" height=\"20\"><title>stall \
             of {} at +{}</title></rect>",
            (x1 - x0).max(1.0),
            seconds(*length),
            seconds(*at),
        );
    }
    chunk_ticks(out, p);
    if let Some(token) = token {
        let _ = write!(
            out,
            "<line class=\"tl-first-token\" x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"0\" y2=\"20\" \
             data-at=\"{token:.6}\"><title>first token at +{}</title></line>",
            seconds(token),
            x = p.x(token),
        );
    }
    let _ = write!(
        out,
        "</svg><div class=\"dur\">{}</div></div>",
        seconds(p.duration)
    );
}

fn segment(out: &mut String, class: &str, from: f64, to: f64, p: &Phases, what: &str) {
    if to <= from {
        return;
    }
    let (x0, x1) = (p.x(from), p.x(to));
    let _ = write!(
        out,
        "<rect class=\"seg {class}\" x=\"{x0:.2}\" y=\"5\" width=\"{:.2}\" height=\"10\"><title>{what}: \
         {} (+{} to +{})</title></rect>",
        x1 - x0,
        seconds(to - from),
        seconds(from),
        seconds(to),
    );
}

/// One path of vertical strokes: a tick per recorded chunk (thinned past
/// [`MAX_DRAWN_TICKS`]).
fn chunk_ticks(out: &mut String, p: &Phases) {
    if p.offsets.is_empty() {
        return;
    }
    let step = p.offsets.len().div_ceil(MAX_DRAWN_TICKS);
    out.push_str("<path class=\"chunks\" d=\"");
    let last = p.offsets.len() - 1;
    for (i, at) in p.offsets.iter().enumerate() {
        if i % step == 0 || i == last {
            let _ = write!(out, "M{:.1} 2v16", p.x(*at));
        }
    }
    out.push_str("\"/>");
}

/// The caller's whole time (its SERVER span: the gateway's, or a service's when a library
/// client made the call) split into before the call, the call, and after it.
fn gateway_row(out: &mut String, span: &StoredSpan, parent: &StoredSpan) {
    let total = parent.duration().as_secs_f64();
    if total <= 0.0 {
        return;
    }
    let offset = |t: std::time::SystemTime| {
        t.duration_since(parent.data.start_time)
            .unwrap_or_default()
            .as_secs_f64()
            .min(total)
    };
    let call_start = offset(span.data.start_time);
    let call_end = offset(span.data.end_time).max(call_start);
    let (before, after) = (call_start, (total - call_end).max(0.0));
    let share = (before + after) / total * 100.0;
    let scale = Phases {
        duration: total,
        ..Phases::default()
    };
    // In the gateway the rest is its own work; in a service, whatever else the request did.
    let gateway = matches!(
        find(&span.data.attributes, llmtrace::MEASURED_AT),
        Some(Value::String(s)) if s.as_str() == "gateway"
    );
    let (label, whose) = if gateway {
        ("gateway", "the gateway's own time")
    } else {
        ("service", "the rest of the request")
    };
    let _ = write!(
        out,
        "<div class=\"tl-row\"><div class=\"tl-label\">{label}</div><svg class=\"tl\" \
         viewBox=\"0 0 1000 20\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{label} and provider time\">"
    );
    segment(
        out,
        "gw",
        0.0,
        call_start,
        &scale,
        &format!("{label}, before the call"),
    );
    segment(
        out,
        "call",
        call_start,
        call_end,
        &scale,
        "the provider call",
    );
    segment(
        out,
        "gw",
        call_end,
        total,
        &scale,
        &format!("{label}, after the call"),
    );
    let _ = write!(
        out,
        "</svg><div class=\"dur\">{}</div></div><p class=\"tl-split\" data-gateway-share=\"{share:.3}\">\
         {whose} around the call: {} before, {} after; {share:.1} % of the request's {} (<code>{}</code>)</p>",
        seconds(total),
        seconds(before),
        seconds(after),
        seconds(total),
        esc(&parent.data.name),
    );
}

/// The numbers behind the drawing.
fn facts(out: &mut String, span: &StoredSpan, p: &Phases) {
    let attr = |key| find(&span.data.attributes, key);
    out.push_str("<dl class=\"summary tl-facts\">");
    let mut fact = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            let _ = write!(out, "<div><dt>{name}</dt><dd>{}</dd></div>", esc(&value));
        }
    };
    fact(
        "first byte",
        p.first_byte.map(|t| format!("+{}", seconds(t))),
    );
    fact(
        "first token",
        p.first_token.map(|t| format!("+{}", seconds(t))),
    );
    let last = p.offsets.last().copied();
    fact("last chunk", last.map(|t| format!("+{}", seconds(t))));
    fact(
        "chunks",
        p.chunks.map(|n| match p.stride {
            Some(s) if s > 1 => format!("{n} (every {s}th drawn)"),
            _ => n.to_string(),
        }),
    );
    let longest = p
        .stalls
        .iter()
        .map(|(_, l)| *l)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
    fact(
        "stalls",
        as_i64(attr(llmtrace::STALLS)).map(|n| match longest {
            Some(l) => format!("{n} (longest {})", seconds(l)),
            None => n.to_string(),
        }),
    );
    fact("gap p50", as_f64(attr(llmtrace::GAP_P50)).map(seconds));
    fact("gap p99", as_f64(attr(llmtrace::GAP_P99)).map(seconds));
    let micros = |key| as_i64(attr(key)).map(|us| seconds(us as f64 / 1e6));
    fact(
        "routing (head to upstream chosen)",
        micros(gateway::GATEWAY_REQUEST_US),
    );
    fact(
        "upstream connect and head",
        micros(gateway::UPSTREAM_CONNECT_US),
    );
    fact(
        "gateway per chunk, mean",
        micros(gateway::GATEWAY_CHUNK_MEAN_US),
    );
    fact(
        "gateway per chunk, max",
        micros(gateway::GATEWAY_CHUNK_MAX_US),
    );
    out.push_str("</dl>");
}

fn seconds(s: f64) -> String {
    let s = if s.is_finite() {
        s.clamp(0.0, 1e9)
    } else {
        0.0
    };
    format_duration(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Event, TraceId};

    use super::*;
    use crate::store::tests::exchange;
    use crate::store::{StoreConfig, TraceStore};

    /// A 1 s streamed exchange 10 ms into a 1.02 s request: first byte at 100 ms, first token
    /// at 200 ms, chunks every 50 ms to 900 ms but for a stall from 400 ms to 800 ms.
    fn streamed_trace() -> TraceStore {
        let store = TraceStore::new(StoreConfig::default());
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let [mut genai, mut server] = exchange(9, start, "gpt-4o", 1002, 0.2);
        genai.start_time = start + Duration::from_millis(10);
        genai.end_time = genai.start_time + Duration::from_secs(1);
        server.end_time = start + Duration::from_millis(1020);
        let offsets = vec![200i64, 250, 300, 350, 400, 800, 850, 900];
        genai.attributes.extend([
            KeyValue::new(llmtrace::TIME_TO_FIRST_BYTE, 0.1),
            KeyValue::new(llmtrace::STREAM_CHUNKS, 8),
            KeyValue::new(llmtrace::STALLS, 1),
            KeyValue::new(
                llmtrace::CHUNK_OFFSETS_MS,
                Value::Array(Array::I64(offsets)),
            ),
            KeyValue::new(llmtrace::CHUNK_STRIDE, 1),
            KeyValue::new(gateway::GATEWAY_CHUNK_MEAN_US, 35),
        ]);
        genai.events.events.push(Event::new(
            llmtrace::EVENT_STALL,
            genai.start_time + Duration::from_millis(400),
            vec![KeyValue::new(llmtrace::STALL_DURATION, 0.4)],
            0,
        ));
        store.insert(genai, Arc::from("llmtrace-proxy"));
        store.insert(server, Arc::from("llmtrace-proxy"));
        store
    }

    fn page(store: &TraceStore) -> String {
        let id = TraceId::from(9u128).to_string();
        super::super::handle(store, &format!("/ui/traces/{id}"), None)
            .unwrap()
            .into_body()
    }

    fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
        let from = text
            .find(start)
            .unwrap_or_else(|| panic!("{start} in page"))
            + start.len();
        &text[from..from + text[from..].find(end).unwrap()]
    }

    #[test]
    fn an_exchange_shows_its_phases_ticks_stall_and_gateway_share() {
        let html = page(&streamed_trace());
        let timeline = between(&html, "<section class=\"llm-timelines\">", "</section>");
        // Phases on the exchange's own 1 s scale: 0–100 ms waiting, 100–200 ms, then streaming.
        assert!(timeline.contains("class=\"seg wait\" x=\"0.00\" y=\"5\" width=\"100.00\""));
        assert!(timeline.contains("class=\"seg head\" x=\"100.00\" y=\"5\" width=\"100.00\""));
        assert!(timeline.contains("class=\"seg stream\" x=\"200.00\" y=\"5\" width=\"800.00\""));
        // One tick per recorded chunk, at its offset.
        let ticks = between(timeline, "class=\"chunks\" d=\"", "\"");
        assert_eq!(
            ticks,
            "M200.0 2v16M250.0 2v16M300.0 2v16M350.0 2v16M400.0 2v16M800.0 2v16M850.0 2v16M900.0 2v16"
        );
        // The stall: a band from 400 ms, 400 ms wide.
        assert!(timeline.contains("class=\"stall\" x=\"400.00\" y=\"0\" width=\"400.00\""));
        assert!(
            timeline.contains("data-at=\"0.200000\""),
            "first-token line"
        );
        // The gateway: 10 ms before, 10 ms after, of 1.02 s: 1.96 %.
        assert!(
            timeline.contains("data-gateway-share=\"1.961\""),
            "{timeline}"
        );
        assert!(timeline.contains("<dt>gateway per chunk, mean</dt><dd>35 µs</dd>"));
        assert!(timeline.contains("<dt>stalls</dt><dd>1 (longest 400.0 ms)</dd>"));
    }

    #[test]
    fn a_span_without_a_series_still_gets_its_phases() {
        let store = TraceStore::new(StoreConfig::default());
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for span in exchange(9, start, "gpt-4o", 502, 0.1) {
            store.insert(span, Arc::from("svc"));
        }
        let html = page(&store);
        let timeline = between(&html, "<section class=\"llm-timelines\">", "</section>");
        assert!(!timeline.contains("class=\"chunks\""));
        assert!(
            timeline.contains("class=\"seg head\" x=\"0.00\""),
            "{timeline}"
        );
        assert!(timeline.contains("tl-first-token"));
    }

    #[test]
    fn long_series_are_thinned_and_hostile_values_stay_in_bounds() {
        let store = TraceStore::new(StoreConfig::default());
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let [mut genai, server] = exchange(9, start, "gpt-4o", 1002, 0.1);
        let offsets: Vec<i64> = (0..5000).map(|i| i * 1000 - 7).collect();
        genai.attributes.extend([
            KeyValue::new(
                llmtrace::CHUNK_OFFSETS_MS,
                Value::Array(Array::I64(offsets)),
            ),
            KeyValue::new(llmtrace::TIME_TO_FIRST_BYTE, -5.0),
            KeyValue::new(gen_ai::RESPONSE_TIME_TO_FIRST_CHUNK, 1e300),
        ]);
        store.insert(genai, Arc::from("svc"));
        store.insert(server, Arc::from("svc"));
        let html = page(&store);
        let ticks = between(&html, "class=\"chunks\" d=\"", "\"");
        assert!(ticks.matches('M').count() <= MAX_DRAWN_TICKS + 1);
        assert!(!html.contains("NaN") && !html.contains("inf"));
        for x in ticks.split('M').skip(1) {
            let x: f64 = x.split(' ').next().unwrap().parse().unwrap();
            assert!((0.0..=WIDTH).contains(&x));
        }
    }
}
