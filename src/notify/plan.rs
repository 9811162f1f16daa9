//! Notification planning: which queued lifecycle events become which messages, per target.
//!
//! The decision is pure ([`plan`], [`rebuild`]) so both stores group identically; the store only
//! records the plan ([`Store::assign_messages`]) and hands the events of a due message back
//! ([`Store::due_messages`]), from which [`rebuild`] makes the very message that was planned.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;

use super::event::{Change, ChangeKind};
use super::group::{Message, group, select};
use super::window::{self, Decision};
use crate::lifecycle::{Event, EventKind};
use crate::severity::Severity;
use crate::store::{Assigned, Plan, QueuedRow, QueuedWindows, Store, StoreError};

/// A message due for an attempt, rebuilt from its stored events.
#[derive(Debug, Clone)]
pub struct DueMessage {
    pub created_at: Timestamp,
    /// Attempts made so far (0 before the first).
    pub attempts: u32,
    pub message: Message,
}

/// Groups the queued, not yet grouped outbox rows of `cluster` into messages (or marks them
/// filtered), in one transaction, for every target whose batch window (`window`, see
/// `notify::window`) has closed at `now`; the others stay queued and the result says until
/// when. Rows are only ever grouped once.
pub fn assign_messages(
    store: &mut Store,
    cluster: &str,
    min_severity: Severity,
    notify_workload_removed: bool,
    window: Duration,
    now: Timestamp,
) -> Result<Assigned, StoreError> {
    if !window.is_zero() {
        // While every window is open nothing is planned: say so from the queue's aggregate,
        // without reading (and locking) the held events on every pass.
        let queued = store.queued_windows(cluster)?;
        if let Some(held) = all_held(&queued, window, now) {
            return Ok(held);
        }
    }
    store.assign_messages(cluster, now, &|rows| {
        plan_queued(rows, window, now, min_severity, notify_workload_removed)
    })
}

/// What [`plan_queued`] would leave held when every target of the queue is inside its window
/// (`None` when one has closed, so the rows must be planned; an empty queue holds nothing).
/// [`window::decide`] over one row per target decides as it does over all of its rows: the
/// oldest time counts, and a row without one closes the window.
fn all_held(queued: &QueuedWindows, window: Duration, now: Timestamp) -> Option<Assigned> {
    let decisions = window::decide(
        queued.targets.iter().map(|(t, oldest)| (t.as_str(), *oldest)),
        window,
        now,
    );
    let mut until: Option<Timestamp> = None;
    for decision in decisions.values() {
        match decision {
            Decision::Group => return None,
            Decision::Hold { until: u } => until = Some(until.map_or(*u, |e| e.min(*u))),
        }
    }
    Some(Assigned {
        held: if until.is_some() { queued.events } else { 0 },
        held_until: until,
        ..Assigned::default()
    })
}

/// [`plan`] for the targets whose batch window has closed; the rows of the others are held.
pub fn plan_queued(
    rows: Vec<QueuedRow>,
    window: Duration,
    now: Timestamp,
    min_severity: Severity,
    notify_workload_removed: bool,
) -> Plan {
    let decisions = window::decide(
        rows.iter().map(|r| (r.target.as_str(), r.queued_at)),
        window,
        now,
    );
    let mut held: Vec<(String, Vec<String>, Timestamp)> = decisions
        .iter()
        .filter_map(|(target, d)| match d {
            Decision::Hold { until } => Some(((*target).to_owned(), Vec::new(), *until)),
            Decision::Group => None,
        })
        .collect();
    let mut ready = Vec::new();
    for row in rows {
        match held.iter_mut().find(|(t, _, _)| *t == row.target) {
            Some((_, ids, _)) => ids.push(row.event.event_id),
            None => ready.push((row.target, row.event)),
        }
    }
    let mut out = plan(ready, min_severity, notify_workload_removed);
    out.held = held;
    out
}

/// Claims up to `limit` due messages of one target (see [`Store::due_messages`]) and rebuilds
/// each with its stored id. A message that cannot be rebuilt is logged and skipped.
pub fn due_messages(
    store: &mut Store,
    cluster: &str,
    target: &str,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<DueMessage>, StoreError> {
    Ok(store
        .due_messages(cluster, target, now, limit)?
        .into_iter()
        .filter_map(|m| {
            Some(DueMessage {
                created_at: m.created_at,
                attempts: m.attempts,
                message: rebuild(&m.message_id, &m.events)?,
            })
        })
        .collect())
}

/// The notifier's view of a lifecycle event; `None` for what never reaches people: a lowered
/// (or unchanged) severity is recorded in the history but is no news, and a `severity_changed`
/// without a previous severity gives no evidence of a rise.
pub fn change_of(event: &Event) -> Option<Change> {
    let kind = match event.kind {
        EventKind::New => ChangeKind::New,
        EventKind::Fixed => ChangeKind::Fixed,
        EventKind::Withdrawn => ChangeKind::Withdrawn,
        EventKind::Reintroduced => ChangeKind::Reintroduced,
        EventKind::ReportedAgain => ChangeKind::ReportedAgain,
        EventKind::SeverityChanged => match event.previous_severity {
            Some(previous) if event.finding.severity > previous => ChangeKind::SeverityRaised,
            _ => return None,
        },
        EventKind::WorkloadRemoved => ChangeKind::WorkloadRemoved,
        EventKind::ContainerRemoved => ChangeKind::ContainerRemoved,
    };
    Some(Change {
        kind,
        event_id: event.event_id.clone(),
        cluster: event.cluster.clone(),
        asset: event.asset.clone(),
        image: event.image.clone(),
        finding: event.finding.clone(),
        previous_severity: match kind {
            ChangeKind::SeverityRaised => event.previous_severity,
            _ => None,
        },
        peak_severity: event.peak_severity,
        occurred_at: event.occurred_at,
    })
}

/// Decides, per target, which queued events are sent and how they are grouped into messages
/// ([`select`], then [`group`]); everything else is filtered.
pub fn plan(
    rows: Vec<(String, Event)>,
    min_severity: Severity,
    notify_workload_removed: bool,
) -> Plan {
    let mut out = Plan::default();
    let targets: BTreeSet<String> = rows.iter().map(|(t, _)| t.clone()).collect();
    for target in targets {
        let mut changes = Vec::new();
        for (t, event) in &rows {
            if *t != target {
                continue;
            }
            match change_of(event) {
                Some(c) => changes.push(c),
                None => out.filtered.push((target.clone(), event.event_id.clone())),
            }
        }
        let all: Vec<String> = changes.iter().map(|c| c.event_id.clone()).collect();
        let kept = select(changes, min_severity, notify_workload_removed);
        let kept_ids: BTreeSet<&str> = kept.iter().map(|c| c.event_id.as_str()).collect();
        for id in &all {
            if !kept_ids.contains(id.as_str()) {
                out.filtered.push((target.clone(), id.clone()));
            }
        }
        for m in group(kept) {
            let ids = m.changes.iter().map(|c| c.event_id.clone()).collect();
            out.messages.push((target.clone(), m.id, ids));
        }
    }
    out
}

/// Rebuilds a stored message from its events. The stored id wins: it is what was promised to
/// the receiver, even if a future version grouped differently.
pub fn rebuild(message_id: &str, events: &[Event]) -> Option<Message> {
    let changes: Vec<Change> = events.iter().filter_map(change_of).collect();
    let mut messages = group(changes);
    if messages.len() != 1 {
        log::error!(
            message_id = message_id,
            parts = messages.len();
            "stored message does not rebuild into exactly one message; skipping it"
        );
        return None;
    }
    let mut m = messages.pop()?;
    m.id = message_id.to_owned();
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{AssetId, Finding, FindingKey};

    fn event(id: &str, kind: EventKind, ns: &str, workload: &str, severity: &str) -> Event {
        let severity: Severity = severity.parse().expect("a severity name");
        Event {
            event_id: id.to_owned(),
            kind,
            cluster: "c".to_owned(),
            asset: AssetId {
                namespace: ns.to_owned(),
                workload_kind: "Deployment".to_owned(),
                workload: workload.to_owned(),
                container: "app".to_owned(),
            },
            image: "nginx:1".to_owned(),
            finding: Finding {
                key: FindingKey {
                    vulnerability_id: format!("CVE-{id}"),
                    package: "openssl".to_owned(),
                },
                package_path: String::new(),
                severity,
                installed_version: "1.0".to_owned(),
                fixed_version: String::new(),
                title: String::new(),
                link: String::new(),
            },
            previous_severity: None,
            peak_severity: severity,
            reintroduced_count: 0,
            occurred_at: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn plan_groups_per_target_and_filters_the_rest() {
        let events = [
            event("1", EventKind::New, "shop", "web", "CRITICAL"),
            event("2", EventKind::New, "shop", "api", "CRITICAL"),
            event("3", EventKind::New, "shop", "web", "LOW"),
            event("4", EventKind::Fixed, "shop", "web", "CRITICAL"),
            event("5", EventKind::SeverityChanged, "shop", "web", "CRITICAL"),
            event("6", EventKind::WorkloadRemoved, "data", "db", "CRITICAL"),
            event("7", EventKind::New, "data", "db", "HIGH"),
        ];
        let rows: Vec<(String, Event)> = ["slack", "webhook"]
            .iter()
            .flat_map(|t| events.iter().map(|e| ((*t).to_owned(), e.clone())))
            .collect();
        let p = plan(rows, Severity::High, false);
        let shape: Vec<(&str, Vec<&str>)> = p
            .messages
            .iter()
            .map(|(t, _, ids)| (t.as_str(), ids.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("slack", vec!["7"]),
                ("slack", vec!["2", "1"]),
                ("slack", vec!["4"]),
                ("webhook", vec!["7"]),
                ("webhook", vec!["2", "1"]),
                ("webhook", vec!["4"]),
            ]
        );
        // The same events give the same id on every target.
        assert_eq!(p.messages[1].1, p.messages[4].1);
        let mut filtered: Vec<&str> = p
            .filtered
            .iter()
            .filter(|(t, _)| t == "slack")
            .map(|(_, id)| id.as_str())
            .collect();
        filtered.sort();
        assert_eq!(filtered, ["3", "5", "6"]);

        let with_removed = plan(
            vec![(
                "slack".to_owned(),
                event("6", EventKind::WorkloadRemoved, "data", "db", "CRITICAL"),
            )],
            Severity::High,
            true,
        );
        assert_eq!(with_removed.messages.len(), 1);
        assert!(with_removed.filtered.is_empty());
    }

    /// `event` with the severities a case varies.
    fn event_with(
        kind: EventKind,
        severity: Severity,
        previous: Option<Severity>,
        peak: Severity,
    ) -> Event {
        let mut e = event("x", kind, "shop", "web", severity.as_str());
        e.previous_severity = previous;
        e.peak_severity = peak;
        e
    }

    /// What reaches people (issue 10): every kind against the thresholds and the previous and
    /// peak severities that matter.
    #[test]
    fn what_reaches_people_per_kind_threshold_and_severity() {
        use EventKind as K;
        use Severity::{Critical as C, High as H, Low as L, Medium as M, Unknown as U};
        // (what, kind, severity, previous, peak, threshold, KIJO_NOTIFY_WORKLOAD_REMOVED, sent)
        type Case = (&'static str, K, Severity, Option<Severity>, Severity, Severity, bool, bool);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("new at the threshold", K::New, H, None, H, H, false, true),
            ("new above", K::New, C, None, C, H, false, true),
            ("new below", K::New, M, None, M, H, false, false),
            ("reintroduced at", K::Reintroduced, H, None, H, H, false, true),
            ("reintroduced below", K::Reintroduced, L, None, L, H, false, false),
            ("reported again above", K::ReportedAgain, C, None, C, H, false, true),
            ("reported again below", K::ReportedAgain, M, None, M, H, false, false),
            ("raise HIGH to CRITICAL at HIGH", K::SeverityChanged, C, Some(H), C, H, false, true),
            ("raise into the threshold", K::SeverityChanged, H, Some(M), H, H, false, true),
            ("raise below the threshold", K::SeverityChanged, M, Some(L), M, H, false, false),
            ("lowering at a low threshold", K::SeverityChanged, L, Some(C), C, L, false, false),
            ("lowering at UNKNOWN", K::SeverityChanged, L, Some(C), C, U, false, false),
            ("lowering still above", K::SeverityChanged, H, Some(C), C, H, false, false),
            ("no change", K::SeverityChanged, H, Some(H), H, U, false, false),
            ("no previous: no evidence", K::SeverityChanged, C, None, C, U, false, false),
            ("fixed, was CRITICAL, lowered to LOW", K::Fixed, L, None, C, H, false, true),
            ("fixed, only ever LOW", K::Fixed, L, None, L, H, false, false),
            ("fixed, peak below", K::Fixed, H, None, H, C, false, false),
            ("fixed at", K::Fixed, C, None, C, C, false, true),
            ("withdrawn, peak at", K::Withdrawn, M, None, H, H, false, true),
            ("withdrawn, only ever LOW", K::Withdrawn, L, None, L, H, false, false),
            ("workload removed, switch off", K::WorkloadRemoved, L, None, C, H, false, false),
            ("workload removed, peak above", K::WorkloadRemoved, L, None, C, H, true, true),
            ("workload removed, never reached", K::WorkloadRemoved, L, None, L, H, true, false),
            ("container removed, switch off", K::ContainerRemoved, C, None, C, H, false, false),
            ("container removed, peak above", K::ContainerRemoved, L, None, C, H, true, true),
            ("container removed, never reached", K::ContainerRemoved, M, None, M, H, true, false),
        ];
        for &(what, kind, severity, previous, peak, threshold, removed, sent) in cases {
            let e = event_with(kind, severity, previous, peak);
            let p = plan(vec![("t".to_owned(), e.clone())], threshold, removed);
            assert_eq!(p.messages.len(), usize::from(sent), "{what}");
            assert_eq!(p.filtered.len(), usize::from(!sent), "{what}: recorded, not sent");
            if sent {
                let m = rebuild(&p.messages[0].1, std::slice::from_ref(&e)).unwrap();
                let told = if change_of(&e).is_some_and(|c| c.kind.is_closing()) {
                    peak
                } else {
                    severity
                };
                assert_eq!(m.severity, told, "{what}: the message severity");
            }
        }
    }

    #[test]
    fn change_of_maps_every_kind_and_keeps_only_a_raise() {
        use Severity::{Critical, Low, Medium};
        let cases = [
            (EventKind::New, None, Some(ChangeKind::New)),
            (EventKind::Fixed, None, Some(ChangeKind::Fixed)),
            (EventKind::Withdrawn, None, Some(ChangeKind::Withdrawn)),
            (EventKind::Reintroduced, None, Some(ChangeKind::Reintroduced)),
            (EventKind::ReportedAgain, None, Some(ChangeKind::ReportedAgain)),
            (EventKind::SeverityChanged, Some(Medium), Some(ChangeKind::SeverityRaised)),
            (EventKind::SeverityChanged, Some(Critical), None),
            (EventKind::SeverityChanged, Some(Low), None),
            (EventKind::SeverityChanged, None, None),
            (EventKind::WorkloadRemoved, None, Some(ChangeKind::WorkloadRemoved)),
            (EventKind::ContainerRemoved, None, Some(ChangeKind::ContainerRemoved)),
        ];
        for (kind, previous, want) in cases {
            let mut e = event_with(kind, Low, previous, Critical);
            if kind == EventKind::SeverityChanged {
                e.finding.severity = Severity::High;
                if previous == Some(Low) {
                    e.finding.severity = Low;
                }
            }
            let c = change_of(&e);
            assert_eq!(c.as_ref().map(|c| c.kind), want, "{kind} from {previous:?}");
            if let Some(c) = c {
                assert_eq!(c.finding, e.finding, "the lifecycle finding, unchanged");
                assert_eq!(c.asset, e.asset);
                assert_eq!(c.peak_severity, Critical);
                let raised = c.kind == ChangeKind::SeverityRaised;
                assert_eq!(c.previous_severity, previous.filter(|_| raised));
            }
        }
    }

    /// The lifecycle's own events, cycle by cycle: a baseline CRITICAL finding lowered to LOW
    /// (recorded, not sent) and then fixed is told at HIGH, as CRITICAL; a finding that was
    /// only ever LOW is not.
    #[test]
    fn a_lowered_baseline_finding_is_told_fixed_at_its_peak() {
        use crate::lifecycle::{Observation, StoredAsset, diff};
        let asset = AssetId {
            namespace: "shop".to_owned(),
            workload_kind: "Deployment".to_owned(),
            workload: "web".to_owned(),
            container: "app".to_owned(),
        };
        let finding = |cve: &str, severity: Severity| Finding {
            key: FindingKey {
                vulnerability_id: cve.to_owned(),
                package: "openssl".to_owned(),
            },
            severity,
            installed_version: "3.0.1".to_owned(),
            ..Finding::default()
        };
        let scan = |at: &str, image: &str, findings: Vec<Finding>| Observation {
            cluster: "c".to_owned(),
            asset: asset.clone(),
            image: image.to_owned(),
            scanned_at: at.parse().unwrap(),
            revision: None,
            findings,
        };
        let mut stored = StoredAsset {
            sibling_keys: Some(Default::default()),
            ..StoredAsset::default()
        };
        let mut cycles = Vec::new();
        for (at, image, findings, baseline) in [
            (
                "2026-11-27T10:00:00Z",
                "nginx@sha256:aaaa",
                vec![finding("CVE-1", Severity::Critical), finding("CVE-2", Severity::Low)],
                true,
            ),
            (
                "2026-11-27T11:00:00Z",
                "nginx@sha256:aaaa",
                vec![finding("CVE-1", Severity::Low), finding("CVE-2", Severity::Low)],
                false,
            ),
            ("2026-11-27T12:00:00Z", "nginx@sha256:bbbb", vec![], false),
        ] {
            let obs = scan(at, image, findings);
            let changes = diff(&stored, &obs, baseline);
            assert!(!changes.stale && !changes.needs_siblings);
            for row in &changes.rows {
                match stored
                    .findings
                    .iter_mut()
                    .find(|f| f.finding.key == row.finding.key)
                {
                    Some(old) => *old = row.clone(),
                    None => stored.findings.push(row.clone()),
                }
            }
            stored.last_scan_at = Some(obs.scanned_at);
            stored.image = obs.image.clone();
            cycles.push(changes.events);
        }
        assert!(cycles[0].is_empty(), "the baseline is silent");
        let sent = |events: &[Event]| {
            let rows = events.iter().map(|e| ("t".to_owned(), e.clone())).collect();
            let p = plan(rows, Severity::High, false);
            p.messages
                .iter()
                .map(|(_, id, ids)| {
                    let evs: Vec<Event> = events
                        .iter()
                        .filter(|e| ids.contains(&e.event_id))
                        .cloned()
                        .collect();
                    rebuild(id, &evs).unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cycles[1].iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::SeverityChanged]
        );
        assert!(sent(&cycles[1]).is_empty(), "a lowering is never sent");
        let fixed = sent(&cycles[2]);
        assert_eq!(fixed.len(), 1, "{:?}", cycles[2]);
        let m = &fixed[0];
        assert_eq!(m.kind, ChangeKind::Fixed);
        assert_eq!(m.severity, Severity::Critical, "told at its peak");
        let cves: Vec<&str> = m
            .changes
            .iter()
            .map(|c| c.finding.key.vulnerability_id.as_str())
            .collect();
        assert_eq!(cves, ["CVE-1"], "CVE-2 was only ever LOW");
        assert_eq!(
            crate::notify::slack::title(m),
            "✅ Critical Vulnerabilities Fixed in c"
        );
    }

    /// The batch window per target: a target inside its window keeps every row queued (also
    /// one that would be filtered), the others are planned as [`plan`] plans them.
    #[test]
    fn plan_queued_holds_only_the_targets_inside_their_window() {
        let at = |s: &str| -> Timestamp { format!("2026-12-01T10:{s}Z").parse().unwrap() };
        let row = |target: &str, queued: Option<&str>, e: Event| QueuedRow {
            target: target.to_owned(),
            queued_at: queued.map(at),
            event: e,
        };
        let rows = vec![
            row("slack", Some("00:00"), event("1", EventKind::New, "shop", "web", "CRITICAL")),
            row("webhook", Some("08:00"), event("1", EventKind::New, "shop", "web", "CRITICAL")),
            row("slack", Some("09:00"), event("2", EventKind::New, "shop", "api", "LOW")),
            row("webhook", Some("09:00"), event("2", EventKind::New, "shop", "api", "LOW")),
            row("saas", None, event("1", EventKind::New, "shop", "web", "CRITICAL")),
        ];
        let window = Duration::from_secs(600);
        let p = plan_queued(rows, window, at("10:00"), Severity::Critical, false);
        let planned: Vec<(&str, &[String])> = p
            .messages
            .iter()
            .map(|(t, _, ids)| (t.as_str(), ids.as_slice()))
            .collect();
        assert_eq!(
            planned,
            [("saas", &["1".to_owned()][..]), ("slack", &["1".to_owned()][..])]
        );
        assert_eq!(p.filtered, [("slack".to_owned(), "2".to_owned())]);
        assert_eq!(
            p.held,
            [(
                "webhook".to_owned(),
                vec!["1".to_owned(), "2".to_owned()],
                at("18:00")
            )]
        );

        let at_once = plan_queued(
            vec![row("webhook", Some("09:59"), event("3", EventKind::New, "shop", "web", "CRITICAL"))],
            Duration::ZERO,
            at("10:00"),
            Severity::Critical,
            false,
        );
        assert_eq!((at_once.messages.len(), at_once.held.len()), (1, 0), "window 0");
    }

    /// The aggregate check answers for the queue only while every target is held, and then as
    /// [`plan_queued`] would.
    #[test]
    fn only_a_queue_held_everywhere_is_answered_from_its_aggregate() {
        let at = |s: &str| -> Timestamp { format!("2026-12-01T10:{s}Z").parse().unwrap() };
        let window = Duration::from_secs(600);
        let queue = |targets: &[(&str, Option<&str>)], events| QueuedWindows {
            targets: targets
                .iter()
                .map(|(t, q)| ((*t).to_owned(), q.map(at)))
                .collect(),
            events,
        };
        let held = |events, until: &str| Assigned {
            held: events,
            held_until: Some(at(until)),
            ..Assigned::default()
        };
        // (what, queue, now, answer)
        let cases: Vec<(&str, QueuedWindows, &str, Option<Assigned>)> = vec![
            ("an empty queue holds nothing", queue(&[], 0), "10:00", Some(Assigned::default())),
            ("one target inside its window", queue(&[("slack", Some("05:00"))], 3), "10:00", Some(held(3, "15:00"))),
            ("every target inside: the earliest close", queue(&[("slack", Some("05:00")), ("webhook", Some("02:00"))], 4), "10:00", Some(held(4, "12:00"))),
            ("one target's window closed", queue(&[("slack", Some("05:00")), ("webhook", Some("00:00"))], 4), "10:00", None),
            ("at the edge the window is closed", queue(&[("slack", Some("00:00"))], 1), "10:00", None),
            ("a row queued before the window existed", queue(&[("slack", None)], 1), "10:00", None),
            ("the clock went back", queue(&[("slack", Some("11:00"))], 1), "10:00", None),
        ];
        for (what, q, now, want) in cases {
            assert_eq!(all_held(&q, window, at(now)), want, "{what}");
        }
    }

    #[test]
    fn rebuild_keeps_the_stored_id() {
        let events = [
            event("1", EventKind::New, "shop", "web", "CRITICAL"),
            event("2", EventKind::New, "shop", "api", "CRITICAL"),
        ];
        let p = plan(
            events.iter().map(|e| ("s".to_owned(), e.clone())).collect(),
            Severity::Critical,
            false,
        );
        let m = rebuild(&p.messages[0].1, &events).unwrap();
        assert_eq!(m.id, p.messages[0].1);
        assert_eq!(m.count(), 2);
        assert_eq!(rebuild("stored", &events).unwrap().id, "stored");
        let mixed = [
            events[0].clone(),
            event("9", EventKind::Fixed, "shop", "web", "CRITICAL"),
        ];
        assert!(rebuild("x", &mixed).is_none());
    }
}
