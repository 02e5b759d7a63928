//! The outputs of a run: `results.json` (everything), `table.md` (the comparison), one CDF
//! plot per target (SVG) and, for a full run, `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use crate::bench::{Plan, TargetResult};
use crate::maxrate::{MAX_HALF_RATE_LAG_MS, MaxRate};
use crate::stats::{Latencies, added};
use crate::targets::{SpanSummary, TargetKind};

/// The context of a run, printed next to its numbers.
#[derive(Clone, Debug, Serialize)]
pub struct Context {
    /// The command that produced it.
    pub command: String,
    /// When it started (UTC, RFC 3339-ish from `date`).
    pub date: String,
    /// `/proc/loadavg` before the run.
    pub load_before: String,
    /// `/proc/loadavg` after the run.
    pub load_after: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// `uname -sr`.
    pub kernel: String,
    /// Wall time of the run, s.
    pub wall_s: f64,
    /// What the gateway processes said of their spans as they stopped, by process name
    /// ([`crate::targets::span_summaries`]).
    pub spans: Vec<(String, SpanSummary)>,
}

/// What became of the tracing gateways' spans, summed by process name: a sentence for the
/// report, empty when no gateway exported any. A gateway that lost spans (queue full,
/// export failed) did less work than tracing asks, and the sentence says so.
pub fn spans_sentence(spans: &[(String, SpanSummary)]) -> String {
    let mut by_name: Vec<(&str, SpanSummary)> = Vec::new();
    // Processes that exported nothing (a target's idle instances) say nothing.
    for (name, summary) in spans
        .iter()
        .filter(|(_, s)| s.queued > 0 || s.unreported > 0)
    {
        let i = match by_name.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                by_name.push((name, SpanSummary::default()));
                by_name.len() - 1
            }
        };
        let sum = &mut by_name[i].1;
        sum.queued += summary.queued;
        sum.exported += summary.exported;
        sum.dropped += summary.dropped;
        sum.failed += summary.failed;
        sum.unreported += summary.unreported;
    }
    if by_name.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by_name
        .iter()
        .map(|(name, s)| {
            format!(
                "{name} {} queued, {} exported, {} lost",
                s.queued,
                s.exported,
                s.lost()
            )
        })
        .collect();
    let lost: Vec<&str> = by_name
        .iter()
        .filter(|(_, s)| s.lost() > 0)
        .map(|(name, _)| *name)
        .collect();
    let unreported: Vec<&str> = by_name
        .iter()
        .filter(|(_, s)| s.unreported > 0)
        .map(|(name, _)| *name)
        .collect();
    let verdict = if !unreported.is_empty() {
        format!(
            "**no span count from {}** (a process stopped without giving one, killed): what \
             it lost is unknown{}",
            unreported.join(", "),
            if lost.is_empty() {
                String::new()
            } else {
                format!("; spans lost by {}", lost.join(", "))
            }
        )
    } else if lost.is_empty() {
        "every span queued was exported".to_owned()
    } else {
        format!(
            "**spans lost by {}**: that tracing did less work than asked (a dropped span is \
             not encoded or sent), so its CPU per request is understated",
            lost.join(", ")
        )
    };
    format!(
        "Spans, as each gateway process counted them when it stopped (summed over its runs): \
         {}; {verdict}.\n",
        parts.join("; ")
    )
}

/// The whole of `results.json`.
#[derive(Serialize)]
struct Results<'a> {
    context: &'a Context,
    plan: &'a Plan,
    targets: &'a [TargetResult],
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() < 10.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.1}"),
        None => "–".to_owned(),
    }
}

fn pair(a: Option<f64>, b: Option<f64>) -> String {
    format!("{} / {}", ms(a), ms(b))
}

/// The comparison table (Markdown): what each target adds over the direct baseline.
pub fn table(plan: &Plan, results: &[TargetResult]) -> String {
    if plan.max_rate_only {
        // The other phases did not run: their table would be empty.
        return max_rate_table(plan, results);
    }
    let direct = results
        .iter()
        .find(|r| r.target == TargetKind::Direct && r.error.is_none());
    let base = |f: fn(&TargetResult) -> Option<f64>| direct.and_then(f);
    let mut out = String::new();
    let bound = results.first().map_or(0.0, |r| r.p99_bound_ms);
    let slack = plan.p99_slack_ms;
    let _ = writeln!(
        out,
        "| target | added latency p50 / p99, streamed (ms) | added latency p50 / p99, not streamed (ms) \
         | added TTFT p50 / p99 (ms) | sustained rate (req/s, p99 ≤ {bound:.0} ms + own added p50) \
         | CPU s / 1 000 req | RSS idle → {} open streams (MiB) | RSS / stream (KiB) |",
        plan.open_streams
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in results {
        let name = match r.target {
            TargetKind::Litellm if plan.litellm_latency_rate != plan.latency_rate => {
                format!("litellm (latency at {} req/s)", plan.litellm_latency_rate)
            }
            kind => kind.name().to_owned(),
        };
        if let Some(error) = &r.error {
            if r.stream.sent == 0 {
                let _ = writeln!(
                    out,
                    "| {name} | failed: {} |||||||",
                    error.replace('|', "/")
                );
                continue;
            }
        }
        let latency = |run: &crate::client::RunReport,
                       base_run: Option<&crate::client::RunReport>| {
            if r.target == TargetKind::Direct {
                format!("({} / {})", ms(run.total.p50_ms), ms(run.total.p99_ms))
            } else {
                pair(
                    added(run.total.p50_ms, base_run.and_then(|b| b.total.p50_ms)),
                    added(run.total.p99_ms, base_run.and_then(|b| b.total.p99_ms)),
                )
            }
        };
        let ttft = if r.target == TargetKind::Direct {
            format!(
                "({} / {})",
                ms(r.stream.ttft.p50_ms),
                ms(r.stream.ttft.p99_ms)
            )
        } else {
            pair(
                added(r.stream.ttft.p50_ms, base(|d| d.stream.ttft.p50_ms)),
                added(r.stream.ttft.p99_ms, base(|d| d.stream.ttft.p99_ms)),
            )
        };
        let sustained = match r.sustained_rps {
            Some(rate) if r.sustained_capped => format!("≥ {rate:.0}"),
            Some(rate) => format!("{rate:.0}"),
            None => "< first step".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {ttft} | {sustained} | {} | {:.1} → {:.1} ({} open) | {} |",
            latency(&r.stream, direct.map(|d| &d.stream)),
            latency(&r.plain, direct.map(|d| &d.plain)),
            r.cpu_s_per_1000
                .map_or("–".to_owned(), |c| format!("{c:.3}")),
            r.memory.rss_idle_kib as f64 / 1024.0,
            r.memory.rss_open_kib as f64 / 1024.0,
            r.memory.open,
            r.memory
                .kib_per_stream
                .map_or("–".to_owned(), |k| format!("{k:.1}")),
        );
    }
    let _ = writeln!(
        out,
        "\nThe direct row shows the baseline's own p50 / p99 in parentheses; the other rows \
         subtract the baseline's percentile from theirs (at the same rate, {} req/s, unless \
         stated). CPU and RSS of the direct row are the mock's own. Sustained rate: the \
         highest rate whose p99 stayed under the baseline's p99 + the target's own added p50 + \
         {slack} ms with ≤ {} % errors; \"≥\" when the search stopped below the target's \
         limit.",
        plan.latency_rate,
        plan.max_error_rate * 100.0,
    );
    let max_rate = max_rate_table(plan, results);
    if !max_rate.is_empty() {
        let _ = write!(out, "\n{max_rate}");
    }
    out
}

fn times(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    }
}

/// One row of the max-rate table.
fn max_rate_row(r: &TargetResult, m: &MaxRate, pingora: Option<&MaxRate>) -> String {
    let name = r.target.name();
    if let Some(error) = &m.error {
        return format!("| {name} | {} |||||||||||||", error.replace('|', "/"));
    }
    let wrk = m.wrk.clone().unwrap_or_default();
    let half = m.half.as_ref();
    let pingora_half = pingora.and_then(|p| p.half.as_ref());
    format!(
        "| {name} | {:.0} | {} | {} | {} | {} | {:.0} % | {} | {} | {} | {} | {} | {} | {} |",
        m.rps,
        m.cpu_us_per_request
            .map_or("–".to_owned(), |c| format!("{c:.1}")),
        times(
            m.cpu_us_per_request,
            pingora.and_then(|p| p.cpu_us_per_request)
        ),
        times(Some(m.rps), pingora.map(|p| p.rps)),
        pair(wrk.p50_ms, wrk.p99_ms),
        m.target_cpu_share * 100.0,
        wrk.errors(),
        half.map_or("–".to_owned(), |h| format!("{:.0}", h.rate)),
        half.map_or("–".to_owned(), |h| pair(
            h.run.total.p50_ms,
            h.run.total.p99_ms
        )),
        ms(half.and_then(|h| h.added_p99_ms)),
        times(
            half.and_then(|h| h.added_p99_ms),
            pingora_half.and_then(|p| p.added_p99_ms)
        ),
        half.and_then(|h| h.cpu_us_per_request)
            .map_or("–".to_owned(), |c| {
                let busy = half.and_then(|h| h.target_cpu_share).unwrap_or(0.0);
                format!("{c:.1} ({:.0} %)", busy * 100.0)
            }),
        times(
            half.and_then(|h| h.cpu_us_per_request),
            pingora_half.and_then(|p| p.cpu_us_per_request)
        ),
    )
}

/// The issue-12 goals of this run: CPU per request and added p99 at half rate, as ratios to
/// bare pingora's.
fn max_rate_goals(plan: &Plan, rows: &[(&TargetResult, &MaxRate)]) -> String {
    let of = |kind: TargetKind| rows.iter().find(|(r, _)| r.target == kind).map(|(_, m)| *m);
    let pingora = of(TargetKind::Pingora);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let verdict = |ratio: Option<f64>, limit: f64| {
        ratio.map_or("not measured".to_owned(), |r| {
            format!("{r:.2}×, {}", if r <= limit { "met" } else { "missed" })
        })
    };
    let mut goals = String::new();
    for (kind, goal, limit) in [
        (TargetKind::ProxyNoTracing, "tracing off", 1.1),
        (TargetKind::ProxyTracing, "tracing on", 1.25),
    ] {
        let cpu = ratio(
            of(kind).and_then(|m| m.cpu_us_per_request),
            pingora.and_then(|p| p.cpu_us_per_request),
        );
        let half_cpu = |m: Option<&MaxRate>| m?.half.as_ref()?.cpu_us_per_request;
        let equal = ratio(half_cpu(of(kind)), half_cpu(pingora));
        let _ = write!(
            goals,
            " {goal} ≤ {limit}× bare pingora's CPU per request: {} at max rate, {} at the \
             same offered rate (half rate);",
            verdict(cpu, limit),
            verdict(equal, limit)
        );
    }
    let added_p99 = |m: Option<&MaxRate>| m?.half.as_ref()?.added_p99_ms;
    let p99 = ratio(added_p99(of(TargetKind::ProxyTracing)), added_p99(pingora));
    let (on, bare) = (added_p99(of(TargetKind::ProxyTracing)), added_p99(pingora));
    let p99_verdict = match (unclean_half_rate(&of), on, bare) {
        (Some(why), Some(_), Some(_)) => match p99 {
            Some(p99) => format!("{p99:.2}×, not conclusive ({why})"),
            None => format!("not conclusive ({why})"),
        },
        // A ratio to nothing (or less) means nothing: both numbers instead.
        (None, Some(on), Some(bare)) if bare <= 0.0 => format!(
            "no ratio, bare pingora added {bare:.2} ms (nothing beyond the direct baseline's \
             spread) and tracing on {on:.2} ms"
        ),
        _ => verdict(p99, 1.2),
    };
    let p99_verdict = match few_clean_runs(plan, &of) {
        Some(few) if p99.is_some() => format!("{p99_verdict} ({few})"),
        _ => p99_verdict,
    };
    let _ = write!(
        goals,
        " added p99 at half the gateway's max rate (tracing on) ≤ 1.2× bare pingora's: \
         {p99_verdict}"
    );
    goals
}

/// The targets the added-p99 ratio rests on.
const RATIO_TARGETS: [TargetKind; 3] = [
    TargetKind::Direct,
    TargetKind::Pingora,
    TargetKind::ProxyTracing,
];

/// Why the added-p99 ratio is not conclusive, if it is not: a run it rests on (direct's,
/// pingora's, proxy-tracing's) whose generator lagged more than the bound, because no clean
/// run was found in the attempts allowed.
fn unclean_half_rate<'a>(of: &impl Fn(TargetKind) -> Option<&'a MaxRate>) -> Option<String> {
    let unclean: Vec<String> = RATIO_TARGETS
        .into_iter()
        .filter_map(|kind| {
            let half = of(kind)?.half.as_ref()?;
            (!half.clean || half.run.max_dispatch_lag_ms > MAX_HALF_RATE_LAG_MS).then(|| {
                format!(
                    "{}: no clean run in {} attempt(s), the generator lagged at least {:.0} ms in \
                 each",
                    kind.name(),
                    half.attempts,
                    half.run.max_dispatch_lag_ms
                )
            })
        })
        .collect();
    (!unclean.is_empty()).then(|| unclean.join("; "))
}

/// The targets the ratio rests on whose clean half-rate runs were fewer than wanted (a
/// median of fewer runs, read with care), or `None`.
fn few_clean_runs<'a>(
    plan: &Plan,
    of: &impl Fn(TargetKind) -> Option<&'a MaxRate>,
) -> Option<String> {
    let few: Vec<String> = RATIO_TARGETS
        .into_iter()
        .filter_map(|kind| {
            let half = of(kind)?.half.as_ref()?;
            let clean = half.p99s_ms.len();
            (half.clean && clean < plan.half_rate_runs).then(|| format!("{} {clean}", kind.name()))
        })
        .collect();
    (!few.is_empty()).then(|| {
        format!(
            "from fewer clean runs than the {} wanted: {}",
            plan.half_rate_runs,
            few.join(", ")
        )
    })
}

/// Per target, the half-rate runs made and the ones discarded for the generator's lag.
fn half_rate_attempts(rows: &[(&TargetResult, &MaxRate)]) -> String {
    let mut out = Vec::new();
    for (r, m) in rows {
        let Some(half) = &m.half else { continue };
        let lags: Vec<String> = half
            .discarded_lags_ms
            .iter()
            .map(|l| format!("{l:.1}"))
            .collect();
        let discarded = if lags.is_empty() {
            String::new()
        } else {
            format!(", discarded with lag {} ms", lags.join(", "))
        };
        out.push(format!(
            "{} {} clean of {}{discarded} (counted run: lag max {:.1} ms, p99 {})",
            r.target.name(),
            half.p99s_ms.len(),
            half.attempts,
            half.run.max_dispatch_lag_ms,
            half.run
                .dispatch_lag_p99_ms
                .map_or("–".to_owned(), |l| format!("{l:.2} ms")),
        ));
    }
    out.join("; ")
}

/// The max-rate phase (issue 12): req/s, CPU per request and latency per target, with ratios
/// to bare pingora from the same run, and latency at half the gateway's max rate. Empty when
/// the phase did not run.
pub fn max_rate_table(plan: &Plan, results: &[TargetResult]) -> String {
    let rows: Vec<(&TargetResult, &MaxRate)> = results
        .iter()
        .filter_map(|r| r.max_rate.as_ref().map(|m| (r, m)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let pingora = rows
        .iter()
        .find(|(r, _)| r.target == TargetKind::Pingora)
        .map(|(_, m)| *m);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Max rate, not streamed (`wrk -t1 -c{}`, {} s after a warm-up run, {}-word prompt, \
         instant upstream, the target alone on one core), then latency at half the gateway's \
         max rate (open-loop, this harness's generator):\n\n\
         | target | req/s | CPU µs / req | CPU / req × pingora | req/s × pingora | wrk latency \
         p50 / p99 (ms) | target's core busy | errors | half rate (req/s) | p50 / p99 at half \
         rate (ms) | added p99 (ms) | added p99 × pingora | CPU µs / req at half rate (core \
         busy) | CPU at half rate × pingora |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        plan.max_rate_connections,
        plan.max_rate_s.ceil().max(1.0),
        plan.max_rate_prompt_words,
    );
    for (r, m) in &rows {
        let _ = writeln!(out, "{}", max_rate_row(r, m, pingora));
    }
    let _ = writeln!(
        out,
        "\nIssue 12, non-streamed:{}.",
        max_rate_goals(plan, &rows)
    );
    let _ = writeln!(out, "\n{}", max_rate_notes(plan, results, &rows));
    out
}

/// What the max-rate table's columns mean in this run.
fn max_rate_notes(
    plan: &Plan,
    results: &[TargetResult],
    rows: &[(&TargetResult, &MaxRate)],
) -> String {
    let pinned = rows.iter().find_map(|(_, m)| m.pinning.clone());
    let half = match crate::maxrate::gateway_rate(results) {
        Some(gateway) => format!(
            "{:.0} req/s, half of proxy-tracing's max rate, for every target whose own max \
             rate is at least 1.25× that (the others, LiteLLM: half their own; the half-rate \
             column says which)",
            (gateway / 2.0).min(plan.half_rate_cap)
        ),
        None => format!(
            "no proxy-tracing max rate in this run: half each target's own max rate, at most \
             {:.0} req/s",
            plan.half_rate_cap
        ),
    };
    format!(
        "CPU: the target's CPU-time clock (the scheduler's exact runtime of all its threads; the \
         direct row: the mock's) over the wrk \
         run, per answered request. \"target's core busy\" near 100 %: the target set the rate; \
         well below ~90 %: wrk's core (shared with the mocks and the sink) or another job on \
         the machine did, and only the CPU per request compares. wrk latency is \
         closed-loop ({} connections always busy): it grows with the target's CPU per request. \
         Errors: non-2xx answers and socket errors as wrk counts them. Half rate: {half}; each \
         target started again, pinned as for wrk, {} s of warm-up, then open-loop runs of {} \
         s until {} were clean or {} were made: the generator's dispatcher thread sleeps on \
         the OS's high-resolution timer (1 µs slack) until each request is due and hands it \
         to the generator's runtime; a request's dispatch lag is from its scheduled time to \
         its task starting to send, and a run in which any request lagged more than {} ms \
         is discarded (it measured the generator) and, after a 1 s pause, run again. The \
         clean run with the median p99 is shown (no clean run: the least lagging one, and \
         the verdict says not conclusive); latency from each request's scheduled send; added \
         p99 subtracts the direct row's p99 at the same rate. CPU at half rate: the target's \
         CPU time over each run, per answered request, the median of the clean runs; \
         every target is offered the same rate there, below its limit, so it compares equal \
         work, where the max-rate CPU compares a saturated target with one the generator may \
         not have saturated. Runs: {}. wrk runs that took more than their duration + {} s \
         (wrk's process did not run: a stall of the machine or of wrk's core) were discarded \
         and run again, at most {} runs: {}. Pinning: {}.",
        plan.max_rate_connections,
        plan.half_rate_warmup_s,
        plan.half_rate_s,
        plan.half_rate_runs,
        plan.half_rate_attempts.max(plan.half_rate_runs),
        MAX_HALF_RATE_LAG_MS,
        half_rate_attempts(rows),
        crate::maxrate::OVERSTAY_S,
        crate::maxrate::MAX_RATE_ATTEMPTS,
        overstays(rows),
        pinned
            .as_deref()
            .unwrap_or("none (fewer than two CPUs, or it failed)"),
    )
}

/// The wrk runs of the max-rate phase that overstayed and were run again, by target.
fn overstays(rows: &[(&TargetResult, &MaxRate)]) -> String {
    let runs: Vec<String> = rows
        .iter()
        .filter(|(_, m)| !m.overstayed_s.is_empty())
        .map(|(r, m)| {
            let took: Vec<String> = m.overstayed_s.iter().map(|s| format!("{s:.1} s")).collect();
            format!("{} (took {})", r.target.name(), took.join(", "))
        })
        .collect();
    if runs.is_empty() {
        "none".to_owned()
    } else {
        runs.join("; ")
    }
}

/// The targets of issue 6 as ratios from this run: one row per target, with what was
/// measured and whether it was met.
pub fn verdict(results: &[TargetResult]) -> String {
    let find = |kind: TargetKind| results.iter().find(|r| r.target == kind && r.stream.ok > 0);
    let (Some(direct), Some(proxy)) = (find(TargetKind::Direct), find(TargetKind::ProxyTracing))
    else {
        return String::new();
    };
    let (nginx, litellm, off) = (
        find(TargetKind::Nginx),
        find(TargetKind::Litellm),
        find(TargetKind::ProxyNoTracing),
    );
    let added_p99 = |r: &TargetResult| added(r.stream.total.p99_ms, direct.stream.total.p99_ms);
    let mark = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "not measured",
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let x = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2}×"));
    let mut rows: Vec<[String; 3]> = Vec::new();
    {
        let (p, n) = (added_p99(proxy), nginx.and_then(added_p99));
        // nginx's added p99 can be 0 or negative (noise); then the proxy must be too.
        let met = match (p, n) {
            (Some(p), Some(n)) => Some(p <= 1.5 * n.max(0.0)),
            _ => None,
        };
        rows.push([
            "added p99 latency ≤ 1.5 × nginx's".to_owned(),
            format!("proxy {} ms, nginx {} ms", ms(p), ms(n)),
            mark(met).to_owned(),
        ]);
    }
    let capped = |r: &TargetResult| {
        if r.sustained_capped {
            " (nginx capped: ≥)"
        } else {
            ""
        }
    };
    let r = ratio(proxy.sustained_rps, nginx.and_then(|n| n.sustained_rps));
    rows.push([
        "sustained rate ≥ 0.8 × nginx's".to_owned(),
        format!("{}{}", x(r), nginx.map_or("", capped)),
        mark(r.map(|r| r >= 0.8)).to_owned(),
    ]);
    let r = ratio(proxy.sustained_rps, litellm.and_then(|l| l.sustained_rps));
    rows.push([
        "sustained rate ≥ 20 × LiteLLM's".to_owned(),
        x(r),
        mark(r.map(|r| r >= 20.0)).to_owned(),
    ]);
    let ttft = added(proxy.stream.ttft.p99_ms, direct.stream.ttft.p99_ms);
    rows.push([
        "added TTFT p99 < 1 ms".to_owned(),
        format!("{} ms", ms(ttft)),
        mark(ttft.map(|t| t < 1.0)).to_owned(),
    ]);
    let kib = proxy.memory.kib_per_stream;
    rows.push([
        "RSS per open stream ≤ 32 KiB".to_owned(),
        format!("{} KiB", kib.map_or("–".to_owned(), |k| format!("{k:.1}"))),
        mark(kib.map(|k| k <= 32.0)).to_owned(),
    ]);
    let r = ratio(proxy.sustained_rps, off.and_then(|o| o.sustained_rps));
    rows.push([
        "tracing costs ≤ 10 % of sustained rate".to_owned(),
        format!("on / off = {}", x(r)),
        mark(r.map(|r| r >= 0.9)).to_owned(),
    ]);
    let mut out = String::from("| target (proxy with tracing) | this run | |\n|---|---|---|\n");
    for [goal, value, result] in rows {
        let _ = writeln!(out, "| {goal} | {value} | {result} |");
    }
    out
}

/// The run's parameters, in words, for the report.
pub fn method(plan: &Plan) -> String {
    format!(
        "- Mock upstream (its own process, {threads} runtime threads): TTFT {ft} ms, {fg} ms \
         between tokens, {fn_} tokens per answer (a streamed answer takes {fa} ms; a \
         non-streamed one is sent whole after the same time). Prompt: {words} words.\n\
         - Latency: open-loop, {rate} req/s (LiteLLM {lrate} req/s), {ls} s streamed then \
         {lp} s not streamed, after {wu} s of warm-up; latency counts from each request's \
         scheduled send time.\n\
         - Sustained rate: streamed requests, {step} s per step, rate × {factor} per step from \
         {start} req/s (LiteLLM {lstart}), {refine} refining step(s) between the last held and \
         the first failed rate; a failed step is run once more before it counts. A step holds when p99 ≤ the direct baseline's p99 + the \
         target's own added p50 at the latency rate + {slack} ms, and ≤ {err} % of requests \
         fail.\n\
         - CPU: the CPU-time clock (`clock_getcpuclockid`: the scheduler's exact runtime, \
         not tick-sampled `utime + stime`) of the target and its children around the \
         streamed latency run.\n\
         - Memory: {streams} streams opened at {ramp}/s to a mock that sends a token every \
         {sg} ms; VmRSS of the target's processes once they all delivered a token, minus the \
         idle RSS. The target is then restarted for the latency and rate phases.\n\
         - Max rate: non-streamed requests ({mw}-word prompt) to a mock that answers at once \
         ({mt} tokens), sent by `wrk -t1 -c{mc} --latency` (each connection sends its next \
         request when the previous answer is in; the Lua script with the body is written next \
         to the results), {ms} s after a {mwu} s warm-up run; the target's processes pinned \
         alone to one CPU, wrk, the mocks and the sink to another (`sched_setaffinity`); CPU \
         per request from `/proc/PID/stat` of the target's process around the run.\n\
         - Half rate: each target started again and pinned the same way, non-streamed requests \
         open-loop from this harness's generator at half the gateway's (proxy-tracing's) max \
         rate (at most {hc} req/s), {hn} clean run(s) of {hs} s after {hw} s of warm-up (at \
         most {ha} runs; a run in which the generator sent any request more than {hl} ms \
         after its scheduled time is discarded and run again), the clean run with the median \
         p99 counting; p99 added over the direct baseline's at the same rate.",
        threads = plan.mock_threads,
        ft = plan.fast_mock.ttft_ms,
        fg = plan.fast_mock.gap_ms,
        fn_ = plan.fast_mock.tokens,
        fa = plan.fast_mock.answer_ms(),
        words = plan.prompt_words,
        rate = plan.latency_rate,
        lrate = plan.litellm_latency_rate,
        ls = plan.latency_stream_s,
        lp = plan.latency_plain_s,
        wu = plan.warmup_s,
        step = plan.step_s,
        factor = plan.step_factor,
        start = plan.start_rate,
        lstart = plan.litellm_start_rate,
        refine = plan.refine_steps,
        slack = plan.p99_slack_ms,
        err = plan.max_error_rate * 100.0,
        streams = plan.open_streams,
        ramp = plan.open_ramp,
        sg = plan.slow_mock.gap_ms,
        mw = plan.max_rate_prompt_words,
        mt = plan.instant_mock.tokens,
        mc = plan.max_rate_connections,
        ms = plan.max_rate_s,
        mwu = plan.max_rate_warmup_s,
        hc = plan.half_rate_cap,
        hs = plan.half_rate_s,
        hn = plan.half_rate_runs,
        hw = plan.half_rate_warmup_s,
        ha = plan.half_rate_attempts.max(plan.half_rate_runs),
        hl = MAX_HALF_RATE_LAG_MS,
    )
}

/// Writes `results.json`, `table.md` and the plots into `dir`; returns the table.
pub fn write(
    dir: &Path,
    context: &Context,
    plan: &Plan,
    results: &[TargetResult],
) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(&Results {
        context,
        plan,
        targets: results,
    })
    .map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write("results.json", &json)?;
    let table = table(plan, results);
    write(
        "table.md",
        &format!(
            "{table}\n{}\n{}",
            verdict(results),
            spans_sentence(&context.spans)
        ),
    )?;
    let direct = results.iter().find(|r| r.target == TargetKind::Direct);
    for r in results.iter().filter(|r| r.stream_total.count() > 0) {
        let mut series = vec![
            (format!("{} total", r.target.name()), &r.stream_total, 0),
            (format!("{} TTFT", r.target.name()), &r.stream_ttft, 0),
        ];
        if let Some(d) = direct.filter(|d| d.target != r.target) {
            series.push(("direct total".to_owned(), &d.stream_total, 1));
            series.push(("direct TTFT".to_owned(), &d.stream_ttft, 1));
        }
        cdf_plot(
            &dir.join(format!("cdf-{}.svg", r.target.name())),
            &format!(
                "{}: streamed latency CDF at {} req/s",
                r.target.name(),
                r.stream.rate
            ),
            &series,
        )?;
    }
    let all: Vec<(String, &Latencies, usize)> = results
        .iter()
        .filter(|r| r.stream_total.count() > 0)
        .enumerate()
        .map(|(i, r)| (r.target.name().to_owned(), &r.stream_total, i))
        .collect();
    if !all.is_empty() {
        cdf_plot(
            &dir.join("cdf-all.svg"),
            "streamed request latency CDF, all targets",
            &all,
        )?;
    }
    let bars = cpu_bars(results);
    if !bars.is_empty() {
        cpu_bar_plot(
            &dir.join("max-rate-cpu.svg"),
            "CPU µs per request at max rate (not streamed, wrk)",
            &bars,
        )?;
    }
    Ok(table)
}

/// The max-rate phase's CPU per request by target, in run order.
pub fn cpu_bars(results: &[TargetResult]) -> Vec<(String, f64)> {
    results
        .iter()
        .filter_map(|r| {
            let cpu = r.max_rate.as_ref()?.cpu_us_per_request?;
            Some((r.target.name().to_owned(), cpu))
        })
        .collect()
}

/// A bar chart of CPU µs per request by target from the max-rate phase (`bars`: label and
/// value), one colour per target; a bar far above the others (LiteLLM's) is cut at the top
/// of the axis and labelled with its value.
pub fn cpu_bar_plot(path: &Path, title: &str, bars: &[(String, f64)]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    if bars.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<f64> = bars.iter().map(|b| b.1).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let shown = sorted
        .iter()
        .copied()
        .filter(|&v| v <= 10.0 * median.max(1.0))
        .fold(0.0, f64::max);
    let top = shown * 1.2 + 1.0;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..bars.len() - 1).into_segmented(), 0.0..top)
        .map_err(|e| err(&e))?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("CPU µs per request")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let colour = Palette99::pick(i).to_rgba();
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), v.min(top)),
                ],
                colour.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            // Above the bar; inside its top for a bar cut at the top of the axis.
            let (label, y, vpos) = if *v > top {
                (format!("{v:.0} ↑"), top, VPos::Top)
            } else {
                (format!("{v:.1}"), *v, VPos::Bottom)
            };
            let style =
                TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, vpos));
            Text::new(label, (SegmentValue::CenterOf(i), y), style)
        }))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A CDF plot: x latency (ms), y fraction of requests, one line per `(label, histogram,
/// colour index)`; the x axis spans the series' minimum to their largest p99.9.
pub fn cdf_plot(
    path: &Path,
    title: &str,
    series: &[(String, &Latencies, usize)],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    let points: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, l, _)| l.cdf_points()).collect();
    let lo = points
        .iter()
        .filter_map(|p| p.first().map(|p| p.0))
        .fold(f64::INFINITY, f64::min);
    let hi = series
        .iter()
        .filter_map(|(_, l, _)| l.quantile_ms(0.999))
        .fold(0.0, f64::max);
    if !lo.is_finite() || hi <= 0.0 {
        return Ok(());
    }
    let (lo, hi) = ((lo * 0.98).max(0.0), hi * 1.02 + 0.1);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(lo..hi, 0.0..1.0)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("latency from scheduled send (ms)")
        .y_desc("fraction of requests")
        .draw()
        .map_err(|e| err(&e))?;
    for ((label, _, colour), pts) in series.iter().zip(points) {
        let colour = Palette99::pick(*colour).to_rgba();
        let dashed = label.ends_with("TTFT");
        // A step function: each bucket's fraction holds until the next bucket.
        let mut steps = Vec::with_capacity(pts.len() * 2);
        let mut previous = 0.0;
        for (x, y) in pts {
            let x = x.min(hi);
            steps.push((x, previous));
            steps.push((x, y));
            previous = y;
        }
        let style = ShapeStyle {
            color: colour,
            filled: false,
            stroke_width: if dashed { 1 } else { 2 },
        };
        chart
            .draw_series(LineSeries::new(steps, style))
            .map_err(|e| err(&e))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// `BENCHMARKS.md`: the latest full run's table, method, context and plots (paths relative
/// to the repository root), with `findings` (the analysis kept in `benches/load/FINDINGS.md`,
/// written by hand) after the method.
pub fn benchmarks_md(
    context: &Context,
    plan: &Plan,
    results: &[TargetResult],
    table: &str,
    plots_dir: &str,
    findings: Option<&str>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmarks: llmtrace-proxy next to nginx and LiteLLM\n\n\
         Generated by the load harness in `benches/load` (issue 6). Every target sits in front \
         of the same mock OpenAI upstream on loopback, on one machine, in one run; the load \
         generator is open-loop (no coordinated omission) and measures from the client side.\n\n\
         Command:\n\n```sh\n{}\n```\n\n\
         Run on {} ({} logical CPUs, {}), wall time {:.0} s. Load average (1/5/15 min) before \
         {}, after {}. The machine is shared with other jobs; treat ratios from one run as \
         the result and absolute numbers as indicative.\n\n## Results\n\n{table}\n\
         ## Against the targets of issue 6\n\n{}\n{}\n## Targets\n",
        context.command,
        context.date,
        context.cpus,
        context.kernel,
        context.wall_s,
        context.load_before,
        context.load_after,
        verdict(results),
        spans_sentence(&context.spans),
    );
    for r in results {
        let _ = writeln!(
            out,
            "- **{}**: {}{}",
            r.target.name(),
            r.description,
            r.error
                .as_ref()
                .map_or(String::new(), |e| format!(" (error: {e})")),
        );
    }
    let _ = writeln!(out, "\n## Method\n\n{}\n", method(plan));
    if let Some(findings) = findings {
        let _ = writeln!(out, "{}\n", findings.trim_end());
    }
    if !cpu_bars(results).is_empty() {
        let _ = writeln!(
            out,
            "## CPU per request at max rate\n\n\
             Not streamed, driven by wrk, each target alone on one core (the max-rate table \
             above has the numbers and ratios):\n\n\
             ![CPU µs per request at max rate]({plots_dir}/max-rate-cpu.svg)\n"
        );
    }
    let _ = writeln!(
        out,
        "Full numbers (every step, p90/p99.9/max, inter-token gaps, errors by kind, spans \
         received by the sink): [`{plots_dir}/results.json`]({plots_dir}/results.json).\n\n\
         ## Latency CDFs (streamed, at the latency rate)\n"
    );
    let _ = writeln!(out, "![all targets]({plots_dir}/cdf-all.svg)\n");
    for r in results.iter().filter(|r| r.stream_total.count() > 0) {
        let name = r.target.name();
        let _ = writeln!(out, "![{name}]({plots_dir}/cdf-{name}.svg)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spans_sentence_sums_by_process_and_names_losses() {
        let summary = |queued, exported, dropped, failed| SpanSummary {
            queued,
            exported,
            dropped,
            failed,
            unreported: 0,
        };
        assert_eq!(spans_sentence(&[]), "");
        let kept = spans_sentence(&[
            ("proxy-tracing-instant".into(), summary(10, 10, 0, 0)),
            ("proxy-tracing-fast".into(), summary(4, 4, 0, 0)),
            ("proxy-tracing-instant".into(), summary(6, 6, 0, 0)),
            ("proxy-tracing-slow".into(), summary(0, 0, 0, 0)),
        ]);
        assert!(!kept.contains("slow"), "{kept}");
        assert!(
            kept.contains(
                "proxy-tracing-instant 16 queued, 16 exported, 0 lost; proxy-tracing-fast 4"
            ),
            "{kept}"
        );
        assert!(kept.contains("every span queued was exported"), "{kept}");
        let lost = spans_sentence(&[
            ("proxy-tracing-instant".into(), summary(10, 10, 0, 0)),
            ("proxy-tracing-instant".into(), summary(10, 5, 3, 2)),
        ]);
        assert!(lost.contains("20 queued, 15 exported, 5 lost"), "{lost}");
        assert!(
            lost.contains("**spans lost by proxy-tracing-instant**"),
            "{lost}"
        );
        let killed = spans_sentence(&[
            ("proxy-tracing-instant".into(), summary(10, 10, 0, 0)),
            (
                "proxy-tracing-instant".into(),
                SpanSummary {
                    unreported: 1,
                    ..SpanSummary::default()
                },
            ),
        ]);
        assert!(
            killed.contains("**no span count from proxy-tracing-instant**"),
            "{killed}"
        );
        assert!(
            !killed.contains("every span queued was exported"),
            "{killed}"
        );
    }

    #[test]
    fn cdf_plot_writes_an_svg() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for i in 0..100 {
            a.record(std::time::Duration::from_micros(10_000 + i * 37));
            b.record(std::time::Duration::from_micros(10_500 + i * 41));
        }
        let dir = std::env::temp_dir().join(format!("llmtrace-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cdf.svg");
        cdf_plot(
            &path,
            "test",
            &[("a".to_owned(), &a, 0), ("b TTFT".to_owned(), &b, 1)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn max_rate_ratios_are_to_bare_pingora() {
        let row = |kind, rps, cpu, added_p99| TargetResult {
            max_rate: Some(MaxRate {
                connections: 32,
                wrk: Some(crate::wrk::WrkReport {
                    requests: 100,
                    non_2xx: 2,
                    socket_errors: 1,
                    ..Default::default()
                }),
                rps,
                cpu_us_per_request: Some(cpu),
                target_cpu_share: 0.97,
                pinning: Some("target on CPU [1]".to_owned()),
                error: None,
                half: Some(crate::maxrate::HalfRate {
                    rate: 2500.0,
                    run: crate::client::RunResult::default().report(),
                    clean: true,
                    p99s_ms: vec![Some(1.0)],
                    attempts: 2,
                    discarded_lags_ms: vec![7.25],
                    added_p99_ms: Some(added_p99),
                    cpu_us_per_request: Some(cpu * 1.5),
                    target_cpu_share: Some(0.25),
                }),
                overstayed_s: Vec::new(),
            }),
            ..crate::bench::failed(kind, String::new())
        };
        let mut missing = row(TargetKind::Nginx, 0.0, 0.0, 0.0);
        missing.max_rate = Some(MaxRate {
            error: Some("wrk is not installed (apt-get install wrk): not measured".to_owned()),
            ..MaxRate::default()
        });
        let results = [
            row(TargetKind::Pingora, 20_000.0, 40.0, 0.5),
            row(TargetKind::ProxyNoTracing, 8_000.0, 100.0, 0.55),
            row(TargetKind::ProxyTracing, 5_000.0, 48.0, 1.0),
            missing,
        ];
        let table = max_rate_table(&Plan::quick(), &results);
        assert!(
            table.contains("| pingora | 20000 | 40.0 | 1.00× | 1.00× |"),
            "{table}"
        );
        assert!(table.contains("| proxy-no-tracing | 8000 | 100.0 | 2.50× | 0.40× |"));
        assert!(
            table.contains("| 3 | 2500 | – / – | 0.55 | 1.10× |"),
            "{table}"
        );
        assert!(table.contains("| nginx | wrk is not installed (apt-get install wrk)"));
        assert!(table.contains(
            "tracing off ≤ 1.1× bare pingora's CPU per request: 2.50×, missed at max rate, \
             2.50×, missed at the same offered rate (half rate)"
        ));
        assert!(table.contains(
            "tracing on ≤ 1.25× bare pingora's CPU per request: 1.20×, met at max rate, 1.20×, \
             met at the same offered rate (half rate)"
        ));
        assert!(
            table.contains("| 0.55 | 1.10× | 150.0 (25 %) | 2.50× |"),
            "{table}"
        );
        assert!(
            table.contains("≤ 1.2× bare pingora's: 2.00×, missed"),
            "{table}"
        );
        assert!(
            table.contains("pingora 1 clean of 2, discarded with lag 7.2 ms"),
            "{table}"
        );
        assert!(table.contains("at most 3 runs: none."), "{table}");
        let mut stalled = results.clone();
        if let Some(m) = stalled[0].max_rate.as_mut() {
            m.overstayed_s = vec![19.29];
        }
        let table = max_rate_table(&Plan::quick(), &stalled);
        assert!(
            table.contains("at most 3 runs: pingora (took 19.3 s)."),
            "{table}"
        );
        let mut lagging = results.clone();
        for r in &mut lagging[2..3] {
            if let Some(half) = r.max_rate.as_mut().and_then(|m| m.half.as_mut()) {
                half.run.max_dispatch_lag_ms = 20.0;
                half.clean = false;
                half.attempts = 3;
            }
        }
        let table = max_rate_table(&Plan::quick(), &lagging);
        assert!(
            table.contains(
                "2.00×, not conclusive (proxy-tracing: no clean run in 3 attempt(s), the \
                 generator lagged at least 20 ms in each)"
            ),
            "{table}"
        );
        assert!(table.contains("2500 req/s, half of proxy-tracing's max rate"));
        // The full plan wants 5 clean runs; the rows have one each.
        let full = max_rate_table(&Plan::full(), &results);
        assert!(
            full.contains(
                "2.00×, missed (from fewer clean runs than the 5 wanted: pingora 1, \
                 proxy-tracing 1)"
            ),
            "{full}"
        );
        let mut nothing_added = results.clone();
        if let Some(half) = nothing_added[0]
            .max_rate
            .as_mut()
            .and_then(|m| m.half.as_mut())
        {
            half.added_p99_ms = Some(-0.5);
        }
        let table = max_rate_table(&Plan::quick(), &nothing_added);
        assert!(
            table.contains("no ratio, bare pingora added -0.50 ms (nothing beyond the direct")
                && table.contains("and tracing on 1.00 ms"),
            "{table}"
        );
        assert!(table.contains("97 %") && table.contains("target on CPU [1]"));
        assert_eq!(max_rate_table(&Plan::quick(), &[]), "");
    }

    #[test]
    fn cpu_bar_plot_writes_an_svg() {
        let dir = std::env::temp_dir().join(format!("llmtrace-load-bars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bars.svg");
        cpu_bar_plot(&path, "one", &[("pingora".to_owned(), 75.0)]).unwrap();
        let bars = [
            ("pingora".to_owned(), 75.0),
            ("proxy-tracing".to_owned(), 225.0),
            ("litellm".to_owned(), 20_000.0),
        ];
        cpu_bar_plot(&path, "test", &bars).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<rect"), "{svg}");
        assert!(svg.contains("proxy-tracing") && svg.contains("20000 ↑"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn formatting() {
        assert_eq!(ms(Some(0.1234)), "0.12");
        assert_eq!(ms(Some(123.456)), "123.5");
        assert_eq!(ms(None), "–");
        assert_eq!(pair(Some(1.0), None), "1.00 / –");
    }
}
