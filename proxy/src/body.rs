//! The request body on its way upstream: counted against the limit, copied (bounded) for the
//! core to read, and held back only when the gateway may have to splice usage into it.
//!
//! Pingora calls the body filter once per read from the client, however the body is split:
//! one read for a small HTTP/1.1 body, many for a large one, a slow client, or HTTP/2 DATA
//! frames. A chunk set to `None` means "end of body" to pingora, so held chunks are replaced
//! by an *empty* chunk, which pingora does not send.

use bytes::{Bytes, BytesMut};

/// The body went over the gateway's `max_request_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// The configured limit, in bytes.
    pub limit: usize,
}

/// The body ended: what the gateway saw of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The whole body, when it fit under the copy cap (`None` when it did not).
    pub copy: Option<Bytes>,
    /// The body was held back whole: the caller sends it (as is, or with usage spliced in)
    /// by setting the chunk.
    pub held: bool,
    /// Bytes received.
    pub len: usize,
}

/// One request body's state across the body filter calls of one attempt.
#[derive(Debug, Default)]
pub struct RequestBody {
    limit: usize,
    cap: usize,
    hold: bool,
    seen: usize,
    copy: BytesMut,
    over: bool,
    /// The whole upstream body, prepared before the request head went upstream (see
    /// [`set_ready`](Self::set_ready)).
    ready: Option<Bytes>,
    /// This attempt handed [`ready`](Self::ready) to pingora whole.
    ready_sent: bool,
}

impl RequestBody {
    /// A body limited to `limit` bytes, of which the first `cap` are copied for the core; with
    /// `hold`, chunks are held back until the end (or until `cap` is passed, when the bytes
    /// held so far go on and the rest streams through).
    pub fn new(limit: usize, cap: usize, hold: bool) -> Self {
        RequestBody {
            limit,
            cap,
            hold,
            ..RequestBody::default()
        }
    }

    /// Makes room for the copy up front when the body's length is known (`Content-Length`,
    /// which pingora holds the body to): a large prompt is copied once, not again at every
    /// doubling of a growing buffer. Never more than the cap.
    pub fn with_expected_len(mut self, len: Option<usize>) -> Self {
        if let Some(len) = len.filter(|len| *len <= self.cap.min(self.limit)) {
            self.copy.reserve(len);
        }
        self
    }

    /// Whether this body was to be held back (it may still have been released at the cap).
    pub fn may_hold(&self) -> bool {
        self.hold
    }

    /// Whether chunks are being held back now.
    pub fn holding(&self) -> bool {
        self.hold && !self.over
    }

    /// Records the body that goes upstream, known in full before the request head is sent:
    /// the head then carries its `Content-Length` and the body goes in one piece, unchanged
    /// or with usage spliced in. Every attempt sends it.
    pub fn set_ready(&mut self, body: Bytes) {
        self.ready = Some(body);
    }

    /// The body prepared by [`set_ready`](Self::set_ready), if any.
    pub fn ready(&self) -> Option<&Bytes> {
        self.ready.as_ref()
    }

    /// The prepared body, handed to pingora whole at the end of the client's body: this
    /// attempt has sent it.
    pub fn send_ready(&mut self) -> Option<Bytes> {
        let ready = self.ready.clone()?;
        self.ready_sent = true;
        Some(ready)
    }

    /// No attempt follows (the answer's head went to the client): the prepared body, once
    /// sent, is dropped rather than held for the rest of a long stream.
    pub fn release_ready(&mut self) {
        if self.ready_sent {
            self.ready = None;
        }
    }

    /// A new attempt replays the body from its start.
    pub fn restart(&mut self) {
        self.ready_sent = false;
        self.seen = 0;
        self.copy.clear();
        self.over = false;
    }

    /// Takes one chunk (`None` at the end, as pingora passes it). Leaves `body` as what goes
    /// upstream now; returns what was seen when the body ended.
    pub fn on_chunk(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<Option<Ended>, TooLarge> {
        if let Some(chunk) = body.as_ref() {
            self.seen += chunk.len();
            if self.seen > self.limit {
                return Err(TooLarge { limit: self.limit });
            }
            if !self.over {
                if self.copy.len() + chunk.len() > self.cap {
                    if self.holding() {
                        // Too large to rewrite: what was held goes on, in one chunk.
                        let mut all = std::mem::take(&mut self.copy);
                        all.extend_from_slice(chunk);
                        *body = Some(all.freeze());
                    }
                    self.over = true;
                    self.copy = BytesMut::new();
                } else {
                    self.copy.extend_from_slice(chunk);
                    if self.hold {
                        *body = Some(Bytes::new());
                    }
                }
            }
        }
        if !end_of_stream {
            return Ok(None);
        }
        let held = self.holding();
        let copy = (!self.over).then(|| std::mem::take(&mut self.copy).freeze());
        Ok(Some(Ended {
            copy,
            held,
            len: self.seen,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_length_is_copied_into_one_buffer_up_to_the_cap() {
        let mut state = RequestBody::new(1 << 20, 1000, true).with_expected_len(Some(600));
        let start = state.copy.capacity();
        assert!(start >= 600);
        let mut chunk = Some(Bytes::from(vec![b'x'; 600]));
        let ended = state.on_chunk(&mut chunk, true).unwrap().unwrap();
        assert_eq!(ended.copy.unwrap().len(), 600);
        // Past the cap (or the limit), nothing is reserved: the length is the client's word.
        let state = RequestBody::new(1 << 20, 1000, true).with_expected_len(Some(1 << 30));
        assert_eq!(state.copy.capacity(), 0);
        let state = RequestBody::new(100, 1000, true).with_expected_len(Some(500));
        assert_eq!(state.copy.capacity(), 0);
    }

    /// Feeds `chunks` (the last with the end flag, then a `None`), returns what went on and
    /// what ended.
    fn feed(state: &mut RequestBody, chunks: &[&[u8]]) -> (Vec<u8>, Option<Ended>) {
        let mut sent = Vec::new();
        let mut ended = None;
        for chunk in chunks {
            let mut body = Some(Bytes::copy_from_slice(chunk));
            ended = state.on_chunk(&mut body, false).unwrap();
            sent.extend_from_slice(body.as_deref().unwrap_or_default());
        }
        let mut body = None;
        if let Some(end) = state.on_chunk(&mut body, true).unwrap() {
            ended = Some(end);
        }
        (sent, ended)
    }

    #[test]
    fn a_streamed_body_goes_on_as_it_arrives_with_a_bounded_copy() {
        let mut state = RequestBody::new(100, 8, false);
        let (sent, ended) = feed(&mut state, &[b"abc", b"def"]);
        assert_eq!(sent, b"abcdef");
        let ended = ended.unwrap();
        assert_eq!(ended.copy.as_deref(), Some(&b"abcdef"[..]));
        assert!(!ended.held);
        assert_eq!(ended.len, 6);

        let mut state = RequestBody::new(100, 4, false);
        let (sent, ended) = feed(&mut state, &[b"abc", b"def", b"g"]);
        assert_eq!(sent, b"abcdefg");
        assert_eq!(ended.unwrap().copy, None);
    }

    #[test]
    fn a_held_body_sends_nothing_until_its_end() {
        let mut state = RequestBody::new(100, 50, true);
        let (sent, ended) = feed(&mut state, &[b"{\"a\"", b":1}"]);
        assert!(sent.is_empty());
        let ended = ended.unwrap();
        assert!(ended.held);
        assert_eq!(ended.copy.as_deref(), Some(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn a_held_body_over_the_cap_is_released_whole_and_streams_on() {
        let mut state = RequestBody::new(100, 5, true);
        let (sent, ended) = feed(&mut state, &[b"abc", b"def", b"gh"]);
        assert_eq!(sent, b"abcdefgh");
        let ended = ended.unwrap();
        assert!(!ended.held);
        assert_eq!(ended.copy, None);
        assert_eq!(ended.len, 8);
    }

    #[test]
    fn the_limit_holds_for_bodies_without_a_length() {
        let mut state = RequestBody::new(5, 100, false);
        let mut body = Some(Bytes::from_static(b"abc"));
        assert!(state.on_chunk(&mut body, false).is_ok());
        let mut body = Some(Bytes::from_static(b"def"));
        assert_eq!(state.on_chunk(&mut body, false), Err(TooLarge { limit: 5 }));
    }

    #[test]
    fn a_retry_starts_over() {
        let mut state = RequestBody::new(5, 100, true);
        let _ = feed(&mut state, &[b"abcd"]);
        state.restart();
        let (sent, ended) = feed(&mut state, &[b"ab", b"cd"]);
        assert!(sent.is_empty());
        assert_eq!(ended.unwrap().copy.as_deref(), Some(&b"abcd"[..]));
    }

    #[test]
    fn the_ready_body_is_dropped_only_once_sent() {
        let mut state = RequestBody::new(100, 100, true);
        state.set_ready(Bytes::from_static(b"{}"));
        state.release_ready();
        assert!(
            state.ready().is_some(),
            "not sent yet: a retry or the end still needs it"
        );
        assert_eq!(state.send_ready().as_deref(), Some(&b"{}"[..]));
        state.restart();
        state.release_ready();
        assert!(state.ready().is_some(), "a new attempt has not sent it");
        assert!(state.send_ready().is_some());
        state.release_ready();
        assert!(state.ready().is_none());
    }

    #[test]
    fn an_empty_body_ends_at_once() {
        let mut state = RequestBody::new(5, 100, true);
        let (sent, ended) = feed(&mut state, &[]);
        assert!(sent.is_empty());
        let ended = ended.unwrap();
        assert!(ended.held);
        assert_eq!(ended.copy.as_deref(), Some(&b""[..]));
    }
}
