//! Notification delivery against a real HTTP receiver on 127.0.0.1. Retries and dead letters
//! are driven by the code the agent runs: the outbox [`Dispatcher`] over a real embedded store,
//! with the deliverer's retry policy made fast.

use std::time::{Duration, Instant};

use kijo_agent::lifecycle::{AssetId, Finding, FindingKey, Observation};
use kijo_agent::metrics::Registry;
use kijo_agent::notify::deliver::DelivererConfig;
use kijo_agent::notify::event::{Change, ChangeKind, Severity};
use kijo_agent::notify::group::{Message, group, select};
use kijo_agent::notify::metrics::{FailureLabels, TargetLabels};
use kijo_agent::notify::policy::DeliveryPolicy;
use kijo_agent::notify::{
    Deliverer, Dispatcher, NotifyMetrics, NotifySettings, Outcome, Target, send_test_message,
    signature,
};
use kijo_agent::secret::Secret;
use kijo_agent::store::{DatabaseTarget, Store};

use crate::support::agent::TempDir;
use crate::support::receiver::{Receiver, Reply, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const CLUSTER: &str = "production-eu";

fn finding(cve: &str) -> Finding {
    Finding {
        key: FindingKey {
            vulnerability_id: cve.to_owned(),
            package: "golang.org/x/crypto".to_owned(),
        },
        severity: Severity::Critical,
        installed_version: "0.20.0".to_owned(),
        fixed_version: "0.31.0".to_owned(),
        title: "golang.org/x/crypto/ssh: misuse of ServerConfig".to_owned(),
        link: format!("https://avd.aquasec.com/nvd/{}", cve.to_lowercase()),
        package_path: String::new(),
    }
}

fn asset(namespace: &str, workload: &str) -> AssetId {
    AssetId {
        namespace: namespace.to_owned(),
        workload_kind: "Deployment".to_owned(),
        workload: workload.to_owned(),
        container: "app".to_owned(),
    }
}

fn change(event_id: &str, namespace: &str, workload: &str, cve: &str) -> Change {
    Change {
        kind: ChangeKind::New,
        event_id: event_id.to_owned(),
        cluster: CLUSTER.to_owned(),
        asset: asset(namespace, workload),
        image: format!("registry.example.com/{workload}:1.2.3"),
        finding: finding(cve),
        previous_severity: None,
        peak_severity: Severity::Critical,
        occurred_at: "2024-01-15T10:30:00Z".parse().unwrap(),
    }
}

/// A real outbox: an embedded store in which one scan per (namespace, workload, CVE) has
/// queued a new CRITICAL finding for `target`, so each namespace is one message.
struct Outbox {
    dir: TempDir,
    database: DatabaseTarget,
}

impl Outbox {
    fn with_new_findings(target: &str, findings: &[(&str, &str, &str)]) -> Outbox {
        let dir = TempDir::new("notify-outbox");
        let database =
            DatabaseTarget::parse(&format!("sqlite:{}", dir.path().join("k.db").display()))
                .unwrap();
        let mut store = Store::open(&database).unwrap();
        for (namespace, workload, cve) in findings {
            let observation = Observation {
                cluster: CLUSTER.to_owned(),
                asset: asset(namespace, workload),
                image: format!("registry.example.com/{workload}:1.2.3"),
                scanned_at: "2024-01-15T10:30:00Z".parse().unwrap(),
                revision: None,
                findings: vec![finding(cve)],
            };
            store
                .apply(&observation, None, false, &[target.to_owned()])
                .unwrap();
        }
        Outbox { dir, database }
    }

    /// The agent's notify loop for `target` over this outbox, retrying per `deliverer`, each
    /// message at once (no batch window).
    fn dispatcher(
        &self,
        target: Target,
        deliverer: Deliverer,
        metrics: Option<NotifyMetrics>,
    ) -> Dispatcher {
        self.dispatcher_with_window(target, deliverer, metrics, Duration::ZERO)
    }

    /// [`Outbox::dispatcher`] with a batch window.
    fn dispatcher_with_window(
        &self,
        target: Target,
        deliverer: Deliverer,
        metrics: Option<NotifyMetrics>,
        batch_window: Duration,
    ) -> Dispatcher {
        let policy = deliverer.config().policy.clone();
        let settings = NotifySettings {
            targets: vec![target],
            min_severity: Severity::Critical,
            notify_workload_removed: false,
            details_url: None,
            max_age: policy.max_age,
            batch_window,
            allow_insecure_http: true,
            retry_base: policy.base,
        };
        Dispatcher::with_parts(CLUSTER, settings, self.database.clone(), deliverer, metrics)
    }

    /// (message id, state, last error) of every stored message, as an operator inspects them.
    fn messages(&self) -> Vec<(String, String, Option<String>)> {
        let c = rusqlite::Connection::open(self.dir.path().join("k.db")).unwrap();
        let mut stmt = c
            .prepare("SELECT message_id, state, last_error FROM notification_messages ORDER BY message_id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// Runs the dispatcher until nothing is pending (or [`WAIT`] passes); the number still pending.
fn drain(dispatcher: &mut Dispatcher) -> u64 {
    dispatcher.drain(Instant::now() + WAIT, &|| false)
}

/// Fast retries so tests spend milliseconds, not minutes, in backoff.
fn deliverer(metrics: Option<NotifyMetrics>) -> Deliverer {
    let mut config = DelivererConfig::new(CLUSTER);
    config.timeout = Duration::from_secs(5);
    config.details_url = Some("https://kijo.example.com/clusters/{cluster}".to_owned());
    config.policy = DeliveryPolicy {
        base: Duration::from_millis(40),
        cap: Duration::from_millis(150),
        max_retry_after: Duration::from_secs(3600),
        max_age: Duration::from_secs(60),
        auth_retry: Duration::from_secs(3600),
    };
    Deliverer::new(config, metrics)
}

fn webhook(receiver: &Receiver, secret: Option<&str>) -> Target {
    Target::Webhook {
        url: Secret::new(receiver.url("/hooks/s3cr3t-path")),
        secret: secret.map(|s| Secret::new(s.to_owned())),
    }
}

fn one_message() -> Message {
    group(vec![
        change("e1", "default", "web-app", "CVE-2024-45337"),
        change("e2", "default", "api-server", "CVE-2024-3817"),
    ])
    .remove(0)
}

#[test]
fn webhook_body_has_readme_fields_and_signature_verifies() {
    let receiver = Receiver::start();
    let d = deliverer(None);
    let message = one_message();
    assert_eq!(
        d.send_batch(
            &webhook(&receiver, Some("whsec_123")),
            std::slice::from_ref(&message),
            0
        ),
        Outcome::Delivered
    );
    let req = receiver.wait_for_requests(1, WAIT).remove(0);
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/s3cr3t-path");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("idempotency-key"), Some(message.id.as_str()));
    assert_eq!(req.header("x-kijo-event"), Some("vulnerabilities_detected"));

    // The receiver's side of the documented scheme: HMAC over "<timestamp>.<raw body>".
    let ts = req.header("x-kijo-timestamp").expect("timestamp header");
    let sig = req.header("x-kijo-signature").expect("signature header");
    assert!(signature::verify(b"whsec_123", ts, &req.body, sig));
    assert!(!signature::verify(b"wrong", ts, &req.body, sig));
    let age = jiff::Timestamp::now().as_second() - ts.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp is current: {age}");

    let body = req.json();
    assert_eq!(body["cluster"], "production-eu");
    assert_eq!(body["event"], "vulnerabilities_detected");
    assert_eq!(body["severity"], "CRITICAL");
    assert_eq!(body["count"], 2);
    assert_eq!(
        body["workloads"],
        serde_json::json!(["api-server", "web-app"])
    );
    assert_eq!(body["timestamp"], "2024-01-15T10:30:00Z");
    assert_eq!(body["id"], message.id.as_str());
    let findings = body["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[1]["workload"], "web-app");
    assert_eq!(findings[1]["cve"], "CVE-2024-45337");
    assert_eq!(findings[1]["fixed_version"], "0.31.0");

    // Without a secret there is no signature.
    d.send_batch(&webhook(&receiver, None), std::slice::from_ref(&message), 0);
    let unsigned = receiver.wait_for_requests(2, WAIT).remove(1);
    assert_eq!(unsigned.header("x-kijo-signature"), None);
}

#[test]
fn slack_gets_a_valid_post_within_limits_for_5000_findings() {
    let receiver = Receiver::start();
    let d = deliverer(None);
    let mut changes = Vec::new();
    for w in 0..250 {
        for v in 0..20 {
            changes.push(change(
                &format!("{w}/{v}"),
                "payments",
                &format!("worker-{w:03}"),
                &format!("CVE-2024-{v:05}"),
            ));
        }
    }
    let messages = group(select(changes, Severity::High, false));
    assert_eq!(messages.len(), 1);
    let target = Target::Slack {
        url: Secret::new(receiver.url("/services/T000/B000/XXXX")),
    };
    assert_eq!(
        d.send_batch(&target, std::slice::from_ref(&messages[0]), 0),
        Outcome::Delivered
    );
    let body = receiver.wait_for_requests(1, WAIT).remove(0).json();
    let blocks = body["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50, "{} blocks", blocks.len());
    assert_eq!(
        blocks[0]["text"]["text"],
        "🚨 New Critical Vulnerabilities in production-eu"
    );
    for b in blocks {
        if let Some(t) = b["text"]["text"].as_str() {
            assert!(t.chars().count() <= 3000);
        }
    }
    let text = body.to_string();
    assert!(text.contains("…and "), "truncated with …and N more");
    assert!(text.contains("https://kijo.example.com/clusters/production-eu"));
}

#[test]
fn too_many_requests_with_retry_after_is_retried_after_that_delay() {
    let receiver = Receiver::start();
    receiver.script([
        Reply::status(429).header("Retry-After", "17"),
        Reply::status(503).header("Retry-After", "2"),
    ]);
    let d = deliverer(None);
    let target = webhook(&receiver, None);
    let message = one_message();
    match d.send_batch(&target, std::slice::from_ref(&message), 0) {
        Outcome::Retry { after, reason } => {
            assert_eq!(after, Duration::from_secs(17));
            assert!(reason.contains("429"), "{reason}");
        }
        other => panic!("expected retry, got {other:?}"),
    }
    assert!(matches!(
        d.send_batch(&target, std::slice::from_ref(&message), 1),
        Outcome::Retry { after, .. } if after == Duration::from_secs(2)
    ));
}

#[test]
fn bad_request_is_permanent_and_dead_lettered_without_a_retry_storm() {
    let receiver = Receiver::start();
    receiver.set_default(Reply::status(400).body("invalid_payload"));
    let mut registry = Registry::default();
    let metrics = NotifyMetrics::new(&mut registry);
    let d = deliverer(Some(metrics.clone()));
    let target = Target::Slack {
        url: Secret::new(receiver.url("/services/T/B/SECRETTOKEN")),
    };
    let message = one_message();
    match d.send_batch(&target, std::slice::from_ref(&message), 0) {
        Outcome::Permanent { status, reason } => {
            assert_eq!(status, Some(400));
            assert!(
                reason.contains("invalid_payload"),
                "body excerpt kept: {reason}"
            );
            assert!(!reason.contains("SECRETTOKEN"));
        }
        other => panic!("expected permanent, got {other:?}"),
    }
    // The agent's loop over a real outbox: one attempt, dead-lettered, never retried.
    let outbox = Outbox::with_new_findings("slack", &[("default", "web-app", "CVE-2024-45337")]);
    let mut dispatcher = outbox.dispatcher(target, d, Some(metrics));
    assert_eq!(drain(&mut dispatcher), 0, "nothing left pending");
    let stored = outbox.messages();
    assert_eq!(stored.len(), 1);
    let (_, state, reason) = &stored[0];
    assert_eq!(state, "dead");
    let reason = reason.as_deref().unwrap_or_default();
    assert!(reason.contains("HTTP 400"), "{reason}");
    assert!(reason.contains("invalid_payload"), "{reason}");
    assert_eq!(
        dispatcher.pass(&|| false).unwrap().dead_lettered,
        0,
        "a dead letter is not tried again"
    );
    assert_eq!(receiver.requests().len(), 2, "one attempt each, no retries");
    let text = kijo_agent::metrics::render(&registry);
    assert!(text.contains(
        r#"kijo_notify_messages_dead_lettered_total{target="slack",event="vulnerabilities_detected"} 1"#
    ), "{text}");
}

#[test]
fn saas_rejected_key_is_a_distinct_outcome_and_a_metric() {
    let receiver = Receiver::start();
    receiver.script([
        Reply::status(401).body(r#"{"error":"invalid_key"}"#),
        Reply::status(403),
        Reply::status(202),
    ]);
    let mut registry = Registry::default();
    let metrics = NotifyMetrics::new(&mut registry);
    let d = deliverer(Some(metrics.clone()));
    let target = Target::Saas {
        endpoint: Secret::new(receiver.url("/")),
        api_key: Secret::new("kijo_live_key".to_owned()),
    };
    let message = one_message();
    assert!(matches!(
        d.send_batch(&target, std::slice::from_ref(&message), 0),
        Outcome::AuthRejected { status: 401, reason } if reason.contains("invalid_key")
    ));
    let rejected = || {
        metrics
            .auth_rejected
            .get_or_create(&TargetLabels {
                target: "saas".to_owned(),
            })
            .get()
    };
    assert_eq!(rejected(), 1);
    assert!(matches!(
        d.heartbeat(&target, 0),
        Outcome::AuthRejected { status: 403, .. }
    ));
    assert_eq!(
        d.send_batch(&target, std::slice::from_ref(&message), 0),
        Outcome::Delivered
    );
    assert_eq!(rejected(), 0, "cleared by an accepted request");

    let reqs = receiver.wait_for_requests(3, WAIT);
    assert_eq!(reqs[0].path, "/v1/events");
    assert_eq!(
        reqs[0].header("authorization"),
        Some("Bearer kijo_live_key")
    );
    assert_eq!(reqs[0].header("idempotency-key"), Some(message.id.as_str()));
    let batch = reqs[0].json();
    assert_eq!(batch["agent"]["cluster"], "production-eu");
    assert_eq!(batch["agent"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(batch["events"][0]["id"], message.id.as_str());
    assert_eq!(reqs[1].path, "/v1/heartbeat");
    assert_eq!(reqs[1].json()["agent"]["cluster"], "production-eu");
}

#[test]
fn receiver_down_is_a_retry_without_the_url_in_the_reason() {
    let mut receiver = Receiver::start();
    receiver.stop();
    let d = deliverer(None);
    match d.send_batch(
        &webhook(&receiver, None),
        std::slice::from_ref(&one_message()),
        0,
    ) {
        Outcome::Retry { after, reason } => {
            assert!(after <= Duration::from_millis(40));
            assert!(
                !reason.contains("s3cr3t") && !reason.contains("127.0.0.1"),
                "{reason}"
            );
        }
        other => panic!("expected retry, got {other:?}"),
    }
}

#[test]
fn down_for_several_retry_periods_then_up_delivers_each_message_exactly_once() {
    let mut receiver = Receiver::start();
    receiver.stop();
    let mut registry = Registry::default();
    let metrics = NotifyMetrics::new(&mut registry);
    let d = deliverer(Some(metrics.clone()));
    let target = webhook(&receiver, Some("k"));
    let outbox = Outbox::with_new_findings(
        "webhook",
        &[
            ("default", "web-app", "CVE-1"),
            ("payments", "api", "CVE-2"),
            ("batch", "job", "CVE-3"),
        ],
    );
    let mut dispatcher = outbox.dispatcher(target, d, Some(metrics.clone()));

    let pending = std::thread::scope(|s| {
        let worker = s.spawn(|| drain(&mut dispatcher));
        let failed = || {
            metrics
                .failed
                .get_or_create(&FailureLabels {
                    target: "webhook".to_owned(),
                    event: "vulnerabilities_detected".to_owned(),
                    outcome: "retry".to_owned(),
                })
                .get()
        };
        // Several retry periods: every message has failed at least three times.
        wait_until(WAIT, "three failed rounds", || failed() >= 9);
        // Back up, but flaky at first: one 503 and one dropped connection.
        receiver.script([Reply::status(503), Reply::Drop]);
        receiver.restart();
        worker.join().unwrap()
    });

    let stored = outbox.messages();
    let answers: Vec<_> = receiver
        .requests()
        .iter()
        .map(|r| (r.answered, r.header("idempotency-key").map(str::to_owned)))
        .collect();
    assert_eq!(pending, 0, "{stored:?} {answers:?}");
    assert_eq!(stored.len(), 3, "one message per namespace");
    for (id, state, _) in &stored {
        assert_eq!(state, "delivered", "message {id}");
        let accepted = receiver
            .requests()
            .iter()
            .filter(|r| r.header("idempotency-key") == Some(id) && r.answered == Some(200))
            .count();
        assert_eq!(accepted, 1, "message {id} accepted exactly once");
    }
    assert_eq!(receiver.requests().len(), 5, "3 deliveries + 503 + dropped");
}

#[test]
fn test_message_reaches_every_target() {
    let receiver = Receiver::start();
    receiver.set_default(Reply::status(202));
    let d = deliverer(None);
    let targets = [
        Target::Slack {
            url: Secret::new(receiver.url("/slack")),
        },
        Target::Webhook {
            url: Secret::new(receiver.url("/webhook")),
            secret: Some(Secret::new("k".to_owned())),
        },
        Target::Saas {
            endpoint: Secret::new(receiver.url("")),
            api_key: Secret::new("key".to_owned()),
        },
    ];
    let results = send_test_message(&d, &targets);
    for (name, masked, outcome) in &results {
        assert_eq!(*outcome, Outcome::Delivered, "{name}");
        assert!(
            !masked.contains("/slack") && !masked.contains("/webhook"),
            "{masked}"
        );
    }
    let reqs = receiver.wait_for_requests(3, WAIT);
    let path = |p: &str| {
        reqs.iter()
            .find(|r| r.path == p)
            .unwrap_or_else(|| panic!("{p}"))
    };
    assert!(
        path("/slack").json()["text"]
            .as_str()
            .unwrap()
            .contains("test message")
    );
    let hook = path("/webhook");
    assert_eq!(hook.json()["event"], "test");
    assert!(signature::verify(
        b"k",
        hook.header("x-kijo-timestamp").unwrap(),
        &hook.body,
        hook.header("x-kijo-signature").unwrap()
    ));
    assert_eq!(
        path("/v1/heartbeat").header("authorization"),
        Some("Bearer key")
    );
}

#[test]
fn below_threshold_and_workload_removed_are_not_sent_unless_configured() {
    let mut low = change("l", "default", "web", "CVE-9");
    low.finding.severity = Severity::Medium;
    low.peak_severity = Severity::Medium;
    let mut removed = change("r", "default", "old", "");
    removed.kind = ChangeKind::WorkloadRemoved;
    let selected = select(
        vec![low.clone(), removed.clone()],
        Severity::Critical,
        false,
    );
    assert!(group(selected).is_empty());
    let selected = select(vec![low, removed], Severity::Critical, true);
    let messages = group(selected);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].kind, ChangeKind::WorkloadRemoved);
}

#[test]
fn a_hung_target_times_out_and_is_retried() {
    let receiver = Receiver::start();
    receiver.script([Reply::Hang(Duration::from_secs(30))]);
    let mut config = DelivererConfig::new(CLUSTER);
    config.timeout = Duration::from_millis(500);
    let d = Deliverer::new(config, None);
    let started = Instant::now();
    let outcome = d.send_batch(
        &webhook(&receiver, None),
        std::slice::from_ref(&one_message()),
        0,
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the request timeout"
    );
    match outcome {
        Outcome::Retry { reason, .. } => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("expected retry, got {other:?}"),
    }
    // The next attempt goes through.
    assert_eq!(
        d.send_batch(
            &webhook(&receiver, None),
            std::slice::from_ref(&one_message()),
            1
        ),
        Outcome::Delivered
    );
}

#[test]
fn the_delivery_loop_waits_out_retry_after() {
    let receiver = Receiver::start();
    receiver.script([Reply::status(429).header("Retry-After", "1")]);
    let d = deliverer(None);
    let outbox = Outbox::with_new_findings("webhook", &[("default", "web-app", "CVE-1")]);
    let mut dispatcher = outbox.dispatcher(webhook(&receiver, None), d, None);
    assert_eq!(drain(&mut dispatcher), 0);
    let stored = outbox.messages();
    assert_eq!(stored[0].1, "delivered");
    let reqs = receiver.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].header("idempotency-key"),
        Some(stored[0].0.as_str())
    );
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "second attempt after Retry-After, not after the 40 ms backoff: {gap:?}"
    );
}

#[test]
fn a_target_failing_past_the_maximum_age_dead_letters_the_message() {
    let receiver = Receiver::start();
    receiver.set_default(Reply::status(503));
    let mut config = DelivererConfig::new(CLUSTER);
    config.timeout = Duration::from_secs(5);
    config.policy.base = Duration::from_millis(20);
    config.policy.cap = Duration::from_millis(50);
    config.policy.max_age = Duration::from_millis(400);
    let d = Deliverer::new(config, None);
    let outbox = Outbox::with_new_findings("webhook", &[("default", "web-app", "CVE-1")]);
    let mut dispatcher = outbox.dispatcher(webhook(&receiver, None), d, None);
    let started = Instant::now();
    assert_eq!(drain(&mut dispatcher), 0, "dead-lettered, not pending");
    let stored = outbox.messages();
    assert_eq!(stored.len(), 1);
    let (_, state, reason) = &stored[0];
    assert_eq!(state, "dead");
    let reason = reason.as_deref().unwrap_or_default();
    assert!(reason.contains("KIJO_NOTIFY_MAX_AGE"), "{reason}");
    assert!(reason.contains("HTTP 503"), "{reason}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(
        started.elapsed() < WAIT,
        "gave up at the maximum age, not the deadline"
    );
    assert!(receiver.requests().len() >= 3, "retried until then");
}

/// A message held by its batch window goes out when the window closes: the notify thread wakes
/// at that instant, not only on its idle timer ([`IDLE_WAKE`], 5 s) or at the next poll cycle.
#[test]
fn a_held_message_goes_out_when_its_batch_window_closes() {
    use kijo_agent::notify::outbox::IDLE_WAKE;
    let window = Duration::from_millis(1500);
    let receiver = Receiver::start();
    let before_queued = Instant::now();
    let outbox = Outbox::with_new_findings("webhook", &[("default", "web-app", "CVE-1")]);
    let dispatcher =
        outbox.dispatcher_with_window(webhook(&receiver, None), deliverer(None), None, window);
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let worker = std::thread::spawn(move || dispatcher.run(wake_rx, stop_rx));
    // "A cycle was committed": the first pass sees the row inside its window and holds it.
    wake_tx.send(()).unwrap();
    let got = receiver.wait_for_requests(1, WAIT);
    let waited = before_queued.elapsed();
    drop(stop_tx);
    worker.join().unwrap();
    assert_eq!(got.len(), 1, "one message");
    assert!(
        waited >= window,
        "sent before its window closed: {waited:?}"
    );
    assert!(
        waited < window + (IDLE_WAKE - window) / 2,
        "sent {waited:?} after queueing: the thread slept past the window's close"
    );
}
