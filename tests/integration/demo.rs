//! The local demo (`examples/demo.rs`) end to end, both ways it changes the cluster: with the
//! machine's kubectl, and with a PATH that has no kubectl (the sandbox API path a fresh machine
//! takes). Each run asserts the headings, the printed kubectl commands and the messages.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use kijo_testkit::build;
use kijo_testkit::sandbox::kubectl_on_path;
use kijo_testkit::tempdir::TempDir;

/// `target/<profile>/examples/demo`, built once per test process (`cargo test` builds the
/// examples, `cargo test --test integration` alone does not); cargo returns at once when it is
/// up to date.
fn demo_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = build::cargo_build(&[
                "--example",
                "demo",
                "--example",
                "sandbox",
                "--bin",
                "kijo-agent",
            ]);
            let bin = build::profile_dir().join("examples").join("demo");
            assert!(
                bin.exists(),
                "{} missing after cargo build --example demo ({status:?})",
                bin.display()
            );
            bin
        })
        .clone()
}

/// Runs the demo with `path` as PATH; returns stdout after asserting success.
fn run_demo(path: &std::ffi::OsStr) -> String {
    let out = Command::new(demo_binary())
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What both ways print: every step, every change as a kubectl command, and the messages.
fn assert_story(out: &str) {
    for heading in [
        "▶ Kubernetes API sandbox with a small cluster: https://127.0.0.1:",
        "━━ The first cycle records what already exists",
        "━━ Two workloads in shop are rescanned with the same new critical CVE",
        "━━ libexpat1 is upgraded to 2.5.0-1+deb12u1: the next scan no longer has CVE-2024-45491",
        "━━ Trivy Operator's TTL deletes the report and rescans",
        "  (no message: a deleted report is not a fix, an identical rescan is not news)",
        "━━ CVE-2024-45491 shows up again",
        "━━ A rollout: web moves to nginx:1.25.5",
        "✔ demo finished in ",
    ] {
        assert!(out.contains(heading), "missing {heading:?} in:\n{out}");
    }
    for command in [
        "  $ kubectl patch vulnerabilityreport -n shop replicaset-web-7c9d8f6b5d-nginx --type=merge -p ",
        "  $ kubectl delete vulnerabilityreport -n shop replicaset-web-7c9d8f6b5d-nginx\n",
        "  $ kubectl create -f ",
        "  $ kubectl apply -f ",
    ] {
        assert!(out.contains(command), "missing {command:?} in:\n{out}");
    }
    // New, fixed, reintroduced, rollout: four messages, each to Slack and to the webhook (five
    // if the two first patches land in different poll cycles).
    let slack = out.matches("  ┌─ Slack\n").count();
    let webhook = out.matches("  ┌─ webhook\n").count();
    assert!(
        (4..=5).contains(&slack) && slack == webhook,
        "{slack} Slack and {webhook} webhook messages in:\n{out}"
    );
    // The webhook's event kinds, in order (a split first message repeats "detected").
    let mut events: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("  │   \"event\": \""))
        .map(|l| l.trim_end_matches("\","))
        .collect();
    events.dedup();
    assert_eq!(
        events,
        [
            "vulnerabilities_detected",
            "vulnerabilities_fixed",
            "vulnerabilities_reintroduced",
            "vulnerabilities_fixed"
        ],
        "{out}"
    );
    for cve in ["CVE-2099-0001", "CVE-2024-45491", "CVE-2023-52425"] {
        assert!(out.contains(cve), "no message names {cve}:\n{out}");
    }
    assert!(
        out.contains(&format!(": {} deliveries received", 2 * slack)),
        "delivery count in:\n{out}"
    );
}

#[test]
fn demo_runs_with_kubectl() {
    let kubectl = kubectl_on_path().expect("kubectl on PATH (the machine's /usr/bin/kubectl)");
    let out = run_demo(&std::env::var_os("PATH").unwrap_or_default());
    assert_story(&out);
    assert!(
        out.contains(&format!("▶ changes are made with {}", kubectl.display())),
        "{out}"
    );
    assert!(
        !out.contains("↳ sent as"),
        "kubectl path used the API:\n{out}"
    );
}

#[test]
fn demo_runs_without_kubectl_through_the_sandbox_api() {
    // A PATH with nothing on it: no kubectl (the demo starts everything by absolute path).
    let empty = TempDir::new("kijo-demo-path");
    let out = run_demo(empty.path().as_os_str());
    assert_story(&out);
    assert!(out.contains("▶ kubectl is not on PATH:"), "{out}");
    for request in [
        "    ↳ sent as PATCH /apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports/replicaset-web-7c9d8f6b5d-nginx\n",
        "    ↳ sent as DELETE /apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports/replicaset-web-7c9d8f6b5d-nginx\n",
        "    ↳ sent as POST /apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports\n",
        "    ↳ sent as POST /apis/apps/v1/namespaces/shop/replicasets\n",
    ] {
        assert!(out.contains(request), "missing {request:?} in:\n{out}");
    }
    // Every change printed its kubectl command and the request it stood for.
    assert_eq!(
        out.matches("  $ kubectl ").count(),
        out.matches("    ↳ sent as ").count(),
        "{out}"
    );
}

#[test]
fn interrupted_demo_stops_everything_and_removes_its_directory() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(demo_binary())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut store = String::new();
    let mut line = String::new();
    while !line.starts_with("━━ The first cycle") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).expect("demo stdout") > 0,
            "the demo ended before its first step"
        );
        if let Some(rest) = line.strip_prefix("▶ kijo-agent: embedded store sqlite:") {
            store = rest.split(',').next().unwrap_or_default().to_owned();
        }
    }
    let dir = std::path::Path::new(&store)
        .parent()
        .expect("the store lies in the demo's directory")
        .to_path_buf();
    assert!(dir.is_dir(), "{}", dir.display());
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = child.wait_with_output().expect("demo exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("demo interrupted; everything stopped and removed"),
        "{stderr}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    // The sandbox (its command line names the directory) and the agent (its environment does)
    // are gone.
    let needle = dir.display().to_string();
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            ["cmdline", "environ"].iter().any(|f| {
                std::fs::read(e.path().join(f))
                    .is_ok_and(|b| String::from_utf8_lossy(&b).contains(&needle))
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        survivors.is_empty(),
        "processes of the demo still run: {survivors:?}"
    );
}
