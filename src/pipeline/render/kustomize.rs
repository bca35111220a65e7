//! `kustomize build --enable-helm` for an app, plus the seed pipeline's `kustomize edit set
//! image` / `set annotation` steps applied in-process to the request's private copy of the
//! kustomization (the `kubectl kustomize` we ship has no `edit`, and we want no shell anyway).

use std::path::Path;

use serde_json::{Map, Value};

use super::{APP_REPO, ImageOverride, REPO_ANNOTATION, RenderError, ToolPaths, validate_repo};
use crate::pipeline::context::RequestEnv;
use crate::pipeline::render::tool::ToolCommand;
use crate::protocol::trees::RepoTree;

/// `kustomize build --enable-helm --helm-command <gate> .` (or `kubectl kustomize . ...`) in
/// the app dir. `gate` is our own binary: kustomize's helm calls go through
/// `sandbox::gate`, which execs the real helm named in the environment.
pub(crate) fn command(
    tools: &ToolPaths,
    gate: &Path,
    app_dir: &Path,
    env: Vec<(String, String)>,
) -> ToolCommand {
    let sub = if tools.kustomize_is_kubectl() {
        "kustomize"
    } else {
        "build"
    };
    ToolCommand {
        program: tools.kustomize.clone(),
        args: vec![
            sub.into(),
            ".".into(),
            "--enable-helm".into(),
            "--helm-command".into(),
            gate.as_os_str().to_owned(),
        ],
        cwd: app_dir.to_path_buf(),
        env,
    }
}

/// Rewrites the kustomization when the request sets `IMAGE_NAME`+`IMAGE_TAG` or `APP_REPO`,
/// in the request's private copy of the tree (`RepoTree::writable`: the shared tree is never
/// written). Leaves everything untouched (comments and all, and the shared tree in use) when
/// neither is set. `kustomization` is the file discovery found; its name is looked up in the
/// app dir of the copy.
pub(crate) async fn apply_plugin_settings(
    tree: &RepoTree,
    kustomization: &Path,
    env: &RequestEnv,
) -> Result<(), RenderError> {
    let image = ImageOverride::from_env(env)?;
    let repo = env.setting(APP_REPO);
    if let Some(repo) = &repo {
        validate_repo(repo)?;
    }
    if image.is_none() && repo.is_none() {
        return Ok(());
    }
    let err = |reason: String| RenderError::Kustomization {
        file: file_name(kustomization),
        reason,
    };
    tree.writable().await?;
    let Some(name) = kustomization.file_name() else {
        return Err(err("not a file name".to_owned()));
    };
    let kustomization = tree.app_dir().join(name);
    let text = tokio::fs::read_to_string(&kustomization)
        .await
        .map_err(|e| err(e.to_string()))?;
    let edited = edit(&text, image.as_ref(), repo.as_deref()).map_err(err)?;
    tokio::fs::write(&kustomization, edited)
        .await
        .map_err(|e| err(e.to_string()))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The pure part of `apply_plugin_settings`: same meaning as
/// `kustomize edit set image NAME:TAG` and `kustomize edit set annotation github.com/url:REPO`.
pub(crate) fn edit(
    text: &str,
    image: Option<&ImageOverride>,
    repo: Option<&str>,
) -> Result<String, String> {
    let docs = crate::yaml::parse_documents(text).map_err(|e| e.to_string())?;
    let mut root = match docs.into_iter().find(|d| !d.is_null()) {
        Some(Value::Object(m)) => m,
        None => Map::new(),
        Some(_) => return Err("the kustomization is not a mapping".to_owned()),
    };
    if let Some(image) = image {
        set_image(&mut root, image)?;
    }
    if let Some(repo) = repo {
        let annotations = root
            .entry("commonAnnotations")
            .or_insert_with(|| Value::Object(Map::new()));
        match annotations {
            Value::Object(m) => {
                m.insert(REPO_ANNOTATION.to_owned(), Value::String(repo.to_owned()));
            }
            Value::Null => {
                *annotations = Value::Object(Map::from_iter([(
                    REPO_ANNOTATION.to_owned(),
                    Value::String(repo.to_owned()),
                )]));
            }
            _ => return Err("commonAnnotations is not a mapping".to_owned()),
        }
    }
    Ok(crate::yaml::to_yaml_string(&Value::Object(root)))
}

/// Like kustomize's `edit set image`: update the entry with the same `name` (tag replaces a
/// digest and vice versa, `newName` is kept), or append a new one.
fn set_image(root: &mut Map<String, Value>, image: &ImageOverride) -> Result<(), String> {
    let images = root
        .entry("images")
        .or_insert_with(|| Value::Array(Vec::new()));
    if images.is_null() {
        *images = Value::Array(Vec::new());
    }
    let Value::Array(list) = images else {
        return Err("images is not a list".to_owned());
    };
    let (set, clear) = if image.is_digest() {
        ("digest", "newTag")
    } else {
        ("newTag", "digest")
    };
    if let Some(Value::Object(entry)) = list
        .iter_mut()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(image.name.as_str()))
    {
        entry.insert(set.to_owned(), Value::String(image.tag.clone()));
        entry.remove(clear);
    } else {
        list.push(Value::Object(Map::from_iter([
            ("name".to_owned(), Value::String(image.name.clone())),
            (set.to_owned(), Value::String(image.tag.clone())),
        ])));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn img(name: &str, tag: &str) -> ImageOverride {
        ImageOverride {
            name: name.into(),
            tag: tag.into(),
        }
    }

    fn parsed(text: &str) -> Value {
        crate::yaml::parse_documents(text)
            .expect("valid yaml")
            .remove(0)
    }

    #[test]
    fn adds_image_and_annotation() {
        let out = edit(
            "resources: [a.yaml]\n",
            Some(&img("nginx", "1.2.3")),
            Some("https://github.com/acme/app"),
        )
        .expect("edit");
        assert_eq!(
            parsed(&out),
            json!({
                "resources": ["a.yaml"],
                "images": [{"name": "nginx", "newTag": "1.2.3"}],
                "commonAnnotations": {"github.com/url": "https://github.com/acme/app"}
            })
        );
    }

    #[test]
    fn updates_existing_image_keeping_new_name() {
        let text = "images:\n- name: nginx\n  newName: reg/nginx\n  digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\ncommonAnnotations:\n  team: a\n";
        let out = edit(text, Some(&img("nginx", "on")), Some("r")).expect("edit");
        assert_eq!(
            parsed(&out),
            json!({
                "images": [{"name": "nginx", "newName": "reg/nginx", "newTag": "on"}],
                "commonAnnotations": {"team": "a", "github.com/url": "r"}
            })
        );
    }

    #[test]
    fn rejects_non_mapping() {
        assert!(edit("- a\n", Some(&img("a", "1")), None).is_err());
        assert!(edit("images: 3\n", Some(&img("a", "1")), None).is_err());
    }
}
