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
/// The nginx image rebuilt (same tag, another digest) and its 1.27.0 release.
const DIGEST_REBUILT: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const DIGEST_1_27: &str = "sha256:2727272727272727272727272727272727272727272727272727272727272727";

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

    // Removed by a scan of a rebuilt image (another digest): exactly one fixed.
    let mut r = get(&sb, VR, "shop", NGINX);
    rescan(&mut r, hour, |v| {
        v.retain(|f| f["vulnerabilityID"] != "CVE-2099-0001")
    });
    r["report"]["artifact"]["digest"] = json!(DIGEST_REBUILT);
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

    // No longer reported although the image is the same (the scanner's database changed):
    // withdrawn, not fixed.
    let mut r = get(&sb, VR, "shop", NGINX);
    rescan(&mut r, hour, |v| {
        v.retain(|f| f["vulnerabilityID"] != "CVE-2099-0001")
    });
    replace(&sb, &r);
    assert_eq!(
        step(&sb, &db, &mut seen),
        ["withdrawn Deployment/web/nginx CVE-2099-0001"],
        "{which}: withdrawn"
    );

    // Reported again by a later scan of the same image: reported_again, not reintroduced.
    let mut r = get(&sb, VR, "shop", NGINX);
    rescan(&mut r, hour, |v| {
        v.push(vulnerability("CVE-2099-0001", "zlib1g", "CRITICAL"))
    });
    replace(&sb, &r);
    assert_eq!(
        step(&sb, &db, &mut seen),
        ["reported_again Deployment/web/nginx CVE-2099-0001"],
        "{which}: reported again"
    );

    // Rollout: a new ReplicaSet (revision 4) running a newer image whose libexpat1 upgrade
    // fixes one of its two CVEs. The old ReplicaSet's report lingers, as it does when the old
    // ReplicaSet still had pods; its log-shipper container has no report in the new revision,
    // but the Deployment's template still declares it, so nothing closes there.
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
    rolled["report"]["artifact"]["tag"] = json!("1.27.0");
    rolled["report"]["artifact"]["digest"] = json!(DIGEST_1_27);
    rescan(&mut rolled, hour, |v| {
        let fixed = v.remove(0);
        for f in v.iter_mut() {
            if f["resource"] == fixed["resource"] {
                f["installedVersion"] = json!("2.5.0-1+deb12u1");
            }
        }
    });
    let rolled = create(&sb, &rolled);
    assert_eq!(
        step(&sb, &db, &mut seen),
        [format!("fixed Deployment/web/nginx {dropped}")],
        "{which}: rollout"
    );

    // Rollback: the old ReplicaSet gets the highest revision. Its report is known, unchanged
    // and scanned earlier, yet it speaks for the Deployment again: the fixed CVE is back.
    let mut old_rs = get(&sb, "replicasets", "shop", "web-7c9d8f6b5d");
    old_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("5");
    replace(&sb, &old_rs);
    assert_eq!(
        step(&sb, &db, &mut seen),
        [format!("reintroduced Deployment/web/nginx {dropped}")],
        "{which}: rollback"
    );
    assert_eq!(
        step(&sb, &db, &mut seen),
        Vec::<String>::new(),
        "{which}: the rollback is applied once"
    );
    let current = get(&sb, VR, "shop", NGINX);

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

    // Re-created by the rescan: same findings, new uid, newer scan time. Nothing happens; the
    // report of revision 4 re-created too is older than the rollback and stays stale.
    for report in [&rolled, &current, &shipper] {
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

/// A container leaves its workload: a rollout whose Deployment template drops the log-shipper
/// sidecar (the old ReplicaSet's report of it lingers), and a StatefulSet container whose
/// report disappears while the template no longer declares it. Each closes as
/// `container_removed`, once; the containers that stay are untouched.
fn container_removal(db: Db) {
    let which = db.name();
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let mut seen = Vec::new();
    let hour = Duration::from_secs(3600);

    // The StatefulSet had an exporter sidecar when the baseline was taken.
    let mut exporter = get(&sb, VR, "data", "statefulset-postgres-postgres");
    exporter["metadata"]["name"] = json!("statefulset-postgres-exporter");
    exporter["metadata"]["labels"]["trivy-operator.container.name"] = json!("exporter");
    exporter["report"]["vulnerabilities"] =
        json!([vulnerability("CVE-2099-0200", "exporter-lib", "HIGH")]);
    create(&sb, &exporter);
    assert_eq!(once(&sb, &db)["baseline"], true, "{which}");
    assert_eq!(step(&sb, &db, &mut seen), Vec::<String>::new(), "{which}");

    // Its report is gone (scan TTL) but the template still declares it: nothing closes.
    sb.kubectl_ok(&["delete", VR, "-n", "data", "statefulset-postgres-exporter"]);
    let mut sts = get(&sb, "statefulsets", "data", "postgres");
    let declared = sts["spec"]["template"]["spec"]["containers"].clone();
    sts["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "exporter", "image": "acme/exporter:1"}));
    replace(&sb, &sts);
    assert_eq!(
        step(&sb, &db, &mut seen),
        Vec::<String>::new(),
        "{which}: a declared container without a report is not removed"
    );
    // Removed from the template: closed.
    let mut sts = get(&sb, "statefulsets", "data", "postgres");
    sts["spec"]["template"]["spec"]["containers"] = declared;
    replace(&sb, &sts);
    assert_eq!(
        step(&sb, &db, &mut seen),
        ["container_removed StatefulSet/postgres/exporter CVE-2099-0200"],
        "{which}: exporter removed"
    );

    // A rollout without the log-shipper: the Deployment's template and its new ReplicaSet
    // (revision 4) have nginx only; the new report of nginx lists the same findings.
    let mut deployment = get(&sb, "deployments", "shop", "web");
    deployment["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "nginx", "image": "nginx:1.25.3"}]);
    replace(&sb, &deployment);
    let rs = create(
        &sb,
        &json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": "web-5b8d7f9c6a", "namespace": "shop",
                "labels": {"app": "web", "pod-template-hash": "5b8d7f9c6a"},
                "annotations": {"deployment.kubernetes.io/revision": "4"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                     "uid": deployment["metadata"]["uid"], "controller": true}]
            },
            "spec": {"replicas": 1,
                     "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5b8d7f9c6a"}},
                     "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "5b8d7f9c6a"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25.3"}]}}}
        }),
    );
    let mut rolled = get(&sb, VR, "shop", NGINX);
    rolled["metadata"]["name"] = json!("replicaset-web-5b8d7f9c6a-nginx");
    rolled["metadata"]["labels"]["trivy-operator.resource.name"] = json!("web-5b8d7f9c6a");
    rolled["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "web-5b8d7f9c6a", "uid": rs["metadata"]["uid"], "controller": true}]);
    rescan(&mut rolled, hour, |_| {});
    create(&sb, &rolled);
    let shipper = get(&sb, VR, "shop", SHIPPER);
    let shipper_cves: Vec<String> = shipper["report"]["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "container_removed Deployment/web/log-shipper {}",
                v["vulnerabilityID"].as_str().unwrap()
            )
        })
        .collect();
    assert!(!shipper_cves.is_empty());
    assert_eq!(
        step(&sb, &db, &mut seen),
        shipper_cves,
        "{which}: log-shipper removed"
    );
    assert!(db.open_of(CLUSTER, "web") > 0, "{which}: nginx stays open");
    // Closed once: the next cycles record nothing although the old report still lists it.
    assert_eq!(step(&sb, &db, &mut seen), Vec::<String>::new(), "{which}");
    assert_eq!(step(&sb, &db, &mut seen), Vec::<String>::new(), "{which}");
}

#[test]
fn container_removal_on_postgres() {
    container_removal(Db::postgres("containers"));
}

#[test]
fn container_removal_on_sqlite() {
    container_removal(Db::sqlite("containers"));
}

/// Bad scans change nothing: a report without its vulnerabilities list (missing or null) is
/// malformed, and a scan dated a day ahead of the agent's clock is refused; both are skipped
/// and counted every cycle they are listed. A real scan that follows still applies.
#[test]
fn bad_scans_are_skipped_and_change_nothing() {
    let db = Db::sqlite("bad-scans");
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let mut seen = Vec::new();
    let hour = Duration::from_secs(3600);
    assert_eq!(once(&sb, &db)["baseline"], true);
    let open = db.open_of(CLUSTER, "web");
    let good = get(&sb, VR, "shop", NGINX);

    let mut missing = good.clone();
    rescan(&mut missing, hour, |_| {});
    missing["report"]
        .as_object_mut()
        .unwrap()
        .remove("vulnerabilities");
    let mut null = good.clone();
    rescan(&mut null, hour, |_| {});
    null["report"]["vulnerabilities"] = serde_json::Value::Null;
    let mut future = good.clone();
    rescan(&mut future, hour, |v| v.clear());
    let tomorrow = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    future["report"]["updateTimestamp"] =
        json!(tomorrow.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    for (what, report) in [("missing", &missing), ("null", &null), ("future", &future)] {
        let mut r = get(&sb, VR, "shop", NGINX);
        r["report"] = report["report"].clone();
        replace(&sb, &r);
        for cycle in 0..2 {
            let summary = once(&sb, &db);
            assert_eq!(summary["reports_skipped"], 1, "{what} #{cycle}: {summary}");
            assert_eq!(
                new_events(&db, CLUSTER, &seen),
                Vec::<EventRow>::new(),
                "{what} #{cycle}"
            );
            assert_eq!(db.open_of(CLUSTER, "web"), open, "{what} #{cycle}");
        }
    }

    // The next real scan applies: the previous state was kept, so one CVE of a package that
    // is still listed at the same version is withdrawn, and only that.
    let mut r = get(&sb, VR, "shop", NGINX);
    r["report"] = good["report"].clone();
    rescan(&mut r, 2 * hour, |v| {
        v.retain(|f| f["vulnerabilityID"] != "CVE-2024-45491")
    });
    replace(&sb, &r);
    assert_eq!(
        step(&sb, &db, &mut seen),
        ["withdrawn Deployment/web/nginx CVE-2024-45491"]
    );
}
