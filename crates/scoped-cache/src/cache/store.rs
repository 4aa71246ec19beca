//! The in-process response store: moka, bounded by bytes, with freshness decided by our
//! own clock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use moka::Expiry;
use tokio::time::Instant;

use crate::cache::key::CacheKey;

/// Per-entry memory besides the body and headers, in bytes (measured order of magnitude:
/// moka's entry and deque nodes, the 32-byte key, the `Arc`, an empty `HeaderMap` with
/// room for four headers).
const ENTRY_OVERHEAD: usize = 384;
/// Per stored header besides its name and value (the map's entry and index).
const HEADER_OVERHEAD: usize = 48;

/// One stored response. Only 200 responses are stored, so the status is implied.
#[derive(Debug)]
pub(crate) struct CachedResponse {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) stored_at: Instant,
    pub(crate) expires_at: Instant,
}

impl CachedResponse {
    /// What the entry holds in memory: the body (an exact-size copy), each stored header,
    /// and a fixed overhead for the key, the `Arc`, the `HeaderMap`'s tables and moka's
    /// bookkeeping.
    fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + HEADER_OVERHEAD)
            .sum();
        let total = self.body.len() + headers + ENTRY_OVERHEAD;
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    fn ttl(&self) -> Duration {
        self.expires_at.saturating_duration_since(self.stored_at)
    }
}

/// Responses in memory, at most `max_bytes` of them.
///
/// moka evicts by its own wall clock, which tokio's paused time does not move; every read
/// therefore checks `expires_at` against `tokio::time::Instant`, and moka's expiry only
/// reclaims memory.
#[derive(Clone)]
pub(crate) struct MemoryStore {
    entries: moka::sync::Cache<CacheKey, Arc<CachedResponse>>,
}

/// moka's own `Debug` prints every entry: cached responses are private data, so show sizes only.
impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .field("weighted_size", &self.entries.weighted_size())
            .finish()
    }
}

struct ExpireAtTtl;

impl Expiry<CacheKey, Arc<CachedResponse>> for ExpireAtTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedResponse>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl())
    }
}

impl MemoryStore {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_key, value: &Arc<CachedResponse>| value.weight())
                .expire_after(ExpireAtTtl)
                .build(),
        }
    }

    /// The fresh entry for `key`, if any. A stale entry is left for moka's own expiry to
    /// reclaim: removing it here could race with a fresh entry stored under the same key.
    pub(crate) fn get(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>> {
        self.entries.get(key).filter(|entry| entry.expires_at > now)
    }

    pub(crate) fn insert(&self, key: CacheKey, response: CachedResponse) {
        self.entries.insert(key, Arc::new(response));
    }

    #[cfg(test)]
    fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::RequestDigest;
    use crate::scope::Bucket;

    fn key(n: u64) -> CacheKey {
        let none = serde_json::Value::Null;
        let digest = RequestDigest::new(&n.to_string(), None, &none, &none);
        let (parts, _) = http::Request::get("/graphql")
            .body(())
            .unwrap()
            .into_parts();
        CacheKey::new(
            &crate::cache::key::Target::new(&parts, &[], false),
            &digest,
            &Bucket::derive(&[], None),
        )
    }

    fn response(body: usize, ttl: Duration) -> CachedResponse {
        let now = Instant::now();
        CachedResponse {
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            stored_at: now,
            expires_at: now + ttl,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_on_tokio_time() {
        let store = MemoryStore::new(1 << 20);
        store.insert(key(1), response(10, Duration::from_secs(5)));
        assert!(store.get(&key(1), Instant::now()).is_some());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(store.get(&key(1), Instant::now()).is_none());
    }

    #[test]
    fn debug_never_prints_entries() {
        let store = MemoryStore::new(1 << 20);
        let mut entry = response(0, Duration::from_secs(60));
        entry.body = Bytes::from_static(b"secret-body");
        store.insert(key(1), entry);
        assert!(!format!("{store:?}").contains("secret"));
    }

    #[test]
    fn memory_is_bounded_by_bytes() {
        let store = MemoryStore::new(64 * 1024);
        for n in 0..200 {
            store.insert(key(n), response(1024, Duration::from_secs(60)));
        }
        assert!(
            store.weighted_size() <= 64 * 1024,
            "{}",
            store.weighted_size()
        );
    }
}
