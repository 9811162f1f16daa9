//! A hung PostgreSQL (it accepts connections and bytes but never answers: a storage stall)
//! must make the agent unready within about 2 s, and SIGTERM must still end it cleanly within
//! 10 s, with no unit of work half-applied.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kijo_testkit::tcp_proxy::TcpProxy;

use crate::support::agent::{Agent, get, run};
use crate::support::lifecycle::{Db, EventRow, populate, rescan_all, wait_for};
use crate::support::pg;
use crate::support::sandbox::Sandbox;

const CLUSTER: &str = "hung";
/// Enough that a cycle writing the rescan takes a while, so the stall can hit it mid-way.
const REPORTS: usize = 200;
const VULNS: usize = 100;

fn env(sb: &Sandbox, url: String) -> Vec<(String, String)> {
    vec![
        ("KIJO_DATABASE_URL".into(), url),
        ("KIJO_CLUSTER_NAME".into(), CLUSTER.into()),
        (
            "KIJO_KUBECONFIG".into(),
            sb.kubeconfig.display().to_string(),
        ),
        ("KIJO_HEALTH_ADDR".into(), "127.0.0.1:0".into()),
        ("KIJO_POLL_INTERVAL".into(), "1s".into()),
    ]
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn once(sb: &Sandbox, url: String) {
    let env = env(sb, url);
    let (status, _, err) = run(&as_refs(&env), &["--once"]);
    assert!(status.success(), "--once failed:\n{err}");
}

fn ready(addr: SocketAddr) -> u16 {
    get(addr, "/health/ready").status
}

fn ids(events: &[EventRow]) -> Vec<(String, String)> {
    let mut v: Vec<_> = events
        .iter()
        .map(|e| (e.event_id.clone(), e.short()))
        .collect();
    v.sort();
    v
}

/// Sessions the agent still has on the database (through the proxy or not).
fn agent_sessions(db: &str) -> i64 {
    pg::admin()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1
               AND application_name = 'kijo-agent'",
            &[&db],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_hung_postgres_makes_the_agent_unready_and_shutdown_stays_clean() {
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    populate(&sb, "shop", REPORTS, VULNS);
    let db = Db::postgres("hung");
    let Db::Pg(test_db) = &db else { unreachable!() };
    let reference = Db::sqlite("hung-ref");
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap());
    let proxied = format!(
        "postgres://postgres@{}/{}?sslmode=disable",
        proxy.addr(),
        test_db.name
    );

    let env = env(&sb, proxied);
    let mut agent = Agent::start(&as_refs(&env), &[]);
    let addr = agent.health_addr();
    agent.wait_for_line("'poll cycle finished'", Duration::from_secs(300), |l| {
        l.contains("poll cycle finished")
    });
    wait_for("ready before the stall", Duration::from_secs(20), || {
        (ready(addr) == 200).then_some(())
    });
    once(&sb, reference.url());

    // The rescan gives the next cycles 2 events per report to write; stall the store while one
    // of them is inside its transaction.
    rescan_all(&sb, "shop", REPORTS);
    wait_for(
        "the agent writing the rescan",
        Duration::from_secs(300),
        || {
            let written = db.count("lifecycle_events", CLUSTER);
            (written < 2 * REPORTS && db.agent_in_transaction()).then_some(())
        },
    );
    proxy.stop_forwarding();
    let stalled = Instant::now();
    assert!(
        db.count("lifecycle_events", CLUSTER) < 2 * REPORTS,
        "the rescan was fully written before the stall; make it bigger"
    );

    // Readiness: pings every second, each allowed 1 s, so about 2 s at worst.
    wait_for("/health/ready 503", Duration::from_secs(10), || {
        (ready(addr) == 503).then_some(())
    });
    let unready_after = stalled.elapsed();
    eprintln!("unready {unready_after:?} after the stall");
    assert!(
        unready_after < Duration::from_secs(3),
        "readiness took {unready_after:?} to notice the hung store"
    );
    assert_eq!(
        get(addr, "/health/live").status,
        200,
        "a hung store is not a reason to restart the agent"
    );

    // Shutdown: the poll loop is blocked on the store; the agent abandons it and exits 0.
    let signalled = Instant::now();
    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    eprintln!("exited {took:?} after SIGTERM");
    let lines = agent.lines().join("\n");
    assert!(status.success(), "exit status {status:?}:\n{lines}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert!(
        lines.contains("abandoning it"),
        "the blocked poll loop was not the reason it took long:\n{lines}"
    );

    // The agent's sessions end with the proxy; the server rolls their transactions back.
    drop(proxy);
    wait_for(
        "the agent's sessions to end",
        Duration::from_secs(30),
        || (agent_sessions(&test_db.name) == 0).then_some(()),
    );
    let committed = db.count("lifecycle_events", CLUSTER);
    assert!(
        committed < 2 * REPORTS,
        "the stalled transaction was committed"
    );
    // A restart finishes the rescan: the events are exactly an uninterrupted agent's, none lost
    // (a half-applied unit would miss some), none doubled.
    once(&sb, db.url());
    once(&sb, reference.url());
    let got = db.events(CLUSTER);
    assert_eq!(got.len(), 2 * REPORTS, "no event lost, none doubled");
    assert_eq!(ids(&got), ids(&reference.events(CLUSTER)));
}
