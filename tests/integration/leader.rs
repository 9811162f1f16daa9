//! Leader election end to end: two real agents on one sandbox and one PostgreSQL database.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::agent::{Agent, get as http_get, run};
use crate::support::lifecycle::{Db, EventRow, get, replace, rescan, vulnerability, wait_for};
use crate::support::sandbox::Sandbox;

const CLUSTER: &str = "ha";
const NGINX: &str = "replicaset-web-7c9d8f6b5d-nginx";
const LEASE_SECONDS: u64 = 4;

fn start(sb: &Sandbox, db: &Db, name: &str) -> Agent {
    let kubeconfig = sb.kubeconfig.display().to_string();
    let url = db.url();
    let lease = format!("{LEASE_SECONDS}s");
    Agent::start(
        &[
            ("KIJO_DATABASE_URL", url.as_str()),
            ("KIJO_CLUSTER_NAME", CLUSTER),
            ("KIJO_KUBECONFIG", kubeconfig.as_str()),
            ("KIJO_POLL_INTERVAL", "1s"),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0"),
            ("KIJO_LEADER_ELECTION", "true"),
            ("KIJO_LEASE_DURATION", lease.as_str()),
            ("POD_NAME", name),
            ("POD_NAMESPACE", "shop"),
        ],
        &[],
    )
}

fn cycles(agent: &Agent) -> usize {
    agent
        .lines()
        .iter()
        .filter(|l| l.contains("poll cycle finished"))
        .count()
}

fn leader_gauge(addr: SocketAddr) -> Option<u8> {
    let body = http_get(addr, "/metrics").body;
    body.lines()
        .find(|l| l.starts_with("kijo_leader "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u8)
}

/// The value of one sample line of `/metrics`.
fn metric(addr: SocketAddr, sample: &str) -> Option<f64> {
    http_get(addr, "/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(sample).map(str::trim).map(str::to_owned))
        .and_then(|v| v.parse().ok())
}

fn holder(sb: &Sandbox) -> String {
    let lease = get(sb, "leases.coordination.k8s.io", "shop", "kijo-agent");
    lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// A reference run: one agent without election, `--once`, into its own store.
fn reference_once(sb: &Sandbox, db: &Db) {
    let kubeconfig = sb.kubeconfig.display().to_string();
    let url = db.url();
    let (status, _, err) = run(
        &[
            ("KIJO_DATABASE_URL", url.as_str()),
            ("KIJO_CLUSTER_NAME", CLUSTER),
            ("KIJO_KUBECONFIG", kubeconfig.as_str()),
        ],
        &["--once"],
    );
    assert!(status.success(), "{err}");
}

fn ids(events: &[EventRow]) -> Vec<(String, String)> {
    let mut v: Vec<_> = events
        .iter()
        .map(|e| (e.event_id.clone(), e.short()))
        .collect();
    v.sort();
    v
}

#[test]
fn two_agents_one_leader_and_a_fast_takeover() {
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let db = Db::postgres("ha");
    let reference = Db::sqlite("ha-ref");
    let mut a = start(&sb, &db, "agent-a");
    let mut b = start(&sb, &db, "agent-b");
    let (addr_a, addr_b) = (a.health_addr(), b.health_addr());

    // Exactly one leads; it does the baseline, the other stands by and writes nothing.
    let lead = wait_for("a leader", Duration::from_secs(30), || {
        let h = holder_or_empty(&sb);
        if h.starts_with("agent-a_") {
            Some('a')
        } else if h.starts_with("agent-b_") {
            Some('b')
        } else {
            None
        }
    });
    let (leader, standby, leader_addr, standby_addr) = if lead == 'a' {
        (&mut a, &mut b, addr_a, addr_b)
    } else {
        (&mut b, &mut a, addr_b, addr_a)
    };
    wait_for("the leader's first cycles", Duration::from_secs(60), || {
        (cycles(leader) >= 2).then_some(())
    });
    reference_once(&sb, &reference);
    standby.wait_for_line("'standing by'", Duration::from_secs(20), |l| {
        l.contains("standing by")
    });
    assert_eq!(cycles(standby), 0, "the standby must not poll");
    assert_eq!(leader_gauge(leader_addr), Some(1));
    assert_eq!(leader_gauge(standby_addr), Some(0));
    assert_eq!(
        http_get(standby_addr, "/health/ready").status,
        200,
        "a standby is ready (it serves probes and could take over at once)"
    );
    assert!(db.events(CLUSTER).is_empty(), "baseline records no events");
    let open_critical = metric(
        leader_addr,
        "kijo_findings_open{severity=\"CRITICAL\",namespace=\"shop\"}",
    );
    assert!(
        open_critical.is_some_and(|v| v > 0.0),
        "open-findings gauge: {open_critical:?}"
    );

    // A change while the leader runs: recorded once.
    let mut r = get(&sb, "vulnerabilityreports", "shop", NGINX);
    rescan(&mut r, Duration::from_secs(3600), |v| {
        v.push(vulnerability("CVE-2099-0002", "zlib1g", "HIGH"))
    });
    replace(&sb, &r);
    wait_for("the new event", Duration::from_secs(60), || {
        (db.events(CLUSTER).len() == 1).then_some(())
    });
    reference_once(&sb, &reference);
    wait_for(
        "the lifecycle events metric",
        Duration::from_secs(10),
        || {
            (metric(leader_addr, "kijo_lifecycle_events_total{kind=\"new\"}") == Some(1.0))
                .then_some(())
        },
    );

    // SIGKILL the leader: no release, the standby must wait for the lease to expire.
    leader.signal("KILL");
    leader.wait_exit(Duration::from_secs(10));
    let killed = Instant::now();
    standby.wait_for_line(
        "'became leader'",
        Duration::from_secs(LEASE_SECONDS * 5),
        |l| l.contains("became leader"),
    );
    let takeover = killed.elapsed();
    println!("takeover after SIGKILL: {takeover:?} (lease {LEASE_SECONDS}s)");
    assert!(
        takeover < Duration::from_secs(LEASE_SECONDS * 2),
        "takeover took {takeover:?}"
    );
    assert!(holder(&sb).starts_with(&format!(
        "{}_",
        if lead == 'a' { "agent-b" } else { "agent-a" }
    )));
    wait_for("the new leader's gauge", Duration::from_secs(10), || {
        (leader_gauge(standby_addr) == Some(1)).then_some(())
    });

    // The new leader continues the same history: the fix (a rebuilt image without the CVE) is
    // recorded once.
    let mut r = get(&sb, "vulnerabilityreports", "shop", NGINX);
    rescan(&mut r, Duration::from_secs(3600), |v| {
        v.retain(|f| f["vulnerabilityID"] != "CVE-2099-0002")
    });
    r["report"]["artifact"]["digest"] = serde_json::json!(format!("sha256:{}", "e".repeat(64)));
    replace(&sb, &r);
    wait_for("the fixed event", Duration::from_secs(60), || {
        (db.events(CLUSTER).len() == 2).then_some(())
    });
    reference_once(&sb, &reference);
    let before = cycles(standby);
    wait_for("two more cycles", Duration::from_secs(30), || {
        (cycles(standby) >= before + 2).then_some(())
    });

    let got = db.events(CLUSTER);
    let want = reference.events(CLUSTER);
    assert_eq!(
        ids(&got),
        ids(&want),
        "two agents record what one agent records"
    );
    assert_eq!(
        got.iter().map(EventRow::short).collect::<Vec<_>>(),
        [
            "new Deployment/web/nginx CVE-2099-0002",
            "fixed Deployment/web/nginx CVE-2099-0002"
        ]
    );
    assert_eq!(db.findings(CLUSTER), reference_findings(&reference));

    // SIGTERM: the leader releases the lease for a fast successor.
    standby.signal("TERM");
    let status = standby.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "clean exit");
    assert!(
        standby.lines().iter().any(|l| l.contains("lease released")),
        "{}",
        standby.lines().join("\n")
    );
    assert_eq!(holder(&sb), "", "released lease has no holder");
}

fn holder_or_empty(sb: &Sandbox) -> String {
    let out = sb.kubectl(&[
        "get",
        "leases.coordination.k8s.io",
        "-n",
        "shop",
        "kijo-agent",
        "-o",
        "json",
    ]);
    if !out.status.success() {
        return String::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// PostgreSQL and SQLite render times the same way in `findings()` except for the separator.
fn reference_findings(reference: &Db) -> Vec<Vec<String>> {
    reference
        .findings(CLUSTER)
        .into_iter()
        .map(|mut row| {
            for cell in row.iter_mut().skip(10) {
                *cell = cell.replace('T', " ").trim_end_matches('Z').to_owned();
            }
            row
        })
        .collect()
}

/// Leader election gives no fencing: a stale leader may still be writing when its successor
/// starts. Both then compute the same change with the same event ids; whichever commits second
/// must find it already recorded (stale) or be refused by the unique constraint, never record
/// it twice. Many concurrent pairs, so that both interleavings occur.
#[test]
fn racing_writers_record_each_change_once() {
    use kijo_agent::lifecycle::{AssetId, Finding, FindingKey, Observation};
    use kijo_agent::store::{DatabaseTarget, Store, StoreError};
    use std::sync::{Arc, Barrier};

    let db = Db::postgres("race");
    let target = DatabaseTarget::parse(&db.url()).unwrap();
    let obs = |i: usize| Observation {
        cluster: "race".into(),
        asset: AssetId {
            namespace: "shop".into(),
            workload_kind: "Deployment".into(),
            workload: format!("w{i}"),
            container: "app".into(),
        },
        image: "ghcr.io/acme/w:1".into(),
        scanned_at: "2026-11-20T06:00:00Z".parse().unwrap(),
        revision: None,
        findings: (0..50)
            .map(|j| Finding {
                key: FindingKey {
                    vulnerability_id: format!("CVE-2024-{j:05}"),
                    package: "openssl".into(),
                },
                package_path: String::new(),
                severity: kijo_agent::severity::Severity::High,
                ..Finding::default()
            })
            .collect(),
    };
    const PAIRS: usize = 20;
    let barrier = Arc::new(Barrier::new(2));
    let outcomes: Vec<Vec<Result<usize, String>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let target = target.clone();
                s.spawn(move || {
                    let mut store = Store::open(&target).unwrap();
                    (0..PAIRS)
                        .map(|i| {
                            barrier.wait();
                            // Not a baseline: every finding is a `new` event.
                            match store.apply(&obs(i), None, false, &[]) {
                                Ok(a) => Ok(a.events.len()),
                                Err(StoreError::Conflict(d)) => Err(d),
                                Err(e) => panic!("unexpected store error: {e}"),
                            }
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut conflicts = 0;
    for i in 0..PAIRS {
        let recorded: usize = outcomes.iter().map(|o| *o[i].as_ref().unwrap_or(&0)).sum();
        assert_eq!(
            recorded,
            50,
            "pair {i}: {:?}",
            (&outcomes[0][i], &outcomes[1][i])
        );
        conflicts += outcomes.iter().filter(|o| o[i].is_err()).count();
    }
    let events = db.events("race");
    assert_eq!(events.len(), PAIRS * 50, "each change recorded once");
    println!(
        "{conflicts} of {PAIRS} races ended in a unique-constraint refusal, the rest as stale"
    );
}
