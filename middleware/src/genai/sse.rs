//! PLACEHOLDER — being written (incremental SSE decoder). API contract only.

/// One dispatched server-sent event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event` field; `None` means the default type, `message`.
    pub event: Option<&'a str>,
    /// The `data` field lines joined with `\n`.
    pub data: &'a str,
    /// The `id` field of this event, if it had one.
    pub id: Option<&'a str>,
    /// The `retry` field of this event, if it had a valid one.
    pub retry: Option<u64>,
}

/// Incremental SSE decoder.
#[derive(Debug, Default)]
pub struct SseDecoder {}

impl SseDecoder {
    /// A decoder that gives up on (skips) any single event larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        let _ = max_event_bytes;
        Self {}
    }

    /// Feeds the next chunk; calls `on_event` for each complete event.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        let _ = (chunk, &mut on_event);
    }

    /// End of stream: an event without its terminating blank line is discarded (per spec).
    pub fn finish(&mut self) {}

    /// Events skipped because they exceeded the size cap.
    pub fn oversized_events(&self) -> u64 {
        0
    }
}
