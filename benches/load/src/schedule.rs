//! The open-loop schedule: request `i` is due at `i / rate` seconds after the start, whatever
//! happened to the requests before it. Latency is measured from that due time, not from when
//! the request could actually be sent, so a target that stalls is charged for the queue it
//! causes (no coordinated omission).

use std::time::Duration;

/// Evenly spaced send times for `rate` requests per second over `duration`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    rate: f64,
    count: u64,
}

impl Schedule {
    /// The schedule for `rate` requests per second (> 0) during `duration`.
    pub fn new(rate: f64, duration: Duration) -> Schedule {
        assert!(
            rate > 0.0 && rate.is_finite(),
            "rate must be positive, got {rate}"
        );
        Schedule {
            rate,
            count: (rate * duration.as_secs_f64()).floor() as u64,
        }
    }

    /// How many requests it sends.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether it sends nothing (a duration shorter than one interval).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The offsets from the start at which requests are due, in order.
    pub fn offsets(&self) -> impl Iterator<Item = Duration> + use<> {
        let rate = self.rate;
        (0..self.count).map(move |i| Duration::from_secs_f64(i as f64 / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_within_the_duration() {
        let s = Schedule::new(200.0, Duration::from_secs(3));
        assert_eq!(s.len(), 600);
        let offsets: Vec<Duration> = s.offsets().collect();
        assert_eq!(offsets[0], Duration::ZERO);
        assert_eq!(offsets[1], Duration::from_millis(5));
        assert_eq!(offsets[200], Duration::from_secs(1));
        assert!(*offsets.last().unwrap() < Duration::from_secs(3));
        assert!(offsets.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn fractional_rates() {
        let s = Schedule::new(2.5, Duration::from_secs(2));
        assert_eq!(s.len(), 5);
        assert_eq!(s.offsets().nth(4), Some(Duration::from_millis(1600)));
        assert!(Schedule::new(0.5, Duration::from_secs(1)).is_empty());
    }

    #[test]
    #[should_panic(expected = "rate must be positive")]
    fn zero_rate_is_refused() {
        let _ = Schedule::new(0.0, Duration::from_secs(1));
    }
}
