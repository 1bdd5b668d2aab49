//! Log lines about single decisions (a shadowed denial, a ban), bounded and key-safe: at most
//! a budget of lines a second however hard a key hammers, and never the raw client key, only a
//! short stable hash of it, so lines from several nodes about one key can still be matched.

use std::time::Instant;

use parking_lot::Mutex;

/// Lines a second the limiter writes about shadowed denials or bans, each kind on its own.
pub const LINES_PER_SECOND: u32 = 10;

/// Admits at most `per_second` lines in each one-second window and counts the rest.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    origin: Instant,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    second: u64,
    written: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            origin: Instant::now(),
            window: Mutex::default(),
        }
    }

    /// Whether a line may be written now: `Some(n)` with the `n` lines suppressed since the
    /// last one written (to say so in this one), `None` when this second's budget is spent.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(self.origin.elapsed().as_secs())
    }

    /// [`LogBudget::admit`] at `second` (seconds since the budget was made).
    pub fn admit_at(&self, second: u64) -> Option<u64> {
        let mut window = self.window.lock();
        if second != window.second {
            window.second = second;
            window.written = 0;
        }
        if window.written >= self.per_second {
            window.suppressed += 1;
            return None;
        }
        window.written += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

/// A short, stable stand-in for a client key in logs: 64-bit FNV-1a as 16 hex digits. The same
/// on every node and version, so an operator can grep every node for one key's lines.
pub fn key_hash(key: &str) -> String {
    short_hash(key.as_bytes())
}

/// 64-bit FNV-1a of `bytes` as 16 hex digits: stable across nodes, versions and platforms
/// (client keys in logs, configuration versions).
pub fn short_hash(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_budget_each_second_and_counts_the_rest() {
        let budget = LogBudget::new(3);
        assert_eq!(
            (0..5).map(|_| budget.admit_at(7)).collect::<Vec<_>>(),
            [Some(0), Some(0), Some(0), None, None]
        );
        assert_eq!(budget.admit_at(8), Some(2), "says how many were dropped");
        assert_eq!(budget.admit_at(8), Some(0));
    }

    #[test]
    fn key_hash_is_stable_and_hides_the_key() {
        assert_eq!(key_hash(""), "cbf29ce484222325");
        assert_eq!(key_hash("a"), "af63dc4c8601ec8c");
        assert_ne!(key_hash("alice"), key_hash("alicf"));
        assert!(!key_hash("alice").contains("alice"));
    }
}
