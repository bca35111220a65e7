//! Safe extraction of the repo-server's gzip'd tarball into a request's `WorkDir`.
//!
//! Follows Argo's `untar` rules (skip `.`, reject entries and symlinks that leave the
//! destination, relativize symlink targets, 0644/0755 unless `preserveFileMode`, ignore devices,
//! FIFOs and hard links) and adds what Argo lacks: caps on extracted bytes, entry count and path
//! size, so a gzip or tar bomb ends in an error with bounded memory and disk. Every directory
//! component is resolved as it is walked, so no write can follow a symlink out of the tree.
//! Blocking: run it in `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

/// Caps on what one archive may expand to.
#[derive(Clone, Copy, Debug)]
pub struct UnpackLimits {
    pub max_extracted_bytes: u64,
    pub max_entries: u64,
    pub max_path_bytes: usize,
    pub max_path_depth: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_extracted_bytes: 1 << 30,
            max_entries: 100_000,
            max_path_bytes: 4096,
            max_path_depth: 128,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct UnpackOptions {
    pub preserve_file_mode: bool,
    pub limits: UnpackLimits,
}

/// What was extracted, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Not a gzip'd tar stream, or truncated.
    #[error("error extracting repository archive: {0}")]
    Corrupt(io::Error),
    /// An entry name that would land outside the destination.
    #[error("illegal filepath in archive: {0}")]
    IllegalPath(String),
    /// A symlink whose target is outside the destination.
    #[error("illegal filepath in symlink: {link} -> {target}")]
    IllegalSymlink { link: String, target: String },
    /// Expanding the archive would exceed the byte cap.
    #[error("extracted repository exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// The archive holds more entries than allowed.
    #[error("repository archive has more than {0} entries")]
    TooManyEntries(u64),
    /// An entry path is longer or deeper than allowed.
    #[error("archive entry path too long or too deep: {0}")]
    PathTooLong(String),
    /// Writing to the work dir failed (e.g. disk full).
    #[error("error writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Extracts `archive` (gzip'd tar) into the existing directory `dest`.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let file = File::open(archive).map_err(io_err(archive))?;
    unpack_from(file, archive, dest, opts)
}

/// Extracts the gzip'd tar read from `source` (named `shown` in errors) into the existing
/// directory `dest`. A read error of `source` is a corrupt archive.
pub fn unpack_from(
    source: impl Read + Send + 'static,
    shown: &Path,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let dest = fs::canonicalize(dest).map_err(io_err(dest))?;
    let mut tar = tar::Archive::new(InflateAhead::spawn(source).map_err(io_err(shown))?);
    let limits = opts.limits;
    let mut stats = UnpackStats::default();
    let mut known = KnownDirs::default();

    for entry in tar.entries().map_err(UnpackError::Corrupt)? {
        let mut entry = entry.map_err(UnpackError::Corrupt)?;
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries(limits.max_entries));
        }
        let name = entry.path().map_err(UnpackError::Corrupt)?.into_owned();
        let shown = name.display().to_string();
        if name.as_os_str().len() > limits.max_path_bytes {
            return Err(UnpackError::PathTooLong(truncate(&shown)));
        }
        let rel = clean_relative(&name).ok_or_else(|| UnpackError::IllegalPath(shown.clone()))?;
        if rel.as_os_str().is_empty() {
            continue; // the archive root, "." or "./"
        }
        if rel.components().count() > limits.max_path_depth {
            return Err(UnpackError::PathTooLong(truncate(&shown)));
        }
        let header_mode = entry.header().mode().unwrap_or(0o644);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            let mode = if opts.preserve_file_mode {
                (header_mode & 0o777) | 0o700
            } else {
                0o755
            };
            ensure_dir_known(&dest, &rel, mode, &mut known)?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let mode = if opts.preserve_file_mode {
                header_mode & 0o777
            } else {
                0o644
            };
            let parent = ensure_dir_known(
                &dest,
                rel.parent().unwrap_or(Path::new("")),
                0o755,
                &mut known,
            )?;
            let Some(file_name) = rel.file_name() else {
                return Err(UnpackError::IllegalPath(shown));
            };
            let path = parent.join(file_name);
            let mut out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::ELOOP) {
                        UnpackError::IllegalPath(shown.clone())
                    } else {
                        io_err(&path)(e)
                    }
                })?;
            let remaining = limits.max_extracted_bytes.saturating_sub(stats.bytes);
            let written = io::copy(
                &mut (&mut entry).take(remaining.saturating_add(1)),
                &mut out,
            )
            .map_err(|e| map_read_error(e, &path))?;
            stats.bytes += written;
            stats.files += 1;
            if stats.bytes > limits.max_extracted_bytes {
                return Err(UnpackError::TooLarge(limits.max_extracted_bytes));
            }
        } else if kind.is_symlink() {
            let link_target = entry
                .link_name()
                .map_err(UnpackError::Corrupt)?
                .ok_or_else(|| UnpackError::IllegalPath(shown.clone()))?
                .into_owned();
            create_symlink(&dest, &rel, &link_target)?;
        }
        // Hard links, devices, FIFOs and anything else are skipped, as Argo does.
    }
    Ok(stats)
}

/// Decompressed bytes handed from the inflating thread to the extracting one.
const INFLATE_BLOCK: usize = 256 << 10;
/// Blocks the inflating thread may run ahead (bounds memory to about 1 MiB).
const INFLATE_AHEAD: usize = 4;

/// A reader of the decompressed archive, inflated by a thread of its own: gunzip takes about a
/// third of an extraction and writing files the rest, so the two overlap (as `tar xzf` does with
/// its `gzip` process). Dropping the reader stops the thread at its next block. The end of the
/// stream is an empty block, so a thread that ended without sending it (it cannot, short of a
/// panic) is an error, never a shorter archive.
struct InflateAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    block: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl InflateAhead {
    fn spawn(source: impl Read + Send + 'static) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(INFLATE_AHEAD);
        std::thread::Builder::new()
            .name("avp-inflate".to_owned())
            .spawn(move || {
                let mut gz = GzDecoder::new(BufReader::with_capacity(64 << 10, source));
                loop {
                    let block = fill_block(&mut gz);
                    let last = !matches!(&block, Ok(b) if !b.is_empty());
                    if tx.send(block).is_err() || last {
                        return;
                    }
                }
            })?;
        Ok(Self {
            rx,
            block: Vec::new(),
            pos: 0,
            ended: false,
        })
    }
}

/// Up to [`INFLATE_BLOCK`] bytes from `reader`; empty at its end.
fn fill_block(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut block = vec![0u8; INFLATE_BLOCK];
    let mut filled = 0;
    while filled < block.len() {
        match reader.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    block.truncate(filled);
    Ok(block)
}

impl Read for InflateAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.block.len() {
            if self.ended {
                return Ok(0);
            }
            let block = self.rx.recv().map_err(|_| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "inflating thread ended early")
            })??;
            self.ended = block.is_empty();
            self.block = block;
            self.pos = 0;
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read errors from the tar entry mean a corrupt archive; write errors are ours.
fn map_read_error(e: io::Error, path: &Path) -> UnpackError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput => {
            UnpackError::Corrupt(e)
        }
        _ => io_err(path)(e),
    }
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// Lexically cleans an archive name into a path relative to the destination, like Go's
/// `filepath.Join(dst, name)` followed by the inbound check: absolute names are taken as
/// relative, `..` may not climb above the root. `None` means the name escapes.
pub(crate) fn clean_relative(name: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in name.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(p) => parts.push(p),
        }
    }
    Some(parts.iter().collect())
}

/// Directories (relative to the destination) already walked and found, or made, to be real
/// directories reached without any symlink. Only this extraction writes the tree while it runs,
/// and nothing can turn an existing directory into a link (creating a link or file over it
/// fails), so such a path stays a real directory: walking it again (one `lstat` per component
/// per entry) is skipped. Paths reached through a link are never remembered.
#[derive(Default)]
struct KnownDirs(std::collections::HashSet<PathBuf>);

/// [`ensure_dir`] that skips the walk for a parent already known to be a plain directory.
fn ensure_dir_known(
    dest: &Path,
    rel: &Path,
    mode: u32,
    known: &mut KnownDirs,
) -> Result<PathBuf, UnpackError> {
    if rel.as_os_str().is_empty() {
        return Ok(dest.to_path_buf());
    }
    if known.0.contains(rel) {
        return Ok(dest.join(rel));
    }
    let real = ensure_dir(dest, rel, mode)?;
    if real == dest.join(rel) {
        known.0.insert(rel.to_path_buf());
    }
    Ok(real)
}

/// Walks `rel` below `dest` one component at a time, creating missing directories and resolving
/// existing symlinks, and fails if any step resolves outside `dest`. Returns the real path.
fn ensure_dir(dest: &Path, rel: &Path, mode: u32) -> Result<PathBuf, UnpackError> {
    let mut cur = dest.to_path_buf();
    for comp in rel.components() {
        let next = cur.join(comp);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let real = fs::canonicalize(&next)
                    .map_err(|_| UnpackError::IllegalPath(rel.display().to_string()))?;
                if !real.starts_with(dest) || !real.is_dir() {
                    return Err(UnpackError::IllegalPath(rel.display().to_string()));
                }
                cur = real;
            }
            Ok(meta) if meta.is_dir() => cur = next,
            Ok(_) => {
                return Err(UnpackError::Io {
                    path: rel.display().to_string(),
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "not a directory"),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(mode)
                    .create(&next)
                    .map_err(io_err(&next))?;
                cur = next;
            }
            Err(e) => return Err(io_err(&next)(e)),
        }
    }
    Ok(cur)
}

/// Creates the symlink `rel -> target` if the target stays inside `dest`, with the target
/// rewritten relative to the link's directory (Argo ≥3.2), so the tree can be moved.
fn create_symlink(dest: &Path, rel: &Path, target: &Path) -> Result<(), UnpackError> {
    let illegal = || UnpackError::IllegalSymlink {
        link: rel.display().to_string(),
        target: target.display().to_string(),
    };
    let link_dir = rel.parent().unwrap_or(Path::new(""));
    let target_rel = clean_relative(&link_dir.join(target)).ok_or_else(illegal)?;
    // Resolve through links that already exist: the deepest existing ancestor must be inside.
    let mut probe = dest.join(&target_rel);
    loop {
        match fs::canonicalize(&probe) {
            Ok(real) => {
                if !real.starts_with(dest) {
                    return Err(illegal());
                }
                break;
            }
            Err(_) => match probe.parent() {
                Some(p) if p.starts_with(dest) => probe = p.to_path_buf(),
                _ => return Err(illegal()),
            },
        }
    }
    let parent = ensure_dir(dest, link_dir, 0o755)?;
    let Some(file_name) = rel.file_name() else {
        return Err(illegal());
    };
    let link_path = parent.join(file_name);
    // The link goes where its directory really is, which differs from `link_dir` when a
    // component of it is a symlink (`b -> .`, then `b/L -> ..`). The relative target must start
    // from there, or its `..` steps would climb out of `dest`.
    let real_link_dir = parent.strip_prefix(dest).map_err(|_| illegal())?;
    let relative = relative_path(real_link_dir, &target_rel);
    std::os::unix::fs::symlink(&relative, &link_path).map_err(io_err(&link_path))
}

/// The path from directory `from` to `to`, both relative to the same root and already clean.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_relative_rules() {
        let check = |name: &str, want: Option<&str>| {
            assert_eq!(
                clean_relative(Path::new(name)),
                want.map(PathBuf::from),
                "{name}"
            );
        };
        check(".", Some(""));
        check("./", Some(""));
        check("a/b", Some("a/b"));
        check("./a/./b/", Some("a/b"));
        check("/etc/passwd", Some("etc/passwd"));
        check("a/../b", Some("b"));
        check("../x", None);
        check("a/../../x", None);
    }

    /// Found by the property tests: `b -> a/..` is `b -> .`, so `b/L` is really `L`, and a target
    /// of `..` computed from `b` would have made `L -> ..`, pointing outside the tree.
    #[test]
    fn symlink_below_a_link_to_its_own_dir_stays_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = fs::canonicalize(dir.path()).expect("canonical");
        create_symlink(&dest, Path::new("b"), Path::new("a/..")).expect("b -> .");
        create_symlink(&dest, Path::new("b/L"), Path::new("..")).expect("b/L -> dest");
        assert_eq!(
            fs::read_link(dest.join("L")).expect("L"),
            PathBuf::from(".")
        );
        create_symlink(&dest, Path::new("b/b/b/M"), Path::new("../../../c")).expect("M -> c");
        assert_eq!(
            fs::read_link(dest.join("M")).expect("M"),
            PathBuf::from("c")
        );
        fs::create_dir(dest.join("d")).expect("d");
        create_symlink(&dest, Path::new("e"), Path::new("d")).expect("e -> d");
        create_symlink(&dest, Path::new("e/N"), Path::new("../c")).expect("N -> c");
        assert_eq!(
            fs::read_link(dest.join("d/N")).expect("N"),
            PathBuf::from("../c")
        );
    }

    /// Files across several inflated blocks arrive whole; a cut stream is a corrupt archive,
    /// never a shorter one.
    #[test]
    fn inflating_ahead_keeps_every_byte_and_reports_a_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..=u8::MAX).cycle().take(3 * INFLATE_BLOCK + 17).collect();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for name in ["a/big.bin", "b/big.bin"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(big.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, big.as_slice()).expect("append");
        }
        let tgz = b.into_inner().expect("tar").finish().expect("gz");
        let archive = dir.path().join("a.tgz");
        fs::write(&archive, &tgz).expect("write");
        let out = dir.path().join("out");
        fs::create_dir(&out).expect("mkdir");
        let stats = unpack(&archive, &out, &UnpackOptions::default()).expect("unpack");
        assert_eq!(stats.files, 2);
        assert_eq!(fs::read(out.join("b/big.bin")).expect("read"), big);

        fs::write(&archive, &tgz[..tgz.len() / 2]).expect("write");
        let cut = dir.path().join("cut");
        fs::create_dir(&cut).expect("mkdir");
        assert!(matches!(
            unpack(&archive, &cut, &UnpackOptions::default()),
            Err(UnpackError::Corrupt(_))
        ));
    }

    #[test]
    fn relative_path_rules() {
        let check = |from: &str, to: &str, want: &str| {
            assert_eq!(
                relative_path(Path::new(from), Path::new(to)),
                PathBuf::from(want)
            );
        };
        check("", "a/b", "a/b");
        check("a", "a/b", "b");
        check("a/b", "c", "../../c");
        check("a/b", "a/c/d", "../c/d");
        check("a", "a", ".");
    }
}

#[cfg(test)]
mod props;
