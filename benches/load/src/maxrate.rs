//! The max-rate phase (issue 12) and its latency at half the gateway's max rate.
//!
//! Max rate: non-streamed requests with a short prompt to a mock that answers at once, sent by
//! `wrk` (one thread, a fixed number of keep-alive connections, closed loop) for a fixed time,
//! the target alone on one core and everything else (wrk, the mocks, the sink) on another;
//! req/s and latency from wrk, the target's CPU per request from `/proc`.
//!
//! Half rate: once every target's max rate is known, each target is started again and driven
//! open-loop by this harness's generator (wrk has no fixed-rate mode; wrk2 is not packaged) at
//! half the gateway's (proxy-tracing's) max rate, pinned the same way; p50/p99 and the p99
//! added over the direct baseline's at the same rate.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::affinity::{self, Layout};
use crate::bench::{Plan, TargetResult};
use crate::client::{self, RunReport, Workload};
use crate::procfs;
use crate::stats::added;
use crate::targets::{self, Programs, Running, TargetKind, Upstreams};
use crate::wrk::{self, WrkReport};

/// What the max-rate phase measured on one target.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MaxRate {
    /// wrk's keep-alive connections.
    pub connections: usize,
    /// wrk's report of the measured run (`None`: wrk missing or failed, see `error`).
    pub wrk: Option<WrkReport>,
    /// Answers per second (wrk's `Requests/sec`; 0 when not measured).
    pub rps: f64,
    /// CPU time of the target's process(es) per request, µs.
    pub cpu_us_per_request: Option<f64>,
    /// The target's CPU time over the wall time of the run (1.0: its core was saturated; well
    /// below: the generator, not the target, set the rate).
    pub target_cpu_share: f64,
    /// How the processes were pinned (`None`: not pinned, fewer than two CPUs or an error).
    pub pinning: Option<String>,
    /// Why there are no numbers (wrk not installed, wrk failed).
    pub error: Option<String>,
    /// Latency at half the gateway's max rate (filled by [`half_rate_pass`]).
    pub half: Option<HalfRate>,
    /// How long (s) the measured wrk runs that overstayed their duration took, each
    /// discarded and run again ([`OVERSTAY_S`]); empty when the first run counted.
    pub overstayed_s: Vec<f64>,
}

/// A wrk run that takes this much longer than its duration is discarded and run again (at
/// most [`MAX_RATE_ATTEMPTS`] runs in all). wrk stops its thread from a 100 ms timer of its
/// own event loop, which a slow or stalled target cannot hold up: a run that overstays
/// measured wrk's process not running (its core taken, the machine paused), and its
/// latencies, corrected by wrk for the requests it did not send, are seconds long.
pub const OVERSTAY_S: f64 = 1.0;

/// The most wrk runs the measured part of the max-rate phase makes.
pub const MAX_RATE_ATTEMPTS: usize = 3;

/// Latency of one target, open-loop, non-streamed, at a rate below its limit.
#[derive(Clone, Debug, Serialize)]
pub struct HalfRate {
    /// Requests per second offered.
    pub rate: f64,
    /// The clean run with the median p99 (one stall on a shared machine sinks one run, not
    /// the median); when no run was clean, the one whose generator lagged least.
    pub run: RunReport,
    /// Whether `run` is clean: the generator's dispatch lag stayed within
    /// [`MAX_HALF_RATE_LAG_MS`] for every request of it.
    pub clean: bool,
    /// Every clean run's p99, ms, in the order run.
    pub p99s_ms: Vec<Option<f64>>,
    /// Runs made in all (clean and discarded).
    pub attempts: usize,
    /// The largest dispatch lag of each discarded run, ms, in the order run.
    pub discarded_lags_ms: Vec<f64>,
    /// Its p99 minus the direct baseline's at the same rate, ms.
    pub added_p99_ms: Option<f64>,
    /// The target's CPU time per answered request, µs: the median over the clean runs (over
    /// every run when none was clean). Every target gets the same offered rate here, below
    /// its limit, so this compares targets under equal load, where the max-rate phase
    /// compares a saturated target with one the generator could not saturate.
    pub cpu_us_per_request: Option<f64>,
    /// The target's CPU time over the wall time of the run that `cpu_us_per_request` comes
    /// from (the median run by CPU).
    pub target_cpu_share: Option<f64>,
}

/// The target's CPU over one half-rate run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunCpu {
    /// The generator's largest dispatch lag in the run, ms (which says whether it was clean).
    pub lag_ms: f64,
    /// CPU time per answered request, µs (`None`: nothing answered).
    pub us_per_request: Option<f64>,
    /// CPU time over wall time.
    pub share: f64,
}

/// The median CPU per request of the clean runs (lag within `bound_ms`), or of all runs when
/// none was clean, with that run's CPU share.
pub fn median_cpu(runs: &[RunCpu], bound_ms: f64) -> (Option<f64>, Option<f64>) {
    let measured = |r: &&RunCpu| r.us_per_request.is_some();
    let mut pick: Vec<&RunCpu> = runs
        .iter()
        .filter(|r| r.lag_ms <= bound_ms)
        .filter(measured)
        .collect();
    if pick.is_empty() {
        pick = runs.iter().filter(measured).collect();
    }
    pick.sort_by(|a, b| {
        let key = |r: &RunCpu| r.us_per_request.unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b))
    });
    let Some(middle) = pick.len().checked_sub(1).map(|n| pick[n / 2]) else {
        return (None, None);
    };
    (middle.us_per_request, Some(middle.share))
}

/// Above this dispatch lag of the generator (any request of a half-rate run), the run
/// measured the generator too: it is discarded and run again.
pub const MAX_HALF_RATE_LAG_MS: f64 = 5.0;

/// The runs of one target at one rate: clean ones (the generator's dispatch lag within
/// `bound_ms` for every request), and the ones discarded for lagging more.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Clean runs, in the order run.
    pub clean: Vec<RunReport>,
    /// Runs discarded because the generator lagged, in the order run.
    pub discarded: Vec<RunReport>,
}

/// Calls `run` until `wanted` runs were clean or `attempts` runs were made, whichever comes
/// first; after a discarded run, waits `pause` (a neighbour's burst may pass) before the
/// next.
pub async fn clean_runs<F, Fut>(
    wanted: usize,
    attempts: usize,
    bound_ms: f64,
    pause: Duration,
    mut run: F,
) -> Attempts
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RunReport>,
{
    let mut out = Attempts::default();
    let wanted = wanted.max(1);
    for _ in 0..attempts.max(wanted) {
        let report = run().await;
        if report.max_dispatch_lag_ms <= bound_ms {
            out.clean.push(report);
            if out.clean.len() >= wanted {
                break;
            }
        } else {
            out.discarded.push(report);
            tokio::time::sleep(pause).await;
        }
    }
    out
}

impl HalfRate {
    /// The result of `attempts` at `rate`: the median clean run, else the least lagging one.
    pub fn of(rate: f64, attempts: Attempts) -> HalfRate {
        let p99s_ms = attempts.clean.iter().map(|r| r.total.p99_ms).collect();
        let discarded_lags_ms: Vec<f64> = attempts
            .discarded
            .iter()
            .map(|r| r.max_dispatch_lag_ms)
            .collect();
        let made = attempts.clean.len() + attempts.discarded.len();
        let clean = !attempts.clean.is_empty();
        let run = if clean {
            median_by_p99(attempts.clean)
        } else {
            let least = |a: &RunReport, b: &RunReport| {
                a.max_dispatch_lag_ms.total_cmp(&b.max_dispatch_lag_ms)
            };
            let mut runs = attempts.discarded;
            runs.sort_by(least);
            runs.into_iter()
                .next()
                .unwrap_or_else(|| client::RunResult::default().report())
        };
        HalfRate {
            rate,
            run,
            clean,
            p99s_ms,
            attempts: made,
            discarded_lags_ms,
            added_p99_ms: None,
            cpu_us_per_request: None,
            target_cpu_share: None,
        }
    }
}

/// The Lua script for `endpoint`'s model in `dir` (written once per model).
fn lua_script(dir: &Path, workload: &Workload) -> Result<PathBuf, String> {
    let body = workload.body();
    let path = dir.join(format!("wrk-{}.lua", workload.model));
    let text = wrk::script(&String::from_utf8_lossy(&body), client::API_KEY);
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// Pins the target's processes alone to `layout.target` and everything else this harness
/// runs (itself, the mocks, the sink, the programs it starts later) to `layout.rest`; a
/// sentence saying so, or why not.
fn pin(layout: &Layout, target: &[u32]) -> Result<String, String> {
    let me = std::process::id();
    // Everything descends from this process: pin it all to `rest`, then the target apart.
    affinity::pin_tree(&[me], &layout.rest).map_err(|e| format!("pinning the harness: {e}"))?;
    affinity::pin_tree(target, &layout.target).map_err(|e| format!("pinning the target: {e}"))?;
    Ok(format!(
        "target on CPU {:?}, generator (wrk), mocks and sink on CPU {:?}",
        layout.target, layout.rest
    ))
}

fn pin_or_say(layout: Option<&Layout>, target: &[u32]) -> Option<String> {
    layout.and_then(|layout| match pin(layout, target) {
        Ok(how) => Some(how),
        Err(error) => {
            eprintln!("   not pinned: {error}");
            None
        }
    })
}

fn unpin(layout: Option<&Layout>) {
    if let Some(layout) = layout {
        if let Err(error) = affinity::pin_tree(&[std::process::id()], &layout.all) {
            eprintln!("   unpinning: {error}");
        }
    }
}

/// The processes whose CPU counts: the mock for the direct baseline, else the target's.
fn measured_pids(running: &Running, upstreams: &Upstreams) -> Vec<u32> {
    if running.kind == TargetKind::Direct {
        vec![upstreams.instant.pid()]
    } else {
        running.pids()
    }
}

fn max_rate_workload(plan: &Plan, running: &Running) -> Workload {
    Workload {
        stream: false,
        prompt_words: plan.max_rate_prompt_words,
        ..plan.workload(&running.instant, false)
    }
}

/// The max-rate phase on one running target: wrk's warm-up, then the measured run with the
/// target's CPU read around it. Without wrk, says so (no other generator's numbers).
pub async fn run_max_rate(
    plan: &Plan,
    running: &Running,
    upstreams: &Upstreams,
    layout: Option<&Layout>,
    out: &Path,
) -> MaxRate {
    let n = plan.max_rate_connections;
    let not_measured = |error: String| {
        eprintln!("   max rate: {error}");
        MaxRate {
            connections: n,
            error: Some(error),
            ..MaxRate::default()
        }
    };
    let Some(program) = wrk::find() else {
        return not_measured("wrk is not installed (apt-get install wrk): not measured".into());
    };
    let workload = max_rate_workload(plan, running);
    let script = match lua_script(out, &workload) {
        Ok(script) => script,
        Err(error) => return not_measured(error),
    };
    let url = format!("{}/v1/chat/completions", workload.base_url);
    let target = measured_pids(running, upstreams);
    let pinning = pin_or_say(layout, &target);
    let secs = Duration::from_secs_f64;
    let warm = wrk::run(&program, &script, &url, n, secs(plan.max_rate_warmup_s)).await;
    let mut overstayed_s = Vec::new();
    let (measured, wall, spent) = loop {
        let before = procfs::cpu_seconds(&running.instant.pids);
        let started = Instant::now();
        let measured = match &warm {
            Ok(_) => wrk::run(&program, &script, &url, n, secs(plan.max_rate_s)).await,
            Err(error) => Err(error.clone()),
        };
        let wall = started.elapsed().as_secs_f64();
        let spent = procfs::cpu_seconds(&running.instant.pids) - before;
        let overstay = match &measured {
            Ok(report) if report.duration_s > plan.max_rate_s.ceil() + OVERSTAY_S => {
                report.duration_s
            }
            _ => break (measured, wall, spent),
        };
        overstayed_s.push(overstay);
        if overstayed_s.len() >= MAX_RATE_ATTEMPTS {
            break (measured, wall, spent);
        }
        eprintln!(
            "   max rate: wrk took {overstay:.1} s for {:.0} s (its process did not run): \
             discarded, run again",
            plan.max_rate_s
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    unpin(layout);
    let report = match measured {
        Ok(report) => report,
        Err(error) => return not_measured(format!("wrk failed: {error}")),
    };
    let cpu_us_per_request = (report.ok() > 0).then(|| spent / report.ok() as f64 * 1e6);
    eprintln!(
        "   max rate (wrk, {n} conns)  {:>8.0} rps  requests {}  errors {}  p50 {} ms  p99 {} \
         ms  cpu {} µs/req, {:.0} % of a core",
        report.rps,
        report.requests,
        report.errors(),
        report.p50_ms.map_or("-".into(), |v| format!("{v:.2}")),
        report.p99_ms.map_or("-".into(), |v| format!("{v:.2}")),
        cpu_us_per_request.map_or("-".to_owned(), |c| format!("{c:.1}")),
        spent / wall * 100.0,
    );
    MaxRate {
        connections: n,
        rps: report.rps,
        cpu_us_per_request,
        target_cpu_share: spent / wall,
        pinning,
        error: None,
        half: None,
        wrk: Some(report),
        overstayed_s,
    }
}

/// The rate of the half-rate pass for a target whose max rate is `own`: half the gateway's
/// (`gateway`, the proxy-tracing target's max rate) when that is at most 80 % of the target's
/// own max rate, half its own otherwise (LiteLLM); never above `cap`, the most this harness's
/// generator drives.
pub fn half_rate_of(gateway: Option<f64>, own: f64, cap: f64) -> f64 {
    match gateway {
        Some(gateway) if gateway / 2.0 <= 0.8 * own => gateway / 2.0,
        _ => own / 2.0,
    }
    .min(cap)
    .max(1.0)
}

/// The run with the median p99 (the lower middle one of an even count; runs without a p99
/// sort last).
fn median_by_p99(mut runs: Vec<RunReport>) -> RunReport {
    runs.sort_by(|a, b| {
        let key = |r: &RunReport| r.total.p99_ms.unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b))
    });
    let middle = (runs.len().max(1) - 1) / 2;
    runs.swap_remove(middle)
}

/// The gateway's max rate in this run (proxy-tracing's), if measured.
pub fn gateway_rate(results: &[TargetResult]) -> Option<f64> {
    results
        .iter()
        .find(|r| r.target == TargetKind::ProxyTracing)
        .and_then(|r| r.max_rate.as_ref())
        .filter(|m| m.rps > 0.0)
        .map(|m| m.rps)
}

/// Latency at half the gateway's max rate, for every target with a max rate: started again,
/// pinned as in the max-rate phase, warmed up, measured; then the added p99 over direct's.
pub async fn half_rate_pass(
    plan: &Plan,
    programs: &Programs,
    upstreams: &Upstreams,
    scratch: &Path,
    layout: Option<&Layout>,
    results: &mut [TargetResult],
) {
    if plan.half_rate_s <= 0.0 {
        return;
    }
    let gateway = gateway_rate(results);
    for result in results.iter_mut() {
        let Some(max) = result.max_rate.as_mut().filter(|m| m.rps > 0.0) else {
            continue;
        };
        let kind = result.target;
        let rate = half_rate_of(gateway, max.rps, plan.half_rate_cap);
        eprintln!("== {} at {rate:.0} req/s (half rate)", kind.name());
        let running = match targets::start(kind, programs, upstreams, scratch) {
            Ok(running) => running,
            Err(error) => {
                eprintln!("   could not start {}: {error}", kind.name());
                continue;
            }
        };
        let workload = max_rate_workload(plan, &running);
        let target = measured_pids(&running, upstreams);
        pin_or_say(layout, &target);
        let http = client::http_client();
        let secs = Duration::from_secs_f64;
        let _ = client::run_open_loop(&http, &workload, rate, secs(plan.half_rate_warmup_s)).await;
        let cpu = std::cell::RefCell::new(Vec::new());
        let attempts = clean_runs(
            plan.half_rate_runs,
            plan.half_rate_attempts,
            MAX_HALF_RATE_LAG_MS,
            Duration::from_secs(1),
            || async {
                let (before, started) = (procfs::cpu_seconds(&target), Instant::now());
                let run =
                    client::run_open_loop(&http, &workload, rate, secs(plan.half_rate_s)).await;
                let (spent, wall) = (procfs::cpu_seconds(&target) - before, started.elapsed());
                let report = run.report();
                let run_cpu = RunCpu {
                    lag_ms: report.max_dispatch_lag_ms,
                    us_per_request: (report.ok > 0).then(|| spent / report.ok as f64 * 1e6),
                    share: spent / wall.as_secs_f64(),
                };
                cpu.borrow_mut().push(run_cpu);
                let lagged = report.max_dispatch_lag_ms > MAX_HALF_RATE_LAG_MS;
                eprintln!(
                    "{}  cpu {} µs/req{}",
                    crate::bench::line(&format!("half rate {rate:.0}"), &run),
                    run_cpu
                        .us_per_request
                        .map_or("-".to_owned(), |c| format!("{c:.1}")),
                    if lagged { "  discarded (lag)" } else { "" }
                );
                report
            },
        )
        .await;
        unpin(layout);
        drop(http);
        running.stop();
        let mut half = HalfRate::of(rate, attempts);
        (half.cpu_us_per_request, half.target_cpu_share) =
            median_cpu(&cpu.into_inner(), MAX_HALF_RATE_LAG_MS);
        max.half = Some(half);
    }
    let direct = results
        .iter()
        .find(|r| r.target == TargetKind::Direct)
        .and_then(|r| r.max_rate.as_ref()?.half.clone());
    for half in results
        .iter_mut()
        .filter_map(|r| r.max_rate.as_mut()?.half.as_mut())
    {
        let base = direct.as_ref().filter(|d| d.rate == half.rate);
        half.added_p99_ms = added(half.run.total.p99_ms, base.and_then(|d| d.run.total.p99_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_run_by_p99_counts() {
        let run = |p99_ms: Option<f64>| {
            let mut report = client::RunResult::default().report();
            report.total.p99_ms = p99_ms;
            report
        };
        let runs = vec![
            run(Some(9.0)),
            run(None),
            run(Some(180.0)),
            run(Some(5.0)),
            run(Some(6.0)),
        ];
        assert_eq!(median_by_p99(runs).total.p99_ms, Some(9.0));
        assert_eq!(
            median_by_p99(vec![run(Some(2.0)), run(Some(1.0))])
                .total
                .p99_ms,
            Some(1.0)
        );
        assert_eq!(median_by_p99(vec![run(Some(3.0))]).total.p99_ms, Some(3.0));
    }

    fn lagging(lag_ms: f64, p99_ms: f64) -> RunReport {
        let mut report = client::RunResult::default().report();
        report.max_dispatch_lag_ms = lag_ms;
        report.total.p99_ms = Some(p99_ms);
        report
    }

    /// Runs `lags` in order (one per call) through `clean_runs`.
    fn attempt(lags: &[f64], wanted: usize, attempts: usize) -> (Attempts, usize) {
        let calls = std::cell::Cell::new(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let out = runtime.block_on(clean_runs(wanted, attempts, 5.0, Duration::ZERO, || {
            let i = calls.get();
            calls.set(i + 1);
            std::future::ready(lagging(lags[i], 10.0 + i as f64))
        }));
        (out, calls.get())
    }

    #[test]
    fn a_run_whose_generator_lagged_is_run_again() {
        let (out, calls) = attempt(&[20.0, 5.0, 3.0, 9.0, 1.0], 3, 10);
        assert_eq!(calls, 5);
        assert_eq!(out.clean.len(), 3);
        assert_eq!(out.discarded.len(), 2);
        let half = HalfRate::of(2000.0, out);
        assert!(half.clean);
        assert_eq!(half.attempts, 5);
        assert_eq!(half.discarded_lags_ms, vec![20.0, 9.0]);
        assert_eq!(half.p99s_ms, vec![Some(11.0), Some(12.0), Some(14.0)]);
        assert_eq!(half.run.total.p99_ms, Some(12.0));
    }

    #[test]
    fn attempts_are_bounded_and_no_clean_run_says_so() {
        let (out, calls) = attempt(&[20.0, 8.0, 30.0, 1.0], 1, 3);
        assert_eq!(calls, 3);
        let half = HalfRate::of(2000.0, out);
        assert!(!half.clean);
        assert_eq!(half.attempts, 3);
        assert!(half.p99s_ms.is_empty());
        // The least lagging of the discarded runs is shown.
        assert_eq!(half.run.max_dispatch_lag_ms, 8.0);
        // Fewer clean runs than wanted: the ones found count.
        let (out, calls) = attempt(&[1.0, 8.0, 9.0], 2, 3);
        assert_eq!((calls, out.clean.len()), (3, 1));
        assert!(HalfRate::of(1.0, out).clean);
    }

    #[test]
    fn cpu_at_half_rate_is_the_median_of_the_clean_runs() {
        let run = |lag_ms, us: Option<f64>| RunCpu {
            lag_ms,
            us_per_request: us,
            share: us.unwrap_or(0.0) / 100.0,
        };
        let runs = [
            run(1.0, Some(40.0)),
            run(9.0, Some(10.0)),
            run(0.5, Some(60.0)),
            run(2.0, Some(50.0)),
            run(0.1, None),
        ];
        // The lagging run (10 µs) and the one that answered nothing do not count.
        assert_eq!(median_cpu(&runs, 5.0), (Some(50.0), Some(0.5)));
        // No clean run: all runs that answered.
        assert_eq!(median_cpu(&runs[1..2], 5.0), (Some(10.0), Some(0.1)));
        assert_eq!(median_cpu(&[], 5.0), (None, None));
        assert_eq!(median_cpu(&runs[4..], 5.0), (None, None));
    }

    #[test]
    fn half_rate_is_the_gateways_unless_the_target_is_slower() {
        assert_eq!(half_rate_of(Some(4400.0), 12_600.0, 4000.0), 2200.0);
        // A gateway-like target measured a little below the gateway still gets its rate.
        assert_eq!(half_rate_of(Some(4400.0), 3000.0, 4000.0), 2200.0);
        assert_eq!(half_rate_of(Some(4400.0), 2500.0, 4000.0), 1250.0);
        assert_eq!(half_rate_of(Some(4400.0), 47.0, 4000.0), 23.5);
        assert_eq!(half_rate_of(None, 12_600.0, 4000.0), 4000.0);
        assert_eq!(half_rate_of(Some(10_000.0), 12_600.0, 4000.0), 4000.0);
        assert_eq!(half_rate_of(Some(0.5), 0.5, 4000.0), 1.0);
    }
}
