//! Wire types generated from `proto/`.
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("plugin");
}
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod repository {
    tonic::include_proto!("repository");
}

pub mod client;
pub mod janitor;
pub(crate) mod spool;
pub(crate) mod stream;
pub mod trees;
pub mod unpack;
pub mod workdir;
