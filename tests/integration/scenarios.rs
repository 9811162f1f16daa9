//! The declarative lifecycle scenarios: every `tests/scenarios/*.yaml` (docs/scenarios.md) run
//! against a fresh sandbox and a fresh store with the real binary, once on SQLite and once on
//! PostgreSQL. Every failure of every file is collected (file, step, expected and received
//! messages) and reported together at the end. `KIJO_SCENARIO=<name>` runs one file.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::support::lifecycle::Db;
use crate::support::scenario::{parse, run_file};

/// The two databases' tests take turns: each scenario starts a sandbox and many agents, and the
/// machine is small.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

/// The scenario files, sorted; only `KIJO_SCENARIO` (a file name, `.yaml` optional) when set.
fn files() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/scenarios")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    all.sort();
    if let Ok(only) = std::env::var("KIJO_SCENARIO") {
        let only = only.trim_end_matches(".yaml").to_owned();
        all.retain(|p| p.file_stem().is_some_and(|s| s.to_string_lossy() == only));
        assert!(
            !all.is_empty(),
            "KIJO_SCENARIO={only}: no tests/scenarios/{only}.yaml"
        );
    }
    all
}

fn run_all(db: fn(&str) -> Db) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let files = files();
    let mut failed = Vec::new();
    let mut failures = Vec::new();
    let mut which = "";
    for file in &files {
        let db = db("scen");
        which = db.name();
        let started = std::time::Instant::now();
        let f = run_file(file, &db);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        eprintln!(
            "scenario {name} on {which}: {} ({:.1}s)",
            if f.is_empty() { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !f.is_empty() {
            failed.push(name);
            failures.extend(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed on {which}: {}\n\n{}",
        failed.len(),
        files.len(),
        failed.join(", "),
        failures.join("\n\n")
    );
}

#[test]
fn scenarios_on_sqlite() {
    run_all(Db::sqlite);
}

#[test]
fn scenarios_on_postgres() {
    run_all(Db::postgres);
}

/// A typo in a scenario is an error naming the file, the step and the field.
#[test]
fn a_misspelt_field_names_the_file_and_step() {
    let text = "steps:\n  - cycle: {expect: []}\n  - workload:\n      deployment: {name: web, containers: {app: nginx}, revison: 2}\n";
    let err = parse("typo.yaml", text).expect_err("a typo is an error");
    assert!(
        err.starts_with("typo.yaml: step 1 (workload): unknown field `revison`"),
        "{err}"
    );
    let err = parse("top.yaml", "stesp: []\n").expect_err("a typo is an error");
    assert!(err.starts_with("top.yaml: "), "{err}");
    assert!(err.contains("stesp"), "{err}");
}

/// Every file in tests/scenarios parses (a quick check that needs no sandbox).
#[test]
fn every_scenario_file_parses() {
    for file in files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if let Err(e) = parse(&name, &text) {
            panic!("{e}");
        }
    }
}
