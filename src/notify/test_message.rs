//! `kijo-agent notify-test`: one clearly marked test message to every configured target, so
//! an operator can see each channel work without waiting for a real finding.

use jiff::Timestamp;

use super::deliver::{Deliverer, Prepared, Target, log_outcome, webhook_headers};
use super::policy::Outcome;
use super::{slack, webhook};

/// Sends a test message to every configured target and returns each outcome, for the
/// documented "send a test message" command. Slack gets a "🧪 kijo-agent test message",
/// webhooks a README-shaped body with `"event": "test"` (signed if a secret is set), the SaaS
/// a heartbeat.
pub fn send_test_message(
    deliverer: &Deliverer,
    targets: &[Target],
) -> Vec<(&'static str, String, Outcome)> {
    targets
        .iter()
        .map(|t| (t.name(), t.masked_url(), send_test(deliverer, t)))
        .collect()
}

/// Sends one clearly-marked test message to `target` (a heartbeat for the SaaS).
fn send_test(deliverer: &Deliverer, target: &Target) -> Outcome {
    let now = Timestamp::now();
    let id = super::group::message_id([format!("test-{}", now.as_nanosecond()).as_str()]);
    let prepared = match target {
        Target::Slack { url } => Prepared {
            url: url.expose().clone(),
            headers: vec![("Content-Type", "application/json".to_owned())],
            body: serde_json::to_vec(&slack::render_test(&deliverer.config().cluster, now))
                .expect("slack body serializes"),
            event: "test".to_owned(),
        },
        Target::Webhook { url, secret } => {
            let body = webhook::render_test(&deliverer.config().cluster, now, &id);
            Prepared {
                url: url.expose().clone(),
                headers: webhook_headers(secret.as_ref(), &id, "test", &body, now),
                body,
                event: "test".to_owned(),
            }
        }
        Target::Saas { .. } => return deliverer.heartbeat(target, 0),
    };
    let outcome = deliverer.execute(target, &prepared, 0);
    log_outcome(target, &id, "test", 0, &outcome);
    outcome
}
