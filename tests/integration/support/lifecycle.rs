//! Lifecycle scenarios: a store under test (PostgreSQL or SQLite) read back directly, and
//! report edits scripted with real kubectl against the sandbox.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::agent::TempDir;
use super::pg::TestDb;
use super::sandbox::Sandbox;

/// One lifecycle event row, without its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventRow {
    pub kind: String,
    pub workload_kind: String,
    pub workload: String,
    pub container: String,
    pub cve: String,
    pub event_id: String,
}

impl EventRow {
    /// `kind workload_kind/workload/container cve`, for compact assertions.
    pub fn short(&self) -> String {
        format!(
            "{} {}/{}/{} {}",
            self.kind, self.workload_kind, self.workload, self.container, self.cve
        )
    }
}

/// The store an agent under test writes to.
pub enum Db {
    Pg(TestDb),
    Sqlite(TempDir, PathBuf),
}

impl Db {
    pub fn postgres(tag: &str) -> Db {
        Db::Pg(TestDb::create(tag))
    }

    pub fn sqlite(tag: &str) -> Db {
        let dir = TempDir::new(tag);
        let path = dir.path().join("kijo.db");
        Db::Sqlite(dir, path)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Db::Pg(_) => "postgres",
            Db::Sqlite(..) => "sqlite",
        }
    }

    pub fn url(&self) -> String {
        match self {
            Db::Pg(db) => db.url_with_password("unused"),
            Db::Sqlite(_, path) => format!("sqlite:{}", path.display()),
        }
    }

    /// Rows of a query whose columns are all text (or cast to text).
    pub fn rows(&self, pg_sql: &str, sqlite_sql: &str, cluster: &str) -> Vec<Vec<String>> {
        match self {
            Db::Pg(db) => {
                let url = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                c.query(pg_sql, &[&cluster])
                    .unwrap()
                    .iter()
                    .map(|r| (0..r.len()).map(|i| r.get::<_, String>(i)).collect())
                    .collect()
            }
            Db::Sqlite(_, path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                let mut st = c.prepare(sqlite_sql).unwrap();
                let n = st.column_count();
                st.query_map([cluster], |r| {
                    (0..n)
                        .map(|i| r.get::<_, String>(i))
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
        }
    }

    /// A count (`SELECT count(*)::text …`), 0 while the schema does not exist yet.
    pub fn count(&self, table: &str, cluster: &str) -> usize {
        let pg = format!("SELECT count(*)::text FROM {table} WHERE cluster_name = $1");
        let sqlite = format!("SELECT CAST(count(*) AS TEXT) FROM {table} WHERE cluster_name = ?1");
        let exists = match self {
            Db::Pg(_) => self.rows(
                &format!("SELECT (to_regclass('{table}') IS NOT NULL)::text WHERE $1 <> ''"),
                "",
                cluster,
            )[0][0]
                == "true",
            Db::Sqlite(_, path) => {
                path.exists()
                    && self.rows(
                        "",
                        &format!("SELECT CAST(count(*) AS TEXT) FROM sqlite_master WHERE name = '{table}' AND ?1 <> ''"),
                        cluster,
                    )[0][0]
                        == "1"
            }
        };
        if !exists {
            return 0;
        }
        self.rows(&pg, &sqlite, cluster)[0][0].parse().unwrap()
    }

    /// PostgreSQL only: whether an agent's session is inside a transaction right now (a unit of
    /// work being written). Always true for SQLite, where it cannot be seen from outside.
    pub fn agent_in_transaction(&self) -> bool {
        match self {
            Db::Pg(db) => {
                let mut admin = super::pg::admin();
                admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1
                           AND application_name = 'kijo-agent' AND xact_start IS NOT NULL",
                        &[&db.name],
                    )
                    .unwrap()
                    .get::<_, i64>(0)
                    > 0
            }
            Db::Sqlite(..) => true,
        }
    }

    /// Every lifecycle event of a cluster, oldest first.
    pub fn events(&self, cluster: &str) -> Vec<EventRow> {
        let sql = "SELECT kind, workload_kind, workload, container, cve_id, event_id
                   FROM lifecycle_events WHERE cluster_name = $1 ORDER BY seq";
        self.rows(sql, &sql.replace("$1", "?1"), cluster)
            .into_iter()
            .map(|r| EventRow {
                kind: r[0].clone(),
                workload_kind: r[1].clone(),
                workload: r[2].clone(),
                container: r[3].clone(),
                cve: r[4].clone(),
                event_id: r[5].clone(),
            })
            .collect()
    }

    /// Every finding row of a cluster (state and times as text), sorted: the whole lifecycle
    /// state, for comparing two runs.
    pub fn findings(&self, cluster: &str) -> Vec<Vec<String>> {
        let pg = "SELECT namespace, workload_kind, workload, container, cve_id, package,
                         package_path, severity, state, reintroduced_count::text,
                         to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
                         to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
                         coalesce(to_char(fixed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), '')
                  FROM vulnerability_history WHERE cluster_name = $1 ORDER BY 1, 2, 3, 4, 5, 6, 7";
        let sqlite = "SELECT namespace, workload_kind, workload, container, cve_id, package,
                             package_path, severity, state, CAST(reintroduced_count AS TEXT),
                             first_seen, last_seen, coalesce(fixed_at, '')
                      FROM vulnerability_history WHERE cluster_name = ?1 ORDER BY 1, 2, 3, 4, 5, 6, 7";
        self.rows(pg, sqlite, cluster)
    }

    /// Open findings of one workload.
    pub fn open_of(&self, cluster: &str, workload: &str) -> usize {
        self.findings(cluster)
            .iter()
            .filter(|r| r[2] == workload && r[8] == "open")
            .count()
    }
}

/// The events added since `before` (a previous `events()` result).
pub fn new_events(db: &Db, cluster: &str, before: &[EventRow]) -> Vec<EventRow> {
    let all = db.events(cluster);
    assert!(
        all.len() >= before.len() && all[..before.len()] == *before,
        "lifecycle_events is append-only"
    );
    all[before.len()..].to_vec()
}

/// A report (or any object) as JSON, via kubectl.
pub fn get(sb: &Sandbox, kind: &str, ns: &str, name: &str) -> Value {
    let out = sb.kubectl_ok(&["get", kind, "-n", ns, name, "-o", "json"]);
    serde_json::from_str(&out).unwrap()
}

fn kubectl_stdin(sb: &Sandbox, args: &[&str], input: &Value) -> String {
    use std::io::Write;
    let mut cmd = sb.kubectl_command(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl replace -f -`: an in-place update, as Trivy Operator does on a rescan.
pub fn replace(sb: &Sandbox, obj: &Value) {
    kubectl_stdin(sb, &["replace", "-f", "-"], obj);
}

/// `kubectl create -f -`; returns the created object.
pub fn create(sb: &Sandbox, obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
            m.remove(k);
        }
    }
    let out = kubectl_stdin(sb, &["create", "-f", "-", "-o", "json"], &obj);
    serde_json::from_str(&out).unwrap()
}

/// A rescan: the report's findings changed by `edit`, with an `updateTimestamp` `later` after
/// the current one (the lifecycle ignores scans that are not newer).
pub fn rescan(report: &mut Value, later: Duration, edit: impl FnOnce(&mut Vec<Value>)) {
    let ts: jiff::Timestamp = report["report"]["updateTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let next = ts + jiff::SignedDuration::try_from(later).unwrap();
    report["report"]["updateTimestamp"] = json!(next.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    let vulns = report["report"]["vulnerabilities"].as_array_mut().unwrap();
    edit(vulns);
}

/// A finding as Trivy writes it.
pub fn vulnerability(id: &str, package: &str, severity: &str) -> Value {
    json!({
        "vulnerabilityID": id, "resource": package, "installedVersion": "1.0.0",
        "fixedVersion": "1.0.1", "severity": severity, "title": format!("{package}: {id}"),
        "primaryLink": format!("https://avd.aquasec.com/nvd/{}", id.to_lowercase()),
        "links": [], "target": ""
    })
}

/// Polls `f` until it returns `Some`, failing after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A StatefulSet report with `vulns` findings, in namespace `ns`: `statefulset-app-<i>-main`.
pub fn synthetic_report(ns: &str, i: usize, vulns: usize) -> Value {
    let items: Vec<Value> = (0..vulns)
        .map(|j| {
            let sev = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"][(i + j) % 5];
            vulnerability(
                &format!("CVE-2024-{:05}", j),
                &format!("pkg-{}", j % 40),
                sev,
            )
        })
        .collect();
    let owner = format!("app-{i}");
    json!({
        "apiVersion": "aquasecurity.github.io/v1alpha1", "kind": "VulnerabilityReport",
        "metadata": {
            "name": format!("statefulset-{owner}-main"), "namespace": ns,
            "labels": {
                "trivy-operator.resource.kind": "StatefulSet", "trivy-operator.resource.name": owner,
                "trivy-operator.resource.namespace": ns, "trivy-operator.container.name": "main",
                "app.kubernetes.io/managed-by": "trivy-operator"
            }
        },
        "report": {
            "updateTimestamp": "2026-11-20T06:00:00Z",
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.58.1"},
            "registry": {"server": "ghcr.io"},
            "artifact": {"repository": format!("acme/service-{i}"), "tag": "1.0.0"},
            "summary": {"criticalCount": 0, "highCount": 0, "mediumCount": 0, "lowCount": 0, "unknownCount": 0},
            "vulnerabilities": items
        }
    })
}

/// Creates `count` synthetic reports over the API (faster than kubectl for hundreds).
pub fn populate(sb: &Sandbox, ns: &str, count: usize, vulns: usize) {
    let path =
        format!("/apis/aquasecurity.github.io/v1alpha1/namespaces/{ns}/vulnerabilityreports");
    for i in 0..count {
        let body = synthetic_report(ns, i, vulns).to_string();
        let r = sb.http("POST", &path, Some(&body), &[]);
        assert_eq!(r.status, 201, "create report {i}: {}", r.body);
    }
}

/// Rescans every synthetic report: one finding fixed, one new (so 2 events per report).
pub fn rescan_all(sb: &Sandbox, ns: &str, count: usize) {
    for i in 0..count {
        let path = format!(
            "/apis/aquasecurity.github.io/v1alpha1/namespaces/{ns}/vulnerabilityreports/statefulset-app-{i}-main"
        );
        let mut r = sb.http("GET", &path, None, &[]).json();
        rescan(&mut r, Duration::from_secs(3600), |v| {
            v.remove(0);
            v.push(vulnerability(
                &format!("CVE-2099-{i:05}"),
                "openssl",
                "HIGH",
            ));
        });
        let put = sb.http("PUT", &path, Some(&r.to_string()), &[]);
        assert_eq!(put.status, 200, "rescan report {i}: {}", put.body);
    }
}
