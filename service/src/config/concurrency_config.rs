//! The `[rules.<resource>.concurrency]` section: validation into a [`Concurrency`] limit.

use serde::Deserialize;

use super::{Issues, parse_duration};
use crate::algorithm::concurrency::Concurrency;

/// Most leases one key may hold at once.
const MAX_IN_FLIGHT: u64 = 1_000_000;
/// Longest lease: a day.
const MAX_LEASE_US: u64 = 86_400_000_000;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConcurrency {
    max_in_flight: Option<u64>,
    lease_ttl: Option<String>,
}

pub(super) fn build_concurrency(
    path: &str,
    raw: RawConcurrency,
    issues: &mut Issues,
) -> Option<Concurrency> {
    let max_in_flight = match raw.max_in_flight {
        Some(max) if (1..=MAX_IN_FLIGHT).contains(&max) => Some(max),
        Some(max) => {
            issues.add(
                format!("{path}.max_in_flight"),
                format!("{max} is out of range; use 1 to {MAX_IN_FLIGHT}"),
            );
            None
        }
        None => {
            issues.add(
                format!("{path}.max_in_flight"),
                "missing; the most requests a key may have in flight (e.g. max_in_flight = 10)",
            );
            None
        }
    };
    let text = raw.lease_ttl.as_deref().unwrap_or("1m");
    let lease_ttl_us = match parse_duration(text) {
        Ok(duration) => {
            let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
            if (1_000..=MAX_LEASE_US).contains(&micros) {
                Some(micros)
            } else {
                issues.add(
                    format!("{path}.lease_ttl"),
                    format!("`{text}` is out of range; use \"1ms\" to \"1d\" (a lease never released ends after it)"),
                );
                None
            }
        }
        Err(message) => {
            issues.add(format!("{path}.lease_ttl"), message);
            None
        }
    };
    Concurrency::new(max_in_flight?, lease_ttl_us?)
}
