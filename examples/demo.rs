//! The local demo (`just demo`): the Kubernetes-API sandbox with the project's small cluster
//! (`tests/fixtures/cluster`), a local receiver standing in for Slack and a webhook, and the
//! agent on the embedded SQLite store. A scripted sequence of cluster changes shows what people
//! would receive: a new CVE, a fix, a report deleted and recreated by Trivy Operator's TTL (no
//! message), a CVE coming back, and a Deployment rollout.
//!
//! Each change is printed as the `kubectl` command that makes it. With kubectl on PATH the demo
//! runs that command; without it the demo sends the request kubectl would send straight to the
//! sandbox's API (and prints it), so the demo needs nothing but the Rust toolchain.
//!
//! Needs the agent and the sandbox built (`cargo build --bin kijo-agent --example sandbox`, which
//! `just demo` does). The sandbox, the receiver and the agent are owned by `demo()`: whether it
//! finishes, fails or is interrupted (Ctrl-C, SIGTERM), they are stopped and the temporary
//! directory removed before the process exits.

use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kijo_testkit::agent::Agent;
use kijo_testkit::build;
use kijo_testkit::receiver::{Receiver, Recorded};
use kijo_testkit::sandbox::{Sandbox, kubectl_on_path};
use kijo_testkit::wait::poll_until;
use serde_json::{Value, json};

/// Why the demo stopped before its end.
enum Stop {
    /// SIGINT or SIGTERM: everything is torn down, exit 130.
    Interrupted,
    Failed(String),
}

impl From<String> for Stop {
    fn from(e: String) -> Stop {
        Stop::Failed(e)
    }
}

impl From<&str> for Stop {
    fn from(e: &str) -> Stop {
        Stop::Failed(e.to_owned())
    }
}

fn main() {
    // A signal only raises the flag: every wait checks it and returns, so `demo()` unwinds
    // normally and the drops stop the children and remove the temporary directory.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted)).expect("signal handler");
    }
    match demo(&interrupted) {
        Ok(()) => {}
        Err(Stop::Interrupted) => {
            eprintln!("\ndemo interrupted; everything stopped and removed");
            std::process::exit(130);
        }
        Err(Stop::Failed(e)) => {
            eprintln!("demo failed: {e}");
            std::process::exit(1);
        }
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo(interrupted: &AtomicBool) -> Result<(), Stop> {
    let started = Instant::now();

    // 1. The sandbox with the small cluster.
    let fixtures = repo_root().join("tests/fixtures/cluster");
    let sandbox = Sandbox::launch(&["--load", &fixtures.display().to_string()])?;
    println!(
        "▶ Kubernetes API sandbox with a small cluster: {}",
        sandbox.url
    );
    let cluster = Cluster {
        sandbox: &sandbox,
        kubectl: kubectl_on_path(),
    };
    match &cluster.kubectl {
        Some(k) => println!("▶ changes are made with {}", k.display()),
        None => println!(
            "▶ kubectl is not on PATH: each change is sent to the sandbox's API as the request kubectl would send; the kubectl command is printed with it"
        ),
    }

    // 2. The local receiver: prints what Slack and the webhook would get.
    let receiver = Receiver::start();
    println!(
        "▶ local receiver on {} and {}",
        receiver.url("/slack"),
        receiver.url("/webhook")
    );

    // 3. The agent on the embedded store.
    let agent_bin = build::agent_binary();
    if !agent_bin.exists() {
        return Err(format!(
            "{} is not built; run `cargo build --bin kijo-agent --example sandbox`",
            agent_bin.display()
        )
        .into());
    }
    let db = format!("sqlite:{}", sandbox.dir.path().join("kijo.db").display());
    let kubeconfig = sandbox.kubeconfig.display().to_string();
    let (slack, webhook) = (receiver.url("/slack"), receiver.url("/webhook"));
    let agent = Agent::start(
        &[
            ("KIJO_DATABASE_URL", &db),
            ("KIJO_KUBECONFIG", &kubeconfig),
            ("KIJO_CLUSTER_NAME", "demo"),
            ("KIJO_POLL_INTERVAL", "1s"),
            ("KIJO_NOTIFY_SEVERITY", "HIGH"),
            // The demo shows each change as it happens, not after a 10-minute batch window.
            ("KIJO_NOTIFY_BATCH_WINDOW", "0"),
            ("KIJO_NOTIFY_SLACK", &slack),
            ("KIJO_NOTIFY_WEBHOOK", &webhook),
            (
                "KIJO_DETAILS_URL",
                "https://kijo.example.com/clusters/{cluster}/namespaces/{namespace}",
            ),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0"),
            ("KIJO_LOG_FORMAT", "json"),
        ],
        &[],
    );
    println!("▶ kijo-agent: embedded store {db}, poll every 1s, notify at HIGH and above\n");
    let watch = Watch {
        agent: &agent,
        receiver: &receiver,
        interrupted,
        lines_seen: Cell::new(0),
        printed: Cell::new(0),
    };

    step("The first cycle records what already exists (the baseline): nothing is sent.");
    watch.cycles(2)?;
    println!("  (no message)\n");

    let nginx = "20-vulnerabilityreport-web-nginx.json";
    let mut vulns = fixture(nginx)?["report"]["vulnerabilities"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    step(
        "Two workloads in shop are rescanned with the same new critical CVE → one \"new\" message for both.",
    );
    let new_cve = finding(
        "CVE-2099-0001",
        "CRITICAL",
        "openssl",
        "3.0.11-1",
        "3.0.15-1",
    );
    vulns.push(new_cve.clone());
    let worker = "23-vulnerabilityreport-hashed.json";
    let mut worker_vulns = fixture(worker)?["report"]["vulnerabilities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    worker_vulns.push(new_cve);
    cluster.patch_report(nginx, "2026-11-21T08:00:00Z", &vulns)?;
    cluster.patch_report(worker, "2026-11-21T08:00:00Z", &worker_vulns)?;
    watch.messages(1)?;
    // Should the two patches land in different cycles, the second message arrives now, not
    // during the next step.
    watch.cycles(2)?;
    watch.print_new();

    step(
        "libexpat1 is upgraded to 2.5.0-1+deb12u1: the next scan no longer has CVE-2024-45491 → one \"fixed\" message.",
    );
    let fixed: Value = take(&mut vulns, "CVE-2024-45491").ok_or("fixture changed")?;
    // The other libexpat1 CVE stays, at the new installed version: evidence that the package
    // changed, so the missing CVE is fixed, not merely no longer reported.
    for v in &mut vulns {
        if v["resource"] == "libexpat1" {
            v["installedVersion"] = json!("2.5.0-1+deb12u1");
        }
    }
    cluster.patch_report(nginx, "2026-11-21T09:00:00Z", &vulns)?;
    watch.messages(1)?;

    step("Trivy Operator's TTL deletes the report and rescans: same findings → no message.");
    cluster.delete_report(nginx)?;
    watch.cycles(2)?;
    let n = receiver.requests().len();
    cluster.create_report(nginx, "2026-11-21T10:00:00Z", &vulns, None)?;
    watch.cycles(3)?;
    if receiver.requests().len() != n {
        watch.print_new();
        return Err("a TTL rescan produced a message".into());
    }
    println!("  (no message: a deleted report is not a fix, an identical rescan is not news)\n");

    step("CVE-2024-45491 shows up again → one \"reintroduced\" message.");
    vulns.push(fixed);
    cluster.patch_report(nginx, "2026-11-21T11:00:00Z", &vulns)?;
    watch.messages(1)?;

    step(
        "A rollout: web moves to nginx:1.25.5 (new ReplicaSet, revision 4), which fixes CVE-2023-52425.",
    );
    take(&mut vulns, "CVE-2023-52425").ok_or("fixture changed")?;
    cluster.rollout(nginx, "2026-11-21T12:00:00Z", &vulns)?;
    watch.messages(1)?;

    println!(
        "✔ demo finished in {:.1}s: {} deliveries received; stopping the agent and the sandbox",
        started.elapsed().as_secs_f64(),
        receiver.requests().len()
    );
    Ok(())
}

/// Waits on the agent's log and the receiver, printing deliveries and agent problems as they
/// come; every wait returns early when a signal arrived.
struct Watch<'a> {
    agent: &'a Agent,
    receiver: &'a Receiver,
    interrupted: &'a AtomicBool,
    /// Agent log lines already scanned for warnings and errors.
    lines_seen: Cell<usize>,
    /// Deliveries already printed.
    printed: Cell<usize>,
}

impl Watch<'_> {
    fn finished_cycles(&self) -> usize {
        self.agent
            .lines()
            .iter()
            .filter(|l| l.contains("poll cycle finished"))
            .count()
    }

    /// Waits for `n` more finished poll cycles.
    fn cycles(&self, n: usize) -> Result<(), Stop> {
        let target = self.finished_cycles() + n;
        self.wait(
            Duration::from_secs(30),
            "the agent stopped finishing poll cycles",
            || self.finished_cycles() >= target,
        )
    }

    /// Waits for `n` more messages (each goes to both targets) and prints them.
    fn messages(&self, n: usize) -> Result<(), Stop> {
        let target = self.printed.get() + 2 * n;
        self.wait(
            Duration::from_secs(20),
            "the expected message did not arrive within 20 s",
            || self.receiver.requests().len() >= target,
        )?;
        self.print_new();
        Ok(())
    }

    fn wait(
        &self,
        timeout: Duration,
        failure: &str,
        mut condition: impl FnMut() -> bool,
    ) -> Result<(), Stop> {
        let held = poll_until(timeout, || {
            self.interrupted.load(Ordering::SeqCst) || condition()
        });
        self.print_agent_problems();
        if self.interrupted.load(Ordering::SeqCst) {
            Err(Stop::Interrupted)
        } else if held {
            Ok(())
        } else {
            Err(failure.into())
        }
    }

    fn print_agent_problems(&self) {
        let lines = self.agent.lines();
        for line in &lines[self.lines_seen.get().min(lines.len())..] {
            if line.contains("\"level\":\"error\"") || line.contains("\"level\":\"warn\"") {
                eprintln!("  agent: {line}");
            }
        }
        self.lines_seen.set(lines.len());
    }

    /// Prints the deliveries not printed yet, as their targets would show them.
    fn print_new(&self) {
        let requests = self.receiver.requests();
        for request in &requests[self.printed.get().min(requests.len())..] {
            print!("{}", preview(request));
        }
        self.printed.set(requests.len());
        let _ = std::io::stdout().flush();
    }
}

fn preview(request: &Recorded) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(&request.body) else {
        return format!("  ┌─ {} (not JSON)\n", request.path);
    };
    if request.path.starts_with("/slack") {
        let t = kijo_agent::notify::slack::to_terminal_text(&value);
        format!("  ┌─ Slack\n{}\n", indent(&t, "  │ "))
    } else {
        format!(
            "  ┌─ webhook\n{}\n",
            indent(&webhook_preview(value), "  │ ")
        )
    }
}

/// The report resource on the sandbox's API.
const REPORTS: &str = "/apis/aquasecurity.github.io/v1alpha1/namespaces";

/// How the demo changes the cluster: with kubectl when it is on PATH, else by sending the
/// request kubectl would send to the sandbox's API. Either way the kubectl command is printed.
struct Cluster<'a> {
    sandbox: &'a Sandbox,
    kubectl: Option<PathBuf>,
}

/// One cluster change: the kubectl command and the API request it amounts to.
struct Change<'a> {
    kubectl: &'a [&'a str],
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Option<String>,
}

impl Cluster<'_> {
    fn apply(&self, change: Change) -> Result<(), Stop> {
        println!("  $ kubectl {}", shorten(&change.kubectl.join(" ")));
        match &self.kubectl {
            Some(kubectl) => {
                let out = self
                    .sandbox
                    .kubectl_command_at(kubectl, change.kubectl)
                    .output()
                    .map_err(|e| format!("cannot run {}: {e}", kubectl.display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "kubectl {}: {}",
                        change.kubectl.join(" "),
                        String::from_utf8_lossy(&out.stderr)
                    )
                    .into());
                }
            }
            None => {
                println!("    ↳ sent as {} {}", change.method, change.path);
                let reply = self
                    .sandbox
                    .try_http(
                        change.method,
                        &change.path,
                        change.body.as_deref(),
                        &[("Content-Type", change.content_type)],
                    )
                    .map_err(|e| format!("{} {}: {e}", change.method, change.path))?;
                if !(200..300).contains(&reply.status) {
                    return Err(format!(
                        "{} {} answered {}: {}",
                        change.method, change.path, reply.status, reply.body
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    fn patch_report(
        &self,
        fixture_name: &str,
        scanned_at: &str,
        vulns: &[Value],
    ) -> Result<(), Stop> {
        let f = fixture(fixture_name)?;
        let (ns, name) = namespace_and_name(&f);
        let patch = json!({"report": {"updateTimestamp": scanned_at, "vulnerabilities": vulns}})
            .to_string();
        self.apply(Change {
            kubectl: &[
                "patch",
                "vulnerabilityreport",
                "-n",
                ns,
                name,
                "--type=merge",
                "-p",
                &patch,
            ],
            method: "PATCH",
            path: format!("{REPORTS}/{ns}/vulnerabilityreports/{name}"),
            content_type: "application/merge-patch+json",
            body: Some(patch.clone()),
        })
    }

    fn delete_report(&self, fixture_name: &str) -> Result<(), Stop> {
        let f = fixture(fixture_name)?;
        let (ns, name) = namespace_and_name(&f);
        self.apply(Change {
            kubectl: &["delete", "vulnerabilityreport", "-n", ns, name],
            method: "DELETE",
            path: format!("{REPORTS}/{ns}/vulnerabilityreports/{name}"),
            content_type: "application/json",
            body: None,
        })
    }

    /// Creates the fixture report again (as Trivy Operator does after its TTL), optionally for
    /// another ReplicaSet (name, uid).
    fn create_report(
        &self,
        fixture_name: &str,
        scanned_at: &str,
        vulns: &[Value],
        replica_set: Option<(&str, &str)>,
    ) -> Result<(), Stop> {
        let mut f = fixture(fixture_name)?;
        f["report"]["updateTimestamp"] = json!(scanned_at);
        f["report"]["vulnerabilities"] = json!(vulns);
        if let Some((rs, uid)) = replica_set {
            f["metadata"]["name"] = json!(format!("replicaset-{rs}-nginx"));
            f["metadata"]["labels"]["trivy-operator.resource.name"] = json!(rs);
            f["metadata"]["ownerReferences"][0]["name"] = json!(rs);
            f["metadata"]["ownerReferences"][0]["uid"] = json!(uid);
            f["report"]["artifact"]["tag"] = json!("1.25.5");
            f["report"]["artifact"]["digest"] = json!("");
        }
        let ns = namespace_and_name(&f).0.to_owned();
        self.apply_file(
            "create",
            "report.json",
            &f,
            format!("{REPORTS}/{ns}/vulnerabilityreports"),
        )
    }

    /// Writes `object` to a file (the argument of `kubectl VERB -f`) and creates it: `kubectl
    /// apply` of an object that does not exist yet is a create as well.
    fn apply_file(&self, verb: &str, file: &str, object: &Value, path: String) -> Result<(), Stop> {
        let file = self.sandbox.dir.path().join(file);
        let body = object.to_string();
        std::fs::write(&file, &body).map_err(|e| format!("{}: {e}", file.display()))?;
        self.apply(Change {
            kubectl: &[verb, "-f", &file.display().to_string()],
            method: "POST",
            path,
            content_type: "application/json",
            body: Some(body),
        })
    }

    fn rollout(&self, fixture_name: &str, scanned_at: &str, vulns: &[Value]) -> Result<(), Stop> {
        let (rs, uid) = ("web-5d8c7b9f4", "6f1d2c3b-0a4e-4b8f-9c1d-2e3f4a5b6c99");
        let replica_set = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs,
                "namespace": "shop",
                "uid": uid,
                "labels": {"app": "web", "pod-template-hash": "5d8c7b9f4"},
                "annotations": {"deployment.kubernetes.io/revision": "4"},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                    "uid": "6f1d2c3b-0a4e-4b8f-9c1d-2e3f4a5b6c01",
                    "controller": true, "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8c7b9f4"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "pod-template-hash": "5d8c7b9f4"}},
                    "spec": {"containers": [
                        {"name": "nginx", "image": "nginx:1.25.5"},
                        {"name": "log-shipper", "image": "fluent/fluent-bit:2.2.0"}
                    ]}
                }
            }
        });
        self.apply_file(
            "apply",
            "replicaset.json",
            &replica_set,
            "/apis/apps/v1/namespaces/shop/replicasets".to_owned(),
        )?;
        self.create_report(fixture_name, scanned_at, vulns, Some((rs, uid)))
    }
}

fn namespace_and_name(object: &Value) -> (&str, &str) {
    (
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

fn step(text: &str) {
    println!("━━ {text}");
    let _ = std::io::stdout().flush();
}

fn fixture(name: &str) -> Result<Value, String> {
    let path = repo_root().join("tests/fixtures/cluster").join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn finding(cve: &str, severity: &str, package: &str, installed: &str, fixed: &str) -> Value {
    json!({
        "vulnerabilityID": cve,
        "resource": package,
        "installedVersion": installed,
        "fixedVersion": fixed,
        "severity": severity,
        "title": "demo finding",
        "primaryLink": format!("https://avd.aquasec.com/nvd/{}", cve.to_lowercase()),
        "links": [],
        "target": ""
    })
}

fn take(vulns: &mut Vec<Value>, cve: &str) -> Option<Value> {
    let i = vulns.iter().position(|v| v["vulnerabilityID"] == cve)?;
    Some(vulns.remove(i))
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 110 {
        format!("{}…", s.chars().take(110).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// The webhook body, pretty-printed, with the findings array cut to two entries.
fn webhook_preview(mut value: Value) -> String {
    if let Some(findings) = value["findings"].as_array_mut()
        && findings.len() > 2
    {
        let more = findings.len() - 2;
        findings.truncate(2);
        findings.push(json!(format!("…and {more} more")));
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
