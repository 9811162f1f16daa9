//! What `kijo-agent history` prints: the quickest way for a person to see what the agent knows.

use std::fmt::Write;

use super::SeverityCount;
use crate::lifecycle::Event;
use crate::text::clean;

/// Plain text, one event per line, newest first, so it reads well in a terminal and greps well.
pub fn render_history(cluster: &str, open: &[SeverityCount], events: &[Event]) -> String {
    let mut out = String::new();
    let total: u64 = open.iter().map(|c| c.open).sum();
    let by_severity: Vec<String> = open
        .iter()
        .map(|c| format!("{} {}", c.severity, c.open))
        .collect();
    // Writing into a String cannot fail.
    let _ = write!(out, "cluster {cluster}: {total} open findings");
    if !by_severity.is_empty() {
        let _ = write!(out, " ({})", by_severity.join(", "));
    }
    out.push('\n');
    if events.is_empty() {
        out.push_str("no lifecycle events recorded yet\n");
        return out;
    }
    out.push_str("\nrecent lifecycle events, newest first:\n");
    for e in events {
        let ns = if e.asset.namespace.is_empty() {
            "(cluster)"
        } else {
            &e.asset.namespace
        };
        let severity = match e.previous_severity {
            Some(prev) => format!("{prev}->{}", e.finding.severity),
            None => e.finding.severity.to_string(),
        };
        let mut line = String::new();
        let _ = write!(
            line,
            "{}  {:<16}  {:<8}  {}  {ns}/{}/{} [{}]  {} {}",
            e.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            e.kind.as_str(),
            severity,
            e.finding.key.vulnerability_id,
            e.asset.workload_kind,
            e.asset.workload,
            e.asset.container,
            e.finding.key.package,
            e.finding.installed_version,
        );
        if !e.finding.fixed_version.is_empty() {
            let _ = write!(line, " (fixed in {})", e.finding.fixed_version);
        }
        if e.reintroduced_count > 0 {
            let _ = write!(line, " reintroduced {}x", e.reintroduced_count);
        }
        // Rows written before report text was sanitised may still hold control characters;
        // none reaches the terminal.
        out.push_str(&clean(&line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{AssetId, EventKind, Finding, FindingKey};
    use crate::severity::Severity;

    fn event(kind: EventKind, ns: &str, previous: Option<&str>, count: u32) -> Event {
        Event {
            event_id: "x".into(),
            kind,
            cluster: "prod".into(),
            asset: AssetId {
                namespace: ns.into(),
                workload_kind: "Deployment".into(),
                workload: "web".into(),
                container: "app".into(),
            },
            image: "img".into(),
            finding: Finding {
                key: FindingKey {
                    vulnerability_id: "CVE-2024-1".into(),
                    package: "openssl".into(),
                },
                package_path: String::new(),
                severity: Severity::Critical,
                installed_version: "3.0.1".into(),
                fixed_version: "3.0.2".into(),
                title: "t".into(),
                link: "l".into(),
            },
            previous_severity: previous.map(|p| p.parse().expect("a severity name")),
            peak_severity: Severity::Critical,
            reintroduced_count: count,
            occurred_at: "2026-01-05T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn renders_counts_and_events() {
        let counts = [
            SeverityCount {
                severity: Severity::Critical,
                open: 2,
            },
            SeverityCount {
                severity: Severity::Low,
                open: 1,
            },
        ];
        let cases = [
            (
                vec![],
                "cluster prod: 3 open findings (CRITICAL 2, LOW 1)\nno lifecycle events recorded yet\n",
            ),
            (
                vec![event(EventKind::SeverityChanged, "shop", Some("HIGH"), 0)],
                "cluster prod: 3 open findings (CRITICAL 2, LOW 1)\n\nrecent lifecycle events, newest first:\n\
                 2026-01-05T00:00:00Z  severity_changed  HIGH->CRITICAL  CVE-2024-1  shop/Deployment/web [app]  openssl 3.0.1 (fixed in 3.0.2)\n",
            ),
            (
                vec![event(EventKind::Reintroduced, "", None, 2)],
                "cluster prod: 3 open findings (CRITICAL 2, LOW 1)\n\nrecent lifecycle events, newest first:\n\
                 2026-01-05T00:00:00Z  reintroduced      CRITICAL  CVE-2024-1  (cluster)/Deployment/web [app]  openssl 3.0.1 (fixed in 3.0.2) reintroduced 2x\n",
            ),
        ];
        for (events, want) in cases {
            assert_eq!(render_history("prod", &counts, &events), want);
        }
        assert_eq!(
            render_history("dev", &[], &[]),
            "cluster dev: 0 open findings\nno lifecycle events recorded yet\n"
        );
    }

    #[test]
    fn stored_control_characters_never_reach_the_terminal() {
        let mut e = event(EventKind::New, "shop", None, 0);
        e.finding.installed_version = "1.0\u{1b}[2J\u{7}\u{202E}".into();
        e.finding.fixed_version = "2\n0".into();
        let text = render_history("prod", &[], &[e]);
        let line = text.lines().last().unwrap();
        assert!(
            line.ends_with("[app]  openssl 1.0[2J (fixed in 2 0)"),
            "{line:?}"
        );
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
    }
}
