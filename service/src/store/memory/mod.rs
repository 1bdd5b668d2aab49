//! The embedded store: per-key state in memory, sharded so concurrent requests on different
//! keys rarely share a lock (all of one client key's state shares a shard, so a decision that
//! reads a key-wide ban takes one lock), and bounded: state that is back to fresh is swept, and
//! past `max_keys` the soonest-expiring key of a small sample is evicted.

use std::{
    collections::HashMap,
    hash::BuildHasher,
    ops::{Deref, DerefMut},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

use self::{
    entry::{Entry, Expiry, PairName, States},
    leases::Leases,
};
use super::{BucketKey, LimitsOf, Remapping, Store, StoreError};
use crate::{
    adaptive::{Aimd, Shared, Window},
    algorithm::{
        State,
        ban::{Ban, BanScope, BanState, Bans},
        concurrency::{Acquired, Concurrency, StackedAcquire, acquire_stacked},
        stacked::{self, Decisions, Limit},
    },
    clock::Clock,
    config::{FullPolicy, MemoryConfig},
};

mod entry;
mod leases;

/// How many entries eviction compares when a shard is full.
const EVICTION_SAMPLE: usize = 8;

/// How many samples eviction takes, at most, looking for a key with quota left to forget.
const EVICTION_ATTEMPTS: u64 = 4;

#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Shard]>,
    shard_mask: u64,
    keys_per_shard: usize,
    full_policy: FullPolicy,
    hasher: foldhash::fast::RandomState,
    clock: Clock,
    evictions: AtomicU64,
    /// Keys banned at the last sweep (counted there, where every entry is visited anyway).
    active_bans: AtomicU64,
    /// The latest change of rules; a shard behind it is carried over when next locked.
    generation: AtomicU64,
    remaps: Mutex<PendingRemaps>,
    /// Each adaptive resource's shared state (a handful: one per configured resource).
    adaptive: Mutex<HashMap<String, Shared>>,
}

/// Aligned to its own cache lines so neighbouring shards' locks do not contend.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<ShardState>);

/// A shard's entries, and the last change of rules they were carried over.
#[derive(Debug, Default)]
struct ShardState {
    table: Table,
    generation: u64,
    leases: Leases,
}

impl Deref for ShardState {
    type Target = Table;
    fn deref(&self) -> &Table {
        &self.table
    }
}

impl DerefMut for ShardState {
    fn deref_mut(&mut self) -> &mut Table {
        &mut self.table
    }
}

/// Changes of rules whose layouts some shard may not have carried over yet, in order.
type PendingRemaps = Vec<(u64, Arc<dyn Remapping>)>;

/// Entries are boxed: a table keeps up to half its slots empty as it grows, and an empty slot
/// should cost a pointer, not an entry.
type Table = HashTable<Box<Entry>>;

/// Distinguishes a pair's ban entry from its limits entry in the table.
const BAN_HASH_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// The pair a ban's state is kept under: the key on its resource, or (a key-wide ban) the
/// key's [`key_wide`] pair.
fn ban_key<'a>(key: BucketKey<'a>, ban: &Ban) -> BucketKey<'a> {
    match ban.scope {
        BanScope::Resource => key,
        BanScope::Key => key_wide(key),
    }
}

/// The pair of a key-wide ban: the key on the empty resource, which no request can name (an
/// empty resource means `default`).
fn key_wide(key: BucketKey<'_>) -> BucketKey<'_> {
    BucketKey {
        resource: "",
        key: key.key,
    }
}

impl MemoryStore {
    pub fn new(config: &MemoryConfig, clock: Clock) -> Self {
        let shards = config.shards.max(1).next_power_of_two();
        Self {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            shard_mask: shards as u64 - 1,
            keys_per_shard: config.max_keys.div_ceil(shards).max(1),
            full_policy: config.full_policy,
            hasher: foldhash::fast::RandomState::default(),
            clock,
            evictions: AtomicU64::new(0),
            active_bans: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            remaps: Mutex::default(),
            adaptive: Mutex::default(),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Live keys evicted because the store was full (each loses its state early).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The decisions for one request, synchronously: the store's whole hot path. Every state of
    /// one client key (each resource's limits, its bans) lives in one shard, so one lock makes
    /// the whole decision atomic, a key-wide ban included.
    ///
    /// When the store is full under `full_policy = deny_new` and nothing can go without cost,
    /// a new key is denied here (every limit, for a second); [`Store::check`] reports it as
    /// [`StoreError::Full`] so the rule's failure mode answers instead.
    pub fn check_now(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
        cost: u64,
    ) -> Decisions {
        self.try_check_now(key, limits, bans, cost)
            .unwrap_or_else(|Full| refused(limits))
    }

    fn try_check_now(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
        cost: u64,
    ) -> Result<Decisions, Full> {
        let key_hash = self.key_hash(key.key.as_bytes());
        let hash = self.pair_hash(key_hash, key.resource.as_bytes());
        let now = self.clock.now_us();
        let mut table = self.lock_shard(key_hash);
        if bans.watches_key_wide() {
            let key_wide = self.ban_state(&table, key_hash, key_wide(key));
            if key_wide.remaining_us(now).is_some() {
                return self.decide(&mut table, key, hash, limits, now, |states| {
                    stacked::peek_banned(limits, states, &key_wide, now)
                });
            }
        }
        let Some(ban) = bans.policy else {
            return self.decide(&mut table, key, hash, limits, now, |states| {
                stacked::check(limits, states, cost, now)
            });
        };
        let ban_key = ban_key(key, ban);
        let ban_hash = self.ban_hash(key_hash, ban_key);
        let before = self.ban_state(&table, key_hash, ban_key);
        let mut ban_state = before;
        let decisions = self.decide(&mut table, key, hash, limits, now, |states| {
            stacked::check_banned(limits, states, ban, &mut ban_state, cost, now)
        })?;
        if ban_state != before {
            let expires_at_us = now.saturating_add(ban.expires_after_us(&ban_state, now));
            match table.find_mut(ban_hash, |entry| entry.is_ban_of(ban_key)) {
                Some(entry) => {
                    if let States::Ban(state) = &mut entry.states {
                        **state = ban_state;
                    }
                    entry.expiry = Expiry::new(expires_at_us, 0);
                }
                None => {
                    // Stored whatever it costs: a ban not written is a ban lifted.
                    self.insert(
                        &mut table,
                        ban_hash,
                        Entry {
                            name: PairName::new(ban_key),
                            states: States::Ban(Box::new(ban_state)),
                            expiry: Expiry::new(expires_at_us, 0),
                        },
                        now,
                        FullPolicy::Evict,
                    );
                }
            }
        }
        Ok(decisions)
    }

    /// Runs `decide` on the key's limit states (fresh ones for a new key, or when the rule's
    /// number of limits changed) and keeps them unless they are still fresh.
    fn decide(
        &self,
        table: &mut Table,
        key: BucketKey<'_>,
        hash: u64,
        limits: &[Limit],
        now: u64,
        decide: impl FnOnce(&mut [State]) -> Decisions,
    ) -> Result<Decisions, Full> {
        // `iter_hash_mut` rather than `find_mut`, whose comparison is a dynamic call: this is
        // the hot path.
        if let Some(entry) = table
            .iter_hash_mut(hash)
            .find(|entry| entry.is_limits_of(key))
        {
            if entry.states.as_slice().len() != limits.len() {
                // The rule gained or lost limits: the old states answer nothing about the new ones.
                entry.states = States::fresh(limits, now);
            }
            let decisions = decide(entry.states.as_mut_slice());
            entry.expiry =
                Expiry::after(now.saturating_add(decisions.reset_after_us()), &decisions);
            return Ok(decisions);
        }
        let mut states = States::fresh(limits, now);
        let decisions = decide(states.as_mut_slice());
        let reset_after_us = decisions.reset_after_us();
        if reset_after_us > 0 {
            let stored = self.insert(
                table,
                hash,
                Entry {
                    name: PairName::new(key),
                    states,
                    expiry: Expiry::after(now.saturating_add(reset_after_us), &decisions),
                },
                now,
                self.full_policy,
            );
            if !stored {
                return Err(Full);
            }
        }
        Ok(decisions)
    }

    /// Acquires lease `lease` of `key` under `concurrency` together with `limits`, all or
    /// nothing, under the key's one lock ([`acquire_stacked`]). A new key's leases are
    /// refused (as full, for a second) when its shard already holds as many lease sets as keys.
    pub fn acquire_now(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        concurrency: &Concurrency,
        lease: u64,
    ) -> StackedAcquire {
        let key_hash = self.key_hash(key.key.as_bytes());
        let hash = self.pair_hash(key_hash, key.resource.as_bytes());
        let now = self.clock.now_us();
        let mut shard = self.lock_shard(key_hash);
        let no_room = || StackedAcquire {
            decisions: refused(limits),
            lease: Some(Acquired::Full {
                retry_after_us: 1_000_000,
            }),
        };
        let Some(mut leases) = shard
            .leases
            .take(key.resource, key.key, self.keys_per_shard)
        else {
            return no_room();
        };
        let mut answer = None;
        let decided = self.decide(&mut shard, key, hash, limits, now, |states| {
            let acquired = acquire_stacked(limits, states, concurrency, &mut leases, lease, 1, now);
            let decisions = acquired.decisions.clone();
            answer = Some(acquired);
            decisions
        });
        shard.leases.put(key.resource, key.key, leases, now);
        match (decided, answer) {
            (Ok(_), Some(answer)) => answer,
            _ => no_room(),
        }
    }

    /// Ends lease `lease` of `key`; false when it was not live.
    pub fn release_now(&self, key: BucketKey<'_>, concurrency: &Concurrency, lease: u64) -> bool {
        let key_hash = self.key_hash(key.key.as_bytes());
        let now = self.clock.now_us();
        let mut shard = self.lock_shard(key_hash);
        let Some(mut leases) = shard.leases.take(key.resource, key.key, usize::MAX) else {
            return false;
        };
        let released = concurrency.release(&mut leases, lease, now);
        shard.leases.put(key.resource, key.key, leases, now);
        released
    }

    /// The ban state kept under `ban_key` (fresh when there is none).
    fn ban_state(&self, table: &Table, key_hash: u64, ban_key: BucketKey<'_>) -> BanState {
        table
            .find(self.ban_hash(key_hash, ban_key), |entry| {
                entry.is_ban_of(ban_key)
            })
            .and_then(|entry| entry.ban_state())
            .unwrap_or_default()
    }

    /// Stores a new entry, making room first when the shard is full; false (nothing stored)
    /// when `policy` is `DenyNew` and no entry can go without cost.
    fn insert(
        &self,
        table: &mut Table,
        hash: u64,
        entry: Entry,
        now: u64,
        policy: FullPolicy,
    ) -> bool {
        if table.len() >= self.keys_per_shard && !self.evict_one(table, now, policy) {
            return false;
        }
        table.insert_unique(hash, Box::new(entry), |entry| self.entry_hash(entry));
        true
    }

    pub fn peek_now(&self, key: BucketKey<'_>, limits: &[Limit], bans: Bans<'_>) -> Decisions {
        let key_hash = self.key_hash(key.key.as_bytes());
        let hash = self.pair_hash(key_hash, key.resource.as_bytes());
        let now = self.clock.now_us();
        let table = self.lock_shard(key_hash);
        let fresh;
        let states = match table.find(hash, |entry| entry.is_limits_of(key)) {
            Some(entry) if entry.states.as_slice().len() == limits.len() => entry.states.as_slice(),
            _ => {
                fresh = States::fresh(limits, now);
                fresh.as_slice()
            }
        };
        // As a check reads them: a key-wide ban first, then the rule's own.
        let key_wide = if bans.watches_key_wide() {
            self.ban_state(&table, key_hash, key_wide(key))
        } else {
            BanState::default()
        };
        let ban_state = match bans.policy {
            _ if key_wide.remaining_us(now).is_some() => key_wide,
            Some(ban) => self.ban_state(&table, key_hash, ban_key(key, ban)),
            None => BanState::default(),
        };
        stacked::peek_banned(limits, states, &ban_state, now)
    }

    /// Removes the ban records `bans` reads for `key`; see [`Store::lift_ban`].
    pub fn lift_ban_now(&self, key: BucketKey<'_>, bans: Bans<'_>) -> bool {
        let key_hash = self.key_hash(key.key.as_bytes());
        let mut table = self.lock_shard(key_hash);
        let mut records = Vec::with_capacity(2);
        if let Some(ban) = bans.policy {
            records.push(ban_key(key, ban));
        }
        if bans.watches_key_wide() {
            records.push(key_wide(key));
        }
        let mut lifted = false;
        for record in records {
            if let Ok(entry) = table.find_entry(self.ban_hash(key_hash, record), |entry| {
                entry.is_ban_of(record)
            }) {
                entry.remove();
                lifted = true;
            }
        }
        lifted
    }

    /// Forgets the key's limit states; its bans stay (see [`Store::reset`]).
    pub fn reset_now(&self, key: BucketKey<'_>) -> bool {
        let key_hash = self.key_hash(key.key.as_bytes());
        let hash = self.pair_hash(key_hash, key.resource.as_bytes());
        let mut table = self.lock_shard(key_hash);
        match table.find_entry(hash, |entry| entry.is_limits_of(key)) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Drops every entry whose expiry has passed; returns how many. See
    /// [`MemoryStore::sweep_expired_under`].
    pub fn sweep_expired(&self) -> usize {
        self.sweep_expired_under(&|_, _| None)
    }

    /// Drops every entry whose state is back to fresh; returns how many. An entry's expiry
    /// was worked out under the rules of its last decision; when `limits_of` names the limits
    /// its (resource, key) is decided under now (a reload may have changed them), the state is
    /// read under those before it goes, and kept, with a new expiry, if it is not fresh under
    /// them. Counts the keys banned now on the way ([`MemoryStore::active_bans`]).
    pub fn sweep_expired_under(&self, limits_of: &LimitsOf<'_>) -> usize {
        let now = self.clock.now_us();
        let mut banned = 0;
        let swept = self
            .shards
            .iter()
            .map(|shard| {
                let mut table = self.caught_up(shard.0.lock());
                table.leases.sweep(now);
                let before = table.len();
                table.retain(|entry| {
                    if let Some(ban) = entry.ban_state() {
                        if ban.remaining_us(now).is_some() {
                            banned += 1;
                        }
                        return entry.expiry.at_us() > now;
                    }
                    entry.expiry.at_us() > now || still_in_use(entry, limits_of, now)
                });
                before - table.len()
            })
            .sum();
        self.active_bans.store(banned, Ordering::Relaxed);
        swept
    }

    /// See [`Store::remap`]: `change` is queued, `commit` swaps the rules in, and every shard
    /// is then carried over one at a time, so no request waits for more than one shard's pass.
    /// A shard a request reaches first is carried over by that request, under the shard's own
    /// lock, before it reads any state.
    pub fn remap(&self, change: Arc<dyn Remapping>, commit: impl FnOnce()) {
        let generation = {
            let mut remaps = self.remaps.lock();
            let generation = self.generation.load(Ordering::Acquire) + 1;
            remaps.push((generation, change));
            self.generation.store(generation, Ordering::Release);
            generation
        };
        commit();
        for shard in self.shards.iter() {
            self.carry_over(&mut shard.0.lock());
        }
        // Every shard is at `generation` or later now: those changes are done with.
        self.remaps
            .lock()
            .retain(|(pending, _)| *pending > generation);
    }

    /// Locks the shard of `key_hash`, carried over to the latest rules.
    fn lock_shard(&self, key_hash: u64) -> MutexGuard<'_, ShardState> {
        self.caught_up(self.shard(key_hash).lock())
    }

    #[inline]
    fn caught_up<'a>(&self, mut state: MutexGuard<'a, ShardState>) -> MutexGuard<'a, ShardState> {
        if state.generation != self.generation.load(Ordering::Acquire) {
            self.carry_over(&mut state);
        }
        state
    }

    /// Applies every queued change of rules the shard has not seen, in order.
    #[cold]
    fn carry_over(&self, state: &mut ShardState) {
        let target = self.generation.load(Ordering::Acquire);
        if state.generation >= target {
            return;
        }
        let changes: Vec<Arc<dyn Remapping>> = self
            .remaps
            .lock()
            .iter()
            .filter(|(generation, _)| *generation > state.generation && *generation <= target)
            .map(|(_, change)| change.clone())
            .collect();
        let now = self.clock.now_us();
        for change in &changes {
            for entry in state.table.iter_mut() {
                if matches!(entry.states, States::Ban(_)) {
                    continue;
                }
                let (resource, key) = entry.name.parts();
                let (Ok(resource), Ok(key)) =
                    (std::str::from_utf8(resource), std::str::from_utf8(key))
                else {
                    continue;
                };
                if let Some((before, after)) = change.layouts(resource, key) {
                    entry.states.remap(before, after, now);
                }
            }
        }
        state.generation = target;
    }

    /// Keys (per resource, or key-wide) under a ban at the last sweep.
    pub fn active_bans(&self) -> u64 {
        self.active_bans.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.0.lock().table.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A client key's hash, computed once per request: it picks the shard and seeds the
    /// hash of each of the key's entries.
    fn key_hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of every state of a client key, whatever the resource. The high bits, so
    /// the shard says nothing about where an entry sits in its table.
    fn shard(&self, key_hash: u64) -> &Mutex<ShardState> {
        &self.shards[((key_hash >> 40) & self.shard_mask) as usize].0
    }

    /// Where a pair's limit states are found.
    fn pair_hash(&self, key_hash: u64, resource: &[u8]) -> u64 {
        self.hasher.hash_one((key_hash, resource))
    }

    /// Where the ban state of `ban_key` is found: apart from the same pair's limit states.
    fn ban_hash(&self, key_hash: u64, ban_key: BucketKey<'_>) -> u64 {
        self.pair_hash(key_hash, ban_key.resource.as_bytes()) ^ BAN_HASH_SALT
    }

    /// The hash an entry was inserted under, recomputed when the table grows (a stored hash
    /// would cost every entry 8 bytes to save a rare rehash).
    fn entry_hash(&self, entry: &Entry) -> u64 {
        let (resource, key) = entry.name.parts();
        // The very functions a lookup uses, so the two can never disagree.
        let hash = self.pair_hash(self.key_hash(key), resource);
        match entry.states {
            States::Ban(_) => hash ^ BAN_HASH_SALT,
            _ => hash,
        }
    }

    /// Makes room in a full shard at the least cost: from a sample of entries at a random
    /// place in the table, an expired one if there is one (that loses nothing), else the one
    /// whose key had the most quota left (forgetting it gives that key the least), the
    /// soonest-expiring among equals. A key that spent its quota, or a ban record, goes only
    /// when the whole sample is such keys, so a flood of new keys cannot reset them.
    /// Forgets the entry whose loss costs least of a sample (see [`FullPolicy`]); under
    /// `DenyNew` only one whose loss costs nothing. Whether one went.
    fn evict_one(&self, table: &mut Table, now: u64, policy: FullPolicy) -> bool {
        let len = table.len();
        if len == 0 {
            return true;
        }
        let cost = |entry: &Entry| {
            let expiry = entry.expiry;
            (
                expiry.at_us() > now,
                u8::MAX - expiry.headroom(),
                expiry.at_us(),
            )
        };
        let mut victim: Option<&Entry> = None;
        for attempt in 0..EVICTION_ATTEMPTS {
            let draw = self.evictions.load(Ordering::Relaxed) ^ now ^ attempt;
            let start = (self.hasher.hash_one(draw) % len as u64) as usize;
            let best = table
                .iter()
                .skip(start)
                .chain(table.iter())
                .take(EVICTION_SAMPLE.min(len))
                .map(|entry| &**entry)
                .min_by_key(|entry| cost(entry));
            victim = match (victim, best) {
                (Some(kept), Some(best)) if cost(kept) <= cost(best) => Some(kept),
                (_, best) => best,
            };
            // A sample of only spent keys and bans is rare unless most of the table is such
            // keys; only then is another place worth a look.
            if victim.is_some_and(|entry| entry.expiry.headroom() > 0) {
                break;
            }
        }
        let free = |entry: &Entry| {
            entry.expiry.at_us() <= now
                || (entry.expiry.headroom() == u8::MAX && !matches!(entry.states, States::Ban(_)))
        };
        if policy == FullPolicy::DenyNew && !victim.is_some_and(free) {
            return false;
        }
        let Some(victim) = victim.map(|entry| {
            (
                self.entry_hash(entry),
                entry as *const Entry,
                entry.expiry.at_us(),
            )
        }) else {
            return false;
        };
        let (hash, address, expires_at_us) = victim;
        if let Ok(entry) = table.find_entry(hash, |entry| std::ptr::eq(&**entry, address)) {
            entry.remove();
            if expires_at_us > now {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
            return true;
        }
        false
    }
}

impl Store for MemoryStore {
    async fn check(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
        cost: u64,
    ) -> Result<Decisions, StoreError> {
        self.try_check_now(key, limits, bans, cost)
            .map_err(|Full| StoreError::Full)
    }

    async fn peek(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        bans: Bans<'_>,
    ) -> Result<Decisions, StoreError> {
        Ok(self.peek_now(key, limits, bans))
    }

    /// Every limit of a key lives in its one entry, so the limits need not be named.
    async fn reset(&self, key: BucketKey<'_>, _limits: &[Limit]) -> Result<bool, StoreError> {
        Ok(self.reset_now(key))
    }

    async fn lift_ban(&self, key: BucketKey<'_>, bans: Bans<'_>) -> Result<bool, StoreError> {
        Ok(self.lift_ban_now(key, bans))
    }

    async fn acquire(
        &self,
        key: BucketKey<'_>,
        limits: &[Limit],
        concurrency: &Concurrency,
        lease: u64,
    ) -> Result<StackedAcquire, StoreError> {
        Ok(self.acquire_now(key, limits, concurrency, lease))
    }

    async fn release(
        &self,
        key: BucketKey<'_>,
        concurrency: &Concurrency,
        lease: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.release_now(key, concurrency, lease))
    }

    async fn adapt(
        &self,
        resource: &str,
        aimd: &Aimd,
        window_us: u64,
        reported: Window,
    ) -> Result<u64, StoreError> {
        let now = self.clock.now_us();
        let mut states = self.adaptive.lock();
        let shared = states.get(resource).copied();
        let merged = aimd.merge(shared, now, window_us, reported);
        match states.get_mut(resource) {
            Some(state) => *state = merged,
            None => {
                states.insert(resource.to_owned(), merged);
            }
        }
        Ok(merged.factor_ppm)
    }

    fn active_keys(&self) -> Option<u64> {
        Some(self.len() as u64)
    }

    fn active_bans(&self) -> Option<u64> {
        Some(MemoryStore::active_bans(self))
    }

    fn upkeep(&self, limits_of: &LimitsOf<'_>) {
        self.sweep_expired_under(limits_of);
    }

    fn remap(&self, change: Arc<dyn Remapping>, commit: &mut dyn FnMut()) {
        MemoryStore::remap(self, change, commit);
    }
}

/// The store had no room for a new key (`full_policy = deny_new`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Full;

/// A new key's answer when there is no room for it: every limit denies, for a second.
fn refused(limits: &[Limit]) -> Decisions {
    let mut decisions = Decisions::default();
    for limit in limits {
        decisions.push(crate::algorithm::Decision {
            allowed: false,
            limit: limit.algorithm.limit(),
            remaining: 0,
            reset_after_us: 0,
            retry_after_us: 1_000_000,
        });
    }
    decisions
}

/// Whether an entry whose expiry has passed must stay: its state is not fresh under the limits
/// its pair is decided under now (then its expiry moves to when it will be).
fn still_in_use(entry: &mut Entry, limits_of: &LimitsOf<'_>, now: u64) -> bool {
    let (resource, key) = entry.name.parts();
    let (Ok(resource), Ok(key)) = (std::str::from_utf8(resource), std::str::from_utf8(key)) else {
        return false;
    };
    let Some(limits) = limits_of(resource, key) else {
        return false;
    };
    if entry.states.as_slice().len() != limits.len() {
        return false;
    }
    let decisions = stacked::peek(limits, entry.states.as_slice(), now);
    let reset_after_us = decisions.reset_after_us();
    if reset_after_us == 0 {
        return false;
    }
    entry.expiry = Expiry::after(now.saturating_add(reset_after_us), &decisions);
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::algorithm::{Algorithm, FixedWindow, TokenBucket};

    fn store(shards: usize, max_keys: usize) -> MemoryStore {
        let config = MemoryConfig {
            shards,
            max_keys,
            full_policy: crate::config::FullPolicy::Evict,
            sweep_interval: Duration::from_secs(1),
        };
        MemoryStore::new(&config, Clock::manual(1_000_000))
    }

    fn bucket(key: &str) -> BucketKey<'_> {
        BucketKey { resource: "r", key }
    }

    /// Banned on the resource for `duration_us` at the `after`-th denial within a minute,
    /// every time for as long.
    fn fixed_ban(after: u64, duration_us: u64) -> Ban {
        Ban {
            after,
            within_us: 60_000_000,
            duration_us,
            factor: 1.0,
            max_duration_us: duration_us,
            lookback_us: 0,
            scope: BanScope::Resource,
        }
    }

    #[derive(Debug)]
    struct Swap {
        before: Vec<Limit>,
        after: Vec<Limit>,
    }

    impl Remapping for Swap {
        fn layouts(&self, _: &str, _: &str) -> Option<(&[Limit], &[Limit])> {
            Some((&self.before, &self.after))
        }
    }

    #[test]
    fn a_request_reaching_a_shard_first_carries_it_over_itself() {
        let store = store(4, 1_000);
        let minute = Limit::new(
            "minute",
            Algorithm::FixedWindow(FixedWindow::new(10, 60_000_000)),
        );
        let burst = Limit::new("burst", Algorithm::TokenBucket(TokenBucket::new(3, 1e-6)));
        let before = vec![minute.clone(), burst.clone()];
        let after = vec![burst, minute];
        store.check_now(bucket("k"), &before, Bans::NONE, 2);
        let change = Arc::new(Swap {
            before,
            after: after.clone(),
        });
        let mut seen = None;
        // The rules are live once `commit` runs; no shard has been walked yet.
        store.remap(change, || {
            seen = Some(store.check_now(bucket("k"), &after, Bans::NONE, 1));
        });
        let remaining: Vec<u64> = seen
            .unwrap()
            .as_slice()
            .iter()
            .map(|decision| decision.remaining)
            .collect();
        assert_eq!(remaining, [0, 7], "each count followed its limit's name");
        assert!(store.remaps.lock().is_empty(), "the change is done with");
    }

    #[test]
    fn deny_new_refuses_a_new_key_rather_than_forget_a_spent_one() {
        let config = MemoryConfig {
            shards: 1,
            max_keys: 3,
            full_policy: FullPolicy::DenyNew,
            sweep_interval: Duration::from_secs(1),
        };
        let store = MemoryStore::new(&config, Clock::manual(1_000_000));
        let short = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(1, 1_000_000)));
        let long = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(1, 60_000_000)));
        store.check_now(bucket("soon"), &short, Bans::NONE, 1);
        for key in ["spent-1", "spent-2"] {
            assert!(store.check_now(bucket(key), &long, Bans::NONE, 1).allowed());
        }
        assert_eq!(
            store.try_check_now(bucket("new"), &long, Bans::NONE, 1),
            Err(Full),
            "every held key would give quota back"
        );
        assert!(
            !store
                .check_now(bucket("new"), &long, Bans::NONE, 1)
                .allowed()
        );
        for key in ["spent-1", "spent-2"] {
            assert!(
                !store.check_now(bucket(key), &long, Bans::NONE, 1).allowed(),
                "{key} keeps its state"
            );
        }
        // Once a key's state is back to fresh, it can go and the new key takes its place.
        store.clock().advance_us(1_000_000);
        assert!(
            store
                .try_check_now(bucket("new"), &long, Bans::NONE, 1)
                .unwrap()
                .allowed()
        );
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn sweep_keeps_state_a_reload_made_slower_to_recover() {
        let store = store(4, 1_000);
        let fast = Limit::alone(Algorithm::TokenBucket(TokenBucket::new(2, 1.0)));
        let slow = Limit::alone(Algorithm::TokenBucket(TokenBucket::new(2, 0.1)));
        store.check_now(bucket("k"), &fast, Bans::NONE, 2);
        // Under the old rule the bucket is full again after 2 s; under the new one it is not.
        store.clock().advance_us(2_500_000);
        let now_under = |limits: &'static [Limit]| {
            move |_: &str, _: &str| -> Option<&'static [Limit]> { Some(limits) }
        };
        let slow: &'static [Limit] = Box::leak(Box::new(slow));
        assert_eq!(store.sweep_expired_under(&now_under(slow)), 0);
        let answer = store.check_now(bucket("k"), slow, Bans::NONE, 1);
        assert!(
            !answer.allowed(),
            "0.25 tokens: the spent state survived the sweep {answer:?}"
        );
        // Once it is full under the new rule too, it goes.
        store.clock().advance_us(30_000_000);
        assert_eq!(store.sweep_expired_under(&now_under(slow)), 1);
    }

    #[test]
    fn sweep_drops_only_state_that_is_back_to_fresh() {
        let store = store(4, 1_000);
        let short = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(5, 1_000_000)));
        let long = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(5, 60_000_000)));
        store.check_now(bucket("short"), &short, Bans::NONE, 1);
        store.check_now(bucket("long"), &long, Bans::NONE, 1);
        assert_eq!(store.len(), 2);
        store.clock().advance_us(1_000_000);
        assert_eq!(store.sweep_expired(), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(
            store
                .peek_now(bucket("long"), &long, Bans::NONE)
                .decision()
                .remaining,
            4,
            "live state survives"
        );
    }

    #[test]
    fn a_stacked_key_keeps_every_limit_in_its_one_entry() {
        let store = store(4, 1_000);
        let limits = [
            Limit::new(
                "burst",
                Algorithm::FixedWindow(FixedWindow::new(2, 1_000_000)),
            ),
            Limit::new(
                "hour",
                Algorithm::FixedWindow(FixedWindow::new(5, 3_600_000_000)),
            ),
        ];
        store.check_now(bucket("k"), &limits, Bans::NONE, 1);
        assert_eq!(store.len(), 1);
        store.clock().advance_us(1_000_000);
        assert_eq!(store.sweep_expired(), 0, "kept until every limit is fresh");
        let peeked = store.peek_now(bucket("k"), &limits, Bans::NONE);
        assert_eq!(
            peeked
                .as_slice()
                .iter()
                .map(|d| d.remaining)
                .collect::<Vec<_>>(),
            [2, 4]
        );
        let one = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(9, 3_600_000_000)));
        assert_eq!(
            store
                .check_now(bucket("k"), &one, Bans::NONE, 1)
                .decision()
                .remaining,
            8,
            "a rule that changed its number of limits starts afresh"
        );
    }

    #[test]
    fn a_flood_of_new_keys_never_resets_a_spent_key() {
        let store = store(1, 1_000);
        let limits = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(5, 60_000_000)));
        let spent: Vec<String> = (0..200).map(|i| format!("spent-{i}")).collect();
        for key in &spent {
            store.check_now(bucket(key), &limits, Bans::NONE, 5);
        }
        for i in 0..100_000 {
            store.check_now(bucket(&format!("flood-{i}")), &limits, Bans::NONE, 1);
        }
        assert!(store.evictions() > 90_000, "the flood filled the store");
        let reset: Vec<&String> = spent
            .iter()
            .filter(|key| {
                store
                    .check_now(bucket(key), &limits, Bans::NONE, 1)
                    .allowed()
            })
            .collect();
        assert!(
            reset.is_empty(),
            "{} got their quota back: {reset:?}",
            reset.len()
        );
    }

    #[test]
    fn entries_are_found_after_their_table_grows() {
        // One shard, so its table regrows many times; every key also gets a ban record, kept
        // under another hash, which must survive the rehashing too.
        let store = store(1, 100_000);
        let limits = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(1, 60_000_000)));
        let ban = fixed_ban(2, 60_000_000);
        let keys: Vec<String> = (0..5_000)
            .map(|i| format!("a-key-long-enough-to-live-on-the-heap-{i}"))
            .chain((0..5_000).map(|i| i.to_string()))
            .collect();
        for key in &keys {
            store.check_now(bucket(key), &limits, Bans::policy(&ban), 1);
            store.check_now(bucket(key), &limits, Bans::policy(&ban), 1);
        }
        assert_eq!(
            store.len(),
            2 * keys.len(),
            "a limits entry and a ban record each"
        );
        for key in &keys {
            let key = bucket(key);
            assert_eq!(
                store
                    .peek_now(key, &limits, Bans::NONE)
                    .decision()
                    .remaining,
                0
            );
            assert!(
                !store
                    .check_now(key, &limits, Bans::policy(&ban), 1)
                    .allowed(),
            );
            assert!(
                store
                    .peek_now(key, &limits, Bans::policy(&ban))
                    .banned_for_us()
                    .is_some(),
                "the second offence banned {key:?}"
            );
        }
    }

    #[test]
    fn the_sweep_counts_the_keys_banned_now() {
        let store = store(4, 1_000);
        let limits = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(1, 60_000_000)));
        let ban = fixed_ban(1, 5_000_000);
        for key in ["a", "b", "c"] {
            store.check_now(bucket(key), &limits, Bans::policy(&ban), 1);
        }
        for key in ["a", "b"] {
            store.check_now(bucket(key), &limits, Bans::policy(&ban), 1);
        }
        assert_eq!(store.active_bans(), 0, "not counted before a sweep");
        store.sweep_expired();
        assert_eq!(store.active_bans(), 2);
        store.clock().advance_us(5_000_000);
        store.sweep_expired();
        assert_eq!(store.active_bans(), 0, "both bans ended");
    }

    #[test]
    fn requests_that_leave_state_fresh_store_nothing() {
        let store = store(4, 1_000);
        let algorithm = Limit::alone(Algorithm::TokenBucket(TokenBucket::new(5, 1.0)));
        store.peek_now(bucket("a"), &algorithm, Bans::NONE);
        store.check_now(bucket("b"), &algorithm, Bans::NONE, 6);
        assert!(store.is_empty());
    }

    #[test]
    fn max_keys_bounds_memory_and_evicts_the_soonest_expiring() {
        let store = store(1, 4);
        let soon = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(5, 1_000_000)));
        let late = Limit::alone(Algorithm::FixedWindow(FixedWindow::new(5, 3_600_000_000)));
        store.check_now(bucket("soon"), &soon, Bans::NONE, 1);
        for key in ["l1", "l2", "l3"] {
            store.check_now(bucket(key), &late, Bans::NONE, 1);
        }
        for key in ["l4", "l5", "l6"] {
            store.check_now(bucket(key), &late, Bans::NONE, 1);
            assert!(store.len() <= 4);
        }
        assert_eq!(
            store
                .peek_now(bucket("soon"), &soon, Bans::NONE)
                .decision()
                .remaining,
            5,
            "evicted first"
        );
        assert_eq!(store.evictions(), 3);
        assert_eq!(
            store
                .peek_now(bucket("l6"), &late, Bans::NONE)
                .decision()
                .remaining,
            4
        );
    }
}
