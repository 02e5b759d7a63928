//! Inter-chunk gap statistics in O(1) memory per stream.

use std::time::Duration;

/// Sub-buckets per power of two: bucket width is 1/8 of its lower bound.
const SUB_BUCKETS: usize = 8;
/// Powers of two covered, in microseconds: up to 2^40 µs (~12.7 days).
const OCTAVES: usize = 41;
const BUCKETS: usize = OCTAVES * SUB_BUCKETS;

/// Count, mean, max (exact) and p50/p99 (estimated) of the gaps between content chunks.
///
/// Quantiles come from a log-linear histogram: gaps are bucketed by their power of two in
/// microseconds, each octave split into 8 equal sub-buckets, and a quantile is reported as
/// the midpoint of the bucket it falls in. The relative error is at most 1/16 (6.25 %) of
/// the true value (plus 0.5 µs), whatever the stream's length or distribution, and the
/// memory is bounded: of the 328 buckets, only the run from the shortest gap's to the longest
/// gap's has counters, allocated at the second chunk (the first gap). A stream whose gaps stay
/// within one power of two (a token a second) keeps ~16 counters, not 328 (1.3 KiB per open
/// stream).
#[derive(Debug, Default, Clone)]
pub struct GapStats {
    count: u64,
    sum_us: u64,
    max_us: u64,
    stalls: u64,
    /// The bucket that `counts[0]` counts.
    first: usize,
    /// Counters of buckets `first..first + counts.len()`; empty before the first gap.
    counts: Vec<u32>,
}

impl GapStats {
    /// Records one gap; `stall` counts it as a stall (over the configured threshold).
    pub fn record(&mut self, gap: Duration, stall: bool) {
        let us = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
        if stall {
            self.stalls += 1;
        }
        let counter = self.counter(bucket_of(us));
        *counter = counter.saturating_add(1);
    }

    /// The counter of bucket `at`, the run of counters widened to reach it (grown by whole
    /// octaves, never past the last bucket, so a stream keeps at most [`BUCKETS`] counters).
    fn counter(&mut self, at: usize) -> &mut u32 {
        if self.counts.is_empty() {
            self.first = at;
        }
        if at < self.first {
            let shift = self.first - at;
            self.counts.splice(0..0, std::iter::repeat_n(0, shift));
            self.first = at;
        }
        let index = at - self.first;
        if index >= self.counts.len() {
            if index >= self.counts.capacity() {
                let wanted = (index + SUB_BUCKETS).min(BUCKETS - self.first);
                self.counts.reserve_exact(wanted - self.counts.len());
            }
            self.counts.resize(index + 1, 0);
        }
        &mut self.counts[index]
    }

    /// `(bucket, count)` of each counter kept, in bucket order.
    fn counted(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        (self.first..).zip(self.counts.iter().copied())
    }

    /// Number of gaps recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Gaps counted as stalls.
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// The mean gap.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.sum_us / self.count))
    }

    /// The longest gap.
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.max_us))
    }

    /// The estimated `q` quantile (`0.0..=1.0`), see the type docs for the error bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.counts.is_empty() {
            return None;
        }
        // Rank of the wanted value, 1-based (nearest-rank method).
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (at, n) in self.counted() {
            seen += u64::from(n);
            if seen >= rank {
                let (low, high) = bounds_of(at);
                // Never report more than the exact maximum.
                let mid = low + (high - low) / 2;
                return Some(Duration::from_micros(mid.min(self.max_us)));
            }
        }
        self.max()
    }

    /// Iterates `(representative gap, count)` per non-empty bucket, to replay the gaps into
    /// a metrics histogram at the end of the stream.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u32)> + '_ {
        self.counted().filter(|(_, n)| *n > 0).map(|(at, n)| {
            let (low, high) = bounds_of(at);
            (Duration::from_micros(low + (high - low) / 2), n)
        })
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB_BUCKETS as u64 {
        // 0..8 µs: one bucket per microsecond (octaves 0..3 collapse here).
        return us as usize;
    }
    let octave = 63 - us.leading_zeros() as usize; // >= 3
    let sub = ((us >> (octave - 3)) & 0x7) as usize;
    ((octave - 2) * SUB_BUCKETS + sub).min(BUCKETS - 1)
}

/// `[low, high)` in microseconds of bucket `at`.
fn bounds_of(at: usize) -> (u64, u64) {
    if at < SUB_BUCKETS {
        return (at as u64, at as u64 + 1);
    }
    let octave = at / SUB_BUCKETS + 2;
    let sub = (at % SUB_BUCKETS) as u64;
    let width = 1u64 << (octave - 3);
    let low = (1u64 << octave) + sub * width;
    (low, low + width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_contiguously() {
        let mut previous_high = 0;
        for at in 0..BUCKETS - 1 {
            let (low, high) = bounds_of(at);
            assert_eq!(low, previous_high, "bucket {at}");
            assert!(high > low);
            previous_high = high;
        }
        for us in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            20_000,
            1_000_000,
            123_456_789,
        ] {
            let (low, high) = bounds_of(bucket_of(us));
            assert!(low <= us && us < high, "{us} not in [{low}, {high})");
        }
    }

    #[test]
    fn quantiles_are_within_the_error_bound() {
        let mut stats = GapStats::default();
        // 1..=1000 ms
        for ms in 1..=1000u64 {
            stats.record(Duration::from_millis(ms), ms > 900);
        }
        let check = |q: f64, truth_ms: f64| {
            let got = stats.quantile(q).unwrap().as_secs_f64() * 1000.0;
            assert!(
                (got - truth_ms).abs() <= truth_ms / 16.0 + 0.001,
                "q{q}: {got} vs {truth_ms}"
            );
        };
        check(0.5, 500.0);
        check(0.99, 990.0);
        assert_eq!(stats.max(), Some(Duration::from_millis(1000)));
        assert_eq!(stats.mean(), Some(Duration::from_micros(500_500)));
        assert_eq!(stats.stalls(), 100);
        assert_eq!(
            stats.buckets().map(|(_, n)| u64::from(n)).sum::<u64>(),
            1000
        );
    }

    /// Gaps arriving out of order of size widen the run of counters both ways, and the
    /// answers are those of one counter per bucket.
    #[test]
    fn counters_cover_only_the_gaps_seen() {
        let gaps_us = [
            1_000_000u64,
            1_020_000,
            3,
            980_000,
            50_000_000_000_000,
            40,
            1_000_000,
        ];
        let mut stats = GapStats::default();
        let mut dense = [0u32; BUCKETS];
        for us in gaps_us {
            stats.record(Duration::from_micros(us), false);
            dense[bucket_of(us)] += 1;
        }
        let want: Vec<(usize, u32)> = dense
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(at, n)| (at, *n))
            .collect();
        let got: Vec<(usize, u32)> = stats.counted().filter(|(_, n)| *n > 0).collect();
        assert_eq!(got, want);
        assert!(stats.counts.capacity() <= BUCKETS);
        assert_eq!(stats.first, bucket_of(3));

        let mut steady = GapStats::default();
        for ms in [1000u64, 1001, 999, 1000, 1002] {
            steady.record(Duration::from_millis(ms), false);
        }
        assert!(steady.counts.capacity() <= 2 * SUB_BUCKETS);
        assert_eq!(steady.quantile(0.5), steady.quantile(0.99));
    }

    #[test]
    fn empty_and_single() {
        let mut stats = GapStats::default();
        assert_eq!(stats.quantile(0.5), None);
        stats.record(Duration::from_millis(20), false);
        let p50 = stats.quantile(0.5).unwrap();
        assert!(p50 <= Duration::from_millis(20) && p50 >= Duration::from_micros(18_750));
    }
}
