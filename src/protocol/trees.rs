//! Extracted repositories, shared by every request for the same archive.
//!
//! The repo-server sends the same archive for MatchRepository, GetParametersAnnouncement and
//! GenerateManifest, and for every app of a monorepo at one commit; extracting (and deleting)
//! thousands of files per request cost 10–200× the renders themselves. So an archive is
//! extracted once into a [`Tree`] keyed by its sha256 *after the request's stream has been
//! verified against it* (nothing unverified is ever extracted or shared), and kept in a
//! [`TreeCache`] bounded by entries and bytes (LRU). Concurrent first requests for one archive
//! extract it once (the others wait on the same cell). An evicted tree stays on disk while a
//! request still holds it (`Arc`) and is removed by the janitor when the last one lets go.
//!
//! A shared tree is read-only to everyone: tools get a Landlock read-only rule for it (see
//! `sandbox`), and in-process writes go through [`RepoTree::writable`], which gives the request
//! a private copy in its own work dir. A request can therefore never change what another sees.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::janitor;
use super::spool::{Progress, SpoolReader};
use super::unpack::{self, UnpackError, UnpackOptions, UnpackStats};

static TREE_IDS: AtomicU64 = AtomicU64::new(0);

/// What identifies an extracted tree: the archive's verified sha256 and the extraction rule
/// that changes the result (`preserveFileMode`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TreeKey {
    checksum: String,
    preserve_file_mode: bool,
}

impl TreeKey {
    /// `checksum` must be the one the request's stream was (or will be, before the tree is
    /// used) verified against.
    pub fn new(checksum: &str, preserve_file_mode: bool) -> Self {
        Self {
            checksum: checksum.trim().to_ascii_lowercase(),
            preserve_file_mode,
        }
    }
}

/// Why a tree could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The blocking extraction task panicked or was cancelled.
    #[error("internal error: extraction task: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// The tree's directory could not be created or copied (a full disk, permissions).
    #[error("repository tree {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The request ended before its stream had verified (a step waiting for it stops; the
    /// request answers with the stream's own error).
    #[error("the request's archive did not verify")]
    Unverified,
}

/// One extracted archive on disk; removed (in the background) when the last holder drops it.
#[derive(Debug)]
pub struct Tree {
    dir: PathBuf,
    stats: UnpackStats,
    /// Some kustomization in the tree has `helmCharts`: kustomize may pull a chart into the
    /// app's chart home, so kustomize renders of this tree get a private copy.
    helm_charts: bool,
}

impl Tree {
    /// Extracts `archive` into a fresh directory below `parent`. Blocking. On failure the
    /// partial directory is removed (the guard is dropped).
    fn extract(parent: &Path, archive: &Path, opts: &UnpackOptions) -> Result<Self, TreeError> {
        let file = std::fs::File::open(archive).map_err(|source| TreeError::Io {
            path: archive.display().to_string(),
            source,
        })?;
        Self::extract_from(parent, file, archive, opts)
    }

    /// [`Tree::extract`] from a reader (`shown` names it in errors).
    fn extract_from(
        parent: &Path,
        source: impl io::Read + Send + 'static,
        shown: &Path,
        opts: &UnpackOptions,
    ) -> Result<Self, TreeError> {
        let n = TREE_IDS.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("t{n}"));
        std::fs::create_dir(&dir).map_err(|source| TreeError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut tree = Self {
            dir,
            stats: UnpackStats::default(),
            helm_charts: false,
        };
        tree.stats = unpack::unpack_from(source, shown, &tree.dir, opts)?;
        tree.helm_charts = has_helm_charts(&tree.dir);
        Ok(tree)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> UnpackStats {
        self.stats
    }

    /// What it costs on disk, roughly: its bytes plus a block per entry.
    fn cost(&self) -> u64 {
        self.stats
            .bytes
            .saturating_add(self.stats.entries.saturating_mul(512))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        janitor::remove(&self.dir);
    }
}

/// True when a kustomization file below `dir` mentions `helmCharts`.
fn has_helm_charts(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name();
        if kind.is_dir() {
            if has_helm_charts(&entry.path()) {
                return true;
            }
        } else if kind.is_file()
            && matches!(
                name.to_str(),
                Some("kustomization.yaml" | "kustomization.yml" | "Kustomization")
            )
            && std::fs::read(entry.path())
                .is_ok_and(|b| b.windows(b"helmCharts".len()).any(|w| w == b"helmCharts"))
        {
            return true;
        }
    }
    false
}

struct Slot {
    cell: Arc<OnceCell<Arc<Tree>>>,
    last_used: u64,
    /// Counted in `Inner::bytes` once extracted.
    cost: Option<u64>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<TreeKey, Slot>,
    bytes: u64,
    clock: u64,
}

/// Extracted trees by archive checksum, LRU by entries and bytes (`--tree-cache-mb`,
/// `--tree-cache-entries`; 0 MB keeps none: each request then extracts its own, still once
/// for requests that arrive together).
pub struct TreeCache {
    root: PathBuf,
    max_entries: usize,
    max_bytes: u64,
    inner: Mutex<Inner>,
    /// Extractions started ahead of need ([`TreeCache::prefetch_slot`]).
    prefetch: Arc<tokio::sync::Semaphore>,
    /// Keys whose tree a request is extracting from a stream still arriving ([`Staged`]).
    staging: Arc<Mutex<HashSet<TreeKey>>>,
}

/// The cache's slot for a key, made ahead of its extraction ([`TreeCache::reserve`]).
pub struct Reserved {
    key: TreeKey,
    cell: Arc<OnceCell<Arc<Tree>>>,
}

/// An extraction begun while its request's stream is still arriving (it reads the growing
/// spool, see `spool`), into a directory no other request knows of. It becomes its key's tree
/// only through [`TreeCache::get_or_adopt`] or [`TreeCache::complete`], which the request calls
/// once its stream has verified against the key's checksum. Dropped before it has ended, it is
/// cancelled; its directory is removed either way unless adopted.
pub struct Staged {
    task: tokio::task::JoinHandle<Result<Tree, TreeError>>,
    progress: Arc<Progress>,
    ended: bool,
    _staging: StagingMark,
}

impl Staged {
    async fn wait(mut self) -> Result<Tree, TreeError> {
        let result = (&mut self.task).await;
        self.ended = true;
        result.map_err(TreeError::Task)?
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.ended {
            self.progress.cancel();
        }
    }
}

/// A key in [`TreeCache::staging`], removed again on drop.
struct StagingMark {
    set: Arc<Mutex<HashSet<TreeKey>>>,
    key: TreeKey,
}

impl Drop for StagingMark {
    fn drop(&mut self) {
        lock_set(&self.set).remove(&self.key);
    }
}

fn lock_set(set: &Mutex<HashSet<TreeKey>>) -> std::sync::MutexGuard<'_, HashSet<TreeKey>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// Extractions started ahead of a GenerateManifest at once; more are not started (the
/// GenerateManifest then extracts, as without prefetching).
const PREFETCH_SLOTS: usize = 2;

impl TreeCache {
    /// `root` is created empty (anything left there by a crashed process is removed).
    pub fn new(root: &Path, max_entries: usize, max_bytes: u64) -> io::Result<Self> {
        janitor::reset_dir(root)?;
        Ok(Self {
            root: std::fs::canonicalize(root)?,
            max_entries,
            max_bytes,
            inner: Mutex::default(),
            prefetch: Arc::new(tokio::sync::Semaphore::new(PREFETCH_SLOTS)),
            staging: Arc::default(),
        })
    }

    /// A place for one extraction ahead of need, when `key` is neither extracted, nor being
    /// extracted or staged, and fewer than [`PREFETCH_SLOTS`] run; held until that extraction
    /// ends.
    pub fn prefetch_slot(&self, key: &TreeKey) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.max_bytes == 0 || self.lock().map.contains_key(key) {
            return None;
        }
        if lock_set(&self.staging).contains(key) {
            return None;
        }
        self.prefetch.clone().try_acquire_owned().ok()
    }

    /// Starts extracting `key`'s tree from `source`, the spool of a stream still arriving,
    /// unless the tree is kept, being extracted or staged by another request already (`None`:
    /// the caller then receives as before and gets the tree after its stream has verified).
    /// `slot` (a prefetch slot) is held until the extraction ends.
    pub(crate) fn stage(
        &self,
        key: &TreeKey,
        source: SpoolReader,
        opts: UnpackOptions,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Option<Staged> {
        {
            let mut staging = lock_set(&self.staging);
            if self.lock().map.contains_key(key) || !staging.insert(key.clone()) {
                return None;
            }
        }
        let mark = StagingMark {
            set: self.staging.clone(),
            key: key.clone(),
        };
        let progress = source.progress();
        let parent = self.root.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            Tree::extract_from(&parent, source, Path::new("received archive"), &opts)
        });
        Some(Staged {
            task,
            progress,
            ended: false,
            _staging: mark,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tree for `key` if it is already extracted. The caller must still verify its own
    /// stream against the key's checksum before using it.
    pub fn ready(&self, key: &TreeKey) -> Option<Arc<Tree>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let slot = inner.map.get_mut(key)?;
        let tree = slot.cell.get()?.clone();
        slot.last_used = now;
        Some(tree)
    }

    /// The tree for `key`, extracting `archive` (verified against the key's checksum) unless
    /// it is there or being extracted by another request, which is then waited for. Returns
    /// whether this call extracted it.
    pub async fn get_or_extract(
        &self,
        key: &TreeKey,
        archive: &Path,
        opts: UnpackOptions,
    ) -> Result<(Arc<Tree>, bool), TreeError> {
        let parent = self.root.clone();
        let archive = archive.to_path_buf();
        let extract = async move {
            tokio::task::spawn_blocking(move || Tree::extract(&parent, &archive, &opts))
                .await
                .map_err(TreeError::Task)?
        };
        self.init(key, &self.cell(key), extract).await
    }

    /// As [`TreeCache::get_or_extract`], with `staged` (begun from this request's stream,
    /// which has now verified against `key`'s checksum) as the extraction. When the tree is
    /// there already, `staged` is cancelled and removed.
    pub async fn get_or_adopt(
        &self,
        key: &TreeKey,
        staged: Staged,
    ) -> Result<(Arc<Tree>, bool), TreeError> {
        self.init(key, &self.cell(key), staged.wait()).await
    }

    /// Makes `key`'s slot now, so that a request arriving before [`TreeCache::complete`]
    /// has run waits for that extraction instead of starting its own.
    pub fn reserve(&self, key: &TreeKey) -> Reserved {
        Reserved {
            key: key.clone(),
            cell: self.cell(key),
        }
    }

    /// [`TreeCache::get_or_adopt`] into a slot made earlier.
    pub async fn complete(
        &self,
        reserved: Reserved,
        staged: Staged,
    ) -> Result<(Arc<Tree>, bool), TreeError> {
        self.init(&reserved.key, &reserved.cell, staged.wait())
            .await
    }

    /// `key`'s slot (made if missing), marked as just used.
    fn cell(&self, key: &TreeKey) -> Arc<OnceCell<Arc<Tree>>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let slot = inner.map.entry(key.clone()).or_insert_with(|| Slot {
            cell: Arc::new(OnceCell::new()),
            last_used: now,
            cost: None,
        });
        slot.last_used = now;
        slot.cell.clone()
    }

    /// The tree in `cell`, made by `make` unless it is there or another request is making it
    /// (then waited for; if that one fails, `make` runs). Returns whether `make` made it.
    async fn init(
        &self,
        key: &TreeKey,
        cell: &Arc<OnceCell<Arc<Tree>>>,
        make: impl std::future::Future<Output = Result<Tree, TreeError>>,
    ) -> Result<(Arc<Tree>, bool), TreeError> {
        let mut made = false;
        let result = cell
            .get_or_try_init(|| async {
                made = true;
                Ok::<_, TreeError>(Arc::new(make.await?))
            })
            .await;
        match result {
            Ok(tree) => {
                let tree = tree.clone();
                self.admit(key, cell, &tree);
                Ok((tree, made))
            }
            Err(err) => {
                let mut inner = self.lock();
                if inner
                    .map
                    .get(key)
                    .is_some_and(|s| Arc::ptr_eq(&s.cell, cell) && s.cell.get().is_none())
                {
                    inner.map.remove(key);
                }
                Err(err)
            }
        }
    }

    /// Counts a freshly extracted tree and evicts the least recently used others beyond the
    /// bounds. A tree larger than the whole budget serves its requests and is not kept.
    fn admit(&self, key: &TreeKey, cell: &Arc<OnceCell<Arc<Tree>>>, tree: &Tree) {
        let mut inner = self.lock();
        let cost = tree.cost();
        match inner.map.get_mut(key) {
            Some(slot) if Arc::ptr_eq(&slot.cell, cell) => {
                if slot.cost.is_some() {
                    return;
                }
                slot.cost = Some(cost);
            }
            _ => return,
        }
        inner.bytes = inner.bytes.saturating_add(cost);
        if cost > self.max_bytes || self.max_entries == 0 {
            inner.map.remove(key);
            inner.bytes = inner.bytes.saturating_sub(cost);
            return;
        }
        while inner.map.len() > self.max_entries || inner.bytes > self.max_bytes {
            let oldest = inner
                .map
                .iter()
                .filter(|(k, s)| s.cost.is_some() && *k != key)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(slot) = inner.map.remove(&oldest) {
                inner.bytes = inner.bytes.saturating_sub(slot.cost.unwrap_or(0));
            }
        }
        Self::publish(&inner);
    }

    /// Sets the tree-cache gauges from `inner`.
    fn publish(inner: &Inner) {
        let kept = inner.map.values().filter(|s| s.cost.is_some()).count();
        crate::metrics::TREE_CACHE_ENTRIES.set([], i64::try_from(kept).unwrap_or(i64::MAX));
        crate::metrics::TREE_CACHE_BYTES.set([], i64::try_from(inner.bytes).unwrap_or(i64::MAX));
    }

    /// Trees kept (extracted, not evicted).
    pub fn len(&self) -> usize {
        self.lock()
            .map
            .values()
            .filter(|s| s.cost.is_some())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes counted for the trees kept.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Forgets every tree (shutdown); each is removed once no request holds it.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.bytes = 0;
        Self::publish(&inner);
    }
}

/// A request's view of its repository: the shared read-only tree, until the request asks for
/// a writable one ([`RepoTree::writable`]), from then on its private copy. Every path the
/// pipeline uses comes from here, so a step that writes cannot forget to ask.
#[derive(Debug)]
pub struct RepoTree {
    /// Held so the shared tree outlives the request even if evicted meanwhile.
    shared: Option<Arc<Tree>>,
    read_root: PathBuf,
    app_rel: PathBuf,
    scratch: PathBuf,
    private_root: PathBuf,
    private: OnceCell<()>,
    /// `Some` while the request's own stream is still arriving ([`RepoTree::verified`]).
    verified: Option<tokio::sync::watch::Receiver<bool>>,
}

impl RepoTree {
    /// `tree` read in place; a private copy, if asked for, goes to `private_root` (an empty
    /// directory of the request's own). `app_rel` is the app dir relative to the tree root,
    /// already proven to stay inside it.
    pub fn shared(
        tree: Arc<Tree>,
        app_rel: PathBuf,
        private_root: &Path,
        scratch: &Path,
    ) -> io::Result<Self> {
        Ok(Self {
            read_root: tree.path().to_path_buf(),
            shared: Some(tree),
            app_rel,
            scratch: std::fs::canonicalize(scratch)?,
            private_root: std::fs::canonicalize(private_root)?,
            private: OnceCell::new(),
            verified: None,
        })
    }

    /// The same tree, read before the request's own stream has verified against the
    /// checksum that keys it: `verified` turns true once it has. Until then only reads may
    /// happen; every step with an effect beyond the request waits in
    /// [`RepoTree::verified`] (the private copy, network through the fetch proxy, secrets,
    /// the render cache). The request's answer itself waits for the stream in any case.
    #[must_use]
    pub fn unverified(self, verified: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            verified: Some(verified),
            ..self
        }
    }

    /// A checkout that is the request's own already (the CLI extracts privately).
    pub fn private(root: &Path, app_rel: PathBuf, scratch: &Path) -> io::Result<Self> {
        let root = std::fs::canonicalize(root)?;
        Ok(Self {
            read_root: root.clone(),
            shared: None,
            app_rel,
            scratch: std::fs::canonicalize(scratch)?,
            private_root: root,
            private: OnceCell::new_with(Some(())),
            verified: None,
        })
    }

    /// Waits until the request's stream has verified (at once for a tree received in full);
    /// [`TreeError::Unverified`] when it will not.
    pub async fn verified(&self) -> Result<(), TreeError> {
        match &self.verified {
            None => Ok(()),
            Some(rx) => {
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    tracing::debug!("rendered; waiting for the request's stream to verify");
                }
                rx.wait_for(|v| *v)
                    .await
                    .map(|_| ())
                    .map_err(|_| TreeError::Unverified)
            }
        }
    }

    /// What a tool run's fetch-proxy session waits on before it connects anywhere: `None`
    /// once the stream has verified (or for a tree received in full).
    pub fn verification(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.verified.as_ref().filter(|rx| !*rx.borrow()).cloned()
    }

    /// The repository root as of now: the shared tree, or the private copy once there is one.
    pub fn root(&self) -> &Path {
        if self.private.initialized() {
            &self.private_root
        } else {
            &self.read_root
        }
    }

    /// The app dir inside [`RepoTree::root`].
    pub fn app_dir(&self) -> PathBuf {
        self.root().join(&self.app_rel)
    }

    /// The request's private scratch space outside the tree (helm homes, values files).
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// True when the tree is the request's own (written to, or private from the start).
    pub fn is_private(&self) -> bool {
        self.private.initialized()
    }

    /// Whether kustomize may write into this tree (a `helmCharts` chart pull).
    pub fn kustomize_may_write(&self) -> bool {
        self.shared.as_ref().is_some_and(|t| t.helm_charts)
    }

    /// The root of a tree this request may write: on first call (once the request's stream
    /// has verified), a private copy of the shared tree (files, directories and links as
    /// extracted) in the request's work dir.
    /// Every path asked for afterwards ([`RepoTree::root`], [`RepoTree::app_dir`]) is in it.
    pub async fn writable(&self) -> Result<&Path, TreeError> {
        // Writes and the fetches that follow them happen only for a verified request.
        self.verified().await?;
        self.private
            .get_or_try_init(|| async {
                let from = self.read_root.clone();
                let to = self.private_root.clone();
                tokio::task::spawn_blocking(move || copy_tree(&from, &to))
                    .await
                    .map_err(TreeError::Task)?
                    .map_err(|source| TreeError::Io {
                        path: self.private_root.display().to_string(),
                        source,
                    })
            })
            .await?;
        Ok(&self.private_root)
    }

    /// Directories a confined tool may write: scratch, and the private copy if there is one.
    pub fn read_write(&self) -> Vec<PathBuf> {
        let mut out = vec![self.scratch.clone()];
        if self.is_private() {
            out.push(self.private_root.clone());
        }
        out
    }

    /// Directories a confined tool may only read: the shared tree while it is in use.
    pub fn read_only(&self) -> Vec<PathBuf> {
        if self.is_private() {
            Vec::new()
        } else {
            vec![self.read_root.clone()]
        }
    }
}

/// Copies the tree `from` into the existing empty directory `to`: directories (mode kept,
/// owner-writable), regular files (`fs::copy`, mode kept) and symlinks (as they are:
/// extraction made every target relative and inside the tree). Never follows a link.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
            let mode = entry.metadata()?.permissions().mode() | 0o700;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
        let src = dir.join("src");
        for (name, body) in files {
            let p = src.join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, body).expect("write");
        }
        let bytes = crate::protocol::client::tgz_dir(&src).expect("tgz");
        let path = dir.join("a.tgz");
        std::fs::write(&path, bytes).expect("write");
        path
    }

    fn key(n: u8) -> TreeKey {
        TreeKey::new(&format!("{n:064x}"), false)
    }

    #[tokio::test]
    async fn concurrent_first_requests_extract_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tgz = archive(dir.path(), &[("app/kustomization.yaml", "resources: []\n")]);
        let cache = Arc::new(TreeCache::new(&dir.path().join("trees"), 8, 1 << 30).expect("new"));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                let tgz = tgz.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_extract(&key(1), &tgz, UnpackOptions::default())
                        .await
                        .expect("extract")
                })
            })
            .collect();
        let mut extracted = 0;
        let mut paths = Vec::new();
        for t in tasks {
            let (tree, did) = t.await.expect("join");
            extracted += usize::from(did);
            paths.push(tree.path().to_path_buf());
        }
        assert_eq!(extracted, 1);
        assert!(paths.windows(2).all(|w| w[0] == w[1]));
        assert!(cache.ready(&key(1)).is_some());
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn eviction_keeps_trees_in_use_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tgz = archive(dir.path(), &[("a/f", "x")]);
        let cache = TreeCache::new(&dir.path().join("trees"), 2, 1 << 30).expect("new");
        let (held, _) = cache
            .get_or_extract(&key(1), &tgz, UnpackOptions::default())
            .await
            .expect("1");
        for n in 2..=4 {
            cache
                .get_or_extract(&key(n), &tgz, UnpackOptions::default())
                .await
                .expect("n");
        }
        assert_eq!(cache.len(), 2);
        assert!(
            cache.ready(&key(1)).is_none(),
            "least recently used evicted"
        );
        assert!(held.path().join("a/f").is_file(), "still there while held");
        let path = held.path().to_path_buf();
        drop(held);
        assert!(!path.exists(), "removed once released");
        cache.clear();
        let left: Vec<_> = std::fs::read_dir(dir.path().join("trees"))
            .expect("read")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Writes `tgz` through a spool in chunks (slowly enough for the reader to wait), then
    /// finishes or, with `abandon`, stops halfway.
    async fn feed(tgz: &Path, spool: crate::protocol::spool::SpoolWriter, abandon: bool) {
        let bytes = std::fs::read(tgz).expect("read");
        let mut spool = spool;
        let end = if abandon {
            bytes.len() / 2
        } else {
            bytes.len()
        };
        for chunk in bytes[..end].chunks(700) {
            spool.write(chunk).await.expect("write");
            tokio::task::yield_now().await;
        }
        if !abandon {
            spool.finish().await.expect("finish");
        }
    }

    async fn staged(
        cache: &TreeCache,
        dir: &Path,
        n: u8,
    ) -> Option<(Staged, crate::protocol::spool::SpoolWriter)> {
        let path = dir.join(format!("spool-{n}"));
        let spool = crate::protocol::spool::SpoolWriter::create(&path)
            .await
            .expect("spool");
        let reader = spool.reader(&path).expect("reader");
        let staged = cache.stage(&key(n), reader, UnpackOptions::default(), None)?;
        Some((staged, spool))
    }

    /// Waits (up to 10 s) until `n` trees are left on disk: a cancelled extraction removes
    /// its directory when its thread notices.
    async fn wait_trees(dir: &Path, n: usize) {
        let count = || std::fs::read_dir(dir.join("trees")).expect("read").count();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while count() != n && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(count(), n, "trees left on disk");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_staged_tree_is_used_only_once_adopted_and_removed_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<(String, String)> = (0..300)
            .map(|i| (format!("d{}/f{i}", i % 17), format!("{i}\n").repeat(50)))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let tgz = archive(dir.path(), &refs);
        let cache = TreeCache::new(&dir.path().join("trees"), 8, 1 << 30).expect("new");

        // Extracted while it arrives; nobody sees it before it is adopted.
        let (staged1, spool) = staged(&cache, dir.path(), 1).await.expect("staged");
        assert!(
            staged(&cache, dir.path(), 1).await.is_none(),
            "one staging per key"
        );
        assert!(
            cache.prefetch_slot(&key(1)).is_none(),
            "no prefetch while staged"
        );
        feed(&tgz, spool, false).await;
        assert!(cache.ready(&key(1)).is_none(), "not before adoption");
        let (tree, made) = cache.get_or_adopt(&key(1), staged1).await.expect("adopt");
        assert!(made);
        assert_eq!(tree.stats().files, 300);
        assert_eq!(
            std::fs::read_to_string(tree.path().join("d10/f299")).expect("file"),
            "299\n".repeat(50)
        );
        assert!(cache.ready(&key(1)).is_some());
        assert!(
            staged(&cache, dir.path(), 1).await.is_none(),
            "kept: nothing to stage"
        );

        // Dropped before adoption (a failed checksum, an app not rendered here): cancelled
        // mid-stream and removed, and the key may be staged again.
        let (staged2, mut spool) = staged(&cache, dir.path(), 2).await.expect("staged");
        let bytes = std::fs::read(&tgz).expect("read");
        spool.write(&bytes[..bytes.len() / 3]).await.expect("write");
        drop(staged2);
        feed(&tgz, spool, false).await;
        wait_trees(dir.path(), 1).await;
        let (staged2, spool) = staged(&cache, dir.path(), 2).await.expect("again");

        // A stream that stops early is an error, never a shorter tree.
        feed(&tgz, spool, true).await;
        let err = cache.get_or_adopt(&key(2), staged2).await.expect_err("cut");
        assert!(matches!(err, TreeError::Unpack(_)), "{err:?}");
        assert!(cache.ready(&key(2)).is_none());
        wait_trees(dir.path(), 1).await;

        // Adopting where the tree is already there cancels and removes the staged one.
        let (staged3, spool) = staged(&cache, dir.path(), 3).await.expect("staged");
        let (held, _) = cache
            .get_or_extract(&key(3), &tgz, UnpackOptions::default())
            .await
            .expect("3");
        let (tree, made) = cache.get_or_adopt(&key(3), staged3).await.expect("adopt");
        assert!(!made && Arc::ptr_eq(&tree, &held));
        feed(&tgz, spool, false).await;
        wait_trees(dir.path(), 2).await;
        let slots: Vec<_> = (4..=6)
            .filter_map(|n| cache.prefetch_slot(&key(n)))
            .collect();
        assert_eq!(
            slots.len(),
            PREFETCH_SLOTS,
            "prefetches at once are bounded"
        );
    }

    #[tokio::test]
    async fn writes_go_to_a_private_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tgz = archive(
            dir.path(),
            &[("app/kustomization.yaml", "a\n"), ("base/x", "b")],
        );
        let cache = TreeCache::new(&dir.path().join("trees"), 8, 1 << 30).expect("new");
        let (tree, _) = cache
            .get_or_extract(&key(1), &tgz, UnpackOptions::default())
            .await
            .expect("tree");
        std::os::unix::fs::symlink("../base", tree.path().join("app/link")).expect("link");
        let private = dir.path().join("req/repo");
        let scratch = dir.path().join("req/tmp");
        std::fs::create_dir_all(&private).expect("mkdir");
        std::fs::create_dir_all(&scratch).expect("mkdir");
        let repo = RepoTree::shared(tree.clone(), "app".into(), &private, &scratch).expect("repo");
        assert_eq!(repo.read_only(), vec![tree.path().to_path_buf()]);
        assert!(!repo.is_private());
        let root = repo.writable().await.expect("writable").to_path_buf();
        assert_eq!(repo.app_dir(), root.join("app"));
        assert!(repo.read_only().is_empty());
        std::fs::write(repo.app_dir().join("kustomization.yaml"), "edited\n").expect("write");
        assert_eq!(
            std::fs::read_to_string(tree.path().join("app/kustomization.yaml")).expect("read"),
            "a\n"
        );
        assert_eq!(
            std::fs::read_to_string(repo.app_dir().join("link/x")).expect("via link"),
            "b"
        );
    }

    #[test]
    fn finds_helm_charts_in_kustomizations() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/kustomization.yaml"), "resources: []\n")
            .expect("write");
        std::fs::write(dir.path().join("a/notes.txt"), "helmCharts").expect("write");
        assert!(!has_helm_charts(dir.path()));
        std::fs::write(
            dir.path().join("a/Kustomization"),
            "helmCharts:\n- name: x\n",
        )
        .expect("write");
        assert!(has_helm_charts(dir.path()));
    }
}
