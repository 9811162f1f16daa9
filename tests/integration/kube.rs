//! The agent's Kubernetes client against the sandbox API server: TLS, every auth method,
//! pagination and its failure modes, report parsing at size, workload identity, namespaces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kijo_agent::kube::config::ClusterConfig;
use kijo_agent::kube::{
    Client, KubeError, KubeMetrics, KubeOptions, ListEvent, OwnerResolver, RetryPolicy,
    dry_run_checks,
};
use kijo_agent::metrics::{Registry, render};
use kijo_agent::trivy::{Malformed, Report, ReportKind, Revision, newest_by_key};

use crate::support::sandbox::Sandbox;

const VR: ReportKind = ReportKind::VulnerabilityReport;

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        retry_after_cap: Duration::from_secs(5),
        max_list_restarts: 3,
    }
}

fn opts(kubeconfig: &Path) -> KubeOptions {
    KubeOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        retry: fast_retry(),
        ..KubeOptions::default()
    }
}

fn fixtures() -> String {
    Sandbox::fixtures_dir().display().to_string()
}

/// Writes a kubeconfig for the sandbox with the given `user:` body (indented 4 spaces) and
/// extra cluster fields.
fn write_kubeconfig(sb: &Sandbox, name: &str, cluster_extra: &str, user: &str) -> PathBuf {
    let ca = sb.ca_file();
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: sb\n  cluster:\n    server: {}\n    certificate-authority: {}\n{cluster_extra}users:\n- name: u\n  user:\n{user}contexts:\n- name: test\n  context: {{cluster: sb, user: u, namespace: shop}}\n",
        sb.url,
        ca.display()
    );
    let p = sb.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Collects a full listing, honouring restarts the way a caller must.
fn collect_reports(
    client: &Client,
    namespaces: &[String],
) -> Result<(Vec<Report>, Vec<Malformed>, u32), KubeError> {
    let mut reports = Vec::new();
    let mut malformed = Vec::new();
    let mut restarts = 0;
    client.list_reports(VR, namespaces, &mut |ev| match ev {
        ListEvent::Restart => {
            restarts += 1;
            reports.clear();
            malformed.clear();
        }
        ListEvent::Item(Ok(r)) => reports.push(r),
        ListEvent::Item(Err(m)) => malformed.push(m),
    })?;
    Ok((reports, malformed, restarts))
}

fn names(reports: &[Report]) -> BTreeSet<String> {
    reports
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect()
}

/// Creates `n` small reports spread over the shop and data namespaces. (The sandbox's
/// `--synthetic` generator is the bigger alternative.)
fn populate(sb: &Sandbox, n: usize) {
    for i in 0..n {
        let ns = if i % 2 == 0 { "shop" } else { "data" };
        let body = format!(
            r#"{{"apiVersion":"aquasecurity.github.io/v1alpha1","kind":"VulnerabilityReport","metadata":{{"name":"replicaset-gen-{i}-app","namespace":"{ns}","labels":{{"trivy-operator.resource.kind":"ReplicaSet","trivy-operator.resource.name":"gen-{i}","trivy-operator.resource.namespace":"{ns}","trivy-operator.container.name":"app"}}}},"report":{{"updateTimestamp":"2026-01-01T00:00:00Z","artifact":{{"repository":"acme/gen","tag":"{i}"}},"vulnerabilities":[{{"vulnerabilityID":"CVE-2026-{i}","resource":"zlib","installedVersion":"1.2.{i}","severity":"LOW"}}]}}}}"#
        );
        create(
            sb,
            &format!("/apis/aquasecurity.github.io/v1alpha1/namespaces/{ns}/vulnerabilityreports"),
            &body,
        );
    }
}

fn kubectl_count(sb: &Sandbox) -> usize {
    let out = sb.kubectl_ok(&["get", "vulnerabilityreports", "-A", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().unwrap().len()
}

#[test]
fn tls_with_the_sandbox_ca_lists_what_kubectl_lists() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    let describe = client.describe();
    assert!(describe.starts_with(&sb.url), "{describe}");
    assert!(
        !describe.contains(&sb.token),
        "describe leaks the token: {describe}"
    );

    let (reports, malformed, _) = collect_reports(&client, &[]).unwrap();
    assert!(malformed.is_empty(), "{malformed:?}");
    assert_eq!(reports.len(), kubectl_count(&sb));
    let web = reports
        .iter()
        .find(|r| r.name == "replicaset-web-7c9d8f6b5d-nginx")
        .expect("fixture report");
    assert_eq!(web.owner.kind, "ReplicaSet");
    assert_eq!(web.owner.name, "web-7c9d8f6b5d");
    assert_eq!(web.container, "nginx");
    assert!(!web.findings.is_empty());
    // The hashed-name report gets its owner from the annotation.
    let hashed = reports
        .iter()
        .find(|r| r.name == "replicaset-6c9b7d5f8")
        .unwrap();
    assert_eq!(
        hashed.owner.name,
        "inventory-synchronisation-service-with-an-unusually-long-name-5f7b8c9d4"
    );

    let mut cluster = Vec::new();
    client
        .list_reports(ReportKind::ClusterVulnerabilityReport, &[], &mut |ev| {
            if let ListEvent::Item(r) = ev {
                cluster.push(r.unwrap());
            }
        })
        .unwrap();
    assert_eq!(cluster.len(), 1);
    assert_eq!(cluster[0].namespace, "");

    // Metadata-only listing sees the same objects with their uids.
    let mut metas = Vec::new();
    client
        .list_metadata(VR, &[], &mut |ev| {
            if let ListEvent::Item(m) = ev {
                metas.push(m);
            }
        })
        .unwrap();
    assert_eq!(metas.len(), reports.len());
    assert!(
        metas
            .iter()
            .all(|m| !m.uid.is_empty() && !m.resource_version.is_empty())
    );

    // Single GET, and a missing one.
    let got = client
        .get_report(VR, "shop", &web.name)
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.uid, web.uid);
    assert!(client.get_report(VR, "shop", "nope").unwrap().is_none());
}

#[test]
fn a_foreign_ca_is_refused() {
    let sb = Sandbox::start(&[]);
    // No certificate-authority: the compiled-in public roots do not know the sandbox CA.
    let text = format!(
        "current-context: t\nclusters:\n- {{name: c, cluster: {{server: \"{}\"}}}}\nusers:\n- {{name: u, user: {{token: \"{}\"}}}}\ncontexts:\n- {{name: t, context: {{cluster: c, user: u}}}}\n",
        sb.url, sb.token
    );
    let p = sb.dir.path().join("foreign");
    std::fs::write(&p, text).unwrap();
    let client = Client::connect(&opts(&p)).unwrap();
    let err = collect_reports(&client, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, KubeError::Transport { .. }), "{msg}");
    assert!(
        msg.contains("/apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports"),
        "{msg}"
    );
    assert!(!msg.contains(&sb.token), "{msg}");
}

#[test]
fn tls_server_name_is_the_verified_name() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let user = format!("    token: {}\n", sb.token);
    // The server certificate carries DNS name localhost and IP 127.0.0.1.
    let good = write_kubeconfig(&sb, "good", "    tls-server-name: localhost\n", &user);
    let client = Client::connect(&opts(&good)).unwrap();
    assert!(!collect_reports(&client, &[]).unwrap().0.is_empty());
    let bad = write_kubeconfig(
        &sb,
        "bad",
        "    tls-server-name: kubernetes.example\n",
        &user,
    );
    let client = Client::connect(&opts(&bad)).unwrap();
    let err = collect_reports(&client, &[]).unwrap_err();
    assert!(matches!(err, KubeError::Transport { .. }), "{err}");
}

#[test]
fn a_wrong_token_is_a_clear_auth_error() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let secret = "wrong-token-4f9a2b";
    let kc = write_kubeconfig(&sb, "wrong", "", &format!("    token: {secret}\n"));
    let client = Client::connect(&opts(&kc)).unwrap();
    let err = collect_reports(&client, &[]).unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("http 401"), "{msg}");
    assert!(
        msg.contains("/apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports"),
        "{msg}"
    );
    assert!(!msg.contains(secret), "error leaks the token: {msg}");
    assert!(
        !format!("{err:?}").contains(secret),
        "debug leaks the token"
    );

    let checks = dry_run_checks(&client, &[]);
    let auth = checks.iter().find(|c| c.name == "authenticated").unwrap();
    assert!(!auth.ok, "{checks:?}");
    assert!(checks[0].ok, "api reachable: {checks:?}");
}

#[test]
fn a_rotated_token_file_keeps_working() {
    let mut sb = Sandbox::start(&["--load", &fixtures()]);
    let token_path = sb.dir.path().join("token");
    std::fs::write(&token_path, format!("{}\n", sb.token)).unwrap();
    let kc = write_kubeconfig(
        &sb,
        "tokenfile",
        "",
        &format!("    tokenFile: {}\n", token_path.display()),
    );
    let client = Client::connect(&opts(&kc)).unwrap();
    let before = collect_reports(&client, &[]).unwrap().0.len();
    // The kubelet swaps the file; the API server stops accepting the old token.
    sb.set_tokens(&["rotated-token-2"]);
    std::fs::write(&token_path, "rotated-token-2").unwrap();
    let after = collect_reports(&client, &[]).unwrap().0.len();
    assert_eq!(before, after);

    // The same through the in-cluster configuration (service-account directory).
    let sa = sb.dir.path().join("sa");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "rotated-token-2").unwrap();
    std::fs::write(sa.join("ca.crt"), &sb.ca_pem).unwrap();
    std::fs::write(sa.join("namespace"), "kijo\n").unwrap();
    let port = sb.url.rsplit(':').next().unwrap();
    let cfg = ClusterConfig::in_cluster("127.0.0.1", port, &sa).unwrap();
    assert_eq!(cfg.namespace, "kijo");
    let incluster = Client::from_config(cfg, &opts(&kc)).unwrap();
    assert!(incluster.describe().contains("in-cluster"));
    assert_eq!(collect_reports(&incluster, &[]).unwrap().0.len(), before);
    sb.set_tokens(&["rotated-token-3"]);
    std::fs::write(sa.join("token"), "rotated-token-3").unwrap();
    assert_eq!(collect_reports(&incluster, &[]).unwrap().0.len(), before);
}

#[test]
fn client_certificate_kubeconfig() {
    let certs = kijo_tempdir("kijo-client-certs");
    let dir = certs.display().to_string();
    let sb = Sandbox::start(&["--load", &fixtures(), "--client-ca-dir", &dir]);
    let user =
        format!("    client-certificate: {dir}/client.crt\n    client-key: {dir}/client.key\n");
    let kc = write_kubeconfig(&sb, "cert", "", &user);
    let client = Client::connect(&opts(&kc)).unwrap();
    assert!(client.describe().contains("client certificate"));
    assert_eq!(
        collect_reports(&client, &[]).unwrap().0.len(),
        kubectl_count(&sb)
    );

    // A certificate with the wrong key is a start-up error naming the user, not a panic.
    let mismatched =
        format!("    client-certificate: {dir}/ca.crt\n    client-key: {dir}/client.key\n");
    let kc = write_kubeconfig(&sb, "mismatch", "", &mismatched);
    match Client::connect(&opts(&kc)) {
        Err(KubeError::Config(m)) => assert!(m.contains("user \"u\""), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a mismatched certificate and key were accepted"),
    }
    let _ = std::fs::remove_dir_all(&certs);
}

fn kijo_tempdir(prefix: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn exec_plugin_kubeconfig() {
    let mut sb = Sandbox::start(&["--load", &fixtures()]);
    let d = sb.dir.path();
    let current = d.join("plugin-token");
    std::fs::write(&current, &sb.token).unwrap();
    let calls = d.join("plugin-calls");
    let info = d.join("plugin-info");
    let script = d.join("plugin.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho call >> {calls}\nprintf '%s' \"$KUBERNETES_EXEC_INFO\" > {info}\n[ \"$1\" = get-token ] || exit 3\n[ \"$CLUSTER_NAME\" = prod ] || exit 4\nprintf '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"%s\",\"expirationTimestamp\":\"2099-01-01T00:00:00Z\"}}}}' \"$(cat {current})\"\n",
            calls = calls.display(),
            info = info.display(),
            current = current.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      args: [get-token]\n      env: [{{name: CLUSTER_NAME, value: prod}}]\n      interactiveMode: Never\n      provideClusterInfo: true\n",
        script.display()
    );
    let kc = write_kubeconfig(&sb, "exec", "", &user);
    let client = Client::connect(&opts(&kc)).unwrap();
    let n = collect_reports(&client, &[]).unwrap().0.len();
    assert_eq!(n, kubectl_count(&sb));
    collect_reports(&client, &[]).unwrap();
    let count = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    assert_eq!(
        count(&calls),
        1,
        "the credential is cached until it expires"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
    assert_eq!(info["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(info["spec"]["interactive"], false);
    assert_eq!(info["spec"]["cluster"]["server"], sb.url.as_str());

    // The server revokes the token: a 401 re-runs the plugin once and the request succeeds.
    sb.set_tokens(&["exec-token-2"]);
    std::fs::write(&current, "exec-token-2").unwrap();
    assert_eq!(collect_reports(&client, &[]).unwrap().0.len(), n);
    assert_eq!(count(&calls), 2);
}

#[test]
fn pagination_across_many_pages() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    populate(&sb, 40);
    let o = KubeOptions {
        page_size: 7,
        ..opts(&sb.kubeconfig)
    };
    let client = Client::connect(&o).unwrap();
    let mut uids = Vec::new();
    let stats = client
        .list_reports(VR, &[], &mut |ev| {
            if let ListEvent::Item(r) = ev {
                uids.push(r.map(|r| r.uid).unwrap_or_else(|m| panic!("{m}")));
            }
        })
        .unwrap();
    let total = kubectl_count(&sb);
    assert!(total >= 40, "synthetic cluster has {total} reports");
    assert_eq!(uids.len(), total);
    assert_eq!(
        uids.iter().collect::<BTreeSet<_>>().len(),
        total,
        "duplicates"
    );
    assert_eq!(stats.pages as usize, total.div_ceil(7));
    assert_eq!(stats.restarts, 0);
}

#[test]
fn an_expired_continue_token_restarts_the_listing() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    populate(&sb, 20);
    let o = KubeOptions {
        page_size: 5,
        ..opts(&sb.kubeconfig)
    };
    let client = Client::connect(&o).unwrap();
    let all = names(&collect_reports(&client, &[]).unwrap().0);
    sb.fault(r#"{"kind":"410-continue","count":1}"#);
    let (reports, _, restarts) = collect_reports(&client, &[]).unwrap();
    assert_eq!(restarts, 1, "the caller is told to drop partial results");
    assert_eq!(names(&reports), all);
    assert_eq!(reports.len(), all.len(), "no duplicates after the restart");

    // Per-namespace listing: a restart in the second namespace voids the first one too,
    // so it is listed again.
    let nss = ["shop".to_string(), "data".to_string()];
    sb.fault(r#"{"kind":"410-continue","count":1,"path_contains":"namespaces/data"}"#);
    let (reports, _, restarts) = collect_reports(&client, &nss).unwrap();
    assert_eq!(restarts, 1);
    assert_eq!(names(&reports), all);
    assert_eq!(reports.len(), all.len());
}

#[test]
fn too_many_requests_honours_retry_after() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let mut registry = Registry::default();
    let metrics = KubeMetrics::new(&mut registry);
    let o = KubeOptions {
        metrics: Some(metrics),
        ..opts(&sb.kubeconfig)
    };
    let client = Client::connect(&o).unwrap();
    sb.fault(r#"{"kind":"429","count":1,"retry_after_seconds":1}"#);
    let start = Instant::now();
    let n = collect_reports(&client, &[]).unwrap().0.len();
    let waited = start.elapsed();
    assert_eq!(n, kubectl_count(&sb));
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    let text = render(&registry);
    assert!(text.contains("kijo_kube_api_retries_total 1"), "{text}");
    assert!(text.contains("status=\"429\"} 1"), "{text}");
}

#[test]
fn persistent_server_errors_fail_with_path_and_status() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    sb.fault(r#"{"kind":"500","count":50,"path_contains":"vulnerabilityreports"}"#);
    let err = collect_reports(&client, &[]).unwrap_err();
    assert_eq!(err.status(), Some(500), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("GET /apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports"),
        "{msg}"
    );
    assert!(msg.contains("http 500"), "{msg}");
    assert!(!msg.contains(&sb.token));
    // Exactly max_attempts requests were made.
    assert_eq!(
        sb.count("list", "vulnerabilityreports"),
        4,
        "{}",
        sb.stats()
    );
}

#[test]
fn truncated_and_dropped_responses_are_retried() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    populate(&sb, 10);
    let mut registry = Registry::default();
    let metrics = KubeMetrics::new(&mut registry);
    let o = KubeOptions {
        page_size: 4,
        metrics: Some(metrics.clone()),
        ..opts(&sb.kubeconfig)
    };
    let client = Client::connect(&o).unwrap();
    let all = names(&collect_reports(&client, &[]).unwrap().0);
    assert!(all.len() > 8);
    for (i, fault) in [
        r#"{"kind":"truncate","count":1,"path_contains":"vulnerabilityreports"}"#,
        r#"{"kind":"drop","count":1,"path_contains":"vulnerabilityreports"}"#,
    ]
    .into_iter()
    .enumerate()
    {
        sb.fault(fault);
        let (reports, _, _) = collect_reports(&client, &[]).unwrap();
        assert_eq!(names(&reports), all, "{fault}");
        assert_eq!(reports.len(), all.len(), "{fault}");
        assert_eq!(
            metrics.retries.get(),
            i as u64 + 1,
            "{fault} was retried once"
        );
    }
}

fn big_report(name: &str, vulns: usize) -> String {
    let filler = "x".repeat(400);
    let items: Vec<String> = (0..vulns)
        .map(|i| {
            format!(
                r#"{{"vulnerabilityID":"CVE-2026-{i:05}","resource":"pkg-{i}","installedVersion":"1.0.{i}","fixedVersion":"1.1.{i}","severity":"HIGH","title":"{filler}","primaryLink":"https://avd.aquasec.com/nvd/cve-2026-{i:05}","links":[],"score":7.5}}"#
            )
        })
        .collect();
    format!(
        r#"{{"apiVersion":"aquasecurity.github.io/v1alpha1","kind":"VulnerabilityReport","metadata":{{"name":"{name}","namespace":"shop","labels":{{"trivy-operator.resource.kind":"ReplicaSet","trivy-operator.resource.name":"big-1","trivy-operator.resource.namespace":"shop","trivy-operator.container.name":"app"}}}},"report":{{"updateTimestamp":"2026-01-01T00:00:00Z","registry":{{"server":"ghcr.io"}},"artifact":{{"repository":"acme/big","tag":"1"}},"summary":{{}},"vulnerabilities":[{}]}}}}"#,
        items.join(",")
    )
}

fn create(sb: &Sandbox, path: &str, body: &str) {
    let r = sb.http("POST", path, Some(body), &[]);
    assert!(
        r.status == 201 || r.status == 200,
        "POST {path}: {} {}",
        r.status,
        r.body
    );
}

#[test]
fn a_five_mib_report_lists_and_gets() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let body = big_report("replicaset-big-1-app", 10_000);
    assert!(body.len() > 5 << 20, "{} bytes", body.len());
    create(
        &sb,
        "/apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports",
        &body,
    );
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    let (reports, malformed, _) = collect_reports(&client, &[]).unwrap();
    assert!(malformed.is_empty());
    let big = reports
        .iter()
        .find(|r| r.name == "replicaset-big-1-app")
        .unwrap();
    assert_eq!(big.findings.len(), 10_000);
    let got = client
        .get_report(VR, "shop", "replicaset-big-1-app")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.findings.len(), 10_000);
}

#[test]
fn a_malformed_report_is_skipped_and_counted() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let bad = r#"{"apiVersion":"aquasecurity.github.io/v1alpha1","kind":"VulnerabilityReport","metadata":{"name":"replicaset-broken-app","namespace":"shop","labels":{"trivy-operator.resource.kind":"ReplicaSet","trivy-operator.resource.name":"broken","trivy-operator.container.name":"app"}},"report":{"vulnerabilities":[{"resource":"openssl","severity":"HIGH"}]}}"#;
    create(
        &sb,
        "/apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports",
        bad,
    );
    let mut registry = Registry::default();
    let o = KubeOptions {
        metrics: Some(KubeMetrics::new(&mut registry)),
        ..opts(&sb.kubeconfig)
    };
    let client = Client::connect(&o).unwrap();
    let (reports, malformed, _) = collect_reports(&client, &[]).unwrap();
    assert_eq!(
        reports.len() + 1,
        kubectl_count(&sb),
        "the others are all there"
    );
    assert_eq!(malformed.len(), 1);
    assert_eq!(malformed[0].name, "replicaset-broken-app");
    assert_eq!(malformed[0].namespace, "shop");
    assert!(
        malformed[0].reason.contains("vulnerabilityID"),
        "{}",
        malformed[0].reason
    );
    let text = render(&registry);
    assert!(text.contains("kijo_malformed_reports_total 1"), "{text}");
}

fn replicaset(name: &str, revision: u32) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{{"name":"{name}","namespace":"shop","annotations":{{"deployment.kubernetes.io/revision":"{revision}"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"Deployment","name":"shop-api","uid":"d-1","controller":true}}]}},"spec":{{"replicas":1,"selector":{{"matchLabels":{{"app":"shop-api"}}}},"template":{{"metadata":{{"labels":{{"app":"shop-api"}}}},"spec":{{"containers":[{{"name":"api","image":"acme/api"}}]}}}}}}}}"#
    )
}

fn rs_report(rs: &str, updated: &str, cve: &str) -> String {
    format!(
        r#"{{"apiVersion":"aquasecurity.github.io/v1alpha1","kind":"VulnerabilityReport","metadata":{{"name":"replicaset-{rs}-api","namespace":"shop","labels":{{"trivy-operator.resource.kind":"ReplicaSet","trivy-operator.resource.name":"{rs}","trivy-operator.resource.namespace":"shop","trivy-operator.container.name":"api"}}}},"report":{{"updateTimestamp":"{updated}","artifact":{{"repository":"acme/api","tag":"{rs}"}},"vulnerabilities":[{{"vulnerabilityID":"{cve}","resource":"openssl","installedVersion":"3.0.1","severity":"HIGH"}}]}}}}"#
    )
}

#[test]
fn a_rollout_resolves_both_replicasets_to_the_deployment() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let rs_path = "/apis/apps/v1/namespaces/shop/replicasets";
    let vr_path = "/apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports";
    create(&sb, rs_path, &replicaset("shop-api-aaaa", 1));
    create(&sb, rs_path, &replicaset("shop-api-bbbb", 2));
    // The old ReplicaSet's report was updated *later* (a rescan): the revision still wins.
    create(
        &sb,
        vr_path,
        &rs_report("shop-api-aaaa", "2026-01-03T00:00:00Z", "CVE-OLD"),
    );
    create(
        &sb,
        vr_path,
        &rs_report("shop-api-bbbb", "2026-01-02T00:00:00Z", "CVE-NEW"),
    );
    // A report whose ReplicaSet is gone stays attributed to the ReplicaSet.
    create(
        &sb,
        vr_path,
        &rs_report("shop-api-gone", "2026-01-02T00:00:00Z", "CVE-GONE"),
    );

    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    let (reports, _, _) = collect_reports(&client, &["shop".to_string()]).unwrap();
    let mut resolver = OwnerResolver::default();
    let mut items = Vec::new();
    for r in &reports {
        let a = resolver.attribute(&client, &r.owner).unwrap();
        let (workload, revision) = (a.workload, a.revision);
        let rev = Revision {
            deployment_revision: revision,
            update_timestamp: r.update_timestamp,
            creation_timestamp: r.creation_timestamp,
            name: r.name.clone(),
        };
        items.push(((workload, r.container.clone()), rev, r.clone()));
    }
    let workload_of = |name: &str| {
        items
            .iter()
            .find(|(_, _, r)| r.name == name)
            .map(|(k, _, _)| k.0.clone())
            .unwrap()
    };
    let a = workload_of("replicaset-shop-api-aaaa-api");
    let b = workload_of("replicaset-shop-api-bbbb-api");
    assert_eq!(a, b);
    assert_eq!(
        (a.kind.as_str(), a.name.as_str()),
        ("Deployment", "shop-api")
    );
    let gone = workload_of("replicaset-shop-api-gone-api");
    assert_eq!(
        (gone.kind.as_str(), gone.name.as_str()),
        ("ReplicaSet", "shop-api-gone")
    );
    // The fixture's web Deployment resolves too.
    let web = workload_of("replicaset-web-7c9d8f6b5d-nginx");
    assert_eq!(
        (web.kind.as_str(), web.name.as_str()),
        ("Deployment", "web")
    );

    let (winners, superseded) = newest_by_key(items);
    let current = &winners[&(a, "api".to_string())].1;
    assert_eq!(current.name, "replicaset-shop-api-bbbb-api");
    assert_eq!(current.findings[0].key.vulnerability_id, "CVE-NEW");
    assert_eq!(superseded.len(), 1);

    // Lookups are cached: one GET per ReplicaSet however often it is asked.
    sb.reset_stats();
    for r in &reports {
        resolver.attribute(&client, &r.owner).unwrap();
    }
    assert_eq!(sb.count("get", "replicasets"), 0, "{}", sb.stats());

    // A rollback gives the old ReplicaSet the highest revision. The cache still answers the
    // old one; `refresh` asks the API, once per ReplicaSet per cycle (until `prune`).
    sb.kubectl_ok(&[
        "patch",
        "replicaset",
        "-n",
        "shop",
        "shop-api-aaaa",
        "--type=merge",
        "-p",
        r#"{"metadata":{"annotations":{"deployment.kubernetes.io/revision":"3"}}}"#,
    ]);
    let old = reports
        .iter()
        .find(|r| r.name == "replicaset-shop-api-aaaa-api")
        .unwrap();
    assert_eq!(
        resolver.attribute(&client, &old.owner).unwrap().revision,
        Some(1)
    );
    resolver.prune();
    sb.reset_stats();
    for _ in 0..2 {
        assert_eq!(
            resolver.refresh(&client, &old.owner).unwrap().revision,
            Some(3)
        );
    }
    assert_eq!(
        resolver.attribute(&client, &old.owner).unwrap().revision,
        Some(3)
    );
    assert_eq!(sb.count("get", "replicasets"), 1, "{}", sb.stats());
    resolver.prune();
    resolver.refresh(&client, &old.owner).unwrap();
    assert_eq!(
        sb.count("get", "replicasets"),
        2,
        "a new cycle asks again: {}",
        sb.stats()
    );
}

#[test]
fn namespace_limited_listing_uses_namespace_urls_only() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    sb.reset_stats();
    let (reports, _, _) = collect_reports(&client, &["data".to_string()]).unwrap();
    assert!(!reports.is_empty());
    assert!(
        reports.iter().all(|r| r.namespace == "data"),
        "{:?}",
        names(&reports)
    );
    let (shop, _, _) = collect_reports(&client, &["shop".to_string()]).unwrap();
    assert!(shop.iter().all(|r| r.namespace == "shop"));
    let (both, _, _) = collect_reports(&client, &["data".to_string(), "shop".to_string()]).unwrap();
    assert_eq!(both.len(), reports.len() + shop.len());
    // Never a cluster-wide URL.
    let stats = sb.stats();
    for r in stats["requests"].as_array().unwrap() {
        let path = r["path"].as_str().unwrap_or("");
        if path.contains("vulnerabilityreports") {
            assert!(path.contains("/namespaces/"), "cluster-wide request {path}");
        }
    }
    // Cluster-scoped kinds are skipped when namespaces are set.
    let stats = client
        .list_reports(
            ReportKind::ClusterVulnerabilityReport,
            &["data".to_string()],
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(stats.items, 0);
}

#[test]
fn dry_run_checks_every_permission() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    let checks = dry_run_checks(&client, &[]);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"list vulnerabilityreports in all namespaces"),
        "{names:?}"
    );
    assert!(
        names.contains(&"list clustervulnerabilityreports in all namespaces"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("get replicasets")),
        "{names:?}"
    );
    let per_ns = dry_run_checks(&client, &["shop".to_string(), "data".to_string()]);
    assert!(per_ns.iter().all(|c| c.ok), "{per_ns:#?}");
    assert!(
        per_ns
            .iter()
            .any(|c| c.name == "list vulnerabilityreports in namespace data")
    );
    assert!(
        !per_ns
            .iter()
            .any(|c| c.name.contains("clustervulnerabilityreports"))
    );

    // An owner kind RBAC refuses: one failing line, naming what falls back and the rule to add.
    let r = sb.http(
        "POST",
        "/_sandbox/forbidden",
        Some(r#"{"resources":["rollouts.argoproj.io"]}"#),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let checks = dry_run_checks(&client, &[]);
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
    assert_eq!(failed.len(), 1, "{checks:#?}");
    assert_eq!(
        failed[0].name,
        "get rollouts.argoproj.io in all namespaces (probed in default) (Argo Rollout lookup)"
    );
    assert!(
        failed[0].detail.contains("403")
            && failed[0]
                .detail
                .contains("attributed to their ReplicaSets (grant get on rollouts.argoproj.io)"),
        "{failed:#?}"
    );
}

#[test]
fn shutdown_interrupts_a_slow_request() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    sb.fault(
        r#"{"kind":"slow","count":1,"delay_ms":20000,"path_contains":"vulnerabilityreports"}"#,
    );
    let c2 = client.clone();
    let start = Instant::now();
    let worker = std::thread::spawn(move || collect_reports(&c2, &[]).map(|r| r.0.len()));
    // Wait until the request is in flight before shutting down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb.count("list", "vulnerabilityreports") == 0 {
        assert!(Instant::now() < deadline, "request never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    client.shutdown();
    let result = worker.join().unwrap();
    assert!(matches!(result, Err(KubeError::Shutdown)), "{result:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

/// A minimal HTTP CONNECT proxy on loopback; counts the tunnels it opened.
fn connect_proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let counter = tunnels.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l).unwrap() == 0 || l == "\r\n" {
                        break;
                    }
                }
                let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
                assert!(first.starts_with("CONNECT "), "{first}");
                assert!(target.starts_with("127.0.0.1:"), "loopback only: {target}");
                let upstream = TcpStream::connect(&target).unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let mut client_w = client.try_clone().unwrap();
                client_w
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let mut up_r = upstream.try_clone().unwrap();
                let mut up_w = upstream;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_r, &mut client_w);
                    let _ = client_w.shutdown(std::net::Shutdown::Both);
                });
                // Bytes the reader already buffered belong to the tunnel.
                let buffered = reader.buffer().to_vec();
                let _ = up_w.write_all(&buffered);
                let mut client_r = reader.into_inner();
                let _ = std::io::copy(&mut client_r, &mut up_w);
                let _ = up_w.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (format!("http://{addr}"), tunnels)
}

#[test]
fn proxy_url_tunnels_through_the_proxy() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let (proxy, tunnels) = connect_proxy();
    let kc = write_kubeconfig(
        &sb,
        "proxied",
        &format!("    proxy-url: {proxy}\n"),
        &format!("    token: {}\n", sb.token),
    );
    let client = Client::connect(&opts(&kc)).unwrap();
    assert_eq!(
        collect_reports(&client, &[]).unwrap().0.len(),
        kubectl_count(&sb)
    );
    assert!(tunnels.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[test]
fn lease_create_get_replace_and_conflict() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    let coll = "/apis/coordination.k8s.io/v1/namespaces/shop/leases";
    let one = format!("{coll}/kijo-agent-leader");
    assert!(
        client
            .get_json::<serde_json::Value>(&one)
            .unwrap()
            .is_none()
    );
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kijo-agent-leader", "namespace": "shop"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    });
    let created: serde_json::Value = client.write_json("POST", coll, &lease).unwrap();
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let again = client
        .write_json::<serde_json::Value>("POST", coll, &lease)
        .unwrap_err();
    assert_eq!(again.status(), Some(409), "{again}");
    let mut update = created.clone();
    update["spec"]["holderIdentity"] = "b".into();
    let replaced: serde_json::Value = client.write_json("PUT", &one, &update).unwrap();
    assert_eq!(replaced["spec"]["holderIdentity"], "b");
    // A stale resourceVersion loses: optimistic concurrency for leader election.
    update["metadata"]["resourceVersion"] = rv.into();
    let stale = client
        .write_json::<serde_json::Value>("PUT", &one, &update)
        .unwrap_err();
    assert_eq!(stale.status(), Some(409), "{stale}");
    let got: serde_json::Value = client.get_json(&one).unwrap().unwrap();
    assert_eq!(got["spec"]["holderIdentity"], "b");
}

/// An unchanged cluster costs the agent one small metadata listing per kind and cycle; a
/// changed report is the only one read in full.
#[test]
fn an_unchanged_cluster_costs_one_metadata_listing_per_cycle() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let dir = crate::support::sandbox::TempDir::new("kijo-cheap");
    let db = format!("sqlite:{}", dir.path().join("kijo.db").display());
    let kubeconfig = sb.kubeconfig.display().to_string();
    let env = [
        ("KIJO_DATABASE_URL", db.as_str()),
        ("KIJO_CLUSTER_NAME", "cheap"),
        ("KIJO_KUBECONFIG", kubeconfig.as_str()),
    ];
    let once = || {
        let (status, _, err) = crate::support::agent::run(&env, &["--once"]);
        assert!(status.success(), "{err}");
    };
    // Report requests by representation: (verb, path, as) -> count.
    let report_requests = || -> Vec<(String, String, String, u64)> {
        sb.stats()["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .unwrap_or("")
                    .contains("vulnerabilityreports")
            })
            .map(|r| {
                (
                    r["verb"].as_str().unwrap_or("").to_owned(),
                    r["path"].as_str().unwrap_or("").to_owned(),
                    r["as"].as_str().unwrap_or("").to_owned(),
                    r["count"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };

    once(); // the baseline reads every report
    sb.reset_stats();
    once();
    let unchanged = report_requests();
    assert!(!unchanged.is_empty());
    for (verb, path, repr, _) in &unchanged {
        assert_eq!(verb, "list", "{path}");
        assert_eq!(repr, "PartialObjectMetadataList", "{path} read in full");
    }

    sb.kubectl_ok(&[
        "patch",
        "vulnerabilityreport",
        "replicaset-web-7c9d8f6b5d-nginx",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"touched":"yes"}}}"#,
    ]);
    sb.reset_stats();
    once();
    let full: Vec<_> = report_requests()
        .into_iter()
        .filter(|(_, _, repr, _)| repr != "PartialObjectMetadataList")
        .collect();
    assert_eq!(full.len(), 1, "{full:?}");
    let (verb, path, _, count) = &full[0];
    assert_eq!((verb.as_str(), *count), ("get", 1), "{full:?}");
    assert!(
        path.ends_with("/namespaces/shop/vulnerabilityreports/replicaset-web-7c9d8f6b5d-nginx"),
        "{path}"
    );
}

/// A report whose ReplicaSet is already gone (garbage collection pending) is not recorded under
/// the ReplicaSet's own name: a vanished ReplicaSet announces nothing new.
#[test]
fn a_report_of_a_vanished_replicaset_announces_nothing() {
    let sb = Sandbox::start(&["--load", &fixtures()]);
    let dir = crate::support::sandbox::TempDir::new("kijo-ghost");
    let db = format!("sqlite:{}", dir.path().join("kijo.db").display());
    let kubeconfig = sb.kubeconfig.display().to_string();
    let env = [
        ("KIJO_DATABASE_URL", db.as_str()),
        ("KIJO_CLUSTER_NAME", "ghost"),
        ("KIJO_KUBECONFIG", kubeconfig.as_str()),
    ];
    let run = |args: &[&str]| {
        let (status, out, err) = crate::support::agent::run(&env, args);
        assert!(status.success(), "{err}");
        out
    };
    run(&["--once"]); // baseline
    populate(&sb, 2); // reports of ReplicaSets gen-0 and gen-1, which do not exist
    run(&["--once"]);
    let history = run(&["history"]);
    assert!(
        history.contains("no lifecycle events recorded yet"),
        "{history}"
    );
    assert!(!history.contains("gen-0"), "{history}");
}

/// The owner chain against the sandbox: ReplicaSet → Argo Rollout (a known custom kind), Pod →
/// CloneSet (located through discovery, once per group version), and a 403 on an owner kind
/// (nearest readable owner, counted by kind).
#[test]
fn owner_chains_follow_controllers_of_any_kind() {
    let sb = Sandbox::start(&[]);
    let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}}"#;
    create(&sb, "/api/v1/namespaces", ns);
    let rollout = sb.http(
        "POST",
        "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts",
        Some(r#"{"apiVersion":"argoproj.io/v1alpha1","kind":"Rollout","metadata":{"name":"web","namespace":"shop"}}"#),
        &[],
    );
    assert_eq!(rollout.status, 201, "{}", rollout.body);
    let uid = rollout.json()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    create(
        &sb,
        "/apis/apps/v1/namespaces/shop/replicasets",
        &format!(
            r#"{{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{{"name":"web-7f9c","namespace":"shop","annotations":{{"rollout.argoproj.io/revision":"4"}},"ownerReferences":[{{"apiVersion":"argoproj.io/v1alpha1","kind":"Rollout","name":"web","uid":"{uid}","controller":true}}]}}}}"#
        ),
    );
    let cloneset = sb.http(
        "POST",
        "/apis/apps.kruise.io/v1alpha1/namespaces/shop/clonesets",
        Some(r#"{"apiVersion":"apps.kruise.io/v1alpha1","kind":"CloneSet","metadata":{"name":"api","namespace":"shop"}}"#),
        &[],
    );
    assert_eq!(cloneset.status, 201, "{}", cloneset.body);
    let uid = cloneset.json()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    for pod in ["api-aaaaa", "api-bbbbb"] {
        create(
            &sb,
            "/api/v1/namespaces/shop/pods",
            &format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{pod}","namespace":"shop","ownerReferences":[{{"apiVersion":"apps.kruise.io/v1alpha1","kind":"CloneSet","name":"api","uid":"{uid}","controller":true}}]}}}}"#
            ),
        );
    }
    let owner = |kind: &str, name: &str| kijo_agent::trivy::Owner {
        kind: kind.into(),
        name: name.into(),
        namespace: "shop".into(),
    };
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    let mut registry = kijo_agent::metrics::Registry::default();
    let metrics = KubeMetrics::new(&mut registry);
    let mut resolver = OwnerResolver::new(
        std::time::Duration::from_secs(600),
        metrics.owner_forbidden.clone(),
    );

    let a = resolver
        .attribute(&client, &owner("ReplicaSet", "web-7f9c"))
        .unwrap();
    assert_eq!(
        (
            a.workload.kind.as_str(),
            a.workload.name.as_str(),
            a.revision
        ),
        ("Rollout", "web", Some(4))
    );
    assert!(a.created.is_some(), "{a:?}");

    sb.reset_stats();
    for pod in ["api-aaaaa", "api-bbbbb"] {
        let a = resolver.attribute(&client, &owner("Pod", pod)).unwrap();
        assert_eq!(
            (
                a.workload.kind.as_str(),
                a.workload.name.as_str(),
                a.revision
            ),
            ("CloneSet", "api", None),
            "{pod}"
        );
        assert!(a.created.is_some(), "{a:?}");
    }
    // Discovery once for the group version, the CloneSet once, each Pod once.
    assert_eq!(sb.stats()["total"], 4, "{}", sb.stats());
    assert_eq!(sb.count("get", "clonesets"), 1, "{}", sb.stats());
    assert_eq!(sb.count("get", "pods"), 2, "{}", sb.stats());

    // 403 on Rollouts: the ReplicaSet is the nearest readable owner; counted by kind.
    let r = sb.http(
        "POST",
        "/_sandbox/forbidden",
        Some(r#"{"resources":["rollouts.argoproj.io"]}"#),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut fresh = OwnerResolver::new(
        std::time::Duration::from_secs(600),
        metrics.owner_forbidden.clone(),
    );
    let a = fresh
        .attribute(&client, &owner("ReplicaSet", "web-7f9c"))
        .unwrap();
    assert_eq!(
        (
            a.workload.kind.as_str(),
            a.workload.name.as_str(),
            a.revision
        ),
        ("ReplicaSet", "web-7f9c", None)
    );
    assert_eq!(
        a.blocked.map(|b| (b.key.kind, b.forbidden)),
        Some(("Rollout".to_owned(), true))
    );
    let text = kijo_agent::metrics::render(&registry);
    assert!(
        text.lines()
            .any(|l| l == "kijo_kube_owner_forbidden_total{kind=\"Rollout\"} 1"),
        "{text}"
    );
}

#[test]
fn namespace_scoped_rbac_works_with_namespace_filtering() {
    let sb = Sandbox::start(&[
        "--load",
        &fixtures(),
        "--namespaced-token",
        "ns-token-7=shop",
    ]);
    let kc = write_kubeconfig(&sb, "ns", "", "    token: ns-token-7\n");
    let client = Client::connect(&opts(&kc)).unwrap();
    let shop = ["shop".to_string()];
    let (reports, _, _) = collect_reports(&client, &shop).unwrap();
    assert!(!reports.is_empty());
    // Deployment lookups inside the namespace are permitted too.
    let mut resolver = OwnerResolver::default();
    let web = reports
        .iter()
        .find(|r| r.name == "replicaset-web-7c9d8f6b5d-nginx")
        .unwrap();
    let a = resolver.attribute(&client, &web.owner).unwrap();
    let (workload, revision) = (a.workload, a.revision);
    assert_eq!((workload.kind.as_str(), revision), ("Deployment", Some(3)));

    // Cluster-wide listing is forbidden: a clear error, not an empty list.
    let err = collect_reports(&client, &[]).unwrap_err();
    assert!(err.is_forbidden(), "{err}");
    assert!(err.to_string().contains("RBAC"), "{err}");

    let checks = dry_run_checks(&client, &shop);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    let wide = dry_run_checks(&client, &[]);
    let list = wide
        .iter()
        .find(|c| c.name == "list vulnerabilityreports in all namespaces")
        .unwrap();
    assert!(!list.ok && list.detail.contains("403"), "{wide:#?}");
}

/// The pod template's containers of every workload kind the operator scans, read from the API
/// server as the agent reads them when a stored container has no report in its workload's
/// current revision. 404, 403 and unknown kinds are "no answer" (`None`), never "no
/// containers".
#[test]
fn workload_containers_of_every_kind() {
    let sb = Sandbox::start(&[
        "--load",
        &fixtures(),
        "--namespaced-token",
        "ns-token-8=shop",
    ]);
    let pod_spec = serde_json::json!({
        "containers": [{"name": "app", "image": "acme/app:1"}, {"name": "sidecar", "image": "acme/side:1"}],
        "initContainers": [{"name": "migrate", "image": "acme/migrate:1"}],
        "ephemeralContainers": [{"name": "debugger", "image": "busybox"}],
    });
    let template = serde_json::json!({"metadata": {"labels": {"app": "x"}}, "spec": pod_spec});
    let selector = serde_json::json!({"matchLabels": {"app": "x"}});
    // (kind, collection, spec)
    let kinds = [
        (
            "Deployment",
            "/apis/apps/v1/namespaces/shop/deployments",
            serde_json::json!({"selector": selector, "template": template}),
        ),
        (
            "StatefulSet",
            "/apis/apps/v1/namespaces/shop/statefulsets",
            serde_json::json!({"serviceName": "x", "selector": selector, "template": template}),
        ),
        (
            "DaemonSet",
            "/apis/apps/v1/namespaces/shop/daemonsets",
            serde_json::json!({"selector": selector, "template": template}),
        ),
        (
            "ReplicaSet",
            "/apis/apps/v1/namespaces/shop/replicasets",
            serde_json::json!({"selector": selector, "template": template}),
        ),
        (
            "ReplicationController",
            "/api/v1/namespaces/shop/replicationcontrollers",
            serde_json::json!({"selector": {"app": "x"}, "template": template}),
        ),
        (
            "Job",
            "/apis/batch/v1/namespaces/shop/jobs",
            serde_json::json!({"template": template}),
        ),
        (
            "CronJob",
            "/apis/batch/v1/namespaces/shop/cronjobs",
            serde_json::json!({"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": template}}}),
        ),
        ("Pod", "/api/v1/namespaces/shop/pods", pod_spec.clone()),
    ];
    let api_version = |path: &str| {
        if path.starts_with("/api/v1") {
            "v1".to_owned()
        } else {
            path.trim_start_matches("/apis/")
                .split('/')
                .take(2)
                .collect::<Vec<_>>()
                .join("/")
        }
    };
    for (kind, path, spec) in &kinds {
        let body = serde_json::json!({
            "apiVersion": api_version(path), "kind": kind,
            "metadata": {"name": "tmpl", "namespace": "shop"},
            "spec": spec,
        });
        create(&sb, path, &body.to_string());
    }
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    let want = Some(vec![
        "app".to_owned(),
        "migrate".to_owned(),
        "sidecar".to_owned(),
    ]);
    for (kind, _, _) in &kinds {
        assert_eq!(
            client.workload_containers(kind, "shop", "tmpl").unwrap(),
            want,
            "{kind}"
        );
        assert_eq!(
            client.workload_containers(kind, "shop", "absent").unwrap(),
            None,
            "{kind}: 404 is no answer"
        );
    }
    // Argo Rollouts: its own template, or a Deployment's through `workloadRef`.
    let rollouts = "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts";
    let rollout = |name: &str, spec: serde_json::Value| {
        let body = serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": "shop"}, "spec": spec,
        });
        create(&sb, rollouts, &body.to_string());
    };
    rollout(
        "own",
        serde_json::json!({"selector": selector, "template": template}),
    );
    let reference = |kind: &str, name: &str| {
        serde_json::json!({"selector": selector,
            "workloadRef": {"apiVersion": "apps/v1", "kind": kind, "name": name}})
    };
    rollout("by-ref", reference("Deployment", "tmpl"));
    rollout("by-rs", reference("ReplicaSet", "tmpl"));
    rollout("dangling", reference("Deployment", "absent"));
    for name in ["own", "by-ref", "by-rs"] {
        assert_eq!(
            client.workload_containers("Rollout", "shop", name).unwrap(),
            want,
            "Rollout {name}"
        );
    }
    assert_eq!(
        client
            .workload_containers("Rollout", "shop", "dangling")
            .unwrap(),
        None,
        "a workloadRef to a missing Deployment is no answer"
    );
    // The fixture Deployment as kubectl shows it.
    assert_eq!(
        client
            .workload_containers("Deployment", "shop", "web")
            .unwrap(),
        Some(vec!["log-shipper".to_owned(), "nginx".to_owned()])
    );
    for (kind, namespace) in [("Rollout", "shop"), ("Node", "shop"), ("Deployment", "")] {
        assert_eq!(
            client.workload_containers(kind, namespace, "web").unwrap(),
            None,
            "{kind} in {namespace:?}"
        );
    }
    // 403: a token limited to "shop" asking about "data".
    let kc = write_kubeconfig(&sb, "ns8", "", "    token: ns-token-8\n");
    let limited = Client::connect(&opts(&kc)).unwrap();
    assert_eq!(
        limited
            .workload_containers("StatefulSet", "shop", "tmpl")
            .unwrap(),
        want
    );
    assert_eq!(
        limited
            .workload_containers("StatefulSet", "data", "postgres")
            .unwrap(),
        None,
        "403 is no answer"
    );
}

/// The creation time of a workload, as the coverage baseline asks for it: the API's
/// `creationTimestamp`; no answer (never an error) for a workload that is gone, that the agent
/// may not read, or of a kind it cannot look up.
#[test]
fn workload_created_reads_the_creation_timestamp() {
    let sb = Sandbox::start(&[
        "--load",
        &fixtures(),
        "--namespaced-token",
        "ns-token-9=shop",
    ]);
    let client = Client::connect(&opts(&sb.kubeconfig)).unwrap();
    let before = jiff::Timestamp::now();
    let r = sb.http(
        "POST",
        "/api/v1/namespaces/shop/pods",
        Some(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"late"},"spec":{"containers":[{"name":"app","image":"acme/app:1"}]}}"#),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let stored: jiff::Timestamp = r.json()["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let created = client.workload_created("Pod", "shop", "late").unwrap();
    assert_eq!(created, Some(stored));
    assert!(
        stored.as_second() >= before.as_second(),
        "created now, to the second: {stored} vs {before}"
    );
    assert!(
        client
            .workload_created("Deployment", "shop", "web")
            .unwrap()
            .is_some(),
        "the fixture Deployment"
    );
    for (kind, namespace, name) in [
        ("Deployment", "shop", "gone"),
        ("Rollout", "shop", "web"),
        ("Deployment", "", "web"),
    ] {
        assert_eq!(
            client.workload_created(kind, namespace, name).unwrap(),
            None,
            "{kind} {namespace:?}/{name}"
        );
    }
    let kc = write_kubeconfig(&sb, "ns9", "", "    token: ns-token-9\n");
    let limited = Client::connect(&opts(&kc)).unwrap();
    assert_eq!(
        limited
            .workload_created("StatefulSet", "data", "postgres")
            .unwrap(),
        None,
        "403 is no answer"
    );
    assert!(
        limited
            .workload_created("Deployment", "shop", "web")
            .unwrap()
            .is_some()
    );
}
