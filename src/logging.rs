//! The log backend: one JSON object per line for log pipelines, or a readable text line for
//! people.
//!
//! env_logger does the plumbing (per-crate level filter, one buffered write per line to stderr,
//! so lines from different threads never interleave); the line itself is `format_record`,
//! because the JSON shape is a promise to users (`level`, `msg`, the event's own fields as
//! top-level keys, `timestamp` in RFC 3339) and is easiest to keep exact when it is written
//! here. Event fields come from `log`'s key-value support:
//! `log::info!(cluster = c, new_count = n; "vulnerabilities detected")`. env_logger's own `kv`
//! feature only teaches its default format to print them, and that format is replaced.
//!
//! Only the agent's own records follow `KIJO_LOG_LEVEL`; see `library_level` for the
//! libraries.

use std::io::Write;

use log::kv::{self, VisitSource};
use log::{Level, LevelFilter, Record};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// Keys the JSON line owns; an event field with one of these names is prefixed so it cannot
/// overwrite them.
const RESERVED: [&str; 3] = ["level", "msg", "timestamp"];

/// Target prefix of the agent's own records (the library and the binary are `kijo_agent`).
const OWN_TARGET: &str = "kijo";

/// Libraries allowed to say more than warnings at `trace`, and how much. Their records carry
/// nothing secret at that level: rustls names the server and the protocol versions, never
/// application data. Every other library — above all ureq, whose debug and trace records hold
/// full request URLs (a Slack webhook URL is its credential) and hex dumps of requests with
/// their `Authorization` header, and the PostgreSQL driver, which logs statement parameters —
/// stays at warnings at every level: no log line may contain a secret.
const TRACE_LIBRARIES: [(&str, LevelFilter); 1] = [("rustls", LevelFilter::Debug)];

/// Installs the logger once; later calls keep the first settings (tests call it freely).
pub fn init(format: LogFormat, level: LevelFilter) {
    let _ = builder(format, level).try_init();
}

/// The configured env_logger builder. The environment (`RUST_LOG`) is deliberately not read:
/// `KIJO_LOG_LEVEL` is the one documented knob, and a stray `RUST_LOG=trace` must not open
/// the libraries' records.
fn builder(format: LogFormat, level: LevelFilter) -> env_logger::Builder {
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(library_level(level))
        .filter_module(OWN_TARGET, level)
        .target(env_logger::Target::Stderr)
        .write_style(env_logger::WriteStyle::Never)
        .format(move |out, record| {
            out.write_all(format_record(format, jiff::Timestamp::now(), record).as_bytes())
        });
    if level == LevelFilter::Trace {
        for (library, cap) in TRACE_LIBRARIES {
            builder.filter_module(library, cap);
        }
    }
    builder
}

/// Libraries (rustls, ureq, postgres) are chatty at debug level and may print connection
/// details and credentials; their records pass only up to warnings, and never beyond the
/// agent's own level.
fn library_level(level: LevelFilter) -> LevelFilter {
    level.min(LevelFilter::Warn)
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Renders one record as a complete line, newline included. Pure, so the shape is unit-tested.
fn format_record(format: LogFormat, now: jiff::Timestamp, record: &Record<'_>) -> String {
    let mut fields = FieldCollector(Vec::new());
    // A visitor that never fails: errors cannot occur here.
    let _ = record.key_values().visit(&mut fields);
    let timestamp = format!("{:.3}", now);
    match format {
        LogFormat::Json => {
            // Written by hand rather than through a serde_json::Map, which would sort the keys:
            // the order level, msg, fields, timestamp is the documented one.
            let mut line = String::with_capacity(128);
            line.push_str("{\"level\":");
            push_json(&mut line, &Value::from(level_name(record.level())));
            line.push_str(",\"msg\":");
            push_json(&mut line, &Value::from(record.args().to_string()));
            for (key, value) in fields.0 {
                let key = if RESERVED.contains(&key.as_str()) {
                    format!("field_{key}")
                } else {
                    key
                };
                line.push(',');
                push_json(&mut line, &Value::from(key));
                line.push(':');
                push_json(&mut line, &value);
            }
            line.push_str(",\"timestamp\":");
            push_json(&mut line, &Value::from(timestamp));
            line.push_str("}\n");
            line
        }
        LogFormat::Text => {
            let mut line = format!(
                "{timestamp} {:<5} {}",
                level_name(record.level()).to_ascii_uppercase(),
                record.args()
            );
            for (key, value) in fields.0 {
                match value {
                    Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=']) => {
                        line.push_str(&format!(" {key}={s}"))
                    }
                    other => line.push_str(&format!(" {key}={other}")),
                }
            }
            line.push('\n');
            line
        }
    }
}

fn push_json(out: &mut String, value: &Value) {
    out.push_str(&value.to_string());
}

/// Collects key-values as JSON values, keeping numbers and booleans typed so log pipelines can
/// aggregate `new_count` without parsing strings.
struct FieldCollector(Vec<(String, Value)>);

impl<'kvs> VisitSource<'kvs> for FieldCollector {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let json = if let Some(b) = value.to_bool() {
            Value::from(b)
        } else if let Some(n) = value.to_u64() {
            Value::from(n)
        } else if let Some(n) = value.to_i64() {
            Value::from(n)
        } else if let Some(f) = value.to_f64() {
            Value::from(f)
        } else {
            Value::from(value.to_string())
        };
        self.0.push((key.as_str().to_owned(), json));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(
        format: LogFormat,
        f: impl FnOnce(&mut dyn FnMut(&Record<'_>) -> String) -> String,
    ) -> String {
        let now: jiff::Timestamp = "2024-01-15T10:30:00Z".parse().unwrap();
        let mut fmt = |r: &Record<'_>| format_record(format, now, r);
        f(&mut fmt)
    }

    #[test]
    fn json_line_has_the_documented_shape() {
        let kvs: [(&str, kv::Value<'_>); 5] = [
            ("cluster", kv::Value::from("production-eu")),
            ("namespace", kv::Value::from("default")),
            ("new_count", kv::Value::from(3u64)),
            ("fixed_count", kv::Value::from(1u64)),
            ("msg", kv::Value::from("clash")),
        ];
        let line = render(LogFormat::Json, |fmt| {
            fmt(&Record::builder()
                .level(Level::Info)
                .args(format_args!("vulnerabilities detected"))
                .key_values(&kvs)
                .build())
        });
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["msg"], "vulnerabilities detected");
        assert_eq!(v["cluster"], "production-eu");
        assert_eq!(v["namespace"], "default");
        assert_eq!(v["new_count"], 3);
        assert_eq!(v["fixed_count"], 1);
        assert_eq!(v["field_msg"], "clash");
        assert_eq!(v["timestamp"], "2024-01-15T10:30:00.000Z");
        // Field order follows the original agent's example.
        let keys: Vec<&str> = line
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|k| ["level", "msg", "cluster", "timestamp"].contains(k))
            .collect();
        assert_eq!(keys[..2], ["level", "msg"]);
        assert_eq!(*keys.last().unwrap(), "timestamp");
    }

    #[test]
    fn json_escapes_messages() {
        let line = render(LogFormat::Json, |fmt| {
            fmt(&Record::builder()
                .level(Level::Error)
                .args(format_args!("quote \" and\nnewline"))
                .build())
        });
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "quote \" and\nnewline");
        assert_eq!(v["level"], "error");
    }

    #[test]
    fn text_line_is_readable() {
        let kvs: [(&str, kv::Value<'_>); 2] = [
            ("cluster", kv::Value::from("prod")),
            ("reason", kv::Value::from("two words")),
        ];
        let line = render(LogFormat::Text, |fmt| {
            fmt(&Record::builder()
                .level(Level::Warn)
                .args(format_args!("cycle failed"))
                .key_values(&kvs)
                .build())
        });
        assert_eq!(
            line,
            "2024-01-15T10:30:00.000Z WARN  cycle failed cluster=prod reason=\"two words\"\n"
        );
    }

    #[test]
    fn libraries_are_capped_at_warn() {
        use log::Log;
        // (agent level, record target, record level, passes)
        let cases = [
            (LevelFilter::Debug, "kijo_agent::store", Level::Debug, true),
            (LevelFilter::Debug, "kijo_agent::store", Level::Trace, false),
            (LevelFilter::Trace, "kijo_agent::notify", Level::Trace, true),
            (LevelFilter::Info, "kijo_agent", Level::Info, true),
            (LevelFilter::Debug, "rustls::client", Level::Debug, false),
            (LevelFilter::Debug, "rustls::client", Level::Warn, true),
            (LevelFilter::Error, "rustls::client", Level::Warn, false),
            (LevelFilter::Trace, "rustls::client", Level::Debug, true),
            (LevelFilter::Trace, "rustls::client", Level::Trace, false),
            // ureq's debug and trace records carry request URLs and header dumps.
            (LevelFilter::Trace, "ureq::unversioned", Level::Trace, false),
            (
                LevelFilter::Trace,
                "ureq_proto::client",
                Level::Debug,
                false,
            ),
            (LevelFilter::Trace, "ureq::run", Level::Warn, true),
            (
                LevelFilter::Trace,
                "tokio_postgres::query",
                Level::Debug,
                false,
            ),
            (LevelFilter::Trace, "postgres", Level::Error, true),
        ];
        for (level, target, record_level, want) in cases {
            let logger = builder(LogFormat::Json, level).build();
            let metadata = log::Metadata::builder()
                .target(target)
                .level(record_level)
                .build();
            assert_eq!(
                logger.enabled(&metadata),
                want,
                "{target} {record_level} at {level}"
            );
        }
    }
}
