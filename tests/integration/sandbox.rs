//! The Kubernetes-API sandbox against real kubectl, a raw HTTPS client and Python's stdlib.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::sandbox::Sandbox;

const VR: &str = "/apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports";

fn fixtures() -> Sandbox {
    Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()])
}

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

const NEW_REPORT: &str = r#"{"apiVersion":"aquasecurity.github.io/v1alpha1","kind":"VulnerabilityReport",
 "metadata":{"name":"replicaset-api-6b8f7c9d4-app","namespace":"shop",
  "labels":{"trivy-operator.resource.kind":"ReplicaSet","trivy-operator.resource.name":"api-6b8f7c9d4",
   "trivy-operator.resource.namespace":"shop","trivy-operator.container.name":"app"}},
 "report":{"updateTimestamp":"2026-11-21T10:00:00Z","scanner":{"name":"Trivy","vendor":"Aqua Security","version":"0.58.1"},
  "artifact":{"repository":"example/api","tag":"2.0.0"},
  "summary":{"criticalCount":1,"highCount":0,"mediumCount":0,"lowCount":0,"unknownCount":0},
  "vulnerabilities":[{"vulnerabilityID":"CVE-2024-6387","resource":"openssh-client","installedVersion":"1:9.2p1-2+deb12u2",
   "fixedVersion":"1:9.2p1-2+deb12u3","severity":"CRITICAL","title":"openssh: regreSSHion: RCE in OpenSSH's server, on glibc-based Linux systems",
   "primaryLink":"https://avd.aquasec.com/nvd/cve-2024-6387","links":[]}]}}"#;

#[test]
fn kubectl_lists_the_loaded_fixtures() {
    let sb = fixtures();
    let out = sb.kubectl_ok(&["get", "vulnerabilityreports", "-A"]);
    let header = out.lines().next().unwrap_or("");
    for col in ["NAMESPACE", "NAME", "REPOSITORY", "TAG", "SCANNER", "AGE"] {
        assert!(header.contains(col), "missing column {col} in {out}");
    }
    for name in [
        "replicaset-web-7c9d8f6b5d-nginx",
        "replicaset-web-7c9d8f6b5d-log-shipper",
        "replicaset-6c9b7d5f8",
        "statefulset-postgres-postgres",
    ] {
        assert!(out.contains(name), "{name} missing from:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("data ") && l.contains("statefulset-postgres-postgres")),
        "{out}"
    );

    let json: Value =
        serde_json::from_str(&sb.kubectl_ok(&["get", "vulns", "-n", "shop", "-o", "json"]))
            .expect("kubectl -o json");
    assert_eq!(
        names(&json),
        [
            "replicaset-6c9b7d5f8",
            "replicaset-web-7c9d8f6b5d-log-shipper",
            "replicaset-web-7c9d8f6b5d-nginx"
        ]
    );
    let nginx = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "replicaset-web-7c9d8f6b5d-nginx")
        .unwrap();
    assert_eq!(
        nginx["report"]["vulnerabilities"].as_array().map(Vec::len),
        Some(5)
    );
    assert!(
        nginx["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(
        nginx["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| rv.parse::<u64>().is_ok())
    );

    let wide = sb.kubectl_ok(&["get", "vulns", "-n", "data", "-o", "wide"]);
    assert!(
        wide.contains("CRITICAL") && wide.contains("UNKNOWN"),
        "{wide}"
    );
    let cluster = sb.kubectl_ok(&["get", "clustervulnerabilityreports"]);
    assert!(
        cluster.contains("clustersbomreport-k8s-cluster"),
        "{cluster}"
    );
}

#[test]
fn kubectl_apply_patch_and_delete() {
    let sb = fixtures();
    let file = sb.dir.path().join("report.json");
    std::fs::write(&file, NEW_REPORT).unwrap();
    let f = file.display().to_string();
    assert!(sb.kubectl_ok(&["apply", "-f", &f]).contains("created"));
    assert!(sb.kubectl_ok(&["apply", "-f", &f]).contains("unchanged"));
    let got: Value = serde_json::from_str(&sb.kubectl_ok(&[
        "get",
        "vuln",
        "-n",
        "shop",
        "replicaset-api-6b8f7c9d4-app",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(got["report"]["summary"]["criticalCount"], 1);
    assert_eq!(got["metadata"]["generation"], 1);

    std::fs::write(
        &file,
        NEW_REPORT.replace(r#""criticalCount":1"#, r#""criticalCount":4"#),
    )
    .unwrap();
    assert!(sb.kubectl_ok(&["apply", "-f", &f]).contains("configured"));
    sb.kubectl_ok(&[
        "patch",
        "vuln",
        "-n",
        "shop",
        "replicaset-api-6b8f7c9d4-app",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"team":"payments"}}}"#,
    ]);
    let got: Value = serde_json::from_str(&sb.kubectl_ok(&[
        "get",
        "vuln",
        "-n",
        "shop",
        "replicaset-api-6b8f7c9d4-app",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(got["report"]["summary"]["criticalCount"], 4);
    assert_eq!(got["metadata"]["labels"]["team"], "payments");
    assert_eq!(
        got["metadata"]["generation"], 2,
        "a label patch does not bump generation, the report change does"
    );

    let by_label = sb.kubectl_ok(&["get", "vulns", "-A", "-l", "team=payments", "-o", "name"]);
    assert_eq!(
        by_label.trim(),
        "vulnerabilityreport.aquasecurity.github.io/replicaset-api-6b8f7c9d4-app"
    );

    sb.kubectl_ok(&[
        "delete",
        "vuln",
        "-n",
        "shop",
        "replicaset-api-6b8f7c9d4-app",
    ]);
    let gone = sb.kubectl(&["get", "vuln", "-n", "shop", "replicaset-api-6b8f7c9d4-app"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

#[test]
fn deleting_a_deployment_collects_its_replicaset_pods_and_reports() {
    let sb = fixtures();
    sb.kubectl_ok(&["delete", "deployment", "-n", "shop", "web"]);
    let rs = sb.kubectl_ok(&["get", "rs", "-n", "shop", "-o", "name"]);
    assert!(!rs.contains("web-7c9d8f6b5d"), "{rs}");
    assert!(
        rs.contains("inventory-synchronisation"),
        "other ReplicaSets stay: {rs}"
    );
    assert!(
        !sb.kubectl_ok(&["get", "pods", "-n", "shop", "-o", "name"])
            .contains("web-")
    );
    let vulns = sb.kubectl_ok(&["get", "vulns", "-A", "-o", "name"]);
    assert!(!vulns.contains("replicaset-web-"), "{vulns}");
    assert!(
        vulns.contains("statefulset-postgres-postgres") && vulns.contains("replicaset-6c9b7d5f8"),
        "{vulns}"
    );
}

#[test]
fn wrong_token_is_refused_with_a_401_status() {
    let mut sb = fixtures();
    let bad = sb.dir.path().join("bad-kubeconfig");
    let kc = std::fs::read_to_string(&sb.kubeconfig)
        .unwrap()
        .replace(&format!("token: {}", sb.token), "token: not-the-token");
    std::fs::write(&bad, kc).unwrap();
    let out = sb
        .kubectl_command(&[
            "--kubeconfig",
            &bad.display().to_string(),
            "get",
            "vulns",
            "-A",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("provide credentials") || err.contains("Unauthorized"),
        "{err}"
    );

    let r = sb
        .try_http_with_token("GET", VR, None, &[], Some("nope"))
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "Unauthorized");
    let r = sb.try_http_with_token("GET", VR, None, &[], None).unwrap();
    assert_eq!(r.status, 401);

    // Token rotation: the old token stops working, the new one works.
    let old = sb.token.clone();
    sb.set_tokens(&["rotated-token"]);
    assert_eq!(
        sb.try_http_with_token("GET", VR, None, &[], Some(&old))
            .unwrap()
            .status,
        401
    );
    assert_eq!(sb.http("GET", VR, None, &[]).status, 200);
}

#[test]
fn pagination_follows_continue_tokens_and_expired_tokens_answer_410() {
    let sb = fixtures();
    let mut seen = Vec::new();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let path = if cont.is_empty() {
            format!("{VR}?limit=1")
        } else {
            format!("{VR}?limit=1&continue={}", urlencode(&cont))
        };
        let page = sb.http("GET", &path, None, &[]).json();
        assert_eq!(page["kind"], "VulnerabilityReportList");
        seen.extend(names(&page));
        pages += 1;
        cont = page["metadata"]["continue"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if cont.is_empty() {
            assert!(page["metadata"].get("remainingItemCount").is_none());
            break;
        }
        assert!(page["metadata"]["remainingItemCount"].as_u64().is_some());
    }
    assert_eq!(pages, 4);
    seen.sort();
    assert_eq!(seen.len(), 4);
    seen.dedup();
    assert_eq!(seen.len(), 4, "no duplicates across pages");

    let first = sb.http("GET", &format!("{VR}?limit=2"), None, &[]).json();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    sb.compact();
    let r = sb.http(
        "GET",
        &format!("{VR}?limit=2&continue={}", urlencode(&token)),
        None,
        &[],
    );
    assert_eq!(r.status, 410);
    assert_eq!(r.json()["reason"], "Expired");
    assert_eq!(r.json()["code"], 410);

    // The 410-continue fault hits only a list that carries a continue token.
    sb.fault(r#"{"kind":"410-continue","count":1}"#);
    let p1 = sb.http("GET", &format!("{VR}?limit=2"), None, &[]);
    assert_eq!(p1.status, 200);
    let t = p1.json()["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    let p2 = sb.http(
        "GET",
        &format!("{VR}?limit=2&continue={}", urlencode(&t)),
        None,
        &[],
    );
    assert_eq!(p2.status, 410);
    assert_eq!(p2.json()["reason"], "Expired");
}

#[test]
fn label_selectors_and_namespaces_filter_lists() {
    let sb = fixtures();
    let get = |q: &str| {
        names(
            &sb.http(
                "GET",
                &format!("{VR}?labelSelector={}", urlencode(q)),
                None,
                &[],
            )
            .json(),
        )
    };
    assert_eq!(
        get("trivy-operator.container.name=nginx"),
        ["replicaset-web-7c9d8f6b5d-nginx"]
    );
    assert_eq!(
        get("trivy-operator.container.name in (nginx,postgres)").len(),
        2
    );
    assert_eq!(
        get("trivy-operator.resource.name-hash"),
        ["replicaset-6c9b7d5f8"]
    );
    assert_eq!(get("!trivy-operator.resource.name").len(), 1);
    assert_eq!(
        get("trivy-operator.resource.kind!=ReplicaSet"),
        ["statefulset-postgres-postgres"]
    );
    let ns = sb
        .http(
            "GET",
            "/apis/aquasecurity.github.io/v1alpha1/namespaces/data/vulnerabilityreports",
            None,
            &[],
        )
        .json();
    assert_eq!(names(&ns), ["statefulset-postgres-postgres"]);
    let bad = sb.http(
        "GET",
        &format!("{VR}?labelSelector={}", urlencode("a in b")),
        None,
        &[],
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn metadata_only_lists_and_gets() {
    let sb = fixtures();
    let accept = [(
        "Accept",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )];
    let r = sb.http("GET", VR, None, &accept);
    let list = r.json();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    for i in items {
        assert_eq!(i["kind"], "PartialObjectMetadata");
        assert!(i.get("report").is_none());
        assert!(i["metadata"]["uid"].is_string() && i["metadata"]["resourceVersion"].is_string());
    }
    let full = sb.http("GET", VR, None, &[]);
    assert!(
        r.body.len() * 2 < full.body.len(),
        "metadata {} vs full {}",
        r.body.len(),
        full.body.len()
    );
    let one = sb.http(
        "GET",
        "/apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports/replicaset-6c9b7d5f8",
        None,
        &[("Accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")],
    );
    assert_eq!(one.json()["kind"], "PartialObjectMetadata");
    assert_eq!(
        one.json()["metadata"]["annotations"]["trivy-operator.resource.name"],
        "inventory-synchronisation-service-with-an-unusually-long-name-5f7b8c9d4"
    );
}

#[test]
fn watch_delivers_an_event_for_a_create() {
    let sb = fixtures();
    let list = sb.http("GET", VR, None, &[]).json();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = sb.agent();
    let url = format!(
        "{}{VR}?watch=1&resourceVersion={rv}&timeoutSeconds=30",
        sb.url
    );
    let token = sb.token.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        let resp = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("watch");
        let reader = BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    // Create once the watch is connected: the sandbox counts the watch request.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sb.count("watch", "vulnerabilityreports") == 0 {
        assert!(Instant::now() < deadline, "watch never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    let created = sb.http(
        "POST",
        "/apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports",
        Some(NEW_REPORT),
        &[],
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let ev = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a watch event");
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(
        ev["object"]["metadata"]["name"],
        "replicaset-api-6b8f7c9d4-app"
    );
    assert_eq!(
        ev["object"]["metadata"]["resourceVersion"],
        created.json()["metadata"]["resourceVersion"]
    );

    sb.kubectl_ok(&[
        "delete",
        "vuln",
        "-n",
        "shop",
        "replicaset-api-6b8f7c9d4-app",
    ]);
    let ev = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a delete event");
    assert_eq!(ev["type"], "DELETED");
}

#[test]
fn injected_faults_answer_as_specified() {
    let sb = fixtures();
    sb.fault(r#"{"kind":"500","count":2,"path_contains":"vulnerabilityreports"}"#);
    assert_eq!(
        sb.http("GET", "/api/v1/namespaces", None, &[]).status,
        200,
        "path filter"
    );
    let r = sb.http("GET", VR, None, &[]);
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["kind"], "Status");
    assert_eq!(sb.http("GET", VR, None, &[]).status, 500);
    assert_eq!(
        sb.http("GET", VR, None, &[]).status,
        200,
        "only the next N requests fail"
    );

    sb.fault(r#"{"kind":"429","count":1,"retry_after_seconds":3}"#);
    let r = sb.http("GET", VR, None, &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain")
    );

    sb.fault(r#"{"kind":"503","count":1,"retry_after_seconds":4}"#);
    let r = sb.http("GET", VR, None, &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("4"));
    assert_eq!(r.json()["reason"], "ServiceUnavailable");
    sb.fault(r#"{"kind":"401"}"#);
    assert_eq!(sb.http("GET", VR, None, &[]).status, 401);

    sb.fault(r#"{"kind":"slow","count":1,"delay_ms":700}"#);
    let t = Instant::now();
    assert_eq!(sb.http("GET", VR, None, &[]).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(700));

    sb.fault(r#"{"kind":"truncate","count":1}"#);
    assert!(
        sb.try_http("GET", VR, None, &[]).is_err(),
        "a truncated body is a client error"
    );
    sb.fault(r#"{"kind":"drop","count":1}"#);
    assert!(
        sb.try_http("GET", VR, None, &[]).is_err(),
        "a dropped connection is a client error"
    );
    assert_eq!(sb.http("GET", VR, None, &[]).status, 200);
}

#[test]
fn command_line_faults_apply_from_the_first_request() {
    let sb = Sandbox::start(&[
        "--load",
        &Sandbox::fixtures_dir().display().to_string(),
        "--fault",
        "429:1:retry=2:path=vulnerabilityreports",
    ]);
    let r = sb.http("GET", VR, None, &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(sb.http("GET", VR, None, &[]).status, 200);
}

#[test]
fn client_certificate_authentication_works_with_kubectl() {
    let certs = crate::support::sandbox::TempDir::new("kijo-sandbox-certs");
    let dir = certs.path().display().to_string();
    let sb = Sandbox::start(&[
        "--load",
        &Sandbox::fixtures_dir().display().to_string(),
        "--client-ca-dir",
        &dir,
    ]);
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: {}\n    certificate-authority: {dir}/ca.crt\nusers:\n- name: u\n  user:\n    client-certificate: {dir}/client.crt\n    client-key: {dir}/client.key\ncontexts:\n- name: c\n  context: {{cluster: s, user: u}}\ncurrent-context: c\n",
        sb.url
    );
    let path = sb.dir.path().join("cert-kubeconfig");
    std::fs::write(&path, kc).unwrap();
    let out = sb
        .kubectl_command(&[
            "--kubeconfig",
            &path.display().to_string(),
            "get",
            "vulns",
            "-A",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
}

#[test]
fn python_stdlib_client_lists_reports() {
    let sb = fixtures();
    let ca = sb.ca_file();
    let script = r#"
import json, ssl, sys, urllib.request
url, token, ca = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
req = urllib.request.Request(url + "/apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports?limit=2",
                             headers={"Authorization": "Bearer " + token, "Accept": "application/json"})
names = []
while True:
    page = json.load(urllib.request.urlopen(req, context=ctx))
    names += [i["metadata"]["name"] for i in page["items"]]
    cont = page["metadata"].get("continue")
    if not cont:
        break
    req = urllib.request.Request(url + "/apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports?limit=2&continue=" + urllib.parse.quote(cont),
                                 headers={"Authorization": "Bearer " + token})
print("\n".join(sorted(names)))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &sb.url, &sb.token, &ca.display().to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"replicaset-6c9b7d5f8".to_string()));
}

#[test]
fn stale_resource_version_on_replace_is_a_conflict() {
    let sb = fixtures();
    let path = "/apis/coordination.k8s.io/v1/namespaces/kijo/leases";
    let lease = r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"kijo-agent-leader"},"spec":{"holderIdentity":"a","leaseDurationSeconds":15}}"#;
    let created = sb.http("POST", path, Some(lease), &[]);
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        sb.http("POST", path, Some(lease), &[]).json()["reason"],
        "AlreadyExists"
    );
    let mut obj = created.json();
    obj["spec"]["holderIdentity"] = "b".into();
    let put = sb.http(
        "PUT",
        &format!("{path}/kijo-agent-leader"),
        Some(&obj.to_string()),
        &[],
    );
    assert_eq!(put.status, 200, "{}", put.body);
    assert_ne!(
        put.json()["metadata"]["resourceVersion"],
        obj["metadata"]["resourceVersion"]
    );
    let stale = sb.http(
        "PUT",
        &format!("{path}/kijo-agent-leader"),
        Some(&obj.to_string()),
        &[],
    );
    assert_eq!(stale.status, 409);
    assert_eq!(stale.json()["reason"], "Conflict");
    let missing = sb.http("GET", &format!("{path}/nope"), None, &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["details"]["kind"], "leases");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn synthetic_cluster_is_trivy_shaped_and_reproducible() {
    let sb = Sandbox::start(&["--synthetic", "40:12:7"]);
    let deploys = sb
        .http("GET", "/apis/apps/v1/deployments", None, &[])
        .json();
    let sts = sb
        .http("GET", "/apis/apps/v1/statefulsets", None, &[])
        .json();
    assert_eq!(
        deploys["items"].as_array().unwrap().len() + sts["items"].as_array().unwrap().len(),
        40
    );
    let rs = sb
        .http("GET", "/apis/apps/v1/replicasets", None, &[])
        .json();
    let rs = rs["items"].as_array().unwrap();
    let current: Vec<&Value> = rs.iter().filter(|r| r["spec"]["replicas"] == 1).collect();
    assert_eq!(
        current.len(),
        deploys["items"].as_array().unwrap().len(),
        "one current ReplicaSet per Deployment"
    );
    let old: Vec<&Value> = rs.iter().filter(|r| r["spec"]["replicas"] == 0).collect();
    assert_eq!(old.len(), 2, "workloads 3 and 23 were rolled out");
    for o in &old {
        let deploy = &o["metadata"]["ownerReferences"][0]["name"];
        let newer = current
            .iter()
            .find(|c| &c["metadata"]["ownerReferences"][0]["name"] == deploy)
            .expect("the current ReplicaSet");
        assert_eq!(
            newer["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "2"
        );
        assert_eq!(
            o["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "1"
        );
    }
    let reports = sb.http("GET", VR, None, &[]).json();
    let items = reports["items"].as_array().unwrap();
    assert!(
        items.len() >= 40,
        "one report per container: {}",
        items.len()
    );
    let mut oversize = 0;
    for r in items {
        let labels = &r["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/managed-by"], "trivy-operator");
        let kind = labels["trivy-operator.resource.kind"].as_str().unwrap();
        assert!(kind == "ReplicaSet" || kind == "StatefulSet");
        let owner = &r["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], kind);
        let name = r["metadata"]["name"].as_str().unwrap();
        assert!(
            name.len() <= 63 && name.starts_with(&kind.to_lowercase()),
            "{name}"
        );
        match labels["trivy-operator.resource.name"].as_str() {
            Some(n) => assert_eq!(n, owner["name"]),
            None => {
                assert!(labels["trivy-operator.resource.name-hash"].is_string());
                assert_eq!(
                    r["metadata"]["annotations"]["trivy-operator.resource.name"],
                    owner["name"]
                );
            }
        }
        let vulns = r["report"]["vulnerabilities"].as_array().unwrap();
        if labels["sandbox.kijo.dev/oversize"] == "true" {
            oversize += 1;
            assert!(
                serde_json::to_vec(r).unwrap().len() > 5 << 20,
                "an oversize report is several MiB"
            );
        } else if labels["trivy-operator.container.name"] == "app" {
            assert_eq!(vulns.len(), 12);
        }
        let s = &r["report"]["summary"];
        let total: u64 = [
            "criticalCount",
            "highCount",
            "mediumCount",
            "lowCount",
            "unknownCount",
        ]
        .iter()
        .map(|k| s[k].as_u64().unwrap())
        .sum();
        assert_eq!(
            total as usize,
            vulns.len(),
            "summary matches findings in {name}"
        );
    }
    assert_eq!(oversize, 1);
    assert!(
        items
            .iter()
            .any(|r| r["metadata"]["labels"]["trivy-operator.resource.name-hash"].is_string()),
        "a hashed owner name"
    );

    // Same seed, same cluster.
    let again = Sandbox::start(&["--synthetic", "40:12:7"]);
    let a: Vec<Value> = items.iter().map(|r| r["metadata"]["uid"].clone()).collect();
    let b: Vec<Value> = again.http("GET", VR, None, &[]).json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metadata"]["uid"].clone())
        .collect();
    assert_eq!(a, b);

    // A generated Deployment takes its reports with it.
    let d = deploys["items"][0]["metadata"].clone();
    let before = sb.http("GET", VR, None, &[]).json()["items"]
        .as_array()
        .unwrap()
        .len();
    let del = sb.http(
        "DELETE",
        &format!(
            "/apis/apps/v1/namespaces/{}/deployments/{}",
            d["namespace"].as_str().unwrap(),
            d["name"].as_str().unwrap()
        ),
        None,
        &[],
    );
    assert_eq!(del.status, 200);
    let after = sb.http("GET", VR, None, &[]).json()["items"]
        .as_array()
        .unwrap()
        .len();
    assert!(after < before, "{after} < {before}");
}

#[test]
fn sigterm_stops_the_sandbox_cleanly() {
    let sb = fixtures();
    assert_eq!(sb.http("GET", "/version", None, &[]).status, 200);
    let status = sb.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn namespace_limited_tokens_get_403_outside_their_namespaces() {
    let sb = Sandbox::start(&[
        "--load",
        &Sandbox::fixtures_dir().display().to_string(),
        "--namespaced-token",
        "limited=shop",
    ]);
    let as_limited = |path: &str| {
        sb.try_http_with_token("GET", path, None, &[], Some("limited"))
            .unwrap()
    };
    let all = as_limited(VR);
    assert_eq!(all.status, 403);
    assert_eq!(all.json()["reason"], "Forbidden");
    assert!(
        all.json()["message"]
            .as_str()
            .unwrap()
            .contains("at the cluster scope")
    );
    let shop =
        as_limited("/apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports");
    assert_eq!(shop.status, 200);
    assert_eq!(names(&shop.json()).len(), 3);
    assert_eq!(
        as_limited("/apis/aquasecurity.github.io/v1alpha1/namespaces/data/vulnerabilityreports")
            .status,
        403
    );
    assert_eq!(as_limited("/apis").status, 200, "discovery stays open");
    assert_eq!(as_limited("/_sandbox/stats").status, 403);

    // The same through the admin endpoint.
    let mut sb = sb;
    let full = sb.token.clone();
    let body =
        serde_json::json!({"tokens": [full], "namespaced": {"data-only": ["data"]}}).to_string();
    assert_eq!(
        sb.http("POST", "/_sandbox/tokens", Some(&body), &[]).status,
        200
    );
    let r = sb
        .try_http_with_token(
            "GET",
            "/apis/aquasecurity.github.io/v1alpha1/namespaces/data/vulnerabilityreports",
            None,
            &[],
            Some("data-only"),
        )
        .unwrap();
    assert_eq!(names(&r.json()), ["statefulset-postgres-postgres"]);
    assert_eq!(
        sb.try_http_with_token("GET", VR, None, &[], Some("limited"))
            .unwrap()
            .status,
        401,
        "replaced"
    );
    sb.token = full;
}

#[test]
fn orphan_propagation_keeps_dependents() {
    let sb = fixtures();
    let r = sb.http(
        "DELETE",
        "/apis/apps/v1/namespaces/shop/deployments/web",
        Some(r#"{"propagationPolicy":"Orphan"}"#),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        sb.http(
            "GET",
            "/apis/apps/v1/namespaces/shop/replicasets/web-7c9d8f6b5d",
            None,
            &[]
        )
        .status,
        200
    );
    // Background (the default) collects recursively: ReplicaSet -> pod and reports.
    let r = sb.http(
        "DELETE",
        "/apis/apps/v1/namespaces/shop/replicasets/web-7c9d8f6b5d",
        Some(r#"{"propagationPolicy":"Background"}"#),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        sb.http(
            "GET",
            "/api/v1/namespaces/shop/pods/web-7c9d8f6b5d-x2k9p",
            None,
            &[]
        )
        .status,
        404
    );
    let left = names(&sb.http("GET", VR, None, &[]).json());
    assert_eq!(
        left,
        ["replicaset-6c9b7d5f8", "statefulset-postgres-postgres"]
    );
}

#[test]
fn gzip_answers_large_lists_when_asked() {
    let sb = Sandbox::start(&["--synthetic", "12:200:5", "--gzip"]);
    let ca = sb.ca_file();
    let script = r#"
import gzip, json, ssl, sys, urllib.request
url, token, ca = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url + "/apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports",
                             headers={"Authorization": "Bearer " + token, "Accept-Encoding": "gzip"})
resp = urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca))
raw = resp.read()
body = json.loads(gzip.decompress(raw))
print(resp.headers.get("Content-Encoding"), len(raw), len(json.dumps(body)), len(body["items"]))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &sb.url, &sb.token, &ca.display().to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[0], "gzip");
    let (raw, plain): (usize, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    assert!(raw * 3 < plain, "compressed {raw} vs {plain}");
    assert!(f[3].parse::<usize>().unwrap() >= 12);
}

#[test]
fn streaming_list_watch_ends_initial_events_with_a_bookmark() {
    let sb = fixtures();
    let path = "/apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1";
    let r = sb.http("GET", path, None, &[]);
    let events: Vec<Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4, "{}", r.body);
    assert!(events[..3].iter().all(|e| e["type"] == "ADDED"));
    assert_eq!(events[3]["type"], "BOOKMARK");
    assert_eq!(
        events[3]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

/// The official Python client (`pip install kubernetes`), with the written kubeconfig as-is.
/// Runs with `$KIJO_TEST_PYTHON` or `python3`, which must have the package (.ci/run installs it).
#[test]
fn official_python_client_uses_the_kubeconfig() {
    let python = std::env::var("KIJO_TEST_PYTHON").ok();
    let exe = python.clone().unwrap_or_else(|| "python3".into());
    let has = std::process::Command::new(&exe)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has,
        "{exe} lacks the `kubernetes` package: `python3 -m pip install kubernetes` (.ci/run installs it), \
         or set KIJO_TEST_PYTHON to a Python that has it"
    );
    let sb = fixtures();
    let script = r#"
import sys
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
api = client.CustomObjectsApi()
r = api.list_cluster_custom_object("aquasecurity.github.io", "v1alpha1", "vulnerabilityreports", limit=2)
names = [i["metadata"]["name"] for i in r["items"]]
while r["metadata"].get("continue"):
    r = api.list_cluster_custom_object("aquasecurity.github.io", "v1alpha1", "vulnerabilityreports", limit=2, _continue=r["metadata"]["continue"])
    names += [i["metadata"]["name"] for i in r["items"]]
deploys = [d.metadata.name for d in client.AppsV1Api().list_deployment_for_all_namespaces().items]
print(len(names), " ".join(sorted(deploys)))
"#;
    let out = std::process::Command::new(&exe)
        .args(["-c", script, &sb.kubeconfig.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "4 inventory-synchronisation-service-with-an-unusually-long-name web"
    );
}

#[test]
fn bad_requests_answer_status_objects() {
    let sb = fixtures();
    let coll = "/apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports";
    // method, path, body, headers, expected code, expected reason
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        u16,
        &'a str,
    );
    let cases: &[Case] = &[
        ("POST", coll, Some("{not json"), &[], 400, "BadRequest"),
        ("POST", coll, Some("[1,2]"), &[], 400, "BadRequest"),
        (
            "POST",
            coll,
            Some(r#"{"metadata":{}}"#),
            &[],
            422,
            "Invalid",
        ),
        (
            "POST",
            coll,
            Some(r#"{"kind":"Pod","metadata":{"name":"x"}}"#),
            &[],
            400,
            "BadRequest",
        ),
        (
            "POST",
            coll,
            Some(r#"{"metadata":{"name":"x","namespace":"data"}}"#),
            &[],
            400,
            "BadRequest",
        ),
        (
            "POST",
            VR,
            Some(r#"{"metadata":{"name":"x"}}"#),
            &[],
            405,
            "MethodNotAllowed",
        ),
        (
            "PATCH",
            &format!("{coll}/replicaset-6c9b7d5f8"),
            Some("{}"),
            &[("Content-Type", "text/plain")],
            415,
            "UnsupportedMediaType",
        ),
        ("GET", &format!("{coll}/nope"), None, &[], 404, "NotFound"),
        (
            "DELETE",
            &format!("{coll}/nope"),
            None,
            &[],
            404,
            "NotFound",
        ),
        (
            "GET",
            "/apis/nope.example.com/v1/widgets",
            None,
            &[],
            404,
            "NotFound",
        ),
        (
            "GET",
            &format!("{VR}?limit=abc"),
            None,
            &[],
            400,
            "BadRequest",
        ),
        (
            "GET",
            &format!("{VR}?fieldSelector=spec.x%3Dy"),
            None,
            &[],
            400,
            "BadRequest",
        ),
        (
            "GET",
            VR,
            None,
            &[(
                "Accept",
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            )],
            406,
            "NotAcceptable",
        ),
    ];
    for (method, path, body, headers, code, reason) in cases {
        let r = sb.http(method, path, *body, headers);
        assert_eq!(r.status, *code, "{method} {path}: {}", r.body);
        let s = r.json();
        assert_eq!(
            (s["kind"].as_str(), s["reason"].as_str(), s["code"].as_u64()),
            (Some("Status"), Some(*reason), Some(u64::from(*code))),
            "{method} {path}"
        );
    }
}

#[test]
fn plain_http_and_ipv6_loopback_serve_too() {
    let sb = Sandbox::start(&[
        "--plain-http",
        "--load",
        &Sandbox::fixtures_dir().display().to_string(),
    ]);
    assert!(sb.url.starts_with("http://127.0.0.1:"), "{}", sb.url);
    assert_eq!(names(&sb.http("GET", VR, None, &[]).json()).len(), 4);
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = Sandbox::start(&[
            "--listen",
            "[::1]:0",
            "--load",
            &Sandbox::fixtures_dir().display().to_string(),
        ]);
        assert!(v6.url.starts_with("https://[::1]:"), "{}", v6.url);
        assert_eq!(
            names(&v6.http("GET", VR, None, &[]).json()).len(),
            4,
            "the certificate covers ::1"
        );
    }
}

#[test]
fn list_resource_version_rules_follow_the_api_server() {
    let sb = fixtures();
    // resourceVersion=0 is served "from the cache": limit is ignored.
    let any = sb
        .http("GET", &format!("{VR}?limit=1&resourceVersion=0"), None, &[])
        .json();
    assert_eq!(names(&any).len(), 4);
    assert!(any["metadata"].get("continue").is_none());
    let page = sb.http("GET", &format!("{VR}?limit=1"), None, &[]).json();
    let rv = page["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let cont = urlencode(page["metadata"]["continue"].as_str().unwrap());
    let cases = [
        (
            format!("{VR}?limit=1&continue={cont}&resourceVersion={rv}"),
            400,
        ),
        (
            format!("{VR}?limit=1&continue={cont}&resourceVersionMatch=NotOlderThan"),
            400,
        ),
        (format!("{VR}?resourceVersionMatch=Exact"), 400),
        (
            format!("{VR}?resourceVersionMatch=Exact&resourceVersion=0"),
            400,
        ),
        (
            format!("{VR}?resourceVersionMatch=Exact&resourceVersion={rv}"),
            200,
        ),
        (
            format!("{VR}?resourceVersionMatch=NotOlderThan&resourceVersion={rv}&limit=2"),
            200,
        ),
    ];
    for (path, code) in &cases {
        assert_eq!(sb.http("GET", path, None, &[]).status, *code, "{path}");
    }
    sb.compact();
    let old = sb.http(
        "GET",
        &format!("{VR}?resourceVersionMatch=Exact&resourceVersion={rv}"),
        None,
        &[],
    );
    assert_eq!(old.status, 410);
    assert_eq!(old.json()["reason"], "Expired");
}

#[test]
fn kubectl_server_side_apply_discovery_and_get_all() {
    let sb = fixtures();
    let file = sb.dir.path().join("report.json");
    std::fs::write(&file, NEW_REPORT).unwrap();
    let f = file.display().to_string();
    // Client-side apply first, then server-side apply over it (kubectl then sends a second
    // apply-patch with only the last-applied annotation, which must not wipe the report).
    sb.kubectl_ok(&["apply", "-f", &f]);
    let out = sb.kubectl_ok(&["apply", "--server-side", "-f", &f]);
    assert!(out.contains("serverside-applied"), "{out}");
    let got: Value = serde_json::from_str(&sb.kubectl_ok(&[
        "get",
        "vuln",
        "-n",
        "shop",
        "replicaset-api-6b8f7c9d4-app",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        got["report"]["vulnerabilities"].as_array().map(Vec::len),
        Some(1)
    );
    sb.kubectl_ok(&[
        "label",
        "vuln",
        "-n",
        "shop",
        "replicaset-api-6b8f7c9d4-app",
        "reviewed=yes",
    ]);
    assert!(
        sb.kubectl_ok(&[
            "get",
            "vulns",
            "-n",
            "shop",
            "-l",
            "reviewed=yes",
            "-o",
            "name"
        ])
        .contains("replicaset-api-6b8f7c9d4-app")
    );

    let resources = sb.kubectl_ok(&["api-resources"]);
    for line in [
        "vulnerabilityreports",
        "clustervulnerabilityreports",
        "leases",
        "deployments",
        "rollouts",
        "workflows",
        "clonesets",
    ] {
        assert!(resources.contains(line), "{line} missing:\n{resources}");
    }
    let all = sb.kubectl_ok(&["get", "all", "-n", "shop", "-o", "name"]);
    for name in [
        "pod/web-7c9d8f6b5d-x2k9p",
        "deployment.apps/web",
        "replicaset.apps/web-7c9d8f6b5d",
    ] {
        assert!(all.contains(name), "{name} missing:\n{all}");
    }
}
