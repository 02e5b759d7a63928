//! A body sent on a schedule: each SSE event is one body frame, written when it is due.

use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use tokio::time::Instant;

use crate::json::J;

enum Frame {
    Data(Bytes),
    /// Fail the body: hyper closes the connection without ending the message properly.
    Abort,
}

/// Frames with the time (from the request's arrival) at which each is due.
#[derive(Default)]
pub(crate) struct Timeline {
    frames: Vec<(Duration, Frame)>,
}

impl Timeline {
    pub(crate) fn new() -> Self {
        Timeline::default()
    }

    fn push(&mut self, at: Duration, frame: Frame) {
        // Keep the schedule monotonic even if a renderer asks for an earlier time.
        let at = self.frames.last().map_or(at, |(last, _)| at.max(*last));
        self.frames.push((at, frame));
    }

    /// Raw bytes as one frame.
    pub(crate) fn raw(&mut self, at: Duration, bytes: impl Into<Bytes>) {
        self.push(at, Frame::Data(bytes.into()));
    }

    /// `data: {json}\n\n` (OpenAI chat and completions streams).
    pub(crate) fn data(&mut self, at: Duration, json: &J) {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"data: ");
        buf.extend_from_slice(&json.to_vec());
        buf.extend_from_slice(b"\n\n");
        self.raw(at, buf);
    }

    /// `event: {name}\ndata: {json}\n\n` (Responses API and Anthropic streams).
    pub(crate) fn event(&mut self, at: Duration, name: &str, json: &J) {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\ndata: ");
        buf.extend_from_slice(&json.to_vec());
        buf.extend_from_slice(b"\n\n");
        self.raw(at, buf);
    }

    /// Closes the connection abruptly at `at`.
    pub(crate) fn abort(&mut self, at: Duration) {
        self.push(at, Frame::Abort);
    }

    /// The body, with times counted from `start`.
    pub(crate) fn into_body(self, start: Instant) -> Body {
        let frames = Some(self.frames.into_iter());
        let stream = futures::stream::unfold(frames, move |frames| async move {
            let mut frames = frames?;
            let (at, frame) = frames.next()?;
            tokio::time::sleep_until(start + at).await;
            match frame {
                Frame::Data(bytes) => Some((Ok(bytes), Some(frames))),
                Frame::Abort => {
                    // Return Pending once so that hyper flushes what it has buffered: the
                    // peer gets every event before the cut, as from a peer that dies.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Some((Err(io::Error::other("mock: connection cut")), None))
                }
            }
        });
        Body::from_stream(stream)
    }
}
