//! A `SecretSource` wrapper that coalesces and caches reads.
//!
//! Concurrent reads of the same request share one in-flight read (every Application of a team
//! refreshing at once costs Vault one GET per path, not one per app). Results are kept for a
//! short TTL so a rotated secret shows up on the next refresh after it; reads pinned to a
//! version never change and stay until evicted. The cache is bounded by entries and by bytes,
//! evicting the least recently used. Failures are not cached by default, so a transient Vault
//! error is retried by the next render.
//!
//! One cache per backend (per Vault identity): tenants with different credentials never share
//! entries.
//!
//! It is also the backend's budget: at most `max_in_flight` reads, metadata reads and
//! capability checks go to the backend at once, the rest wait in line (under their request's
//! deadline). A cold start of many Applications with distinct paths then reaches Vault as a
//! steady stream rather than a burst that trips its rate limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{ReadError, SecretData, SecretRequest, SecretSource};
use crate::metrics;

/// Cache policy. `ttl` zero disables caching (in-flight reads are still shared).
#[derive(Clone, Copy, Debug)]
pub struct CachePolicy {
    pub ttl: Duration,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub cache_errors: bool,
    /// Calls to the backend at once; 0: no limit.
    pub max_in_flight: usize,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            max_entries: 10_000,
            max_bytes: 64 << 20,
            cache_errors: false,
            max_in_flight: 32,
        }
    }
}

type Outcome = Result<SecretData, ReadError>;

struct Slot {
    cell: OnceCell<Outcome>,
    created: Instant,
    bytes: AtomicU64,
    /// Milliseconds since the cache's epoch, for LRU.
    last_used: AtomicU64,
}

pub(crate) struct CachingSource {
    inner: Arc<dyn SecretSource>,
    policy: CachePolicy,
    epoch: Instant,
    slots: Mutex<HashMap<SecretRequest, Arc<Slot>>>,
    bytes: AtomicU64,
    /// `None`: no limit.
    budget: Option<tokio::sync::Semaphore>,
    /// When expired entries were last dropped (ms since `epoch`).
    last_sweep: AtomicU64,
    /// This cache's share of the process-wide entry and byte gauges, as last published.
    shown: (AtomicI64, AtomicI64),
}

impl CachingSource {
    pub(crate) fn new(inner: Arc<dyn SecretSource>, policy: CachePolicy) -> Self {
        Self {
            inner,
            policy,
            epoch: Instant::now(),
            slots: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            budget: (policy.max_in_flight > 0)
                .then(|| tokio::sync::Semaphore::new(policy.max_in_flight)),
            last_sweep: AtomicU64::new(0),
            shown: (AtomicI64::new(0), AtomicI64::new(0)),
        }
    }

    /// Brings the process-wide gauges up to date with this cache (called with the map locked):
    /// there is one cache per Vault identity, and the gauges show them all together.
    fn publish(&self, slots: &HashMap<SecretRequest, Arc<Slot>>) {
        let entries = i64::try_from(slots.len()).unwrap_or(i64::MAX);
        let bytes = i64::try_from(self.bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let was_entries = self.shown.0.swap(entries, Ordering::Relaxed);
        let was_bytes = self.shown.1.swap(bytes, Ordering::Relaxed);
        metrics::SECRET_CACHE_ENTRIES.add([], entries - was_entries);
        metrics::SECRET_CACHE_BYTES.add([], bytes - was_bytes);
    }

    /// A place among the backend calls in flight, waited for (and counted) when all are taken.
    async fn admit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let budget = self.budget.as_ref()?;
        if let Ok(permit) = budget.try_acquire() {
            return Some(permit);
        }
        metrics::SECRET_BACKEND_QUEUED.inc([]);
        let _waiting = metrics::SECRET_BACKEND_WAITING.track([]);
        // The semaphore is never closed.
        budget.acquire().await.ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SecretRequest, Arc<Slot>>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tick(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn fresh(&self, req: &SecretRequest, slot: &Slot, now: Instant) -> bool {
        match slot.cell.get() {
            None => true, // in flight: join it
            Some(Err(_)) => {
                self.policy.cache_errors && now.duration_since(slot.created) < self.policy.ttl
            }
            // A pinned version never changes; everything else lives for the TTL.
            Some(Ok(_)) => {
                req.version.is_some() || now.duration_since(slot.created) < self.policy.ttl
            }
        }
    }

    /// The slot to wait on: an existing fresh one, or a new one this caller will fill.
    fn slot(&self, req: &SecretRequest) -> (Arc<Slot>, bool) {
        let now = Instant::now();
        let mut slots = self.lock();
        self.sweep(&mut slots, now);
        if let Some(slot) = slots.get(req)
            && self.fresh(req, slot, now)
        {
            slot.last_used.store(self.tick(now), Ordering::Relaxed);
            let slot = slot.clone();
            self.publish(&slots);
            return (slot, false);
        }
        let slot = Arc::new(Slot {
            cell: OnceCell::new(),
            created: now,
            bytes: AtomicU64::new(0),
            last_used: AtomicU64::new(self.tick(now)),
        });
        if let Some(old) = slots.insert(req.clone(), slot.clone()) {
            self.bytes
                .fetch_sub(old.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.publish(&slots);
        (slot, true)
    }

    /// Records the size of a completed read and enforces the bounds (LRU by creation/use time).
    fn settle(&self, req: &SecretRequest, slot: &Arc<Slot>, outcome: &Outcome) {
        let mut slots = self.lock();
        let keep =
            self.policy.ttl > Duration::ZERO && (outcome.is_ok() || self.policy.cache_errors);
        let current = slots.get(req).is_some_and(|s| Arc::ptr_eq(s, slot));
        if !current {
            return;
        }
        if !keep {
            slots.remove(req);
            self.publish(&slots);
            return;
        }
        let bytes = match outcome {
            Ok(data) => approx_size(req, data),
            Err(_) => req.path.len(),
        } as u64;
        slot.bytes.store(bytes, Ordering::Relaxed);
        let total = usize::try_from(self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes)
            .unwrap_or(usize::MAX);
        if slots.len() > self.policy.max_entries || total > self.policy.max_bytes {
            self.evict(&mut slots);
        }
        self.publish(&slots);
    }

    /// Drops expired entries (and so wipes their values) at most once per TTL, on a read:
    /// values do not outlive their TTL by more than that while the sidecar is in use.
    fn sweep(&self, slots: &mut HashMap<SecretRequest, Arc<Slot>>, now: Instant) {
        let tick = self.tick(now);
        let ttl = u64::try_from(self.policy.ttl.as_millis()).unwrap_or(u64::MAX);
        if tick.saturating_sub(self.last_sweep.load(Ordering::Relaxed)) < ttl {
            return;
        }
        self.last_sweep.store(tick, Ordering::Relaxed);
        slots.retain(|req, slot| {
            let keep = self.fresh(req, slot, now);
            if !keep {
                self.bytes
                    .fetch_sub(slot.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            keep
        });
    }

    fn evict(&self, slots: &mut HashMap<SecretRequest, Arc<Slot>>) {
        let mut done: Vec<(u64, SecretRequest, usize)> = slots
            .iter()
            .filter(|(_, s)| s.cell.initialized())
            .map(|(k, s)| {
                let bytes = usize::try_from(s.bytes.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
                (s.last_used.load(Ordering::Relaxed), k.clone(), bytes)
            })
            .collect();
        done.sort_by_key(|(t, _, _)| *t);
        let mut total = usize::try_from(self.bytes.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        // Evict down to 90% so a full cache does not rescan on every insert.
        let (max_entries, max_bytes) = (
            self.policy.max_entries * 9 / 10,
            self.policy.max_bytes * 9 / 10,
        );
        for (_, key, bytes) in done {
            if slots.len() <= max_entries && total <= max_bytes {
                break;
            }
            slots.remove(&key);
            total = total.saturating_sub(bytes);
            metrics::SECRET_CACHE_EVICTIONS.inc([]);
        }
        self.bytes.store(total as u64, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drops the latest-version entries of `path` (in flight or done); pinned versions stay,
    /// they cannot change. A read already in flight still answers its waiters, but is not kept.
    pub(crate) fn invalidate_path(&self, path: &str) -> usize {
        let mut slots = self.lock();
        let stale: Vec<SecretRequest> = slots
            .keys()
            .filter(|req| req.path == path && req.version.is_none())
            .cloned()
            .collect();
        for req in &stale {
            if let Some(old) = slots.remove(req) {
                self.bytes
                    .fetch_sub(old.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        self.publish(&slots);
        stale.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for CachingSource {
    /// A backend dropped (a per-project identity no longer used) leaves the gauges.
    fn drop(&mut self) {
        metrics::SECRET_CACHE_ENTRIES.add([], -self.shown.0.load(Ordering::Relaxed));
        metrics::SECRET_CACHE_BYTES.add([], -self.shown.1.load(Ordering::Relaxed));
    }
}

fn approx_size(req: &SecretRequest, data: &SecretData) -> usize {
    let values: usize = data
        .values()
        .iter()
        .map(|(k, v)| k.len() + value_size(v))
        .sum();
    req.path.len() + values + 64
}

/// Roughly the JSON size of `v`, without writing out (and leaving behind a copy of) its text.
fn value_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|i| value_size(i) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + value_size(v))
                .sum::<usize>()
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
    }
}

#[async_trait::async_trait]
impl SecretSource for CachingSource {
    async fn read(&self, req: &SecretRequest) -> Result<SecretData, ReadError> {
        let (slot, owner) = self.slot(req);
        match (owner, slot.cell.initialized()) {
            (true, _) => metrics::SECRET_CACHE_MISSES.inc([]),
            (false, true) => metrics::SECRET_CACHE_HITS.inc([]),
            (false, false) => metrics::SECRET_CACHE_COALESCED.inc([]),
        }
        // Whoever actually reads settles the slot: the slot's creator may have been cancelled
        // (request deadline) before its read finished, leaving the read to a later caller.
        let mut read_here = false;
        let outcome = slot
            .cell
            .get_or_init(|| async {
                read_here = true;
                let _permit = self.admit().await;
                self.inner.read(req).await
            })
            .await
            .clone();
        if read_here {
            self.settle(req, &slot, &outcome);
        }
        outcome
    }

    fn precheck(&self, req: &SecretRequest) -> Result<(), ReadError> {
        self.inner.precheck(req)
    }

    /// Never cached: callers ask because they want Vault's current answer.
    async fn metadata(
        &self,
        req: &SecretRequest,
    ) -> Result<Option<crate::secrets::KvMetadata>, ReadError> {
        let _permit = self.admit().await;
        self.inner.metadata(req).await
    }

    /// Never cached, like metadata.
    async fn capabilities(&self, path: &str) -> Result<Option<Vec<String>>, ReadError> {
        let _permit = self.admit().await;
        self.inner.capabilities(path).await
    }

    fn invalidate(&self, path: &str) {
        self.invalidate_path(path);
        self.inner.invalidate(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::KvVersion;
    use std::sync::atomic::AtomicUsize;

    /// Counts reads; each read takes a little while so concurrent callers overlap.
    struct Counting {
        reads: AtomicUsize,
        fail: bool,
        in_flight: AtomicUsize,
        peak: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl SecretSource for Counting {
        async fn read(&self, req: &SecretRequest) -> Result<SecretData, ReadError> {
            let n = self.reads.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.fail {
                return Err(ReadError::NotFound(req.clone()));
            }
            let mut m = serde_json::Map::new();
            m.insert("n".into(), n.into());
            Ok(SecretData::new(m))
        }
    }

    fn req(path: &str, version: Option<&str>) -> SecretRequest {
        SecretRequest {
            path: path.into(),
            kv_version: KvVersion::V2,
            version: version.map(Into::into),
        }
    }

    fn cache(policy: CachePolicy, fail: bool) -> (Arc<Counting>, Arc<CachingSource>) {
        let inner = Arc::new(Counting {
            reads: AtomicUsize::new(0),
            fail,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        (inner.clone(), Arc::new(CachingSource::new(inner, policy)))
    }

    #[tokio::test]
    async fn concurrent_reads_coalesce() {
        let (inner, c) = cache(CachePolicy::default(), false);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.read(&req("secret/data/a", None)).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.expect("join").is_ok());
        }
        assert_eq!(inner.reads.load(Ordering::SeqCst), 1);
    }

    // Paused clock: the backend's sleep ends only once every read has started, so the
    // unlimited case's peak is exact on a loaded machine too.
    #[tokio::test(start_paused = true)]
    async fn backend_calls_at_once_are_capped() {
        for (limit, want) in [(4, 4), (0, 40)] {
            let policy = CachePolicy {
                max_in_flight: limit,
                ..Default::default()
            };
            let (inner, c) = cache(policy, false);
            let reads = (0..40).map(|i| {
                let c = c.clone();
                async move { c.read(&req(&format!("secret/data/{i}"), None)).await }
            });
            for r in futures::future::join_all(reads).await {
                r.expect("read");
            }
            assert_eq!(inner.reads.load(Ordering::SeqCst), 40);
            assert_eq!(inner.peak.load(Ordering::SeqCst), want, "limit {limit}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expiry_and_pinned_versions() {
        let policy = CachePolicy {
            ttl: Duration::from_secs(30),
            ..Default::default()
        };
        let (inner, c) = cache(policy, false);
        let latest = req("secret/data/a", None);
        let pinned = req("secret/data/a", Some("1"));
        c.read(&latest).await.expect("read");
        c.read(&pinned).await.expect("read");
        c.read(&latest).await.expect("hit");
        assert_eq!(inner.reads.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(31)).await;
        c.read(&latest).await.expect("refetch after ttl");
        c.read(&pinned).await.expect("pinned stays");
        assert_eq!(inner.reads.load(Ordering::SeqCst), 3);
        // Expired entries go at the next read after a TTL, whichever path it reads.
        let other = req("secret/data/b", None);
        c.read(&other).await.expect("read");
        assert_eq!(c.len(), 3);
        tokio::time::advance(Duration::from_secs(31)).await;
        c.read(&pinned).await.expect("pinned stays");
        assert_eq!(c.len(), 1, "only the pinned read is left");
    }

    #[tokio::test]
    async fn errors_not_cached_and_ttl_zero_disables() {
        let (inner, c) = cache(CachePolicy::default(), true);
        assert!(c.read(&req("x/data/y", None)).await.is_err());
        assert!(c.read(&req("x/data/y", None)).await.is_err());
        assert_eq!(inner.reads.load(Ordering::SeqCst), 2);
        assert!(c.is_empty());
        let (inner, c) = cache(
            CachePolicy {
                ttl: Duration::ZERO,
                ..Default::default()
            },
            false,
        );
        c.read(&req("x/data/y", None)).await.expect("ok");
        c.read(&req("x/data/y", None)).await.expect("ok");
        assert_eq!(inner.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn invalidate_drops_latest_reads_of_one_path_only() {
        let policy = CachePolicy {
            ttl: Duration::from_secs(3600),
            ..Default::default()
        };
        let (inner, c) = cache(policy, false);
        let latest = req("secret/data/a", None);
        let pinned = req("secret/data/a", Some("1"));
        let other = req("secret/data/b", None);
        for r in [&latest, &pinned, &other] {
            c.read(r).await.expect("read");
        }
        assert_eq!(inner.reads.load(Ordering::SeqCst), 3);
        c.invalidate("secret/data/a");
        for r in [&latest, &pinned, &other] {
            c.read(r).await.expect("read");
        }
        assert_eq!(
            inner.reads.load(Ordering::SeqCst),
            4,
            "only the latest read of the rotated path goes to the backend again"
        );
    }

    #[tokio::test]
    async fn bounded_by_entries_lru() {
        let policy = CachePolicy {
            max_entries: 10,
            ..Default::default()
        };
        let (_, c) = cache(policy, false);
        for i in 0..25 {
            c.read(&req(&format!("s/data/{i}"), None))
                .await
                .expect("ok");
        }
        assert!(c.len() <= 10, "{}", c.len());
    }
}
