//! The lifecycle of a finding, decided from plain data.
//!
//! A store loads what it knows about one workload container ([`StoredAsset`]), the poll cycle
//! provides a scan of it ([`Observation`]), and [`diff`] says which rows change and which events
//! happened. Nothing here does I/O, so every rule of the lifecycle is a table-driven unit test and
//! both stores behave identically because neither makes a lifecycle decision itself.
//!
//! The rules, in short:
//! - only a *newer* scan of the same workload container moves state; an older or equally old one
//!   changes nothing, which makes applying the same scan twice harmless;
//! - a finding missing from a newer scan is `fixed`; a report that merely vanished is never passed
//!   here (absence is not a fix), only a workload that is gone closes findings, as
//!   `workload_removed` ([`workload_removed`]);
//! - a closed finding that shows up again is `reintroduced` and counted;
//! - during a baseline (a cluster's first cycle with an empty store) findings are recorded without
//!   any event, so nobody is flooded on first start.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;

use crate::severity::Severity;

/// One workload container: what a report describes after ReplicaSets are resolved to their
/// Deployment. `namespace` is empty for cluster-scoped reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AssetId {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub container: String,
}

/// What makes two findings of one container the same finding across scans. Score, title, links
/// and the installed version are attributes, not identity: a rebuilt package with the same
/// vulnerability is still the same open problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FindingKey {
    pub vulnerability_id: String,
    pub package: String,
    /// Package path or scan target, empty when the report has none.
    pub package_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Finding {
    pub key: FindingKey,
    pub severity: Severity,
    pub installed_version: String,
    pub fixed_version: String,
    pub title: String,
    pub link: String,
}

/// One scan of one workload container, taken from a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub cluster: String,
    pub asset: AssetId,
    /// registry/repository:tag@digest, as far as the report knows it.
    pub image: String,
    /// The report's `updateTimestamp`: when Trivy scanned, not when we read it.
    pub scanned_at: Timestamp,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingState {
    Open,
    Fixed,
    WorkloadRemoved,
}

impl FindingState {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingState::Open => "open",
            FindingState::Fixed => "fixed",
            FindingState::WorkloadRemoved => "workload_removed",
        }
    }

    pub fn parse(s: &str) -> Option<FindingState> {
        Some(match s {
            "open" => FindingState::Open,
            "fixed" => FindingState::Fixed,
            "workload_removed" => FindingState::WorkloadRemoved,
            _ => return None,
        })
    }
}

/// A finding row as stored (one row of `vulnerability_history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFinding {
    pub finding: Finding,
    pub image: String,
    pub state: FindingState,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// When the finding stopped being open (fixed or its workload removed).
    pub fixed_at: Option<Timestamp>,
    pub reintroduced_count: u32,
}

/// Everything stored about one workload container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredAsset {
    /// The newest scan applied so far; `None` for a container never seen.
    pub last_scan_at: Option<Timestamp>,
    pub findings: Vec<StoredFinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    New,
    Fixed,
    Reintroduced,
    SeverityChanged,
    WorkloadRemoved,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::New => "new",
            EventKind::Fixed => "fixed",
            EventKind::Reintroduced => "reintroduced",
            EventKind::SeverityChanged => "severity_changed",
            EventKind::WorkloadRemoved => "workload_removed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Some(match s {
            "new" => EventKind::New,
            "fixed" => EventKind::Fixed,
            "reintroduced" => EventKind::Reintroduced,
            "severity_changed" => EventKind::SeverityChanged,
            "workload_removed" => EventKind::WorkloadRemoved,
            _ => return None,
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle event with everything a notification needs, so delivery never has to join
/// against state that may have moved on since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Derived from what happened (see [`event_id`]): the same change computed by two agents
    /// gets the same id, and the store's unique constraint keeps only one.
    pub event_id: String,
    pub kind: EventKind,
    pub cluster: String,
    pub asset: AssetId,
    pub image: String,
    /// The finding as of the event (for `severity_changed`, with the new severity).
    pub finding: Finding,
    pub previous_severity: Option<Severity>,
    pub reintroduced_count: u32,
    pub occurred_at: Timestamp,
}

/// Rows to write and events to record for one asset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The scan was not newer than the stored state; nothing changes.
    pub stale: bool,
    /// Complete new versions of every row that changes (inserted or updated by key).
    pub rows: Vec<StoredFinding>,
    pub events: Vec<Event>,
}

/// A stable event id: SHA-256 over the change's identity, 32 hex digits. `moment` is the scan
/// time for scan-driven events and the finding's last sighting for removals, never the wall clock,
/// so that a stale leader repeating the same change produces the same id.
pub fn event_id(
    cluster: &str,
    asset: &AssetId,
    key: &FindingKey,
    kind: EventKind,
    moment: Timestamp,
) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        cluster,
        &asset.namespace,
        &asset.workload_kind,
        &asset.workload,
        &asset.container,
        &key.vulnerability_id,
        &key.package,
        &key.package_path,
        kind.as_str(),
    ] {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    ctx.update(&moment.as_microsecond().to_be_bytes());
    let digest = ctx.finish();
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares a newer scan with the stored state of the same workload container.
///
/// With `baseline`, findings never seen are recorded as open without a `new` event (the README
/// calls this the baseline); every other transition produces its event as usual. Duplicate keys
/// within one scan count once (the first occurrence wins).
pub fn diff(stored: &StoredAsset, obs: &Observation, baseline: bool) -> Changes {
    if stored
        .last_scan_at
        .is_some_and(|last| obs.scanned_at <= last)
    {
        return Changes {
            stale: true,
            ..Changes::default()
        };
    }
    let at = obs.scanned_at;
    let known: BTreeMap<&FindingKey, &StoredFinding> = stored
        .findings
        .iter()
        .map(|f| (&f.finding.key, f))
        .collect();
    let mut seen = BTreeSet::new();
    let mut changes = Changes::default();
    let event = |kind, finding: &Finding, previous: Option<Severity>, count| Event {
        event_id: event_id(&obs.cluster, &obs.asset, &finding.key, kind, at),
        kind,
        cluster: obs.cluster.clone(),
        asset: obs.asset.clone(),
        image: obs.image.clone(),
        finding: finding.clone(),
        previous_severity: previous,
        reintroduced_count: count,
        occurred_at: at,
    };

    for finding in &obs.findings {
        if !seen.insert(&finding.key) {
            continue;
        }
        match known.get(&finding.key) {
            None => {
                changes.rows.push(StoredFinding {
                    finding: finding.clone(),
                    image: obs.image.clone(),
                    state: FindingState::Open,
                    first_seen: at,
                    last_seen: at,
                    fixed_at: None,
                    reintroduced_count: 0,
                });
                if !baseline {
                    changes.events.push(event(EventKind::New, finding, None, 0));
                }
            }
            Some(old) if old.state == FindingState::Open => {
                if old.finding.severity != finding.severity {
                    changes.events.push(event(
                        EventKind::SeverityChanged,
                        finding,
                        Some(old.finding.severity),
                        old.reintroduced_count,
                    ));
                }
                changes.rows.push(StoredFinding {
                    finding: finding.clone(),
                    image: obs.image.clone(),
                    last_seen: at,
                    ..(*old).clone()
                });
            }
            Some(old) => {
                let count = old.reintroduced_count + 1;
                changes
                    .events
                    .push(event(EventKind::Reintroduced, finding, None, count));
                changes.rows.push(StoredFinding {
                    finding: finding.clone(),
                    image: obs.image.clone(),
                    state: FindingState::Open,
                    first_seen: old.first_seen,
                    last_seen: at,
                    fixed_at: None,
                    reintroduced_count: count,
                });
            }
        }
    }

    for old in &stored.findings {
        if old.state != FindingState::Open || seen.contains(&old.finding.key) {
            continue;
        }
        let mut ev = event(EventKind::Fixed, &old.finding, None, old.reintroduced_count);
        ev.image = old.image.clone();
        changes.events.push(ev);
        changes.rows.push(StoredFinding {
            state: FindingState::Fixed,
            fixed_at: Some(at),
            ..old.clone()
        });
    }
    changes
}

/// Closes every open finding of a workload container whose workload no longer exists. `at` is
/// when the agent noticed; the event id uses the finding's last sighting instead, so two agents
/// noticing at different moments record one event.
pub fn workload_removed(
    cluster: &str,
    asset: &AssetId,
    stored: &StoredAsset,
    at: Timestamp,
) -> Changes {
    let mut changes = Changes::default();
    for old in stored
        .findings
        .iter()
        .filter(|f| f.state == FindingState::Open)
    {
        changes.events.push(Event {
            event_id: event_id(
                cluster,
                asset,
                &old.finding.key,
                EventKind::WorkloadRemoved,
                old.last_seen,
            ),
            kind: EventKind::WorkloadRemoved,
            cluster: cluster.to_owned(),
            asset: asset.clone(),
            image: old.image.clone(),
            finding: old.finding.clone(),
            previous_severity: None,
            reintroduced_count: old.reintroduced_count,
            occurred_at: at,
        });
        changes.rows.push(StoredFinding {
            state: FindingState::WorkloadRemoved,
            fixed_at: Some(at),
            ..old.clone()
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies changes to a stored asset in memory, as a store would.
    fn apply_in_memory(stored: &mut StoredAsset, changes: &Changes, scanned_at: Option<Timestamp>) {
        if changes.stale {
            return;
        }
        for row in &changes.rows {
            match stored
                .findings
                .iter_mut()
                .find(|f| f.finding.key == row.finding.key)
            {
                Some(existing) => *existing = row.clone(),
                None => stored.findings.push(row.clone()),
            }
        }
        if let Some(at) = scanned_at {
            stored.last_scan_at = Some(at);
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn asset() -> AssetId {
        AssetId {
            namespace: "shop".into(),
            workload_kind: "Deployment".into(),
            workload: "web".into(),
            container: "app".into(),
        }
    }

    /// "CVE-1:HIGH" → a finding in package "pkg".
    fn finding(spec: &str) -> Finding {
        let (id, sev) = spec.split_once(':').unwrap();
        Finding {
            key: FindingKey {
                vulnerability_id: id.into(),
                package: "pkg".into(),
                package_path: String::new(),
            },
            severity: sev.parse().expect("a severity name"),
            installed_version: "1.0".into(),
            fixed_version: "1.1".into(),
            title: format!("{id} title"),
            link: format!("https://avd.aquasec.com/nvd/{id}"),
        }
    }

    fn obs(at: &str, specs: &[&str]) -> Observation {
        Observation {
            cluster: "prod".into(),
            asset: asset(),
            image: "docker.io/library/web:1@sha256:aa".into(),
            scanned_at: ts(at),
            findings: specs.iter().map(|s| finding(s)).collect(),
        }
    }

    /// "CVE-1:HIGH:open:2" → stored row, reintroduced twice.
    fn stored(last_scan: &str, rows: &[&str]) -> StoredAsset {
        StoredAsset {
            last_scan_at: Some(ts(last_scan)),
            findings: rows
                .iter()
                .map(|r| {
                    let parts: Vec<&str> = r.split(':').collect();
                    let state = FindingState::parse(parts[2]).unwrap();
                    StoredFinding {
                        finding: finding(&format!("{}:{}", parts[0], parts[1])),
                        image: "docker.io/library/web:0@sha256:00".into(),
                        state,
                        first_seen: ts("2026-01-01T00:00:00Z"),
                        last_seen: ts(last_scan),
                        fixed_at: (state != FindingState::Open).then(|| ts(last_scan)),
                        reintroduced_count: parts.get(3).map_or(0, |c| c.parse().unwrap()),
                    }
                })
                .collect(),
        }
    }

    fn summary(c: &Changes) -> (Vec<String>, Vec<String>) {
        let mut events: Vec<String> = c
            .events
            .iter()
            .map(|e| format!("{}:{}", e.kind, e.finding.key.vulnerability_id))
            .collect();
        events.sort();
        let mut rows: Vec<String> = c
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{}:{}:{}",
                    r.finding.key.vulnerability_id,
                    r.state.as_str(),
                    r.reintroduced_count
                )
            })
            .collect();
        rows.sort();
        (events, rows)
    }

    const T1: &str = "2026-01-02T00:00:00Z";
    const T2: &str = "2026-01-03T00:00:00Z";

    #[test]
    fn diff_follows_every_rule() {
        struct Case {
            name: &'static str,
            stored: StoredAsset,
            obs: Observation,
            baseline: bool,
            stale: bool,
            events: &'static [&'static str],
            rows: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "new: never seen finding on a known container",
                stored: stored(T1, &[]),
                obs: obs(T2, &["CVE-1:HIGH"]),
                baseline: false,
                stale: false,
                events: &["new:CVE-1"],
                rows: &["CVE-1:open:0"],
            },
            Case {
                name: "new: a workload deployed after the baseline",
                stored: StoredAsset::default(),
                obs: obs(T2, &["CVE-1:HIGH", "CVE-2:LOW"]),
                baseline: false,
                stale: false,
                events: &["new:CVE-1", "new:CVE-2"],
                rows: &["CVE-1:open:0", "CVE-2:open:0"],
            },
            Case {
                name: "baseline: recorded open, no event",
                stored: StoredAsset::default(),
                obs: obs(T2, &["CVE-1:HIGH", "CVE-2:LOW"]),
                baseline: true,
                stale: false,
                events: &[],
                rows: &["CVE-1:open:0", "CVE-2:open:0"],
            },
            Case {
                name: "persistent: row rewritten with new last_seen, no event",
                stored: stored(T1, &["CVE-1:HIGH:open"]),
                obs: obs(T2, &["CVE-1:HIGH"]),
                baseline: false,
                stale: false,
                events: &[],
                rows: &["CVE-1:open:0"],
            },
            Case {
                name: "fixed: newer scan lacks an open finding",
                stored: stored(T1, &["CVE-1:HIGH:open", "CVE-2:LOW:open"]),
                obs: obs(T2, &["CVE-2:LOW"]),
                baseline: false,
                stale: false,
                events: &["fixed:CVE-1"],
                rows: &["CVE-1:fixed:0", "CVE-2:open:0"],
            },
            Case {
                name: "fixed: an empty newer scan fixes everything open",
                stored: stored(T1, &["CVE-1:HIGH:open", "CVE-2:LOW:fixed"]),
                obs: obs(T2, &[]),
                baseline: false,
                stale: false,
                events: &["fixed:CVE-1"],
                rows: &["CVE-1:fixed:0"],
            },
            Case {
                name: "already fixed and still absent: untouched",
                stored: stored(T1, &["CVE-1:HIGH:fixed"]),
                obs: obs(T2, &[]),
                baseline: false,
                stale: false,
                events: &[],
                rows: &[],
            },
            Case {
                name: "reintroduced: a fixed finding is back, counted",
                stored: stored(T1, &["CVE-1:HIGH:fixed:1"]),
                obs: obs(T2, &["CVE-1:HIGH"]),
                baseline: false,
                stale: false,
                events: &["reintroduced:CVE-1"],
                rows: &["CVE-1:open:2"],
            },
            Case {
                name: "reintroduced: after its workload was removed and redeployed",
                stored: stored(T1, &["CVE-1:HIGH:workload_removed"]),
                obs: obs(T2, &["CVE-1:HIGH"]),
                baseline: false,
                stale: false,
                events: &["reintroduced:CVE-1"],
                rows: &["CVE-1:open:1"],
            },
            Case {
                name: "reintroduced even during a baseline (only new is silenced)",
                stored: stored(T1, &["CVE-1:HIGH:fixed"]),
                obs: obs(T2, &["CVE-1:HIGH"]),
                baseline: true,
                stale: false,
                events: &["reintroduced:CVE-1"],
                rows: &["CVE-1:open:1"],
            },
            Case {
                name: "severity change on an open finding is recorded",
                stored: stored(T1, &["CVE-1:MEDIUM:open"]),
                obs: obs(T2, &["CVE-1:CRITICAL"]),
                baseline: false,
                stale: false,
                events: &["severity_changed:CVE-1"],
                rows: &["CVE-1:open:0"],
            },
            Case {
                name: "older scan does not regress state",
                stored: stored(T2, &["CVE-1:HIGH:open"]),
                obs: obs(T1, &[]),
                baseline: false,
                stale: true,
                events: &[],
                rows: &[],
            },
            Case {
                name: "same-timestamp scan is a no-op (idempotence)",
                stored: stored(T2, &["CVE-1:HIGH:open"]),
                obs: obs(T2, &["CVE-2:HIGH"]),
                baseline: false,
                stale: true,
                events: &[],
                rows: &[],
            },
            Case {
                name: "duplicate keys within a scan count once",
                stored: stored(T1, &[]),
                obs: obs(T2, &["CVE-1:HIGH", "CVE-1:LOW"]),
                baseline: false,
                stale: false,
                events: &["new:CVE-1"],
                rows: &["CVE-1:open:0"],
            },
        ];
        for c in cases {
            let got = diff(&c.stored, &c.obs, c.baseline);
            assert_eq!(got.stale, c.stale, "{}", c.name);
            let (events, rows) = summary(&got);
            assert_eq!(events, c.events, "{}", c.name);
            assert_eq!(rows, c.rows, "{}", c.name);
        }
    }

    #[test]
    fn row_timestamps_follow_the_scan() {
        let s = stored(
            T1,
            &["CVE-1:HIGH:open", "CVE-2:HIGH:open", "CVE-3:HIGH:fixed:0"],
        );
        let c = diff(&s, &obs(T2, &["CVE-1:HIGH", "CVE-3:HIGH"]), false);
        let row = |id: &str| {
            c.rows
                .iter()
                .find(|r| r.finding.key.vulnerability_id == id)
                .unwrap()
        };
        // persistent: last_seen moves to the scan, first_seen stays
        assert_eq!(row("CVE-1").last_seen, ts(T2));
        assert_eq!(row("CVE-1").first_seen, ts("2026-01-01T00:00:00Z"));
        assert_eq!(row("CVE-1").image, "docker.io/library/web:1@sha256:aa");
        // fixed: fixed_at is the scan that no longer has it, last_seen stays the last sighting
        assert_eq!(row("CVE-2").fixed_at, Some(ts(T2)));
        assert_eq!(row("CVE-2").last_seen, ts(T1));
        // reintroduced: open again, fixed_at cleared, first_seen kept
        assert_eq!(row("CVE-3").fixed_at, None);
        assert_eq!(row("CVE-3").first_seen, ts("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn events_carry_what_a_notification_needs() {
        let s = stored(T1, &["CVE-1:MEDIUM:open", "CVE-2:LOW:open"]);
        let c = diff(&s, &obs(T2, &["CVE-1:CRITICAL", "CVE-3:HIGH"]), false);
        let by_kind = |k| c.events.iter().find(|e| e.kind == k).unwrap();
        let sev = by_kind(EventKind::SeverityChanged);
        assert_eq!(sev.previous_severity, Some(Severity::Medium));
        assert_eq!(sev.finding.severity, Severity::Critical);
        let new = by_kind(EventKind::New);
        assert_eq!(new.cluster, "prod");
        assert_eq!(new.asset, asset());
        assert_eq!(new.image, "docker.io/library/web:1@sha256:aa");
        assert_eq!(new.finding.title, "CVE-3 title");
        assert_eq!(new.finding.fixed_version, "1.1");
        assert_eq!(new.occurred_at, ts(T2));
        // a fixed event names the image the finding was last seen in
        let fixed = by_kind(EventKind::Fixed);
        assert_eq!(fixed.image, "docker.io/library/web:0@sha256:00");
        assert_eq!(fixed.finding.key.vulnerability_id, "CVE-2");
    }

    #[test]
    fn applying_the_same_scan_twice_yields_no_second_events() {
        let mut state = StoredAsset::default();
        let scans = [
            (obs(T1, &["CVE-1:HIGH"]), true, 0),
            (obs(T2, &["CVE-2:HIGH"]), false, 2),
        ];
        for (o, baseline, want) in scans {
            let first = diff(&state, &o, baseline);
            assert_eq!(first.events.len(), want);
            apply_in_memory(&mut state, &first, Some(o.scanned_at));
            let again = diff(&state, &o, baseline);
            assert!(again.stale && again.events.is_empty() && again.rows.is_empty());
        }
    }

    #[test]
    fn event_ids_are_stable_and_distinct() {
        let k = finding("CVE-1:HIGH").key;
        let a = event_id("prod", &asset(), &k, EventKind::New, ts(T1));
        assert_eq!(a, event_id("prod", &asset(), &k, EventKind::New, ts(T1)));
        assert_eq!(a.len(), 32);
        let others = [
            event_id("stage", &asset(), &k, EventKind::New, ts(T1)),
            event_id("prod", &asset(), &k, EventKind::Fixed, ts(T1)),
            event_id("prod", &asset(), &k, EventKind::New, ts(T2)),
            event_id("prod", &AssetId::default(), &k, EventKind::New, ts(T1)),
        ];
        for o in others {
            assert_ne!(a, o);
        }
    }

    #[test]
    fn workload_removal_closes_only_open_findings() {
        let s = stored(
            T1,
            &["CVE-1:HIGH:open", "CVE-2:LOW:fixed", "CVE-3:LOW:open:2"],
        );
        let at = ts("2026-02-01T00:00:00Z");
        let c = workload_removed("prod", &asset(), &s, at);
        let (events, rows) = summary(&c);
        assert_eq!(events, ["workload_removed:CVE-1", "workload_removed:CVE-3"]);
        assert_eq!(
            rows,
            ["CVE-1:workload_removed:0", "CVE-3:workload_removed:2"]
        );
        assert!(c.rows.iter().all(|r| r.fixed_at == Some(at)));
        // noticed later by another agent: same ids
        let later = workload_removed("prod", &asset(), &s, ts("2026-02-02T00:00:00Z"));
        let ids = |c: &Changes| {
            c.events
                .iter()
                .map(|e| e.event_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&c), ids(&later));
        // nothing open: nothing happens
        let mut after = s.clone();
        apply_in_memory(&mut after, &c, None);
        assert_eq!(
            workload_removed("prod", &asset(), &after, at),
            Changes::default()
        );
    }
}
