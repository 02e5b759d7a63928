//! `/ui/overview`: the GenAI calls over time per model ([`analytics::overview`]) as inline SVG
//! line charts, one per metric, and a totals table per model. Models go through [`esc`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::super::TraceStore;
use super::super::analytics::{self, Overview, Range, Stats};
use super::html::{esc, foot, format_cost, format_duration, format_time, head, top_bar};
use super::map::lookback_form;

/// One colour per series (the 9th is `other`'s).
const PALETTE: [&str; 9] = [
    "#5b7bd5", "#2f9e8f", "#d98a00", "#8a56d6", "#d64545", "#3aa3e3", "#c0579a", "#7a8b2c",
    "#8c93a3",
];
/// A chart, in SVG units: its size and the room for the axes' labels.
const W: f64 = 560.0;
const H: f64 = 190.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 24.0;

/// One chart: its title, the value it plots, how its values read.
struct Metric {
    title: &'static str,
    value: fn(&Stats) -> Option<f64>,
    unit: fn(f64) -> String,
}

const METRICS: [Metric; 8] = [
    Metric {
        title: "TTFT p50",
        value: |s| s.ttft_p50,
        unit: seconds,
    },
    Metric {
        title: "TTFT p95",
        value: |s| s.ttft_p95,
        unit: seconds,
    },
    Metric {
        title: "Duration p50",
        value: |s| s.duration_p50,
        unit: seconds,
    },
    Metric {
        title: "Duration p95",
        value: |s| s.duration_p95,
        unit: seconds,
    },
    Metric {
        title: "Output tokens/s (median)",
        value: |s| s.tokens_per_second,
        unit: |v| format!("{v:.0} tok/s"),
    },
    Metric {
        title: "Error rate",
        value: |s| s.error_rate,
        unit: |v| format!("{:.0}%", v * 100.0),
    },
    Metric {
        title: "Cost per bin",
        value: |s| Some(s.cost),
        unit: |v| {
            if v < 0.01 {
                format!("${v:.6}")
            } else {
                format!("${v:.4}")
            }
        },
    },
    Metric {
        title: "Requests per bin",
        value: |s| Some(s.requests as f64),
        unit: |v| {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        },
    },
];

fn seconds(v: f64) -> String {
    if v <= 0.0 {
        return "0".to_owned();
    }
    format_duration(Duration::from_secs_f64(v))
}

/// `/ui/overview`: the lookback selector, the legend, the charts, the totals.
pub(super) fn page(store: &TraceStore, query: &str, now: SystemTime) -> String {
    let range = Range::parse(query, now);
    let overview = analytics::overview(&range.traces(store), &range);
    let mut out = String::with_capacity(16 * 1024);
    head(&mut out, "overview", false);
    top_bar(&mut out, store);
    out.push_str("<h1>Overview</h1>");
    lookback_form(&mut out, "/ui/overview", query);
    if overview.requests == 0 {
        out.push_str(
            "<p class=\"empty\">No GenAI calls yet: the charts show the LLM calls' latency, \
             throughput, errors and cost per model once traces with GenAI spans are stored.</p>",
        );
        foot(&mut out);
        return out;
    }
    let start = UNIX_EPOCH + Duration::from_millis(overview.start_ms);
    let _ = write!(
        out,
        "<p class=\"muted\">{} GenAI calls from {} UTC, in {} bins of {}. \
         <a href=\"/api/overview\">JSON</a></p><ul class=\"legend\">",
        overview.requests,
        format_time(start),
        analytics::BINS,
        format_duration(Duration::from_millis(overview.bin_ms)),
    );
    for (i, series) in overview.models.iter().enumerate() {
        let _ = write!(
            out,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
            PALETTE[i % PALETTE.len()],
            esc(&series.model)
        );
    }
    out.push_str("</ul><div class=\"charts\">");
    for metric in &METRICS {
        chart(&mut out, &overview, metric);
    }
    out.push_str("</div>");
    totals(&mut out, &overview);
    foot(&mut out);
    out
}

fn chart(out: &mut String, overview: &Overview, metric: &Metric) {
    let max = overview
        .models
        .iter()
        .flat_map(|s| s.bins.iter().filter_map(metric.value))
        .fold(0.0f64, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let bins = analytics::BINS as f64;
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * (i as f64 + 0.5) / bins;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / top);
    let _ = write!(
        out,
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        metric.title, metric.title
    );
    for tick in [0.0, 0.5, 1.0] {
        let yy = y(top * tick);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            esc(&(metric.unit)(top * tick)),
        );
    }
    // The first bin's start, the middle one's, the last one's end: `HH:MM:SS`, with
    // milliseconds when the whole range is shorter than a minute.
    let time_end = if overview.bin_ms * (analytics::BINS as u64) < 60_000 {
        23
    } else {
        19
    };
    for (i, anchor) in [
        (0, "start"),
        (analytics::BINS / 2, "middle"),
        (analytics::BINS, "end"),
    ] {
        let at = UNIX_EPOCH + Duration::from_millis(overview.start_ms + overview.bin_ms * i as u64);
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            LEFT + (W - LEFT - RIGHT) * i as f64 / bins,
            H - 6.0,
            &format_time(at)[11..time_end],
        );
    }
    for (n, series) in overview.models.iter().enumerate() {
        let points: Vec<Option<(f64, f64)>> = series
            .bins
            .iter()
            .enumerate()
            .map(|(i, b)| (metric.value)(b).map(|v| (x(i), y(v))))
            .collect();
        line(out, &series.model, PALETTE[n % PALETTE.len()], &points);
    }
    out.push_str("</svg></figure>");
}

/// One series: a path through its points (broken where a bin has no value) and a dot on each.
fn line(out: &mut String, model: &str, colour: &str, points: &[Option<(f64, f64)>]) {
    let mut d = String::new();
    let mut pen_down = false;
    for point in points {
        match point {
            Some((px, py)) => {
                let _ = write!(d, "{}{px:.1},{py:.1} ", if pen_down { "L" } else { "M" });
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    if d.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<g class=\"series\" data-model=\"{}\"><path class=\"line\" d=\"{}\" stroke=\"{colour}\"/>",
        esc(model),
        d.trim_end()
    );
    for (px, py) in points.iter().flatten() {
        let _ = write!(
            out,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2.2\" fill=\"{colour}\"/>"
        );
    }
    out.push_str("</g>");
}

fn totals(out: &mut String, overview: &Overview) {
    out.push_str(
        "<h2>Per model</h2><table class=\"models\"><thead><tr><th>Model</th>\
         <th class=\"num\">Requests</th><th class=\"num\">Error rate</th>\
         <th class=\"num\">TTFT p50</th><th class=\"num\">TTFT p95</th>\
         <th class=\"num\">Duration p95</th><th class=\"num\">Tokens/s</th>\
         <th class=\"num\">Input tokens</th><th class=\"num\">Output tokens</th>\
         <th class=\"num\">Cost</th></tr></thead><tbody>",
    );
    let opt = |v: Option<f64>, unit: fn(f64) -> String| v.map(unit).unwrap_or_default();
    for series in &overview.models {
        let t = &series.total;
        let _ = write!(
            out,
            "<tr data-model=\"{model}\"><td>{model}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            t.requests,
            opt(t.error_rate, |v| format!("{:.1}%", v * 100.0)),
            opt(t.ttft_p50, seconds),
            opt(t.ttft_p95, seconds),
            opt(t.duration_p95, seconds),
            opt(t.tokens_per_second, |v| format!("{v:.1}")),
            t.input_tokens,
            t.output_tokens,
            cost_cell(t),
            model = esc(&series.model),
        );
    }
    out.push_str("</tbody></table>");
}

/// A model's cost: `unknown` when no call had one (no price for the model), else the sum,
/// with the calls left out of it counted.
fn cost_cell(t: &crate::store::analytics::Stats) -> String {
    match t.cost_missing {
        0 => format_cost(t.cost),
        n if n == t.requests => "unknown".to_owned(),
        n => format!("{} ({n} without a price)", format_cost(t.cost)),
    }
}
