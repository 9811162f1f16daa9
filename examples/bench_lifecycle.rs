//! Benchmark (not a test): the first sync of `--synthetic 3000:150` into a fresh PostgreSQL
//! database with the release agent (`--once`), then a cycle in which nothing changed. Prints
//! wall time and peak RSS of each run and the rows each run wrote.
//!
//! `just bench-lifecycle` or
//! `cargo build --release --bin kijo-agent --example sandbox --example bench_lifecycle && target/release/examples/bench_lifecycle [--synthetic 3000:150]`
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres, database test); creates and
//! drops its own database. Peak RSS comes from `/usr/bin/time -f %M` around the agent. Rows
//! written are PostgreSQL's own counters (`pg_stat_user_tables`, inserted + updated + deleted),
//! read after the agent's session ended and flushed them. When the sandbox build generates no
//! synthetic reports, the same shape (Deployment → ReplicaSet → report, 20 namespaces) is
//! created over the API first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kijo_agent::kube::{Client, KubeOptions, ListEvent};
use kijo_agent::trivy::ReportKind;
use serde_json::{Value, json};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn client(kubeconfig: &Path) -> Client {
    Client::connect(&KubeOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        ..KubeOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn count_reports(kubeconfig: &Path) -> u64 {
    let mut n = 0;
    client(kubeconfig)
        .list_metadata(ReportKind::VulnerabilityReport, &[], &mut |ev| {
            if let ListEvent::Item(_) = ev {
                n += 1;
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    n
}

const PACKAGES: &[&str] = &[
    "openssl",
    "libssl3",
    "zlib1g",
    "libc6",
    "curl",
    "libcurl4",
    "libxml2",
    "busybox",
    "org.apache.logging.log4j:log4j-core",
    "golang.org/x/net",
    "golang.org/x/crypto",
    "requests",
    "urllib3",
    "lodash",
    "glibc",
    "perl-base",
];
const SEVERITIES: &[&str] = &["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"];

fn synthetic_report(ns: &str, i: usize, rs: &str, rs_uid: &str, vulns: usize) -> Value {
    let items: Vec<Value> = (0..vulns)
        .map(|j| {
            let n = (i * 7919 + j * 104_729) % 60_000;
            let pkg = PACKAGES[(i + j) % PACKAGES.len()];
            json!({
                "vulnerabilityID": format!("CVE-20{:02}-{:05}", 18 + (n % 8), n),
                "resource": pkg,
                "installedVersion": format!("{}.{}.{}-{}", 1 + n % 3, n % 17, n % 29, n % 5),
                "fixedVersion": if n.is_multiple_of(3) { String::new() } else { format!("{}.{}.{}", 1 + n % 3, n % 17, 1 + n % 29) },
                "severity": SEVERITIES[n % SEVERITIES.len()],
                "title": format!("{pkg}: improper input validation allows a remote attacker to cause a denial of service (variant {n})"),
                "primaryLink": format!("https://avd.aquasec.com/nvd/cve-20{:02}-{:05}", 18 + (n % 8), n),
                "links": [], "score": (n % 100) as f64 / 10.0, "target": "",
                "publishedDate": "2024-03-12T15:15:46Z", "lastModifiedDate": "2025-01-08T09:01:33Z",
            })
        })
        .collect();
    json!({
        "apiVersion": "aquasecurity.github.io/v1alpha1", "kind": "VulnerabilityReport",
        "metadata": {
            "name": format!("replicaset-{rs}-main"), "namespace": ns,
            "labels": {
                "trivy-operator.resource.kind": "ReplicaSet", "trivy-operator.resource.name": rs,
                "trivy-operator.resource.namespace": ns, "trivy-operator.container.name": "main",
                "app.kubernetes.io/managed-by": "trivy-operator"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                 "uid": rs_uid, "controller": true}]
        },
        "report": {
            "updateTimestamp": "2026-11-20T06:00:12Z",
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.58.1"},
            "registry": {"server": "ghcr.io"},
            "artifact": {"repository": format!("acme/service-{}", i % 400), "tag": "1.4.2",
                         "digest": "sha256:4c1e997385b8fb4ad4d1d3c7e5e3d4b1b54d0a3d1c1d6f0d2b4e8e7f9a0b1c2d"},
            "summary": {"criticalCount": 0, "highCount": 0, "mediumCount": 0, "lowCount": 0, "unknownCount": 0},
            "vulnerabilities": items
        }
    })
}

/// Namespaces, then per workload a Deployment, its ReplicaSet and one report, on two threads.
fn populate(kubeconfig: &Path, workloads: usize, vulns: usize) {
    use serde::de::IgnoredAny;
    let c = client(kubeconfig);
    let namespaces: Vec<String> = (0..20).map(|i| format!("team-{i}")).collect();
    for ns in &namespaces {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let _ = c.write_json::<IgnoredAny>("POST", "/api/v1/namespaces", &body);
    }
    std::thread::scope(|s| {
        for t in 0..2 {
            let c = c.clone();
            let namespaces = &namespaces;
            s.spawn(move || {
                for i in (t..workloads).step_by(2) {
                    let ns = &namespaces[i % namespaces.len()];
                    let name = format!("app-{i}");
                    let d: Value = c
                        .write_json(
                            "POST",
                            &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
                            &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                    "metadata": {"name": name, "namespace": ns},
                                    "spec": {"replicas": 1}}),
                        )
                        .unwrap_or_else(|e| panic!("{e}"));
                    let rs = format!("{name}-6d4cf56db6");
                    let r: Value = c
                        .write_json(
                            "POST",
                            &format!("/apis/apps/v1/namespaces/{ns}/replicasets"),
                            &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                    "metadata": {"name": rs, "namespace": ns,
                                        "annotations": {"deployment.kubernetes.io/revision": "1"},
                                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": name, "uid": d["metadata"]["uid"], "controller": true}]},
                                    "spec": {"replicas": 1}}),
                        )
                        .unwrap_or_else(|e| panic!("{e}"));
                    let uid = r["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
                    c.write_json::<IgnoredAny>(
                        "POST",
                        &format!("/apis/aquasecurity.github.io/v1alpha1/namespaces/{ns}/vulnerabilityreports"),
                        &synthetic_report(ns, i, &rs, &uid, vulns),
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                }
            });
        }
    });
}

struct RunStats {
    wall: Duration,
    peak_rss_kib: u64,
    summary: String,
}

/// Runs `kijo-agent --once` under `/usr/bin/time -f %M`.
fn run_agent(agent: &Path, kubeconfig: &Path, db_url: &str) -> RunStats {
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "peak_rss_kib=%M"])
        .arg(agent)
        .arg("--once")
        .env_clear()
        .env("KIJO_DATABASE_URL", db_url)
        .env("KIJO_CLUSTER_NAME", "bench")
        .env("KIJO_KUBECONFIG", kubeconfig)
        .env("KIJO_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .output()
        .expect("run /usr/bin/time kijo-agent --once");
    let wall = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kijo-agent --once failed:\n{err}");
    let peak_rss_kib = err
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let summary = err
        .lines()
        .find(|l| l.contains("poll cycle finished"))
        .unwrap_or("")
        .to_owned();
    RunStats {
        wall,
        peak_rss_kib,
        summary,
    }
}

/// Rows inserted, updated and deleted in the database's tables so far.
fn rows_written(db: &str) -> i64 {
    let mut c = postgres::Client::connect(
        &format!("postgres://postgres@127.0.0.1:5432/{db}"),
        postgres::NoTls,
    )
    .expect("connect to the bench database");
    c.batch_execute("SELECT pg_stat_clear_snapshot()").unwrap();
    c.query_one(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables",
        &[],
    )
    .unwrap()
    .get(0)
}

/// The agent's backend flushes its statistics when its session ends; wait until the counter
/// stops moving.
fn settled_rows(db: &str) -> i64 {
    let mut last = rows_written(db);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = rows_written(db);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut synthetic = "3000:150".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--synthetic" => synthetic = args.next().expect("--synthetic W:V"),
            other => panic!("unknown argument {other}; usage: bench_lifecycle [--synthetic W:V]"),
        }
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("examples dir").to_path_buf();
    let sandbox_bin = dir.join("sandbox");
    let agent_bin: PathBuf = dir.parent().expect("target/release").join("kijo-agent");
    for bin in [&sandbox_bin, &agent_bin] {
        assert!(
            bin.exists(),
            "{} missing: run `just bench-lifecycle`",
            bin.display()
        );
    }
    let tmp = std::env::temp_dir().join(format!("kijo-bench-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let kubeconfig = tmp.join("kubeconfig");

    let mut sandbox = Command::new(&sandbox_bin)
        .args(["--synthetic", &synthetic, "--kubeconfig"])
        .arg(&kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sandbox");
    let mut line = String::new();
    BufReader::new(sandbox.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("sandbox ready: "), "sandbox said {line:?}");

    let existing = count_reports(&kubeconfig);
    if existing == 0 {
        let (w, v) = synthetic
            .split_once(':')
            .map(|(w, v)| {
                let v = v.split(':').next().unwrap_or(v);
                (w.parse().expect("workloads"), v.parse().expect("vulns"))
            })
            .expect("--synthetic W:V");
        let t = Instant::now();
        populate(&kubeconfig, w, v);
        println!(
            "sandbox generated no reports; created {w} Deployments, ReplicaSets and reports with {v} findings each over the API in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    } else {
        println!("sandbox holds {existing} vulnerability reports");
    }

    let db = format!("kijo_bench_{}", std::process::id());
    let mut admin = postgres::Client::connect(ADMIN_URL, postgres::NoTls)
        .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, database test)");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable");

    let first = run_agent(&agent_bin, &kubeconfig, &url);
    let after_first = settled_rows(&db);
    let second = run_agent(&agent_bin, &kubeconfig, &url);
    let after_second = settled_rows(&db);

    println!(
        "first sync:        wall {:>7.2} s   peak RSS {:>6.1} MiB   rows written {:>8}",
        first.wall.as_secs_f64(),
        first.peak_rss_kib as f64 / 1024.0,
        after_first
    );
    println!("  {}", first.summary);
    println!(
        "no-change cycle:   wall {:>7.2} s   peak RSS {:>6.1} MiB   rows written {:>8}",
        second.wall.as_secs_f64(),
        second.peak_rss_kib as f64 / 1024.0,
        after_second - after_first
    );
    println!("  {}", second.summary);
    println!(
        "targets: first sync <= 60 s and <= 64 MiB; no-change cycle <= 2 s  ->  {}",
        if first.wall <= Duration::from_secs(60)
            && first.peak_rss_kib <= 64 * 1024
            && second.wall <= Duration::from_secs(2)
        {
            "met"
        } else {
            "MISSED"
        }
    );

    let _ = sandbox.kill();
    let _ = sandbox.wait();
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    let _ = std::fs::remove_dir_all(&tmp);
}
