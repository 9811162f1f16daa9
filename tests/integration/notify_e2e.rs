//! Issue 5 end to end: the real agent binary against the Kubernetes-API sandbox (changed with
//! real kubectl), a recording webhook receiver on loopback, and the embedded store or the real
//! PostgreSQL. Every wait is a condition with a deadline.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::agent::{Agent, TempDir, run, wait_until};
use crate::support::lifecycle::populate;
use crate::support::pg::TestDb;
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::sandbox::Sandbox;

const CLUSTER: &str = "e2e";
/// The new critical finding the scenario adds to three containers of two workloads in `shop`.
const NEW_CVE: &str = "CVE-2099-0001";
/// A new HIGH finding in the same cycle: recorded, below the CRITICAL threshold, never sent.
const LOW_CVE: &str = "CVE-2099-0002";

/// Everything one scenario needs; the database is SQLite unless `pg` is given.
struct Setup {
    sb: Sandbox,
    _dir: TempDir,
    _pg: Option<TestDb>,
    env: Vec<(String, String)>,
}

impl Setup {
    fn new(receiver: &Receiver, pg: bool, extra: &[(&str, &str)]) -> Setup {
        let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
        let dir = TempDir::new("notify-e2e");
        let pg = pg.then(|| TestDb::create("notify_e2e"));
        let db = match &pg {
            Some(db) => db.url_with_password("x"),
            None => format!("sqlite:{}", dir.path().join("kijo.db").display()),
        };
        let mut env: Vec<(String, String)> = [
            ("KIJO_DATABASE_URL", db.as_str()),
            ("KIJO_CLUSTER_NAME", CLUSTER),
            ("KIJO_KUBECONFIG", &sb.kubeconfig.display().to_string()),
            ("KIJO_POLL_INTERVAL", "1s"),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0"),
            ("KIJO_NOTIFY_WEBHOOK", &receiver.url("/hook")),
            ("KIJO_NOTIFY_RETRY_BASE", "1s"),
            // These tests expect each cycle's message at once, not after a batch window.
            ("KIJO_NOTIFY_BATCH_WINDOW", "0"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        Setup {
            sb,
            _dir: dir,
            _pg: pg,
            env,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn start(&self) -> Agent {
        Agent::start(&self.env(), &[])
    }

    /// Adds findings (CVE, severity) to a fixture report with a newer scan time, via
    /// `kubectl patch --type=merge`.
    fn add_findings(&self, fixture: &str, scanned_at: &str, add: &[(&str, &str)]) {
        let path = Sandbox::fixtures_dir().join(fixture);
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut vulns = report["report"]["vulnerabilities"]
            .as_array()
            .unwrap()
            .clone();
        for (cve, severity) in add {
            vulns.push(json!({
                "vulnerabilityID": cve,
                "resource": "openssl",
                "installedVersion": "3.0.11-1",
                "fixedVersion": "3.0.15-1",
                "severity": severity,
                "title": "a test finding",
                "primaryLink": format!("https://avd.aquasec.com/nvd/{}", cve.to_lowercase()),
                "links": [],
                "target": ""
            }));
        }
        let patch = json!({"report": {"updateTimestamp": scanned_at, "vulnerabilities": vulns}});
        self.sb.kubectl_ok(&[
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

    /// The scenario's change: `NEW_CVE` (critical) in web/nginx, web/log-shipper and the
    /// inventory worker, `LOW_CVE` (high) in web/nginx.
    fn introduce(&self) {
        let at = "2026-11-21T08:00:00Z";
        self.add_findings(
            "20-vulnerabilityreport-web-nginx.json",
            at,
            &[(NEW_CVE, "CRITICAL"), (LOW_CVE, "HIGH")],
        );
        self.add_findings(
            "21-vulnerabilityreport-web-log-shipper.json",
            at,
            &[(NEW_CVE, "CRITICAL")],
        );
        self.add_findings(
            "23-vulnerabilityreport-hashed.json",
            at,
            &[(NEW_CVE, "CRITICAL")],
        );
    }
}

fn cycles(agent: &Agent) -> Vec<Value> {
    agent
        .lines()
        .iter()
        .filter(|l| l.contains("poll cycle finished"))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until `n` more poll cycles than `after` have finished.
fn wait_cycles(agent: &Agent, after: usize, n: usize) -> usize {
    wait_until("poll cycles", Duration::from_secs(60), || {
        cycles(agent).len() >= after + n
    });
    cycles(agent).len()
}

/// Waits for the baseline and one cycle after it; asserts the baseline sent nothing.
fn past_baseline(agent: &Agent, receiver: &Receiver) -> usize {
    let n = wait_cycles(agent, 0, 2);
    assert_eq!(cycles(agent)[0]["baseline"], true);
    // The notify thread wakes after every cycle; give it those wake-ups before asserting.
    let n = wait_cycles(agent, n, 1);
    assert!(
        receiver.requests().is_empty(),
        "the baseline sent {:?}",
        summary(&receiver.requests())
    );
    n
}

/// (status answered, Idempotency-Key) per request, for short assertion messages.
fn summary(requests: &[Recorded]) -> Vec<(Option<u16>, String)> {
    requests
        .iter()
        .map(|r| {
            let key = r.header("idempotency-key").unwrap_or("-");
            (r.answered, key.chars().take(12).collect())
        })
        .collect()
}

fn delivered(receiver: &Receiver) -> Vec<Recorded> {
    receiver
        .requests()
        .into_iter()
        .filter(|r| r.answered == Some(200))
        .collect()
}

/// Successful deliveries per Idempotency-Key.
fn per_key(requests: &[Recorded]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in requests {
        let key = r
            .header("idempotency-key")
            .expect("Idempotency-Key")
            .to_owned();
        *out.entry(key).or_default() += 1;
    }
    out
}

fn assert_grouped_new_message(r: &Recorded) {
    let body = r.json();
    assert_eq!(body["event"], "vulnerabilities_detected", "{body}");
    assert_eq!(body["cluster"], CLUSTER);
    assert_eq!(body["severity"], "CRITICAL");
    assert_eq!(body["count"], 3, "three containers, one message: {body}");
    assert_eq!(
        body["workloads"],
        json!([
            "inventory-synchronisation-service-with-an-unusually-long-name",
            "web"
        ])
    );
    assert_eq!(body["id"], r.header("idempotency-key").unwrap());
    let cves: Vec<&str> = body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["cve"].as_str().unwrap())
        .collect();
    assert!(cves.iter().all(|c| *c == NEW_CVE), "{cves:?}");
}

#[test]
fn grouped_message_once_baseline_silent_and_below_threshold_recorded_not_sent() {
    let receiver = Receiver::start();
    let saas = Receiver::start();
    saas.set_default(Reply::status(202));
    let saas_url = saas.url("/api");
    let setup = Setup::new(
        &receiver,
        false,
        &[
            ("KIJO_SAAS_ENDPOINT", saas_url.as_str()),
            ("KIJO_SAAS_API_KEY", "k"),
        ],
    );
    let agent = setup.start();
    let n = past_baseline(&agent, &receiver);

    setup.introduce();
    let got = receiver.wait_for_requests(1, Duration::from_secs(60));
    assert_grouped_new_message(&got[0]);
    // More cycles and wake-ups: still exactly one message.
    wait_cycles(&agent, n, 4);
    assert_eq!(
        receiver.requests().len(),
        1,
        "{:?}",
        summary(&receiver.requests())
    );

    // The SaaS got its heartbeat and the same message as a one-event batch.
    let events: Vec<Recorded> = saas
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/events")
        .collect();
    assert_eq!(events.len(), 1, "{:?}", summary(&saas.requests()));
    assert_eq!(events[0].header("authorization"), Some("Bearer k"));
    let body = events[0].json();
    assert_eq!(body["events"][0]["id"], got[0].json()["id"]);
    assert_eq!(body["agent"]["cluster"], CLUSTER);
    assert!(
        saas.requests()
            .iter()
            .any(|r| r.path == "/api/v1/heartbeat")
    );

    // The HIGH finding is in the history all the same.
    let (status, out, err) = run(&setup.env(), &["history"]);
    assert!(status.success(), "{err}");
    assert!(out.contains(LOW_CVE), "{out}");
    assert!(out.contains(NEW_CVE), "{out}");
}

#[test]
fn receiver_down_for_several_retries_then_each_message_delivered_once() {
    let mut receiver = Receiver::start();
    let setup = Setup::new(&receiver, true, &[]);
    let agent = setup.start();
    past_baseline(&agent, &receiver);

    receiver.stop();
    setup.introduce();
    wait_until("three failed attempts", Duration::from_secs(60), || {
        agent
            .lines()
            .iter()
            .filter(|l| l.contains("notification delivery failed, will retry"))
            .count()
            >= 3
    });
    let metrics = crate::support::agent::get(agent.health_addr(), "/metrics").body;
    assert!(
        metrics.contains(r#"kijo_notify_outbox_pending{target="webhook"} 1"#),
        "{metrics}"
    );
    receiver.restart();
    receiver.wait_for_requests(1, Duration::from_secs(60));
    let n = cycles(&agent).len();
    wait_cycles(&agent, n, 4);
    let ok = delivered(&receiver);
    assert_eq!(ok.len(), 1, "{:?}", summary(&receiver.requests()));
    assert!(per_key(&ok).values().all(|n| *n == 1));
    assert_grouped_new_message(&ok[0]);
}

#[test]
fn retry_after_on_429_is_respected() {
    let receiver = Receiver::start();
    let setup = Setup::new(&receiver, false, &[]);
    let agent = setup.start();
    past_baseline(&agent, &receiver);

    receiver.script([Reply::status(429).header("Retry-After", "3")]);
    setup.introduce();
    let got = receiver.wait_for_requests(2, Duration::from_secs(60));
    assert_eq!(got[0].answered, Some(429));
    assert_eq!(got[1].answered, Some(200));
    let waited = got[1].at.duration_since(got[0].at);
    assert!(
        waited >= Duration::from_millis(2900),
        "retried after {waited:?}, Retry-After said 3 s"
    );
    assert_eq!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key"),
        "a retry is the same message"
    );
    assert_eq!(
        got[0].body, got[1].body,
        "a retry is byte-for-byte the same body"
    );
}

#[test]
fn bad_request_is_dead_lettered_without_a_retry_storm() {
    let receiver = Receiver::start();
    receiver.set_default(Reply::status(400).body("invalid_payload"));
    let setup = Setup::new(&receiver, false, &[]);
    let agent = setup.start();
    past_baseline(&agent, &receiver);

    setup.introduce();
    receiver.wait_for_requests(1, Duration::from_secs(60));
    agent.wait_for_line("dead-letter log line", Duration::from_secs(30), |l| {
        l.contains("notification dead-lettered")
    });
    let n = cycles(&agent).len();
    wait_cycles(&agent, n, 5);
    // Never retried: every message was sent exactly once. The three report edits usually land
    // in one cycle (one message); on a loaded machine they may straddle two (two messages),
    // which is a different message, not a retry.
    let keys: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("Idempotency-Key").unwrap_or_default().to_owned())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert!(
        (1..=2).contains(&keys.len()) && distinct.len() == keys.len(),
        "never retried: {keys:?}"
    );
    let metrics = crate::support::agent::get(agent.health_addr(), "/metrics").body;
    assert!(
        metrics.contains(&format!(
            r#"kijo_notify_messages_dead_lettered_total{{target="webhook",event="vulnerabilities_detected"}} {}"#,
            keys.len()
        )),
        "{metrics}"
    );
}

#[test]
fn sigkill_between_commit_and_send_is_delivered_after_restart_once() {
    let receiver = Receiver::start();
    let setup = Setup::new(&receiver, true, &[]);
    let agent = setup.start();
    past_baseline(&agent, &receiver);

    // The target hangs: the events are committed and the message is on the wire, unanswered.
    receiver.set_default(Reply::Hang(Duration::from_secs(30)));
    setup.introduce();
    let first = receiver.wait_for_requests(1, Duration::from_secs(60));
    let key = first[0].header("idempotency-key").unwrap().to_owned();
    drop(agent); // SIGKILL
    receiver.set_default(Reply::ok());

    let agent = setup.start();
    wait_until(
        "a delivery after the restart",
        Duration::from_secs(60),
        || !delivered(&receiver).is_empty(),
    );
    let n = cycles(&agent).len();
    wait_cycles(&agent, n, 4);
    let ok = delivered(&receiver);
    assert_eq!(ok.len(), 1, "{:?}", summary(&receiver.requests()));
    assert_eq!(ok[0].header("idempotency-key"), Some(key.as_str()));
    assert_grouped_new_message(&ok[0]);
}

#[test]
fn once_delivers_what_its_cycle_produced_before_exiting() {
    let receiver = Receiver::start();
    let setup = Setup::new(&receiver, false, &[]);
    let (status, _, err) = run(&setup.env(), &["--once"]);
    assert!(status.success(), "{err}");
    assert!(receiver.requests().is_empty(), "baseline sent something");

    setup.introduce();
    let (status, _, err) = run(&setup.env(), &["--once"]);
    assert!(status.success(), "{err}");
    assert!(err.contains("notifications delivered"), "{err}");
    let got = receiver.requests();
    assert_eq!(got.len(), 1, "{:?}", summary(&got));
    assert_grouped_new_message(&got[0]);

    // A target that is down: the exit status stays the cycle's, the message stays queued.
    let mut receiver = receiver;
    receiver.stop();
    setup.add_findings(
        "22-vulnerabilityreport-postgres.json",
        "2026-11-22T08:00:00Z",
        &[(NEW_CVE, "CRITICAL")],
    );
    let mut env = setup.env();
    env.push(("KIJO_NOTIFY_ONCE_WAIT", "2s"));
    let (status, _, err) = run(&env, &["--once"]);
    assert!(status.success(), "{err}");
    assert!(err.contains("notifications still queued at exit"), "{err}");
    receiver.restart();
    let (status, _, err) = run(&setup.env(), &["--once"]);
    assert!(status.success(), "{err}");
    let got = receiver.requests();
    assert_eq!(got.len(), 2, "{:?}", summary(&got));
    assert_eq!(got[1].json()["workloads"], json!(["postgres"]));
}

#[test]
fn notify_test_and_dry_run_cover_every_target() {
    let receiver = Receiver::start();
    let saas = Receiver::start();
    saas.set_default(Reply::status(401).body("invalid_key"));
    let slack = receiver.url("/slack");
    let saas_url = saas.url("");
    let env = [
        ("KIJO_CLUSTER_NAME", "t"),
        ("KIJO_DATABASE_URL", "sqlite:/nonexistent-dir/k.db"),
        ("KIJO_NOTIFY_SLACK", slack.as_str()),
        ("KIJO_SAAS_ENDPOINT", saas_url.as_str()),
        ("KIJO_SAAS_API_KEY", "TOPSECRET"),
    ];
    let (status, out, err) = run(&env, &["notify-test"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(out.contains("OK   slack"), "{out}");
    assert!(out.contains("FAIL saas"), "{out}");
    assert!(!out.contains("TOPSECRET") && !err.contains("TOPSECRET"));
    let slack_req = &receiver.requests()[0];
    assert_eq!(slack_req.path, "/slack");
    assert!(
        slack_req.json().to_string().contains("test message"),
        "{:?}",
        slack_req.json()
    );
    assert_eq!(
        saas.requests()[0].header("authorization"),
        Some("Bearer TOPSECRET")
    );

    let (status, out, _) = run(&env, &["--dry-run"]);
    assert_eq!(status.code(), Some(1));
    let line = |name: &str| {
        out.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name} line in {out}"))
            .to_owned()
    };
    assert!(line("notification target slack").starts_with("OK"), "{out}");
    let saas_line = line("notification target saas");
    assert!(saas_line.starts_with("FAIL"), "{out}");
    assert!(saas_line.contains("KIJO_SAAS_API_KEY"), "{out}");
    assert_eq!(
        receiver.requests().len(),
        1,
        "--dry-run sends nothing to Slack"
    );

    // All targets accepting: exit 0.
    let ok_env = [
        ("KIJO_CLUSTER_NAME", "t"),
        ("KIJO_NOTIFY_SLACK", slack.as_str()),
    ];
    let (status, out, _) = run(&ok_env, &["notify-test"]);
    assert!(status.success(), "{out}");
}

#[test]
fn sigterm_during_a_hung_send_exits_within_the_shutdown_budget() {
    let receiver = Receiver::start();
    let setup = Setup::new(&receiver, false, &[]);
    let mut agent = setup.start();
    past_baseline(&agent, &receiver);
    receiver.set_default(Reply::Hang(Duration::from_secs(60)));
    setup.introduce();
    receiver.wait_for_requests(1, Duration::from_secs(60));
    let started = std::time::Instant::now();
    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{}", agent.lines().join("\n"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_rejected_saas_key_makes_the_agent_unready_with_a_reason() {
    let receiver = Receiver::start();
    let saas = Receiver::start();
    saas.set_default(Reply::status(401).body("invalid_key"));
    let saas_url = saas.url("");
    let setup = Setup::new(
        &receiver,
        false,
        &[
            ("KIJO_SAAS_ENDPOINT", saas_url.as_str()),
            ("KIJO_SAAS_API_KEY", "TOPSECRET"),
        ],
    );
    let agent = setup.start();
    let addr = agent.health_addr();
    wait_until(
        "readiness names the rejected key",
        Duration::from_secs(30),
        || {
            let r = crate::support::agent::get(addr, "/readyz");
            r.status == 503 && r.body.contains("KIJO_SAAS_API_KEY")
        },
    );
    assert_eq!(saas.requests()[0].path, "/v1/heartbeat");
    let metrics = crate::support::agent::get(addr, "/metrics").body;
    assert!(
        metrics.contains(r#"kijo_notify_auth_rejected{target="saas"} 1"#),
        "{metrics}"
    );
    assert!(agent.lines().iter().all(|l| !l.contains("TOPSECRET")));
}

#[test]
fn two_agents_on_one_database_deliver_each_message_once() {
    let receiver = Receiver::start();
    let setup = Setup::new(&receiver, true, &[]);
    let first = setup.start();
    past_baseline(&first, &receiver);
    let second = setup.start();
    wait_cycles(&second, 0, 2);

    setup.introduce();
    receiver.wait_for_requests(1, Duration::from_secs(60));
    let (a, b) = (cycles(&first).len(), cycles(&second).len());
    wait_cycles(&first, a, 4);
    wait_cycles(&second, b, 4);
    let ok = delivered(&receiver);
    assert_eq!(ok.len(), 1, "{:?}", summary(&receiver.requests()));
    assert_grouped_new_message(&ok[0]);
}

/// A Slack endpoint that accepts connections and never answers must not hold back a healthy
/// webhook: each target is delivered in its own lane, so one target's timeouts (8 s per
/// attempt) never delay another's messages.
#[test]
fn a_target_that_never_answers_does_not_delay_the_others() {
    let receiver = Receiver::start();
    // The kernel's backlog accepts the connections; nothing ever reads or answers them.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}/services/T/B/hung", hung.local_addr().unwrap());
    let setup = Setup::new(&receiver, false, &[("KIJO_NOTIFY_SLACK", &hung_url)]);
    let agent = setup.start();
    past_baseline(&agent, &receiver);
    // Twenty namespaces with a workload deployed after the baseline and a critical finding
    // each: twenty messages per target. The StatefulSet its report names exists, so the agent
    // can tell it was created after the baseline (a report of a workload it cannot read is
    // recorded silently).
    for i in 0..20 {
        let ns = format!("lane-{i}");
        let statefulset = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "app-0", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "app-0"}}, "serviceName": "app-0",
                     "template": {"metadata": {"labels": {"app": "app-0"}},
                                  "spec": {"containers": [{"name": "main", "image": "acme/service-0:1.0.0"}]}}}
        });
        let r = setup.sb.http(
            "POST",
            &format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
            Some(&statefulset.to_string()),
            &[],
        );
        assert_eq!(r.status, 201, "create statefulset {ns}: {}", r.body);
        populate(&setup.sb, &ns, 1, 1);
    }
    // Behind the hung Slack endpoint the webhook waited for Slack's 8 s timeouts (at least
    // two per delivery pass) before its first message; in its own lane it needs no more than
    // a poll cycle and twenty local requests.
    wait_until("20 webhook messages", Duration::from_secs(12), || {
        delivered(&receiver).len() >= 20
    });
    let keys = per_key(&delivered(&receiver));
    assert_eq!(keys.len(), 20, "20 distinct messages: {keys:?}");
    assert!(keys.values().all(|n| *n == 1), "each once: {keys:?}");
    drop(hung);
}
