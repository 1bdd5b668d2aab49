//! Bans for repeat offenders, as pure arithmetic on a state and an explicit `now`.
//!
//! A key denied `after` times within `within` of its first counted denial is banned for
//! `duration`. A further ban that starts within `lookback` of the previous one's end lasts the
//! previous duration times `factor` (rounded down to a microsecond), at most `max_duration`.
//! While banned, the key's requests are answered `banned` and its limits are neither checked
//! nor charged. `lua/ban.lua` mirrors this operation for operation.

/// Where a ban applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanScope {
    /// The key on the resource whose rule banned it.
    Resource,
    /// The key on every resource.
    Key,
}

impl BanScope {
    pub const NAMES: [&'static str; 2] = ["resource", "key"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "resource" => Some(BanScope::Resource),
            "key" => Some(BanScope::Key),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A rule's ban policy. Configuration keeps every duration below 2^53 us and `factor >= 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ban {
    pub after: u64,
    pub within_us: u64,
    pub duration_us: u64,
    pub factor: f64,
    pub max_duration_us: u64,
    pub lookback_us: u64,
    pub scope: BanScope,
}

/// The bans one request is decided under.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bans<'a> {
    /// The rule's own ban policy: a ban it started refuses the key, and this request's denial
    /// counts as an offence.
    pub policy: Option<&'a Ban>,
    /// Also refuse the key while another rule has banned it key-wide (some rule of the rule
    /// set bans with scope `key`). Implied when `policy` itself is key-wide.
    pub key_wide: bool,
}

impl<'a> Bans<'a> {
    pub const NONE: Bans<'static> = Bans {
        policy: None,
        key_wide: false,
    };

    /// The rule's own policy, with nothing key-wide to watch.
    pub fn policy(ban: &'a Ban) -> Self {
        Bans {
            policy: Some(ban),
            key_wide: false,
        }
    }

    /// Whether a key-wide ban state must be read besides the policy's own.
    pub fn watches_key_wide(&self) -> bool {
        self.key_wide && self.policy.is_none_or(|ban| ban.scope != BanScope::Key)
    }
}

/// A key's offences and bans. All zero for a key never denied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BanState {
    /// Denials counted in the current window.
    pub offences: u64,
    /// When the first of them happened.
    pub window_start_us: u64,
    /// When the current or last ban ends; 0 if never banned.
    pub banned_until_us: u64,
    /// How long the last ban lasted; the next one within `lookback` builds on it.
    pub last_duration_us: u64,
}

impl BanState {
    /// Microseconds of ban left at `now_us`, if the key is banned.
    pub fn remaining_us(&self, now_us: u64) -> Option<u64> {
        (self.banned_until_us > now_us).then(|| self.banned_until_us - now_us)
    }
}

impl Ban {
    /// Counts a denial at `now_us`; when it is the `after`-th within `within`, starts a ban and
    /// returns its duration.
    pub fn record_denial(&self, state: &mut BanState, now_us: u64) -> Option<u64> {
        if state.offences == 0 || now_us >= state.window_start_us.saturating_add(self.within_us) {
            state.offences = 0;
            state.window_start_us = now_us;
        }
        state.offences += 1;
        if state.offences < self.after {
            return None;
        }
        let repeat = state.last_duration_us > 0
            && now_us < state.banned_until_us.saturating_add(self.lookback_us);
        let duration = if repeat {
            ((state.last_duration_us as f64 * self.factor).floor() as u64).min(self.max_duration_us)
        } else {
            self.duration_us
        };
        state.offences = 0;
        state.banned_until_us = now_us + duration;
        state.last_duration_us = duration;
        Some(duration)
    }

    /// Microseconds until `state` is indistinguishable from a fresh one (it may be dropped).
    pub fn expires_after_us(&self, state: &BanState, now_us: u64) -> u64 {
        let offences_end = if state.offences > 0 {
            state.window_start_us.saturating_add(self.within_us)
        } else {
            0
        };
        let repeats_end = if state.last_duration_us > 0 {
            state.banned_until_us.saturating_add(self.lookback_us)
        } else {
            0
        };
        offences_end.max(repeats_end).saturating_sub(now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000;

    fn ban(after: u64, factor: f64) -> Ban {
        Ban {
            after,
            within_us: 60 * S,
            duration_us: 10 * S,
            factor,
            max_duration_us: 25 * S,
            lookback_us: 100 * S,
            scope: BanScope::Resource,
        }
    }

    #[test]
    fn the_after_th_denial_within_the_window_starts_a_ban() {
        let ban = ban(3, 1.0);
        let mut state = BanState::default();
        assert_eq!(ban.record_denial(&mut state, 0), None);
        assert_eq!(ban.record_denial(&mut state, S), None);
        assert_eq!(ban.record_denial(&mut state, 2 * S), Some(10 * S));
        assert_eq!(state.remaining_us(2 * S), Some(10 * S));
        assert_eq!(state.remaining_us(12 * S - 1), Some(1));
        assert_eq!(state.remaining_us(12 * S), None, "over at its end");
    }

    #[test]
    fn denials_outside_the_window_start_counting_again() {
        let ban = ban(3, 1.0);
        let mut state = BanState::default();
        ban.record_denial(&mut state, 0);
        ban.record_denial(&mut state, S);
        assert_eq!(ban.record_denial(&mut state, 60 * S), None, "a new window");
        assert_eq!(state.offences, 1);
        ban.record_denial(&mut state, 61 * S);
        assert!(ban.record_denial(&mut state, 62 * S).is_some());
    }

    #[test]
    fn repeat_bans_grow_by_the_factor_up_to_the_cap_and_reset_after_the_lookback() {
        let ban = ban(1, 2.0);
        let mut state = BanState::default();
        assert_eq!(ban.record_denial(&mut state, 0), Some(10 * S));
        assert_eq!(ban.record_denial(&mut state, 10 * S), Some(20 * S));
        assert_eq!(
            ban.record_denial(&mut state, 30 * S),
            Some(25 * S),
            "capped"
        );
        let late = 55 * S + 100 * S;
        assert_eq!(
            ban.record_denial(&mut state, late),
            Some(10 * S),
            "past the lookback a ban starts from the base duration"
        );
    }

    #[test]
    fn state_expires_once_nothing_in_it_can_matter() {
        let ban = ban(3, 2.0);
        let mut state = BanState::default();
        ban.record_denial(&mut state, 0);
        assert_eq!(ban.expires_after_us(&state, 0), 60 * S);
        ban.record_denial(&mut state, 0);
        ban.record_denial(&mut state, 0);
        assert_eq!(
            ban.expires_after_us(&state, 0),
            110 * S,
            "ban end + lookback"
        );
    }

    proptest! {
        #[test]
        fn a_ban_starts_exactly_at_the_after_th_denial_and_never_exceeds_the_cap(
            after in 1u64..10,
            factor in 1.0f64..4.0,
            gaps in proptest::collection::vec(0u64..30 * S, 1..80),
        ) {
            let ban = ban(after, factor);
            let mut state = BanState::default();
            let (mut now, mut counted, mut window_start) = (0u64, 0u64, 0u64);
            for gap in gaps {
                now += gap;
                if state.remaining_us(now).is_some() {
                    continue;
                }
                if counted == 0 || now >= window_start + ban.within_us {
                    counted = 0;
                    window_start = now;
                }
                counted += 1;
                let started = ban.record_denial(&mut state, now);
                prop_assert_eq!(started.is_some(), counted == after);
                if let Some(duration) = started {
                    counted = 0;
                    prop_assert!(duration >= ban.duration_us.min(ban.max_duration_us));
                    prop_assert!(duration <= ban.max_duration_us.max(ban.duration_us));
                }
            }
        }
    }
}
