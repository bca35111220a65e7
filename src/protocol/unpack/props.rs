//! Property tests of archive extraction: hostile archives (climbing and absolute names, long and
//! deep paths, duplicates, links to anywhere, devices, truncated gzip) never panic, never change
//! anything outside the destination, leave no symlink that resolves outside it, and respect the
//! entry and byte caps.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;
use tar::{EntryType, Header};

use super::*;

#[derive(Clone, Debug)]
struct Entry {
    name: Vec<u8>,
    kind: EntryType,
    link: Vec<u8>,
    mode: u32,
    data: Vec<u8>,
}

/// Name components: ordinary, climbing, current-dir, and one long one.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(&["a", "a", "b", "d.txt", "..", ".", "sibling"][..]).prop_map(str::to_owned),
        1 => "[a-z]{40,120}",
    ]
}

/// Entry names: maybe absolute or `./`-prefixed, 1–6 components (sometimes 140), maybe a
/// trailing slash.
fn entry_name() -> impl Strategy<Value = Vec<u8>> {
    let components = prop_oneof![
        20 => prop::collection::vec(component(), 1..4),
        4 => prop::collection::vec(component(), 4..8),
        1 => Just(vec!["a".to_owned(); 140]),
    ];
    (
        prop::sample::select(&["", "", "", "", "/", "./", "../"][..]),
        components,
        any::<bool>(),
    )
        .prop_map(|(prefix, parts, trailing)| {
            let mut name = format!("{prefix}{}", parts.join("/"));
            if trailing {
                name.push('/');
            }
            name.into_bytes()
        })
}

/// Link targets inside, outside, absolute, through other links.
fn link_target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::sample::select(&[".", "..", "../..", "../../.."][..]).prop_map(|s| s.as_bytes().to_vec()),
        2 => prop::sample::select(&[
            ".", "..", "../..", "../../..", "/", "/etc", "/etc/passwd", "a", "a/b", "../a",
            "../sibling", "../sibling/secret.txt", "b/../..", "a/../../x", "", "./c", "d.txt",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
        2 => entry_name(),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    let kind = prop::sample::select(vec![
        EntryType::Regular,
        EntryType::Regular,
        EntryType::Directory,
        EntryType::Directory,
        EntryType::Symlink,
        EntryType::Symlink,
        EntryType::Symlink,
        EntryType::Link,
        EntryType::Fifo,
        EntryType::Char,
        EntryType::Continuous,
    ]);
    (
        entry_name(),
        kind,
        link_target(),
        0u32..0o10000,
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(name, kind, link, mode, data)| {
            let data = if kind.is_file() || kind == EntryType::Continuous {
                data
            } else {
                Vec::new()
            };
            Entry {
                name,
                kind,
                link,
                mode,
                data,
            }
        })
}

/// Appends a GNU long-name (`L`) or long-link (`K`) record carrying `value`.
fn append_long(builder: &mut tar::Builder<Vec<u8>>, kind: EntryType, value: &[u8]) {
    let mut header = Header::new_gnu();
    let name = b"././@LongLink";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    let mut data = value.to_vec();
    data.push(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder
        .append(&header, data.as_slice())
        .expect("append to memory");
}

/// A gzip'd tar with the names written raw: the `tar` builder's own path checks would refuse
/// the hostile ones.
fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        if e.name.len() > 100 {
            append_long(&mut builder, EntryType::GNULongName, &e.name);
        }
        if e.link.len() > 100 {
            append_long(&mut builder, EntryType::GNULongLink, &e.link);
        }
        let mut header = Header::new_gnu();
        let n = e.name.len().min(100);
        header.as_old_mut().name[..n].copy_from_slice(&e.name[..n]);
        let l = e.link.len().min(100);
        if matches!(e.kind, EntryType::Symlink | EntryType::Link) {
            header.as_old_mut().linkname[..l].copy_from_slice(&e.link[..l]);
        }
        header.set_mode(e.mode);
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_cksum();
        builder
            .append(&header, e.data.as_slice())
            .expect("append to memory");
    }
    let tar = builder.into_inner().expect("finish tar");
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).expect("gzip to memory");
    gz.finish().expect("finish gzip")
}

/// Everything under `root` except the `skip` subtree: path → (kind, size or target, content).
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in fs::read_dir(&dir).expect("read_dir") {
            let path = item.expect("dir entry").path();
            if path == skip {
                continue;
            }
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let what = if meta.file_type().is_symlink() {
                format!("link {:?}", fs::read_link(&path).expect("read_link"))
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                format!("file {:?}", fs::read(&path).expect("read"))
            };
            out.insert(path, what);
        }
    }
    out
}

/// Lexically resolves `..` and `.` (after the real parent directory has been taken).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Symlinks under `dest` whose target resolves outside it, followed as far as the targets exist.
fn escaping_links(dest: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut bad = Vec::new();
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in fs::read_dir(&dir).expect("read_dir") {
            let path = item.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("read_link");
                let resolved = match fs::canonicalize(&path) {
                    Ok(real) => real,
                    // Dangling: resolve what exists of the link's own directory, then lexically.
                    Err(_) => lexical(&fs::canonicalize(&dir).expect("dir").join(&target)),
                };
                if !resolved.starts_with(dest) {
                    bad.push((path, target));
                }
            } else if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    bad
}

fn limits() -> impl Strategy<Value = UnpackLimits> {
    prop_oneof![
        1 => Just(UnpackLimits::default()),
        2 => (1u64..24, 0u64..3000, 8usize..400, 1usize..10).prop_map(|(e, b, p, d)| UnpackLimits {
            max_entries: e,
            max_extracted_bytes: b,
            max_path_bytes: p,
            max_path_depth: d,
        }),
    ]
}

/// Small names and targets only, so links through links (`a -> .`, then `a/a/L -> ../..`) are
/// common.
fn link_farm_entry() -> impl Strategy<Value = Entry> {
    let name = prop::collection::vec(prop::sample::select(&["a", "b", "L"][..]), 1..4)
        .prop_map(|parts| parts.join("/").into_bytes());
    let target = prop::sample::select(
        &[
            ".", "..", "../..", "../../..", "a", "b", "a/b", "L", "../L", "a/..", "b/L",
        ][..],
    )
    .prop_map(|s| s.as_bytes().to_vec());
    let kind = prop::sample::select(vec![
        EntryType::Symlink,
        EntryType::Symlink,
        EntryType::Symlink,
        EntryType::Directory,
        EntryType::Regular,
    ]);
    (name, kind, target).prop_map(|(name, kind, link)| Entry {
        name,
        kind,
        link,
        mode: 0o644,
        data: b"x".to_vec(),
    })
}

/// Unpacks `entries` into `<tmp>/dest` next to a `sibling` directory and the archive itself,
/// and checks everything the extraction promises.
fn check_unpack(
    entries: &[Entry],
    limits: UnpackLimits,
    preserve_file_mode: bool,
    damage: Option<(prop::sample::Index, bool)>,
) -> Result<(), TestCaseError> {
    let outer = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(outer.path()).expect("canonical tempdir");
    let dest = root.join("dest");
    fs::create_dir(&dest).expect("dest");
    fs::create_dir(root.join("sibling")).expect("sibling");
    fs::write(root.join("sibling/secret.txt"), "outside").expect("secret");
    let mut bytes = archive(entries);
    let damaged = damage.is_some();
    if let Some((at, truncate)) = damage {
        let i = at.index(bytes.len());
        if truncate {
            bytes.truncate(i)
        } else {
            bytes[i] ^= 0x55
        }
    }
    let archive_path = root.join("archive.tgz");
    fs::write(&archive_path, &bytes).expect("archive");

    let before = snapshot(&root, &dest);
    let opts = UnpackOptions {
        preserve_file_mode,
        limits,
    };
    let result = unpack(&archive_path, &dest, &opts);
    prop_assert_eq!(
        &snapshot(&root, &dest),
        &before,
        "outside changed: {:?}",
        result
    );
    let escaping = escaping_links(&dest);
    prop_assert!(
        escaping.is_empty(),
        "links leave the tree: {:?} ({:?})",
        escaping,
        result
    );

    let entry_count = entries.len() as u64;
    match &result {
        Ok(stats) => {
            prop_assert!(stats.entries <= limits.max_entries);
            prop_assert!(stats.bytes <= limits.max_extracted_bytes);
            if !damaged {
                prop_assert_eq!(stats.entries, entry_count);
            }
        }
        Err(UnpackError::TooManyEntries(max)) => {
            prop_assert_eq!(*max, limits.max_entries);
            prop_assert!(entry_count > limits.max_entries);
        }
        Err(UnpackError::TooLarge(max)) => {
            prop_assert_eq!(*max, limits.max_extracted_bytes);
            let data: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
            prop_assert!(data > limits.max_extracted_bytes);
        }
        Err(_) => {}
    }
    if entry_count > limits.max_entries {
        prop_assert!(
            result.is_err(),
            "{} entries passed a cap of {}",
            entry_count,
            limits.max_entries
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Hostile names, link targets, types, sizes and caps, sometimes a damaged stream.
    #[test]
    fn hostile_archives_stay_inside(
        entries in prop::collection::vec(entry(), 0..16),
        limits in limits(),
        preserve_file_mode in any::<bool>(),
        // Some archives are cut short or get a flipped byte.
        damage in prop::option::weighted(0.15, (any::<prop::sample::Index>(), any::<bool>())),
    ) {
        check_unpack(&entries, limits, preserve_file_mode, damage)?;
    }

}

proptest! {
    // Small cases: more of them, so links through links get combined often.
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Symlinks through symlinks, with default caps.
    #[test]
    fn symlink_chains_stay_inside(entries in prop::collection::vec(link_farm_entry(), 1..8)) {
        check_unpack(&entries, UnpackLimits::default(), false, None)?;
    }
}
