//! Crash safety: an agent killed (SIGKILL) in the middle of a cycle, or losing PostgreSQL in the
//! middle of one, ends with the same state and events as an agent that was never interrupted.

use std::time::Duration;

use crate::support::agent::{Agent, run};
use crate::support::lifecycle::{Db, EventRow, populate, rescan_all, wait_for};
use crate::support::sandbox::Sandbox;

const CLUSTER: &str = "crash";
/// Reports and findings per report: enough that a cycle takes a while to write.
const REPORTS: usize = 300;
const VULNS: usize = 200;

fn env(sb: &Sandbox, db: &Db) -> Vec<(String, String)> {
    vec![
        ("KIJO_DATABASE_URL".into(), db.url()),
        ("KIJO_CLUSTER_NAME".into(), CLUSTER.into()),
        (
            "KIJO_KUBECONFIG".into(),
            sb.kubeconfig.display().to_string(),
        ),
        ("KIJO_HEALTH_ADDR".into(), "127.0.0.1:0".into()),
    ]
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn once(sb: &Sandbox, db: &Db) {
    let env = env(sb, db);
    let (status, _, err) = run(&as_refs(&env), &["--once"]);
    assert!(status.success(), "--once failed:\n{err}");
}

/// Starts `--once` and SIGKILLs it as soon as `table` holds at least `at_least` rows and (on
/// PostgreSQL) the agent is inside a transaction, i.e. while the cycle is still writing.
fn once_killed_when(sb: &Sandbox, db: &Db, table: &str, at_least: usize) {
    let env = env(sb, db);
    let mut agent = Agent::start(&as_refs(&env), &["--once"]);
    wait_for(
        &format!("{at_least} rows in {table}"),
        Duration::from_secs(300),
        || (db.count(table, CLUSTER) >= at_least && db.agent_in_transaction()).then_some(()),
    );
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(10));
    assert!(
        !agent
            .lines()
            .iter()
            .any(|l| l.contains("poll cycle finished")),
        "the agent was killed after its cycle ended; make the cycle bigger"
    );
}

fn ids(events: &[EventRow]) -> Vec<(String, String)> {
    let mut v: Vec<_> = events
        .iter()
        .map(|e| (e.event_id.clone(), e.short()))
        .collect();
    v.sort();
    v
}

fn sigkill_mid_cycle(db: Db) {
    let which = db.name();
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    populate(&sb, "shop", REPORTS, VULNS);
    let reference = Db::sqlite("crash-ref");

    // Killed during the baseline, restarted: the baseline resumes and still tells nobody.
    once_killed_when(&sb, &db, "scanned_containers", 10);
    let partial = db.count("scanned_containers", CLUSTER);
    assert!(
        partial < REPORTS,
        "{which}: killed mid-cycle ({partial} containers written)"
    );
    once(&sb, &db);
    once(&sb, &reference);
    assert!(
        db.events(CLUSTER).is_empty(),
        "{which}: a resumed baseline records no events"
    );

    // Killed while writing a rescan's changes (2 events per report), restarted.
    rescan_all(&sb, "shop", REPORTS);
    once_killed_when(&sb, &db, "lifecycle_events", 2);
    let partial = db.count("lifecycle_events", CLUSTER);
    assert!(
        partial < 2 * REPORTS,
        "{which}: killed mid-cycle ({partial} events written)"
    );
    assert_eq!(
        partial % 2,
        0,
        "{which}: each report's events commit together"
    );
    once(&sb, &db);
    once(&sb, &reference);

    let got = db.events(CLUSTER);
    assert_eq!(got.len(), 2 * REPORTS, "{which}");
    assert_eq!(
        ids(&got),
        ids(&reference.events(CLUSTER)),
        "{which}: events"
    );
    assert_eq!(
        normalized(&db),
        normalized(&reference),
        "{which}: finding rows"
    );
}

/// Finding rows with PostgreSQL's and SQLite's time spellings made equal.
fn normalized(db: &Db) -> Vec<Vec<String>> {
    db.findings(CLUSTER)
        .into_iter()
        .map(|mut row| {
            for cell in row.iter_mut().skip(10) {
                *cell = cell.replace('T', " ").trim_end_matches('Z').to_owned();
            }
            row
        })
        .collect()
}

#[test]
fn sigkill_mid_cycle_on_postgres() {
    sigkill_mid_cycle(Db::postgres("crash"));
}

#[test]
fn sigkill_mid_cycle_on_sqlite() {
    sigkill_mid_cycle(Db::sqlite("crash"));
}

#[test]
fn postgres_gone_mid_cycle_fails_cleanly_and_the_next_cycle_succeeds() {
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    populate(&sb, "shop", REPORTS, VULNS);
    let db = Db::postgres("gone");
    let Db::Pg(pg) = &db else { unreachable!() };
    let reference = Db::sqlite("gone-ref");
    once(&sb, &db);
    once(&sb, &reference);
    rescan_all(&sb, "shop", REPORTS);

    let mut env = env(&sb, &db);
    env.push(("KIJO_POLL_INTERVAL".into(), "1s".into()));
    let agent = Agent::start(&as_refs(&env), &[]);
    wait_for("events being written", Duration::from_secs(300), || {
        (db.count("lifecycle_events", CLUSTER) >= 2).then_some(())
    });
    pg.take_away();
    let failed = agent.wait_for_line("'poll cycle failed'", Duration::from_secs(60), |l| {
        l.contains("poll cycle failed")
    });
    let lines = agent.lines();
    let failed_at = lines.iter().position(|l| *l == failed).unwrap();
    assert!(
        !lines[..failed_at]
            .iter()
            .any(|l| l.contains("poll cycle finished")),
        "the database went away after the cycle had finished; make it bigger"
    );
    pg.bring_back();
    agent.wait_for_line(
        "'poll cycle finished' after the failure",
        Duration::from_secs(120),
        |l| l.contains("poll cycle finished"),
    );
    once(&sb, &reference);

    let got = db.events(CLUSTER);
    assert_eq!(got.len(), 2 * REPORTS, "no event lost, none doubled");
    assert_eq!(ids(&got), ids(&reference.events(CLUSTER)));
    assert_eq!(normalized(&db), normalized(&reference));
}
