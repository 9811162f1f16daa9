//! Workload identity: which workload a report belongs to, and which of several reports for one
//! workload+container is current.
//!
//! Deployments are scanned through their ReplicaSets, so every rollout produces a report with a
//! new name and uid (the operator names them `replicaset-<replicaset>-<container>`, as in the
//! upstream samples in tests/fixtures/trivy). Users think in Deployments: both the old and the
//! new ReplicaSet's reports must land on the same workload, or every rollout would look like
//! "all fixed" plus "all new".

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use jiff::Timestamp;

use super::report::{Owner, OwnerReference};

/// The top-level workload a finding is tracked under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub kind: String,
    pub name: String,
    /// `""` for cluster-scoped owners.
    pub namespace: String,
}

/// What the API said about a ReplicaSet, as far as identity needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSetInfo {
    pub owner_references: Vec<OwnerReference>,
    /// The `deployment.kubernetes.io/revision` annotation.
    pub revision: Option<u64>,
}

/// The outcome of looking up a report's direct owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerLookup {
    /// The owner is not a ReplicaSet: nothing to look up.
    NotNeeded,
    Found(ReplicaSetInfo),
    /// 404: the ReplicaSet is gone (its reports are about to be garbage-collected).
    Missing,
    /// 403: the agent may not read ReplicaSets; identity stays at the ReplicaSet.
    Forbidden,
}

impl OwnerLookup {
    /// The Deployment revision of a ReplicaSet that was found and carries one.
    pub fn revision(&self) -> Option<u64> {
        match self {
            OwnerLookup::Found(rs) => rs.revision,
            _ => None,
        }
    }
}

/// Resolves a report's owner to the workload users know: a ReplicaSet controlled by a
/// Deployment becomes the Deployment; anything else (including a ReplicaSet that could not be
/// read) stays what the operator recorded.
pub fn workload_of(owner: &Owner, lookup: &OwnerLookup) -> Workload {
    if owner.kind == "ReplicaSet"
        && let OwnerLookup::Found(rs) = lookup
        && let Some(deployment) = rs.owner_references.iter().find(|r| {
            r.kind == "Deployment"
                && r.api_version.starts_with("apps/")
                && r.controller.unwrap_or(true)
                && !r.name.is_empty()
        })
    {
        return Workload {
            kind: "Deployment".into(),
            name: deployment.name.clone(),
            namespace: owner.namespace.clone(),
        };
    }
    Workload {
        kind: owner.kind.clone(),
        name: owner.name.clone(),
        namespace: owner.namespace.clone(),
    }
}

/// How recent a report is, for choosing among several reports of one workload+container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The owning ReplicaSet's `deployment.kubernetes.io/revision`, when it could be read.
    pub deployment_revision: Option<u64>,
    pub update_timestamp: Option<Timestamp>,
    pub creation_timestamp: Option<Timestamp>,
    /// Report name: the last tie-breaker, so the choice never depends on listing order.
    pub name: String,
}

impl Revision {
    /// The rule: when both sides know their Deployment revision, the higher revision is newer
    /// (a rollback re-labels the old ReplicaSet with a new, higher revision, so this follows
    /// what is actually deployed). Otherwise, or on a tie, the later `updateTimestamp` wins,
    /// then the later `creationTimestamp`, then the greater name. A missing time is older
    /// than any time.
    pub fn cmp_recency(&self, other: &Revision) -> Ordering {
        let by_revision = match (self.deployment_revision, other.deployment_revision) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => Ordering::Equal,
        };
        by_revision
            .then_with(|| self.update_timestamp.cmp(&other.update_timestamp))
            .then_with(|| self.creation_timestamp.cmp(&other.creation_timestamp))
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// Keeps, per key (typically `(Workload, container)`), the most recent item by
/// [`Revision::cmp_recency`]. Returns the winners and the superseded items (old ReplicaSet
/// reports during a rollout), so the caller can count or log the latter.
pub fn newest_by_key<K: Ord, T>(
    items: impl IntoIterator<Item = (K, Revision, T)>,
) -> (BTreeMap<K, (Revision, T)>, Vec<T>) {
    let mut winners: BTreeMap<K, (Revision, T)> = BTreeMap::new();
    let mut superseded = Vec::new();
    for (key, rev, item) in items {
        match winners.entry(key) {
            Entry::Vacant(v) => {
                v.insert((rev, item));
            }
            Entry::Occupied(mut o) => {
                if rev.cmp_recency(&o.get().0) == Ordering::Greater {
                    let (_, old) = o.insert((rev, item));
                    superseded.push(old);
                } else {
                    superseded.push(item);
                }
            }
        }
    }
    (winners, superseded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, name: &str) -> Owner {
        Owner {
            kind: kind.into(),
            name: name.into(),
            namespace: "shop".into(),
        }
    }

    fn oref(api: &str, kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: api.into(),
            kind: kind.into(),
            name: name.into(),
            uid: "x".into(),
            controller,
        }
    }

    fn found(refs: Vec<OwnerReference>) -> OwnerLookup {
        OwnerLookup::Found(ReplicaSetInfo {
            owner_references: refs,
            revision: Some(1),
        })
    }

    #[test]
    fn workload_resolution() {
        let cases = [
            (
                owner("ReplicaSet", "web-5d8f"),
                found(vec![oref("apps/v1", "Deployment", "web", Some(true))]),
                ("Deployment", "web"),
            ),
            (
                owner("ReplicaSet", "web-5d8f"),
                found(vec![oref("apps/v1", "Deployment", "web", None)]),
                ("Deployment", "web"),
            ),
            (
                owner("ReplicaSet", "web-5d8f"),
                found(vec![oref("apps/v1", "Deployment", "web", Some(false))]),
                ("ReplicaSet", "web-5d8f"),
            ),
            (
                owner("ReplicaSet", "web-5d8f"),
                found(vec![oref(
                    "argoproj.io/v1alpha1",
                    "Rollout",
                    "web",
                    Some(true),
                )]),
                ("ReplicaSet", "web-5d8f"),
            ),
            (
                owner("ReplicaSet", "bare"),
                found(vec![]),
                ("ReplicaSet", "bare"),
            ),
            (
                owner("ReplicaSet", "web-5d8f"),
                OwnerLookup::Forbidden,
                ("ReplicaSet", "web-5d8f"),
            ),
            (
                owner("ReplicaSet", "web-5d8f"),
                OwnerLookup::Missing,
                ("ReplicaSet", "web-5d8f"),
            ),
            (
                owner("StatefulSet", "db"),
                OwnerLookup::NotNeeded,
                ("StatefulSet", "db"),
            ),
            (
                owner("CronJob", "nightly"),
                OwnerLookup::NotNeeded,
                ("CronJob", "nightly"),
            ),
            (
                owner("Pod", "web-5d8f-abcde"),
                found(vec![oref("apps/v1", "Deployment", "web", Some(true))]),
                ("Pod", "web-5d8f-abcde"),
            ),
        ];
        for (o, lookup, (kind, name)) in cases {
            let w = workload_of(&o, &lookup);
            assert_eq!(
                (w.kind.as_str(), w.name.as_str()),
                (kind, name),
                "{o:?} {lookup:?}"
            );
            assert_eq!(w.namespace, "shop");
        }
    }

    #[test]
    fn rollout_maps_both_replicasets_to_one_deployment() {
        let dep = vec![oref("apps/v1", "Deployment", "web", Some(true))];
        let a = workload_of(&owner("ReplicaSet", "web-aaaa"), &found(dep.clone()));
        let b = workload_of(&owner("ReplicaSet", "web-bbbb"), &found(dep));
        assert_eq!(a, b);
    }

    fn rev(r: Option<u64>, updated: Option<&str>, created: Option<&str>, name: &str) -> Revision {
        Revision {
            deployment_revision: r,
            update_timestamp: updated.map(|s| s.parse().unwrap()),
            creation_timestamp: created.map(|s| s.parse().unwrap()),
            name: name.into(),
        }
    }

    #[test]
    fn newest_revision_wins() {
        let t1 = Some("2026-01-01T00:00:00Z");
        let t2 = Some("2026-01-02T00:00:00Z");
        // (a, b, a newer than b?)
        let cases = [
            (rev(Some(3), t1, t1, "a"), rev(Some(2), t2, t2, "b"), true),
            (rev(Some(2), t2, t1, "a"), rev(Some(2), t1, t2, "b"), true),
            (rev(None, t2, t1, "a"), rev(Some(9), t1, t1, "b"), true),
            (rev(None, None, t2, "a"), rev(None, None, t1, "b"), true),
            (rev(None, t1, None, "a"), rev(None, None, t2, "b"), true),
            (rev(None, None, None, "b"), rev(None, None, None, "a"), true),
        ];
        for (a, b, newer) in cases {
            let want = if newer {
                Ordering::Greater
            } else {
                Ordering::Less
            };
            assert_eq!(a.cmp_recency(&b), want, "{a:?} vs {b:?}");
            assert_eq!(b.cmp_recency(&a), want.reverse(), "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn newest_by_key_is_order_independent() {
        let t1 = Some("2026-01-01T00:00:00Z");
        let t2 = Some("2026-01-02T00:00:00Z");
        let items = vec![
            ("web/app", rev(Some(1), t2, t1, "old"), "old"),
            ("web/app", rev(Some(2), t1, t2, "new"), "new"),
            ("db/main", rev(None, t1, t1, "db"), "db"),
        ];
        let mut reversed = items.clone();
        reversed.reverse();
        for input in [items, reversed] {
            let (winners, superseded) = newest_by_key(input);
            assert_eq!(winners["web/app"].1, "new");
            assert_eq!(winners["db/main"].1, "db");
            assert_eq!(superseded, vec!["old"]);
        }
    }
}
