//! Logging setup. Argo's own sidecar reads `ARGOCD_CMP_SERVER_LOGLEVEL` (default info) and
//! `ARGOCD_CMP_SERVER_LOGFORMAT` (default json); we honour the same names, and `RUST_LOG`
//! when set for finer filters. Logs go to stderr; secret values are never logged anywhere.

use tracing_subscriber::EnvFilter;

pub const LOG_LEVEL_ENV: &str = "ARGOCD_CMP_SERVER_LOGLEVEL";
pub const LOG_FORMAT_ENV: &str = "ARGOCD_CMP_SERVER_LOGFORMAT";

/// Installs the global subscriber. `default_format` applies when the env names none.
pub fn init(default_format: &str) {
    let level = std::env::var(LOG_LEVEL_ENV).unwrap_or_else(|_| "info".to_owned());
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        // vaultrs and rustify log every failed Vault call at ERROR; our own error says it once.
        .or_else(|| {
            EnvFilter::try_new(format!(
                "{},vaultrs=warn,rustify=warn",
                level.to_lowercase()
            ))
            .ok()
        })
        .unwrap_or_else(|| EnvFilter::new("info"));
    let format = std::env::var(LOG_FORMAT_ENV).unwrap_or_else(|_| default_format.to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format.eq_ignore_ascii_case("json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
