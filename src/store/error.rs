//! The one error type of the store.
//!
//! Callers branch on it: the poll thread retries a cycle after a connection loss but not after a
//! conflict (a stale leader's duplicate write), and readiness reports "database unreachable" only
//! for connection problems. Every message is built from already-redacted text, so no password can
//! reach a log line through it.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// TLS material (`sslrootcert`) could not be read or used.
    Tls(String),
    /// Opening a connection failed (network, authentication, TLS handshake, file permissions).
    Connect { target: String, detail: String },
    /// An established connection broke; the next call reconnects.
    ConnectionLost(String),
    /// A reconnect is not attempted yet because the last one failed recently.
    Backoff { target: String, retry_in: Duration },
    /// A statement failed for another reason than the connection.
    Query {
        context: &'static str,
        detail: String,
    },
    /// A unique constraint refused a write: another writer (a stale leader) already recorded it.
    Conflict(String),
    /// An embedded migration failed; nothing of it was applied.
    Migration {
        version: i64,
        name: &'static str,
        detail: String,
    },
    /// The database carries migrations this binary does not know: a newer agent ran against it.
    SchemaTooNew { applied: i64, embedded: i64 },
}

impl StoreError {
    /// True when the database could not be reached or the connection broke, so retrying later
    /// (after a reconnect) may succeed; false for errors a retry would repeat.
    pub fn is_connection_loss(&self) -> bool {
        matches!(
            self,
            StoreError::Connect { .. } | StoreError::ConnectionLost(_) | StoreError::Backoff { .. }
        )
    }
}

impl StoreError {
    /// True when the error concerns only the write that caused it (the database refused a
    /// statement, or another writer already recorded it), so the caller may skip that unit of
    /// work and go on with the next on the same connection.
    pub fn concerns_one_write(&self) -> bool {
        matches!(self, StoreError::Query { .. } | StoreError::Conflict(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Tls(m) => write!(f, "database tls setup failed: {m}"),
            StoreError::Connect { target, detail } => write!(
                f,
                "cannot connect to database {target}: {detail}; check KIJO_DATABASE_URL and that the database is reachable"
            ),
            StoreError::ConnectionLost(d) => {
                write!(
                    f,
                    "database connection lost: {d}; it is reopened on the next call"
                )
            }
            StoreError::Backoff { target, retry_in } => write!(
                f,
                "database {target} unreachable, next reconnect attempt in {}s",
                retry_in.as_secs().max(1)
            ),
            StoreError::Query { context, detail } => {
                write!(f, "database query failed while {context}: {detail}")
            }
            StoreError::Conflict(d) => write!(
                f,
                "write refused by a unique constraint (another agent already recorded it): {d}"
            ),
            StoreError::Migration {
                version,
                name,
                detail,
            } => write!(
                f,
                "database migration {version:04}_{name} failed and was rolled back: {detail}"
            ),
            StoreError::SchemaTooNew { applied, embedded } => write!(
                f,
                "database schema version {applied} is newer than this agent's {embedded}; upgrade the agent"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// Removes every occurrence of the secrets from a driver's message. Drivers do not echo passwords
/// today as far as we know, but that is their implementation detail, not a promise.
///
/// One pass over the original text: every byte that any secret's occurrence covers (overlapping
/// occurrences included) is masked, and each run of masked bytes becomes one `***`. Replacing
/// secret after secret instead would search text the previous replacement wrote: a secret `*`
/// turns `***` into `*********`, and twenty such parameters (the fuzzer built one) grow the
/// message as 3^20.
pub(crate) fn redact(message: &str, secrets: &[String]) -> String {
    let mut masked = vec![false; message.len()];
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let mut from = 0;
        while let Some(at) = message[from..].find(secret.as_str()) {
            let start = from + at;
            masked[start..start + secret.len()].fill(true);
            // Next search one character on, so that overlapping occurrences are found too.
            from = start + message[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    let mut out = String::with_capacity(message.len());
    let mut in_mask = false;
    for (i, c) in message.char_indices() {
        if masked[i] {
            if !in_mask {
                out.push_str("***");
            }
            in_mask = true;
        } else {
            out.push(c);
            in_mask = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_replaces_every_occurrence() {
        let cases = [
            (
                "pw hunter2 and hunter2",
                vec!["hunter2".to_owned()],
                "pw *** and ***",
            ),
            ("nothing here", vec!["hunter2".to_owned()], "nothing here"),
            (
                "empty secret ignored",
                vec![String::new()],
                "empty secret ignored",
            ),
            // Overlapping occurrences and adjacent secrets: one mask per run.
            ("xaaay", vec!["aa".to_owned()], "x***y"),
            (
                "user:hunter2hunter3@",
                vec!["hunter2".to_owned(), "hunter3".to_owned()],
                "user:***@",
            ),
            // The replacement text is never searched again.
            ("a * b", vec!["*".to_owned(), "*".to_owned()], "a *** b"),
            ("ü pw ü", vec!["ü".to_owned()], "*** pw ***"),
        ];
        for (msg, secrets, want) in cases {
            assert_eq!(redact(msg, &secrets), want);
        }
    }

    /// The output is bounded by the input, whatever the secrets: no replacement feeds another.
    #[test]
    fn redaction_never_grows_the_message_beyond_three_bytes_per_byte() {
        let message = "x".repeat(50) + &"*".repeat(50);
        let secrets: Vec<String> = ["*", "**", "x*", "***", "x"]
            .iter()
            .cycle()
            .take(40)
            .map(|s| (*s).to_owned())
            .collect();
        let out = redact(&message, &secrets);
        assert_eq!(out, "***");
        let sparse = "a*b*c*d".repeat(20);
        let out = redact(&sparse, &secrets[..1]);
        assert_eq!(out.len(), sparse.len() + 2 * sparse.matches('*').count());
    }

    #[test]
    fn connection_errors_are_classified() {
        let lost = StoreError::ConnectionLost("x".into());
        let conflict = StoreError::Conflict("x".into());
        assert!(lost.is_connection_loss());
        assert!(!conflict.is_connection_loss());
        assert!(conflict.concerns_one_write() && !lost.concerns_one_write());
        assert!(
            StoreError::Backoff {
                target: "t".into(),
                retry_in: Duration::from_secs(3)
            }
            .is_connection_loss()
        );
    }
}
