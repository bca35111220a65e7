//! Per-request scratch directory. Everything a request writes lives below its `WorkDir`, and the
//! whole tree leaves the work root when the `WorkDir` is dropped, on every path (success, error,
//! deadline, client cancel: tonic drops the handler future and with it this value); it is
//! deleted by the background `janitor`.

use std::io;
use std::path::{Path, PathBuf};

/// A request's private directory: `repo/` holds the request's private writable copy of the
/// repository when it needs one (`trees::RepoTree::writable`; empty otherwise: the shared
/// tree is read in place), `tmp/` our own files (the received archive, helm homes, generated
/// values files).
#[derive(Debug)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// Creates a fresh, uniquely named directory (mode 0700) under `parent`.
    pub fn create(parent: &Path) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("req-")
            .tempdir_in(parent)?
            .keep();
        let wd = Self { root: dir };
        std::fs::create_dir(wd.repo())?;
        std::fs::create_dir(wd.tmp())?;
        Ok(wd)
    }

    /// The directory the repository tarball is extracted into.
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }

    /// Scratch space that is not part of the repository.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Renamed away now, deleted in the background (see `janitor`).
        super::janitor::remove(&self.root);
    }
}

/// Removes and recreates the work root at startup, like Argo's sidecar: leftovers of a crashed
/// process must not accumulate.
pub fn reset_work_root(root: &Path) -> io::Result<()> {
    super::janitor::reset_dir(root)
}
