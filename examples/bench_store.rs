//! Applies 1000 workloads × 150 findings into PostgreSQL and SQLite and prints the times.
//!
//! cargo run --release --example bench_store [-- WORKLOADS FINDINGS]
//! PostgreSQL: a database `kijo_bench_<pid>` is created on 127.0.0.1:5432 (user postgres) and
//! dropped afterwards. SQLite: a temporary file.

use std::time::Instant;

use jiff::Timestamp;
use kijo_agent::lifecycle::{AssetId, Finding, FindingKey, Observation};
use kijo_agent::severity::Severity;
use kijo_agent::store::{DatabaseTarget, ReportVersion, Store};

/// One workload's scan, built when needed so the benchmark's own data does not dominate RSS.
fn observation(w: usize, findings: usize, at: Timestamp, shift: usize) -> Observation {
    Observation {
        cluster: "bench".into(),
        asset: AssetId {
            namespace: format!("ns-{}", w % 20),
            workload_kind: "Deployment".into(),
            workload: format!("app-{w}"),
            container: "main".into(),
        },
        image: format!("registry.example/app-{w}:1.0@sha256:{w:064x}"),
        scanned_at: at,
        revision: None,
        findings: (shift..findings + shift)
            .map(|f| Finding {
                key: FindingKey {
                    vulnerability_id: format!("CVE-2026-{f:05}"),
                    package: format!("pkg-{}", f % 40),
                },
                package_path: String::new(),
                severity: [
                    Severity::Critical,
                    Severity::High,
                    Severity::Medium,
                    Severity::Low,
                ][f % 4],
                installed_version: "1.0.0".into(),
                fixed_version: "1.0.1".into(),
                title: format!(
                    "a vulnerability in pkg-{} that needs a title of some length",
                    f % 40
                ),
                link: format!("https://avd.aquasec.com/nvd/cve-2026-{f:05}"),
            })
            .collect(),
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn run(label: &str, target: &DatabaseTarget, workloads: usize, findings: usize) {
    let mut store = Store::open(target).expect("open store");
    let targets = vec!["slack".to_owned()];
    let t1: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let t2: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
    let phases = [
        ("first sync (baseline)", t1, 0, true, "1"),
        ("same scans again (stale)", t1, 0, false, "1"),
        (
            "newer scans, 1 finding changed per workload",
            t2,
            1,
            false,
            "2",
        ),
    ];
    for (name, at, shift, baseline, rv) in phases {
        let start = Instant::now();
        let (mut rows, mut events) = (0, 0);
        for i in 0..workloads {
            let o = &observation(i, findings, at, shift);
            let report = ReportVersion {
                uid: format!("uid-{i}"),
                resource_version: rv.into(),
            };
            let a = store
                .apply(o, Some(&report), baseline, &targets)
                .expect("apply");
            rows += a.rows_written;
            events += a.events.len();
        }
        println!(
            "{label:<10} {name:<45} {:>8.2} s  rows written {rows:>7}  events {events:>5}",
            start.elapsed().as_secs_f64()
        );
    }
    // what a no-change cycle costs: one report-version lookup per report
    let start = Instant::now();
    let mut unchanged = 0;
    for i in 0..workloads {
        if store
            .report_version("bench", &format!("uid-{i}"))
            .unwrap()
            .as_deref()
            == Some("2")
        {
            unchanged += 1;
        }
    }
    println!(
        "{label:<10} {:<45} {:>8.2} s  ({unchanged} reports skipped)",
        "no-change cycle (report_version lookups)",
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let workloads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let findings: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(150);
    println!("{workloads} workloads x {findings} findings");

    let db = format!("kijo_bench_{}", std::process::id());
    let mut admin =
        postgres::Client::connect("host=127.0.0.1 user=postgres dbname=test", postgres::NoTls)
            .expect("postgres at 127.0.0.1:5432");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let pg = DatabaseTarget::parse(&format!(
        "postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable"
    ))
    .unwrap();
    run("postgres", &pg, workloads, findings);
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .unwrap();

    let path = std::env::temp_dir().join(format!("{db}.db"));
    let lite = DatabaseTarget::parse(&format!("sqlite:{}", path.display())).unwrap();
    run("sqlite", &lite, workloads, findings);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("sqlite file size {:.1} MiB", size as f64 / 1048576.0);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    println!("peak RSS {} KiB", peak_rss_kib());
}
