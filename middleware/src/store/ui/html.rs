//! The viewer's pages, rendered into one `String` each. Every text that comes from a span goes
//! through [`esc`]; numbers are formatted here.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{KeyValue, Value};

use super::super::query::{micros, params};
use super::super::{Query, SortKey, StoredSpan, Summary, Trace, TraceStore};
use crate::store::jaeger::kind_name;

/// Deeper spans are drawn at this depth.
const MAX_INDENT: usize = 24;
/// Event ticks drawn per span bar.
const MAX_TICKS: usize = 256;
/// Seconds between reloads when auto-refresh is on.
const REFRESH_SECONDS: u32 = 5;
/// The links between the pages, and to the application's own (`links`), in every page's
/// header.
pub(super) fn nav(links: &[(String, String)]) -> String {
    let mut nav = String::from(
        "<nav><a href=\"/ui\">traces</a> · <a href=\"/ui/overview\">overview</a> · \
         <a href=\"/ui/map\">map</a>",
    );
    for (label, path) in links {
        let _ = write!(nav, " · <a href=\"{}\">{}</a>", esc(path), esc(label));
    }
    nav.push_str("</nav>");
    nav
}

// === the trace list ===

/// `/ui`: filters, the sortable trace table, auto-refresh.
pub(super) fn list_page(store: &TraceStore, query_string: &str, now: SystemTime) -> String {
    let query = Query::parse(query_string, now);
    let mut refresh = false;
    let mut lookback = String::new();
    for (name, value) in params(query_string) {
        match name.as_str() {
            "refresh" => refresh = value == "on",
            "lookback" => lookback = value,
            _ => {}
        }
    }
    let summaries = store.list(&query);
    let mut out = String::with_capacity(2048 + summaries.len() * 1024);
    head(&mut out, "traces", refresh);
    top_bar(&mut out, store);
    filters(&mut out, &query, &lookback, refresh);
    out.push_str("<table class=\"traces\"><thead><tr>");
    for (label, key) in [
        ("Start (UTC)", Some(SortKey::Start)),
        ("Trace", None),
        ("Model", None),
        ("Route", None),
        ("Status", None),
        ("Duration", Some(SortKey::Duration)),
        ("TTFT", Some(SortKey::Ttft)),
        ("Tokens", Some(SortKey::Tokens)),
        ("Cost", Some(SortKey::Cost)),
        ("Spans", None),
        ("Kept because", None),
    ] {
        column_header(&mut out, label, key, &query, refresh);
    }
    out.push_str("</tr></thead><tbody>");
    for summary in &summaries {
        list_row(&mut out, summary);
    }
    if summaries.is_empty() {
        out.push_str("<tr><td colspan=\"11\" class=\"empty\">No traces match.</td></tr>");
    }
    let _ = write!(
        out,
        "</tbody></table><p class=\"muted\">{} shown (limit {}).</p>",
        summaries.len(),
        query.limit
    );
    foot(&mut out);
    out
}

pub(super) fn top_bar(out: &mut String, store: &TraceStore) {
    let stats = &store.stats();
    let _ = write!(
        out,
        "<header><a class=\"brand\" href=\"/ui\">llmtrace</a>{}<span class=\"stats\">{} traces, \
         {} spans, {} of {} held (at most {} traces); {} evicted, {} dropped</span>\
         </header><main>",
        nav(store.page_links()),
        stats.traces,
        stats.spans,
        format_bytes(stats.bytes),
        format_bytes(stats.max_bytes),
        stats.max_traces,
        stats.evicted_traces,
        stats.dropped_spans + stats.oversized_spans,
    );
}

fn filters(out: &mut String, query: &Query, lookback: &str, refresh: bool) {
    out.push_str("<form class=\"filters\" method=\"get\" action=\"/ui\">");
    let _ = write!(
        out,
        "<label><input type=\"checkbox\" name=\"error\" value=\"1\"{}> errors only</label>",
        checked(query.errors_only)
    );
    let min = query
        .min_duration
        .map(|d| format!("{}ms", d.as_millis()))
        .unwrap_or_default();
    text_input(out, "min_duration", "min duration", "500ms", &min);
    for (name, label, value) in [
        ("model", "model", &query.model),
        ("route", "route", &query.route),
        ("user", "user.id", &query.user),
        ("session", "session.id", &query.session),
    ] {
        text_input(out, name, label, "", value.as_deref().unwrap_or(""));
    }
    out.push_str("<label>since <select name=\"lookback\">");
    for (value, label) in [
        ("", "all"),
        ("5m", "5 min"),
        ("15m", "15 min"),
        ("1h", "1 hour"),
        ("6h", "6 hours"),
    ] {
        let selected = if value == lookback { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{value}\"{selected}>{label}</option>");
    }
    out.push_str("</select></label>");
    let _ = write!(
        out,
        "<input type=\"hidden\" name=\"sort\" value=\"{}\"><input type=\"hidden\" name=\"order\" \
         value=\"{}\"><input type=\"number\" name=\"limit\" min=\"1\" max=\"1000\" value=\"{}\" \
         title=\"limit\"><button type=\"submit\">Filter</button> <a href=\"/ui\">clear</a>\
         <label class=\"refresh\"><input type=\"checkbox\" name=\"refresh\" value=\"on\" \
         data-autosubmit{}> auto-refresh ({REFRESH_SECONDS} s)</label></form>",
        query.sort.name(),
        if query.ascending { "asc" } else { "desc" },
        query.limit,
        checked(refresh),
    );
}

fn text_input(out: &mut String, name: &str, label: &str, placeholder: &str, value: &str) {
    let _ = write!(
        out,
        "<label>{label} <input type=\"text\" name=\"{name}\" size=\"12\" maxlength=\"256\" \
         placeholder=\"{placeholder}\" value=\"{}\"></label>",
        esc(value)
    );
}

fn checked(on: bool) -> &'static str {
    if on { " checked" } else { "" }
}

fn column_header(
    out: &mut String,
    label: &str,
    key: Option<SortKey>,
    query: &Query,
    refresh: bool,
) {
    let Some(key) = key else {
        let class = if label == "Spans" {
            " class=\"num\""
        } else {
            ""
        };
        let _ = write!(out, "<th{class}>{label}</th>");
        return;
    };
    let current = query.sort == key;
    // A click on the sorted column flips the order; another column starts largest first.
    let ascending = current && !query.ascending;
    let mut href = query.to_query_string(key, ascending);
    if refresh {
        href.push_str("&refresh=on");
    }
    let arrow = match (current, query.ascending) {
        (false, _) => "",
        (true, true) => " ▲",
        (true, false) => " ▼",
    };
    let _ = write!(
        out,
        "<th class=\"{}{}\"><a href=\"/ui?{}\" data-sort=\"{}\">{label}{arrow}</a></th>",
        if key == SortKey::Start { "time" } else { "num" },
        if current { " sorted" } else { "" },
        esc(&href),
        key.name()
    );
}

fn list_row(out: &mut String, s: &Summary) {
    let id = s.trace_id.to_string();
    let status = match (s.status_code, s.error) {
        (Some(code), error) => format!("{}{code}", if error { "✗ " } else { "" }),
        (None, true) => "✗ error".to_owned(),
        (None, false) => "ok".to_owned(),
    };
    let _ = write!(
        out,
        "<tr data-trace-id=\"{id}\"{}><td class=\"time\">{}</td><td><a href=\"/ui/traces/{id}\">{}</a>\
         <br><code class=\"muted\">{}</code></td><td>{}</td><td>{}</td><td>{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
        if s.error { " class=\"error\"" } else { "" },
        format_time(s.start),
        esc(&s.name),
        &id[..16],
        esc(s.model.as_deref().unwrap_or("")),
        esc(s.route.as_deref().unwrap_or("")),
        esc(&status),
        format_duration(s.duration()),
        s.ttft
            .map(|t| format_duration(Duration::from_secs_f64(t)))
            .unwrap_or_default(),
        s.tokens.map(|t| t.to_string()).unwrap_or_default(),
        s.cost.map(format_cost).unwrap_or_default(),
        s.spans,
        esc(s.sampling_reason.as_deref().unwrap_or("")),
    );
}

// === one trace ===

/// `/ui/traces/{id}`: the trace's summary, waterfall, and each span's attributes and events.
pub(super) fn trace_page(trace: &Trace, links: &[(String, String)]) -> String {
    let s = &trace.summary;
    let id = s.trace_id.to_string();
    let mut out = String::with_capacity(16 * 1024 + trace.spans.len() * 4096);
    head(&mut out, &format!("trace {id}"), false);
    header(&mut out, links);
    let _ = write!(
        out,
        "<h1>{}</h1><p class=\"trace-id\">trace <code id=\"trace-id\">{id}</code> \
         <button type=\"button\" class=\"copy\" data-copy=\"{id}\">copy</button> \
         <a href=\"/api/traces/{id}\">JSON</a></p><dl class=\"summary\">",
        esc(&s.name)
    );
    let mut fact = |name: &str, value: String| {
        if !value.is_empty() {
            let _ = write!(out, "<div><dt>{name}</dt><dd>{}</dd></div>", esc(&value));
        }
    };
    fact("service", s.service.to_string());
    fact("start", format_time(s.start));
    fact("duration", format_duration(s.duration()));
    fact("spans", s.spans.to_string());
    fact("model", s.model.clone().unwrap_or_default());
    fact(
        "TTFT",
        s.ttft
            .map(|t| format_duration(Duration::from_secs_f64(t)))
            .unwrap_or_default(),
    );
    fact(
        "tokens",
        s.tokens.map(|t| t.to_string()).unwrap_or_default(),
    );
    fact("cost", s.cost.map(format_cost).unwrap_or_default());
    fact("user", s.user.clone().unwrap_or_default());
    fact("session", s.session.clone().unwrap_or_default());
    fact(
        "kept because",
        s.sampling_reason.clone().unwrap_or_default(),
    );
    out.push_str("</dl>");
    let rows = tree(&trace.spans);
    waterfall(&mut out, s, &rows);
    super::timeline::llm_timelines(&mut out, &rows);
    out.push_str("<section class=\"details\"><h2>Spans</h2>");
    for (depth, span) in &rows {
        span_details(&mut out, span, *depth);
    }
    out.push_str("</section>");
    foot(&mut out);
    out
}

/// The spans in tree order (children after their parent, by start time) with their depth;
/// a span whose parent is not in the trace is a root.
fn tree(spans: &[StoredSpan]) -> Vec<(usize, &StoredSpan)> {
    let ids: HashSet<SpanId> = spans
        .iter()
        .map(|s| s.data.span_context.span_id())
        .collect();
    let mut children: HashMap<SpanId, Vec<&StoredSpan>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        let parent = span.data.parent_span_id;
        if parent != SpanId::INVALID
            && parent != span.data.span_context.span_id()
            && ids.contains(&parent)
        {
            children.entry(parent).or_default().push(span);
        } else {
            roots.push(span);
        }
    }
    let by_start = |list: &mut Vec<&StoredSpan>| list.sort_by_key(|s| s.data.start_time);
    by_start(&mut roots);
    children.values_mut().for_each(by_start);
    let mut rows = Vec::with_capacity(spans.len());
    let mut seen = HashSet::new();
    let mut stack: Vec<(usize, &StoredSpan)> = roots.into_iter().rev().map(|s| (0, s)).collect();
    while let Some((depth, span)) = stack.pop() {
        let id = span.data.span_context.span_id();
        if !seen.insert(id) {
            continue;
        }
        rows.push((depth, span));
        if let Some(kids) = children.get(&id) {
            stack.extend(kids.iter().rev().map(|k| (depth + 1, *k)));
        }
    }
    // Spans only reachable through a cycle of parents (malformed input) still show.
    for span in spans {
        if !seen.contains(&span.data.span_context.span_id()) {
            rows.push((0, span));
        }
    }
    rows
}

fn waterfall(out: &mut String, summary: &Summary, rows: &[(usize, &StoredSpan)]) {
    let total = summary.duration().as_secs_f64().max(1e-6);
    out.push_str("<section class=\"waterfall\"><h2>Waterfall</h2><div class=\"axis\"><div></div><div class=\"scale\">");
    for i in 0..=4 {
        let _ = write!(
            out,
            "<span style=\"left:{}%\">{}</span>",
            i * 25,
            format_duration(Duration::from_secs_f64(total * f64::from(i) / 4.0))
        );
    }
    out.push_str("</div></div>");
    for (depth, span) in rows {
        waterfall_row(out, summary.start, total, *depth, span);
    }
    out.push_str("</section>");
}

fn waterfall_row(out: &mut String, start: SystemTime, total: f64, depth: usize, span: &StoredSpan) {
    let data = &span.data;
    let offset = data
        .start_time
        .duration_since(start)
        .unwrap_or_default()
        .as_secs_f64();
    let left = (offset / total * 100.0).clamp(0.0, 100.0);
    let width = (span.duration().as_secs_f64() / total * 100.0).clamp(0.0, 100.0 - left);
    let id = data.span_context.span_id().to_string();
    let _ = write!(
        out,
        "<div class=\"row kind-{}{}{}\" data-span-id=\"{id}\"><div class=\"label\" \
         style=\"padding-left:{}em\"><a href=\"#span-{id}\">{}</a> <span class=\"kind\">{}</span>\
         </div><div class=\"track\"><div class=\"bar\" style=\"left:{left:.3}%;width:{width:.3}%\" \
         title=\"{} · {}\">",
        kind_name(&data.span_kind),
        if span.is_genai_client() { " genai" } else { "" },
        if span.is_error() { " error" } else { "" },
        depth.min(MAX_INDENT),
        esc(&data.name),
        kind_name(&data.span_kind).to_ascii_uppercase(),
        esc(&data.name),
        format_duration(span.duration()),
    );
    let span_seconds = span.duration().as_secs_f64();
    for event in data.events.iter().take(MAX_TICKS) {
        let at = event
            .timestamp
            .duration_since(data.start_time)
            .unwrap_or_default()
            .as_secs_f64();
        let position = if span_seconds > 0.0 {
            (at / span_seconds * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        };
        let _ = write!(
            out,
            "<i class=\"tick\" style=\"left:{position:.3}%\" title=\"{} at +{}\"></i>",
            esc(&event.name),
            format_duration(Duration::from_secs_f64(at))
        );
    }
    if let Some(fraction) = span.first_token_fraction() {
        let percent = fraction * 100.0;
        let _ = write!(
            out,
            "<i class=\"first-token\" style=\"left:{percent:.3}%\" data-first-token=\"{percent:.3}\" \
             title=\"first token at +{}\"></i>",
            format_duration(Duration::from_secs_f64(fraction * span_seconds))
        );
    }
    let _ = write!(
        out,
        "</div></div><div class=\"dur\">{}</div></div>",
        format_duration(span.duration())
    );
}

fn span_details(out: &mut String, span: &StoredSpan, depth: usize) {
    let data = &span.data;
    let id = data.span_context.span_id().to_string();
    let _ = write!(
        out,
        "<details id=\"span-{id}\" class=\"span\"{}><summary><b>{}</b> <span class=\"kind\">{}\
         </span> {} <code class=\"muted\">{id}</code> <span class=\"muted\">{}</span></summary>",
        if span.is_genai_client() || depth == 0 {
            " open"
        } else {
            ""
        },
        esc(&data.name),
        kind_name(&data.span_kind).to_ascii_uppercase(),
        format_duration(span.duration()),
        esc(&span.service),
    );
    if let Status::Error { description } = &data.status {
        let _ = write!(out, "<p class=\"error\">error: {}</p>", esc(description));
    }
    attributes_table(out, &data.attributes);
    if !data.events.is_empty() {
        out.push_str("<h3>Events</h3><table class=\"events\">");
        for event in data.events.iter() {
            let at = event
                .timestamp
                .duration_since(data.start_time)
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td class=\"num\">+{}</td><td>{}</td><td>",
                format_duration(at),
                esc(&event.name)
            );
            attributes_inline(out, &event.attributes);
            out.push_str("</td></tr>");
        }
        out.push_str("</table>");
    }
    if !data.links.is_empty() {
        out.push_str("<h3>Links</h3><ul class=\"links\">");
        for link in data.links.iter() {
            let trace = link.span_context.trace_id().to_string();
            let _ = write!(
                out,
                "<li><a href=\"/ui/traces/{trace}\">{trace}</a> span {} ",
                link.span_context.span_id()
            );
            attributes_inline(out, &link.attributes);
            out.push_str("</li>");
        }
        out.push_str("</ul>");
    }
    out.push_str("</details>");
}

fn attributes_table(out: &mut String, attributes: &[KeyValue]) {
    // By key; a key set twice shows its last value, as OTLP backends keep it.
    let mut sorted: Vec<&KeyValue> = attributes.iter().rev().collect();
    sorted.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    sorted.dedup_by(|a, b| a.key == b.key);
    out.push_str("<table class=\"attrs\">");
    for kv in sorted {
        let _ = write!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(kv.key.as_str()),
            esc(&value_text(&kv.value))
        );
    }
    out.push_str("</table>");
}

fn attributes_inline(out: &mut String, attributes: &[KeyValue]) {
    for kv in attributes {
        let _ = write!(
            out,
            "<span class=\"kv\">{}={}</span> ",
            esc(kv.key.as_str()),
            esc(&value_text(&kv.value))
        );
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.as_str().to_owned(),
        other => other.to_string(),
    }
}

/// `/ui/traces/{id}` for a trace the store does not hold (any more).
pub(super) fn not_found_page(id: &str, links: &[(String, String)]) -> String {
    let mut out = String::new();
    head(&mut out, "trace not found", false);
    let _ = write!(
        out,
        "<header><a class=\"brand\" href=\"/ui\">llmtrace</a>{}</header><main><h1>Trace not found</h1>\
         <p>The store holds no trace <code>{}</code>: it was evicted, not kept by sampling, or \
         the id is not 32 hex digits.</p><p><a href=\"/ui\">← traces</a></p>",
        nav(links),
        esc(&cut(id, 64))
    );
    foot(&mut out);
    out
}

// === shared pieces ===

pub(super) fn head(out: &mut String, title: &str, refresh: bool) {
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>llmtrace · {}</title>\
         <link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/ui/assets/viewer.css\">{}\
         </head><body>",
        esc(title),
        if refresh {
            format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">")
        } else {
            String::new()
        }
    );
}

/// The header of the pages without the store's numbers: the brand and the links.
fn header(out: &mut String, links: &[(String, String)]) {
    let _ = write!(
        out,
        "<header><a class=\"brand\" href=\"/ui\">llmtrace</a>{}</header><main>",
        nav(links)
    );
}

pub(super) fn foot(out: &mut String) {
    out.push_str("</main><script src=\"/ui/assets/viewer.js\" defer></script></body></html>\n");
}

/// `text` with `& < > " '` escaped: safe in element content and in quoted attributes.
pub(crate) fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `850 µs`, `12.3 ms`, `1.52 s`.
pub(crate) fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `512 B`, `12.3 KiB`, `64.0 MiB`.
fn format_bytes(bytes: usize) -> String {
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    }
}

/// `$0.000123`: six decimals, trailing zeros kept to align the column.
pub(super) fn format_cost(usd: f64) -> String {
    format!("${usd:.6}")
}

/// `2026-12-01 17:34:23.123` (UTC).
pub(crate) fn format_time(t: SystemTime) -> String {
    let us = micros(t);
    let secs = us / 1_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        us % 1_000_000 / 1000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
