//! The shared dependency cache: chart archives fetched by one render serve every later render
//! on this replica. An entry is keyed by repository, chart name and exact version (as
//! `Chart.lock` pins them), stored with its sha256 and checked against it every time it is
//! copied into a request; bounded in bytes (least recently used out first). Renders that need
//! the same dependencies at once share one download ([`DepCache::flight`]).
//!
//! The archives live in a directory of the server's (`--chart-cache-dir`, default a private
//! temporary directory removed at exit), never inside a request's tree and never visible to a
//! tool: the server copies them into `charts/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

struct Entry {
    sha256: [u8; 32],
    bytes: u64,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: u64,
    clock: u64,
}

pub struct DepCache {
    dir: PathBuf,
    /// Keeps a default (temporary) directory alive; removed with the cache.
    _owned: Option<tempfile::TempDir>,
    max_bytes: u64,
    inner: Mutex<Inner>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for DepCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepCache")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// The cache key of one chart archive.
pub fn key(repository: &str, name: &str, version: &str) -> String {
    let mut h = Sha256::new();
    for part in [repository, name, version] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl DepCache {
    /// A cache in a new private directory under `parent` (the system temp dir by default).
    pub fn new(parent: Option<&Path>, max_bytes: u64) -> std::io::Result<Self> {
        let owned = match parent {
            Some(p) => {
                std::fs::create_dir_all(p)?;
                tempfile::Builder::new()
                    .prefix("avp-sidecar-charts-")
                    .tempdir_in(p)?
            }
            None => tempfile::Builder::new()
                .prefix("avp-sidecar-charts-")
                .tempdir()?,
        };
        Ok(Self {
            dir: owned.path().to_path_buf(),
            _owned: Some(owned),
            max_bytes,
            inner: Mutex::default(),
            flights: Mutex::default(),
        })
    }

    /// The server's own files directory (outside every request), e.g. for a CA bundle.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.tgz"))
    }

    /// Copies the archive of `key` to `dest` when cached and intact; false otherwise (a
    /// damaged entry is dropped).
    pub fn copy_to(&self, key: &str, dest: &Path) -> bool {
        let expected = {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            match inner.entries.get_mut(key) {
                Some(e) => {
                    e.last_used = now;
                    e.sha256
                }
                None => return false,
            }
        };
        let Ok(data) = std::fs::read(self.path(key)) else {
            self.remove(key);
            return false;
        };
        if <[u8; 32]>::from(Sha256::digest(&data)) != expected {
            tracing::warn!(key, "chart cache entry changed on disk; dropped");
            self.remove(key);
            return false;
        }
        std::fs::write(dest, &data).is_ok()
    }

    fn remove(&self, key: &str) {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.remove(key) {
            inner.bytes = inner.bytes.saturating_sub(e.bytes);
        }
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Stores the archive at `src` under `key` (bigger than the whole cache: not stored).
    pub fn put(&self, key: &str, src: &Path) -> std::io::Result<()> {
        let data = std::fs::read(src)?;
        let bytes = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if bytes > self.max_bytes {
            return Ok(());
        }
        let tmp = self.dir.join(format!("{key}.tmp"));
        std::fs::write(&tmp, &data)?;
        std::fs::rename(&tmp, self.path(key))?;
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let old = inner.entries.insert(
            key.to_owned(),
            Entry {
                sha256: Sha256::digest(&data).into(),
                bytes,
                last_used: now,
            },
        );
        inner.bytes = inner.bytes.saturating_sub(old.map_or(0, |e| e.bytes)) + bytes;
        while inner.bytes > self.max_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes = inner.bytes.saturating_sub(e.bytes);
            }
            let _ = std::fs::remove_file(self.path(&oldest));
        }
        Ok(())
    }

    /// Waits until no other render is fetching `key` (a set of dependencies), then holds it:
    /// the first render downloads, the others find the cache filled when they get the guard.
    pub async fn flight(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut flights = self
                .flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Forget finished flights nobody waits for.
            flights.retain(|_, m| Arc::strong_count(m) > 1);
            flights.entry(key.to_owned()).or_default().clone()
        };
        m.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_verified_and_bounded() {
        let src = tempfile::tempdir().expect("tmp");
        let cache = DepCache::new(Some(src.path()), 10).expect("cache");
        let a = src.path().join("a.tgz");
        std::fs::write(&a, b"123456").expect("write");
        let (ka, kb) = (
            key("https://r", "a", "1.0.0"),
            key("https://r", "b", "1.0.0"),
        );
        assert_ne!(ka, key("https://r", "a", "1.0.1"));
        cache.put(&ka, &a).expect("put");
        let out = src.path().join("out.tgz");
        assert!(cache.copy_to(&ka, &out));
        assert_eq!(std::fs::read(&out).expect("read"), b"123456");
        // Tampered on disk: dropped, not served.
        std::fs::write(cache.path(&ka), b"654321").expect("tamper");
        assert!(!cache.copy_to(&ka, &out));
        assert!(!cache.copy_to(&ka, &out));
        // Over the byte bound: the least recently used goes.
        cache.put(&ka, &a).expect("put");
        cache.put(&kb, &a).expect("put");
        assert!(!cache.copy_to(&ka, &out) && cache.copy_to(&kb, &out));
        // Bigger than the whole cache: not stored.
        std::fs::write(&a, [0u8; 11]).expect("write");
        cache.put(&ka, &a).expect("put");
        assert!(!cache.copy_to(&ka, &out));
    }
}
