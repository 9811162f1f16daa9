//! Upgrading a store written by schema 2 or 3 (finding identity with the package path) to the
//! current schema, end to end with the release binary: the migration writes no event, and the
//! next cycles over an unchanged cluster — even one whose every report was re-created by Trivy
//! Operator's 24 h TTL with a newer scan — produce no event and no message.
//!
//! The schema-2 store is built as the previous agent left it: the embedded migrations 1 and 2
//! applied by hand, and the data of a completed baseline copied into it in schema 2's shape —
//! the finding whose report lists two instances (`/app/a.jar`, `/app/b.jar`) as the two rows the
//! old identity made of it.
//!
//! A schema-5 store differs from today's only by `vulnerability_history.announced` (migration
//! 6), which the upgrade fills from the event log.
//!
//! A schema-4 store differs from schema 5 only by `notification_outbox.queued_at` (migration 5):
//! its rows queued before the upgrade carry no queue time and are sent without a batch window.
//!
//! A schema-3 store differs from schema 4 only by the coverage table of migration 4: it is the
//! current store with that table and its migration row removed. Its coverage is adopted at its
//! baseline's completion, so the first cycle after the upgrade is silent over an unchanged
//! cluster and still announces a workload deployed after the baseline.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::agent::run;
use crate::support::lifecycle::{Db, create, get, replace, rescan};
use crate::support::receiver::Receiver;
use crate::support::sandbox::Sandbox;

const CLUSTER: &str = "upgrade";
const VR: &str = "vulnerabilityreports";
const NGINX: &str = "replicaset-web-7c9d8f6b5d-nginx";
const LOG4SHELL: &str = "CVE-2021-44228";

/// The schema-2 tables and the columns they had, in copy order.
const OLD_TABLES: &[(&str, &str)] = &[
    ("clusters", "cluster_name, baseline_completed_at"),
    (
        "scanned_containers",
        "cluster_name, namespace, workload_kind, workload, container, image, last_scan_at, removed_at",
    ),
    (
        "report_versions",
        "cluster_name, report_uid, resource_version, update_timestamp, namespace, workload_kind, workload, container, recorded_at",
    ),
    (
        "vulnerability_history",
        "cluster_name, namespace, workload, cve_id, severity, first_seen, last_seen, fixed_at, workload_kind, container, package, package_path, installed_version, fixed_version, title, link, image, state, reintroduced_count",
    ),
];

/// One `--once` that sends each cycle's messages at once (`KIJO_NOTIFY_BATCH_WINDOW=0`).
fn once(sb: &Sandbox, db: &Db, slack: &Receiver) -> String {
    once_with_window(sb, db, slack, Some("0"))
}

/// One `--once`; `window: None` leaves `KIJO_NOTIFY_BATCH_WINDOW` at its default.
fn once_with_window(sb: &Sandbox, db: &Db, slack: &Receiver, window: Option<&str>) -> String {
    let kubeconfig = sb.kubeconfig.display().to_string();
    let url = db.url();
    let slack_url = slack.url("/slack");
    let mut env = vec![
        ("KIJO_DATABASE_URL", url.as_str()),
        ("KIJO_CLUSTER_NAME", CLUSTER),
        ("KIJO_KUBECONFIG", kubeconfig.as_str()),
        ("KIJO_NOTIFY_SLACK", slack_url.as_str()),
        ("KIJO_NOTIFY_SEVERITY", "LOW"),
        ("KIJO_NOTIFY_WORKLOAD_REMOVED", "true"),
        ("KIJO_NOTIFY_ONCE_WAIT", "10s"),
    ];
    if let Some(w) = window {
        env.push(("KIJO_NOTIFY_BATCH_WINDOW", w));
    }
    let (status, _, err) = run(&env, &["--once"]);
    assert!(status.success(), "--once failed:\n{err}");
    err
}

/// Two instances of Log4Shell in the nginx report, at two paths.
fn add_instances(sb: &Sandbox) {
    let mut r = get(sb, VR, "shop", NGINX);
    let instance = |path: &str| {
        json!({
            "vulnerabilityID": LOG4SHELL, "resource": "org.apache.logging.log4j:log4j-core",
            "installedVersion": "2.14.1", "fixedVersion": "2.15.0", "severity": "CRITICAL",
            "title": "log4j-core: Remote code execution in Log4j 2.x",
            "primaryLink": "https://avd.aquasec.com/nvd/cve-2021-44228", "links": [],
            "packagePath": path, "target": "Java"
        })
    };
    rescan(&mut r, Duration::from_secs(60), |v| {
        v.push(instance("/app/a.jar"));
        v.push(instance("/app/b.jar"));
    });
    replace(sb, &r);
}

/// Creates schema 2 in `old` exactly as the previous agent's migrations did.
fn create_schema_2(old: &Db) {
    let dialect = match old {
        Db::Pg(_) => "postgres",
        Db::Sqlite(..) => "sqlite",
    };
    let sql = |file: &str| {
        std::fs::read_to_string(format!(
            "{}/sql/{dialect}/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let bookkeeping = match old {
        Db::Pg(_) => {
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
        }
        Db::Sqlite(..) => {
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                 applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'));"
        }
    };
    let script = format!(
        "{bookkeeping}\n{}\n{}\nINSERT INTO schema_migrations (version, name) VALUES (1, 'init'), (2, 'notification_messages');",
        sql("0001_init.sql"),
        sql("0002_notification_messages.sql")
    );
    execute(old, &script);
}

fn execute(db: &Db, script: &str) {
    match db {
        Db::Pg(t) => {
            let url = format!("postgres://postgres@127.0.0.1:5432/{}", t.name);
            postgres::Client::connect(&url, postgres::NoTls)
                .unwrap()
                .batch_execute(script)
                .unwrap();
        }
        Db::Sqlite(_, path) => rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(script)
            .unwrap(),
    }
}

/// Copies the schema-2 columns of every table from `new` into `old`.
fn copy_old_columns(new: &Db, old: &Db) {
    match (new, old) {
        (Db::Pg(n), Db::Pg(o)) => {
            let connect = |name: &str| {
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                postgres::Client::connect(&url, postgres::NoTls).unwrap()
            };
            let (mut from, mut to) = (connect(&n.name), connect(&o.name));
            for (table, columns) in OLD_TABLES {
                let rows = from
                    .query(
                        &format!(
                            "SELECT row_to_json(r)::text FROM (SELECT {columns} FROM {table}) r"
                        ),
                        &[],
                    )
                    .unwrap();
                for row in rows {
                    let json: String = row.get(0);
                    to.execute(
                        &format!(
                            "INSERT INTO {table} ({columns}) SELECT {columns} FROM json_populate_record(NULL::{table}, $1::text::json)"
                        ),
                        &[&json],
                    )
                    .unwrap();
                }
            }
        }
        (Db::Sqlite(_, n), Db::Sqlite(_, o)) => {
            let c = rusqlite::Connection::open(o).unwrap();
            c.execute("ATTACH DATABASE ?1 AS new", [n.display().to_string()])
                .unwrap();
            for (table, columns) in OLD_TABLES {
                c.execute_batch(&format!(
                    "INSERT INTO main.{table} ({columns}) SELECT {columns} FROM new.{table}"
                ))
                .unwrap();
            }
        }
        _ => unreachable!("same dialect"),
    }
}

/// Splits the merged Log4Shell row into the two rows schema 2's identity kept, one per path.
fn split_instances(old: &Db) {
    let columns = OLD_TABLES[3].1;
    let b_row = columns.replace("package_path", "'/app/b.jar'");
    execute(
        old,
        &format!(
            "INSERT INTO vulnerability_history ({columns})
                 SELECT {b_row} FROM vulnerability_history WHERE cve_id = '{LOG4SHELL}';
             UPDATE vulnerability_history SET package_path = '/app/a.jar'
                 WHERE cve_id = '{LOG4SHELL}' AND package_path <> '/app/b.jar';"
        ),
    );
}

fn log4shell_rows(db: &Db) -> Vec<Vec<String>> {
    db.findings(CLUSTER)
        .into_iter()
        .filter(|r| r[4] == LOG4SHELL)
        .collect()
}

/// Every report re-created by the TTL: new uid, same findings, scanned an hour later.
fn ttl_rescan_everything(sb: &Sandbox) {
    let list: Value =
        serde_json::from_str(&sb.kubectl_ok(&["get", VR, "-A", "-o", "json"])).unwrap();
    for item in list["items"].as_array().unwrap() {
        let ns = item["metadata"]["namespace"].as_str().unwrap();
        let name = item["metadata"]["name"].as_str().unwrap();
        sb.kubectl_ok(&["delete", VR, "-n", ns, name]);
        let mut again = item.clone();
        rescan(&mut again, Duration::from_secs(3600), |_| {});
        create(sb, &again);
    }
}

fn upgrade(new: Db, old: Db) {
    let which = new.name();
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let slack = Receiver::start();
    add_instances(&sb);

    // The data of a completed baseline, in schema 2's shape.
    once(&sb, &new, &slack);
    assert_eq!(
        new.count("lifecycle_events", CLUSTER),
        0,
        "{which}: baseline"
    );
    create_schema_2(&old);
    copy_old_columns(&new, &old);
    split_instances(&old);
    let paths: Vec<String> = log4shell_rows(&old).iter().map(|r| r[6].clone()).collect();
    assert_eq!(
        paths,
        ["/app/a.jar", "/app/b.jar"],
        "{which}: schema 2 had two rows"
    );
    let findings_before = old.findings(CLUSTER).len();
    assert!(
        findings_before > 2,
        "{which}: the fixture cluster's findings"
    );

    // Migrate and run a cycle over the unchanged cluster: no event, no message, and the two
    // instance rows are one finding.
    let log = once(&sb, &old, &slack);
    assert!(
        log.contains("database migration applied"),
        "{which}: migrated:\n{log}"
    );
    let merged = log4shell_rows(&old);
    assert_eq!(merged.len(), 1, "{which}: {merged:?}");
    assert_eq!(merged[0][6], "/app/a.jar, /app/b.jar", "{which}");
    assert_eq!(merged[0][8], "open", "{which}");
    assert_eq!(old.findings(CLUSTER).len(), findings_before - 1, "{which}");

    // Trivy's TTL re-creates every report with a newer scan: the diff runs against the migrated
    // rows, and still nothing happened.
    ttl_rescan_everything(&sb);
    let log = once(&sb, &old, &slack);
    assert!(log.contains("\"reports_changed\":"), "{which}:\n{log}");
    assert_eq!(
        old.count("lifecycle_events", CLUSTER),
        0,
        "{which}: no event after the upgrade: {:?}",
        old.events(CLUSTER)
    );
    assert!(
        slack.requests().is_empty(),
        "{which}: no message after the upgrade: {:?}",
        slack
            .requests()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_schema_2_store_upgrades_without_an_event_on_postgres() {
    upgrade(Db::postgres("upgrade_new"), Db::postgres("upgrade_old"));
}

#[test]
fn a_schema_2_store_upgrades_without_an_event_on_sqlite() {
    upgrade(Db::sqlite("upgrade-new"), Db::sqlite("upgrade-old"));
}

/// Schema 3 → 4: no event over an unchanged cluster (even with every report re-created by the
/// TTL), the coverage dated at the baseline, and a workload deployed afterwards is still news.
fn upgrade_from_3(db: Db) {
    let which = db.name();
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let slack = Receiver::start();
    once(&sb, &db, &slack);
    assert_eq!(
        db.count("lifecycle_events", CLUSTER),
        0,
        "{which}: baseline"
    );
    execute(
        &db,
        "DROP TABLE coverage; DELETE FROM schema_migrations WHERE version = 4;",
    );

    ttl_rescan_everything(&sb);
    let log = once(&sb, &db, &slack);
    assert!(
        log.contains("database migration applied"),
        "{which}: migrated:\n{log}"
    );
    assert_eq!(
        db.count("lifecycle_events", CLUSTER),
        0,
        "{which}: no event after the upgrade: {:?}",
        db.events(CLUSTER)
    );
    assert!(slack.requests().is_empty(), "{which}: no message");
    let sql = "SELECT c.namespace, CAST(c.covered_since = b.baseline_completed_at AS TEXT)
               FROM coverage c JOIN clusters b ON b.cluster_name = c.cluster_name
               WHERE c.cluster_name = $1 ORDER BY c.namespace, c.report_kind";
    let covered = db.rows(sql, &sql.replace("$1", "?1"), CLUSTER);
    let at_baseline = |v: &str| v == "true" || v == "1";
    assert!(
        !covered.is_empty() && covered.iter().all(|r| r[0] == "*" && at_baseline(&r[1])),
        "{which}: every namespace covered since the baseline: {covered:?}"
    );

    // Deployed after the baseline, scanned after the upgrade: news.
    deploy_app_0(&sb);
    once(&sb, &db, &slack);
    let kinds: Vec<String> = db.events(CLUSTER).into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["new", "new"], "{which}");
    assert_eq!(slack.requests().len(), 1, "{which}: one message");
}

/// A StatefulSet `app-0` with a report of two findings: news for an agent past its baseline.
fn deploy_app_0(sb: &Sandbox) {
    let statefulset = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "app-0", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "app-0"}}, "serviceName": "app-0",
                 "template": {"metadata": {"labels": {"app": "app-0"}},
                              "spec": {"containers": [{"name": "main", "image": "acme/service-0:1.0.0"}]}}}
    });
    create(sb, &statefulset);
    create(
        sb,
        &crate::support::lifecycle::synthetic_report("shop", 0, 2),
    );
}

#[test]
fn a_schema_3_store_upgrades_without_an_event_on_postgres() {
    upgrade_from_3(Db::postgres("upgrade3"));
}

#[test]
fn a_schema_3_store_upgrades_without_an_event_on_sqlite() {
    upgrade_from_3(Db::sqlite("upgrade3"));
}

/// Schema 4 → 5: outbox rows queued by an agent from before `queued_at` existed get NULL, and
/// NULL means "the batch window is already closed": the first run after the upgrade sends them at
/// once with the default 10-minute window, instead of holding them for a window nobody knows the
/// start of.
fn upgrade_from_4(db: Db) {
    let which = db.name();
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let slack = Receiver::start();
    once(&sb, &db, &slack);
    assert_eq!(
        db.count("lifecycle_events", CLUSTER),
        0,
        "{which}: baseline"
    );

    // A change queued and held by the default window, as a schema-4 agent would have left it
    // queued (but not grouped): then the column and its migration row are removed.
    deploy_app_0(&sb);
    let log = once_with_window(&sb, &db, &slack, None);
    assert!(
        log.contains("changes held by KIJO_NOTIFY_BATCH_WINDOW"),
        "{which}: held by the default window:\n{log}"
    );
    assert!(slack.requests().is_empty(), "{which}: nothing sent yet");
    execute(
        &db,
        "ALTER TABLE notification_outbox DROP COLUMN queued_at;
         DELETE FROM schema_migrations WHERE version = 5;",
    );

    let log = once_with_window(&sb, &db, &slack, None);
    assert!(
        log.contains("database migration applied"),
        "{which}: migrated:\n{log}"
    );
    assert!(
        !log.contains("changes held by KIJO_NOTIFY_BATCH_WINDOW"),
        "{which}: a row from before the upgrade is not held:\n{log}"
    );
    let kinds: Vec<String> = db.events(CLUSTER).into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["new", "new"], "{which}: no event from the upgrade");
    assert_eq!(
        slack.requests().len(),
        1,
        "{which}: sent at once, one message"
    );
}

#[test]
fn outbox_rows_from_before_schema_5_are_sent_at_once_on_postgres() {
    upgrade_from_4(Db::postgres("upgrade4"));
}

#[test]
fn outbox_rows_from_before_schema_5_are_sent_at_once_on_sqlite() {
    upgrade_from_4(Db::sqlite("upgrade4"));
}

/// Schema 5 → 6: `vulnerability_history.announced` is filled from the event log. The findings
/// of a workload deployed after the baseline (their "new" events) are announced, the baseline's
/// are not; the fixtures' scans predate the baseline's end, so the gauge's old reading ("first
/// seen after the baseline") would have called the new ones unannounced too.
fn upgrade_from_5(db: Db) {
    let which = db.name();
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let slack = Receiver::start();
    once(&sb, &db, &slack);
    deploy_app_0(&sb);
    once(&sb, &db, &slack);
    let kinds: Vec<String> = db.events(CLUSTER).into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["new", "new"], "{which}: app-0 is news");
    execute(
        &db,
        "ALTER TABLE vulnerability_history DROP COLUMN announced;
         DELETE FROM schema_migrations WHERE version = 6;",
    );

    let log = once(&sb, &db, &slack);
    assert!(
        log.contains("database migration applied"),
        "{which}: migrated:\n{log}"
    );
    let pg = "SELECT workload, CAST(announced AS TEXT), CAST(count(*) AS TEXT)
              FROM vulnerability_history WHERE cluster_name = $1
              GROUP BY workload, announced ORDER BY workload";
    let rows = db.rows(pg, &pg.replace("$1", "?1"), CLUSTER);
    let yes = |v: &str| v == "true" || v == "1";
    let announced: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| yes(&r[1]))
        .map(|r| (r[0].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(announced, [("app-0", "2")], "{which}: {rows:?}");
    assert!(
        rows.iter().any(|r| r[0] != "app-0" && !yes(&r[1])),
        "{which}: the baseline's findings are there, unannounced: {rows:?}"
    );
    assert_eq!(
        db.count("lifecycle_events", CLUSTER),
        2,
        "{which}: no event from the upgrade"
    );
    assert_eq!(
        slack.requests().len(),
        1,
        "{which}: the one message of app-0"
    );
}

#[test]
fn announced_findings_are_taken_from_the_event_log_on_postgres() {
    upgrade_from_5(Db::postgres("upgrade5"));
}

#[test]
fn announced_findings_are_taken_from_the_event_log_on_sqlite() {
    upgrade_from_5(Db::sqlite("upgrade5"));
}
