//! The lifecycle end to end: the real binary (`--once` per step) against the sandbox, reports
//! edited with real kubectl as Trivy Operator would, each step asserting the exact event rows
//! in the store. Runs on PostgreSQL and on SQLite.

use std::time::Duration;

use serde_json::json;

use crate::support::agent::run;
use crate::support::lifecycle::{
    Db, EventRow, create, get, new_events, replace, rescan, vulnerability,
};
use crate::support::sandbox::Sandbox;

const CLUSTER: &str = "e2e";
const NGINX: &str = "replicaset-web-7c9d8f6b5d-nginx";
const SHIPPER: &str = "replicaset-web-7c9d8f6b5d-log-shipper";
const VR: &str = "vulnerabilityreports";

fn once(sb: &Sandbox, db: &Db) -> serde_json::Value {
    let kubeconfig = sb.kubeconfig.display().to_string();
    let url = db.url();
    let (status, _, err) = run(
        &[
            ("KIJO_DATABASE_URL", url.as_str()),
            ("KIJO_CLUSTER_NAME", CLUSTER),
            ("KIJO_KUBECONFIG", kubeconfig.as_str()),
        ],
        &["--once"],
    );
    assert!(status.success(), "--once failed:\n{err}");
    let line = err
        .lines()
        .find(|l| l.contains("poll cycle finished"))
        .unwrap_or_else(|| panic!("no summary line:\n{err}"));
    serde_json::from_str(line).unwrap()
}

fn shorts(events: &[EventRow]) -> Vec<String> {
    let mut v: Vec<String> = events.iter().map(EventRow::short).collect();
    v.sort();
    v
}

/// Runs one cycle and returns the events it recorded.
fn step(sb: &Sandbox, db: &Db, seen: &mut Vec<EventRow>) -> Vec<String> {
    once(sb, db);
    let added = new_events(db, CLUSTER, seen);
    seen.extend(added.iter().cloned());
    shorts(&added)
}

fn scenario(db: Db) {
    let which = db.name();
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let mut seen = Vec::new();
    let hour = Duration::from_secs(3600);

    // Baseline: everything recorded, nothing "new" for people.
    let summary = once(&sb, &db);
    assert_eq!(summary["baseline"], true, "{which}: {summary}");
    assert!(
        db.open_of(CLUSTER, "web") > 0,
        "{which}: baseline recorded web"
    );
    assert_eq!(
        step(&sb, &db, &mut seen),
        Vec::<String>::new(),
        "{which}: baseline"
    );

    // A CVE added to one report: exactly one new.
    let mut r = get(&sb, VR, "shop", NGINX);
    rescan(&mut r, hour, |v| {
        v.push(vulnerability("CVE-2099-0001", "zlib1g", "CRITICAL"))
    });
    replace(&sb, &r);
    assert_eq!(
        step(&sb, &db, &mut seen),
        ["new Deployment/web/nginx CVE-2099-0001"],
        "{which}: added"
    );

    // Removed by a newer scan: exactly one fixed.
    let mut r = get(&sb, VR, "shop", NGINX);
    rescan(&mut r, hour, |v| {
        v.retain(|f| f["vulnerabilityID"] != "CVE-2099-0001")
    });
    replace(&sb, &r);
    assert_eq!(
        step(&sb, &db, &mut seen),
        ["fixed Deployment/web/nginx CVE-2099-0001"],
        "{which}: removed"
    );

    // Back again: reintroduced, not new.
    let mut r = get(&sb, VR, "shop", NGINX);
    rescan(&mut r, hour, |v| {
        v.push(vulnerability("CVE-2099-0001", "zlib1g", "CRITICAL"))
    });
    replace(&sb, &r);
    assert_eq!(
        step(&sb, &db, &mut seen),
        ["reintroduced Deployment/web/nginx CVE-2099-0001"],
        "{which}: reintroduced"
    );

    // Rollout: a new ReplicaSet (revision 4) whose report has one CVE fewer. The old
    // ReplicaSet's report lingers, as it does when the old ReplicaSet still had pods.
    let deployment_uid = "6f1d2c3b-0a4e-4b8f-9c1d-2e3f4a5b6c01";
    let rs = create(
        &sb,
        &json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": "web-5b8d7f9c6a", "namespace": "shop",
                "labels": {"app": "web", "pod-template-hash": "5b8d7f9c6a"},
                "annotations": {"deployment.kubernetes.io/revision": "4"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                     "uid": deployment_uid, "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": {"replicas": 1,
                     "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5b8d7f9c6a"}},
                     "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "5b8d7f9c6a"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27.0"}]}}}
        }),
    );
    let rs_uid = rs["metadata"]["uid"].as_str().unwrap().to_owned();
    let old = get(&sb, VR, "shop", NGINX);
    let dropped = old["report"]["vulnerabilities"][0]["vulnerabilityID"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut rolled = old.clone();
    rolled["metadata"]["name"] = json!("replicaset-web-5b8d7f9c6a-nginx");
    rolled["metadata"]["labels"]["trivy-operator.resource.name"] = json!("web-5b8d7f9c6a");
    rolled["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "web-5b8d7f9c6a", "uid": rs_uid, "controller": true, "blockOwnerDeletion": false}]);
    rescan(&mut rolled, hour, |v| {
        v.remove(0);
    });
    let rolled = create(&sb, &rolled);
    assert_eq!(
        step(&sb, &db, &mut seen),
        [format!("fixed Deployment/web/nginx {dropped}")],
        "{which}: rollout"
    );

    // Trivy's TTL: every report of the Deployment deleted while its ReplicaSets exist.
    let shipper = get(&sb, VR, "shop", SHIPPER);
    for name in ["replicaset-web-5b8d7f9c6a-nginx", NGINX, SHIPPER] {
        sb.kubectl_ok(&["delete", VR, "-n", "shop", name]);
    }
    let open_before = db.open_of(CLUSTER, "web");
    assert_eq!(
        step(&sb, &db, &mut seen),
        Vec::<String>::new(),
        "{which}: absence is not a fix"
    );
    assert_eq!(db.open_of(CLUSTER, "web"), open_before, "{which}");

    // Re-created by the rescan: same findings, new uid, newer scan time. Nothing happens.
    for report in [&rolled, &shipper] {
        let mut again = report.clone();
        rescan(&mut again, hour, |_| {});
        create(&sb, &again);
    }
    assert_eq!(
        step(&sb, &db, &mut seen),
        Vec::<String>::new(),
        "{which}: re-created unchanged"
    );
    assert_eq!(db.open_of(CLUSTER, "web"), open_before, "{which}");

    // The Deployment deleted: its ReplicaSets and reports go with it (garbage collection);
    // every open finding closes as workload_removed, none as fixed.
    sb.kubectl_ok(&["delete", "deployment", "-n", "shop", "web"]);
    let removed = step(&sb, &db, &mut seen);
    assert_eq!(removed.len(), open_before, "{which}: {removed:?}");
    assert!(
        removed
            .iter()
            .all(|e| e.starts_with("workload_removed Deployment/web/")),
        "{which}: {removed:?}"
    );
    assert!(
        removed
            .iter()
            .any(|e| e.starts_with("workload_removed Deployment/web/log-shipper ")),
        "{which}: both containers close: {removed:?}"
    );
    assert_eq!(db.open_of(CLUSTER, "web"), 0, "{which}");
    // Other workloads were never touched.
    assert!(seen.iter().all(|e| e.workload == "web"), "{which}");

    // And a cycle with nothing changed records nothing.
    assert_eq!(step(&sb, &db, &mut seen), Vec::<String>::new(), "{which}");
}

#[test]
fn scenario_on_postgres() {
    scenario(Db::postgres("e2e"));
}

#[test]
fn scenario_on_sqlite() {
    scenario(Db::sqlite("e2e"));
}

/// A NUL in a package version (image metadata, controlled by whoever built the image) used to
/// make PostgreSQL refuse that report's transaction and abort every cycle at it, so no later
/// workload was ever recorded. The report model now strips it; the cycle records both.
#[test]
fn nul_in_a_report_does_not_stop_later_workloads_on_postgres() {
    let db = Db::postgres("nul");
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let mut seen = Vec::new();
    let hour = Duration::from_secs(3600);
    assert_eq!(once(&sb, &db)["baseline"], true);

    // Listed first (namespace "data"): a finding whose installed version carries NUL and
    // control characters.
    let mut first = get(&sb, VR, "data", "statefulset-postgres-postgres");
    rescan(&mut first, hour, |v| {
        let mut bad = vulnerability("CVE-2099-0100", "libpq5", "CRITICAL");
        bad["installedVersion"] = json!("16.1\u{0}-evil\u{7}");
        v.push(bad);
    });
    replace(&sb, &first);
    // Listed after it (namespace "shop").
    let mut later = get(&sb, VR, "shop", NGINX);
    rescan(&mut later, hour, |v| {
        v.push(vulnerability("CVE-2099-0101", "zlib1g", "CRITICAL"))
    });
    replace(&sb, &later);

    assert_eq!(
        step(&sb, &db, &mut seen),
        [
            "new Deployment/web/nginx CVE-2099-0101",
            "new StatefulSet/postgres/postgres CVE-2099-0100",
        ]
    );
    let mut client = postgres::Client::connect(&db.url(), postgres::NoTls).unwrap();
    let versions: Vec<String> = client
        .query(
            "SELECT installed_version FROM vulnerability_history WHERE cve_id = 'CVE-2099-0100'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, ["16.1-evil"], "stored without NUL or BEL");
}
