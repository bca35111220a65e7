//! Hand-made archives for hostile-input tests: entries the repo-server would never send.
//! (Well-formed repository archives come from `avp_sidecar::protocol::client`.)

use avp_sidecar::protocol::client::gzip;

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// One hand-made entry for hostile archives.
pub(crate) enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    /// A file whose name is written raw into the header (bypassing the tar crate's checks).
    RawFile(&'a [u8], &'a [u8]),
    Symlink(&'a str, &'a str),
    Fifo(&'a str),
    /// A file announced with PAX extended headers (long name).
    PaxFile(&'a str, &'a [u8]),
}

pub(crate) fn tgz_entries(entries: &[Entry]) -> Vec<u8> {
    gzip(&tar_entries(entries)).expect("gzip")
}

pub(crate) fn tar_entries(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::Dir(name) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, name, std::io::empty()).expect("dir");
            }
            Entry::File(name, data) => {
                let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                b.append_data(&mut h, name, *data).expect("file");
            }
            Entry::RawFile(name, data) => {
                let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                let raw = h.as_old_mut();
                raw.name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, *data).expect("raw file");
            }
            Entry::Symlink(name, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                h.set_link_name_literal(target).expect("link name");
                h.set_path(name).expect("path");
                h.set_cksum();
                b.append(&h, std::io::empty()).expect("symlink");
            }
            Entry::Fifo(name) => {
                let mut h = header(tar::EntryType::Fifo, 0o644, 0);
                b.append_data(&mut h, name, std::io::empty()).expect("fifo");
            }
            Entry::PaxFile(name, data) => {
                b.append_pax_extensions([("path", name.as_bytes())])
                    .expect("pax");
                let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                h.set_path("short-pax-placeholder").expect("path");
                h.set_cksum();
                b.append(&h, *data).expect("pax file");
            }
        }
    }
    b.into_inner().expect("tar")
}
