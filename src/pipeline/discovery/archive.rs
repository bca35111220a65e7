//! `MatchRepository` for the built-in plugins, decided from the repository archive as it streams
//! in: nothing is extracted or written to disk.
//!
//! One pass over the gzip'd tar (entries arrive in the repo-server's order, so a `../base` may
//! come before the overlay that names it). For every regular text file the pass records whether
//! it holds a marker ([`MARKERS`]); kustomization files also give the paths they name outside
//! their own directory, symlinks their targets. At the end the app's scope is the app dir plus
//! everything reachable from it through those references (kustomizations inside the scope, then
//! the ones they reach, ...), plus the helm value files the request names; the app is claimed
//! when a marker file lies inside that scope. A marker inside the app dir itself stops the pass
//! early.
//!
//! Caps ([`ScanLimits`]) keep memory and time bounded; when one is hit before a marker was seen in
//! scope, the outcome is [`Outcome::Unknown`] (the caller answers "not supported, discovery
//! disabled", so the app is still usable by name and nothing errors).
//!
//! Not looked into: packaged subcharts (`charts/*.tgz`), remote kustomize bases, and charts
//! pulled by kustomize `helmCharts` (their values files are, when named with a `..` path).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

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

#[derive(Default)]
struct State {
    app: PathBuf,
    has_app_file: bool,
    /// A kustomization or `Chart.yaml` in the app dir: a plain-directory plugin leaves such an
    /// app to the kustomize/helm plugins (and Argo CD's own tools).
    tool_app: bool,
    marker_in_app: bool,
    /// Files outside the app dir holding a marker.
    marker_files: Vec<PathBuf>,
    /// Kustomization dir → a path it names outside itself.
    refs: Vec<(PathBuf, PathBuf)>,
    /// Symlink → its target (repository-relative).
    links: Vec<(PathBuf, PathBuf)>,
    /// Files not searched to their end.
    unsearched: Vec<PathBuf>,
    overflow: bool,
}

impl State {
    fn record(list: &mut Vec<(PathBuf, PathBuf)>, item: (PathBuf, PathBuf), cap: usize) -> bool {
        if list.len() >= cap {
            return false;
        }
        list.push(item);
        true
    }
}

/// Scans the gzip'd tar read from `reader`. Blocking: run it in `spawn_blocking`.
pub(crate) fn scan(reader: impl Read, req: &ScanRequest, limits: &ScanLimits) -> Outcome {
    let Some(app) = clean_relative(Path::new(&req.app_rel_path)) else {
        return Outcome::NoApp;
    };
    let mut st = State {
        app,
        ..State::default()
    };
    let mut tar = tar::Archive::new(GzDecoder::new(reader));
    let entries = match tar.entries() {
        Ok(e) => e,
        Err(e) => return Outcome::Unknown(format!("unreadable archive: {e}")),
    };
    let mut count: u64 = 0;
    let mut total: u64 = 0;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => return Outcome::Unknown(format!("unreadable archive: {e}")),
        };
        count += 1;
        if count > limits.max_entries {
            return Outcome::Unknown(format!("more than {} entries", limits.max_entries));
        }
        total = total.saturating_add(entry.size());
        if total > limits.max_bytes {
            return Outcome::Unknown(format!("more than {} bytes", limits.max_bytes));
        }
        let Ok(name) = entry.path().map(|p| p.into_owned()) else {
            continue;
        };
        let Some(rel) = clean_relative(&name) else {
            continue; // escapes the root: extraction would refuse the whole archive
        };
        let kind = entry.header().entry_type();
        let parent = rel.parent().unwrap_or(Path::new(""));
        let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let in_app = rel.starts_with(&st.app);
        let plain_dir = req.accept == Accept::Directory;
        if kind.is_file() || kind == tar::EntryType::Continuous || kind.is_symlink() {
            if plain_dir {
                st.tool_app |= parent == st.app && is_app_file(file_name, Accept::Auto);
                st.has_app_file |= in_app && is_manifest_file(file_name);
            } else if parent == st.app && is_app_file(file_name, req.accept) {
                st.has_app_file = true;
                if !req.markers {
                    return Outcome::Plain;
                }
            }
        }
        if !req.markers {
            continue;
        }
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .and_then(|t| resolve(parent, &t));
            if let Some(target) = target
                && !State::record(&mut st.links, (rel, target), limits.max_recorded)
            {
                st.overflow = true;
            }
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let is_kustomization = KUSTOMIZATION_FILES.contains(&file_name);
        let found = match search(&mut entry, is_kustomization, limits) {
            Ok(s) => s,
            Err(e) => return Outcome::Unknown(format!("unreadable archive: {e}")),
        };
        if let Some(text) = found.kustomization {
            for target in outside_refs(parent, &text) {
                if !State::record(
                    &mut st.refs,
                    (parent.to_path_buf(), target),
                    limits.max_recorded,
                ) {
                    st.overflow = true;
                }
            }
        }
        if found.truncated {
            if st.unsearched.len() >= limits.max_recorded {
                st.overflow = true;
            } else {
                st.unsearched.push(rel.clone());
            }
        }
        if found.marker {
            if in_app {
                st.marker_in_app = true;
            } else if st.marker_files.len() >= limits.max_recorded {
                st.overflow = true;
            } else {
                st.marker_files.push(rel);
            }
        }
        // A plain directory is decided at the end: a kustomization may still come.
        if st.has_app_file && st.marker_in_app && !plain_dir {
            return Outcome::Placeholders;
        }
    }
    st.finish(req)
}

impl State {
    fn finish(self, req: &ScanRequest) -> Outcome {
        if !self.has_app_file || self.tool_app {
            return Outcome::NoApp;
        }
        if !req.markers {
            return Outcome::Plain;
        }
        if self.marker_in_app {
            return Outcome::Placeholders;
        }
        // The scope: the app dir, the request's value files, then whatever kustomizations and
        // symlinks inside the scope name, until nothing new is added.
        let mut scope: Vec<PathBuf> = vec![self.app.clone()];
        scope.extend(
            req.extra
                .iter()
                .filter_map(|f| resolve(&self.app, Path::new(f))),
        );
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

fn is_app_file(name: &str, accept: Accept) -> bool {
    (matches!(accept, Accept::Kustomize | Accept::Auto) && KUSTOMIZATION_FILES.contains(&name))
        || (matches!(accept, Accept::Helm | Accept::Auto) && name == CHART_FILE)
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
/// its first read is binary and not searched.
fn search(
    entry: &mut impl Read,
    keep_text: bool,
    limits: &ScanLimits,
) -> std::io::Result<Searched> {
    let mut out = Searched {
        marker: false,
        truncated: false,
        kustomization: None,
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK + CARRY];
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

fn contains_marker(hay: &[u8]) -> bool {
    hay.iter()
        .enumerate()
        .any(|(i, &b)| (b == b'<' || b == b'a') && MARKERS.iter().any(|m| hay[i..].starts_with(m)))
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
