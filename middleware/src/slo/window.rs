//! Good/total counts in fixed time buckets: a ring that covers a bounded span of time in
//! bounded memory, whatever the traffic.

/// Counts of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events that met the objective.
    pub good: u64,
    /// All events.
    pub total: u64,
}

impl Counts {
    /// Events that did not meet the objective.
    pub fn bad(&self) -> u64 {
        self.total - self.good
    }

    fn add(&mut self, other: Counts) {
        self.good += other.good;
        self.total += other.total;
    }
}

/// `len` buckets of `width` seconds each; bucket `n` holds the events of seconds
/// `[n * width, (n + 1) * width)` since the Unix epoch. Recording and reading cost O(1) and
/// O(buckets read); advancing clears at most `len` buckets however far time jumps.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    width: u64,
    buckets: Box<[Counts]>,
    /// The newest bucket's number; `None` until the first event.
    head: Option<u64>,
}

impl Ring {
    pub(crate) fn new(width: u64, len: usize) -> Self {
        Self {
            width: width.max(1),
            buckets: vec![Counts::default(); len.max(1)].into_boxed_slice(),
            head: None,
        }
    }

    fn bucket_of(&self, unix_seconds: u64) -> u64 {
        unix_seconds / self.width
    }

    /// Moves the head to the bucket of `unix_seconds`, clearing the buckets it passes. Time
    /// that goes backwards leaves the head where it is.
    fn advance(&mut self, unix_seconds: u64) {
        let bucket = self.bucket_of(unix_seconds);
        let len = self.buckets.len() as u64;
        match self.head {
            None => {
                self.head = Some(bucket);
            }
            Some(head) if bucket > head => {
                let passed = (bucket - head).min(len);
                for n in (bucket - passed + 1)..=bucket {
                    self.buckets[(n % len) as usize] = Counts::default();
                }
                self.head = Some(bucket);
            }
            Some(_) => {}
        }
    }

    /// Counts one event at `unix_seconds`. An event older than the ring is counted in the
    /// oldest bucket it still has (clocks differ by a little between threads).
    pub(crate) fn record(&mut self, unix_seconds: u64, good: bool) {
        self.advance(unix_seconds);
        let head = self.head.unwrap_or(0);
        let len = self.buckets.len() as u64;
        let bucket = self
            .bucket_of(unix_seconds)
            .clamp(head.saturating_sub(len - 1), head);
        let counts = &mut self.buckets[(bucket % len) as usize];
        counts.total += 1;
        counts.good += u64::from(good);
    }

    /// The counts of the buckets that overlap the last `seconds` before `unix_seconds`: the
    /// current bucket and the whole ones before it (at most the ring's length).
    pub(crate) fn sum(&self, unix_seconds: u64, seconds: u64) -> Counts {
        let Some(head) = self.head else {
            return Counts::default();
        };
        let now = self.bucket_of(unix_seconds).max(head);
        let len = self.buckets.len() as u64;
        let wanted = seconds.div_ceil(self.width).clamp(1, len);
        let first = now + 1 - wanted.min(now + 1);
        let mut sum = Counts::default();
        for n in first.max(head.saturating_sub(len - 1))..=head.min(now) {
            sum.add(self.buckets[(n % len) as usize]);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_sum_the_buckets_they_cover() {
        let mut ring = Ring::new(60, 360);
        // One event a minute for 10 minutes, the 8th and 9th bad.
        for minute in 0..10u64 {
            ring.record(1_000_020 + minute * 60, !(7..9).contains(&minute));
        }
        let now = 1_000_020 + 9 * 60;
        assert_eq!(ring.sum(now, 300), Counts { good: 3, total: 5 });
        assert_eq!(ring.sum(now, 3600), Counts { good: 8, total: 10 });
        // Five minutes later the burst has left the 5-minute window.
        assert_eq!(ring.sum(now + 240, 300), Counts { good: 1, total: 1 });
        assert_eq!(ring.sum(now + 300, 300), Counts::default());
    }

    #[test]
    fn a_jump_clears_what_it_passes_and_late_events_land_in_range() {
        let mut ring = Ring::new(60, 10);
        for s in 0..600 {
            ring.record(s, true);
        }
        assert_eq!(ring.sum(599, 600).total, 600);
        ring.record(10_000_000, false);
        assert_eq!(ring.sum(10_000_000, 600), Counts { good: 0, total: 1 });
        // An event from long ago counts in the oldest bucket still held.
        ring.record(5, true);
        assert_eq!(ring.sum(10_000_000, 600), Counts { good: 1, total: 2 });
        assert_eq!(ring.sum(10_000_000, 60), Counts { good: 0, total: 1 });
    }
}
