//! The batch window (`KIJO_NOTIFY_BATCH_WINDOW`): how long a target's queued changes wait for
//! more of the same scan wave before they are grouped into messages.
//!
//! Trivy Operator scans a bounded number of workloads at a time
//! (`OPERATOR_CONCURRENT_SCAN_JOBS_LIMIT`, 10 by default), so an image upgrade across 100
//! workloads is rescanned over several poll cycles. Grouping each cycle's changes at once would
//! tell people the same "fixed" several times. Instead the first change queued for a target opens
//! a fixed window — like Alertmanager's `group_wait` — and everything queued for that target
//! before the window closes is planned together; [`super::group`] then splits messages by its
//! usual rules (cluster, namespace, kind). The window is fixed from the oldest change, never
//! extended by later ones, so a change never waits longer than the window (plus the delay until
//! the notify thread's next pass).
//!
//! The decision is pure: the queued times come from the outbox (`notification_outbox.queued_at`,
//! the agent's clock when the row was queued), so the window survives restarts and `--once`.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

/// What to do with one target's ungrouped rows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The window is closed: plan every ungrouped row of the target now.
    Group,
    /// The window is open: leave the rows queued until this instant.
    Hold { until: Timestamp },
}

/// Decides, per target, whether its ungrouped pending rows are grouped now or held.
///
/// `rows` are (target, queued_at) of every such row. The window of a target runs from its
/// oldest row. It counts as closed when:
/// - `window` is zero (send at once);
/// - a row has no `queued_at` (queued before the column existed: nobody knows how long it has
///   waited, so it is not delayed further);
/// - `now` has reached the oldest row's `queued_at + window` (the edge itself is closed);
/// - the oldest `queued_at` is later than `now`: the clock went backwards (or another replica's
///   clock is ahead). Holding until a time the clock may reach only much later could delay a
///   message far beyond the window, so such rows are sent at once instead.
pub(crate) fn decide<'a>(
    rows: impl IntoIterator<Item = (&'a str, Option<Timestamp>)>,
    window: Duration,
    now: Timestamp,
) -> BTreeMap<&'a str, Decision> {
    // Per target: the oldest queued_at, `None` once a row without one was seen.
    let mut oldest: BTreeMap<&'a str, Option<Timestamp>> = BTreeMap::new();
    for (target, queued_at) in rows {
        oldest
            .entry(target)
            .and_modify(|o| *o = o.zip(queued_at).map(|(a, b)| a.min(b)))
            .or_insert(queued_at);
    }
    oldest
        .into_iter()
        .map(|(target, oldest)| (target, decide_one(oldest, window, now)))
        .collect()
}

fn decide_one(oldest: Option<Timestamp>, window: Duration, now: Timestamp) -> Decision {
    let Some(oldest) = oldest.filter(|_| !window.is_zero()) else {
        return Decision::Group;
    };
    if oldest > now {
        return Decision::Group;
    }
    match oldest.checked_add(window) {
        Ok(until) if now < until => Decision::Hold { until },
        _ => Decision::Group,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        format!("2026-12-01T10:{s}Z").parse().expect("a time")
    }

    #[test]
    fn decides_per_target_from_its_oldest_row() {
        use Decision::{Group, Hold};
        let ten = Duration::from_secs(600);
        let hold = |s: &str| Hold { until: at(s) };
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, Option<&'a str>)],
            Duration,
            &'a str,
            &'a [(&'a str, Decision)],
        );
        #[rustfmt::skip]
        let cases: &[Case<'_>] = &[
            ("window 0 sends at once", &[("slack", Some("00:00"))], Duration::ZERO, "00:00", &[("slack", Group)]),
            ("a fresh row is held for the window", &[("slack", Some("00:00"))], ten, "00:01", &[("slack", hold("10:00"))]),
            ("held just before the edge", &[("slack", Some("00:00"))], ten, "09:59", &[("slack", hold("10:00"))]),
            ("exactly at the edge: closed", &[("slack", Some("00:00"))], ten, "10:00", &[("slack", Group)]),
            ("after the edge", &[("slack", Some("00:00"))], ten, "25:00", &[("slack", Group)]),
            ("a later row does not extend the window",
                &[("slack", Some("00:00")), ("slack", Some("09:00"))], ten, "10:00", &[("slack", Group)]),
            ("the oldest row opens it, whatever the order",
                &[("slack", Some("05:00")), ("slack", Some("02:00"))], ten, "06:00", &[("slack", hold("12:00"))]),
            ("a row from before the upgrade (NULL) closes it",
                &[("slack", Some("05:00")), ("slack", None)], ten, "05:00", &[("slack", Group)]),
            ("NULL alone", &[("webhook", None)], ten, "00:00", &[("webhook", Group)]),
            ("the clock went backwards: sent, not held for longer than the window",
                &[("slack", Some("30:00"))], ten, "00:00", &[("slack", Group)]),
            ("several targets, each from its own oldest row",
                &[("slack", Some("00:00")), ("webhook", Some("04:00")), ("saas", None), ("webhook", Some("03:00"))],
                ten, "10:30",
                &[("saas", Group), ("slack", Group), ("webhook", hold("13:00"))]),
            ("no rows, no decision", &[], ten, "00:00", &[]),
        ];
        for (what, rows, window, now, want) in cases {
            let got = decide(
                rows.iter().map(|(t, q)| (*t, q.map(at))),
                *window,
                at(now),
            );
            let got: Vec<(&str, Decision)> = got.into_iter().collect();
            assert_eq!(got, *want, "{what}");
        }
    }

    #[test]
    fn a_huge_window_does_not_overflow() {
        let d = decide(
            [("slack", Some(Timestamp::MAX))],
            Duration::from_secs(365 * 24 * 3600),
            Timestamp::MAX,
        );
        assert_eq!(d["slack"], Decision::Group);
    }
}
