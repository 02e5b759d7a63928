//! When each chunk of one stream arrived, compact and capped, for timelines: the viewer draws
//! every recorded chunk as a tick and every stall as a band.

use std::time::Duration;

/// Stalls kept per stream (each becomes a span event); later ones are only counted
/// (`llmtrace.stream.stalls` counts them all).
pub const MAX_STALLS: usize = 16;
/// The largest point cap [`ChunkTimeline::new`] accepts.
pub const MAX_POINTS: u16 = 4096;

/// The arrival times of a stream's content chunks, as millisecond offsets from the request,
/// in at most `cap + 1` points whatever the stream's length, plus its first [`MAX_STALLS`]
/// stalls (kept even when the cap is 0).
///
/// Chunks `0, s, 2s, …` are kept, where the stride `s` starts at 1 and doubles (dropping
/// every other kept point) each time the cap is reached, so the kept points always cover the
/// whole stream evenly; the last chunk is always kept as well. A 10 000-chunk stream with a
/// cap of 256 keeps chunks `0, 64, 128, …, 9984` and `9999`. Memory: 4 bytes a point,
/// allocated as chunks come; one `record` costs O(1) amortised.
///
/// ```
/// use std::time::Duration;
/// use llmtrace::genai::ChunkTimeline;
///
/// let mut timeline = ChunkTimeline::new(4);
/// for ms in [100, 120, 140, 160, 180, 1500] {
///     timeline.record(Duration::from_millis(ms));
/// }
/// // The cap was reached at the 5th chunk: every 2nd chunk is kept, and the last.
/// assert_eq!(timeline.stride(), 2);
/// assert_eq!(timeline.offsets_ms().collect::<Vec<_>>(), [100, 140, 180, 1500]);
/// timeline.record_stall(Duration::from_millis(180), Duration::from_millis(1320));
/// assert_eq!(timeline.stalls()[0].1, Duration::from_millis(1320));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ChunkTimeline {
    cap: usize,
    stride: u64,
    seen: u64,
    offsets: Vec<u32>,
    last: u32,
    stalls: Vec<(Duration, Duration)>,
}

impl ChunkTimeline {
    /// A timeline keeping at most `cap` evenly spread points (rounded up to an even number,
    /// at most [`MAX_POINTS`]) plus the last; 0 keeps nothing.
    pub fn new(cap: u16) -> Self {
        let cap = usize::from(cap.min(MAX_POINTS));
        Self {
            cap: cap + cap % 2,
            stride: 1,
            ..Self::default()
        }
    }

    /// A content chunk arrived `offset` after the request.
    pub fn record(&mut self, offset: Duration) {
        let index = self.seen;
        self.seen += 1;
        let ms = u32::try_from(offset.as_millis()).unwrap_or(u32::MAX);
        self.last = ms;
        if self.cap == 0 || index % self.stride != 0 {
            return;
        }
        if self.offsets.len() == self.cap {
            // Keep chunks 0, 2s, 4s, …: positions 0, 2, 4, … of the kept points.
            let mut position = 0;
            self.offsets.retain(|_| {
                position += 1;
                position % 2 == 1
            });
            self.stride *= 2;
            if index % self.stride != 0 {
                return;
            }
        }
        if self.offsets.capacity() == 0 {
            self.offsets.reserve_exact(self.cap.min(32));
        }
        self.offsets.push(ms);
    }

    /// The gap that ended at a chunk was a stall: it began `start` after the request and
    /// lasted `length`. The first [`MAX_STALLS`] are kept.
    pub fn record_stall(&mut self, start: Duration, length: Duration) {
        if self.stalls.len() < MAX_STALLS {
            self.stalls.push((start, length));
        }
    }

    /// Chunks recorded.
    pub fn chunks(&self) -> u64 {
        self.seen
    }

    /// Every how many chunks a point is kept (a power of two).
    pub fn stride(&self) -> u64 {
        self.stride
    }

    /// The kept points, in milliseconds after the request: chunks `0, s, 2s, …` and the last.
    /// Empty when the cap is 0 or no chunk came.
    pub fn offsets_ms(&self) -> impl Iterator<Item = u32> + '_ {
        let last_kept = self.seen > 0 && (self.seen - 1) % self.stride == 0;
        let extra = (self.cap > 0 && self.seen > 0 && !last_kept).then_some(self.last);
        self.offsets.iter().copied().chain(extra)
    }

    /// The kept stalls: `(start, length)`, start counted from the request.
    pub fn stalls(&self) -> &[(Duration, Duration)] {
        &self.stalls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(cap: u16, chunks: u64) -> ChunkTimeline {
        let mut timeline = ChunkTimeline::new(cap);
        for i in 0..chunks {
            timeline.record(Duration::from_millis(i * 10));
        }
        timeline
    }

    #[test]
    fn keeps_every_chunk_under_the_cap() {
        let t = fed(256, 200);
        assert_eq!(t.stride(), 1);
        let points: Vec<u32> = t.offsets_ms().collect();
        assert_eq!(points.len(), 200);
        assert_eq!(points[199], 1990);
    }

    #[test]
    fn long_streams_keep_an_even_spread_and_the_last_chunk() {
        let t = fed(256, 10_000);
        assert_eq!(t.stride(), 64);
        let points: Vec<u32> = t.offsets_ms().collect();
        // 0, 64, …, 9984 (157 points) and 9999.
        assert_eq!(points.len(), 158);
        assert!(points.len() <= 257);
        for (i, ms) in points[..157].iter().enumerate() {
            assert_eq!(*ms, (i as u32) * 640);
        }
        assert_eq!(*points.last().unwrap(), 99_990);
        assert_eq!(t.chunks(), 10_000);
    }

    #[test]
    fn the_cap_holds_for_every_length() {
        for cap in [0u16, 1, 2, 3, 8, 64] {
            for chunks in 0..300u64 {
                let t = fed(cap, chunks);
                let points: Vec<u32> = t.offsets_ms().collect();
                let even_cap = usize::from(cap) + usize::from(cap) % 2;
                assert!(points.len() <= even_cap + 1, "cap {cap}, {chunks} chunks");
                if cap == 0 || chunks == 0 {
                    assert!(points.is_empty());
                    continue;
                }
                assert_eq!(points[0], 0);
                assert_eq!(*points.last().unwrap() as u64, (chunks - 1) * 10);
                assert!(points.windows(2).all(|w| w[0] < w[1]), "{points:?}");
            }
        }
    }

    #[test]
    fn stalls_are_capped_and_offsets_saturate() {
        let mut t = ChunkTimeline::new(8);
        for i in 0..40 {
            t.record_stall(Duration::from_secs(i), Duration::from_secs(2));
        }
        assert_eq!(t.stalls().len(), MAX_STALLS);
        t.record(Duration::from_secs(u64::MAX / 4));
        assert_eq!(t.offsets_ms().collect::<Vec<_>>(), [u32::MAX]);
        // With no points kept, stalls still are.
        let mut off = ChunkTimeline::new(0);
        off.record(Duration::ZERO);
        off.record_stall(Duration::ZERO, Duration::from_secs(3));
        assert_eq!(off.offsets_ms().count(), 0);
        assert_eq!(off.stalls().len(), 1);
    }
}
