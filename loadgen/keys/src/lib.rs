//! Which key each request uses: a fixed key space and a seeded distribution over it, so a run
//! is repeatable. Keys are built once; picking one allocates nothing.

use std::{fmt, str::FromStr};

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution as _, Zipf};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    Uniform,
    /// Zipf with this exponent: key i is chosen with probability proportional to 1 / (i+1)^s.
    Zipf(f64),
    /// Key 0 takes this share of requests; the rest are uniform over the other keys.
    Hot(f64),
}

impl FromStr for Distribution {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let fix = "use uniform, zipf[:EXPONENT] (e.g. zipf:1.1) or hot:SHARE (e.g. hot:0.9)";
        let (name, value) = text
            .split_once(':')
            .map_or((text, None), |(n, v)| (n, Some(v)));
        let number = |value: Option<&str>, default: f64| -> Result<f64, String> {
            value.map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| format!("`{v}` is not a number; {fix}"))
            })
        };
        match name {
            "uniform" if value.is_none() => Ok(Distribution::Uniform),
            "zipf" => {
                let exponent = number(value, 1.0)?;
                if exponent > 0.0 && exponent.is_finite() {
                    Ok(Distribution::Zipf(exponent))
                } else {
                    Err(format!("zipf exponent must be above 0; {fix}"))
                }
            }
            "hot" => {
                let share = number(value, 0.9)?;
                if (0.0..=1.0).contains(&share) {
                    Ok(Distribution::Hot(share))
                } else {
                    Err(format!("hot share must be from 0 to 1; {fix}"))
                }
            }
            _ => Err(format!("unknown key distribution `{text}`; {fix}")),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Uniform => write!(f, "uniform"),
            Distribution::Zipf(s) => write!(f, "zipf:{s}"),
            Distribution::Hot(share) => write!(f, "hot:{share}"),
        }
    }
}

/// The names of the keys a run uses: `{prefix}{index}`.
#[derive(Debug, Clone)]
pub struct KeySpace {
    names: Vec<String>,
}

impl KeySpace {
    pub fn new(prefix: &str, count: usize) -> Self {
        Self {
            names: (0..count.max(1)).map(|i| format!("{prefix}{i}")).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// A seeded sampler of key indexes.
#[derive(Clone)]
pub struct KeyPicker {
    rng: StdRng,
    keys: usize,
    sampler: Sampler,
}

#[derive(Clone)]
enum Sampler {
    Uniform,
    Zipf(Zipf<f64>),
    Hot(f64),
}

impl KeyPicker {
    pub fn new(distribution: Distribution, keys: usize, seed: u64) -> Self {
        let keys = keys.max(1);
        let sampler = match distribution {
            Distribution::Uniform => Sampler::Uniform,
            Distribution::Zipf(exponent) => {
                Sampler::Zipf(Zipf::new(keys as f64, exponent).expect("validated exponent"))
            }
            Distribution::Hot(share) => Sampler::Hot(share),
        };
        Self {
            rng: StdRng::seed_from_u64(seed),
            keys,
            sampler,
        }
    }

    pub fn next_index(&mut self) -> usize {
        match &self.sampler {
            Sampler::Uniform => self.rng.random_range(0..self.keys),
            Sampler::Zipf(zipf) => (zipf.sample(&mut self.rng) as usize).clamp(1, self.keys) - 1,
            Sampler::Hot(share) => {
                if self.keys == 1 || self.rng.random::<f64>() < *share {
                    0
                } else {
                    self.rng.random_range(1..self.keys)
                }
            }
        }
    }

    /// A random number in [0, 1) from the same seeded stream (retry jitter).
    pub fn unit(&mut self) -> f64 {
        self.rng.random()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frequencies(distribution: Distribution, keys: usize, draws: usize) -> Vec<f64> {
        let mut picker = KeyPicker::new(distribution, keys, 7);
        let mut counts = vec![0usize; keys];
        for _ in 0..draws {
            counts[picker.next_index()] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn zipf_frequencies_follow_the_power_law() {
        let keys = 10;
        let exponent = 1.0;
        let observed = frequencies(Distribution::Zipf(exponent), keys, 200_000);
        let norm: f64 = (1..=keys).map(|i| 1.0 / (i as f64).powf(exponent)).sum();
        for (i, share) in observed.iter().enumerate() {
            let expected = 1.0 / ((i + 1) as f64).powf(exponent) / norm;
            assert!(
                (share - expected).abs() < 0.01,
                "key {i}: {share:.4} vs {expected:.4}"
            );
        }
    }

    #[test]
    fn uniform_and_hot_shares() {
        let uniform = frequencies(Distribution::Uniform, 4, 100_000);
        assert!(
            uniform.iter().all(|share| (share - 0.25).abs() < 0.01),
            "{uniform:?}"
        );
        let hot = frequencies(Distribution::Hot(0.8), 5, 100_000);
        assert!((hot[0] - 0.8).abs() < 0.01, "{hot:?}");
        assert!(
            hot[1..].iter().all(|share| (share - 0.05).abs() < 0.01),
            "{hot:?}"
        );
    }

    #[test]
    fn the_same_seed_repeats_the_sequence() {
        let run = |seed| {
            let mut picker = KeyPicker::new(Distribution::Zipf(1.2), 100, seed);
            (0..50).map(|_| picker.next_index()).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn bad_distributions_say_how_to_write_them() {
        for bad in ["zipf:0", "hot:2", "gaussian", "uniform:3", "zipf:x"] {
            let err = bad.parse::<Distribution>().unwrap_err();
            assert!(err.contains("use uniform, zipf"), "{bad}: {err}");
        }
        assert_eq!(
            "zipf:1.5".parse::<Distribution>(),
            Ok(Distribution::Zipf(1.5))
        );
        assert_eq!("hot".parse::<Distribution>(), Ok(Distribution::Hot(0.9)));
    }
}
