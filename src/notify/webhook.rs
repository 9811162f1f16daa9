//! Generic webhook and SaaS event bodies.
//!
//! The top-level fields are exactly the original README's (`cluster`, `event`, `severity`,
//! `count`, `workloads`, `timestamp`), so existing receivers keep working; `id`, `namespace`
//! and `findings` are additions. `count` is the length of `findings`.
//!
//! A finding entry carries the same fields for every event; three are added only where they
//! say something: `previous_severity` on a raised severity, `peak_severity` on a closing event
//! whose peak differs from the finding's severity at the end (the top-level `severity` of a
//! closing event is the highest peak: what people were told), and `package_path` when the
//! report names paths or targets.

use jiff::Timestamp;
use serde::Serialize;

use super::event::non_empty;
use super::group::Message;

/// One webhook body. Field order is the README's, then the additions.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WebhookPayload<'a> {
    pub cluster: &'a str,
    pub event: &'a str,
    pub severity: &'a str,
    pub count: usize,
    pub workloads: Vec<String>,
    pub timestamp: String,
    pub id: &'a str,
    pub namespace: &'a str,
    pub findings: Vec<FindingPayload<'a>>,
    /// Present (true) only when `findings` was cut to [`MAX_WEBHOOK_FINDINGS`]; `count` is
    /// always the full number.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub findings_truncated: bool,
}

/// Webhook bodies list at most this many findings (~350 KB), so a receiver behind a default
/// 1 MB body limit (nginx) does not answer 413 and lose the message. The SaaS gets them all.
pub(crate) const MAX_WEBHOOK_FINDINGS: usize = 1000;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FindingPayload<'a> {
    pub namespace: &'a str,
    pub workload: &'a str,
    pub workload_kind: &'a str,
    pub container: &'a str,
    pub image: &'a str,
    pub cve: &'a str,
    pub package: &'a str,
    pub installed_version: &'a str,
    pub fixed_version: Option<&'a str>,
    pub severity: &'a str,
    pub title: Option<&'a str>,
    pub link: Option<&'a str>,
    /// The severity before a raise (`vulnerabilities_severity_raised` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_severity: Option<&'a str>,
    /// The highest severity of the finding's open period, on a closing event when it differs
    /// from `severity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_severity: Option<&'a str>,
    /// Package paths (else scan targets) of the finding's instances, ", "-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_path: Option<&'a str>,
}

/// RFC 3339 in UTC with whole seconds, like the README's `2024-01-15T10:30:00Z`.
pub(crate) fn rfc3339_seconds(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The event object with every finding (SaaS events).
pub(crate) fn payload(message: &Message) -> WebhookPayload<'_> {
    payload_limited(message, usize::MAX)
}

/// The event object with at most `max_findings` findings.
pub(crate) fn payload_limited(message: &Message, max_findings: usize) -> WebhookPayload<'_> {
    WebhookPayload {
        cluster: &message.cluster,
        event: message.kind.event_name(),
        severity: message.severity.as_str(),
        count: message.count(),
        workloads: message.workload_names(),
        timestamp: rfc3339_seconds(message.occurred_at),
        id: &message.id,
        namespace: &message.namespace,
        findings_truncated: message.changes.len() > max_findings,
        findings: message
            .changes
            .iter()
            .take(max_findings)
            .map(|c| {
                let f = &c.finding;
                FindingPayload {
                    namespace: &c.asset.namespace,
                    workload: &c.asset.workload,
                    workload_kind: &c.asset.workload_kind,
                    container: &c.asset.container,
                    image: &c.image,
                    cve: &f.key.vulnerability_id,
                    package: &f.key.package,
                    installed_version: &f.installed_version,
                    fixed_version: non_empty(&f.fixed_version),
                    severity: f.severity.as_str(),
                    title: non_empty(&f.title),
                    link: non_empty(&f.link),
                    previous_severity: c.previous_severity.map(|s| s.as_str()),
                    peak_severity: (c.kind.is_closing() && c.told_severity() != f.severity)
                        .then(|| c.told_severity().as_str()),
                    package_path: non_empty(&f.package_path),
                }
            })
            .collect(),
    }
}

/// The exact bytes POSTed (and signed).
pub(crate) fn render(message: &Message) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(&payload_limited(message, MAX_WEBHOOK_FINDINGS))
        .expect("webhook payload serializes")
}

/// The body of `send_test_message` for a webhook: README fields with `event: "test"` and no
/// findings, so a receiver that acts on events can ignore it by its event name.
pub(crate) fn render_test(cluster: &str, now: Timestamp, id: &str) -> Vec<u8> {
    let body = WebhookPayload {
        cluster,
        event: "test",
        severity: "UNKNOWN",
        count: 0,
        workloads: Vec::new(),
        timestamp: rfc3339_seconds(now),
        id,
        namespace: "",
        findings: Vec::new(),
        findings_truncated: false,
    };
    serde_json::to_vec(&body).expect("webhook payload serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::{ChangeKind, Severity};
    use crate::notify::group::group;
    use crate::notify::group::tests::change;
    use serde_json::{Value, json};

    #[test]
    fn body_has_the_readme_fields_plus_id_and_findings() {
        let mut changes = Vec::new();
        for (id, w, cve) in [
            ("1", "web-app", "CVE-2024-45337"),
            ("2", "api-server", "CVE-2024-3817"),
            ("3", "web-app", "CVE-2024-1"),
        ] {
            let mut c = change(id, w, cve, Severity::Critical);
            c.kind = ChangeKind::Fixed;
            changes.push(c);
        }
        changes[2].finding.severity = Severity::High;
        changes[2].peak_severity = Severity::High;
        changes[2].finding.fixed_version = String::new();
        let m = &group(changes)[0];
        let body: Value = serde_json::from_slice(&render(m)).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec![
            "cluster",
            "count",
            "event",
            "findings",
            "id",
            "namespace",
            "severity",
            "timestamp",
            "workloads",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(body["cluster"], "production-eu");
        assert_eq!(body["event"], "vulnerabilities_fixed");
        assert_eq!(body["severity"], "CRITICAL");
        assert_eq!(body["count"], 3);
        assert_eq!(
            body["workloads"],
            serde_json::json!(["api-server", "web-app"])
        );
        assert_eq!(body["timestamp"], "2024-01-15T10:30:00Z");
        assert_eq!(body["id"], m.id.as_str());
        let findings = body["findings"].as_array().unwrap();
        assert_eq!(findings.len(), 3);
        let f = &findings[0];
        for key in OLD_FINDING_KEYS {
            assert!(f.get(key).is_some(), "finding lacks {key}");
        }
        assert_eq!(f["workload"], "api-server");
        assert_eq!(f["cve"], "CVE-2024-3817");
        let high = findings.iter().find(|f| f["cve"] == "CVE-2024-1").unwrap();
        assert_eq!(high["severity"], "HIGH");
        assert!(high["fixed_version"].is_null());
    }

    fn body(changes: Vec<crate::notify::event::Change>) -> Value {
        serde_json::from_slice(&render(&group(changes)[0])).unwrap()
    }

    /// The finding entry of an old kind has exactly the fields it always had.
    const OLD_FINDING_KEYS: [&str; 12] = [
        "namespace",
        "workload",
        "workload_kind",
        "container",
        "image",
        "cve",
        "package",
        "installed_version",
        "fixed_version",
        "severity",
        "title",
        "link",
    ];

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn old_kinds_keep_their_finding_fields() {
        let mut want = OLD_FINDING_KEYS.to_vec();
        want.sort_unstable();
        for kind in [
            ChangeKind::New,
            ChangeKind::Fixed,
            ChangeKind::Reintroduced,
            ChangeKind::WorkloadRemoved,
        ] {
            let mut c = change("1", "w", "CVE-1", Severity::High);
            c.kind = kind;
            assert_eq!(keys(&body(vec![c])["findings"][0]), want, "{kind:?}");
        }
    }

    #[test]
    fn a_raised_finding_carries_its_previous_severity() {
        let mut a = change("1", "web", "CVE-1", Severity::Critical);
        a.kind = ChangeKind::SeverityRaised;
        a.previous_severity = Some(Severity::Medium);
        let mut b = change("2", "web", "CVE-2", Severity::High);
        b.kind = ChangeKind::SeverityRaised;
        b.previous_severity = Some(Severity::Low);
        let body = body(vec![a, b]);
        assert_eq!(body["event"], "vulnerabilities_severity_raised");
        assert_eq!(body["severity"], "CRITICAL");
        let f = body["findings"].as_array().unwrap();
        assert_eq!(
            (&f[0]["cve"], &f[0]["severity"], &f[0]["previous_severity"]),
            (&json!("CVE-1"), &json!("CRITICAL"), &json!("MEDIUM"))
        );
        assert_eq!(
            (&f[1]["cve"], &f[1]["severity"], &f[1]["previous_severity"]),
            (&json!("CVE-2"), &json!("HIGH"), &json!("LOW"))
        );
        assert!(f[0].get("peak_severity").is_none());
    }

    #[test]
    fn a_closing_entry_carries_its_peak_when_it_differs() {
        for kind in ChangeKind::ALL.into_iter().filter(|k| k.is_closing()) {
            let mut lowered = change("1", "web", "CVE-1", Severity::Low);
            lowered.kind = kind;
            lowered.peak_severity = Severity::Critical;
            let mut steady = change("2", "web", "CVE-2", Severity::High);
            steady.kind = kind;
            let body = body(vec![lowered, steady]);
            assert_eq!(body["event"], kind.event_name());
            assert_eq!(body["severity"], "CRITICAL", "{kind:?}: the highest peak");
            let f = body["findings"].as_array().unwrap();
            assert_eq!(f[0]["severity"], "LOW", "{kind:?}: the severity at the end");
            assert_eq!(f[0]["peak_severity"], "CRITICAL", "{kind:?}");
            assert!(f[1].get("peak_severity").is_none(), "{kind:?}: same as severity");
            assert!(f[0].get("previous_severity").is_none());
        }
        // An opening kind never carries a peak.
        let mut new = change("1", "web", "CVE-1", Severity::Low);
        new.peak_severity = Severity::Critical;
        assert!(body(vec![new])["findings"][0].get("peak_severity").is_none());
    }

    #[test]
    fn package_path_is_shown_when_known() {
        let mut c = change("1", "web", "CVE-1", Severity::High);
        c.finding.package_path = "app/a.jar, app/b.jar".to_owned();
        assert_eq!(
            body(vec![c])["findings"][0]["package_path"],
            "app/a.jar, app/b.jar"
        );
        let c = change("1", "web", "CVE-1", Severity::High);
        assert!(body(vec![c])["findings"][0].get("package_path").is_none());
    }

    #[test]
    fn large_bodies_are_capped_but_count_everything() {
        let changes: Vec<_> = (0..1500)
            .map(|i| {
                change(
                    &i.to_string(),
                    &format!("w{i}"),
                    "CVE-1",
                    Severity::Critical,
                )
            })
            .collect();
        let m = &group(changes)[0];
        let bytes = render(m);
        assert!(bytes.len() < 1_000_000, "{} bytes", bytes.len());
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["count"], 1500);
        assert_eq!(
            body["findings"].as_array().unwrap().len(),
            MAX_WEBHOOK_FINDINGS
        );
        assert_eq!(body["findings_truncated"], true);
        assert_eq!(body["workloads"].as_array().unwrap().len(), 1500);
        assert_eq!(
            payload(m).findings.len(),
            1500,
            "the SaaS gets every finding"
        );
    }

    #[test]
    fn event_names_per_kind() {
        for (kind, want) in [
            (ChangeKind::New, "vulnerabilities_detected"),
            (ChangeKind::Fixed, "vulnerabilities_fixed"),
            (ChangeKind::Reintroduced, "vulnerabilities_reintroduced"),
            (ChangeKind::WorkloadRemoved, "workload_removed"),
            (ChangeKind::Withdrawn, "vulnerabilities_withdrawn"),
            (ChangeKind::ReportedAgain, "vulnerabilities_reported_again"),
            (ChangeKind::SeverityRaised, "vulnerabilities_severity_raised"),
            (ChangeKind::ContainerRemoved, "container_removed"),
        ] {
            let mut c = change("1", "w", "CVE-1", Severity::Critical);
            c.previous_severity = (kind == ChangeKind::SeverityRaised).then_some(Severity::Low);
            c.kind = kind;
            let body: Value = serde_json::from_slice(&render(&group(vec![c])[0])).unwrap();
            assert_eq!(body["event"], want);
        }
    }

    #[test]
    fn test_body_is_marked_as_test() {
        let body: Value = serde_json::from_slice(&render_test(
            "prod",
            "2024-01-15T10:30:00.5Z".parse().unwrap(),
            "t1",
        ))
        .unwrap();
        assert_eq!(body["event"], "test");
        assert_eq!(body["count"], 0);
        assert_eq!(body["timestamp"], "2024-01-15T10:30:00Z");
    }
}
