//! Canary cohorts: a sticky, hash-based split of traffic, and the comparison of each cohort
//! with the control on TTFT (Mann–Whitney rank test) and errors (two-proportion z-test), with
//! how many more requests a decision needs.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Buckets a key falls in: weights are shares of these.
pub const BUCKETS: u32 = 10_000;
/// TTFT samples kept per cohort (the most recent).
pub const MAX_SAMPLES: usize = 4096;
/// Significance level of the verdicts.
pub const ALPHA: f64 = 0.05;
/// Power the "requests needed" estimate aims for.
pub const POWER: f64 = 0.8;
const Z_ALPHA: f64 = 1.959_963_984_540_054; // two-sided 5 %
const Z_POWER: f64 = 0.841_621_233_572_914; // 80 %

/// The bucket (`0..BUCKETS`) of `key` under `salt` (the route): the same in every gateway,
/// process and version, so a user stays in one cohort across replicas and restarts.
///
/// FNV-1a over `salt`, a 0xFF separator and `key`, then the SplitMix64 finaliser to spread
/// the bits, modulo [`BUCKETS`].
///
/// ```
/// use llmtrace::slo::{bucket, pick};
///
/// let b = bucket("/v1/chat/completions", b"user-17");
/// assert_eq!(b, bucket("/v1/chat/completions", b"user-17"));
/// // 90 % stable, 10 % canary:
/// let cohort = pick(&[90, 10], b);
/// assert!(cohort < 2);
/// ```
pub fn bucket(salt: &str, key: &[u8]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in salt.as_bytes().iter().chain(&[0xff]).chain(key) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash % u64::from(BUCKETS)) as u32
}

/// The cohort whose share of `weights` holds `bucket` (weights in any unit; all zero picks
/// the first).
pub fn pick(weights: &[u32], bucket: u32) -> usize {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return 0;
    }
    let point = u64::from(bucket) * total / u64::from(BUCKETS);
    let mut edge = 0;
    for (i, weight) in weights.iter().enumerate() {
        edge += u64::from(*weight);
        if point < edge {
            return i;
        }
    }
    weights.len() - 1
}

/// What one exchange of a cohort did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CohortOutcome {
    /// Time to first token, when there was one.
    pub ttft: Option<std::time::Duration>,
    /// It failed (see [`super::Outcome::failed`]).
    pub failed: bool,
    /// Input plus output tokens, when reported.
    pub tokens: Option<i64>,
    /// Cost in USD, when known.
    pub cost: Option<f64>,
}

#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    errors: u64,
    tokens: i64,
    cost: f64,
    ttft_ms: VecDeque<f32>,
}

/// Running figures of one cohort: counts, sums, and the last [`MAX_SAMPLES`] TTFTs.
#[derive(Debug)]
pub struct Cohort {
    name: String,
    tally: Mutex<Tally>,
}

/// One cohort's figures at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortSummary {
    /// The cohort.
    pub name: String,
    /// Exchanges counted.
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Failed share.
    pub error_rate: f64,
    /// TTFT median over the kept samples, ms.
    pub ttft_p50_ms: Option<f64>,
    /// TTFT 95th percentile over the kept samples, ms.
    pub ttft_p95_ms: Option<f64>,
    /// TTFT samples behind the percentiles and the rank test.
    pub ttft_samples: usize,
    /// Tokens in all.
    pub tokens: i64,
    /// Cost in all, USD.
    pub cost: f64,
}

impl Cohort {
    /// An empty cohort called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tally: Mutex::new(Tally::default()),
        }
    }

    /// The cohort's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts one exchange.
    pub fn record(&self, outcome: &CohortOutcome) {
        let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        t.requests += 1;
        t.errors += u64::from(outcome.failed);
        t.tokens = t.tokens.saturating_add(outcome.tokens.unwrap_or(0).max(0));
        if let Some(cost) = outcome.cost.filter(|c| c.is_finite() && *c >= 0.0) {
            t.cost += cost;
        }
        if let Some(ttft) = outcome.ttft {
            if t.ttft_ms.len() == MAX_SAMPLES {
                t.ttft_ms.pop_front();
            }
            t.ttft_ms.push_back((ttft.as_secs_f64() * 1000.0) as f32);
        }
    }

    /// The figures now, and the sorted TTFT samples for comparisons.
    fn snapshot(&self) -> (CohortSummary, Vec<f64>) {
        let t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let mut samples: Vec<f64> = t.ttft_ms.iter().map(|ms| f64::from(*ms)).collect();
        samples.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            (!samples.is_empty())
                .then(|| samples[((samples.len() - 1) as f64 * q).round() as usize])
        };
        let summary = CohortSummary {
            name: self.name.clone(),
            requests: t.requests,
            errors: t.errors,
            error_rate: if t.requests == 0 {
                0.0
            } else {
                t.errors as f64 / t.requests as f64
            },
            ttft_p50_ms: quantile(0.5),
            ttft_p95_ms: quantile(0.95),
            ttft_samples: samples.len(),
            tokens: t.tokens,
            cost: t.cost,
        };
        (summary, samples)
    }
}

/// One test of a cohort against the control.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    /// Two-sided p-value; `None` without enough data (fewer than 8 samples a side).
    pub p_value: Option<f64>,
    /// The difference is significant at [`ALPHA`].
    pub significant: bool,
    /// The cohort is worse than the control (slower, or more errors), by the point estimate.
    pub worse: bool,
    /// Requests (per cohort) still needed to detect the observed difference with [`POWER`]
    /// at [`ALPHA`]; 0 once significant, `None` when the observed difference is nil.
    pub more_requests_needed: Option<u64>,
}

/// A cohort compared with the control (the first cohort).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The cohort.
    pub cohort: CohortSummary,
    /// TTFT: Mann–Whitney U (normal approximation, ties corrected).
    pub ttft: Test,
    /// Errors: two-proportion z-test.
    pub errors: Test,
    /// In words: `canary is slower than stable on TTFT (p = 0.003)`, or what it still needs.
    pub verdict: String,
}

/// The control's summary and each other cohort compared with it.
pub fn compare(cohorts: &[Cohort]) -> (Option<CohortSummary>, Vec<Comparison>) {
    let Some((control, rest)) = cohorts.split_first() else {
        return (None, Vec::new());
    };
    let (base, base_ttft) = control.snapshot();
    let comparisons = rest
        .iter()
        .map(|cohort| {
            let (summary, ttft) = cohort.snapshot();
            let ttft_test = rank_test(&base_ttft, &ttft);
            let error_test =
                proportion_test(base.errors, base.requests, summary.errors, summary.requests);
            let verdict = verdict(&base.name, &summary.name, &ttft_test, &error_test);
            Comparison {
                cohort: summary,
                ttft: ttft_test,
                errors: error_test,
                verdict,
            }
        })
        .collect();
    (Some(base), comparisons)
}

fn verdict(control: &str, cohort: &str, ttft: &Test, errors: &Test) -> String {
    let mut found = Vec::new();
    for (test, what, worse, better) in [
        (ttft, "TTFT", "slower", "faster"),
        (errors, "errors", "fails more often", "fails less often"),
    ] {
        if let (true, Some(p)) = (test.significant, test.p_value) {
            let how = if test.worse { worse } else { better };
            found.push(format!(
                "{cohort} {how} than {control} ({what}, p = {p:.3})"
            ));
        }
    }
    if !found.is_empty() {
        return found.join("; ");
    }
    let needs: Vec<String> = [(ttft, "TTFT"), (errors, "errors")]
        .iter()
        .filter_map(|(t, what)| {
            Some(format!(
                "~{} more requests a cohort for {what}",
                t.more_requests_needed?
            ))
        })
        .collect();
    if needs.is_empty() {
        format!("no difference between {cohort} and {control} yet")
    } else {
        format!(
            "no difference between {cohort} and {control} yet; {}",
            needs.join(", ")
        )
    }
}

/// Mann–Whitney U on sorted samples `a` (control) and `b`; "worse" is `b` slower.
fn rank_test(a: &[f64], b: &[f64]) -> Test {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.len() < 8 || b.len() < 8 {
        return Test {
            p_value: None,
            significant: false,
            worse: false,
            more_requests_needed: None,
        };
    }
    // Ranks over the merged samples, ties sharing their mean rank.
    let (mut i, mut j, mut rank, mut r2, mut ties) = (0, 0, 0.0, 0.0, 0.0);
    while i < a.len() || j < b.len() {
        let value = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        let (mut in_a, mut in_b) = (0.0, 0.0);
        while a.get(i) == Some(&value) {
            in_a += 1.0;
            i += 1;
        }
        while b.get(j) == Some(&value) {
            in_b += 1.0;
            j += 1;
        }
        let t = in_a + in_b;
        let mean_rank = rank + (t + 1.0) / 2.0;
        r2 += in_b * mean_rank;
        ties += t * t * t - t;
        rank += t;
    }
    let u2 = r2 - n2 * (n2 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let n = n1 + n2;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let z = if var > 0.0 {
        (u2 - mean) / var.sqrt()
    } else {
        0.0
    };
    let p = 2.0 * (1.0 - phi(z.abs()));
    // The effect as the probability that a cohort sample exceeds a control one (ties
    // half), and Noether's sample size for it with equal groups:
    // N = (zα + zβ)² / (3 (P - ½)²) in all, half of it per group.
    let prob = u2 / (n1 * n2);
    Test {
        p_value: Some(p),
        significant: p < ALPHA,
        worse: prob > 0.5,
        more_requests_needed: needed(
            (Z_ALPHA + Z_POWER).powi(2) / (6.0 * (prob - 0.5).powi(2)),
            n1.min(n2),
            p < ALPHA,
        ),
    }
}

/// Two-proportion z-test of `e1/n1` (control) against `e2/n2`; "worse" is more errors.
fn proportion_test(e1: u64, n1: u64, e2: u64, n2: u64) -> Test {
    if n1 < 8 || n2 < 8 {
        return Test {
            p_value: None,
            significant: false,
            worse: false,
            more_requests_needed: None,
        };
    }
    let (p1, p2) = (e1 as f64 / n1 as f64, e2 as f64 / n2 as f64);
    let pooled = (e1 + e2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    let z = if se > 0.0 { (p2 - p1) / se } else { 0.0 };
    let p = 2.0 * (1.0 - phi(z.abs()));
    let delta = (p2 - p1).abs();
    let required = if delta > 0.0 {
        let a = Z_ALPHA * (2.0 * pooled * (1.0 - pooled)).sqrt();
        let b = Z_POWER * (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt();
        (a + b).powi(2) / (delta * delta)
    } else {
        f64::INFINITY
    };
    Test {
        p_value: Some(p),
        significant: p < ALPHA,
        worse: p2 > p1,
        more_requests_needed: needed(required, n1.min(n2) as f64, p < ALPHA),
    }
}

/// Requests still needed: `required` per group minus `have`, 0 once significant, `None` for
/// no observed difference.
fn needed(required: f64, have: f64, significant: bool) -> Option<u64> {
    if significant {
        return Some(0);
    }
    required
        .is_finite()
        .then(|| (required - have).max(0.0).ceil().min(1e12) as u64)
}

/// The standard normal CDF (Abramowitz and Stegun 7.1.26 for erf; error under 1.5e-7).
fn phi(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn buckets_are_stable_and_weights_split_evenly() {
        // Pinned (and computed independently): a change here would move users between
        // cohorts across a fleet mid-rollout.
        assert_eq!(bucket("/v1/chat/completions", b"user-17"), 6714);
        assert_eq!(bucket("/v1/chat/completions", b"user-18"), 9700);
        assert_ne!(
            bucket("/a", b"user-17"),
            bucket("/b", b"user-17"),
            "salted by route"
        );
        let mut counts = [0u32; 3];
        for i in 0..30_000 {
            counts[pick(&[70, 20, 10], bucket("r", format!("user-{i}").as_bytes()))] += 1;
        }
        for (count, share) in counts.iter().zip([0.7, 0.2, 0.1]) {
            let got = f64::from(*count) / 30_000.0;
            assert!((got - share).abs() < 0.01, "{counts:?}");
        }
        assert_eq!(pick(&[0, 0], 5000), 0);
        assert_eq!(pick(&[1, 0], BUCKETS - 1), 0);
        assert_eq!(pick(&[0, 1], 0), 1);
    }

    #[test]
    fn the_normal_cdf_is_accurate() {
        for (z, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746),
            (1.959_964, 0.975),
            (-2.575_829, 0.005),
        ] {
            assert!((phi(z) - want).abs() < 2e-7, "{z}: {}", phi(z));
        }
    }

    fn cohort(name: &str, ttfts: impl Iterator<Item = u64>, errors: u64) -> Cohort {
        let c = Cohort::new(name);
        for (i, ms) in ttfts.enumerate() {
            c.record(&CohortOutcome {
                ttft: Some(Duration::from_millis(ms)),
                failed: (i as u64) < errors,
                tokens: Some(10),
                cost: Some(0.001),
            });
        }
        c
    }

    #[test]
    fn a_slower_cohort_is_named_and_equal_ones_are_not() {
        // Control 40–60 ms, canary 140–160 ms: no overlap.
        let cohorts = [
            cohort("stable", (0..60).map(|i| 40 + i % 21), 0),
            cohort("canary", (0..60).map(|i| 140 + i % 21), 0),
        ];
        let (base, comparisons) = compare(&cohorts);
        assert_eq!(base.unwrap().requests, 60);
        let c = &comparisons[0];
        assert!(c.ttft.significant && c.ttft.worse, "{c:?}");
        assert!(c.ttft.p_value.unwrap() < 1e-10);
        assert_eq!(c.ttft.more_requests_needed, Some(0));
        assert!(
            c.verdict.starts_with("canary slower than stable (TTFT"),
            "{}",
            c.verdict
        );
        assert_eq!(c.cohort.ttft_p50_ms, Some(150.0));
        assert!((c.cohort.cost - 0.06).abs() < 1e-12);

        // The same distribution: no verdict, and an honest "need more" (or none).
        let same = [
            cohort("stable", (0..200).map(|i| 40 + i % 21), 0),
            cohort("canary", (0..200).map(|i| 41 + i % 21), 0),
        ];
        let (_, comparisons) = compare(&same);
        let c = &comparisons[0];
        assert!(!c.ttft.significant, "{c:?}");
        assert!(c.verdict.starts_with("no difference"), "{}", c.verdict);
        assert!(c.ttft.more_requests_needed.unwrap() > 200, "{c:?}");
    }

    #[test]
    fn errors_are_compared_as_proportions() {
        // 2 % against 12 % on 300 each: z ≈ 4.8.
        let cohorts = [
            cohort("stable", (0..300).map(|_| 50), 6),
            cohort("canary", (0..300).map(|_| 50), 36),
        ];
        let (_, comparisons) = compare(&cohorts);
        let c = &comparisons[0];
        assert!(c.errors.significant && c.errors.worse);
        assert!(c.errors.p_value.unwrap() < 1e-4);
        assert!(!c.ttft.significant, "identical TTFTs");
        assert!(
            c.verdict.contains("canary fails more often than stable"),
            "{}",
            c.verdict
        );
        // 2 % against 3 % on 100 each is far from decided: about 3 800 a cohort are needed.
        let small = [
            cohort("stable", (0..100).map(|_| 50), 2),
            cohort("canary", (0..100).map(|_| 50), 3),
        ];
        let (_, comparisons) = compare(&small);
        let more = comparisons[0].errors.more_requests_needed.unwrap();
        assert!((3500..4000).contains(&more), "{more}");
    }

    #[test]
    fn samples_are_bounded() {
        let c = cohort("x", (0..10_000).map(|i| i % 300), 0);
        let (summary, samples) = c.snapshot();
        assert_eq!(samples.len(), MAX_SAMPLES);
        assert_eq!(summary.requests, 10_000);
    }
}
