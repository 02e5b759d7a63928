//! Identifiers shaped like the providers' (`chatcmpl-…`, `resp_…`, `msg_01…`, `req_…`).
//!
//! Unique within a process and across restarts (seeded from the clock), not cryptographic.
//! Within [`seeded`] (a request that sends `x-mock-seed`), ids follow from the seed alone and
//! `created` is [`SEEDED_CREATED`]: the same request gets the same bytes every time.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SEED: OnceLock<u64> = OnceLock::new();

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";

/// SplitMix64: a good 64-bit mixer, also used for the deterministic embedding vectors.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `created` / `created_at` of answers to seeded requests (2025-01-01T00:00:00Z).
pub(crate) const SEEDED_CREATED: u64 = 1_735_689_600;

/// The id source of one seeded request: its seed and how many values it has drawn.
struct Seeded {
    seed: u64,
    drawn: Cell<u64>,
}

tokio::task_local! {
    static SEEDED: Seeded;
}

/// Runs `f` (a request's handler) with ids drawn from `seed` and a fixed `created`, when
/// `seed` is given; as usual otherwise. Every id is generated before the handler returns its
/// response (bodies are scheduled whole), so the scope covers them all.
pub(crate) async fn seeded<F: Future>(seed: Option<u64>, f: F) -> F::Output {
    match seed {
        Some(seed) => {
            let state = Seeded {
                seed: splitmix64(seed),
                drawn: Cell::new(0),
            };
            SEEDED.scope(state, f).await
        }
        None => f.await,
    }
}

fn mix(seed: u64, n: u64) -> u64 {
    splitmix64(seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D))
}

fn next() -> u64 {
    if let Ok(value) = SEEDED.try_with(|s| {
        let n = s.drawn.get();
        s.drawn.set(n + 1);
        mix(s.seed, n)
    }) {
        return value;
    }
    let seed = *SEED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    mix(seed, COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn random_chars(alphabet: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut bits = next();
    let mut left = 10;
    for _ in 0..len {
        if left == 0 {
            bits = next();
            left = 10;
        }
        out.push(alphabet[(bits % alphabet.len() as u64) as usize] as char);
        bits /= alphabet.len() as u64;
        left -= 1;
    }
    out
}

/// `prefix` followed by `len` base-62 characters.
pub(crate) fn base62(prefix: &str, len: usize) -> String {
    format!("{prefix}{}", random_chars(BASE62, len))
}

/// `prefix` followed by `len` lowercase hex digits.
pub(crate) fn hex(prefix: &str, len: usize) -> String {
    format!("{prefix}{}", random_chars(HEX, len))
}

/// Seconds since the Unix epoch, for `created` / `created_at` ([`SEEDED_CREATED`] when seeded).
pub(crate) fn unix_now() -> u64 {
    if SEEDED.try_with(|_| ()).is_ok() {
        return SEEDED_CREATED;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_shaped() {
        let a = base62("chatcmpl-", 29);
        let b = base62("chatcmpl-", 29);
        assert_ne!(a, b);
        assert_eq!(a.len(), "chatcmpl-".len() + 29);
        assert!(hex("req_", 32)[4..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[tokio::test]
    async fn seeded_ids_repeat_per_seed() {
        let draw = || async { (base62("chatcmpl-", 29), hex("req_", 32), unix_now()) };
        let a = seeded(Some(7), draw()).await;
        let b = seeded(Some(7), draw()).await;
        let c = seeded(Some(8), draw()).await;
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
        assert_eq!(a.2, SEEDED_CREATED);
        let free = seeded(None, draw()).await;
        assert_ne!(free.0, a.0);
        assert_ne!(free.2, SEEDED_CREATED);
    }
}
