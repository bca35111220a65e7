use super::*;

/// A gzip'd tar of `files` (path, content); a content starting with `->` is a symlink target.
fn tgz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        if let Some(target) = content.strip_prefix("->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, path, target).expect("link");
        } else {
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, content.as_bytes())
                .expect("append");
        }
    }
    b.into_inner().expect("tar").finish().expect("gz")
}

fn run(files: &[(&str, &str)], app: &str, accept: Accept) -> Outcome {
    run_with(files, app, accept, &[], &ScanLimits::default())
}

fn run_with(
    files: &[(&str, &str)],
    app: &str,
    accept: Accept,
    extra: &[&str],
    limits: &ScanLimits,
) -> Outcome {
    let req = ScanRequest {
        app_rel_path: app.to_owned(),
        accept,
        markers: true,
        extra: extra.iter().map(|s| s.to_string()).collect(),
    };
    scan(&tgz(files)[..], &req, limits)
}

const K: &str = "resources: [cm.yaml]\n";
const PLAIN: &str = "kind: ConfigMap\ndata: {a: b}\n";
const INLINE: &str = "kind: Secret\nstringData: {a: <path:kv/data/x#a>}\n";
const ANNOTATED: &str =
    "kind: Secret\nmetadata:\n  annotations:\n    avp.kubernetes.io/path: kv/data/x\n";

#[test]
fn plain_and_marked_apps() {
    let plain = [("app/kustomization.yaml", K), ("app/cm.yaml", PLAIN)];
    assert_eq!(run(&plain, "app", Accept::Kustomize), Outcome::Plain);
    let inline = [("app/cm.yaml", INLINE), ("app/kustomization.yaml", K)];
    assert_eq!(
        run(&inline, "app", Accept::Kustomize),
        Outcome::Placeholders
    );
    let annotated = [("app/kustomization.yaml", K), ("app/sub/s.yaml", ANNOTATED)];
    assert_eq!(run(&annotated, "app", Accept::Auto), Outcome::Placeholders);
    assert_eq!(run(&annotated, "app", Accept::Helm), Outcome::NoApp);
    assert_eq!(run(&plain, "other", Accept::Auto), Outcome::NoApp);
    assert_eq!(run(&plain, "../app", Accept::Auto), Outcome::NoApp);
}

#[test]
fn markers_outside_the_scope_do_not_count() {
    let files = [
        ("app/kustomization.yaml", K),
        ("app/cm.yaml", PLAIN),
        ("other/s.yaml", INLINE),
        ("apple/s.yaml", INLINE),
    ];
    assert_eq!(run(&files, "app", Accept::Kustomize), Outcome::Plain);
}

#[test]
fn references_reach_bases_and_components_in_any_order() {
    let base_first = [
        (
            "base/kustomization.yaml",
            "resources: [s.yaml]\ncomponents: [\"../components/c\"]\n",
        ),
        ("base/s.yaml", PLAIN),
        ("components/c/kustomization.yaml", "kind: Component\n"),
        ("components/c/p.yaml", ANNOTATED),
        (
            "overlays/prod/kustomization.yaml",
            "resources:\n- ../../base\n",
        ),
    ];
    assert_eq!(
        run(&base_first, "overlays/prod", Accept::Kustomize),
        Outcome::Placeholders,
        "overlay → base → component"
    );
    let direct = [
        (
            "overlays/prod/kustomization.yaml",
            "resources:\n  - ../../base\n",
        ),
        ("base/s.yaml", INLINE),
    ];
    assert_eq!(
        run(&direct, "overlays/prod", Accept::Kustomize),
        Outcome::Placeholders
    );
    let generator = [
        (
            "app/kustomization.yaml",
            "configMapGenerator:\n- name: x\n  files: [key=../shared/f.txt]\n",
        ),
        ("shared/f.txt", "<path:kv/data/x#k>"),
        ("shared/g.txt", "unrelated"),
    ];
    assert_eq!(
        run(&generator, "app", Accept::Kustomize),
        Outcome::Placeholders
    );
    let unreferenced = [
        ("app/kustomization.yaml", "resources: [../shared/f.txt]\n"),
        ("shared/f.txt", PLAIN),
        ("shared/g.txt", INLINE),
    ];
    assert_eq!(run(&unreferenced, "app", Accept::Kustomize), Outcome::Plain);
}

#[test]
fn symlinks_and_value_files_extend_the_scope() {
    let linked = [
        ("app/kustomization.yaml", K),
        ("app/cm.yaml", "->../shared/cm.yaml"),
        ("shared/cm.yaml", INLINE),
    ];
    assert_eq!(
        run(&linked, "app", Accept::Kustomize),
        Outcome::Placeholders
    );
    let chart = [
        ("chart/Chart.yaml", "name: c\n"),
        ("chart/values.yaml", PLAIN),
        ("values/prod.yaml", INLINE),
    ];
    assert_eq!(run(&chart, "chart", Accept::Helm), Outcome::Plain);
    assert_eq!(
        run_with(
            &chart,
            "chart",
            Accept::Helm,
            &["../values/prod.yaml"],
            &ScanLimits::default()
        ),
        Outcome::Placeholders
    );
}

#[test]
fn markers_split_across_reads_and_binaries() {
    let mut long = "x".repeat(READ_CHUNK - 3);
    long.push_str("<path:kv/data/x#k>");
    let files = [
        ("app/Chart.yaml", "name: c\n"),
        ("app/values.yaml", long.as_str()),
    ];
    assert_eq!(run(&files, "app", Accept::Helm), Outcome::Placeholders);
    let binary = [
        ("app/Chart.yaml", "name: c\n"),
        ("app/logo.png", "\0PNG<path:x>"),
    ];
    assert_eq!(run(&binary, "app", Accept::Helm), Outcome::Plain);
}

#[test]
fn caps_make_the_outcome_unknown_unless_a_marker_was_seen() {
    let limits = ScanLimits {
        max_file_bytes: 16,
        ..ScanLimits::default()
    };
    let long = [("app/Chart.yaml", "name: c\n"), ("app/values.yaml", PLAIN)];
    assert!(matches!(
        run_with(&long, "app", Accept::Helm, &[], &limits),
        Outcome::Unknown(_)
    ));
    let early = [
        ("app/Chart.yaml", "name: c\n"),
        ("app/values.yaml", "<path:kv/x#k> and more text"),
    ];
    assert_eq!(
        run_with(&early, "app", Accept::Helm, &[], &limits),
        Outcome::Placeholders
    );
    let entries = ScanLimits {
        max_entries: 1,
        ..ScanLimits::default()
    };
    assert!(matches!(
        run_with(&long, "app", Accept::Helm, &[], &entries),
        Outcome::Unknown(_)
    ));
    let req = ScanRequest {
        app_rel_path: "app".into(),
        accept: Accept::Helm,
        markers: true,
        extra: vec![],
    };
    assert!(matches!(
        scan(&b"not a gzip stream"[..], &req, &ScanLimits::default()),
        Outcome::Unknown(_)
    ));
}

#[test]
fn without_markers_only_the_app_file_decides() {
    let req = ScanRequest {
        app_rel_path: "app".into(),
        accept: Accept::Kustomize,
        markers: false,
        extra: vec![],
    };
    let plain = tgz(&[("app/kustomization.yaml", K)]);
    assert_eq!(
        scan(&plain[..], &req, &ScanLimits::default()),
        Outcome::Plain
    );
    let none = tgz(&[("app/cm.yaml", INLINE)]);
    assert_eq!(
        scan(&none[..], &req, &ScanLimits::default()),
        Outcome::NoApp
    );
}

#[test]
fn plain_directories_are_claimed_only_without_a_tool_app() {
    let placeholder = "kind: Secret\nstringData:\n  pw: <path:kv/data/a#pw>\n";
    assert_eq!(
        run(&[("app/sub/s.yaml", placeholder)], "app", Accept::Directory),
        Outcome::Placeholders
    );
    assert_eq!(
        run(
            &[("app/cm.yaml", "kind: ConfigMap\n")],
            "app",
            Accept::Directory
        ),
        Outcome::Plain
    );
    // A kustomization or chart, even after the placeholder: theirs, not a plain directory's.
    for tool_file in ["app/kustomization.yaml", "app/Chart.yaml"] {
        assert_eq!(
            run(
                &[("app/s.yaml", placeholder), (tool_file, "x: 1\n")],
                "app",
                Accept::Directory
            ),
            Outcome::NoApp,
            "{tool_file}"
        );
    }
    assert_eq!(
        run(
            &[("app/README.md", "<path:kv/data/a#pw>")],
            "app",
            Accept::Directory
        ),
        Outcome::NoApp,
        "no manifest file"
    );
}

#[test]
fn a_reused_index_answers_like_a_fresh_pass() {
    let files = [
        ("plain/kustomization.yaml", K),
        ("plain/cm.yaml", PLAIN),
        ("base/kustomization.yaml", K),
        ("base/s.yaml", INLINE),
        ("overlay/kustomization.yaml", "resources: [../base]\n"),
        ("chart/Chart.yaml", "name: c\n"),
        ("chart/values.yaml", ANNOTATED),
        ("dir/sub/s.yaml", INLINE),
    ];
    let archive = tgz(&files);
    let index = Index::build(&archive[..], true, &ScanLimits::default());
    assert!(index.complete());
    for app in ["plain", "base", "overlay", "chart", "dir", "", "missing"] {
        for accept in [
            Accept::Kustomize,
            Accept::Helm,
            Accept::Auto,
            Accept::Directory,
        ] {
            let req = ScanRequest {
                app_rel_path: app.to_owned(),
                accept,
                markers: true,
                extra: vec![],
            };
            assert_eq!(
                index.evaluate(&req),
                run(&files, app, accept),
                "{app} {accept:?}"
            );
        }
    }
    assert_eq!(
        index.evaluate(&ScanRequest {
            app_rel_path: "overlay".into(),
            accept: Accept::Kustomize,
            markers: true,
            extra: vec![],
        }),
        Outcome::Placeholders
    );
}

#[test]
fn the_index_cache_keeps_complete_indexes_within_its_bounds() {
    let limits = ScanLimits::default();
    let index = |files: &[(&str, &str)]| Arc::new(Index::build(&tgz(files)[..], true, &limits));
    let cache = IndexCache::new(2, 1 << 20);
    cache.insert("A", index(&[("a/kustomization.yaml", K)]));
    cache.insert("b", index(&[("b/kustomization.yaml", K)]));
    assert!(
        cache.get("a", true).is_some(),
        "checksums compare case-blind"
    );
    assert!(
        cache.get("a", false).is_none(),
        "an index knows whether it searched"
    );
    cache.insert("c", index(&[("c/kustomization.yaml", K)]));
    assert!(
        cache.get("b", true).is_none(),
        "least recently used evicted"
    );
    assert!(cache.get("a", true).is_some() && cache.get("c", true).is_some());

    let cut = Arc::new(Index::build(&b"not a gzip stream"[..], true, &limits));
    assert!(!cut.complete());
    cache.insert("d", cut);
    assert!(
        cache.get("d", true).is_none(),
        "a partial index is not kept"
    );

    let small = IndexCache::new(8, 10);
    small.insert("e", index(&[("e/kustomization.yaml", K)]));
    assert!(small.get("e", true).is_none(), "larger than the byte bound");
}
