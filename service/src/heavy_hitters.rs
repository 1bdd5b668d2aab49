//! The keys denied most lately, in bounded memory: the space-saving algorithm (Metwally et al.)
//! keeps `capacity` counters; a key not counted yet takes over the smallest counter, inheriting
//! its count as its possible overcount (`error`). Any key denied more than 1/capacity of the
//! window's denials is guaranteed to be listed, and each count is at most `error` too high.
//! Two windows: the one filling now and the last full one, so a listing always covers between
//! one and two windows. Pure: time is given by the caller.

use std::collections::HashMap;

/// One counted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hitter {
    pub key: String,
    pub resource: String,
    /// Denials counted, at most `error` more than there were.
    pub count: u64,
    pub error: u64,
}

#[derive(Debug, Clone, Default)]
struct Window {
    /// (resource, key) → index in `hitters`.
    index: HashMap<(String, String), usize>,
    hitters: Vec<Hitter>,
}

impl Window {
    fn record(&mut self, resource: &str, key: &str, capacity: usize) {
        if let Some(&at) = self.index.get(&(resource.to_owned(), key.to_owned())) {
            self.hitters[at].count += 1;
            return;
        }
        if self.hitters.len() < capacity {
            self.index
                .insert((resource.to_owned(), key.to_owned()), self.hitters.len());
            self.hitters.push(Hitter {
                key: key.to_owned(),
                resource: resource.to_owned(),
                count: 1,
                error: 0,
            });
            return;
        }
        let Some((at, smallest)) = self
            .hitters
            .iter()
            .enumerate()
            .min_by_key(|(_, hitter)| hitter.count)
            .map(|(at, hitter)| (at, hitter.count))
        else {
            return;
        };
        let evicted = std::mem::replace(
            &mut self.hitters[at],
            Hitter {
                key: key.to_owned(),
                resource: resource.to_owned(),
                count: smallest + 1,
                error: smallest,
            },
        );
        self.index.remove(&(evicted.resource, evicted.key));
        self.index.insert((resource.to_owned(), key.to_owned()), at);
    }
}

/// The top denied keys of the last one to two windows.
#[derive(Debug, Clone)]
pub struct HeavyHitters {
    capacity: usize,
    window_us: u64,
    /// Start of the window `current` fills.
    current_start_us: u64,
    current: Window,
    previous: Window,
}

impl HeavyHitters {
    pub fn new(capacity: usize, window_us: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            window_us: window_us.max(1),
            current_start_us: 0,
            current: Window::default(),
            previous: Window::default(),
        }
    }

    /// One denial of `key` on `resource` at `now_us`.
    pub fn record(&mut self, resource: &str, key: &str, now_us: u64) {
        self.roll(now_us);
        self.current.record(resource, key, self.capacity);
    }

    /// The most denied keys, most first, at most `limit`, over the current and the last
    /// window (counts of one key in both are added, and so are their errors).
    pub fn top(&mut self, limit: usize, now_us: u64) -> Vec<Hitter> {
        self.roll(now_us);
        let mut merged: HashMap<(&str, &str), Hitter> = HashMap::new();
        for hitter in self.previous.hitters.iter().chain(&self.current.hitters) {
            merged
                .entry((hitter.resource.as_str(), hitter.key.as_str()))
                .and_modify(|sum| {
                    sum.count += hitter.count;
                    sum.error += hitter.error;
                })
                .or_insert_with(|| hitter.clone());
        }
        let mut top: Vec<Hitter> = merged.into_values().collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        top.truncate(limit);
        top
    }

    fn roll(&mut self, now_us: u64) {
        let start = now_us - now_us % self.window_us;
        if start == self.current_start_us {
            return;
        }
        self.previous = if start == self.current_start_us + self.window_us {
            std::mem::take(&mut self.current)
        } else {
            Window::default()
        };
        self.current = Window::default();
        self.current_start_us = start;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MINUTE: u64 = 60_000_000;

    #[test]
    fn the_most_denied_key_leads_and_counts_are_exact_below_capacity() {
        let mut top = HeavyHitters::new(8, MINUTE);
        for (key, times) in [("a", 5), ("b", 9), ("c", 1)] {
            for _ in 0..times {
                top.record("login", key, 1_000);
            }
        }
        let listed: Vec<(String, u64, u64)> = top
            .top(2, 2_000)
            .into_iter()
            .map(|hitter| (hitter.key, hitter.count, hitter.error))
            .collect();
        assert_eq!(listed, [("b".into(), 9, 0), ("a".into(), 5, 0)]);
    }

    #[test]
    fn windows_age_out() {
        let mut top = HeavyHitters::new(8, MINUTE);
        top.record("r", "old", 10);
        top.record("r", "new", MINUTE + 10);
        assert_eq!(
            top.top(10, MINUTE + 20).len(),
            2,
            "the last window still counts"
        );
        assert_eq!(
            top.top(10, 2 * MINUTE + 20).len(),
            1,
            "two windows on, `old` is gone"
        );
        assert!(
            top.top(10, 10 * MINUTE).is_empty(),
            "a quiet stretch forgets all"
        );
    }

    proptest! {
        /// Space-saving's guarantees with far more keys than counters: memory stays at the
        /// capacity, every key denied more than total/capacity times is listed, and no count
        /// is below the truth or more than its error above it.
        #[test]
        fn heavy_keys_are_always_listed_in_bounded_memory(
            stream in proptest::collection::vec(0u32..200, 1..2_000),
            heavy in proptest::collection::vec(0u32..5, 0..1_500),
        ) {
            let capacity = 16;
            let mut top = HeavyHitters::new(capacity, MINUTE);
            let mut truth: HashMap<String, u64> = HashMap::new();
            let keys = stream.iter().map(|k| format!("k{k}")).chain(heavy.iter().map(|k| format!("h{k}")));
            for key in keys {
                top.record("r", &key, 5);
                *truth.entry(key).or_default() += 1;
            }
            prop_assert!(top.current.hitters.len() <= capacity);
            prop_assert!(top.current.index.len() <= capacity);
            let total: u64 = truth.values().sum();
            let listed = top.top(capacity, 6);
            for hitter in &listed {
                let real = truth[&hitter.key];
                prop_assert!(hitter.count >= real && hitter.count - hitter.error <= real);
            }
            for (key, count) in &truth {
                if *count > total / capacity as u64 {
                    prop_assert!(listed.iter().any(|hitter| &hitter.key == key), "{} x{} of {}", key, count, total);
                }
            }
        }
    }
}
