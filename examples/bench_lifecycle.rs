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
//! read after the agent's session ended and flushed them.

#[path = "bench_support/mod.rs"]
mod bench_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kijo_testkit::sandbox::Sandbox;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

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

use bench_support::count_reports;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut synthetic = "3000:150".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--synthetic" => synthetic = args.next().expect("--synthetic W:V"),
            other => panic!("unknown argument {other}; usage: bench_lifecycle [--synthetic W:V]"),
        }
    }
    let agent_bin = kijo_testkit::build::agent_binary();
    assert!(
        agent_bin.exists(),
        "{} missing: run `just bench-lifecycle`",
        agent_bin.display()
    );
    let sandbox = Sandbox::start(&["--synthetic", &synthetic]);
    let kubeconfig = sandbox.kubeconfig.clone();

    let existing = count_reports(&kubeconfig);
    assert!(
        existing > 0,
        "the sandbox generated no reports for --synthetic {synthetic}"
    );
    println!("sandbox holds {existing} vulnerability reports");

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

    drop(sandbox);
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}
