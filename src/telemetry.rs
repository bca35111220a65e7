//! Logging setup. Argo's own sidecar reads `ARGOCD_CMP_SERVER_LOGLEVEL` (default info) and
//! `ARGOCD_CMP_SERVER_LOGFORMAT` (default json); we honour the same names, and `RUST_LOG`
//! when set for finer filters. Logs go to stderr; secret values are never logged anywhere.
//!
//! The JSON format is shaped like Argo CD's own (logrus): one flat object per line with `time`
//! (RFC 3339, UTC), `level` (`debug`, `info`, `warning`, `error`), `msg`, then the fields of
//! the request's span (`rpc`, `id`, `plugin`, `app`, `project`) and of the event, so a request's
//! lines, success or failure, carry the same fields and sit beside the repo-server's in one log
//! query.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

pub const LOG_LEVEL_ENV: &str = "ARGOCD_CMP_SERVER_LOGLEVEL";
pub const LOG_FORMAT_ENV: &str = "ARGOCD_CMP_SERVER_LOGFORMAT";

/// Installs the global subscriber. `default_format` and `default_level` apply when the env
/// names none: the server logs `info` as JSON; CLI commands log only warnings, as text, so
/// their output is what they print.
pub fn init(default_format: &str, default_level: &str) {
    let level = std::env::var(LOG_LEVEL_ENV).unwrap_or_else(|_| default_level.to_owned());
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
        .with_writer(std::io::stderr);
    if format.eq_ignore_ascii_case("json") {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(ArgoJson)
            .init();
    } else {
        let color = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        builder.with_ansi(color).init();
    }
}

/// Argo CD's log shape (see the module docs).
struct ArgoJson;

impl<S, N> FormatEvent<S, N> for ArgoJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert("time".into(), Value::String(rfc3339_now()));
        line.insert(
            "level".into(),
            Value::String(level_name(*event.metadata().level()).into()),
        );
        line.insert("msg".into(), Value::String(String::new()));
        // Span fields, outermost first (recorded as JSON by `JsonFields`), then the event's.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str(fields.fields.as_str())
                {
                    line.extend(map);
                }
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// logrus' names, which Argo CD's logs use (`warning`, not `warn`).
fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

/// An event's fields as JSON values; `message` becomes `msg`.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
        self.0.insert(name.to_owned(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

/// Now as `2026-12-06T09:43:08.123Z`.
fn rfc3339_now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_millis())
}

/// Seconds since the epoch (UTC) as RFC 3339, from the civil-from-days algorithm.
fn rfc3339(secs: u64, millis: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Days since 0000-03-01, shifted so leap days end each 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_796_550_188, 123), "2026-12-06T09:43:08.123Z");
    }

    #[test]
    fn lines_are_flat_with_argo_names() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(ArgoJson)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "rpc",
                rpc = "GenerateManifest",
                id = 7u64,
                app = tracing::field::Empty
            );
            let _enter = span.enter();
            span.record("app", "web");
            tracing::warn!(code = "Unknown", ms = 12u64, "failed");
        });
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf-8");
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["level"], "warning");
        assert_eq!(line["msg"], "failed");
        assert_eq!(line["rpc"], "GenerateManifest");
        assert_eq!(line["id"], 7);
        assert_eq!(line["app"], "web");
        assert_eq!(line["code"], "Unknown");
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(line.get("span").is_none() && line.get("fields").is_none());
    }
}
