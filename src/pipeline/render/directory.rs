//! AVP's plain plugin, `argocd-vault-plugin generate ./`: the manifests are the `.yaml`, `.yml`
//! and `.json` files under the app dir, read as they are. No tool runs.
//!
//! As AVP's `listFiles`/`readFilesAsManifests`: Go's `filepath.Walk` order (lexical, depth
//! first, directories not followed through symlinks), extensions compared exactly, each file
//! split as YAML-or-JSON like apimachinery's decoder, empty documents dropped, no files at all an
//! error. Files are read through the extracted tree, which extraction proved stays inside the
//! request; the archive caps bound how much there is to read.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::RenderError;
use super::tool::ToolError;
use crate::yaml::AliasBudget;

const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// The documents of every manifest file under `app_dir`, in AVP's order, and the render's alias
/// budget, sized by all the files together (as a tool's output would be). The files together
/// may hold at most `max_bytes`, the cap on a tool's output (`--max-output-mb`): they are this
/// render's output.
pub async fn render(
    app_dir: &Path,
    max_bytes: usize,
) -> Result<(Vec<Value>, AliasBudget), RenderError> {
    let dir = app_dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || manifest_files(&dir))
        .await
        .map_err(|e| io(app_dir, std::io::Error::other(e)))??;
    if files.is_empty() {
        return Err(RenderError::NoManifests(
            app_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| ".".to_owned()),
        ));
    }
    let mut texts = Vec::new();
    let mut total: u64 = 0;
    for file in files {
        // Sized before reading, so an oversized file is never loaded.
        total += tokio::fs::metadata(&file)
            .await
            .map_err(|e| io(&file, e))?
            .len();
        if total > max_bytes as u64 {
            return Err(RenderError::Tool(ToolError::OutputTooLarge {
                cmd: "manifest files".to_owned(),
                limit: max_bytes,
            }));
        }
        let text = tokio::fs::read_to_string(&file)
            .await
            .map_err(|e| io(&file, e))?;
        texts.push((file, text));
    }
    let budget = AliasBudget::for_output(texts.iter().map(|(_, t)| t.len()).sum());
    let mut documents = Vec::new();
    for (file, text) in texts {
        let rel = file.strip_prefix(app_dir).unwrap_or(&file);
        documents.extend(
            crate::pipeline::manifest::split_tool_output(&text, &budget).map_err(|source| {
                RenderError::File {
                    file: rel.display().to_string(),
                    source,
                }
            })?,
        );
    }
    Ok((documents, budget))
}

/// Manifest files below `dir`, in `filepath.Walk` order: entries sorted by name, a directory's
/// contents right after it.
fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, RenderError> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io(dir, e))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| io(&path, e))?;
        if kind.is_dir() {
            out.extend(manifest_files(&path)?);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
            && path.is_file()
        {
            out.push(path);
        }
    }
    Ok(out)
}

fn io(path: &Path, source: std::io::Error) -> RenderError {
    RenderError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn files_in_walk_order_split_into_documents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        write("b.yaml", "kind: B\n---\n---\nkind: B2\n");
        write("a/z.yml", "kind: AZ\n");
        write("a.json", "{\"kind\": \"AJ\"}");
        write("c.YAML", "kind: Ignored\n");
        write("notes.txt", "kind: Ignored\n");
        let (docs, _) = render(dir.path(), 1 << 20).await.expect("render");
        let kinds: Vec<&Value> = docs.iter().map(|d| &d["kind"]).collect();
        assert_eq!(
            kinds,
            [&json!("AZ"), &json!("AJ"), &json!("B"), &json!("B2")]
        );

        let err = render(dir.path(), 16).await.expect_err("over the cap");
        assert!(matches!(
            err,
            RenderError::Tool(ToolError::OutputTooLarge { limit: 16, .. })
        ));

        write("bad.yaml", "a: [\n");
        let err = render(dir.path(), 1 << 20).await.expect_err("bad yaml");
        assert!(err.to_string().starts_with("bad.yaml: "), "{err}");

        let empty = tempfile::tempdir().expect("tempdir");
        let err = render(empty.path(), 1 << 20).await.expect_err("no files");
        assert!(
            err.to_string()
                .starts_with("no YAML or JSON files were found in "),
            "{err}"
        );
    }
}
