//! Delivery metrics: without a success/failure count per target a silent Slack outage goes
//! unnoticed; these make one visible.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::histogram::exponential_buckets;

use super::policy::Outcome;
use crate::metrics::{Counter, Family, Gauge, Histogram, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub target: String,
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub target: String,
    pub event: String,
    /// `retry`, `permanent` or `auth_rejected`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

fn latency_histogram() -> Histogram {
    // 10 ms … ~41 s: Slack answers in ~100 ms, our request timeout is 30 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// Cheap to clone: every field is an `Arc` inside.
#[derive(Clone, Debug)]
pub struct NotifyMetrics {
    /// `kijo_notify_messages_sent_total{target,event}`
    pub sent: Family<DeliveryLabels, Counter>,
    /// `kijo_notify_messages_failed_total{target,event,outcome}`: one per failed attempt.
    pub failed: Family<FailureLabels, Counter>,
    /// `kijo_notify_messages_dead_lettered_total{target,event}`
    pub dead_lettered: Family<DeliveryLabels, Counter>,
    /// `kijo_notify_delivery_duration_seconds{target}`: one observation per HTTP attempt.
    pub latency: Family<TargetLabels, Histogram, fn() -> Histogram>,
    /// `kijo_notify_outbox_pending{target}`: set by the outbox owner.
    pub outbox_pending: Family<TargetLabels, Gauge>,
    /// `kijo_notify_outbox_oldest_age_seconds{target}`: set by the outbox owner.
    pub outbox_oldest_age: Family<TargetLabels, Gauge>,
    /// `kijo_notify_auth_rejected{target}`: 1 while the target rejects our key or secret.
    pub auth_rejected: Family<TargetLabels, Gauge>,
}

impl NotifyMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = NotifyMetrics {
            sent: Family::default(),
            failed: Family::default(),
            dead_lettered: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            outbox_pending: Family::default(),
            outbox_oldest_age: Family::default(),
            auth_rejected: Family::default(),
        };
        registry.register(
            "kijo_notify_messages_sent",
            "Messages delivered, by target and event",
            m.sent.clone(),
        );
        registry.register(
            "kijo_notify_messages_failed",
            "Failed delivery attempts, by target, event and outcome",
            m.failed.clone(),
        );
        registry.register(
            "kijo_notify_messages_dead_lettered",
            "Messages given up on (permanent error or maximum age), by target and event",
            m.dead_lettered.clone(),
        );
        registry.register(
            "kijo_notify_delivery_duration_seconds",
            "Duration of one delivery attempt",
            m.latency.clone(),
        );
        registry.register(
            "kijo_notify_outbox_pending",
            "Messages waiting for delivery",
            m.outbox_pending.clone(),
        );
        registry.register(
            "kijo_notify_outbox_oldest_age_seconds",
            "Age of the oldest undelivered message",
            m.outbox_oldest_age.clone(),
        );
        registry.register(
            "kijo_notify_auth_rejected",
            "1 while the target rejects the configured key or secret (401/403)",
            m.auth_rejected.clone(),
        );
        m
    }

    /// Counts one attempt's outcome and its duration.
    pub fn record(&self, target: &str, event: &str, outcome: &Outcome, seconds: f64) {
        self.latency
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
            })
            .observe(seconds);
        let failure = match outcome {
            Outcome::Delivered => None,
            Outcome::Retry { .. } => Some("retry"),
            Outcome::Permanent { .. } => Some("permanent"),
            Outcome::AuthRejected { .. } => Some("auth_rejected"),
        };
        // Any answer other than 401/403 proves the credentials were accepted (or not checked).
        let rejected = i64::from(matches!(outcome, Outcome::AuthRejected { .. }));
        if !matches!(outcome, Outcome::Retry { .. }) {
            self.auth_rejected
                .get_or_create(&TargetLabels {
                    target: target.to_owned(),
                })
                .set(rejected);
        }
        match failure {
            None => {
                self.sent
                    .get_or_create(&DeliveryLabels {
                        target: target.to_owned(),
                        event: event.to_owned(),
                    })
                    .inc();
            }
            Some(outcome) => {
                self.failed
                    .get_or_create(&FailureLabels {
                        target: target.to_owned(),
                        event: event.to_owned(),
                        outcome: outcome.to_owned(),
                    })
                    .inc();
            }
        }
    }

    pub fn record_dead_letter(&self, target: &str, event: &str) {
        self.dead_lettered
            .get_or_create(&DeliveryLabels {
                target: target.to_owned(),
                event: event.to_owned(),
            })
            .inc();
    }

    pub fn set_outbox(&self, target: &str, pending: i64, oldest_age_seconds: i64) {
        let labels = TargetLabels {
            target: target.to_owned(),
        };
        self.outbox_pending.get_or_create(&labels).set(pending);
        self.outbox_oldest_age
            .get_or_create(&labels)
            .set(oldest_age_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_the_documented_names() {
        let mut registry = Registry::default();
        let m = NotifyMetrics::new(&mut registry);
        m.record(
            "slack",
            "vulnerabilities_detected",
            &Outcome::Delivered,
            0.2,
        );
        m.record(
            "saas",
            "vulnerabilities_fixed",
            &Outcome::AuthRejected {
                status: 401,
                reason: String::new(),
            },
            0.1,
        );
        m.record(
            "webhook",
            "vulnerabilities_fixed",
            &Outcome::Retry {
                after: Duration::from_secs(1),
                reason: String::new(),
            },
            0.1,
        );
        m.record_dead_letter("webhook", "vulnerabilities_fixed");
        m.set_outbox("slack", 3, 120);
        let text = crate::metrics::render(&registry);
        for want in [
            r#"kijo_notify_messages_sent_total{target="slack",event="vulnerabilities_detected"} 1"#,
            r#"kijo_notify_messages_failed_total{target="saas",event="vulnerabilities_fixed",outcome="auth_rejected"} 1"#,
            r#"kijo_notify_messages_failed_total{target="webhook",event="vulnerabilities_fixed",outcome="retry"} 1"#,
            r#"kijo_notify_messages_dead_lettered_total{target="webhook",event="vulnerabilities_fixed"} 1"#,
            r#"kijo_notify_delivery_duration_seconds_count{target="slack"} 1"#,
            r#"kijo_notify_outbox_pending{target="slack"} 3"#,
            r#"kijo_notify_outbox_oldest_age_seconds{target="slack"} 120"#,
            r#"kijo_notify_auth_rejected{target="saas"} 1"#,
            r#"kijo_notify_auth_rejected{target="slack"} 0"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
