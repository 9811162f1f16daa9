//! The store against real databases: every scenario runs on PostgreSQL (127.0.0.1:5432, a fresh
//! database per test, dropped afterwards) and on SQLite (a fresh temporary file).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kijo_agent::lifecycle::{AssetId, EventKind, Finding, FindingKey, Observation};
use kijo_agent::severity::Severity;
use kijo_agent::store::{DatabaseTarget, Pinger, ReportVersion, Store, StoreError, check_only};

use crate::support::pg::{self, admin};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Postgres,
    Sqlite,
}

/// A fresh, uniquely named database that disappears with the value.
struct TestDb {
    kind: Kind,
    name: String,
    /// Creates the PostgreSQL database and drops it with the value.
    _pg: Option<pg::TestDb>,
    path: Option<PathBuf>,
    target: DatabaseTarget,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    fn new(kind: Kind, label: &str) -> TestDb {
        let name = format!(
            "kijo_store_{label}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        match kind {
            Kind::Postgres => {
                let db = pg::TestDb::create(&format!("store_{label}"));
                let target = DatabaseTarget::parse(&format!(
                    "postgres://postgres@127.0.0.1:5432/{}?sslmode=disable",
                    db.name
                ))
                .unwrap();
                TestDb {
                    kind,
                    name: db.name.clone(),
                    _pg: Some(db),
                    path: None,
                    target,
                }
            }
            Kind::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                let target = DatabaseTarget::parse(&format!("sqlite:{}", path.display())).unwrap();
                TestDb {
                    kind,
                    name,
                    _pg: None,
                    path: Some(path),
                    target,
                }
            }
        }
    }

    fn open(&self) -> Store {
        Store::open(&self.target).unwrap()
    }

    /// Runs SQL outside the store (for assertions and fault injection); every value as text.
    fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self.kind {
            Kind::Postgres => {
                let mut c = postgres::Client::connect(
                    &format!(
                        "host=127.0.0.1 port=5432 user=postgres dbname={}",
                        self.name
                    ),
                    postgres::NoTls,
                )
                .unwrap();
                c.simple_query(sql)
                    .unwrap()
                    .into_iter()
                    .filter_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(r) => {
                            Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                        }
                        _ => None,
                    })
                    .collect()
            }
            Kind::Sqlite => {
                let c = rusqlite::Connection::open(self.path.as_ref().unwrap()).unwrap();
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                let mut out = Vec::new();
                let mut stmt = c.prepare(sql).unwrap();
                let n = stmt.column_count();
                let mut rows = stmt.query([]).unwrap();
                while let Some(r) = rows.next().unwrap() {
                    out.push(
                        (0..n)
                            .map(|i| match r.get::<_, rusqlite::types::Value>(i).unwrap() {
                                rusqlite::types::Value::Null => None,
                                rusqlite::types::Value::Integer(v) => Some(v.to_string()),
                                rusqlite::types::Value::Real(v) => Some(v.to_string()),
                                rusqlite::types::Value::Text(v) => Some(v),
                                rusqlite::types::Value::Blob(_) => Some("<blob>".into()),
                            })
                            .collect(),
                    );
                }
                out
            }
        }
    }

    fn count(&self, sql: &str) -> i64 {
        self.query(sql)[0][0].as_deref().unwrap().parse().unwrap()
    }

    fn exec(&self, sql: &str) {
        self.try_exec(sql).unwrap();
    }

    fn try_exec(&self, sql: &str) -> Result<(), String> {
        match self.kind {
            Kind::Postgres => {
                let mut c = postgres::Client::connect(
                    &format!(
                        "host=127.0.0.1 port=5432 user=postgres dbname={}",
                        self.name
                    ),
                    postgres::NoTls,
                )
                .unwrap();
                c.batch_execute(sql).map_err(|e| {
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
                })
            }
            Kind::Sqlite => {
                let c = rusqlite::Connection::open(self.path.as_ref().unwrap()).unwrap();
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                c.execute_batch(sql).map_err(|e| e.to_string())
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // The PostgreSQL database goes with `_pg`.
        match self.kind {
            Kind::Postgres => {}
            Kind::Sqlite => {
                if let Some(p) = &self.path {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
                    }
                }
            }
        }
    }
}

/// Generates one `#[test]` per backend for a scenario `fn(Kind)`.
macro_rules! both {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn postgres() {
                super::$scenario(super::Kind::Postgres);
            }
            #[test]
            fn sqlite() {
                super::$scenario(super::Kind::Sqlite);
            }
        }
    };
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn asset(ns: &str, kind: &str, name: &str, container: &str) -> AssetId {
    AssetId {
        namespace: ns.into(),
        workload_kind: kind.into(),
        workload: name.into(),
        container: container.into(),
    }
}

fn web() -> AssetId {
    asset("shop", "Deployment", "web", "app")
}

/// "CVE-1:HIGH" → a finding in package openssl; "CVE-1:HIGH:zlib" in package zlib.
fn finding(spec: &str) -> Finding {
    let (id, rest) = spec.split_once(':').unwrap();
    let (sev, package) = rest.split_once(':').unwrap_or((rest, "openssl"));
    Finding {
        key: FindingKey {
            vulnerability_id: id.into(),
            package: package.into(),
        },
        package_path: String::new(),
        severity: sev.parse().expect("a severity name"),
        installed_version: "3.0.1".into(),
        fixed_version: "3.0.2".into(),
        title: format!("{id} in openssl"),
        link: format!("https://avd.aquasec.com/nvd/{}", id.to_lowercase()),
    }
}

fn obs(cluster: &str, asset: &AssetId, at: &str, specs: &[&str]) -> Observation {
    Observation {
        cluster: cluster.into(),
        asset: asset.clone(),
        image: "registry.example/shop/web:1.2@sha256:abc".into(),
        scanned_at: ts(at),
        revision: None,
        findings: specs.iter().map(|s| finding(s)).collect(),
    }
}

/// The same scan of another build of the image: only the digest differs, which is the evidence
/// a missing finding needs to count as `fixed` rather than `withdrawn`.
fn rebuilt(mut o: Observation, digest: &str) -> Observation {
    o.image = format!("registry.example/shop/web:1.2@sha256:{digest}");
    o
}

fn targets() -> Vec<String> {
    vec!["slack".into(), "webhook".into()]
}

/// Events oldest first as "kind workload/container cve".
fn event_lines(store: &mut Store, cluster: &str) -> Vec<String> {
    let mut events = store.recent_events(cluster, 1000).unwrap();
    events.reverse();
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}/{}/{} {}",
                e.kind,
                e.asset.namespace,
                e.asset.workload,
                e.asset.container,
                e.finding.key.vulnerability_id
            )
        })
        .collect()
}

fn migrations_are_idempotent_and_concurrent(kind: Kind) {
    let db = TestDb::new(kind, "migrate");
    let before = check_only(&db.target).unwrap();
    assert!(before.applied.is_empty(), "{before:?}");
    assert_eq!(before.pending(), before.embedded);

    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let target = db.target.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                Store::open(&target).map(|_| ())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().expect("both agents start");
    }
    let embedded = before.embedded.len() as i64;
    assert_eq!(db.count("SELECT count(*) FROM schema_migrations"), embedded);
    let mut again = db.open();
    assert_eq!(db.count("SELECT count(*) FROM schema_migrations"), embedded);
    assert!(again.schema_status().unwrap().is_current());
    assert!(check_only(&db.target).unwrap().is_current());
    again.ping().unwrap();
    Pinger::new(&db.target)
        .ping(Duration::from_secs(5))
        .unwrap();
}
both!(migrations_are_idempotent_and_concurrent);

fn full_lifecycle_with_exact_events(kind: Kind) {
    let db = TestDb::new(kind, "lifecycle");
    let mut s = db.open();
    let t = targets();
    let cluster_scoped = asset("", "ClusterSbomReport", "kbom", "k8s-cluster");

    // baseline: everything recorded open, no event
    assert!(s.is_empty_for_cluster("prod").unwrap());
    let a = s
        .apply(
            &obs(
                "prod",
                &web(),
                "2026-01-01T00:00:00Z",
                &["CVE-1:HIGH", "CVE-2:LOW:zlib"],
            ),
            None,
            true,
            &t,
        )
        .unwrap();
    assert!(a.events.is_empty() && !a.stale);
    assert_eq!(a.rows_written, 2);
    s.apply(
        &obs(
            "prod",
            &cluster_scoped,
            "2026-01-01T00:00:00Z",
            &["CVE-9:CRITICAL"],
        ),
        None,
        true,
        &t,
    )
    .unwrap();
    assert!(!s.is_empty_for_cluster("prod").unwrap());
    assert!(event_lines(&mut s, "prod").is_empty());
    assert_eq!(db.count("SELECT count(*) FROM notification_outbox"), 0);

    // new
    let a = s
        .apply(
            &obs(
                "prod",
                &web(),
                "2026-01-02T00:00:00Z",
                &["CVE-1:HIGH", "CVE-2:LOW:zlib", "CVE-3:HIGH"],
            ),
            None,
            false,
            &t,
        )
        .unwrap();
    assert_eq!(a.events.len(), 1);
    // a workload deployed after the baseline is new
    s.apply(
        &obs(
            "prod",
            &asset("shop", "StatefulSet", "db", "pg"),
            "2026-01-02T00:00:00Z",
            &["CVE-1:HIGH"],
        ),
        None,
        false,
        &t,
    )
    .unwrap();
    // fixed: a new build of the image no longer has zlib's CVE-2
    s.apply(
        &rebuilt(
            obs(
                "prod",
                &web(),
                "2026-01-03T00:00:00Z",
                &["CVE-1:HIGH", "CVE-3:HIGH"],
            ),
            "def",
        ),
        None,
        false,
        &t,
    )
    .unwrap();
    // reintroduced: the previous build is back
    s.apply(
        &obs(
            "prod",
            &web(),
            "2026-01-04T00:00:00Z",
            &["CVE-1:HIGH", "CVE-2:LOW:zlib", "CVE-3:HIGH"],
        ),
        None,
        false,
        &t,
    )
    .unwrap();
    // severity change on an open finding
    s.apply(
        &obs(
            "prod",
            &web(),
            "2026-01-05T00:00:00Z",
            &["CVE-1:CRITICAL", "CVE-2:LOW:zlib", "CVE-3:HIGH"],
        ),
        None,
        false,
        &t,
    )
    .unwrap();
    // cluster-scoped report: fixed (the rescan is of another build)
    s.apply(
        &rebuilt(
            obs("prod", &cluster_scoped, "2026-01-05T00:00:00Z", &[]),
            "def",
        ),
        None,
        false,
        &t,
    )
    .unwrap();
    // workload removed: its open findings close, other workloads untouched
    let removed = s
        .remove_workload(
            "prod",
            "shop",
            "Deployment",
            "web",
            ts("2026-01-06T00:00:00Z"),
            &t,
        )
        .unwrap();
    assert_eq!(removed.events.len(), 3);

    assert_eq!(
        event_lines(&mut s, "prod"),
        [
            "new shop/web/app CVE-3",
            "new shop/db/pg CVE-1",
            "fixed shop/web/app CVE-2",
            "reintroduced shop/web/app CVE-2",
            "severity_changed shop/web/app CVE-1",
            "fixed /kbom/k8s-cluster CVE-9",
            "workload_removed shop/web/app CVE-1",
            "workload_removed shop/web/app CVE-2",
            "workload_removed shop/web/app CVE-3",
        ]
    );
    let events = s.recent_events("prod", 100).unwrap();
    let sev = events
        .iter()
        .find(|e| e.kind == EventKind::SeverityChanged)
        .unwrap();
    assert_eq!(sev.previous_severity, Some(Severity::High));
    assert_eq!(sev.finding.severity, Severity::Critical);
    assert_eq!(sev.occurred_at, ts("2026-01-05T00:00:00Z"));
    assert_eq!(sev.image, "registry.example/shop/web:1.2@sha256:abc");
    assert_eq!(sev.finding.link, "https://avd.aquasec.com/nvd/cve-1");
    let re = events
        .iter()
        .find(|e| e.kind == EventKind::Reintroduced)
        .unwrap();
    assert_eq!(re.reintroduced_count, 1);

    // one outbox row per event and target, all pending
    assert_eq!(
        db.count("SELECT count(*) FROM notification_outbox WHERE state = 'pending'"),
        9 * 2
    );

    // rows: states, timestamps and counters as documented
    let rows = db.query(
        "SELECT workload, cve_id, state, severity, first_seen, last_seen, fixed_at, reintroduced_count
         FROM vulnerability_history WHERE cluster_name = 'prod' AND workload = 'web' ORDER BY cve_id",
    );
    let col = |r: &Vec<Option<String>>, i: usize| r[i].clone().unwrap_or_default();
    let states: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} {} {}", col(r, 1), col(r, 2), col(r, 3), col(r, 7)))
        .collect();
    assert_eq!(
        states,
        [
            "CVE-1 workload_removed CRITICAL 0",
            "CVE-2 workload_removed LOW 1",
            "CVE-3 workload_removed HIGH 0",
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r[6].as_deref().is_some_and(|f| f.starts_with("2026-01-06")))
    );
    assert!(
        rows[0][4].as_deref().unwrap().starts_with("2026-01-01"),
        "first_seen kept: {rows:?}"
    );
    assert!(
        rows[0][5].as_deref().unwrap().starts_with("2026-01-05"),
        "last_seen moved: {rows:?}"
    );

    let counts = s.open_counts_by_severity("prod").unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].severity.as_str(), counts[0].open), ("HIGH", 1));
    assert_eq!(
        s.known_workloads("prod").unwrap(),
        [
            ("shop".to_owned(), "StatefulSet".to_owned(), "db".to_owned()),
            (
                String::new(),
                "ClusterSbomReport".to_owned(),
                "kbom".to_owned()
            )
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    // removing again changes nothing
    let again = s
        .remove_workload(
            "prod",
            "shop",
            "Deployment",
            "web",
            ts("2026-01-07T00:00:00Z"),
            &t,
        )
        .unwrap();
    assert!(again.events.is_empty());
    // events are append-only
    let refused = db.try_exec("DELETE FROM lifecycle_events").unwrap_err();
    assert!(refused.contains("append-only"), "{refused}");
    assert_eq!(db.count("SELECT count(*) FROM lifecycle_events"), 9);
}
both!(full_lifecycle_with_exact_events);

fn same_observation_twice_is_idempotent(kind: Kind) {
    let db = TestDb::new(kind, "idem");
    let mut s = db.open();
    let t = targets();
    s.apply(
        &obs("prod", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        None,
        true,
        &t,
    )
    .unwrap();
    let o = rebuilt(
        obs(
            "prod",
            &web(),
            "2026-01-02T00:00:00.123456789Z",
            &["CVE-2:HIGH:zlib"],
        ),
        "def",
    );
    let first = s.apply(&o, None, false, &t).unwrap();
    let kinds: Vec<_> = first.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::New, EventKind::Fixed],
        "new CVE-2 and fixed CVE-1"
    );
    let second = s.apply(&o, None, false, &t).unwrap();
    assert!(second.stale && second.events.is_empty() && second.rows_written == 0);
    // an older scan arriving late does not regress
    let older = s
        .apply(
            &obs("prod", &web(), "2026-01-01T12:00:00Z", &["CVE-1:HIGH"]),
            None,
            false,
            &t,
        )
        .unwrap();
    assert!(older.stale);
    assert_eq!(db.count("SELECT count(*) FROM lifecycle_events"), 2);
    assert_eq!(
        db.count("SELECT count(*) FROM vulnerability_history WHERE state = 'open'"),
        1
    );
    // a second store (a second agent) repeating the scan adds nothing either
    let mut other = db.open();
    assert!(other.apply(&o, None, false, &t).unwrap().stale);
    assert_eq!(db.count("SELECT count(*) FROM lifecycle_events"), 2);
}
both!(same_observation_twice_is_idempotent);

fn failed_transaction_leaves_nothing_and_retry_succeeds(kind: Kind) {
    let db = TestDb::new(kind, "rollback");
    let mut s = db.open();
    let t = targets();
    s.apply(
        &obs("prod", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        None,
        true,
        &t,
    )
    .unwrap();
    let snapshot = |db: &TestDb| {
        (
            db.query("SELECT cve_id, state, last_seen FROM vulnerability_history ORDER BY cve_id"),
            db.query("SELECT last_scan_at FROM scanned_containers"),
            db.count("SELECT count(*) FROM lifecycle_events"),
            db.count("SELECT count(*) FROM notification_outbox"),
            db.count("SELECT count(*) FROM report_versions"),
        )
    };
    let before = snapshot(&db);
    // fail the event insert, after the finding rows were already written in the transaction
    match kind {
        Kind::Postgres => db.exec(
            "CREATE FUNCTION inject() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.cve_id = 'CVE-FAIL' THEN RAISE EXCEPTION 'injected failure'; END IF;
             RETURN NEW; END $$;
             CREATE TRIGGER inject BEFORE INSERT ON lifecycle_events
             FOR EACH ROW EXECUTE FUNCTION inject();",
        ),
        Kind::Sqlite => db.exec(
            "CREATE TRIGGER inject BEFORE INSERT ON lifecycle_events WHEN NEW.cve_id = 'CVE-FAIL'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        ),
    }
    let o = rebuilt(
        obs(
            "prod",
            &web(),
            "2026-01-02T00:00:00Z",
            &["CVE-2:HIGH:zlib", "CVE-FAIL:LOW:zlib"],
        ),
        "def",
    );
    let rv = ReportVersion {
        uid: "uid-1".into(),
        resource_version: "42".into(),
    };
    let err = s.apply(&o, Some(&rv), false, &t).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(matches!(err, StoreError::Query { .. }), "{err:?}");
    assert_eq!(
        snapshot(&db),
        before,
        "a failed apply left something behind"
    );

    db.exec(match kind {
        Kind::Postgres => "DROP TRIGGER inject ON lifecycle_events",
        Kind::Sqlite => "DROP TRIGGER inject",
    });
    let ok = s.apply(&o, Some(&rv), false, &t).unwrap();
    assert_eq!(ok.events.len(), 3, "new CVE-2, new CVE-FAIL, fixed CVE-1");
    assert_eq!(
        s.report_version("prod", "uid-1").unwrap().as_deref(),
        Some("42")
    );
    assert_eq!(db.count("SELECT count(*) FROM notification_outbox"), 6);
}
both!(failed_transaction_leaves_nothing_and_retry_succeeds);

fn clusters_do_not_touch_each_other(kind: Kind) {
    let db = TestDb::new(kind, "clusters");
    let mut a = db.open();
    let mut b = db.open();
    let t = targets();
    a.apply(
        &obs("eu", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        None,
        true,
        &t,
    )
    .unwrap();
    assert!(
        b.is_empty_for_cluster("us").unwrap(),
        "another cluster's rows end no baseline"
    );
    b.apply(
        &obs("us", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        None,
        true,
        &t,
    )
    .unwrap();
    b.apply(
        &rebuilt(obs("us", &web(), "2026-01-02T00:00:00Z", &[]), "def"),
        None,
        false,
        &t,
    )
    .unwrap();
    a.remove_workload(
        "eu",
        "shop",
        "Deployment",
        "web",
        ts("2026-01-03T00:00:00Z"),
        &t,
    )
    .unwrap();
    assert_eq!(
        event_lines(&mut a, "eu"),
        ["workload_removed shop/web/app CVE-1"]
    );
    assert_eq!(event_lines(&mut b, "us"), ["fixed shop/web/app CVE-1"]);
    assert_eq!(
        db.query("SELECT cluster_name, state FROM vulnerability_history ORDER BY cluster_name"),
        [
            vec![Some("eu".to_owned()), Some("workload_removed".to_owned())],
            vec![Some("us".to_owned()), Some("fixed".to_owned())],
        ]
    );
    assert!(
        b.known_workloads("us").unwrap().len() == 1 && a.known_workloads("eu").unwrap().is_empty()
    );
}
both!(clusters_do_not_touch_each_other);

fn readme_query_on_vulnerability_history(kind: Kind) {
    let db = TestDb::new(kind, "readme");
    let mut s = db.open();
    s.apply(
        &obs(
            "production-eu",
            &web(),
            "2026-01-01T00:00:00Z",
            &["CVE-2024-45337:CRITICAL", "CVE-2024-3817:HIGH"],
        ),
        None,
        true,
        &[],
    )
    .unwrap();
    s.apply(
        &obs(
            "production-eu",
            &web(),
            "2026-01-02T00:00:00Z",
            &["CVE-2024-45337:CRITICAL"],
        ),
        None,
        false,
        &[],
    )
    .unwrap();
    // the documented columns, with their documented meanings
    let open = db.query(
        "SELECT id, cluster_name, namespace, workload, cve_id, severity, first_seen, last_seen, fixed_at
         FROM vulnerability_history
         WHERE cluster_name = 'production-eu' AND fixed_at IS NULL
         ORDER BY severity, cve_id",
    );
    assert_eq!(open.len(), 1);
    let r = &open[0];
    assert_eq!(
        r[1..6]
            .iter()
            .map(|c| c.clone().unwrap())
            .collect::<Vec<_>>(),
        ["production-eu", "shop", "web", "CVE-2024-45337", "CRITICAL"]
    );
    assert!(r[6].as_deref().unwrap().starts_with("2026-01-01"));
    assert!(r[7].as_deref().unwrap().starts_with("2026-01-02"));
    let fixed =
        db.query("SELECT cve_id, fixed_at FROM vulnerability_history WHERE fixed_at IS NOT NULL");
    assert_eq!(fixed[0][0].as_deref(), Some("CVE-2024-3817"));
    assert!(fixed[0][1].as_deref().unwrap().starts_with("2026-01-02"));
}
both!(readme_query_on_vulnerability_history);

fn report_versions_skip_unchanged_reports(kind: Kind) {
    let db = TestDb::new(kind, "versions");
    let mut s = db.open();
    let rv = |uid: &str, v: &str| ReportVersion {
        uid: uid.into(),
        resource_version: v.into(),
    };
    assert_eq!(s.report_version("prod", "uid-a").unwrap(), None);
    s.apply(
        &obs("prod", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        Some(&rv("uid-a", "10")),
        true,
        &[],
    )
    .unwrap();
    assert_eq!(
        s.report_version("prod", "uid-a").unwrap().as_deref(),
        Some("10")
    );
    assert_eq!(s.report_version("other", "uid-a").unwrap(), None);
    // a changed resourceVersion with the same scan (say, a label update): version moves, no rows
    let a = s
        .apply(
            &obs("prod", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
            Some(&rv("uid-a", "11")),
            false,
            &[],
        )
        .unwrap();
    assert!(a.stale && a.rows_written == 0);
    assert_eq!(
        s.report_version("prod", "uid-a").unwrap().as_deref(),
        Some("11")
    );
    // a rollout: the new ReplicaSet's report for the same Deployment container
    s.apply(
        &rebuilt(obs("prod", &web(), "2026-01-02T00:00:00Z", &[]), "def"),
        Some(&rv("uid-b", "20")),
        false,
        &[],
    )
    .unwrap();
    assert_eq!(
        s.retain_report_versions("prod", &["uid-b".to_owned()])
            .unwrap(),
        1
    );
    assert_eq!(s.report_version("prod", "uid-a").unwrap(), None);
    assert_eq!(event_lines(&mut s, "prod"), ["fixed shop/web/app CVE-1"]);
    s.remove_workload(
        "prod",
        "shop",
        "Deployment",
        "web",
        ts("2026-01-03T00:00:00Z"),
        &[],
    )
    .unwrap();
    assert_eq!(s.report_version("prod", "uid-b").unwrap(), None);
}
both!(report_versions_skip_unchanged_reports);

#[test]
fn sqlite_in_a_missing_directory_names_the_path() {
    let target = DatabaseTarget::parse("sqlite:/nonexistent-kijo-dir/kijo.db").unwrap();
    let err = Store::open(&target).err().unwrap();
    assert!(err.is_connection_loss());
    assert!(
        err.to_string().contains("/nonexistent-kijo-dir/kijo.db"),
        "{err}"
    );
    assert!(check_only(&target).is_err());
}

#[test]
fn no_password_in_any_error() {
    let pw = "Hunter2-s3cret";
    let urls = [
        // nothing listens on port 1
        format!("postgres://postgres:{pw}@127.0.0.1:1/test?connect_timeout=2"),
        format!(
            "postgres://postgres:{pw}@127.0.0.1:5432/kijo_store_does_not_exist?sslmode=disable"
        ),
        format!("postgres://postgres:{pw}@127.0.0.1:5432/test?sslmode=require"),
        format!(
            "postgres://postgres:{pw}@127.0.0.1:5432/test?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"
        ),
        format!("postgres://nosuchuser:{pw}@127.0.0.1:5432/test?sslmode=disable&password={pw}"),
    ];
    for url in urls {
        let target = DatabaseTarget::parse(&url).unwrap();
        assert!(!target.describe().contains(pw));
        let errors = [
            Store::open(&target).err().map(|e| e.to_string()),
            check_only(&target).err().map(|e| e.to_string()),
            Pinger::new(&target)
                .ping(Duration::from_secs(2))
                .err()
                .map(|e| e.to_string()),
        ];
        for e in errors {
            let e = e.unwrap_or_else(|| panic!("{} unexpectedly worked", target.describe()));
            assert!(!e.contains(pw), "password leaked: {e}");
            assert!(!e.contains("s3cret"), "password leaked: {e}");
        }
    }
    let bad = DatabaseTarget::parse(&format!("postgres://u:{pw}@h/d?sslmode=nope")).unwrap_err();
    assert!(!bad.contains(pw) && bad.contains("sslmode"), "{bad}");
}

#[test]
fn tls_modes_against_the_local_server() {
    let ssl: String = admin().query_one("SHOW ssl", &[]).unwrap().get(0);
    let cert: String = admin().query_one("SHOW ssl_cert_file", &[]).unwrap().get(0);
    let url = |host: &str, params: &str| format!("postgres://postgres@{host}:5432/test?{params}");
    let try_ping = |u: String| {
        let t = DatabaseTarget::parse(&u).unwrap();
        check_only(&t).map(|_| ()).map_err(|e| e.to_string())
    };
    // prefer (the default) works whether or not the server offers TLS
    try_ping(url("127.0.0.1", "")).unwrap();
    try_ping(url("127.0.0.1", "sslmode=disable")).unwrap();
    if ssl != "on" || std::fs::read(&cert).is_err() {
        eprintln!("server has no readable TLS certificate; verification modes not exercised");
        return;
    }
    // require verifies: a self-signed server certificate is not trusted
    let err = try_ping(url("127.0.0.1", "sslmode=require")).unwrap_err();
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    // with the server's certificate as root: verify-ca ignores the host name, verify-full not
    let pinned =
        |host: &str, mode: &str| try_ping(url(host, &format!("sslmode={mode}&sslrootcert={cert}")));
    pinned("127.0.0.1", "verify-ca").unwrap();
    let err = pinned("127.0.0.1", "verify-full").unwrap_err();
    assert!(
        err.contains("not valid for name") || err.contains("NotValidForName"),
        "{err}"
    );
    let cn_host = "localhost";
    pinned(cn_host, "verify-full").unwrap();
    pinned(cn_host, "require").unwrap();
}

#[test]
fn postgres_connection_loss_is_survived() {
    let db = TestDb::new(Kind::Postgres, "reconnect");
    let mut s = db.open();
    let t = targets();
    s.apply(
        &obs("prod", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        None,
        true,
        &t,
    )
    .unwrap();
    let kill_all = || {
        admin()
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .unwrap()
            .len()
    };
    // between calls: ping reports the loss once, then reconnects
    assert!(kill_all() >= 1);
    let err = s.ping().unwrap_err();
    assert!(err.is_connection_loss(), "{err:?}");
    s.ping().unwrap();
    // between calls: apply retries once on a fresh connection
    assert!(kill_all() >= 1);
    let a = s
        .apply(
            &obs(
                "prod",
                &web(),
                "2026-01-02T00:00:00Z",
                &["CVE-1:HIGH", "CVE-2:LOW"],
            ),
            None,
            false,
            &t,
        )
        .unwrap();
    assert_eq!(a.events.len(), 1);

    // during apply: the backend is killed while the transaction is inside the event insert
    db.exec(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.cve_id = 'CVE-SLOW' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON lifecycle_events FOR EACH ROW EXECUTE FUNCTION slow();",
    );
    let name = db.name.clone();
    let killer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut c = admin();
        while Instant::now() < deadline {
            let rows = c
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = $1 AND wait_event = 'PgSleep'",
                    &[&name],
                )
                .unwrap();
            if !rows.is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    let a = s
        .apply(
            &obs(
                "prod",
                &web(),
                "2026-01-03T00:00:00Z",
                &["CVE-1:HIGH", "CVE-2:LOW", "CVE-SLOW:HIGH"],
            ),
            None,
            false,
            &t,
        )
        .unwrap();
    assert!(
        killer.join().unwrap(),
        "the backend was never caught sleeping"
    );
    assert_eq!(a.events.len(), 1);
    assert_eq!(
        event_lines(&mut s, "prod"),
        ["new shop/web/app CVE-2", "new shop/web/app CVE-SLOW"],
        "exactly one copy of each event after the retry"
    );
    assert_eq!(db.count("SELECT count(*) FROM notification_outbox"), 4);

    // a Pinger notices the loss and recovers on its own
    let mut p = Pinger::new(&db.target);
    p.ping(Duration::from_secs(5)).unwrap();
    kill_all();
    let _ = p.ping(Duration::from_secs(5));
    p.ping(Duration::from_secs(5)).unwrap();
}

fn stale_leader_duplicate_write_fails(kind: Kind) {
    let db = TestDb::new(kind, "stale");
    let mut s = db.open();
    let t = targets();
    s.apply(
        &obs("prod", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        None,
        true,
        &t,
    )
    .unwrap();
    // Another agent already recorded this change (same derived event id) …
    let o = obs(
        "prod",
        &web(),
        "2026-01-02T00:00:00Z",
        &["CVE-1:HIGH", "CVE-2:LOW"],
    );
    let id = kijo_agent::lifecycle::event_id(
        "prod",
        &web(),
        &o.findings[1].key,
        EventKind::New,
        o.scanned_at,
    );
    db.exec(&format!(
        "INSERT INTO lifecycle_events (event_id, kind, cluster_name, namespace, workload_kind,
             workload, container, image, cve_id, package, package_path, installed_version,
             fixed_version, severity, title, link, reintroduced_count, occurred_at)
         VALUES ('{id}', 'new', 'prod', 'shop', 'Deployment', 'web', 'app', 'img', 'CVE-2',
             'openssl', '', '3.0.1', '3.0.2', 'LOW', 't', 'l', 0, '2026-01-02T00:00:00.000000Z')"
    ));
    let rows_before =
        db.query("SELECT cve_id, state, last_seen FROM vulnerability_history ORDER BY cve_id");
    // … so this writer's transaction fails on the unique constraint and changes nothing.
    let err = s.apply(&o, None, false, &t).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(!err.is_connection_loss());
    assert_eq!(
        db.query("SELECT cve_id, state, last_seen FROM vulnerability_history ORDER BY cve_id"),
        rows_before
    );
    assert_eq!(db.count("SELECT count(*) FROM lifecycle_events"), 1);
    assert_eq!(db.count("SELECT count(*) FROM notification_outbox"), 0);
}
both!(stale_leader_duplicate_write_fails);

fn concurrent_writers_record_each_change_once(kind: Kind) {
    let db = TestDb::new(kind, "race");
    db.open();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let target = db.target.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut s = Store::open(&target).unwrap();
                barrier.wait();
                let o = obs(
                    "prod",
                    &web(),
                    "2026-01-02T00:00:00Z",
                    &["CVE-1:HIGH", "CVE-2:LOW"],
                );
                s.apply(&o, None, false, &targets())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|a| !a.stale))
        .count();
    assert_eq!(winners, 1, "{results:?}");
    for r in &results {
        match r {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(db.count("SELECT count(*) FROM lifecycle_events"), 2);
    assert_eq!(db.count("SELECT count(*) FROM notification_outbox"), 4);
    assert_eq!(db.count("SELECT count(*) FROM vulnerability_history"), 2);
}
both!(concurrent_writers_record_each_change_once);

fn refuses_a_newer_schema(kind: Kind) {
    let db = TestDb::new(kind, "newer");
    db.open();
    db.exec("INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')");
    let err = Store::open(&db.target).err().unwrap();
    assert!(
        matches!(err, StoreError::SchemaTooNew { applied: 9999, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade the agent"), "{err}");
    let status = check_only(&db.target).unwrap();
    assert!(!status.is_current() && status.pending().is_empty());
}
both!(refuses_a_newer_schema);

#[test]
fn sqlite_pinger_follows_the_file() {
    let db = TestDb::new(Kind::Sqlite, "pinger");
    let mut p = Pinger::new(&db.target);
    // before the agent created the database, readiness is false and nothing is created
    assert!(p.ping(Duration::from_secs(1)).is_err());
    assert!(!db.path.as_ref().unwrap().exists());
    db.open();
    p.ping(Duration::from_secs(1)).unwrap();
}

#[test]
fn store_types_move_between_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Store>();
    assert_send::<Pinger>();
    assert_send::<DatabaseTarget>();
    assert_send::<StoreError>();
}

fn interrupted_baseline_stays_a_baseline(kind: Kind) {
    let db = TestDb::new(kind, "baseline");
    let mut s = db.open();
    assert!(s.baseline_pending("prod").unwrap());
    // the first cycle applies one workload, then the agent dies
    s.apply(
        &obs("prod", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        None,
        true,
        &[],
    )
    .unwrap();
    drop(s);
    let mut s = db.open();
    assert!(!s.is_empty_for_cluster("prod").unwrap());
    assert!(
        s.baseline_pending("prod").unwrap(),
        "an interrupted first cycle is repeated as a baseline"
    );
    let db_asset = asset("shop", "StatefulSet", "db", "pg");
    s.apply(
        &obs("prod", &db_asset, "2026-01-01T00:00:00Z", &["CVE-2:HIGH"]),
        None,
        true,
        &[],
    )
    .unwrap();
    s.finish_baseline("prod", ts("2026-01-01T00:05:00Z"))
        .unwrap();
    s.finish_baseline("prod", ts("2026-01-01T00:10:00Z"))
        .unwrap();
    assert!(!s.baseline_pending("prod").unwrap());
    assert!(
        s.baseline_pending("other").unwrap(),
        "each cluster has its own baseline"
    );
    assert!(event_lines(&mut s, "prod").is_empty());
    assert_eq!(
        db.query("SELECT baseline_completed_at FROM clusters")[0][0]
            .as_deref()
            .map(|t| t.starts_with("2026-01-01")),
        Some(true)
    );
}
both!(interrupted_baseline_stays_a_baseline);

fn scope(namespace: &str, kind: &str) -> (String, String) {
    (namespace.to_owned(), kind.to_owned())
}

fn covered_lines(s: &mut Store, cluster: &str, scopes: &[(String, String)]) -> Vec<String> {
    s.coverage(cluster, scopes)
        .unwrap()
        .iter()
        .map(|c| format!("{} {} {}", c.namespace, c.kind, c.since))
        .collect()
}

/// Coverage rows keep the first time a scope was covered: recorded again, narrowed away and
/// covered again, a scope keeps its time; each cluster has its own. A store whose baseline
/// completed without any coverage row (written before coverage was recorded) gets the scopes
/// it covers now, dated at its baseline.
fn coverage_keeps_the_first_time_a_scope_was_covered(kind: Kind) {
    let db = TestDb::new(kind, "coverage");
    let mut s = db.open();
    const VR: &str = "VulnerabilityReport";
    let team_a = [scope("team-a", VR)];
    assert!(
        covered_lines(&mut s, "prod", &team_a).is_empty(),
        "nothing is covered before the first cycle ends, and no baseline completed"
    );
    s.record_coverage("prod", &team_a, ts("2026-01-01T00:00:00.123456Z"))
        .unwrap();
    s.finish_baseline("prod", ts("2026-01-01T00:00:01Z"))
        .unwrap();
    let widened = [scope("team-a", VR), scope("team-b", VR)];
    s.record_coverage("prod", &widened, ts("2026-01-02T00:00:00Z"))
        .unwrap();
    // Narrowed (team-a only), then widened to all: nothing is deleted, nothing moves.
    s.record_coverage("prod", &team_a, ts("2026-01-03T00:00:00Z"))
        .unwrap();
    let all = [scope("*", VR), scope("*", "ClusterVulnerabilityReport")];
    s.record_coverage("prod", &all, ts("2026-01-04T00:00:00Z"))
        .unwrap();
    s.record_coverage("prod", &widened, ts("2026-01-05T00:00:00Z"))
        .unwrap();
    assert_eq!(
        covered_lines(&mut s, "prod", &all),
        [
            "* ClusterVulnerabilityReport 2026-01-04T00:00:00Z",
            "* VulnerabilityReport 2026-01-04T00:00:00Z",
            "team-a VulnerabilityReport 2026-01-01T00:00:00.123456Z",
            "team-b VulnerabilityReport 2026-01-02T00:00:00Z",
        ]
    );
    drop(s);
    let mut s = db.open();
    assert_eq!(covered_lines(&mut s, "prod", &all).len(), 4, "durable");
    assert!(
        covered_lines(&mut s, "other", &all).is_empty(),
        "each cluster has its own coverage"
    );

    // An upgraded store: a completed baseline, no coverage row.
    s.finish_baseline("legacy", ts("2025-06-01T00:00:00Z"))
        .unwrap();
    assert_eq!(
        covered_lines(&mut s, "legacy", &widened),
        [
            "team-a VulnerabilityReport 2025-06-01T00:00:00Z",
            "team-b VulnerabilityReport 2025-06-01T00:00:00Z",
        ],
        "the scopes covered now count as covered since the baseline"
    );
    assert_eq!(
        covered_lines(&mut s, "legacy", &all).len(),
        2,
        "adopted once: a scope covered later begins when it is covered"
    );
    assert!(event_lines(&mut s, "legacy").is_empty());
}
both!(coverage_keeps_the_first_time_a_scope_was_covered);

/// One aggregate query gives the open findings per severity and namespace, and the oldest first
/// sighting among the announced ones (neither the baseline's own nor a coverage baseline's).
fn open_findings_by_severity_and_namespace(kind: Kind) {
    let db = TestDb::new(kind, "openfindings");
    let mut s = db.open();
    let db_asset = asset("data", "StatefulSet", "postgres", "postgres");
    let cluster_wide = asset("", "Node", "cluster", "");
    s.apply(
        &obs(
            "prod",
            &web(),
            "2026-01-01T00:00:00Z",
            &["CVE-1:CRITICAL", "CVE-2:LOW"],
        ),
        None,
        true,
        &[],
    )
    .unwrap();
    s.finish_baseline("prod", ts("2026-01-01T01:00:00Z"))
        .unwrap();
    s.apply(
        &obs(
            "prod",
            &web(),
            "2026-01-02T00:00:00Z",
            &["CVE-1:CRITICAL", "CVE-2:LOW", "CVE-3:CRITICAL"],
        ),
        None,
        false,
        &[],
    )
    .unwrap();
    s.apply(
        &obs("prod", &db_asset, "2026-01-03T00:00:00Z", &["CVE-4:HIGH"]),
        None,
        false,
        &[],
    )
    .unwrap();
    s.apply(
        &obs(
            "prod",
            &cluster_wide,
            "2026-01-04T00:00:00Z",
            &["CVE-5:HIGH"],
        ),
        None,
        false,
        &[],
    )
    .unwrap();
    // A namespace covered later: what it held is recorded silently (a coverage baseline), and
    // counts as open but never as announced, however late it was first seen.
    s.apply(
        &obs(
            "prod",
            &asset("team-b", "Deployment", "api", "app"),
            "2026-01-05T00:00:00Z",
            &["CVE-6:CRITICAL"],
        ),
        None,
        true,
        &[],
    )
    .unwrap();
    let rows: Vec<(Severity, String, u64, Option<Timestamp>)> = s
        .open_findings("prod")
        .unwrap()
        .into_iter()
        .map(|r| (r.severity, r.namespace, r.open, r.oldest_announced))
        .collect();
    assert_eq!(
        rows,
        [
            (
                Severity::Critical,
                "shop".into(),
                2,
                Some(ts("2026-01-02T00:00:00Z"))
            ),
            (Severity::Critical, "team-b".into(), 1, None),
            (
                Severity::High,
                "".into(),
                1,
                Some(ts("2026-01-04T00:00:00Z"))
            ),
            (
                Severity::High,
                "data".into(),
                1,
                Some(ts("2026-01-03T00:00:00Z"))
            ),
            (Severity::Low, "shop".into(), 1, None),
        ]
    );
    let totals: Vec<(Severity, u64)> = s
        .open_counts_by_severity("prod")
        .unwrap()
        .into_iter()
        .map(|c| (c.severity, c.open))
        .collect();
    assert_eq!(
        totals,
        [
            (Severity::Critical, 3),
            (Severity::High, 2),
            (Severity::Low, 1)
        ]
    );
}
both!(open_findings_by_severity_and_namespace);

// ---- Issue 10: identity without path, new states and kinds, peak severity, revisions ----

/// "…T…Z" timestamps of a column as their date, for comparing across both databases' text forms.
fn date_of(v: &Option<String>) -> String {
    v.as_deref().map(|s| s[..10].to_owned()).unwrap_or_default()
}

/// An instance of a finding: same key, its own path and installed version.
fn instance(spec: &str, path: &str, installed: &str) -> Finding {
    Finding {
        package_path: path.into(),
        installed_version: installed.into(),
        ..finding(spec)
    }
}

fn rv(uid: &str, v: &str) -> ReportVersion {
    ReportVersion {
        uid: uid.into(),
        resource_version: v.into(),
    }
}

fn new_columns_round_trip(kind: Kind) {
    let db = TestDb::new(kind, "columns");
    let mut s = db.open();
    let t = targets();
    let mut o = obs(
        "prod",
        &web(),
        "2026-01-01T00:00:00Z",
        &["CVE-1:HIGH", "CVE-2:MEDIUM:zlib"],
    );
    o.revision = Some(3);
    s.apply(&o, Some(&rv("uid-3", "1")), true, &t).unwrap();
    assert_eq!(
        db.query("SELECT image, revision, report_uid, removed_at FROM scanned_containers"),
        [vec![
            Some("registry.example/shop/web:1.2@sha256:abc".to_owned()),
            Some("3".to_owned()),
            Some("uid-3".to_owned()),
            None
        ]]
    );

    // raised, then lowered: the peak stays CRITICAL; both changes are recorded
    for (at, sev) in [
        ("2026-01-02T00:00:00Z", "CVE-1:CRITICAL"),
        ("2026-01-03T00:00:00Z", "CVE-1:LOW"),
    ] {
        let mut o = obs("prod", &web(), at, &[sev, "CVE-2:MEDIUM:zlib"]);
        o.revision = Some(3);
        s.apply(&o, Some(&rv("uid-3", "1")), false, &t).unwrap();
    }
    assert_eq!(
        db.query(
            "SELECT severity, peak_severity, state FROM vulnerability_history WHERE cve_id = 'CVE-1'"
        ),
        [vec![
            Some("LOW".to_owned()),
            Some("CRITICAL".to_owned()),
            Some("open".to_owned())
        ]]
    );
    // withdrawn: the same image, zlib's CVE-2 no longer listed (and no other zlib finding)
    let mut o = obs("prod", &web(), "2026-01-04T00:00:00Z", &["CVE-1:LOW"]);
    o.revision = Some(3);
    let a = s.apply(&o, None, false, &t).unwrap();
    assert_eq!(
        a.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Withdrawn]
    );
    // reported again: first_seen kept, count unchanged
    let mut o = obs(
        "prod",
        &web(),
        "2026-01-05T00:00:00Z",
        &["CVE-1:LOW", "CVE-2:MEDIUM:zlib"],
    );
    o.revision = Some(3);
    s.apply(&o, None, false, &t).unwrap();
    // fixed on a new build: the closing event carries the peak, not the current severity
    let mut o = rebuilt(obs("prod", &web(), "2026-01-06T00:00:00Z", &[]), "def");
    o.revision = Some(4);
    s.apply(&o, Some(&rv("uid-4", "1")), false, &t).unwrap();

    let events = {
        let mut e = s.recent_events("prod", 100).unwrap();
        e.reverse();
        e
    };
    let lines: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} peak {} prev {:?} count {}",
                e.kind,
                e.finding.key.vulnerability_id,
                e.finding.severity,
                e.peak_severity,
                e.previous_severity.map(|s| s.as_str()),
                e.reintroduced_count
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            "severity_changed CVE-1 CRITICAL peak CRITICAL prev Some(\"HIGH\") count 0",
            "severity_changed CVE-1 LOW peak CRITICAL prev Some(\"CRITICAL\") count 0",
            "withdrawn CVE-2 MEDIUM peak MEDIUM prev None count 0",
            "reported_again CVE-2 MEDIUM peak MEDIUM prev None count 0",
            "fixed CVE-1 LOW peak CRITICAL prev None count 0",
            "fixed CVE-2 MEDIUM peak MEDIUM prev None count 0",
        ]
    );
    // the outbox hands the same events (with their peak) to delivery
    assert_eq!(
        db.count("SELECT count(*) FROM lifecycle_events WHERE peak_severity IS NOT NULL"),
        6
    );
    let rows = db.query(
        "SELECT cve_id, state, severity, peak_severity, first_seen, fixed_at, reintroduced_count
         FROM vulnerability_history ORDER BY cve_id",
    );
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {} {}",
                r[0].as_deref().unwrap(),
                r[1].as_deref().unwrap(),
                r[2].as_deref().unwrap(),
                r[3].as_deref().unwrap(),
                date_of(&r[4]),
                date_of(&r[5]),
                r[6].as_deref().unwrap()
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "CVE-1 fixed LOW CRITICAL 2026-01-01 2026-01-06 0",
            "CVE-2 fixed MEDIUM MEDIUM 2026-01-01 2026-01-06 0",
        ]
    );
    assert_eq!(
        db.query("SELECT image, revision, report_uid FROM scanned_containers"),
        [vec![
            Some("registry.example/shop/web:1.2@sha256:def".to_owned()),
            Some("4".to_owned()),
            Some("uid-4".to_owned())
        ]]
    );
}
both!(new_columns_round_trip);

/// Entries with the same key in one scan are instances of one finding: one row, open while any
/// instance is listed, paths and versions as sorted lists.
fn instances_merge_into_one_row(kind: Kind) {
    let db = TestDb::new(kind, "instances");
    let mut s = db.open();
    let t = targets();
    let mut o = obs("prod", &web(), "2026-01-01T00:00:00Z", &[]);
    o.findings = vec![
        instance("CVE-1:HIGH:log4j", "app/b.jar", "2.14"),
        instance("CVE-1:CRITICAL:log4j", "app/a.jar", "2.13"),
    ];
    s.apply(&o, None, true, &t).unwrap();
    s.finish_baseline("prod", ts("2026-01-01T01:00:00Z"))
        .unwrap();
    let row = |db: &TestDb| {
        db.query(
            "SELECT package_path, installed_version, severity, state FROM vulnerability_history",
        )
    };
    assert_eq!(
        row(&db),
        [vec![
            Some("app/a.jar, app/b.jar".to_owned()),
            Some("2.13, 2.14".to_owned()),
            Some("CRITICAL".to_owned()),
            Some("open".to_owned())
        ]]
    );
    // one jar upgraded away: the finding stays open, its attributes follow
    let mut o = rebuilt(obs("prod", &web(), "2026-01-02T00:00:00Z", &[]), "def");
    o.findings = vec![instance("CVE-1:CRITICAL:log4j", "app/a.jar", "2.13")];
    let a = s.apply(&o, None, false, &t).unwrap();
    assert!(a.events.is_empty(), "{:?}", a.events);
    assert_eq!(
        row(&db),
        [vec![
            Some("app/a.jar".to_owned()),
            Some("2.13".to_owned()),
            Some("CRITICAL".to_owned()),
            Some("open".to_owned())
        ]]
    );
    assert_eq!(db.count("SELECT count(*) FROM lifecycle_events"), 0);
}
both!(instances_merge_into_one_row);

/// The sibling query runs only when a scan has a finding that would be announced as new; a
/// finding another container of the workload holds (a renamed container) is not news.
fn sibling_keys_load_only_for_would_be_new_findings(kind: Kind) {
    let db = TestDb::new(kind, "siblings");
    let mut s = db.open();
    let t = targets();
    let app = web();
    let main = asset("shop", "Deployment", "web", "main");
    // baseline: nothing is announced, so nothing is looked up
    s.apply(
        &obs("prod", &app, "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        None,
        true,
        &t,
    )
    .unwrap();
    assert_eq!(s.sibling_lookups(), 0);
    // a rescan without news: no lookup
    s.apply(
        &obs("prod", &app, "2026-01-02T00:00:00Z", &["CVE-1:HIGH"]),
        None,
        false,
        &t,
    )
    .unwrap();
    assert_eq!(s.sibling_lookups(), 0);
    // the container renamed app → main: CVE-1 is held by app, so it is recorded silently
    let a = s
        .apply(
            &obs("prod", &main, "2026-01-03T00:00:00Z", &["CVE-1:HIGH"]),
            None,
            false,
            &t,
        )
        .unwrap();
    assert!(a.events.is_empty(), "{:?}", a.events);
    assert_eq!(a.rows_written, 1);
    assert_eq!(s.sibling_lookups(), 1);
    // the old name goes away; a later, really new finding in main is announced
    let gone = s
        .remove_container("prod", &app, ts("2026-01-04T00:00:00Z"), &t)
        .unwrap();
    assert_eq!(gone.events.len(), 1);
    // a stale scan looks nothing up
    assert!(
        s.apply(
            &obs("prod", &main, "2026-01-03T00:00:00Z", &["CVE-9:LOW"]),
            None,
            false,
            &t
        )
        .unwrap()
        .stale
    );
    assert_eq!(s.sibling_lookups(), 1);
    let a = s
        .apply(
            &obs(
                "prod",
                &main,
                "2026-01-05T00:00:00Z",
                &["CVE-1:HIGH", "CVE-9:LOW"],
            ),
            None,
            false,
            &t,
        )
        .unwrap();
    assert_eq!(s.sibling_lookups(), 2);
    assert_eq!(
        event_lines(&mut s, "prod"),
        [
            "container_removed shop/web/app CVE-1",
            "new shop/web/main CVE-9"
        ]
    );
    assert_eq!(a.events.len(), 1);
    // a finding held by a container closed as container_removed is not news either
    let sidecar = asset("shop", "Deployment", "web", "sidecar");
    let a = s
        .apply(
            &obs("prod", &sidecar, "2026-01-06T00:00:00Z", &["CVE-1:HIGH"]),
            None,
            false,
            &t,
        )
        .unwrap();
    assert!(a.events.is_empty(), "{:?}", a.events);
    assert_eq!(s.sibling_lookups(), 3);
}
both!(sibling_keys_load_only_for_would_be_new_findings);

fn remove_container_closes_and_forgets(kind: Kind) {
    let db = TestDb::new(kind, "rmcontainer");
    let mut s = db.open();
    let t = targets();
    let sidecar = asset("shop", "Deployment", "web", "sidecar");
    s.apply(
        &obs("prod", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]),
        Some(&rv("uid-app", "1")),
        true,
        &t,
    )
    .unwrap();
    s.apply(
        &obs(
            "prod",
            &sidecar,
            "2026-01-01T00:00:00Z",
            &["CVE-2:CRITICAL", "CVE-3:LOW"],
        ),
        Some(&rv("uid-side", "1")),
        true,
        &t,
    )
    .unwrap();
    s.finish_baseline("prod", ts("2026-01-01T01:00:00Z"))
        .unwrap();
    assert_eq!(
        s.live_containers("prod", &mut |_| true).unwrap(),
        [web(), sidecar.clone()]
    );
    assert!(
        s.live_containers("other", &mut |_| true)
            .unwrap()
            .is_empty()
    );

    let removed = s
        .remove_container("prod", &sidecar, ts("2026-01-02T00:00:00Z"), &t)
        .unwrap();
    assert_eq!(removed.rows_written, 2);
    assert_eq!(
        event_lines(&mut s, "prod"),
        [
            "container_removed shop/web/sidecar CVE-2",
            "container_removed shop/web/sidecar CVE-3"
        ]
    );
    let ev = &removed.events[0];
    assert_eq!(
        (ev.kind, ev.peak_severity, ev.occurred_at),
        (
            EventKind::ContainerRemoved,
            Severity::Critical,
            ts("2026-01-02T00:00:00Z")
        )
    );
    assert_eq!(db.count("SELECT count(*) FROM notification_outbox"), 4);
    assert_eq!(
        db.query("SELECT container, state FROM vulnerability_history ORDER BY container, cve_id"),
        [
            vec![Some("app".to_owned()), Some("open".to_owned())],
            vec![
                Some("sidecar".to_owned()),
                Some("container_removed".to_owned())
            ],
            vec![
                Some("sidecar".to_owned()),
                Some("container_removed".to_owned())
            ],
        ]
    );
    assert_eq!(
        db.query("SELECT container, removed_at IS NULL FROM scanned_containers ORDER BY container")
            .into_iter()
            .map(|r| format!("{} {}", r[0].as_deref().unwrap(), r[1].as_deref().unwrap()))
            .collect::<Vec<_>>(),
        match kind {
            Kind::Postgres => ["app t", "sidecar f"],
            Kind::Sqlite => ["app 1", "sidecar 0"],
        }
    );
    assert_eq!(s.report_version("prod", "uid-side").unwrap(), None);
    assert_eq!(
        s.report_version("prod", "uid-app").unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(s.live_containers("prod", &mut |_| true).unwrap(), [web()]);
    assert_eq!(s.known_workloads("prod").unwrap().len(), 1);
    // removing it again changes nothing
    let again = s
        .remove_container("prod", &sidecar, ts("2026-01-03T00:00:00Z"), &t)
        .unwrap();
    assert!(again.events.is_empty() && again.rows_written == 0);
    // the container comes back (a rollback to a revision that has it): silently open again
    let back = s
        .apply(
            &obs(
                "prod",
                &sidecar,
                "2026-01-04T00:00:00Z",
                &["CVE-2:CRITICAL", "CVE-3:LOW"],
            ),
            Some(&rv("uid-side-2", "1")),
            false,
            &t,
        )
        .unwrap();
    assert!(back.events.is_empty(), "{:?}", back.events);
    assert_eq!(
        db.count("SELECT count(*) FROM vulnerability_history WHERE state = 'open'"),
        3
    );
    assert_eq!(
        s.live_containers("prod", &mut |_| true).unwrap(),
        [web(), sidecar]
    );
    assert_eq!(db.count("SELECT count(*) FROM lifecycle_events"), 2);
}
both!(remove_container_closes_and_forgets);

/// `KnownReport::current` names the report last applied to its container, so the poll cycle
/// notices a rollback that made another known, unchanged report current.
fn known_report_current_follows_the_last_applied(kind: Kind) {
    let db = TestDb::new(kind, "current");
    let mut s = db.open();
    let with_rev = |at: &str, rev: u64| {
        let mut o = obs("prod", &web(), at, &["CVE-1:HIGH"]);
        o.revision = Some(rev);
        o
    };
    let current = |s: &mut Store| {
        let mut v: Vec<(String, bool)> = s
            .report_versions("prod")
            .unwrap()
            .into_iter()
            .map(|(uid, k)| (uid, k.current))
            .collect();
        v.sort();
        v
    };
    s.apply(
        &with_rev("2026-01-01T00:00:00Z", 1),
        Some(&rv("uid-1", "10")),
        true,
        &[],
    )
    .unwrap();
    assert_eq!(current(&mut s), [("uid-1".to_owned(), true)]);
    s.apply(
        &with_rev("2026-01-02T00:00:00Z", 2),
        Some(&rv("uid-2", "20")),
        false,
        &[],
    )
    .unwrap();
    assert_eq!(
        current(&mut s),
        [("uid-1".to_owned(), false), ("uid-2".to_owned(), true)]
    );
    // rollback: revision 1's ReplicaSet becomes revision 3; its report, scanned before
    // revision 2's, applies because its revision is higher
    let a = s
        .apply(
            &with_rev("2026-01-01T00:00:00Z", 3),
            Some(&rv("uid-1", "10")),
            false,
            &[],
        )
        .unwrap();
    assert!(!a.stale);
    assert_eq!(
        current(&mut s),
        [("uid-1".to_owned(), true), ("uid-2".to_owned(), false)]
    );
    // a stale scan records its version but does not become current
    let a = s
        .apply(
            &with_rev("2026-01-01T00:00:00Z", 3),
            Some(&rv("uid-x", "1")),
            false,
            &[],
        )
        .unwrap();
    assert!(a.stale);
    assert_eq!(
        current(&mut s),
        [
            ("uid-1".to_owned(), true),
            ("uid-2".to_owned(), false),
            ("uid-x".to_owned(), false)
        ]
    );
    assert_eq!(db.count("SELECT count(*) FROM lifecycle_events"), 0);
}
both!(known_report_current_follows_the_last_applied);

/// A workload removed and deployed again: its findings reopen without an event, its containers
/// are live again, and the revision counting restarts (the re-created Deployment's revision 1
/// is not older than the removed one's revision 7).
fn returning_workload_reopens_silently(kind: Kind) {
    let db = TestDb::new(kind, "returning");
    let mut s = db.open();
    let t = targets();
    let mut o = obs("prod", &web(), "2026-01-01T00:00:00Z", &["CVE-1:HIGH"]);
    o.revision = Some(7);
    s.apply(&o, Some(&rv("uid-7", "1")), true, &t).unwrap();
    s.finish_baseline("prod", ts("2026-01-01T01:00:00Z"))
        .unwrap();
    let gone = s
        .remove_workload(
            "prod",
            "shop",
            "Deployment",
            "web",
            ts("2026-01-02T00:00:00Z"),
            &t,
        )
        .unwrap();
    assert_eq!(gone.events.len(), 1);
    let containers = |db: &TestDb| {
        db.query("SELECT revision, removed_at IS NULL, report_uid FROM scanned_containers")
    };
    let yes = |b: bool| match (kind, b) {
        (Kind::Postgres, true) => "t",
        (Kind::Postgres, false) => "f",
        (Kind::Sqlite, true) => "1",
        (Kind::Sqlite, false) => "0",
    };
    assert_eq!(
        containers(&db),
        [vec![
            None,
            Some(yes(false).to_owned()),
            Some("uid-7".to_owned())
        ]]
    );
    assert!(s.live_containers("prod", &mut |_| true).unwrap().is_empty());
    assert!(s.known_workloads("prod").unwrap().is_empty());

    let mut o = obs("prod", &web(), "2026-01-03T00:00:00Z", &["CVE-1:HIGH"]);
    o.revision = Some(1);
    let back = s.apply(&o, Some(&rv("uid-1", "1")), false, &t).unwrap();
    assert!(!back.stale && back.events.is_empty(), "{back:?}");
    assert_eq!(
        containers(&db),
        [vec![
            Some("1".to_owned()),
            Some(yes(true).to_owned()),
            Some("uid-1".to_owned())
        ]]
    );
    let row = db.query("SELECT state, first_seen, fixed_at FROM vulnerability_history");
    assert_eq!(row[0][0].as_deref(), Some("open"));
    assert_eq!(date_of(&row[0][1]), "2026-01-01", "first_seen kept");
    assert_eq!(row[0][2], None);
    assert_eq!(s.live_containers("prod", &mut |_| true).unwrap(), [web()]);
    assert_eq!(
        event_lines(&mut s, "prod"),
        ["workload_removed shop/web/app CVE-1"]
    );
}
both!(returning_workload_reopens_silently);

/// A database as the agent before schema 0003 left it: the embedded 0001 and 0002 applied and
/// recorded, nothing else.
fn old_schema_db(kind: Kind) -> TestDb {
    let db = TestDb::new(kind, "upgrade");
    match kind {
        Kind::Postgres => db.exec(&format!(
            "{}\n{}\nCREATE TABLE schema_migrations (version BIGINT PRIMARY KEY,
                 name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
             INSERT INTO schema_migrations (version, name)
                 VALUES (1, 'init'), (2, 'notification_messages');",
            include_str!("../../sql/postgres/0001_init.sql"),
            include_str!("../../sql/postgres/0002_notification_messages.sql"),
        )),
        Kind::Sqlite => db.exec(&format!(
            "{}\n{}\nCREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,
                 name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT '2026-01-01T00:00:00.000000Z');
             INSERT INTO schema_migrations (version, name)
                 VALUES (1, 'init'), (2, 'notification_messages');",
            include_str!("../../sql/sqlite/0001_init.sql"),
            include_str!("../../sql/sqlite/0002_notification_messages.sql"),
        )),
    }
    db
}

/// The old agent's last scan of shop/web/app (2026-01-03): CVE-1 in two paths of openssl,
/// CVE-2 in a.jar only (b.jar had been upgraded away, so its row was closed as fixed).
fn old_agents_scan(at: &str) -> Observation {
    let mut o = obs("prod", &web(), at, &[]);
    o.findings = vec![
        instance("CVE-1:HIGH", "usr/lib/b", "3.0.1"),
        instance("CVE-1:HIGH", "usr/lib/B", "3.0.1"),
        instance("CVE-2:CRITICAL:log4j", "app/a.jar", "2.14"),
    ];
    o
}

/// Issue 10's acceptance on the store: 0003 merges rows that differed only in package_path as
/// specified, writes no event, keeps every event, outbox row and guard, and the same scans
/// applied again (or rescanned unchanged) produce no event.
fn upgrade_from_schema_2_merges_rows_without_events(kind: Kind) {
    let db = old_schema_db(kind);
    let d = |day: u32| format!("'2026-01-{day:02}T00:00:00.000000Z'");
    let img = "'registry.example/shop/web:1.2@sha256:abc'";
    let (d1, d2, d3) = (d(1), d(2), d(3));
    db.exec(&format!(
        "INSERT INTO clusters VALUES ('prod', {d1});
         INSERT INTO scanned_containers (cluster_name, namespace, workload_kind, workload,
             container, image, last_scan_at, removed_at) VALUES
             ('prod', 'shop', 'Deployment', 'web', 'app', {img}, {d3}, NULL),
             ('prod', 'shop', 'Deployment', 'old', 'app', {img}, {d2}, {d3});
         INSERT INTO report_versions (cluster_name, report_uid, resource_version,
             update_timestamp, namespace, workload_kind, workload, container) VALUES
             ('prod', 'uid-web-rs1', '5', {d2}, 'shop', 'Deployment', 'web', 'app'),
             ('prod', 'uid-web', '9', {d3}, 'shop', 'Deployment', 'web', 'app');
         INSERT INTO vulnerability_history (cluster_name, namespace, workload_kind, workload,
             container, cve_id, package, package_path, severity, installed_version,
             fixed_version, title, link, image, state, first_seen, last_seen, fixed_at,
             reintroduced_count) VALUES
             ('prod', 'shop', 'Deployment', 'web', 'app', 'CVE-1', 'openssl', 'usr/lib/b',
              'HIGH', '3.0.1', '3.0.2', 'CVE-1 in openssl', 'https://avd.aquasec.com/nvd/cve-1',
              {img}, 'open', {d2}, {d3}, NULL, 0),
             ('prod', 'shop', 'Deployment', 'web', 'app', 'CVE-1', 'openssl', 'usr/lib/B',
              'HIGH', '3.0.1', '3.0.2', 'CVE-1 in openssl', 'https://avd.aquasec.com/nvd/cve-1',
              {img}, 'open', {d1}, {d3}, NULL, 0),
             ('prod', 'shop', 'Deployment', 'web', 'app', 'CVE-2', 'log4j', 'app/a.jar',
              'CRITICAL', '2.14', '3.0.2', 'CVE-2 in openssl', 'https://avd.aquasec.com/nvd/cve-2',
              {img}, 'open', {d2}, {d3}, NULL, 0),
             ('prod', 'shop', 'Deployment', 'web', 'app', 'CVE-2', 'log4j', 'app/b.jar',
              'HIGH', '2.13', '2.17', 'old title', 'old link',
              'registry.example/shop/web:1.1', 'fixed', {d1}, {d2}, {d3}, 1),
             ('prod', 'shop', 'Deployment', 'web', 'app', 'CVE-3', 'zlib', '',
              'MEDIUM', '1.2', '1.3', 't3', 'l3', {img}, 'fixed', {d1}, {d2}, {d3}, 0),
             ('prod', 'shop', 'Deployment', 'web', 'app', 'CVE-4', 'curl', 'x',
              'HIGH', '8.0', '8.1', 'older', 'l4', {img}, 'fixed', {d1}, {d1}, {d2}, 2),
             ('prod', 'shop', 'Deployment', 'web', 'app', 'CVE-4', 'curl', 'y',
              'LOW', '8.0', '8.1', 'newer', 'l4', {img}, 'fixed', {d1}, {d2}, {d3}, 0),
             ('prod', 'shop', 'Deployment', 'old', 'app', 'CVE-5', 'openssl', '',
              'HIGH', '3.0.1', '', 't5', 'l5', {img}, 'workload_removed', {d1}, {d2}, {d3}, 0);
         INSERT INTO lifecycle_events (event_id, kind, cluster_name, namespace, workload_kind,
             workload, container, image, cve_id, package, package_path, installed_version,
             fixed_version, severity, previous_severity, title, link, reintroduced_count,
             occurred_at) VALUES
             ('e-new', 'new', 'prod', 'shop', 'Deployment', 'web', 'app', {img}, 'CVE-2',
              'log4j', 'app/a.jar', '2.14', '3.0.2', 'CRITICAL', NULL, 't', 'l', 0, {d2}),
             ('e-fixed', 'fixed', 'prod', 'shop', 'Deployment', 'web', 'app', {img}, 'CVE-2',
              'log4j', 'app/b.jar', '2.13', '2.17', 'HIGH', NULL, 't', 'l', 1, {d3}),
             ('e-removed', 'workload_removed', 'prod', 'shop', 'Deployment', 'old', 'app',
              {img}, 'CVE-5', 'openssl', '', '3.0.1', '', 'HIGH', NULL, 't', 'l', 0, {d3});
         INSERT INTO notification_messages (message_id, target, cluster_name, created_at,
             state, attempts, next_attempt_at, delivered_at) VALUES
             ('m1', 'slack', 'prod', {d2}, 'delivered', 1, {d2}, {d2});
         INSERT INTO notification_outbox (event_id, target, state, attempts, next_attempt_at,
             delivered_at, message_id) VALUES
             ('e-new', 'slack', 'delivered', 1, {d2}, {d2}, 'm1'),
             ('e-fixed', 'slack', 'pending', 0, {d3}, NULL, NULL),
             ('e-removed', 'webhook', 'filtered', 0, {d3}, NULL, NULL);"
    ));
    let events_before = db.query(
        "SELECT seq, event_id, kind, severity, occurred_at FROM lifecycle_events ORDER BY seq",
    );
    let outbox = |db: &TestDb| {
        db.query(
            "SELECT event_id, target, state, attempts, message_id, delivered_at
             FROM notification_outbox ORDER BY event_id, target",
        )
    };
    let outbox_before = outbox(&db);
    assert_eq!(outbox_before.len(), 3);

    let mut s = db.open();
    assert_eq!(s.schema_status().unwrap().applied, [1, 2, 3, 4, 5, 6]);

    let rows = |db: &TestDb| -> Vec<String> {
        db.query(
            "SELECT workload, cve_id, package, state, package_path, installed_version, severity,
                    peak_severity, first_seen, last_seen, fixed_at, reintroduced_count,
                    fixed_version, title, image
             FROM vulnerability_history ORDER BY workload, cve_id",
        )
        .iter()
        .map(|r| {
            let c = |i: usize| r[i].clone().unwrap_or_else(|| "-".into());
            format!(
                "{} {} {} {} [{}] [{}] {} peak {} {} {} {} n{} {} {} {}",
                c(0),
                c(1),
                c(2),
                c(3),
                c(4),
                c(5),
                c(6),
                c(7),
                date_of(&r[8]),
                date_of(&r[9]),
                r[10].as_ref().map_or("-".into(), |_| date_of(&r[10])),
                c(11),
                c(12),
                c(13),
                c(14)
            )
        })
        .collect()
    };
    let abc = "registry.example/shop/web:1.2@sha256:abc";
    assert_eq!(
        rows(&db),
        [
            format!(
                "old CVE-5 openssl workload_removed [] [3.0.1] HIGH peak HIGH \
                 2026-01-01 2026-01-02 2026-01-03 n0  t5 {abc}"
            ),
            format!(
                "web CVE-1 openssl open [usr/lib/B, usr/lib/b] [3.0.1] HIGH peak HIGH \
                 2026-01-01 2026-01-03 - n0 3.0.2 CVE-1 in openssl {abc}"
            ),
            // open because one instance was; attributes of the newest sighting
            format!(
                "web CVE-2 log4j open [app/a.jar, app/b.jar] [2.13, 2.14] CRITICAL peak CRITICAL \
                 2026-01-01 2026-01-03 - n1 3.0.2 CVE-2 in openssl {abc}"
            ),
            format!(
                "web CVE-3 zlib fixed [] [1.2] MEDIUM peak MEDIUM \
                 2026-01-01 2026-01-02 2026-01-03 n0 1.3 t3 {abc}"
            ),
            // both closed: fixed_at the latest, attributes of the most recently seen row
            format!(
                "web CVE-4 curl fixed [x, y] [8.0] LOW peak LOW \
                 2026-01-01 2026-01-02 2026-01-03 n2 8.1 newer {abc}"
            ),
        ]
    );
    // no event written, every event kept with its seq; old events read their peak as severity
    assert_eq!(
        db.query(
            "SELECT seq, event_id, kind, severity, occurred_at FROM lifecycle_events ORDER BY seq"
        ),
        events_before
    );
    assert_eq!(
        db.count("SELECT count(*) FROM lifecycle_events WHERE peak_severity IS NULL"),
        3
    );
    let old_events = s.recent_events("prod", 10).unwrap();
    assert_eq!(old_events.len(), 3);
    assert!(
        old_events
            .iter()
            .all(|e| e.peak_severity == e.finding.severity)
    );
    assert_eq!(outbox(&db), outbox_before);
    // the guards survive: append-only, and outbox rows still need their event
    let refused = db.try_exec("DELETE FROM lifecycle_events").unwrap_err();
    assert!(refused.contains("append-only"), "{refused}");
    let refused = db
        .try_exec("UPDATE lifecycle_events SET kind = 'fixed'")
        .unwrap_err();
    assert!(refused.contains("append-only"), "{refused}");
    let orphan = "INSERT INTO notification_outbox (event_id, target) VALUES ('nope', 'slack')";
    let refused = match kind {
        Kind::Postgres => db.try_exec(orphan),
        Kind::Sqlite => db.try_exec(&format!("PRAGMA foreign_keys = ON; {orphan}")),
    }
    .unwrap_err();
    assert!(refused.to_lowercase().contains("foreign key"), "{refused}");
    // the container knows which report was applied last
    assert_eq!(
        db.query("SELECT workload, revision, report_uid FROM scanned_containers ORDER BY workload"),
        [
            vec![Some("old".to_owned()), None, Some(String::new())],
            vec![Some("web".to_owned()), None, Some("uid-web".to_owned())],
        ]
    );
    let known = s.report_versions("prod").unwrap();
    assert!(known["uid-web"].current && !known["uid-web-rs1"].current);
    assert_eq!(s.live_containers("prod", &mut |_| true).unwrap(), [web()]);
    assert!(!s.baseline_pending("prod").unwrap());

    // the same scan again: stale, nothing happens
    let t = targets();
    let same = s
        .apply(
            &old_agents_scan("2026-01-03T00:00:00Z"),
            Some(&rv("uid-web", "9")),
            false,
            &t,
        )
        .unwrap();
    assert!(same.stale && same.events.is_empty());
    // a rescan with the same findings: applied, still no event
    let rescan = s
        .apply(
            &old_agents_scan("2026-01-04T00:00:00Z"),
            Some(&rv("uid-web", "10")),
            false,
            &t,
        )
        .unwrap();
    assert!(!rescan.stale && rescan.events.is_empty(), "{rescan:?}");
    assert_eq!(rescan.rows_written, 2);
    assert_eq!(db.count("SELECT count(*) FROM lifecycle_events"), 3);
    assert_eq!(outbox(&db), outbox_before);
    assert_eq!(s.sibling_lookups(), 0);

    // the rebuilt event table takes new kinds and continues the sequence
    let mut gone = old_agents_scan("2026-01-05T00:00:00Z");
    gone.findings.truncate(2);
    let a = s.apply(&gone, None, false, &t).unwrap();
    assert_eq!(
        a.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Withdrawn]
    );
    assert_eq!(
        db.query("SELECT seq, kind, peak_severity FROM lifecycle_events WHERE seq > 3"),
        [vec![
            Some("4".to_owned()),
            Some("withdrawn".to_owned()),
            Some("CRITICAL".to_owned())
        ]]
    );
}
both!(upgrade_from_schema_2_merges_rows_without_events);
