//! The stage between render and respond: collect the secret reads the documents need, read
//! each unique one once (concurrently, capped), then apply. Owns the async glue around the pure
//! `substitute` engine; knows no Vault details (those are behind `SecretSource`).

use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::context::RequestEnv;
use crate::secrets::{Fetched, SecretSource};
use crate::substitute::{self, Options, SubstituteError};

/// Independent reads in flight at once for one render.
pub const DEFAULT_READ_CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Substitute(#[from] SubstituteError),
    /// The documents need secrets but no backend is configured.
    #[error(
        "the manifests contain {count} vault placeholder(s) (first: {first}) but no secret backend is configured (set AVP_TYPE=vault and VAULT_ADDR)"
    )]
    NoSource { count: usize, first: String },
    /// The deadline passed while reading secrets.
    #[error("deadline exceeded while reading {pending} secret(s) from vault")]
    Deadline { pending: usize },
}

/// Shared substitution state: where secrets come from, and the engine's options.
#[derive(Clone, Default)]
pub struct Substituter {
    pub source: Option<Arc<dyn SecretSource>>,
    pub options: Options,
    pub concurrency: usize,
}

impl std::fmt::Debug for Substituter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substituter")
            .field("source", &self.source.as_ref().map(|_| "configured"))
            .field("options", &self.options)
            .finish()
    }
}

impl Substituter {
    pub async fn run(
        &self,
        documents: Vec<Value>,
        _env: &RequestEnv,
        deadline: Option<Instant>,
    ) -> Result<Vec<Value>, StageError> {
        let requests = substitute::collect(&documents, &self.options)?;
        let mut fetched = Fetched::new();
        if let Some(first) = requests.iter().next() {
            let Some(source) = &self.source else {
                return Err(StageError::NoSource {
                    count: requests.len(),
                    first: first.to_string(),
                });
            };
            let total = requests.len();
            let reads = futures::stream::iter(requests)
                .map(|req| {
                    let source = source.clone();
                    async move {
                        let result = source.read(&req).await;
                        (req, result)
                    }
                })
                .buffer_unordered(self.concurrency.max(1));
            let collect_all = reads.for_each(|(req, result)| {
                fetched.insert(req, result);
                std::future::ready(())
            });
            let finished = match deadline {
                Some(d) => tokio::time::timeout_at(d, collect_all).await.is_ok(),
                None => {
                    collect_all.await;
                    true
                }
            };
            if !finished {
                return Err(StageError::Deadline {
                    pending: total - fetched.len(),
                });
            }
        }
        Ok(substitute::apply(documents, &self.options, &fetched)?)
    }
}
