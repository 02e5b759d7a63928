//! A compact terminal waterfall of finished spans, one trace after another.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry_sdk::trace::SpanData;

const BAR_WIDTH: usize = 40;

/// Renders `spans` as indented trees, one per trace, with a time bar per span.
pub fn render(spans: &[SpanData]) -> String {
    let mut out = String::new();
    // Traces in the order they started.
    let mut by_start: Vec<&SpanData> = spans.iter().collect();
    by_start.sort_by_key(|s| s.start_time);
    let mut traces = Vec::new();
    for span in by_start {
        let id = span.span_context.trace_id();
        if !traces.contains(&id) {
            traces.push(id);
        }
    }
    for trace in traces {
        let in_trace: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .collect();
        let start = in_trace.iter().map(|s| s.start_time).min().unwrap();
        let end = in_trace.iter().map(|s| s.end_time).max().unwrap();
        let total = end
            .duration_since(start)
            .unwrap_or_default()
            .max(Duration::from_micros(1));
        let _ = writeln!(out, "trace {trace}  ({})", ms(total));
        let ids: Vec<SpanId> = in_trace.iter().map(|s| s.span_context.span_id()).collect();
        let mut roots: Vec<&SpanData> = in_trace
            .iter()
            .copied()
            .filter(|s| !ids.contains(&s.parent_span_id))
            .collect();
        roots.sort_by_key(|s| s.start_time);
        for root in roots {
            write_span(&mut out, root, &in_trace, 0, start, total);
        }
    }
    out
}

fn write_span(
    out: &mut String,
    span: &SpanData,
    all: &[&SpanData],
    depth: usize,
    t0: SystemTime,
    total: Duration,
) {
    let offset = span.start_time.duration_since(t0).unwrap_or_default();
    let length = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or_default();
    let from = (offset.as_secs_f64() / total.as_secs_f64() * BAR_WIDTH as f64) as usize;
    let width = ((length.as_secs_f64() / total.as_secs_f64() * BAR_WIDTH as f64).ceil() as usize)
        .clamp(1, BAR_WIDTH - from.min(BAR_WIDTH - 1));
    let bar = format!(
        "{}{}",
        " ".repeat(from.min(BAR_WIDTH - 1)),
        "█".repeat(width)
    );
    let kind = match span.span_kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
        SpanKind::Internal => "INTERNAL",
    };
    let status = match &span.status {
        Status::Error { description } if description.is_empty() => " ERROR".to_owned(),
        Status::Error { description } => format!(" ERROR: {description}"),
        _ => String::new(),
    };
    let name = format!("{}{}", "  ".repeat(depth), span.name);
    let _ = writeln!(
        out,
        "  {name:<48} {kind:<8} {:>10}  |{bar:<BAR_WIDTH$}|{status}",
        ms(length)
    );
    let mut children: Vec<&SpanData> = all
        .iter()
        .copied()
        .filter(|s| s.parent_span_id == span.span_context.span_id())
        .collect();
    children.sort_by_key(|s| s.start_time);
    for child in children {
        write_span(out, child, all, depth + 1, t0, total);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
