//! Benchmark (not a test): the first sync of `--synthetic 3000:150` into a fresh PostgreSQL
//! database with the release agent (`--once`), then a cycle in which nothing changed. Prints
//! wall time and peak RSS of each run and the rows each run wrote.
//!
//! `just bench-lifecycle` or
//! `cargo build --release --bin kijo-agent --example sandbox --example bench_lifecycle && target/release/examples/bench_lifecycle [--synthetic 3000:150] [--runs N] [--baseline PATH] [--agent PATH]`
//!
//! `--baseline PATH` runs another agent binary (an earlier commit's release build) against the
//! same sandbox, alternating with this one, and prints both side by side: one run compares like
//! with like on a machine whose load changes. `--runs N` repeats each pair N times and prints
//! the median and the worst of each number, because peak RSS of a multi-threaded process is not
//! the same from run to run. `--agent PATH` measures another build as "this" one instead of
//! `target/release/kijo-agent`: the static musl binary that the image ships has its own
//! allocator, and so its own memory profile.
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
    /// User plus system CPU time: unlike wall time, it hardly moves with the machine's load.
    cpu: Duration,
    summary: String,
}

/// Runs `kijo-agent --once` under `/usr/bin/time -f %M`.
fn run_agent(agent: &Path, kubeconfig: &Path, db_url: &str) -> RunStats {
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "peak_rss_kib=%M cpu_s=%U+%S"])
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
    let timing = err
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kib="))
        .unwrap_or("");
    let (rss, cpu) = timing.split_once(" cpu_s=").unwrap_or((timing, "0+0"));
    let peak_rss_kib = rss.trim().parse().unwrap_or(0);
    let cpu = cpu
        .trim()
        .split('+')
        .filter_map(|t| t.parse::<f64>().ok())
        .sum::<f64>();
    let cpu = Duration::from_secs_f64(cpu);
    let summary = err
        .lines()
        .find(|l| l.contains("poll cycle finished"))
        .unwrap_or("")
        .to_owned();
    RunStats {
        wall,
        peak_rss_kib,
        cpu,
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

/// One agent binary's numbers: a first sync and a no-change cycle per run.
struct Series {
    label: &'static str,
    first: Vec<RunStats>,
    second: Vec<RunStats>,
    rows_first: Vec<i64>,
    rows_second: Vec<i64>,
}

/// A first sync into a fresh database, then a cycle in which nothing changed.
fn run_pair(agent: &Path, kubeconfig: &Path, admin: &mut postgres::Client, series: &mut Series) {
    let db = format!("kijo_bench_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable");
    let first = run_agent(agent, kubeconfig, &url);
    let after_first = settled_rows(&db);
    let second = run_agent(agent, kubeconfig, &url);
    let after_second = settled_rows(&db);
    println!(
        "{:<9} first sync:      wall {:>7.2} s   cpu {:>6.2} s   peak RSS {:>6.1} MiB   rows written {:>8}",
        series.label,
        first.wall.as_secs_f64(),
        first.cpu.as_secs_f64(),
        mib(first.peak_rss_kib),
        after_first
    );
    println!("            {}", first.summary);
    println!(
        "{:<9} no-change cycle: wall {:>7.2} s   cpu {:>6.2} s   peak RSS {:>6.1} MiB   rows written {:>8}",
        series.label,
        second.wall.as_secs_f64(),
        second.cpu.as_secs_f64(),
        mib(second.peak_rss_kib),
        after_second - after_first
    );
    println!("            {}", second.summary);
    series.first.push(first);
    series.second.push(second);
    series.rows_first.push(after_first);
    series.rows_second.push(after_second - after_first);
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Median and maximum (the upper median for an even count).
fn median_max<T: Copy + PartialOrd>(mut v: Vec<T>) -> (T, T) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    (v[v.len() / 2], v[v.len() - 1])
}

/// The medians and maxima of one kind of run.
#[derive(Clone, Copy)]
struct Summary {
    wall_max: f64,
    cpu_med: f64,
    rss_med: f64,
    rss_max: f64,
}

fn summary_line(name: &str, runs: &[RunStats]) -> Summary {
    let (wall_med, wall_max) = median_max(runs.iter().map(|r| r.wall.as_secs_f64()).collect());
    let (cpu_med, cpu_max) = median_max(runs.iter().map(|r| r.cpu.as_secs_f64()).collect());
    let (rss_med, rss_max) = median_max(runs.iter().map(|r| mib(r.peak_rss_kib)).collect());
    println!(
        "  {name:<16} wall median {wall_med:>6.2} s  max {wall_max:>6.2} s   cpu median {cpu_med:>6.2} s  max {cpu_max:>6.2} s   peak RSS median {rss_med:>6.1} MiB  max {rss_max:>6.1} MiB"
    );
    Summary {
        wall_max,
        cpu_med,
        rss_med,
        rss_max,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut synthetic = "3000:150".to_string();
    let mut runs = 1usize;
    let mut baseline: Option<std::path::PathBuf> = None;
    let mut agent: Option<std::path::PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--synthetic" => synthetic = args.next().expect("--synthetic W:V"),
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--runs N (N >= 1)")
            }
            "--baseline" => baseline = Some(args.next().expect("--baseline PATH").into()),
            "--agent" => agent = Some(args.next().expect("--agent PATH").into()),
            other => panic!(
                "unknown argument {other}; usage: bench_lifecycle [--synthetic W:V] [--runs N] [--baseline PATH] [--agent PATH]"
            ),
        }
    }
    let agent_bin = agent.unwrap_or_else(kijo_testkit::build::agent_binary);
    assert!(
        agent_bin.exists(),
        "{} missing: run `just bench-lifecycle` (or give --agent an existing build)",
        agent_bin.display()
    );
    if let Some(b) = &baseline {
        assert!(b.exists(), "--baseline {}: no such file", b.display());
    }
    let sandbox = Sandbox::start(&["--synthetic", &synthetic]);
    let kubeconfig = sandbox.kubeconfig.clone();

    let existing = count_reports(&kubeconfig);
    assert!(
        existing > 0,
        "the sandbox generated no reports for --synthetic {synthetic}"
    );
    println!("sandbox holds {existing} vulnerability reports");
    // With --agent and --baseline both given, the labels alone no longer say which build is which.
    println!("this:     {}", agent_bin.display());
    if let Some(b) = &baseline {
        println!("baseline: {}", b.display());
    }

    let mut admin = postgres::Client::connect(ADMIN_URL, postgres::NoTls)
        .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, database test)");
    let new_series = |label| Series {
        label,
        first: Vec::new(),
        second: Vec::new(),
        rows_first: Vec::new(),
        rows_second: Vec::new(),
    };
    let mut this = new_series("this");
    let mut base = new_series("baseline");
    for i in 0..runs {
        if runs > 1 {
            println!("run {} of {runs}", i + 1);
        }
        run_pair(&agent_bin, &kubeconfig, &mut admin, &mut this);
        if let Some(b) = &baseline {
            run_pair(b, &kubeconfig, &mut admin, &mut base);
        }
    }

    println!("\nsummary over {runs} run(s):");
    let mut results = Vec::new();
    for s in [&this, &base] {
        if s.first.is_empty() {
            continue;
        }
        println!("{}:", s.label);
        let first = summary_line("first sync", &s.first);
        let second = summary_line("no-change cycle", &s.second);
        println!(
            "  rows written     first sync {}  no-change cycle {}",
            median_max(s.rows_first.clone()).0,
            median_max(s.rows_second.clone()).0
        );
        results.push((first, second));
    }
    if let [(tf, ts), (bf, bs)] = results[..] {
        let pct = |a: f64, b: f64| (a / b - 1.0) * 100.0;
        println!(
            "this vs baseline: first sync peak RSS median {:+.1} %, max {:+.1} %, cpu median {:+.1} %; no-change cycle peak RSS median {:+.1} %, max {:+.1} %, cpu median {:+.1} %",
            pct(tf.rss_med, bf.rss_med),
            pct(tf.rss_max, bf.rss_max),
            pct(tf.cpu_med, bf.cpu_med),
            pct(ts.rss_med, bs.rss_med),
            pct(ts.rss_max, bs.rss_max),
            pct(ts.cpu_med, bs.cpu_med),
        );
    }
    let (first, second) = results[0];
    println!(
        "targets: first sync <= 60 s and <= 64 MiB; no-change cycle <= 2 s  ->  {}",
        if first.wall_max <= 60.0 && first.rss_max <= 64.0 && second.wall_max <= 2.0 {
            "met"
        } else {
            "MISSED"
        }
    );

    drop(sandbox);
}
