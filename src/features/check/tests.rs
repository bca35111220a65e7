//! `check` against an in-memory source: what is reported where, and that no value leaks.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::*;
use crate::secrets::{KvMetadata, SecretData};

const VALUE: &str = "s3cr3t-unit";

/// `kv/data/app` (versions 1 deleted, 2 live), `kv/data/locked` (metadata denied, data
/// readable), `kv/data/closed` (denied), KV v1 `old/app`.
struct Fake;

#[async_trait]
impl SecretSource for Fake {
    async fn read(&self, req: &SecretRequest) -> Result<SecretData, ReadError> {
        let mut m = Map::new();
        m.insert("password".into(), Value::String(VALUE.into()));
        match req.path.as_str() {
            "kv/data/app" | "kv/data/locked" | "old/app" => Ok(SecretData::new(m)),
            "kv/data/closed" => Err(ReadError::PermissionDenied(req.path.clone())),
            _ => Err(ReadError::NotFound(req.clone())),
        }
    }

    async fn metadata(&self, req: &SecretRequest) -> Result<Option<KvMetadata>, ReadError> {
        match req.path.as_str() {
            "kv/data/app" => Ok(Some(KvMetadata {
                current_version: 2,
                live_versions: vec![2],
            })),
            "kv/data/locked" | "kv/data/closed" => {
                Err(ReadError::PermissionDenied(req.path.clone()))
            }
            _ if req.kv_version == KvVersion::V1 => Ok(None),
            _ => Err(ReadError::NotFound(req.clone())),
        }
    }

    async fn capabilities(&self, path: &str) -> Result<Option<Vec<String>>, ReadError> {
        let caps: HashMap<&str, &str> = [("kv/data/locked", "read"), ("kv/data/closed", "deny")]
            .into_iter()
            .collect();
        Ok(Some(vec![caps.get(path).unwrap_or(&"deny").to_string()]))
    }
}

fn docs() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {
            "ok": "<path:kv/data/app#password>",
            "typo": "<path:kv/data/app#pasword>",
            "old": "<path:kv/data/app#password#1>",
            "gone": "<path:kv/data/nope#password>",
            "locked": "<path:kv/data/locked#password>",
            "closed": "<path:kv/data/closed#password>",
            "nokey": "<path:kv/data/app>",
        }}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "v1",
               "annotations": {"avp.kubernetes.io/kv-version": "1"}},
               "stringData": {"v1": "<path:old/app#password>"}}),
        json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {
            "x": "<path:kv/data/app#password>", "html": "<b>hi</b>"
        }}),
    ]
}

async fn run(read_keys: bool, policy: &Policy) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = CheckOptions {
        repo: dir.path(),
        app_path: ".",
        project: "default",
        policy,
        engine: &Options::default(),
        source: Some(Arc::new(Fake)),
        read_keys,
        concurrency: 4,
    };
    check(&docs(), &opts).await.expect("check")
}

fn rules_for(report: &Report, needle: &str) -> Vec<&'static str> {
    let mut r: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.message.contains(needle) && f.rule != Rule::Placeholder)
        .map(|f| f.rule.id())
        .collect();
    r.sort_unstable();
    r.dedup();
    r
}

#[tokio::test]
async fn metadata_only() {
    let report = run(false, &Policy::default()).await;
    assert_eq!(report.placeholders, 8);
    assert_eq!(rules_for(&report, "kv/data/nope"), ["path-missing"]);
    assert_eq!(
        rules_for(&report, "version 1 of kv/data/app"),
        ["path-missing"]
    );
    assert_eq!(rules_for(&report, "kv/data/locked"), ["unverified"]);
    assert_eq!(rules_for(&report, "kv/data/closed"), ["permission-denied"]);
    assert_eq!(rules_for(&report, "old/app: KV v1"), ["unverified"]);
    assert!(
        rules_for(&report, "pasword").is_empty(),
        "keys need --read-keys"
    );
    assert_eq!(
        rules_for(&report, "<path:kv/data/app>"),
        ["not-a-placeholder"]
    );
    let leaks: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == Rule::Leak)
        .collect();
    assert_eq!(leaks.len(), 1);
    assert_eq!(leaks[0].level, Level::Warning);
    assert_eq!(leaks[0].location.object, "ConfigMap/c");
    assert!(!format!("{:?}", report.findings).contains(VALUE));
}

#[tokio::test]
async fn read_keys_and_policy() {
    let report = run(true, &Policy::default()).await;
    assert_eq!(rules_for(&report, "\"pasword\""), ["key-missing"]);
    assert!(rules_for(&report, "kv/data/locked").is_empty(), "readable");
    assert!(rules_for(&report, "old/app").is_empty(), "v1 read");
    assert!(!format!("{:?}", report.findings).contains(VALUE));

    let policy = Policy::new(&["kv/data/app".into()], LeakMode::Deny, &[]).expect("policy");
    let report = run(false, &policy).await;
    assert_eq!(rules_for(&report, "kv/data/closed"), ["path-denied"]);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.rule == Rule::Leak && f.level == Level::Error)
    );
}

#[test]
fn no_source_is_an_error_only_when_needed() {
    let engine = Options::default();
    assert!(require_source(&docs(), &engine, None).is_err());
    assert!(require_source(&[json!({"kind": "ConfigMap"})], &engine, None).is_ok());
}
