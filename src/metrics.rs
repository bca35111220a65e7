//! Process-wide counters: what the server did, for the `/metrics` endpoint (Prometheus text)
//! and a periodic log line. Counters only, no labels carrying request data, never values.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counter names and help texts, in exposition order.
macro_rules! counters {
    ($($field:ident : $help:literal),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Metrics { $(pub $field: AtomicU64,)* }

        impl Metrics {
            pub const fn new() -> Self {
                Self { $($field: AtomicU64::new(0),)* }
            }

            /// Prometheus text exposition format.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let name = concat!("avp_sidecar_", stringify!($field));
                    let _ = writeln!(out, "# HELP {name} {}", $help);
                    let _ = writeln!(out, "# TYPE {name} counter");
                    let _ = writeln!(out, "{name} {}", self.$field.load(Ordering::Relaxed));
                )*
                out
            }

            /// One line for logs: `name=value ...`.
            pub fn summary(&self) -> String {
                let mut parts = Vec::new();
                $( parts.push(format!("{}={}", stringify!($field), self.$field.load(Ordering::Relaxed))); )*
                parts.join(" ")
            }
        }
    };
}

counters! {
    requests_total: "CMP RPCs received",
    requests_failed_total: "CMP RPCs answered with an error",
    vault_logins_total: "Vault logins",
    vault_renewals_total: "Vault token renewals",
    vault_reads_total: "secret reads sent to Vault",
    secret_cache_hits_total: "secret reads answered from the cache",
    secret_cache_misses_total: "secret reads that went to Vault",
    secret_cache_coalesced_total: "secret reads that joined an in-flight read",
    secret_cache_evictions_total: "secret cache entries evicted for size",
    render_cache_hits_total: "renders answered from the render cache",
    render_cache_misses_total: "renders that ran a tool",
    tool_runs_total: "kustomize/helm runs",
    tool_milliseconds_total: "time spent in kustomize/helm",
    tool_queue_milliseconds_total: "time renders waited for a tool slot",
}

/// The process's counters.
pub static METRICS: Metrics = Metrics::new();

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let m = Metrics::new();
        inc(&m.vault_logins_total);
        add(&m.tool_milliseconds_total, 42);
        let text = m.render();
        assert!(text.contains(
            "# TYPE avp_sidecar_vault_logins_total counter\navp_sidecar_vault_logins_total 1\n"
        ));
        assert!(text.contains("avp_sidecar_tool_milliseconds_total 42\n"));
        assert!(m.summary().contains("vault_logins_total=1"));
    }
}
