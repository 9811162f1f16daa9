//! The operator's dashboard and alerts against the real agent's `/metrics`: every metric
//! name that the Grafana dashboard and the PrometheusRule query must be exposed by the agent
//! (so renaming a metric breaks this test, not an operator's alert), and the exposition
//! passes `promtool check metrics`.
//!
//! The agent runs against the sandbox with three receivers on loopback, each answering the
//! way that makes one family of delivery metrics appear: the webhook accepts (sent), Slack
//! refuses with 400 (failed, dead-lettered), the SaaS with 401 (credentials rejected).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::agent::{Agent, TempDir, get, wait_until};
use crate::support::receiver::{Receiver, Reply};
use crate::support::sandbox::Sandbox;

const DASHBOARD: &str = "deploy/helm/kijo-agent/files/grafana-dashboard.json";
const RULES: &str = "deploy/helm/kijo-agent/templates/prometheusrule.yaml";

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Metric names in PromQL (or any) text: the identifiers that start with our prefixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("kijo_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every query of the dashboard: panel targets and template-variable queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("target expr").to_owned());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = var["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

/// Sample names of a Prometheus text exposition (histograms give `_bucket`, `_sum`, `_count`).
fn exposed(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn dashboard_and_rules_use_only_metrics_the_agent_exposes() {
    let dashboard: Value = serde_json::from_str(&repo_file(DASHBOARD)).expect("dashboard JSON");
    let dashboard_names: BTreeSet<String> = dashboard_queries(&dashboard)
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    let rule_names = metric_names(&repo_file(RULES));
    // Guards against an extraction that silently finds nothing.
    for (what, names, want) in [
        ("dashboard", &dashboard_names, "kijo_findings_open"),
        ("rules", &rule_names, "kijo_notify_auth_rejected"),
    ] {
        assert!(
            names.contains(want),
            "{what}: {want} not found among {names:?}"
        );
    }
    let wanted: BTreeSet<String> = dashboard_names.union(&rule_names).cloned().collect();

    let webhook = Receiver::start();
    webhook.set_default(Reply::ok());
    let slack = Receiver::start();
    slack.set_default(Reply::status(400).body("invalid_payload"));
    let saas = Receiver::start();
    saas.set_default(Reply::status(401).body("bad key"));

    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let dir = TempDir::new("observability");
    let db = format!("sqlite:{}", dir.path().join("kijo.db").display());
    let kubeconfig = sb.kubeconfig.display().to_string();
    let (hook, slack_url, saas_url) = (webhook.url("/hook"), slack.url("/slack"), saas.url(""));
    let agent = Agent::start(
        &[
            ("KIJO_DATABASE_URL", db.as_str()),
            ("KIJO_CLUSTER_NAME", "observability"),
            ("KIJO_KUBECONFIG", kubeconfig.as_str()),
            ("KIJO_POLL_INTERVAL", "1s"),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0"),
            ("KIJO_NOTIFY_WEBHOOK", hook.as_str()),
            ("KIJO_NOTIFY_SLACK", slack_url.as_str()),
            ("KIJO_SAAS_ENDPOINT", saas_url.as_str()),
            ("KIJO_SAAS_API_KEY", "rejected-key"),
            ("KIJO_NOTIFY_RETRY_BASE", "1s"),
            ("KIJO_NOTIFY_BATCH_WINDOW", "0"),
        ],
        &[],
    );
    let addr = agent.health_addr();
    let cycles = || {
        agent
            .lines()
            .iter()
            .filter(|l| l.contains("poll cycle finished"))
            .count()
    };
    // The baseline announces nothing: a new CRITICAL finding after it makes lifecycle
    // events and deliveries.
    wait_until("two poll cycles", Duration::from_secs(60), || cycles() >= 2);
    add_critical_finding(
        &sb,
        "20-vulnerabilityreport-web-nginx.json",
        "CVE-2099-0101",
    );

    // Waits (with a deadline) until every wanted name is exposed; fails naming the missing.
    let deadline = Instant::now() + Duration::from_secs(90);
    let body = loop {
        let body = get(addr, "/metrics").body;
        let have = exposed(&body);
        let missing: BTreeSet<_> = wanted.difference(&have).collect();
        if missing.is_empty() {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the agent does not expose {missing:?} that the dashboard or the rules use (renamed, or never set?); /metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !webhook.requests().is_empty(),
        "the webhook received the new finding"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/install-tools installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n/metrics:\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Adds a CRITICAL finding to a fixture report with a newer scan time (`kubectl patch`).
fn add_critical_finding(sb: &Sandbox, fixture: &str, cve: &str) {
    let path = Sandbox::fixtures_dir().join(fixture);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut vulns = report["report"]["vulnerabilities"]
        .as_array()
        .unwrap()
        .clone();
    vulns.push(json!({
        "vulnerabilityID": cve, "resource": "openssl", "installedVersion": "3.0.11-1",
        "fixedVersion": "3.0.15-1", "severity": "CRITICAL", "title": "a test finding",
        "primaryLink": format!("https://avd.aquasec.com/nvd/{}", cve.to_lowercase()),
        "links": [], "target": ""
    }));
    // Scanned now, as Trivy Operator stamps a rescan: a finding first seen after the baseline
    // completed is an announced one (the oldest-open gauge counts only those).
    let scanned = jiff::Timestamp::now().to_string();
    let patch = json!({"report": {"updateTimestamp": scanned, "vulnerabilities": vulns}});
    sb.kubectl_ok(&[
        "patch",
        "vulnerabilityreports",
        "-n",
        report["metadata"]["namespace"].as_str().unwrap(),
        report["metadata"]["name"].as_str().unwrap(),
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}
