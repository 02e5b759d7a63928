//! Identifiers shaped like the providers' (`chatcmpl-…`, `resp_…`, `msg_01…`, `req_…`).
//!
//! Unique within a process and across restarts (seeded from the clock), not cryptographic.

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

fn next() -> u64 {
    let seed = *SEED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    splitmix64(
        seed ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x2545_F491_4F6C_DD1D),
    )
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

/// Seconds since the Unix epoch, for `created` / `created_at`.
pub(crate) fn unix_now() -> u64 {
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
}
