//! The in-process response store: moka, bounded by bytes, with freshness decided by our
//! own clock, and a purge index kept beside it.
//!
//! moka has no secondary index, so purges by tag, operation, claim value or root field go
//! through [`Index`]: index key → the cache keys holding it. An entry's weight includes
//! its index entries, and moka's eviction listener takes them out of the index when the
//! entry goes (evicted, expired, replaced or purged), so the index never outgrows the
//! store's byte bound.
//!
//! An execution that started before a purge must not store what it read: each insert
//! carries the [`Epoch`] its execution started at, and is dropped if a purge recorded since
//! then matches it. The last [`RECENT_PURGES`] purges are remembered; an execution older
//! than all of them stores nothing.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use moka::Expiry;
use moka::notification::RemovalCause;
use tokio::time::Instant;

use super::{CacheStats, CachedResponse, Epoch, Hit, Missed, Probe, ResponseStore, Source};
use crate::cache::key::CacheKey;
use crate::cache::purge::{IndexKey, Purge, PurgeError, Purged, Selector};

/// Per-entry memory besides the body, headers and tags, in bytes: moka's entry, deque
/// and timer nodes, the 32-byte key, the `Arc`s, the `HeaderMap`'s tables, the instants
/// and the ETag. Measured with `cargo bench --bench tag_memory` (about 1,460 bytes for an
/// entry with two short headers), rounded up.
const ENTRY_OVERHEAD: usize = 1_152;
/// Per stored header besides its name and value (the map's entry and index).
const HEADER_OVERHEAD: usize = 48;
/// Purges remembered for executions that were running when they happened: at most this
/// many, and at most [`RECENT_PURGE_BYTES`] of them (an execution older than every
/// remembered purge stores nothing, so forgetting early only costs a store).
const RECENT_PURGES: usize = 256;
const RECENT_PURGE_BYTES: usize = 4 * 1024 * 1024;

/// An entry as stored: the response and the id that tells it apart from a later entry
/// under the same key (the index must not drop the later entry's keys when the earlier
/// one is evicted).
#[derive(Debug)]
struct Stored {
    id: u64,
    response: Arc<CachedResponse>,
    /// Served until then: the response's own [`usable_until`](CachedResponse::usable_until),
    /// or sooner for a copy of another tier's entry.
    held_until: Instant,
}

impl Stored {
    /// What the entry holds in memory: the body (an exact-size copy), each stored header,
    /// its tags (in the entry and in the index), and a fixed overhead.
    fn weight(&self) -> u32 {
        let response = &self.response;
        let headers: usize = response
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + HEADER_OVERHEAD)
            .sum();
        let total = response.body.len() + headers + response.meta.weight() + ENTRY_OVERHEAD;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// Responses in memory, at most `max_bytes` of them (entries and their index).
///
/// moka evicts by its own wall clock, which tokio's paused time does not move; every read
/// therefore checks the entry's instants against `tokio::time::Instant`, and moka's expiry
/// only reclaims memory.
pub(crate) struct MemoryStore {
    entries: moka::sync::Cache<CacheKey, Arc<Stored>>,
    index: Arc<Mutex<Index>>,
    /// Held for reading while an entry is checked against recent purges and stored, and
    /// for writing while a purge is recorded and its candidates taken from the index: an
    /// insert is either seen by a purge or sees it.
    purges: RwLock<RecentPurges>,
    ids: AtomicU64,
}

/// moka's own `Debug` prints every entry: cached responses are private data, so show sizes only.
impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .field("weighted_size", &self.entries.weighted_size())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct RecentPurges {
    /// The number of purges ever recorded; an [`Epoch`] is a value of it.
    seq: u64,
    /// `(seq, selector, its weight)` of the last purges.
    recent: VecDeque<(u64, Selector, usize)>,
    bytes: usize,
}

impl RecentPurges {
    /// Whether an execution that started at `since` may store an entry tagged `meta`.
    fn allows(&self, since: Epoch, entry: &CachedResponse) -> bool {
        if self.seq == since.local {
            return true;
        }
        // Purges since `since` that are no longer remembered might have matched.
        let oldest = self.recent.front().map_or(self.seq + 1, |(seq, _, _)| *seq);
        if since.local + 1 < oldest {
            return false;
        }
        self.recent
            .iter()
            .filter(|(seq, _, _)| *seq > since.local)
            .all(|(_, selector, _)| !entry.meta.matches(selector))
    }

    fn record(&mut self, selector: &Selector) {
        self.seq += 1;
        let weight = selector.weight();
        self.bytes += weight;
        self.recent.push_back((self.seq, selector.clone(), weight));
        while self.recent.len() > RECENT_PURGES
            || (self.bytes > RECENT_PURGE_BYTES && self.recent.len() > 1)
        {
            if let Some((_, _, weight)) = self.recent.pop_front() {
                self.bytes -= weight;
            }
        }
    }
}

/// Index key (hashed) → the entries holding it, each with the id of the entry indexed.
///
/// Keys are 64-bit keyed hashes of [`IndexKey`]s, so the index holds no copy of a tag's
/// text; a collision only adds a candidate, and every candidate is confirmed against the
/// entry's own tags before it is removed. Most keys (entity tags) belong to one entry,
/// held inline without a map of its own.
#[derive(Debug, Default)]
struct Index {
    hasher: RandomState,
    keys: HashMap<u64, Holders>,
}

/// The entries holding one index key, as `(cache key, entry id)` pairs: the id tells an
/// entry from a later one stored under the same key, so each removal takes out exactly
/// its own row.
#[derive(Debug)]
enum Holders {
    One(CacheKey, u64),
    Many(HashSet<(CacheKey, u64)>),
}

impl Holders {
    fn insert(&mut self, key: CacheKey, id: u64) {
        match self {
            Holders::One(only, only_id) => {
                if (*only, *only_id) != (key, id) {
                    *self = Holders::Many(HashSet::from([(*only, *only_id), (key, id)]));
                }
            }
            Holders::Many(many) => {
                many.insert((key, id));
            }
        }
    }

    /// Removes the row `(key, id)`; returns whether none is left.
    fn remove(&mut self, key: &CacheKey, id: u64) -> bool {
        match self {
            Holders::One(only, only_id) => *only == *key && *only_id == id,
            Holders::Many(many) => {
                many.remove(&(*key, id));
                many.is_empty()
            }
        }
    }

    fn each(&self, mut f: impl FnMut(CacheKey, u64)) {
        match self {
            Holders::One(key, id) => f(*key, *id),
            Holders::Many(many) => many.iter().for_each(|(key, id)| f(*key, *id)),
        }
    }
}

impl Index {
    fn hash(&self, index_key: &IndexKey) -> u64 {
        self.hasher.hash_one(index_key)
    }

    fn add(&mut self, key: CacheKey, stored: &Stored) {
        for index_key in stored.response.meta.index_keys() {
            let hash = self.hash(&index_key);
            match self.keys.entry(hash) {
                Entry::Occupied(mut holders) => holders.get_mut().insert(key, stored.id),
                Entry::Vacant(vacant) => {
                    vacant.insert(Holders::One(key, stored.id));
                }
            }
        }
    }

    /// Takes `stored`'s rows out (a later entry under `key` has rows of its own).
    fn remove(&mut self, key: &CacheKey, stored: &Stored) {
        for index_key in stored.response.meta.index_keys() {
            let hash = self.hash(&index_key);
            if let Some(holders) = self.keys.get_mut(&hash)
                && holders.remove(key, stored.id)
            {
                self.keys.remove(&hash);
            }
        }
    }

    /// The entries indexed under any of `index_keys`.
    fn candidates(&self, index_keys: &[IndexKey]) -> Vec<(CacheKey, u64)> {
        let mut found: HashSet<(CacheKey, u64)> = HashSet::new();
        for index_key in index_keys {
            if let Some(holders) = self.keys.get(&self.hash(index_key)) {
                holders.each(|key, id| {
                    found.insert((key, id));
                });
            }
        }
        found.into_iter().collect()
    }

    fn all(&self) -> Vec<(CacheKey, u64)> {
        let mut found: HashSet<(CacheKey, u64)> = HashSet::new();
        for holders in self.keys.values() {
            holders.each(|key, id| {
                found.insert((key, id));
            });
        }
        found.into_iter().collect()
    }
}

struct ExpireWhenUseless;

/// How long moka keeps `stored`, inserted at `now`: until it is no longer served. From
/// `now`, not from when the response was made: a copy of another tier's entry, made
/// late in that entry's life, is reclaimed when the copy stops serving.
fn memory_life(stored: &Stored, now: Instant) -> Duration {
    stored.held_until.saturating_duration_since(now)
}

impl Expiry<CacheKey, Arc<Stored>> for ExpireWhenUseless {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Stored>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(memory_life(value, Instant::now()))
    }
}

impl MemoryStore {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let index = Arc::new(Mutex::new(Index::default()));
        let listener_index = Arc::clone(&index);
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_key, value: &Arc<Stored>| value.weight())
                .expire_after(ExpireWhenUseless)
                .eviction_listener(
                    move |key: Arc<CacheKey>, value: Arc<Stored>, _cause: RemovalCause| {
                        listener_index
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&key, &value);
                    },
                )
                .build(),
            index,
            purges: RwLock::new(RecentPurges::default()),
            ids: AtomicU64::new(0),
        }
    }

    fn remove_if_same(&self, key: &CacheKey, id: u64) -> bool {
        // A later entry stored under the key since the purge looked is left alone (a lost
        // race costs it nothing: it was checked against this purge when stored).
        match self.entries.get(key) {
            Some(current) if current.id == id => self.entries.remove(key).is_some(),
            _ => false,
        }
    }

    /// Stores `entry` until `held_until` at the latest (a copy of a shared entry lives
    /// shorter than the entry), unless a purge since `since` matches it.
    pub(crate) fn hold(
        &self,
        key: CacheKey,
        entry: Arc<CachedResponse>,
        since: Epoch,
        held_until: Instant,
    ) -> bool {
        let stored = Arc::new(Stored {
            id: self.ids.fetch_add(1, Ordering::Relaxed),
            held_until: held_until.min(entry.usable_until()),
            response: entry,
        });
        let purges = self.purges.read().unwrap_or_else(PoisonError::into_inner);
        if !purges.allows(since, &stored.response) {
            return false;
        }
        // Indexed before moka holds it, so the eviction listener (which may run inside
        // `insert`, or on another thread's housekeeping right after, if moka rejects or
        // replaces the entry) always finds its rows to take out. The index lock is not
        // held across the moka call: the listener takes it.
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(key, &stored);
        self.entries.insert(key, Arc::clone(&stored));
        drop(purges);
        true
    }

    #[cfg(test)]
    fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    #[cfg(test)]
    fn index_len(&self) -> usize {
        self.entries.run_pending_tasks();
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .len()
    }
}

impl ResponseStore for MemoryStore {
    /// A stale entry is left for moka's own expiry to reclaim: removing it here could race
    /// with a fresh entry stored under the same key.
    async fn get<F>(&self, key: &CacheKey, now: Instant, _probe: F) -> Result<Hit, Missed>
    where
        F: FnOnce() -> Probe + Send,
    {
        self.get_local(key, now)
            .map(|entry| Hit {
                entry,
                source: Source::Memory,
            })
            .ok_or(Missed::Absent)
    }

    fn still_valid(&self, entry: &CachedResponse, since: Epoch) -> bool {
        self.purges
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .allows(since, entry)
    }

    fn get_local(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>> {
        self.entries
            .get(key)
            .filter(|stored| stored.held_until > now)
            .map(|stored| Arc::clone(&stored.response))
    }

    fn epoch(&self) -> Epoch {
        Epoch {
            local: self
                .purges
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .seq,
            shared: 0,
        }
    }

    async fn insert(&self, key: CacheKey, entry: CachedResponse, since: Epoch) -> bool {
        let until = entry.usable_until();
        self.hold(key, Arc::new(entry), since, until)
    }

    async fn purge(&self, purge: &Purge) -> Result<Purged, PurgeError> {
        purge.check()?;
        let selector = &purge.selector;
        let candidates = {
            let mut purges = self.purges.write().unwrap_or_else(PoisonError::into_inner);
            purges.record(selector);
            let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            match selector.candidates() {
                Some(index_keys) => index.candidates(&index_keys),
                None => index.all(),
            }
        };
        let mut removed = 0;
        for (key, id) in candidates {
            let matches = self
                .entries
                .get(&key)
                .is_some_and(|stored| stored.id == id && stored.response.meta.matches(selector));
            if matches && self.remove_if_same(&key, id) {
                removed += 1;
            }
        }
        if matches!(selector, Selector::All) {
            // Entries with no index key at all (none are stored today, but nothing may
            // survive "all").
            for (key, _) in self.entries.iter() {
                if self.entries.remove(&*key).is_some() {
                    removed += 1;
                }
            }
        }
        Ok(Purged {
            removed,
            fleet_wide: true,
        })
    }

    fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        CacheStats {
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};
    use serde_json::json;

    use super::*;
    use crate::cache::purge::{EntryMeta, Tag, claim_tag};
    use crate::scope::ClaimPath;

    fn key(n: u64) -> CacheKey {
        CacheKey::for_test(n)
    }

    fn response(body: usize, ttl: Duration) -> CachedResponse {
        let now = Instant::now();
        CachedResponse {
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            etag: HeaderValue::from_static("\"e\""),
            stored_at: now,
            expires_at: now + ttl,
            stale_until: now + ttl,
            error_until: now + ttl,
            meta: EntryMeta::default(),
        }
    }

    fn tagged(tags: &[&str], sub: &str) -> CachedResponse {
        let mut entry = response(10, Duration::from_secs(60));
        entry.meta = EntryMeta::new(
            tags.iter()
                .map(|t| match t.split_once(':') {
                    Some((ty, id)) => Tag::Entity(ty.into(), id.into()),
                    None => Tag::Type((*t).into()),
                })
                .collect(),
            Some("Feed".into()),
            vec![claim_tag(&ClaimPath::parse("sub").unwrap(), &json!(sub))],
            vec!["Query.publicPosts".into()],
        );
        entry
    }

    async fn insert(store: &MemoryStore, n: u64, entry: CachedResponse) -> bool {
        store.insert(key(n), entry, store.epoch()).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_copy_is_reclaimed_when_it_stops_serving() {
        // A response made an hour ago, copied now for five seconds.
        let mut old = response(10, Duration::from_secs(7200));
        old.stored_at = Instant::now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let now = Instant::now();
        let copy = Stored {
            id: 0,
            held_until: now + Duration::from_secs(5),
            response: Arc::new(old),
        };
        assert_eq!(memory_life(&copy, now), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_still_valid_until_a_matching_purge() {
        let store = MemoryStore::new(1 << 20);
        let since = store.epoch();
        let entry = tagged(&["Post:1"], "alice");
        store.purge(&Purge::tags(["Post:2"])).await.unwrap();
        assert!(store.still_valid(&entry, since), "another entity's purge");
        store.purge(&Purge::tags(["Post:1"])).await.unwrap();
        assert!(!store.still_valid(&entry, since));
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_on_tokio_time() {
        let store = MemoryStore::new(1 << 20);
        insert(&store, 1, response(10, Duration::from_secs(5))).await;
        assert!(store.get_local(&key(1), Instant::now()).is_some());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(store.get_local(&key(1), Instant::now()).is_none());
    }

    #[tokio::test]
    async fn debug_never_prints_entries() {
        let store = MemoryStore::new(1 << 20);
        let mut entry = response(0, Duration::from_secs(60));
        entry.body = Bytes::from_static(b"secret-body");
        insert(&store, 1, entry).await;
        assert!(!format!("{store:?}").contains("secret"));
    }

    #[tokio::test]
    async fn memory_is_bounded_by_bytes() {
        let store = MemoryStore::new(64 * 1024);
        for n in 0..200 {
            insert(&store, n, response(1024, Duration::from_secs(60))).await;
        }
        assert!(
            store.weighted_size() <= 64 * 1024,
            "{}",
            store.weighted_size()
        );
    }

    #[tokio::test]
    async fn purges_count_what_they_remove() {
        let store = MemoryStore::new(1 << 20);
        insert(&store, 1, tagged(&["Post", "Post:1"], "alice")).await;
        insert(&store, 2, tagged(&["Post", "Post:2"], "alice")).await;
        insert(&store, 3, tagged(&["User", "User:bob"], "bob")).await;
        assert_eq!(
            store.purge(&Purge::tags(["Post:1"])).await.unwrap().removed,
            1
        );
        assert_eq!(
            store.purge(&Purge::tags(["Post:1"])).await.unwrap().removed,
            0
        );
        assert!(store.get_local(&key(2), Instant::now()).is_some());
        assert_eq!(
            store
                .purge(&Purge::scope([("sub", "bob")]).unwrap())
                .await
                .unwrap()
                .removed,
            1
        );
        assert_eq!(
            store.purge(&Purge::types(["Post"])).await.unwrap().removed,
            1
        );
        insert(&store, 4, tagged(&["Post"], "carol")).await;
        insert(&store, 5, tagged(&["User"], "dan")).await;
        assert_eq!(
            store
                .purge(&Purge::operation("Feed"))
                .await
                .unwrap()
                .removed,
            2
        );
        insert(&store, 6, tagged(&[], "erin")).await;
        assert_eq!(store.purge(&Purge::all()).await.unwrap().removed, 1);
        assert_eq!(store.index_len(), 0);
    }

    #[tokio::test]
    async fn an_execution_that_started_before_a_purge_does_not_store() {
        let store = MemoryStore::new(1 << 20);
        let started = store.epoch();
        store.purge(&Purge::types(["Post"])).await.unwrap();
        // What it read may predate the purge: not stored.
        assert!(
            !store
                .insert(key(1), tagged(&["Post", "Post:1"], "a"), started)
                .await
        );
        // An unrelated purge does not stop it.
        assert!(
            store
                .insert(key(2), tagged(&["User", "User:1"], "a"), started)
                .await
        );
        // Nor does anything stop an execution that started after the purge.
        let later = store.epoch();
        assert!(
            store
                .insert(key(1), tagged(&["Post", "Post:1"], "a"), later)
                .await
        );
        // An execution older than every remembered purge stores nothing.
        for _ in 0..RECENT_PURGES {
            store.purge(&Purge::types(["Nothing"])).await.unwrap();
        }
        assert!(!store.insert(key(3), tagged(&["User"], "a"), started).await);
    }

    #[tokio::test]
    async fn replacing_an_entry_keeps_the_new_ones_index() {
        let store = MemoryStore::new(1 << 20);
        insert(&store, 1, tagged(&["Post:1"], "a")).await;
        insert(&store, 1, tagged(&["Post:1"], "a")).await;
        store.entries.run_pending_tasks();
        assert_eq!(
            store.purge(&Purge::tags(["Post:1"])).await.unwrap().removed,
            1
        );
        assert!(store.get_local(&key(1), Instant::now()).is_none());
    }

    #[test]
    fn concurrent_inserts_under_one_key_keep_the_index_exact() {
        let store = Arc::new(MemoryStore::new(64 * 1024));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    for n in 0..2_000u64 {
                        let entry = tagged(&["Post", &format!("Post:{t}-{n}")], "a");
                        // Few keys, many writers: replacements race with each other.
                        runtime.block_on(store.insert(key(n % 16), entry, store.epoch()));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        store.entries.run_pending_tasks();
        let entries = store.entries.entry_count() as usize;
        // Each live entry has its entity key; shared keys (type, operation, claim, field)
        // are four more. Rows of replaced, rejected or evicted entries are gone.
        assert!(
            store.index_len() <= entries + 4,
            "{} index keys for {entries} entries",
            store.index_len()
        );
        // And every live entry is found by a purge of what it holds.
        let live = entries as u64;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            runtime
                .block_on(store.purge(&Purge::types(["Post"])))
                .unwrap()
                .removed,
            live
        );
    }

    #[tokio::test]
    async fn evicted_entries_leave_the_index() {
        let store = MemoryStore::new(16 * 1024);
        for n in 0..500 {
            insert(&store, n, tagged(&["Post", &format!("Post:{n}")], "a")).await;
        }
        store.entries.run_pending_tasks();
        let entries = store.entries.entry_count() as usize;
        assert!(entries < 500);
        // Each live entry has its entity key; shared keys (type, operation, claim, field)
        // are four more.
        assert!(store.index_len() <= entries + 4, "{}", store.index_len());
    }
}
