//! Rendered (pre-substitution) documents, keyed by everything that determines them: the plugin,
//! the sha256 of the repository archive, the app path, the request env and the tools
//! themselves. A hit skips unpacking and the tool run; substitution still runs on every request,
//! so rotated secrets show up on the next refresh. Bounded by entries and bytes (LRU).
//!
//! Only successful renders are stored, and only after the archive's checksum was verified.
//!
//! Entries hold their documents behind `Arc`s, shared with the requests that use them: a hit
//! copies no document. The substitute stage copies a document only when it changes it
//! (`Arc::unwrap_or_clone`/`make_mut`), so nothing a request does reaches the cached entry.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::pipeline::discovery::AppKind;
use crate::yaml::AliasBudget;

pub type Key = [u8; 32];

/// A cached render.
#[derive(Clone, Debug)]
pub struct Cached {
    pub kind: AppKind,
    /// Shared with the entry and every other hit; never changed in place (see the module doc).
    pub documents: Vec<Arc<Value>>,
    /// The render's alias budget as parsing left it; every hit gets its own copy, so one
    /// request's `yamlParse` never spends another's.
    pub alias_budget: AliasBudget,
}

struct Entry {
    value: Cached,
    bytes: usize,
    last_used: u64,
}

pub struct RenderCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

impl RenderCache {
    /// `max_bytes` 0 disables the cache.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            inner: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0 && self.max_entries > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` is cached (without counting as a use).
    pub fn contains(&self, key: &Key) -> bool {
        self.lock().map.contains_key(key)
    }

    pub fn get(&self, key: &Key) -> Option<Cached> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.map.get_mut(key)?;
        entry.last_used = now;
        let mut hit = entry.value.clone();
        hit.alias_budget = hit.alias_budget.fork();
        Some(hit)
    }

    /// Stores a render; `alias_budget` is its budget before substitution (copied). The
    /// documents are shared, not copied: the caller must not change them in place.
    pub fn insert(
        &self,
        key: Key,
        kind: AppKind,
        documents: &[Arc<Value>],
        alias_budget: &AliasBudget,
    ) {
        if !self.enabled() {
            return;
        }
        let bytes = documents_bytes(documents);
        if bytes > self.max_bytes / 4 {
            return; // one huge render must not flush everything else
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let last_used = inner.clock;
        let value = Cached {
            kind,
            documents: documents.to_vec(),
            alias_budget: alias_budget.fork(),
        };
        if let Some(old) = inner.map.insert(
            key,
            Entry {
                value,
                bytes,
                last_used,
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.map.len() > self.max_entries || inner.bytes > self.max_bytes {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
        // One render cache per process (`server::Shared`).
        let entries = i64::try_from(inner.map.len()).unwrap_or(i64::MAX);
        crate::metrics::RENDER_CACHE_ENTRIES.set([], entries);
        let bytes = i64::try_from(inner.bytes).unwrap_or(i64::MAX);
        crate::metrics::RENDER_CACHE_BYTES.set([], bytes);
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What `documents` hold in memory, estimated from their shape without serialising them (the
/// JSON length, used before, was a third to a quarter of the real size, so the cache used
/// 3–4× its `--render-cache-mb`): every `Value` is 32 bytes, each document also the 16 bytes
/// of its `Arc`'s counts; strings and vectors count their capacity; an object entry
/// (`preserve_order`: an `IndexMap`) its key, its slot and ~24 bytes of hash and index.
fn documents_bytes(documents: &[Arc<Value>]) -> usize {
    const VALUE: usize = std::mem::size_of::<Value>();
    const ARC_COUNTS: usize = 2 * std::mem::size_of::<usize>();
    fn heap(v: &Value) -> usize {
        match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
            Value::String(s) => s.capacity(),
            Value::Array(a) => a.capacity() * VALUE + a.iter().map(heap).sum::<usize>(),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| k.capacity() + std::mem::size_of::<String>() + VALUE + 24 + heap(v))
                .sum(),
        }
    }
    std::mem::size_of_val(documents)
        + documents
            .iter()
            .map(|d| ARC_COUNTS + VALUE + heap(d))
            .sum::<usize>()
        + 64
}

/// Identifies the tools: path, size and modification time, so an upgrade invalidates entries.
pub fn tool_fingerprint(paths: &[&Path]) -> String {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok();
            let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{size}:{mtime}", p.display())
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The cache key. Length-prefixed fields, so no two inputs concatenate to the same bytes.
pub fn key(
    plugin: &str,
    checksum: &str,
    app_rel_path: &str,
    env: &[(String, String)],
    tools: &str,
) -> Key {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(plugin.as_bytes());
    field(checksum.trim().to_ascii_lowercase().as_bytes());
    field(app_rel_path.as_bytes());
    field(tools.as_bytes());
    for (k, v) in env {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::context::testing::pairs as env;
    use serde_json::json;

    #[test]
    fn keys_differ_when_any_input_differs() {
        let base = key("avp", "abc", "apps/a", &env(&[("A", "1")]), "t1");
        let variants = [
            key("avp-helm", "abc", "apps/a", &env(&[("A", "1")]), "t1"),
            key("avp", "abd", "apps/a", &env(&[("A", "1")]), "t1"),
            key("avp", "abc", "apps/b", &env(&[("A", "1")]), "t1"),
            key("avp", "abc", "apps/a", &env(&[("A", "2")]), "t1"),
            key("avp", "abc", "apps/a", &env(&[("A", "1"), ("B", "")]), "t1"),
            key("avp", "abc", "apps/a", &env(&[("A1", "")]), "t1"),
            key("avp", "abc", "apps/a", &env(&[("A", "1")]), "t2"),
        ];
        for v in variants {
            assert_ne!(base, v);
        }
        assert_eq!(base, key("avp", "ABC", "apps/a", &env(&[("A", "1")]), "t1"));
    }

    /// The accounted size is what the documents hold, not their JSON length (a third of it for
    /// typical manifests).
    #[test]
    fn accounting_counts_memory_not_json() {
        let doc = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"app": "web", "tier": "x"}},
            "data": {"k1": "v", "k2": "v", "k3": "v"}});
        let json = doc.to_string().len();
        let counted = documents_bytes(&[Arc::new(doc)]);
        assert!(counted > 3 * json, "{counted} vs json {json}");
    }

    #[test]
    fn bounded_lru() {
        let c = RenderCache::new(3, 1 << 20);
        let docs = [Arc::new(json!({"kind": "ConfigMap"}))];
        let budget = AliasBudget::for_output(0);
        for i in 0..3u8 {
            c.insert([i; 32], AppKind::Helm, &docs, &budget);
        }
        assert!(c.get(&[0; 32]).is_some()); // 0 is now the most recently used
        c.insert([9; 32], AppKind::Helm, &docs, &budget);
        assert_eq!(c.len(), 3);
        assert!(c.get(&[1; 32]).is_none(), "least recently used evicted");
        assert!(c.get(&[0; 32]).is_some());
        let off = RenderCache::new(3, 0);
        off.insert([1; 32], AppKind::Helm, &docs, &budget);
        assert!(off.is_empty());
    }

    /// Entry and hits share the documents: a hit copies none.
    #[test]
    fn hits_share_the_documents() {
        let c = RenderCache::new(3, 1 << 20);
        let docs = [Arc::new(json!({"kind": "ConfigMap"}))];
        c.insert([1; 32], AppKind::Helm, &docs, &AliasBudget::for_output(0));
        let hit = c.get(&[1; 32]).expect("hit");
        assert!(Arc::ptr_eq(&hit.documents[0], &docs[0]));
    }

    #[test]
    fn each_hit_resumes_the_render_budget_on_its_own() {
        let c = RenderCache::new(3, 1 << 20);
        let budget = AliasBudget::for_output(0);
        crate::yaml::parse_documents_within("a: &a x\nb: *a\n", &budget).expect("parses");
        let used = budget.used();
        assert!(used > 0);
        c.insert([1; 32], AppKind::Helm, &[Arc::new(json!({}))], &budget);
        let first = c.get(&[1; 32]).expect("hit");
        assert_eq!(first.alias_budget.used(), used);
        crate::yaml::parse_documents_within("a: &a x\nb: *a\n", &first.alias_budget)
            .expect("parses");
        let second = c.get(&[1; 32]).expect("hit");
        assert_eq!(
            (first.alias_budget.used(), second.alias_budget.used()),
            (2 * used, used)
        );
        assert_eq!(second.alias_budget.limit(), budget.limit());
    }
}
