//! The gRPC side: one tonic server per plugin socket, request handling, deadlines, graceful
//! shutdown. Owns the protobuf-facing edge; rendering and substitution are `pipeline`'s.

mod ahead;
pub(crate) mod deadline;
pub mod http;
mod service;
pub mod socket;
pub(crate) mod status;

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::config::Settings;
use crate::pipeline::plugin::Plugin;
use crate::pipeline::{Pipeline, PipelineError};
use crate::protocol::pb::config_management_plugin_service_server::ConfigManagementPluginServiceServer;
use crate::protocol::stream::StreamError;
use crate::protocol::unpack::UnpackError;
pub use service::CmpService;

/// Why one request failed. Mapped to a gRPC status only in `status.rs`.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The shared tree of the archive could not be made.
    #[error(transparent)]
    Tree(#[from] crate::protocol::trees::TreeError),
    /// `appRelPath` leaves the work dir or does not name a directory in the archive.
    #[error("illegal appPath: {0}")]
    AppPath(String),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The request's deadline passed.
    #[error("context deadline exceeded")]
    Deadline,
    /// More requests in flight than the operator allows; refused before anything is written.
    #[error("too many concurrent requests (limit {limit}, --max-concurrent-requests); retry later")]
    Busy { limit: usize },
    /// The request's work dir could not be created or resolved (a full disk, permissions).
    #[error("work dir {path}: {source}")]
    WorkDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task of ours (unpack, discovery scan) panicked or was cancelled.
    #[error("internal error: {task} task: {source}")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The admission limit was closed: the server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The checkout of a render-cache hit was asked for (there is none): a bug of ours.
    #[error("internal error: no app dir on a cache hit")]
    NoCheckout,
}

/// State shared by every request on every socket.
pub struct Shared {
    pub settings: Settings,
    pub pipeline: Pipeline,
    pub render_cache: crate::pipeline::cache::RenderCache,
    /// Extracted repositories by archive checksum, shared read-only by requests.
    pub trees: crate::protocol::trees::TreeCache,
    /// Identifies the installed tools in render-cache keys.
    pub tool_fingerprint: String,
    /// What MatchRepository learned of recent archives, by checksum (`discovery::archive`).
    pub(crate) scan_indexes: crate::pipeline::discovery::archive::IndexCache,
    /// Renders a MatchRepository started for the GenerateManifest that follows it.
    ahead: ahead::Ahead,
}

/// Archive indexes kept for MatchRepository: a monorepo's apps at one commit need one pass.
const SCAN_INDEX_ENTRIES: usize = 32;
/// Their bound in bytes of paths held (an index holds the repository's app and marker paths).
const SCAN_INDEX_BYTES: usize = 32 << 20;

impl Shared {
    pub fn new(
        settings: Settings,
        pipeline: Pipeline,
        render_cache: crate::pipeline::cache::RenderCache,
        trees: crate::protocol::trees::TreeCache,
        tool_fingerprint: String,
    ) -> Self {
        Self {
            settings,
            pipeline,
            render_cache,
            trees,
            tool_fingerprint,
            scan_indexes: crate::pipeline::discovery::archive::IndexCache::new(
                SCAN_INDEX_ENTRIES,
                SCAN_INDEX_BYTES,
            ),
            ahead: ahead::Ahead::default(),
        }
    }
}

/// Serves `plugin` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: UnixListener,
    plugin: Plugin,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max = shared.settings.max_message_bytes;
    let svc = ConfigManagementPluginServiceServer::new(CmpService::new(plugin, shared))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ConfigManagementPluginServiceServer<CmpService>>()
        .await;
    Server::builder()
        .add_service(health)
        .add_service(svc)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}
