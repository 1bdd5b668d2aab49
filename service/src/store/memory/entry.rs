//! One entry of the memory store: a (resource, key) pair's limit states or its ban record,
//! and when it may be dropped. Boxed in the store's table, so an empty slot of the table costs
//! a pointer, and laid out to fit one small allocation: the pair's name is kept inline when
//! short, the sliding log's queue is boxed apart ([`State`]).

use crate::{
    algorithm::{
        State,
        ban::BanState,
        stacked::{self, Decisions, Limit},
    },
    store::BucketKey,
};

#[derive(Debug)]
pub(super) struct Entry {
    pub name: PairName,
    pub states: States,
    pub expiry: Expiry,
}

/// When an entry's state is back to fresh (it can then be dropped without changing any
/// answer), and how much quota its key had left at its last decision, which says what
/// dropping it early would cost. One word, so an entry stays one small allocation: the top
/// byte is the headroom, the rest microseconds (below 2^56 until the year 4253).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expiry(u64);

const AT_MASK: u64 = (1 << 56) - 1;

/// How much of `limit` is left, in quarters (0 none, 255 all): coarse, but without a division
/// on every decision.
fn headroom(remaining: u64, limit: u64) -> u8 {
    let remaining = remaining.min(limit);
    if remaining == limit {
        255
    } else if remaining == 0 {
        0
    } else if remaining >= limit - (limit >> 2) {
        192
    } else if remaining >= limit >> 1 {
        128
    } else {
        64
    }
}

impl Expiry {
    /// `headroom`: 0 when some limit had nothing left (or the entry is a ban record), 255 when
    /// every limit was full.
    pub fn new(at_us: u64, headroom: u8) -> Self {
        Self(at_us.min(AT_MASK) | u64::from(headroom) << 56)
    }

    /// Expires at `at_us`, with the headroom `decisions` left.
    pub fn after(at_us: u64, decisions: &Decisions) -> Self {
        let headroom = decisions
            .as_slice()
            .iter()
            .map(|decision| headroom(decision.remaining, decision.limit))
            .min()
            .unwrap_or(u8::MAX);
        let headroom = if decisions.banned_for_us().is_some() {
            0
        } else {
            headroom
        };
        Self::new(at_us, headroom)
    }

    pub fn at_us(self) -> u64 {
        self.0 & AT_MASK
    }

    pub fn headroom(self) -> u8 {
        (self.0 >> 56) as u8
    }
}

impl Entry {
    pub fn is_limits_of(&self, key: BucketKey<'_>) -> bool {
        !matches!(self.states, States::Ban(_)) && self.name.is(key)
    }

    pub fn is_ban_of(&self, key: BucketKey<'_>) -> bool {
        matches!(self.states, States::Ban(_)) && self.name.is(key)
    }

    pub fn ban_state(&self) -> Option<BanState> {
        match self.states {
            States::Ban(ref state) => Some(**state),
            _ => None,
        }
    }
}

/// A key's state under each limit of its rule (most rules have one limit, kept inline so such
/// a key costs no second allocation), or, in an entry of its own, its ban record (boxed: only
/// offenders have one, and inline it would grow every entry).
#[derive(Debug)]
pub(super) enum States {
    One(State),
    Many(Box<[State]>),
    Ban(Box<BanState>),
}

impl States {
    pub fn fresh(limits: &[Limit], now_us: u64) -> Self {
        match limits {
            [limit] => States::One(limit.algorithm.fresh_state(now_us)),
            _ => States::Many(stacked::fresh_states(limits, now_us).into_boxed_slice()),
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [State] {
        match self {
            States::One(state) => std::slice::from_mut(state),
            States::Many(states) => states,
            States::Ban(_) => &mut [],
        }
    }

    /// From states kept under the limits `before` to the same key's states under `after`: a
    /// limit of the same name and algorithm keeps its state, any other starts fresh.
    pub fn remap(&mut self, before: &[Limit], after: &[Limit], now_us: u64) {
        let mut old: Vec<Option<State>> =
            match std::mem::replace(self, States::fresh(after, now_us)) {
                States::One(state) => vec![Some(state)],
                States::Many(states) => states.into_vec().into_iter().map(Some).collect(),
                ban @ States::Ban(_) => {
                    *self = ban;
                    return;
                }
            };
        for (limit, state) in after.iter().zip(self.as_mut_slice()) {
            let kept = before.iter().zip(old.iter_mut()).find_map(|(was, slot)| {
                let same = was.name == limit.name
                    && std::mem::discriminant(&was.algorithm)
                        == std::mem::discriminant(&limit.algorithm);
                if same { slot.take() } else { None }
            });
            if let Some(kept) = kept {
                *state = kept;
            }
        }
    }

    pub fn as_slice(&self) -> &[State] {
        match self {
            States::One(state) => std::slice::from_ref(state),
            States::Many(states) => states,
            States::Ban(_) => &[],
        }
    }
}

/// Bytes of a pair's name kept inside the entry; longer names go to the heap.
const INLINE_NAME: usize = 29;

/// A (resource, key) pair as the resource's bytes followed by the key's.
#[derive(Debug)]
pub(super) enum PairName {
    Inline {
        resource_len: u8,
        len: u8,
        bytes: [u8; INLINE_NAME],
    },
    Heap {
        resource_len: u32,
        bytes: Box<[u8]>,
    },
}

impl PairName {
    pub fn new(key: BucketKey<'_>) -> Self {
        let (resource, client) = (key.resource.as_bytes(), key.key.as_bytes());
        let len = resource.len() + client.len();
        if len <= INLINE_NAME {
            let mut bytes = [0; INLINE_NAME];
            bytes[..resource.len()].copy_from_slice(resource);
            bytes[resource.len()..len].copy_from_slice(client);
            PairName::Inline {
                resource_len: resource.len() as u8,
                len: len as u8,
                bytes,
            }
        } else {
            PairName::Heap {
                // Resources are rule names, far below 4 GiB; a longer one only loses inlining.
                resource_len: u32::try_from(resource.len()).unwrap_or(u32::MAX),
                bytes: [resource, client].concat().into_boxed_slice(),
            }
        }
    }

    /// The resource's bytes and the key's.
    #[inline]
    pub fn parts(&self) -> (&[u8], &[u8]) {
        let (bytes, resource_len) = match self {
            PairName::Inline {
                resource_len,
                len,
                bytes,
            } => (&bytes[..*len as usize], *resource_len as usize),
            PairName::Heap {
                resource_len,
                bytes,
            } => (&bytes[..], *resource_len as usize),
        };
        bytes.split_at(resource_len.min(bytes.len()))
    }

    #[inline]
    pub fn is(&self, key: BucketKey<'_>) -> bool {
        let (resource, client) = self.parts();
        same_bytes(resource, key.resource.as_bytes()) && same_bytes(client, key.key.as_bytes())
    }
}

/// Slice equality that compares short slices (names mostly are) with a few overlapping word
/// loads instead of a call into libc: it runs on every lookup.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |bytes: &[u8], at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
    let half = |bytes: &[u8], at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        17..=32 => {
            word(a, 0) == word(b, 0)
                && word(a, 8) == word(b, 8)
                && word(a, n - 16) == word(b, n - 16)
                && word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_fits_one_small_allocation() {
        assert_eq!(
            std::mem::size_of::<States>(),
            std::mem::size_of::<State>(),
            "stacking support must not grow the common one-limit entry"
        );
        assert_eq!(std::mem::size_of::<PairName>(), 32);
        // glibc serves up to 72 bytes from an 80-byte chunk.
        assert!(std::mem::size_of::<Entry>() <= 72);
    }

    #[test]
    fn an_expiry_keeps_its_time_and_headroom_apart() {
        for (at_us, headroom) in [(0, 0), (1_700_000_000_000_000, 255), (AT_MASK, 17)] {
            let expiry = Expiry::new(at_us, headroom);
            assert_eq!((expiry.at_us(), expiry.headroom()), (at_us, headroom));
        }
        assert_eq!(Expiry::new(u64::MAX, 3).at_us(), AT_MASK, "never saturates");
        let decision = |remaining, limit| crate::algorithm::Decision {
            allowed: true,
            limit,
            remaining,
            reset_after_us: 1,
            retry_after_us: 0,
        };
        let spent = Decisions::from_slice(&[decision(4, 5), decision(0, 100)]);
        assert_eq!(
            Expiry::after(9, &spent).headroom(),
            0,
            "the emptiest limit counts"
        );
        let fresh = Decisions::from_slice(&[decision(5, 5)]);
        assert_eq!(Expiry::after(9, &fresh).headroom(), 255);
        let order: Vec<u8> = [0, 1, 4, 5, 7, 8]
            .map(|remaining| headroom(remaining, 8))
            .to_vec();
        assert_eq!(
            order,
            [0, 64, 128, 128, 192, 255],
            "more left, more headroom"
        );
    }

    #[test]
    fn same_bytes_is_slice_equality_at_every_length_and_position() {
        let texts: Vec<Vec<u8>> = (0..48)
            .map(|len| (0..len).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        for a in &texts {
            for b in &texts {
                assert_eq!(same_bytes(a, b), a == b);
            }
            for at in 0..a.len() {
                let mut other = a.clone();
                other[at] ^= 1;
                assert!(
                    !same_bytes(a, &other),
                    "{} bytes, differing at {at}",
                    a.len()
                );
            }
        }
    }

    #[test]
    fn a_name_keeps_both_parts_whatever_their_length() {
        for (resource, key) in [
            ("api", "client-0000000000042"),
            ("", ""),
            ("api", ""),
            ("", "k"),
            ("a-resource-name", "and-a-key-that-is-longer-than-29"),
            ("r", &"k".repeat(28)),
            ("r", &"k".repeat(29)),
        ] {
            let key = BucketKey { resource, key };
            let name = PairName::new(key);
            assert_eq!(name.parts(), (resource.as_bytes(), key.key.as_bytes()));
            assert!(name.is(key));
            assert!(
                !name.is(BucketKey {
                    resource: "",
                    key: &format!("{resource}{}", key.key)
                }) || resource.is_empty()
            );
        }
    }
}
