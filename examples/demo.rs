//! The local demo (`just demo`): the Kubernetes-API sandbox with the project's small cluster
//! (`tests/fixtures/cluster`), a local receiver standing in for Slack and a webhook, and the
//! agent on the embedded SQLite store. A scripted sequence of real `kubectl` changes shows what
//! people would receive: a new CVE, a fix, a report deleted and recreated by Trivy Operator's
//! TTL (no message), a CVE coming back, and a Deployment rollout.
//!
//! Needs the agent and the sandbox built (`cargo build --bin kijo-agent --example sandbox`, which
//! `just demo` does) and kubectl on PATH. Every child is killed and the temporary directory
//! removed on exit, on a panic and on Ctrl-C.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Children and the temp dir, cleaned up exactly once, whichever way the demo ends.
#[derive(Default)]
struct Cleanup {
    children: Vec<Child>,
    dir: Option<PathBuf>,
}

impl Cleanup {
    fn run(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

type Shared = Arc<Mutex<Cleanup>>;

struct Guard(Shared);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.0.lock() {
            c.run();
        }
    }
}

fn main() {
    let cleanup: Shared = Arc::default();
    let _guard = Guard(Arc::clone(&cleanup));
    {
        let cleanup = Arc::clone(&cleanup);
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .expect("signal handlers");
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                if let Ok(mut c) = cleanup.lock() {
                    c.run();
                }
                eprintln!("\ndemo interrupted; everything stopped and removed");
                std::process::exit(130);
            }
        });
    }
    if let Err(e) = demo(&cleanup) {
        eprintln!("demo failed: {e}");
        if let Ok(mut c) = cleanup.lock() {
            c.run();
        }
        std::process::exit(1);
    }
}

/// `target/<profile>/examples/demo` → `target/<profile>/<name>`.
fn built(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let examples = exe.parent().ok_or("no parent directory")?;
    let candidates = [
        examples.parent().map(|p| p.join(name)),
        Some(examples.join(name)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!("{name} is not built; run `cargo build --bin kijo-agent --example sandbox`")
        })
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo(cleanup: &Shared) -> Result<(), String> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("kijo-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    cleanup.lock().unwrap().dir = Some(dir.clone());
    let kubeconfig = dir.join("kubeconfig");

    // 1. The sandbox with the small cluster.
    let fixtures = repo_root().join("tests/fixtures/cluster");
    let mut sandbox = Command::new(built("sandbox")?)
        .args(["--load", &fixtures.display().to_string()])
        .args(["--kubeconfig", &kubeconfig.display().to_string()])
        .args(["--token", &format!("demo-{}", std::process::id())])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the sandbox: {e}"))?;
    let stdout = sandbox.stdout.take().expect("piped");
    cleanup.lock().unwrap().children.push(sandbox);
    let mut ready = String::new();
    BufReader::new(stdout)
        .read_line(&mut ready)
        .map_err(|e| e.to_string())?;
    if !ready.starts_with("sandbox ready: ") {
        return Err(format!("the sandbox did not start: {ready:?}"));
    }
    println!(
        "▶ Kubernetes API sandbox with a small cluster: {}",
        ready.trim_end().trim_start_matches("sandbox ready: ")
    );

    // 2. The local receiver: prints what Slack and the webhook would get.
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let received = Arc::new(AtomicUsize::new(0));
    {
        let received = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                receive(stream, &received);
            }
        });
    }
    println!("▶ local receiver on 127.0.0.1:{port} (/slack and /webhook)");

    // 3. The agent on the embedded store.
    let db = format!("sqlite:{}", dir.join("kijo.db").display());
    let slack = format!("http://127.0.0.1:{port}/slack");
    let webhook = format!("http://127.0.0.1:{port}/webhook");
    let mut agent = Command::new(built("kijo-agent")?)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KIJO_DATABASE_URL", &db)
        .env("KIJO_KUBECONFIG", &kubeconfig)
        .env("KIJO_CLUSTER_NAME", "demo")
        .env("KIJO_POLL_INTERVAL", "1s")
        .env("KIJO_NOTIFY_SEVERITY", "HIGH")
        .env("KIJO_NOTIFY_SLACK", &slack)
        .env("KIJO_NOTIFY_WEBHOOK", &webhook)
        .env(
            "KIJO_DETAILS_URL",
            "https://kijo.example.com/clusters/{cluster}/namespaces/{namespace}",
        )
        .env("KIJO_HEALTH_ADDR", "127.0.0.1:0")
        .env("KIJO_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start kijo-agent: {e}"))?;
    let stderr = agent.stderr.take().expect("piped");
    cleanup.lock().unwrap().children.push(agent);
    let cycles = Arc::new(AtomicUsize::new(0));
    {
        let cycles = Arc::clone(&cycles);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("poll cycle finished") {
                    cycles.fetch_add(1, Ordering::SeqCst);
                } else if line.contains("\"level\":\"error\"")
                    || line.contains("\"level\":\"warn\"")
                {
                    eprintln!("  agent: {line}");
                }
            }
        });
    }
    println!("▶ kijo-agent: embedded store {db}, poll every 1s, notify at HIGH and above\n");

    let wait_cycles = |n: usize| -> Result<(), String> {
        let target = cycles.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while cycles.load(Ordering::SeqCst) < target {
            if Instant::now() > deadline {
                return Err("the agent stopped finishing poll cycles".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    // Both targets get each message.
    let wait_messages = |before: usize, n: usize| -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while received.load(Ordering::SeqCst) < before + 2 * n {
            if Instant::now() > deadline {
                return Err("the expected message did not arrive within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let the printing of both finish before the next heading.
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    };

    step("The first cycle records what already exists (the baseline): nothing is sent.");
    wait_cycles(2)?;
    println!("  (no message)\n");

    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
        dir: dir.clone(),
    };
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
    let n = received.load(Ordering::SeqCst);
    kubectl.patch_report(nginx, "2026-11-21T08:00:00Z", &vulns)?;
    kubectl.patch_report(worker, "2026-11-21T08:00:00Z", &worker_vulns)?;
    wait_messages(n, 1)?;
    // Should the two patches land in different cycles, the second message arrives now, not
    // during the next step.
    wait_cycles(2)?;

    step("The next scan no longer has CVE-2024-45491 → one \"fixed\" message.");
    let fixed: Value = take(&mut vulns, "CVE-2024-45491").ok_or("fixture changed")?;
    let n = received.load(Ordering::SeqCst);
    kubectl.patch_report(nginx, "2026-11-21T09:00:00Z", &vulns)?;
    wait_messages(n, 1)?;

    step("Trivy Operator's TTL deletes the report and rescans: same findings → no message.");
    kubectl.run(&[
        "delete",
        "vulnerabilityreport",
        "-n",
        "shop",
        "replicaset-web-7c9d8f6b5d-nginx",
    ])?;
    wait_cycles(2)?;
    let n = received.load(Ordering::SeqCst);
    kubectl.create_report(nginx, "2026-11-21T10:00:00Z", &vulns, None)?;
    wait_cycles(3)?;
    if received.load(Ordering::SeqCst) != n {
        return Err("a TTL rescan produced a message".into());
    }
    println!("  (no message: a deleted report is not a fix, an identical rescan is not news)\n");

    step("CVE-2024-45491 shows up again → one \"reintroduced\" message.");
    vulns.push(fixed);
    let n = received.load(Ordering::SeqCst);
    kubectl.patch_report(nginx, "2026-11-21T11:00:00Z", &vulns)?;
    wait_messages(n, 1)?;

    step(
        "A rollout: web moves to nginx:1.25.5 (new ReplicaSet, revision 4), which fixes CVE-2023-52425.",
    );
    take(&mut vulns, "CVE-2023-52425").ok_or("fixture changed")?;
    let n = received.load(Ordering::SeqCst);
    kubectl.rollout(nginx, "2026-11-21T12:00:00Z", &vulns)?;
    wait_messages(n, 1)?;

    println!(
        "✔ demo finished in {:.1}s: {} deliveries received; stopping the agent and the sandbox",
        started.elapsed().as_secs_f64(),
        received.load(Ordering::SeqCst)
    );
    Ok(())
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

struct Kubectl {
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run kubectl (is it on PATH?): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("  $ kubectl {}", shorten(&args.join(" ")));
        Ok(text)
    }

    fn patch_report(
        &self,
        fixture_name: &str,
        scanned_at: &str,
        vulns: &[Value],
    ) -> Result<(), String> {
        let f = fixture(fixture_name)?;
        let patch = json!({"report": {"updateTimestamp": scanned_at, "vulnerabilities": vulns}});
        self.run(&[
            "patch",
            "vulnerabilityreport",
            "-n",
            f["metadata"]["namespace"].as_str().unwrap_or_default(),
            f["metadata"]["name"].as_str().unwrap_or_default(),
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])
        .map(|_| ())
    }

    /// Creates the fixture report again (as Trivy Operator does after its TTL), optionally for
    /// another ReplicaSet (name, uid).
    fn create_report(
        &self,
        fixture_name: &str,
        scanned_at: &str,
        vulns: &[Value],
        replica_set: Option<(&str, &str)>,
    ) -> Result<(), String> {
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
        let path = self.dir.join("report.json");
        std::fs::write(&path, f.to_string()).map_err(|e| e.to_string())?;
        self.run(&["create", "-f", &path.display().to_string()])
            .map(|_| ())
    }

    fn rollout(&self, fixture_name: &str, scanned_at: &str, vulns: &[Value]) -> Result<(), String> {
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
        let path = self.dir.join("replicaset.json");
        std::fs::write(&path, replica_set.to_string()).map_err(|e| e.to_string())?;
        self.run(&["apply", "-f", &path.display().to_string()])?;
        self.create_report(fixture_name, scanned_at, vulns, Some((rs, uid)))
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 110 {
        format!("{}…", s.chars().take(110).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Reads one HTTP/1.1 request, answers 200 and prints the message as its target would show it.
fn receive(mut stream: TcpStream, received: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return;
    };
    let text = if path.starts_with("/slack") {
        let t = kijo_agent::notify::slack::to_terminal_text(&value);
        format!("  ┌─ Slack\n{}\n", indent(&t, "  │ "))
    } else {
        format!(
            "  ┌─ webhook\n{}\n",
            indent(&webhook_preview(value), "  │ ")
        )
    };
    print!("{text}");
    let _ = std::io::stdout().flush();
    received.fetch_add(1, Ordering::SeqCst);
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
