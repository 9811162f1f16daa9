//! The notification outbox of both stores: grouping once, stable messages, retry and dead-letter
//! state, statistics. Same expectations against SQLite and the real PostgreSQL.

use std::time::Duration;

use jiff::Timestamp;
use kijo_agent::lifecycle::{AssetId, Finding, FindingKey, Observation};
use kijo_agent::notify::plan::{assign_messages, due_messages};
use kijo_agent::severity::Severity;
use kijo_agent::store::{DatabaseTarget, MessageUpdate, Store};

use crate::support::agent::TempDir;
use crate::support::pg::TestDb;

const TARGETS: [&str; 2] = ["slack", "webhook"];

fn targets() -> Vec<String> {
    TARGETS.iter().map(|t| (*t).to_owned()).collect()
}

fn finding(cve: &str, severity: &str) -> Finding {
    Finding {
        key: FindingKey {
            vulnerability_id: cve.to_owned(),
            package: "openssl".to_owned(),
        },
        package_path: String::new(),
        severity: severity.parse().expect("a severity name"),
        installed_version: "3.0.1".to_owned(),
        fixed_version: "3.0.9".to_owned(),
        title: String::new(),
        link: String::new(),
    }
}

fn observation(workload: &str, at: &str, findings: Vec<Finding>) -> Observation {
    Observation {
        cluster: "outbox".to_owned(),
        asset: AssetId {
            namespace: "shop".to_owned(),
            workload_kind: "Deployment".to_owned(),
            workload: workload.to_owned(),
            container: "app".to_owned(),
        },
        image: "nginx:1.25.3".to_owned(),
        scanned_at: at.parse().unwrap(),
        revision: None,
        findings,
    }
}

fn exercise(target: &DatabaseTarget) {
    let mut store = Store::open(target).unwrap();
    let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
    let t = targets();

    // Baseline: recorded, no events, nothing queued.
    for w in ["web", "api"] {
        store
            .apply(
                &observation(
                    w,
                    "2026-11-27T10:00:00Z",
                    vec![finding("CVE-1", "CRITICAL")],
                ),
                None,
                true,
                &t,
            )
            .unwrap();
    }
    let a = assign_messages(
        &mut store,
        "outbox",
        Severity::Critical,
        false,
        Duration::ZERO,
        now,
    )
    .unwrap();
    assert_eq!(
        (a.messages, a.filtered),
        (0, 0),
        "the baseline queues nothing"
    );

    // One cycle: two workloads get a new critical, one a new low finding.
    for w in ["web", "api"] {
        store
            .apply(
                &observation(
                    w,
                    "2026-11-27T11:00:00Z",
                    vec![
                        finding("CVE-1", "CRITICAL"),
                        finding("CVE-2", "CRITICAL"),
                        finding("CVE-3", "LOW"),
                    ],
                ),
                None,
                false,
                &t,
            )
            .unwrap();
    }
    // The queue in aggregate, as the batch window checks it: every target, queued by the
    // agent's clock just now, and each change once although it is queued per target.
    let queued = store.queued_windows("outbox").unwrap();
    assert_eq!(queued.events, 4, "CVE-2 and CVE-3 of two workloads");
    let names: Vec<&str> = queued.targets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, TARGETS);
    for (name, oldest) in &queued.targets {
        let oldest = oldest.unwrap_or_else(|| panic!("{name}: queued_at is set"));
        let age = Timestamp::now().duration_since(oldest);
        assert!(
            age >= jiff::SignedDuration::ZERO && age < jiff::SignedDuration::from_secs(60),
            "{name}: queued {age:?} ago"
        );
    }
    // Inside an open window nothing is planned: all four changes are held, none is lost.
    let held = assign_messages(
        &mut store,
        "outbox",
        Severity::Critical,
        false,
        Duration::from_secs(3600),
        Timestamp::now(),
    )
    .unwrap();
    assert_eq!((held.messages, held.filtered, held.held), (0, 0, 4));
    assert!(held.held_until.is_some_and(|u| u > Timestamp::now()));
    let a = assign_messages(
        &mut store,
        "outbox",
        Severity::Critical,
        false,
        Duration::ZERO,
        now,
    )
    .unwrap();
    assert_eq!(a.messages, 2, "one message per target");
    assert_eq!(
        a.filtered, 4,
        "the LOW findings of both workloads, per target"
    );
    // Grouping happens once.
    let again = assign_messages(
        &mut store,
        "outbox",
        Severity::Critical,
        false,
        Duration::ZERO,
        now,
    )
    .unwrap();
    assert_eq!((again.messages, again.filtered), (0, 0));

    let due = due_messages(&mut store, "outbox", "slack", now, 10).unwrap();
    assert_eq!(due.len(), 1);
    let m = &due[0].message;
    assert_eq!(m.count(), 2);
    assert_eq!(m.workload_names(), ["api", "web"]);
    assert_eq!(due[0].attempts, 0);
    let id = m.id.clone();
    assert!(
        due_messages(&mut store, "outbox", "slack", now, 10)
            .unwrap()
            .is_empty(),
        "a claimed message is not handed out twice"
    );
    let webhook = due_messages(&mut store, "outbox", "webhook", now, 10).unwrap();
    assert_eq!(
        webhook[0].message.id, id,
        "same events, same id on every target"
    );
    assert!(
        due_messages(&mut store, "outbox", "saas", now, 10)
            .unwrap()
            .is_empty()
    );

    // A retry keeps the message as it was.
    let later: Timestamp = "2026-11-27T12:05:00Z".parse().unwrap();
    store
        .update_message(
            "slack",
            &id,
            &MessageUpdate::Retry {
                at: later,
                error: "HTTP 503".to_owned(),
            },
        )
        .unwrap();
    assert!(
        due_messages(&mut store, "outbox", "slack", now, 10)
            .unwrap()
            .is_empty()
    );
    // The webhook's message is claimed for CLAIM_LEASE (30 s) from `now`.
    assert_eq!(
        store.next_due("outbox").unwrap(),
        Some("2026-11-27T12:00:30Z".parse().unwrap())
    );
    let unclaimed: Timestamp = "2026-11-27T12:00:31Z".parse().unwrap();
    assert_eq!(
        due_messages(&mut store, "outbox", "webhook", unclaimed, 10)
            .unwrap()
            .len(),
        1,
        "a claim that was never resolved (a crash) expires"
    );
    let due = due_messages(&mut store, "outbox", "slack", later, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].message, *m, "a retry sends exactly the same message");

    let stats = store.outbox_stats("outbox").unwrap();
    let shape: Vec<(&str, u64)> = stats
        .iter()
        .map(|s| (s.target.as_str(), s.pending))
        .collect();
    assert_eq!(shape, [("slack", 1), ("webhook", 1)]);
    assert_eq!(stats[0].oldest_created_at, Some(now));

    store
        .update_message("slack", &id, &MessageUpdate::Delivered { at: later })
        .unwrap();
    store
        .update_message(
            "webhook",
            &id,
            &MessageUpdate::Dead {
                at: now,
                reason: "HTTP 400".to_owned(),
            },
        )
        .unwrap();
    assert!(
        due_messages(&mut store, "outbox", "slack", later, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        due_messages(&mut store, "outbox", "webhook", later, 10)
            .unwrap()
            .is_empty()
    );
    assert!(store.outbox_stats("outbox").unwrap().is_empty());
    assert_eq!(store.next_due("outbox").unwrap(), None);
    // A late second update of a finished message changes nothing.
    store
        .update_message(
            "slack",
            &id,
            &MessageUpdate::Retry {
                at: later,
                error: "x".into(),
            },
        )
        .unwrap();
    assert!(
        due_messages(&mut store, "outbox", "slack", later, 10)
            .unwrap()
            .is_empty()
    );

    // The filtered events stay recorded in the history.
    let events = store.recent_events("outbox", 100).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.finding.key.vulnerability_id == "CVE-3"),
        "below-threshold events are recorded"
    );

    // Reopening (a restart) applies no migration twice and keeps the outbox.
    drop(store);
    let mut store = Store::open(target).unwrap();
    assert!(store.schema_status().unwrap().is_current());
    assert!(store.outbox_stats("outbox").unwrap().is_empty());
}

#[test]
fn sqlite_outbox_groups_once_and_keeps_messages_stable() {
    let dir = TempDir::new("outbox-store");
    let target =
        DatabaseTarget::parse(&format!("sqlite:{}", dir.path().join("k.db").display())).unwrap();
    exercise(&target);
}

#[test]
fn postgres_outbox_groups_once_and_keeps_messages_stable() {
    let db = TestDb::create("outbox");
    let target = DatabaseTarget::parse(&db.url_with_password("x")).unwrap();
    exercise(&target);
}

/// The peak severity survives the store: a finding recorded CRITICAL in the baseline, lowered to
/// LOW (recorded, not sent) and then fixed by a rebuilt image is announced at threshold HIGH,
/// because people were told of it as CRITICAL; the lowering itself is filtered.
fn peak_severity_decides_the_closing(target: &DatabaseTarget) {
    let mut store = Store::open(target).unwrap();
    let webhook = vec!["webhook".to_owned()];
    let scan = |at: &str, image: &str, severity: Option<&str>| Observation {
        image: image.to_owned(),
        ..observation(
            "web",
            at,
            severity.map(|s| finding("CVE-1", s)).into_iter().collect(),
        )
    };
    let steps = [
        (
            "2026-11-27T10:00:00Z",
            "nginx@sha256:aaaa",
            Some("CRITICAL"),
            true,
        ),
        (
            "2026-11-27T11:00:00Z",
            "nginx@sha256:aaaa",
            Some("LOW"),
            false,
        ),
        ("2026-11-27T12:00:00Z", "nginx@sha256:bbbb", None, false),
    ];
    for (at, image, severity, baseline) in steps {
        store
            .apply(&scan(at, image, severity), None, baseline, &webhook)
            .unwrap();
    }
    let kinds: Vec<(String, Severity, Severity)> = store
        .recent_events("outbox", 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind.to_string(), e.finding.severity, e.peak_severity))
        .collect();
    assert_eq!(
        kinds,
        [
            ("fixed".to_owned(), Severity::Low, Severity::Critical),
            (
                "severity_changed".to_owned(),
                Severity::Low,
                Severity::Critical
            ),
        ]
    );
    let assigned = assign_messages(
        &mut store,
        "outbox",
        Severity::High,
        false,
        Duration::ZERO,
        Timestamp::now(),
    )
    .unwrap();
    assert_eq!((assigned.messages, assigned.filtered), (1, 1));
}

#[test]
fn sqlite_keeps_the_peak_severity_for_the_closing() {
    let dir = TempDir::new("outbox-peak");
    let target =
        DatabaseTarget::parse(&format!("sqlite:{}", dir.path().join("k.db").display())).unwrap();
    peak_severity_decides_the_closing(&target);
}

#[test]
fn postgres_keeps_the_peak_severity_for_the_closing() {
    let db = TestDb::create("outbox_peak");
    let target = DatabaseTarget::parse(&db.url_with_password("x")).unwrap();
    peak_severity_decides_the_closing(&target);
}
