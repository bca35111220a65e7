//! Where a placeholder came from: rendering loses file and line, so the rendered text is
//! searched for, verbatim, in the repository's text files (YAML, JSON, helm templates and
//! values, kustomize env files). Placeholder text is distinctive enough that a verbatim hit
//! is almost always its origin; hits under the app path win over hits elsewhere (another app
//! in the same repository may use the same placeholder). Bounded: hidden directories are
//! skipped, symlinks are not followed, and file count, file size and total size are capped.

use std::path::{Path, PathBuf};

use super::Location;

/// Larger files are not searched.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Files searched at most.
const MAX_FILES: usize = 20_000;
/// Bytes read at most, over all files.
const MAX_TOTAL_BYTES: u64 = 128 << 20;
/// Deepest directory searched.
const MAX_DEPTH: usize = 32;
/// Locations reported per text at most.
const MAX_HITS: usize = 20;

const EXTENSIONS: &[&str] = &[
    "yaml",
    "yml",
    "json",
    "tpl",
    "txt",
    "env",
    "properties",
    "conf",
    "ini",
    "jsonnet",
    "libsonnet",
];

/// Files whose names say what they are, without an extension.
const NAMES: &[&str] = &["Kustomization"];

/// The searchable text files of a repository, read once.
pub(crate) struct RepoIndex {
    files: Vec<IndexedFile>,
    app_entry: String,
}

struct IndexedFile {
    /// Relative to the repository root, `/`-separated.
    rel: String,
    text: String,
    in_app: bool,
}

impl RepoIndex {
    /// Reads `root`'s text files; unreadable ones are skipped (locations are best effort).
    pub(crate) fn build(root: &Path, app_path: &str) -> Self {
        let app_prefix = normalize(app_path);
        let mut files = Vec::new();
        let mut budget = MAX_TOTAL_BYTES;
        let mut stack = vec![(root.to_path_buf(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries.into_iter().rev() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    continue;
                }
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                if kind.is_dir() {
                    if depth < MAX_DEPTH {
                        stack.push((path, depth + 1));
                    }
                    continue;
                }
                if !kind.is_file() || files.len() >= MAX_FILES || !searchable(&path, &name) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.len() > MAX_FILE_BYTES || meta.len() > budget {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                budget -= meta.len();
                let Some(rel) = relative(root, &path) else {
                    continue;
                };
                let in_app = app_prefix.is_empty() || rel.starts_with(&format!("{app_prefix}/"));
                files.push(IndexedFile { rel, text, in_app });
            }
        }
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        let app_entry = app_entry(root, &app_prefix);
        Self { files, app_entry }
    }

    /// The app's kustomization or Chart.yaml (else the app path), relative to the root.
    pub(crate) fn app_entry(&self) -> &str {
        &self.app_entry
    }

    /// Every file and line holding `needle`, preferring files under the app path, and among
    /// those the lines that also name `field` (the same placeholder often sits in several
    /// fields); the object alone when the text is in no file (built by helm logic, from a
    /// remote chart, encoded).
    pub(crate) fn locate(&self, needle: &str, field: Option<&str>, object: &str) -> Vec<Location> {
        let hits = |in_app: bool| -> Vec<Location> {
            self.files
                .iter()
                .filter(|f| f.in_app == in_app)
                .flat_map(|f| {
                    f.text.match_indices(needle).map(|(at, _)| Location {
                        file: Some(f.rel.clone()),
                        line: Some(line_of(&f.text, at)),
                        object: object.to_owned(),
                    })
                })
                .take(MAX_HITS)
                .collect()
        };
        let mut found = if needle.is_empty() {
            Vec::new()
        } else {
            hits(true)
        };
        if found.is_empty() && !needle.is_empty() {
            found = hits(false);
        }
        found.dedup();
        if let Some(field) = field.filter(|f| !f.is_empty()) {
            let named: Vec<Location> = found
                .iter()
                .filter(|l| self.line_names(l, field))
                .cloned()
                .collect();
            if !named.is_empty() {
                found = named;
            }
        }
        if found.is_empty() {
            found.push(Location {
                file: None,
                line: None,
                object: object.to_owned(),
            });
        }
        found
    }
}

impl RepoIndex {
    /// Whether the line of `at` holds `field` as a key (`field:` or `"field":`).
    fn line_names(&self, at: &Location, field: &str) -> bool {
        let (Some(file), Some(line)) = (&at.file, at.line) else {
            return false;
        };
        self.files
            .iter()
            .find(|f| &f.rel == file)
            .and_then(|f| f.text.lines().nth(line - 1))
            .is_some_and(|l| {
                let l = l.trim_start().trim_start_matches("- ");
                l.starts_with(&format!("{field}:")) || l.starts_with(&format!("\"{field}\":"))
            })
    }
}

fn searchable(path: &Path, name: &str) -> bool {
    NAMES.contains(&name)
        || path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("/"))
}

/// `./apps//web/` → `apps/web`; `.` → ``.
fn normalize(app_path: &str) -> String {
    app_path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn app_entry(root: &Path, app_prefix: &str) -> String {
    let dir: PathBuf = root.join(app_prefix);
    let join = |name: &str| {
        if app_prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{app_prefix}/{name}")
        }
    };
    for name in [
        "kustomization.yaml",
        "kustomization.yml",
        "Kustomization",
        "Chart.yaml",
    ] {
        if dir.join(name).is_file() {
            return join(name);
        }
    }
    if app_prefix.is_empty() {
        ".".to_owned()
    } else {
        app_prefix.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_and_prefers_the_app() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        write("apps/web/kustomization.yaml", "resources: [../../base]\n");
        write(
            "apps/web/secret.yaml",
            "a: 1\nb: <path:x#k>\nc: <path:x#k>\n",
        );
        write("apps/other/secret.yaml", "b: <path:x#k>\n");
        write("base/secret.yaml", "x:\n  y: <path:base#k>\n");
        write(".git/config", "<path:x#k>\n");
        write("apps/web/image.png", "<path:x#k>\n");
        let index = RepoIndex::build(root, "./apps/web/");
        assert_eq!(index.app_entry(), "apps/web/kustomization.yaml");
        let at = |needle: &str| -> Vec<(Option<String>, Option<usize>)> {
            index
                .locate(needle, None, "Secret/s")
                .into_iter()
                .map(|l| (l.file, l.line))
                .collect()
        };
        assert_eq!(
            at("<path:x#k>"),
            [
                (Some("apps/web/secret.yaml".to_owned()), Some(2)),
                (Some("apps/web/secret.yaml".to_owned()), Some(3)),
            ]
        );
        assert_eq!(
            at("<path:base#k>"),
            [(Some("base/secret.yaml".to_owned()), Some(2))]
        );
        assert_eq!(at("<path:none#k>"), [(None, None)]);
        let c = index.locate("<path:x#k>", Some("c"), "Secret/s");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].line, Some(3));
    }

    #[test]
    fn paths() {
        assert_eq!(normalize("."), "");
        assert_eq!(normalize("./a//b/"), "a/b");
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
