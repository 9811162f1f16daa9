//! The delivery retry policy, pure so that it is table-tested: how an HTTP answer is classified
//! (`classify`), how long to wait ([`DeliveryPolicy::backoff`], `parse_retry_after`) and
//! what becomes of the message (`DeliveryPolicy::dispose`). Nothing is dropped silently:
//! every message ends delivered, or dead-lettered with a reason and a counter.

use std::time::Duration;

use jiff::Timestamp;

use crate::backoff;

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// 429/503 (after `Retry-After`, 1 s to 1 h), other 5xx, 408, timeouts and connection errors
    /// (after a jittered exponential backoff).
    Retry { after: Duration, reason: String },
    /// Any other answer (other 4xx, 3xx: redirects are not followed) or an unusable URL.
    /// Retrying would only repeat it; the message is dead-lettered and kept for inspection.
    Permanent { status: Option<u16>, reason: String },
    /// 401/403: the key or secret is wrong or revoked. Distinct so it can be shown in logs,
    /// `--dry-run`, readiness and `kijo_notify_auth_rejected`.
    AuthRejected { status: u16, reason: String },
}

/// One line for people: the test-message command, `--dry-run` and readiness detail.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Delivered => f.write_str("delivered"),
            Outcome::Retry { after, reason } => {
                write!(f, "failed, retrying in {}ms: {reason}", after.as_millis())
            }
            Outcome::Permanent { reason, .. } => write!(f, "rejected permanently: {reason}"),
            Outcome::AuthRejected { status, .. } => write!(
                f,
                "credentials rejected (HTTP {status}): check KIJO_SAAS_API_KEY, the webhook secret or the webhook URL"
            ),
        }
    }
}

/// Timing knobs of delivery retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// First backoff ceiling; doubles per attempt.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
    /// Largest `Retry-After` honoured; a bigger one is cut to this.
    pub max_retry_after: Duration,
    /// A message still undelivered this long after it was created is dead-lettered
    /// (`KIJO_NOTIFY_MAX_AGE`).
    pub max_age: Duration,
    /// Wait after a rejected key: slow, so a wrong key is not hammered, but messages survive
    /// until someone fixes the key (within `max_age`).
    pub auth_retry: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(600),
            max_retry_after: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
            auth_retry: Duration::from_secs(3600),
        }
    }
}

/// What to do with a message after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Disposition {
    Delivered,
    RetryAt(Timestamp),
    DeadLetter { reason: String },
}

impl DeliveryPolicy {
    /// Turns an attempt's outcome into the message's next state. `created_at` is when the
    /// message entered the outbox.
    pub(crate) fn dispose(
        &self,
        outcome: &Outcome,
        created_at: Timestamp,
        now: Timestamp,
    ) -> Disposition {
        let after = match outcome {
            Outcome::Delivered => return Disposition::Delivered,
            Outcome::Permanent { status, reason } => {
                let status = status.map_or_else(|| "no status".to_owned(), |s| format!("HTTP {s}"));
                return Disposition::DeadLetter {
                    reason: format!("permanent failure ({status}): {reason}"),
                };
            }
            Outcome::Retry { after, .. } => *after,
            Outcome::AuthRejected { .. } => self.auth_retry,
        };
        let age = now.duration_since(created_at).unsigned_abs();
        if age >= self.max_age {
            let last = match outcome {
                Outcome::Retry { reason, .. } => reason.clone(),
                Outcome::AuthRejected { status, .. } => {
                    format!("credentials rejected (HTTP {status})")
                }
                _ => String::new(),
            };
            return Disposition::DeadLetter {
                reason: format!(
                    "not delivered within the maximum age of {}s (KIJO_NOTIFY_MAX_AGE); last error: {last}",
                    self.max_age.as_secs()
                ),
            };
        }
        // A retry that would land past the maximum age becomes one last attempt at it.
        let deadline = created_at.checked_add(self.max_age).unwrap_or(now);
        let next = now.checked_add(after).unwrap_or(deadline).min(deadline);
        Disposition::RetryAt(next)
    }

    /// Exponential backoff with full jitter: a uniformly random delay in
    /// `[0, min(cap, base · 2^attempt))`, so many agents recovering from one Slack outage do
    /// not retry in lockstep. `rng_value` is in `[0, 1)`; `attempt` starts at 0.
    pub fn backoff(&self, attempt: u32, rng_value: f64) -> Duration {
        let schedule = backoff::Exponential {
            base: self.base,
            cap: self.cap,
        };
        backoff::jittered(schedule.ceiling(attempt), backoff::Jitter::Full, rng_value)
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110). A date in the
/// past means "now".
pub(crate) fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    let at = PARSER.parse_timestamp(value).ok()?;
    Some(at.duration_since(now).try_into().unwrap_or(Duration::ZERO))
}

/// The shortest `Retry-After` we honour.
pub(crate) const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Classifies an HTTP answer. `excerpt` is a bounded, already-sanitized piece of the body.
pub(crate) fn classify(
    status: u16,
    retry_after: Option<&str>,
    excerpt: &str,
    attempt: u32,
    policy: &DeliveryPolicy,
    now: Timestamp,
    rng_value: f64,
) -> Outcome {
    let reason = if excerpt.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {excerpt}")
    };
    match status {
        200..=299 => Outcome::Delivered,
        401 | 403 => Outcome::AuthRejected { status, reason },
        429 | 503 => {
            let after = retry_after
                .and_then(|v| parse_retry_after(v, now))
                // A floor, so a server answering "Retry-After: 0" cannot make us spin.
                .map(|d| d.clamp(MIN_RETRY_AFTER, policy.max_retry_after.max(MIN_RETRY_AFTER)))
                .unwrap_or_else(|| policy.backoff(attempt, rng_value));
            Outcome::Retry { after, reason }
        }
        408 | 500..=599 => Outcome::Retry {
            after: policy.backoff(attempt, rng_value),
            reason,
        },
        300..=399 => Outcome::Permanent {
            status: Some(status),
            reason: format!("{reason} (redirects are not followed: configure the final URL)"),
        },
        _ => Outcome::Permanent {
            status: Some(status),
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_table() {
        let policy = DeliveryPolicy {
            base: secs(5),
            cap: secs(600),
            ..DeliveryPolicy::default()
        };
        let cases = [
            (0, 0.0, Duration::ZERO),
            (0, 0.5, Duration::from_millis(2500)),
            (0, 1.0, secs(5)),
            (1, 1.0, secs(10)),
            (3, 0.5, secs(20)),
            (6, 1.0, secs(320)),
            (7, 1.0, secs(600)),
            (40, 1.0, secs(600)),
            (u32::MAX, 0.25, secs(150)),
            (2, 7.0, secs(20)),
            (2, -1.0, Duration::ZERO),
        ];
        for (attempt, rng, want) in cases {
            assert_eq!(
                policy.backoff(attempt, rng),
                want,
                "attempt {attempt} rng {rng}"
            );
        }
    }

    #[test]
    fn retry_after_parsing() {
        let now: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let cases = [
            ("120", Some(secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            ("Fri, 27 Nov 2026 10:00:30 GMT", Some(secs(30))),
            ("Fri, 27 Nov 2026 09:00:00 GMT", Some(Duration::ZERO)),
            ("-5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), want, "value {value:?}");
        }
    }

    #[test]
    fn classify_table() {
        let policy = DeliveryPolicy::default();
        let now: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let retry = |s| Outcome::Retry {
            after: s,
            reason: String::new(),
        };
        let strip = |o: Outcome| match o {
            Outcome::Retry { after, .. } => retry(after),
            Outcome::Permanent { status, .. } => Outcome::Permanent {
                status,
                reason: String::new(),
            },
            Outcome::AuthRejected { status, .. } => Outcome::AuthRejected {
                status,
                reason: String::new(),
            },
            d => d,
        };
        let cases: [(u16, Option<&str>, Outcome); 13] = [
            (200, None, Outcome::Delivered),
            (204, None, Outcome::Delivered),
            (429, Some("7"), retry(secs(7))),
            (503, Some("Fri, 27 Nov 2026 10:01:00 GMT"), retry(secs(60))),
            (429, Some("999999"), retry(secs(3600))),
            (429, Some("0"), retry(secs(1))),
            // No usable Retry-After: backoff for attempt 1 at rng 0.5 = 5 s.
            (429, Some("later"), retry(secs(5))),
            (500, None, retry(secs(5))),
            (408, None, retry(secs(5))),
            (
                400,
                None,
                Outcome::Permanent {
                    status: Some(400),
                    reason: String::new(),
                },
            ),
            (
                404,
                None,
                Outcome::Permanent {
                    status: Some(404),
                    reason: String::new(),
                },
            ),
            (
                301,
                None,
                Outcome::Permanent {
                    status: Some(301),
                    reason: String::new(),
                },
            ),
            (
                401,
                None,
                Outcome::AuthRejected {
                    status: 401,
                    reason: String::new(),
                },
            ),
        ];
        for (status, ra, want) in cases {
            assert_eq!(
                strip(classify(status, ra, "", 1, &policy, now, 0.5)),
                want,
                "status {status}"
            );
        }
        assert!(matches!(
            classify(403, None, "invalid_token", 0, &policy, now, 0.5),
            Outcome::AuthRejected { status: 403, reason } if reason == "HTTP 403: invalid_token"
        ));
    }

    #[test]
    fn dispose_table() {
        let policy = DeliveryPolicy::default();
        let created: Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let retry = Outcome::Retry {
            after: secs(60),
            reason: "HTTP 503".to_owned(),
        };
        let auth = Outcome::AuthRejected {
            status: 401,
            reason: String::new(),
        };
        let perm = Outcome::Permanent {
            status: Some(400),
            reason: "bad".to_owned(),
        };
        assert_eq!(
            policy.dispose(&Outcome::Delivered, created, at("2026-11-27T01:00:00Z")),
            Disposition::Delivered
        );
        assert_eq!(
            policy.dispose(&retry, created, at("2026-11-27T01:00:00Z")),
            Disposition::RetryAt(at("2026-11-27T01:01:00Z"))
        );
        assert_eq!(
            policy.dispose(&auth, created, at("2026-11-27T01:00:00Z")),
            Disposition::RetryAt(at("2026-11-27T02:00:00Z"))
        );
        let dead = |d: Disposition| match d {
            Disposition::DeadLetter { reason } => reason,
            other => panic!("expected dead letter, got {other:?}"),
        };
        assert!(
            dead(policy.dispose(&perm, created, at("2026-11-27T00:00:01Z"))).contains("HTTP 400")
        );
        // A retry that would land past the maximum age is one last attempt at it…
        assert_eq!(
            policy.dispose(&auth, created, at("2026-11-27T23:30:00Z")),
            Disposition::RetryAt(at("2026-11-28T00:00:00Z"))
        );
        // …after which the message is dead-lettered with its last error.
        assert!(
            dead(policy.dispose(&retry, created, at("2026-11-28T00:00:00Z")))
                .contains("KIJO_NOTIFY_MAX_AGE")
        );
        assert!(dead(policy.dispose(&auth, created, at("2026-11-28T00:00:01Z"))).contains("401"));
    }

    #[test]
    fn outcomes_read_well() {
        let cases = [
            (Outcome::Delivered, "delivered"),
            (
                Outcome::Retry {
                    after: Duration::from_millis(1500),
                    reason: "HTTP 503".to_owned(),
                },
                "failed, retrying in 1500ms: HTTP 503",
            ),
            (
                Outcome::Permanent {
                    status: Some(404),
                    reason: "HTTP 404: no_service".to_owned(),
                },
                "rejected permanently: HTTP 404: no_service",
            ),
        ];
        for (outcome, want) in cases {
            assert_eq!(outcome.to_string(), want);
        }
        let auth = Outcome::AuthRejected {
            status: 401,
            reason: String::new(),
        };
        assert!(
            auth.to_string()
                .starts_with("credentials rejected (HTTP 401)")
        );
    }
}
