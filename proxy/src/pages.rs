//! The gateway's own viewer pages, beside the trace viewer's: `/ui/slo` (each objective's
//! windows, burn rates, alerts and budget) and `/ui/cohorts` (each canary route's cohorts
//! compared with the control). Server-rendered like the viewer, in its frame and style.

use std::fmt::Write as _;
use std::time::SystemTime;

use llmtrace::slo::{SloEngine, SloStatus};

use crate::canary::Canary;

/// `text` escaped for HTML, as the viewer's own pages escape it.
fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    llmtrace::store::ui::escape(text)
}

fn percent(share: f64) -> String {
    format!("{:.2} %", share * 100.0)
}

/// The body of `/ui/slo`.
pub fn slo_page(engine: Option<&SloEngine>, now: SystemTime) -> String {
    let statuses = engine.map(|e| e.status(now)).unwrap_or_default();
    let mut out = String::from(
        "<h1>Service level objectives</h1><p class=\"muted\">Every request counts, sampled or \
         not. Burn rate 1 spends the error budget exactly over the period; the page alert needs \
         14.4 over 1 h and 5 min, the ticket 6 over 6 h and 30 min (and 5 bad events in the \
         short window). <a href=\"/api/slo\">JSON</a></p>",
    );
    if statuses.is_empty() {
        out.push_str("<p class=\"empty\">No objectives configured (<code>slo = []</code>).</p>");
        return out;
    }
    out.push_str(
        "<table class=\"slo\"><thead><tr><th>Objective</th><th>Target</th>\
         <th class=\"num\">5 min</th><th class=\"num\">30 min</th><th class=\"num\">1 h</th>\
         <th class=\"num\">6 h</th><th>Budget left (period)</th><th>Alert</th></tr></thead><tbody>",
    );
    for status in &statuses {
        slo_row(&mut out, status);
    }
    out.push_str("</tbody></table><p class=\"muted\">Each window: good / total and burn rate.</p>");
    out
}

fn slo_row(out: &mut String, s: &SloStatus) {
    let alert = match (s.page, s.ticket) {
        (true, _) => "<b class=\"error\">page</b>",
        (false, true) => "<b class=\"warn\">ticket</b>",
        _ => "ok",
    };
    let _ = write!(
        out,
        "<tr data-slo=\"{}\"{}><td><b>{}</b><br><span class=\"muted\">{}</span></td><td>{}</td>",
        esc(&s.name),
        if s.page { " class=\"error\"" } else { "" },
        esc(&s.name),
        esc(&s.description),
        percent(s.target),
    );
    for w in &s.windows {
        let burn = w
            .burn_rate
            .map_or_else(|| "–".to_owned(), |b| format!("{b:.2}"));
        let _ = write!(
            out,
            "<td class=\"num\">{} / {}<br><span class=\"muted\">burn {burn}</span></td>",
            w.good, w.total
        );
    }
    let left = s.budget_remaining.clamp(0.0, 1.0) * 100.0;
    let _ = write!(
        out,
        "<td><div class=\"budget\"><div style=\"width:{left:.1}%\"></div></div>{} of {} days \
         <span class=\"muted\">({} / {})</span></td><td>{alert}</td></tr>",
        percent(s.budget_remaining),
        s.period_days,
        s.period.good,
        s.period.total,
    );
}

/// The body of `/ui/cohorts`.
pub fn cohorts_page(canary: &Canary) -> String {
    let json: serde_json::Value = serde_json::from_str(&canary.json()).unwrap_or_default();
    let mut out = String::from(
        "<h1>Canary cohorts</h1><p class=\"muted\">Each cohort against the control (the first): \
         TTFT by rank test, errors by two-proportion test, at 5 %; “more needed” is per cohort, \
         for 80 % power at the difference seen so far. <a href=\"/api/cohorts\">JSON</a></p>",
    );
    let routes = json["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        out.push_str(
            "<p class=\"empty\">No route splits its traffic (<code>[routes.split]</code>).</p>",
        );
        return out;
    }
    for route in &routes {
        let _ = write!(
            out,
            "<h2>{}</h2><table class=\"cohorts\"><thead><tr><th>Cohort</th>\
             <th class=\"num\">Requests</th><th class=\"num\">Errors</th>\
             <th class=\"num\">TTFT p50</th><th class=\"num\">TTFT p95</th>\
             <th class=\"num\">Tokens</th><th class=\"num\">Cost</th><th>TTFT test</th>\
             <th>Error test</th><th>Verdict</th></tr></thead><tbody>",
            esc(route["route"].as_str().unwrap_or(""))
        );
        cohort_row(&mut out, &route["control"], true);
        for cohort in route["cohorts"].as_array().into_iter().flatten() {
            cohort_row(&mut out, cohort, false);
        }
        out.push_str("</tbody></table>");
    }
    out
}

fn cohort_row(out: &mut String, c: &serde_json::Value, control: bool) {
    let ms = |v: &serde_json::Value| {
        v.as_f64()
            .map_or_else(String::new, |ms| format!("{ms:.1} ms"))
    };
    let test = |t: &serde_json::Value| {
        if control {
            return "control".to_owned();
        }
        match t["p_value"].as_f64() {
            None => "too few".to_owned(),
            Some(p) if t["significant"] == true => format!(
                "<b class=\"{}\">p = {p:.4}</b>",
                if t["worse"] == true { "error" } else { "ok" }
            ),
            Some(p) => match t["more_requests_needed"].as_u64() {
                Some(more) => format!("p = {p:.3}, ~{more} more needed"),
                None => format!("p = {p:.3}"),
            },
        }
    };
    let _ = write!(
        out,
        "<tr data-cohort=\"{name}\"><td><b>{name}</b></td><td class=\"num\">{}</td>\
         <td class=\"num\">{} ({})</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">${:.6}</td><td>{}</td><td>{}</td>\
         <td class=\"verdict\">{}</td></tr>",
        c["requests"],
        c["errors"],
        percent(c["error_rate"].as_f64().unwrap_or(0.0)),
        ms(&c["ttft_p50_ms"]),
        ms(&c["ttft_p95_ms"]),
        c["tokens"],
        c["cost_usd"].as_f64().unwrap_or(0.0),
        test(&c["ttft_test"]),
        test(&c["error_test"]),
        esc(c["verdict"].as_str().unwrap_or("")),
        name = esc(c["name"].as_str().unwrap_or("")),
    );
}
