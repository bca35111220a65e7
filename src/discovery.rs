//! Decides how an app directory is rendered, from the files it holds. Reads the file system
//! only; never spawns anything.

use std::path::{Path, PathBuf};

/// File names kustomize itself accepts, in its order of preference.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];
pub const CHART_FILE: &str = "Chart.yaml";

/// How an app is rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppKind {
    /// `kustomize build`, with the kustomization file found.
    Kustomize { kustomization: PathBuf },
    /// `helm template` of the chart in the app dir.
    Helm,
}

impl AppKind {
    pub fn name(&self) -> &'static str {
        match self {
            AppKind::Kustomize { .. } => "kustomize",
            AppKind::Helm => "helm",
        }
    }
}

/// Which kinds a plugin accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accept {
    Kustomize,
    Helm,
    Auto,
}

/// Kustomize wins over Helm when both files exist (a kustomization that inflates its own chart).
pub fn detect(app_dir: &Path, accept: Accept) -> Option<AppKind> {
    // Symlinks count: extraction already proved they stay inside the work dir.
    let is_file = |p: &Path| p.is_file();
    if matches!(accept, Accept::Kustomize | Accept::Auto) {
        for name in KUSTOMIZATION_FILES {
            let p = app_dir.join(name);
            if is_file(&p) {
                return Some(AppKind::Kustomize { kustomization: p });
            }
        }
    }
    if matches!(accept, Accept::Helm | Accept::Auto) && is_file(&app_dir.join(CHART_FILE)) {
        return Some(AppKind::Helm);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(detect(dir.path(), Accept::Auto), None);
        std::fs::write(dir.path().join("Chart.yaml"), "name: x").expect("write");
        assert_eq!(detect(dir.path(), Accept::Auto), Some(AppKind::Helm));
        assert_eq!(detect(dir.path(), Accept::Kustomize), None);
        std::fs::write(dir.path().join("Kustomization"), "").expect("write");
        assert!(matches!(
            detect(dir.path(), Accept::Auto),
            Some(AppKind::Kustomize { .. })
        ));
        assert_eq!(detect(dir.path(), Accept::Helm), Some(AppKind::Helm));
        std::fs::create_dir(dir.path().join("kustomization.yaml")).expect("mkdir");
        let Some(AppKind::Kustomize { kustomization }) = detect(dir.path(), Accept::Auto) else {
            panic!("expected kustomize");
        };
        assert!(
            kustomization.ends_with("Kustomization"),
            "a directory is not a kustomization"
        );
    }
}
