//! Notification planning: which queued lifecycle events become which messages, per target.
//!
//! The decision is pure ([`plan`], [`rebuild`]) so both stores group identically; the store only
//! records the plan ([`Store::assign_messages`]) and hands the events of a due message back
//! ([`Store::due_messages`]), from which [`rebuild`] makes the very message that was planned.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::event::{Change, ChangeKind};
use super::group::{Message, group, select};
use crate::lifecycle::{Event, EventKind};
use crate::severity::Severity;
use crate::store::{Assigned, Plan, Store, StoreError};

/// A message due for an attempt, rebuilt from its stored events.
#[derive(Debug, Clone)]
pub struct DueMessage {
    pub created_at: Timestamp,
    /// Attempts made so far (0 before the first).
    pub attempts: u32,
    pub message: Message,
}

/// Groups every queued, not yet grouped outbox row of `cluster` into messages (or marks it
/// filtered), in one transaction. Rows are only ever grouped once.
pub fn assign_messages(
    store: &mut Store,
    cluster: &str,
    min_severity: Severity,
    notify_workload_removed: bool,
    now: Timestamp,
) -> Result<Assigned, StoreError> {
    store.assign_messages(cluster, now, &|rows| {
        plan(rows, min_severity, notify_workload_removed)
    })
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

/// The notifier's view of a lifecycle event; `None` for kinds that never reach people.
pub fn change_of(event: &Event) -> Option<Change> {
    let kind = match event.kind {
        EventKind::New => ChangeKind::New,
        EventKind::Fixed => ChangeKind::Fixed,
        EventKind::Reintroduced => ChangeKind::Reintroduced,
        EventKind::WorkloadRemoved => ChangeKind::WorkloadRemoved,
        // TODO(notify helper): the new kinds reach people.
        EventKind::SeverityChanged
        | EventKind::Withdrawn
        | EventKind::ReportedAgain
        | EventKind::ContainerRemoved => return None,
    };
    let f = &event.finding;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Some(Change {
        kind,
        event_id: event.event_id.clone(),
        cluster: event.cluster.clone(),
        namespace: event.asset.namespace.clone(),
        workload_kind: event.asset.workload_kind.clone(),
        workload: event.asset.workload.clone(),
        container: event.asset.container.clone(),
        image: event.image.clone(),
        vulnerability_id: f.key.vulnerability_id.clone(),
        package: f.key.package.clone(),
        installed_version: f.installed_version.clone(),
        fixed_version: opt(&f.fixed_version),
        severity: f.severity,
        title: opt(&f.title),
        link: opt(&f.link),
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
