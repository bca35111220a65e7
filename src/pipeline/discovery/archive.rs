//! `MatchRepository` for the built-in plugins, decided from the repository archive as it streams
//! in: nothing is extracted or written to disk.
//!
//! One pass over the gzip'd tar (entries arrive in the repo-server's order, so a `../base` may
//! come before the overlay that names it) builds an [`Index`] of the whole repository: which
//! directories hold a kustomization, a `Chart.yaml` or manifest files, which regular text files
//! hold a marker ([`MARKERS`]), the paths kustomization files name outside their own directory,
//! and symlink targets. An app's scope is then its dir plus everything reachable from it through
//! those references (kustomizations inside the scope, then the ones they reach, ...), plus the
//! helm value files the request names; the app is claimed when a marker file lies inside that
//! scope. The index does not depend on the app asked about, so once its stream has verified it
//! is kept by checksum ([`IndexCache`]): the other apps of a monorepo commit are answered from
//! it, with their streams only hashed.
//!
//! Caps ([`ScanLimits`]) keep memory and time bounded; when one is hit before a marker was seen in
//! scope, the outcome is [`Outcome::Unknown`] (the caller answers "not supported, discovery
//! disabled", so the app is still usable by name and nothing errors).
//!
//! Not looked into: packaged subcharts (`charts/*.tgz`), remote kustomize bases, and charts
//! pulled by kustomize `helmCharts` (their values files are, when named with a `..` path).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use flate2::read::GzDecoder;

use super::{Accept, CHART_FILE, KUSTOMIZATION_FILES};
use crate::protocol::unpack::clean_relative;

/// Text whose presence in a file marks it as holding AVP placeholders: the inline `<path:...>`
/// form, and the `avp.kubernetes.io/` annotations that turn `<key>` into placeholders.
pub(crate) const MARKERS: [&[u8]; 2] = [b"<path:", b"avp.kubernetes.io/"];

/// Bytes kept from the end of one read to find a marker split across two reads.
const CARRY: usize = 17; // longest marker - 1
/// Size of one read from an archive entry.
const READ_CHUNK: usize = 64 * 1024;

/// Caps on one scan.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanLimits {
    /// Archive entries (the same cap as extraction).
    pub max_entries: u64,
    /// Uncompressed bytes of all entries (the same cap as extraction).
    pub max_bytes: u64,
    /// Bytes searched in one file; a longer file in the app's scope makes the outcome unknown.
    pub max_file_bytes: u64,
    /// Bytes of a kustomization file read for its references.
    pub max_kustomization_bytes: usize,
    /// Paths remembered for the end of the pass (marker files outside the app dir, kustomization
    /// references, symlinks, files too long to search); past it the outcome is unknown unless a
    /// marker was already found in scope.
    pub max_recorded: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_entries: 200_000,
            max_bytes: 2 << 30,
            max_file_bytes: 8 << 20,
            max_kustomization_bytes: 256 << 10,
            max_recorded: 50_000,
        }
    }
}

/// What the scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No kustomization / Chart.yaml (of the kinds the plugin accepts) in the app dir.
    NoApp,
    /// Renderable; no marker in its scope (or markers were not looked for).
    Plain,
    /// Renderable, and a marker lies in its scope.
    Placeholders,
    /// A cap was hit, or the archive could not be read, before a marker was seen: why.
    Unknown(String),
}

/// What to look for.
#[derive(Clone, Debug)]
pub(crate) struct ScanRequest {
    /// `appRelPath` as sent.
    pub app_rel_path: String,
    pub accept: Accept,
    /// Search file contents for markers (`false`: only the app file decides).
    pub markers: bool,
    /// Further paths in scope, relative to the app dir (helm value files named by the request).
    pub extra: Vec<String>,
}

/// What one pass over an archive learned, whatever app is asked about: built once per verified
/// archive and kept by checksum ([`IndexCache`]), so the MatchRepository of every other app of
/// the same commit only hashes its stream and asks the index.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Whether file contents were searched for markers (`ScanRequest::markers`).
    markers: bool,
    /// Directories holding a kustomization file (or a link by that name).
    kustomize_dirs: HashSet<PathBuf>,
    /// Directories holding a `Chart.yaml` (or a link by that name).
    chart_dirs: HashSet<PathBuf>,
    /// Directories holding a manifest file (`.yaml`, `.yml`, `.json`), for plain-directory apps.
    manifest_dirs: HashSet<PathBuf>,
    /// Files holding a marker.
    marker_files: Vec<PathBuf>,
    /// Kustomization dir → a path it names outside itself.
    refs: Vec<(PathBuf, PathBuf)>,
    /// Symlink → its target (repository-relative).
    links: Vec<(PathBuf, PathBuf)>,
    /// Files not searched to their end.
    unsearched: Vec<PathBuf>,
    /// A list above was full: some path was not remembered.
    overflow: bool,
    /// Why the pass ended before the archive's end (a cap, an unreadable archive): what was
    /// seen until then is all the index knows.
    cut: Option<String>,
    /// Bytes of the paths held, for the cache's bound.
    bytes: usize,
}

impl Index {
    /// One pass over the gzip'd tar read from `reader`. Blocking: run it in `spawn_blocking`.
    /// With `markers` false file contents are not read (only which app files exist matters).
    pub(crate) fn build(reader: impl Read, markers: bool, limits: &ScanLimits) -> Self {
        let mut index = Self {
            markers,
            ..Self::default()
        };
        if let Err(why) = index.fill(reader, limits) {
            index.cut = Some(why);
        }
        index.bytes = index.held_bytes();
        index
    }

    fn fill(&mut self, reader: impl Read, limits: &ScanLimits) -> Result<(), String> {
        let mut tar = tar::Archive::new(GzDecoder::new(reader));
        let entries = tar
            .entries()
            .map_err(|e| format!("unreadable archive: {e}"))?;
        let mut count: u64 = 0;
        let mut total: u64 = 0;
        // One read buffer for the pass (a fresh 64 KiB per file cost more than the search).
        let mut buf = vec![0u8; READ_CHUNK + CARRY];
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("unreadable archive: {e}"))?;
            count += 1;
            if count > limits.max_entries {
                return Err(format!("more than {} entries", limits.max_entries));
            }
            total = total.saturating_add(entry.size());
            if total > limits.max_bytes {
                return Err(format!("more than {} bytes", limits.max_bytes));
            }
            let Ok(name) = entry.path().map(|p| p.into_owned()) else {
                continue;
            };
            let Some(rel) = clean_relative(&name) else {
                continue; // escapes the root: extraction would refuse the whole archive
            };
            let kind = entry.header().entry_type();
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_file = kind.is_file() || kind == tar::EntryType::Continuous;
            if is_file || kind.is_symlink() {
                if KUSTOMIZATION_FILES.contains(&file_name) {
                    self.kustomize_dirs.insert(parent.clone());
                } else if file_name == CHART_FILE {
                    self.chart_dirs.insert(parent.clone());
                }
                if is_manifest_file(file_name) && !self.manifest_dirs.contains(&parent) {
                    self.manifest_dirs.insert(parent.clone());
                }
            }
            if !self.markers {
                continue;
            }
            if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .and_then(|t| resolve(&parent, &t));
                if let Some(target) = target {
                    self.overflow |= !record(&mut self.links, (rel, target), limits.max_recorded);
                }
                continue;
            }
            if !is_file {
                continue;
            }
            let is_kustomization = KUSTOMIZATION_FILES.contains(&file_name);
            let found = search(&mut entry, is_kustomization, limits, &mut buf)
                .map_err(|e| format!("unreadable archive: {e}"))?;
            if let Some(text) = found.kustomization {
                for target in outside_refs(&parent, &text) {
                    self.overflow |= !record(
                        &mut self.refs,
                        (parent.clone(), target),
                        limits.max_recorded,
                    );
                }
            }
            if found.truncated {
                self.overflow |= !record(&mut self.unsearched, rel.clone(), limits.max_recorded);
            }
            if found.marker {
                self.overflow |= !record(&mut self.marker_files, rel, limits.max_recorded);
            }
        }
        Ok(())
    }

    /// The pass read the whole archive: the index holds for every app of it.
    pub(crate) fn complete(&self) -> bool {
        self.cut.is_none()
    }

    /// Roughly what the index holds in memory.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn held_bytes(&self) -> usize {
        let path = |p: &PathBuf| p.as_os_str().len() + 32;
        let set = |s: &HashSet<PathBuf>| s.iter().map(path).sum::<usize>();
        set(&self.kustomize_dirs)
            + set(&self.chart_dirs)
            + set(&self.manifest_dirs)
            + self.marker_files.iter().map(path).sum::<usize>()
            + self.unsearched.iter().map(path).sum::<usize>()
            + self
                .refs
                .iter()
                .chain(&self.links)
                .map(|(a, b)| path(a) + path(b))
                .sum::<usize>()
    }

    /// The outcome for one app. An index built without markers answers as if the request
    /// looked for none.
    pub(crate) fn evaluate(&self, req: &ScanRequest) -> Outcome {
        let Some(app) = clean_relative(Path::new(&req.app_rel_path)) else {
            return Outcome::NoApp;
        };
        let markers = req.markers && self.markers;
        let plain_dir = req.accept == Accept::Directory;
        let tool_app = self.kustomize_dirs.contains(&app) || self.chart_dirs.contains(&app);
        let has_app_file = if plain_dir {
            self.manifest_dirs.iter().any(|d| d.starts_with(&app))
        } else {
            (matches!(req.accept, Accept::Kustomize | Accept::Auto)
                && self.kustomize_dirs.contains(&app))
                || (matches!(req.accept, Accept::Helm | Accept::Auto)
                    && self.chart_dirs.contains(&app))
        };
        let marker_in_app = markers && self.marker_files.iter().any(|f| f.starts_with(&app));
        if let Some(why) = &self.cut {
            // Only what was seen before the cut decides, and only for a tool app (a plain
            // directory's kustomization could still have come).
            return match (plain_dir, has_app_file, markers, marker_in_app) {
                (false, true, false, _) => Outcome::Plain,
                (false, true, true, true) => Outcome::Placeholders,
                _ => Outcome::Unknown(why.clone()),
            };
        }
        if !has_app_file || (plain_dir && tool_app) {
            return Outcome::NoApp;
        }
        if !markers {
            return Outcome::Plain;
        }
        if marker_in_app {
            return Outcome::Placeholders;
        }
        // The scope: the app dir, the request's value files, then whatever kustomizations and
        // symlinks inside the scope name, until nothing new is added.
        let mut scope: Vec<PathBuf> = vec![app.clone()];
        scope.extend(req.extra.iter().filter_map(|f| resolve(&app, Path::new(f))));
        let within = |p: &Path, scope: &[PathBuf]| scope.iter().any(|s| p.starts_with(s));
        loop {
            let before = scope.len();
            let mut added: Vec<PathBuf> = Vec::new();
            for (from, to) in self.refs.iter().chain(&self.links) {
                if within(from, &scope) && !within(to, &scope) && !added.contains(to) {
                    added.push(to.clone());
                }
            }
            scope.extend(added);
            if scope.len() == before {
                break;
            }
        }
        if self.marker_files.iter().any(|f| within(f, &scope)) {
            return Outcome::Placeholders;
        }
        if let Some(f) = self.unsearched.iter().find(|f| within(f, &scope)) {
            return Outcome::Unknown(format!("{} is too long to search", f.display()));
        }
        if self.overflow {
            return Outcome::Unknown("too many paths to remember".to_owned());
        }
        Outcome::Plain
    }
}

/// Appends `item` unless `list` holds `cap` already; `false` when it was full.
fn record<T>(list: &mut Vec<T>, item: T, cap: usize) -> bool {
    if list.len() >= cap {
        return false;
    }
    list.push(item);
    true
}

/// Scans the gzip'd tar read from `reader` for one app. Blocking: run it in `spawn_blocking`.
#[cfg(test)]
pub(crate) fn scan(reader: impl Read, req: &ScanRequest, limits: &ScanLimits) -> Outcome {
    Index::build(reader, req.markers, limits).evaluate(req)
}

/// Complete indexes of recently verified archives, by checksum and whether markers were
/// searched; LRU, bounded by entries and by the bytes of the paths they hold.
pub(crate) struct IndexCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<IndexInner>,
}

#[derive(Default)]
struct IndexInner {
    map: HashMap<(String, bool), (Arc<Index>, u64)>,
    bytes: usize,
    clock: u64,
}

impl IndexCache {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of the archive with `checksum`. The caller must verify its own stream against
    /// that checksum before trusting what the index says.
    pub(crate) fn get(&self, checksum: &str, markers: bool) -> Option<Arc<Index>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let (index, used) = inner.map.get_mut(&(normalize(checksum), markers))?;
        *used = now;
        Some(index.clone())
    }

    /// Keeps `index` (complete, of an archive verified against `checksum`), evicting the least
    /// recently used ones over the bounds. An index larger than the whole bound is not kept.
    pub(crate) fn insert(&self, checksum: &str, index: Arc<Index>) {
        if !index.complete() || index.bytes() > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let key = (normalize(checksum), index.markers);
        inner.bytes += index.bytes();
        if let Some((old, _)) = inner.map.insert(key, (index, now)) {
            inner.bytes -= old.bytes();
        }
        while inner.map.len() > self.max_entries || inner.bytes > self.max_bytes {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((gone, _)) = inner.map.remove(&oldest) {
                inner.bytes -= gone.bytes();
            }
        }
    }
}

fn normalize(checksum: &str) -> String {
    checksum.trim().to_ascii_lowercase()
}

/// A file a plain-directory app renders (see `render::directory`).
fn is_manifest_file(name: &str) -> bool {
    [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

/// `rel` (relative to `base`, both repository-relative), lexically cleaned; `None` when it is
/// absolute or climbs above the root.
fn resolve(base: &Path, rel: &Path) -> Option<PathBuf> {
    if rel.is_absolute() {
        return None;
    }
    clean_relative(&base.join(rel))
}

struct Searched {
    marker: bool,
    /// The file was longer than the search cap (and had no marker before it).
    truncated: bool,
    /// A kustomization's text (its first bytes, up to the cap).
    kustomization: Option<String>,
}

/// Searches one entry for a marker, reading at most `max_file_bytes`. A file with a NUL byte in
/// its first read is binary and not searched. `buf` is scratch of `READ_CHUNK + CARRY` bytes.
fn search(
    entry: &mut impl Read,
    keep_text: bool,
    limits: &ScanLimits,
    buf: &mut [u8],
) -> std::io::Result<Searched> {
    let mut out = Searched {
        marker: false,
        truncated: false,
        kustomization: None,
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut carry = 0usize;
    let mut read: u64 = 0;
    let mut first = true;
    loop {
        let want = usize::try_from(limits.max_file_bytes - read)
            .unwrap_or(READ_CHUNK)
            .min(READ_CHUNK);
        let n = entry.read(&mut buf[carry..carry + want])?;
        if n == 0 {
            break;
        }
        let window = &buf[..carry + n];
        if first && window.contains(&0) {
            return Ok(out);
        }
        first = false;
        if keep_text && kept.len() < limits.max_kustomization_bytes {
            let room = limits.max_kustomization_bytes - kept.len();
            kept.extend_from_slice(&window[carry..carry + n.min(room)]);
        }
        if contains_marker(window) {
            out.marker = true;
            break;
        }
        read += n as u64;
        if read >= limits.max_file_bytes {
            // A longer file: was it exactly at the cap?
            let mut probe = [0u8; 1];
            if entry.read(&mut probe)? > 0 {
                out.truncated = true;
            }
            break;
        }
        let keep = window.len().min(CARRY);
        let start = window.len() - keep;
        buf.copy_within(start..start + keep, 0);
        carry = keep;
    }
    if keep_text {
        out.kustomization = Some(String::from_utf8_lossy(&kept).into_owned());
    }
    Ok(out)
}

/// Whether `hay` holds a marker. Every byte of a repository goes through here on the first
/// MatchRepository of a commit, so the search is memchr's vectorised one (a byte loop ran at
/// ~50 MB/s, slower than inflating the archive).
fn contains_marker(hay: &[u8]) -> bool {
    static FINDERS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 2]> =
        std::sync::LazyLock::new(|| MARKERS.map(memchr::memmem::Finder::new));
    FINDERS.iter().any(|f| f.find(hay).is_some())
}

/// The paths a kustomization in `dir` names outside `dir`: every word of its text (split at
/// whitespace, quotes, YAML flow punctuation and `=`, as in `key=../file`) that has a `..`
/// component and stays inside the repository. A superset of its `resources`, `bases`,
/// `components`, patch and generator files, `helmCharts` values files and `helmGlobals`.
fn outside_refs(dir: &Path, text: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || "\"',[]{}=".contains(c)) {
        let p = Path::new(word);
        if !p.components().any(|c| c == Component::ParentDir) {
            continue;
        }
        if let Some(target) = resolve(dir, p)
            && !target.starts_with(dir)
            && !out.contains(&target)
        {
            out.push(target);
        }
    }
    out
}

/// A `Read` over chunks sent from async code (the gRPC stream) to the blocking scan.
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
