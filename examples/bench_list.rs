//! Benchmark (not a test): list every VulnerabilityReport of a synthetic sandbox cluster with
//! the agent's client (streamed, paginated, fully parsed into `trivy::Report`) and with
//! `kubectl get vulnerabilityreports -A -o json`, and print wall time and peak RSS of both.
//!
//! `just bench-list` or
//! `cargo build --release --example sandbox --example bench_list && target/release/examples/bench_list [--synthetic 3000:150] [--page-size 100]`
//!
//! Each side runs in its own process so peak RSS is measured alone: the agent side re-runs
//! this binary with `--agent-only` and reads its own `VmHWM`; kubectl runs under
//! `/usr/bin/time -f %M`. The sandbox is started by the shared launcher (`kijo_testkit`).

#[path = "bench_support/mod.rs"]
mod bench_support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kijo_testkit::sandbox::Sandbox;

use kijo_agent::kube::{Client, KubeOptions, ListEvent};
use kijo_agent::trivy::ReportKind;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn agent_only(kubeconfig: &Path, page_size: u32) {
    let baseline = vm_hwm_kib();
    let start = Instant::now();
    let client = Client::connect(&KubeOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        page_size,
        ..KubeOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (mut reports, mut findings, mut malformed) = (0u64, 0u64, 0u64);
    let stats = client
        .list_reports(ReportKind::VulnerabilityReport, &[], &mut |ev| match ev {
            ListEvent::Item(Ok(r)) => {
                reports += 1;
                findings += r.findings.len() as u64;
            }
            ListEvent::Item(Err(_)) => malformed += 1,
            ListEvent::Restart => {
                reports = 0;
                findings = 0;
                malformed = 0;
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let wall = start.elapsed();
    println!(
        "{{\"wall_ms\":{},\"hwm_kib\":{},\"baseline_kib\":{},\"reports\":{reports},\"findings\":{findings},\"malformed\":{malformed},\"pages\":{}}}",
        wall.as_millis(),
        vm_hwm_kib(),
        baseline,
        stats.pages
    );
}

use bench_support::count_reports;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut synthetic = "3000:150".to_string();
    let mut page_size = 100u32;
    let mut agent_kubeconfig: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--synthetic" => synthetic = args.next().expect("--synthetic W:V"),
            "--page-size" => {
                page_size = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--page-size N")
            }
            "--agent-only" => {
                agent_kubeconfig = Some(args.next().expect("--agent-only KUBECONFIG").into())
            }
            other => panic!(
                "unknown argument {other}; usage: bench_list [--synthetic W:V] [--page-size N]"
            ),
        }
    }
    if let Some(kc) = agent_kubeconfig {
        agent_only(&kc, page_size);
        return;
    }

    let exe = std::env::current_exe().expect("current exe");
    let started = Instant::now();
    let sandbox = Sandbox::start(&["--synthetic", &synthetic]);
    let kubeconfig = sandbox.kubeconfig.clone();
    println!(
        "sandbox --synthetic {synthetic} ready in {:.1}s at {}",
        started.elapsed().as_secs_f64(),
        sandbox.url
    );

    let existing = count_reports(&kubeconfig);
    assert!(
        existing > 0,
        "the sandbox generated no reports for --synthetic {synthetic}"
    );
    println!("sandbox holds {existing} vulnerability reports");

    // Agent.
    let out = Command::new(&exe)
        .args(["--agent-only"])
        .arg(&kubeconfig)
        .args(["--page-size", &page_size.to_string()])
        .output()
        .expect("run agent side");
    assert!(
        out.status.success(),
        "agent side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent: serde_json::Value = serde_json::from_slice(&out.stdout).expect("agent JSON");

    // kubectl, under /usr/bin/time for its peak RSS.
    let time_file = sandbox.dir.path().join("time");
    let start = Instant::now();
    let mut kubectl = sandbox
        .kubectl_command_at(Path::new("/usr/bin/time"), &["-f", "%e %M", "-o"])
        .arg(&time_file)
        .args([
            "/usr/bin/kubectl",
            "get",
            "vulnerabilityreports",
            "-A",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run kubectl under /usr/bin/time");
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut stdout = kubectl.stdout.take().unwrap();
    loop {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes += n as u64,
        }
    }
    let status = kubectl.wait().unwrap();
    let kubectl_wall = start.elapsed();
    assert!(status.success(), "kubectl failed");
    let time = std::fs::read_to_string(&time_file).unwrap();
    let kubectl_rss_kib: u64 = time
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);

    drop(sandbox);

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "reports: {}, findings: {}, malformed: {}, agent pages: {} (page size {page_size}); kubectl JSON output: {:.1} MiB",
        agent["reports"],
        agent["findings"],
        agent["malformed"],
        agent["pages"],
        bytes as f64 / 1048576.0
    );
    println!("{:<44} {:>10} {:>14}", "", "wall (s)", "peak RSS (MiB)");
    println!(
        "{:<44} {:>10.2} {:>14.1}",
        "kijo-agent list + parse (streamed)",
        agent["wall_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
        mib(agent["hwm_kib"].as_u64().unwrap_or(0))
    );
    println!(
        "{:<44} {:>10.2} {:>14.1}",
        "kubectl get vulnerabilityreports -A -o json",
        kubectl_wall.as_secs_f64(),
        mib(kubectl_rss_kib)
    );
    println!(
        "(agent process baseline before listing: {:.1} MiB)",
        mib(agent["baseline_kib"].as_u64().unwrap_or(0))
    );
}
