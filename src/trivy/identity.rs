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

use super::instance::{RestartPolicy, TopObject, family_of};
use super::report::OwnerReference;

/// The top-level workload a finding is tracked under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub kind: String,
    pub name: String,
    /// `""` for cluster-scoped owners.
    pub namespace: String,
}

/// The annotation the Deployment controller sets on each of its ReplicaSets.
pub const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
/// The annotation the Argo Rollouts controller sets on each ReplicaSet of a Rollout
/// (<https://argo-rollouts.readthedocs.io/en/stable/features/specification/>).
pub const ROLLOUT_REVISION: &str = "rollout.argoproj.io/revision";

/// The one rule for "a workload kind whose ReplicaSets carry a revision": such a workload has
/// one ReplicaSet per pod template, numbered by this annotation, and the highest number is
/// what runs (a rollback re-numbers an old ReplicaSet). Deployments and Argo Rollouts get the
/// same current-revision, rollback and container-removal rules from it; every other kind has
/// one report per container.
pub fn revision_annotation(workload_kind: &str) -> Option<&'static str> {
    match workload_kind {
        "Deployment" => Some(DEPLOYMENT_REVISION),
        "Rollout" => Some(ROLLOUT_REVISION),
        _ => None,
    }
}

/// Whether reports of this workload kind are rivals ranked by their ReplicaSet's revision.
pub fn has_revisions(workload_kind: &str) -> bool {
    revision_annotation(workload_kind).is_some()
}

/// One object of an owner chain, as an ownerReference (or, for the report's own owner,
/// Trivy Operator's labels) names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// What the API said about one object of a chain, as far as identity needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    pub owner_references: Vec<OwnerReference>,
    /// The revision annotations ([`DEPLOYMENT_REVISION`], [`ROLLOUT_REVISION`]) it carries. A
    /// list, not a map: one is cached per ReplicaSet of the cluster, and an empty or one-entry
    /// `Vec` costs a tenth of a B-tree node.
    pub revisions: Vec<(&'static str, u64)>,
    pub created: Option<Timestamp>,
    /// `metadata.generateName` (a boxed `str`: most objects have none, and one is cached per
    /// owner), for [`super::instance::family_of`].
    pub generate_name: Option<Box<str>>,
    /// A Pod's `spec.restartPolicy`, for [`super::instance::family_of`].
    pub restart_policy: Option<RestartPolicy>,
}

/// The outcome of looking up one object of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectLookup {
    Found(ObjectInfo),
    /// 404: the object is gone (or being deleted).
    Missing,
    /// 403: RBAC does not let the agent read this kind.
    Forbidden,
    /// The agent cannot tell where this kind lives: its API group/version is not served, or
    /// it is cluster-scoped.
    Unlocatable,
}

/// Why a chain stopped below its real top.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The controller the agent could not read.
    pub key: ObjectKey,
    /// 403 (else: its kind could not be located).
    pub forbidden: bool,
}

/// Where a report's owner chain leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    pub workload: Workload,
    /// The revision of the object right below the workload (its ReplicaSet), by the
    /// workload kind's [`revision_annotation`].
    pub revision: Option<u64>,
    /// The workload's `metadata.creationTimestamp`, when it was read.
    pub created: Option<Timestamp>,
    /// 404 on the report's own owner: its report is about to be garbage-collected.
    pub owner_gone: bool,
    /// A controller above the workload that could not be read; the workload is the nearest
    /// readable owner below it.
    pub blocked: Option<Blocked>,
}

/// Chains longer than this are cut at this depth (a real one has two or three links).
pub const MAX_CHAIN_DEPTH: usize = 8;

/// The controller of an object: the ownerReference with `controller: true` (the API server
/// allows at most one). A lone reference without the field counts too: older writers omit it,
/// and it cannot be anything else.
pub fn controller_of(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    let named = |r: &&OwnerReference| !r.name.is_empty() && !r.kind.is_empty();
    refs.iter()
        .filter(named)
        .find(|r| r.controller == Some(true))
        .or(match refs {
            [only] if only.controller.is_none() => Some(only).filter(named),
            _ => None,
        })
}

/// Follows a report owner's controller chain to its top: the first object without a
/// controller is the workload, whatever its kind (ReplicaSet → Deployment, ReplicaSet →
/// Rollout, Job → CronJob, Pod → a custom controller...). `lookup` reads one object; the rule
/// is here, the reading in the caller.
///
/// - The report's own owner gone (404): attributed to itself, [`Attribution::owner_gone`].
/// - A controller gone (404) higher up: the workload is that controller, named by its child's
///   reference (the evidence that it was the workload; its findings close when it is found
///   gone).
/// - A controller that may not be read (403) or cannot be located: the workload is the nearest
///   readable owner below it, [`Attribution::blocked`] says which.
/// - A loop, or a chain deeper than [`MAX_CHAIN_DEPTH`]: stops at the last object read.
/// - The workload read is one run of a family (a Job per release, a generated or run-once
///   Pod, a Workflow): the workload is the family ([`family_of`]), so the next run is not new.
pub fn resolve_chain<E>(
    start: &ObjectKey,
    mut lookup: impl FnMut(&ObjectKey) -> Result<ObjectLookup, E>,
) -> Result<Attribution, E> {
    let workload = |k: &ObjectKey| Workload {
        kind: k.kind.clone(),
        name: k.name.clone(),
        namespace: start.namespace.clone(),
    };
    let revision_below = |top: &ObjectKey, below: Option<&ObjectInfo>| {
        let annotation = revision_annotation(&top.kind)?;
        below?
            .revisions
            .iter()
            .find(|(a, _)| *a == annotation)
            .map(|(_, r)| *r)
    };
    let mut info = match lookup(start)? {
        ObjectLookup::Found(info) => info,
        other => {
            return Ok(Attribution {
                workload: workload(start),
                revision: None,
                created: None,
                owner_gone: other == ObjectLookup::Missing,
                blocked: None,
            });
        }
    };
    let mut current = start.clone();
    let mut below: Option<ObjectInfo> = None;
    let mut seen = vec![start.clone()];
    let mut blocked = None;
    while let Some(r) = controller_of(&info.owner_references) {
        let next = ObjectKey {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: start.namespace.clone(),
            name: r.name.clone(),
        };
        if seen.contains(&next) || seen.len() >= MAX_CHAIN_DEPTH {
            break;
        }
        match lookup(&next)? {
            ObjectLookup::Found(next_info) => {
                below = Some(std::mem::replace(&mut info, next_info));
                seen.push(next.clone());
                current = next;
            }
            ObjectLookup::Missing => {
                return Ok(Attribution {
                    workload: workload(&next),
                    revision: revision_below(&next, Some(&info)),
                    created: None,
                    owner_gone: false,
                    blocked: None,
                });
            }
            outcome => {
                blocked = Some(Blocked {
                    key: next,
                    forbidden: outcome == ObjectLookup::Forbidden,
                });
                break;
            }
        }
    }
    // The top is the workload, unless it is one run of a family: then the family is.
    let family = family_of(&TopObject {
        kind: &current.kind,
        name: &current.name,
        generate_name: info.generate_name.as_deref().unwrap_or(""),
        restart_policy: info.restart_policy,
    });
    let mut top = workload(&current);
    if let Some(family) = family {
        top.name = family;
    }
    Ok(Attribution {
        workload: top,
        revision: revision_below(&current, below.as_ref()),
        created: info.created,
        owner_gone: false,
        blocked,
    })
}

/// How recent a report is, for choosing among several reports of one workload+container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The owning ReplicaSet's revision ([`revision_annotation`] of its Deployment or Rollout),
    /// when it could be read.
    pub deployment_revision: Option<u64>,
    pub update_timestamp: Option<Timestamp>,
    pub creation_timestamp: Option<Timestamp>,
    /// Report name: the last tie-breaker, so the choice never depends on listing order.
    pub name: String,
}

impl Revision {
    /// The rule: when both sides know their ReplicaSet revision, the higher revision is newer
    /// (a rollback re-labels the old ReplicaSet with a new, higher revision, so this follows
    /// what is actually deployed). Otherwise, or on a tie, the later `updateTimestamp` wins,
    /// then the later `creationTimestamp`, then the greater name (`natural_cmp`: numbers as
    /// numbers). A missing time is older than any time.
    pub fn cmp_recency(&self, other: &Revision) -> Ordering {
        let by_revision = match (self.deployment_revision, other.deployment_revision) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => Ordering::Equal,
        };
        by_revision
            .then_with(|| self.update_timestamp.cmp(&other.update_timestamp))
            .then_with(|| self.creation_timestamp.cmp(&other.creation_timestamp))
            .then_with(|| natural_cmp(&self.name, &other.name))
    }
}

/// Names compared with their numbers as numbers (`job-migrate-9-app` < `job-migrate-10-app`), so
/// that of two runs' reports created in the same second (creation times have second precision)
/// the later-numbered run wins; otherwise by bytes. A total order either way, so the choice never
/// depends on listing order.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> impl Iterator<Item = (bool, &str)> {
        let mut rest = s;
        std::iter::from_fn(move || {
            let digits = rest.as_bytes().first()?.is_ascii_digit();
            let end = rest
                .bytes()
                .position(|b| b.is_ascii_digit() != digits)
                .unwrap_or(rest.len());
            let (chunk, tail) = rest.split_at(end);
            rest = tail;
            Some((digits, chunk))
        })
    }
    let mut left = chunks(a);
    let mut right = chunks(b);
    loop {
        let ord = match (left.next(), right.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some((true, x)), Some((true, y))) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            (Some((_, x)), Some((_, y))) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
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

    fn oref(api: &str, kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: api.into(),
            kind: kind.into(),
            name: name.into(),
            uid: "x".into(),
            controller,
        }
    }

    fn key(api: &str, kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            api_version: api.into(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn obj(refs: Vec<OwnerReference>, revisions: &[(&'static str, u64)], created: Option<&str>) -> ObjectLookup {
        ObjectLookup::Found(ObjectInfo {
            owner_references: refs,
            revisions: revisions.to_vec(),
            created: created.map(|t| t.parse().unwrap()),
            ..ObjectInfo::default()
        })
    }

    /// An object that may be one run of a family: its `generateName` and restart policy.
    fn run(refs: Vec<OwnerReference>, generate_name: &str, restart: Option<RestartPolicy>) -> ObjectLookup {
        ObjectLookup::Found(ObjectInfo {
            owner_references: refs,
            created: Some("2026-01-02T00:00:00Z".parse().unwrap()),
            generate_name: (!generate_name.is_empty()).then(|| generate_name.into()),
            restart_policy: restart,
            ..ObjectInfo::default()
        })
    }

    #[test]
    fn the_controller_reference() {
        let dep = oref("apps/v1", "Deployment", "web", Some(true));
        let other = oref("v1", "ConfigMap", "x", Some(false));
        let unmarked = oref("apps/v1", "Deployment", "web", None);
        // (what, references, controller's name)
        let cases: Vec<(&str, Vec<OwnerReference>, Option<&str>)> = vec![
            ("none", vec![], None),
            ("the controller among others", vec![other.clone(), dep.clone()], Some("web")),
            ("only non-controllers", vec![other.clone()], None),
            ("a lone reference without the field", vec![unmarked.clone()], Some("web")),
            ("several without the field: none is the controller", vec![unmarked.clone(), unmarked.clone()], None),
            ("a nameless controller is no controller", vec![oref("apps/v1", "Deployment", "", Some(true))], None),
        ];
        for (what, refs, want) in cases {
            assert_eq!(controller_of(&refs).map(|r| r.name.as_str()), want, "{what}");
        }
    }

    #[test]
    fn the_chain_leads_to_its_top_controller() {
        const T1: &str = "2026-01-01T00:00:00Z";
        let rs = key("apps/v1", "ReplicaSet", "web-5d8f");
        let pod = key("v1", "Pod", "web-abcde");
        let job = key("batch/v1", "Job", "nightly-29000000");
        let cluster: Vec<(ObjectKey, ObjectLookup)> = vec![
            // ReplicaSet → Deployment
            (rs.clone(), obj(vec![oref("apps/v1", "Deployment", "web", Some(true))], &[(DEPLOYMENT_REVISION, 4)], None)),
            (key("apps/v1", "Deployment", "web"), obj(vec![], &[], Some(T1))),
            // ReplicaSet → Rollout (both revision annotations: the workload kind picks)
            (key("apps/v1", "ReplicaSet", "shop-7f9c"), obj(vec![oref("argoproj.io/v1alpha1", "Rollout", "shop", Some(true))], &[(ROLLOUT_REVISION, 7), (DEPLOYMENT_REVISION, 1)], None)),
            (key("argoproj.io/v1alpha1", "Rollout", "shop"), obj(vec![], &[], Some(T1))),
            // Job → CronJob
            (job.clone(), obj(vec![oref("batch/v1", "CronJob", "nightly", Some(true))], &[], None)),
            (key("batch/v1", "CronJob", "nightly"), obj(vec![], &[], Some(T1))),
            // Pod → an unknown controller → its own unknown controller
            (pod.clone(), obj(vec![oref("apps.kruise.io/v1alpha1", "CloneSet", "web", Some(true))], &[], None)),
            (key("apps.kruise.io/v1alpha1", "CloneSet", "web"), obj(vec![oref("example.com/v1", "App", "web", Some(true))], &[], None)),
            (key("example.com/v1", "App", "web"), obj(vec![], &[], Some(T1))),
            // A non-controller owner is not followed
            (key("apps/v1", "StatefulSet", "db"), obj(vec![oref("example.com/v1", "App", "db", Some(false))], &[], Some(T1))),
            // Forbidden and unlocatable controllers, a gone one
            (key("apps/v1", "ReplicaSet", "locked-1"), obj(vec![oref("argoproj.io/v1alpha1", "Rollout", "locked", Some(true))], &[(ROLLOUT_REVISION, 2)], Some(T1))),
            (key("argoproj.io/v1alpha1", "Rollout", "locked"), ObjectLookup::Forbidden),
            (key("apps/v1", "ReplicaSet", "odd-1"), obj(vec![oref("gone.example.com/v1", "Thing", "odd", Some(true))], &[], None)),
            (key("gone.example.com/v1", "Thing", "odd"), ObjectLookup::Unlocatable),
            (key("apps/v1", "ReplicaSet", "orphan-1"), obj(vec![oref("apps/v1", "Deployment", "orphan", Some(true))], &[(DEPLOYMENT_REVISION, 2)], None)),
            (key("apps/v1", "Deployment", "orphan"), ObjectLookup::Missing),
            (key("apps/v1", "ReplicaSet", "gone-1"), ObjectLookup::Missing),
            (key("apps/v1", "ReplicaSet", "secret-1"), ObjectLookup::Forbidden),
            // A loop: a → b → a
            (key("example.com/v1", "Loop", "a"), obj(vec![oref("example.com/v1", "Loop", "b", Some(true))], &[], None)),
            (key("example.com/v1", "Loop", "b"), obj(vec![oref("example.com/v1", "Loop", "a", Some(true))], &[], Some(T1))),
            // Runs of families: a Job per release, a generated pod, a workflow's pods
            (key("batch/v1", "Job", "migrate-41"), run(vec![], "", None)),
            (key("v1", "Pod", "ci-x7k2p"), run(vec![], "ci-", Some(RestartPolicy::Always))),
            (key("v1", "Pod", "debug"), run(vec![], "", Some(RestartPolicy::Always))),
            (key("v1", "Pod", "build-x7k2p-1234"), run(vec![oref("argoproj.io/v1alpha1", "Workflow", "build-x7k2p", Some(true))], "", Some(RestartPolicy::Never))),
            (key("argoproj.io/v1alpha1", "Workflow", "build-x7k2p"), run(vec![], "build-", None)),
            (key("v1", "Pod", "lint-q9z-55"), run(vec![oref("argoproj.io/v1alpha1", "Workflow", "lint-q9z", Some(true))], "", Some(RestartPolicy::Never))),
            (key("argoproj.io/v1alpha1", "Workflow", "lint-q9z"), ObjectLookup::Forbidden),
            (key("batch/v1", "Job", "gone-7"), run(vec![oref("batch/v1", "CronJob", "gone", Some(true))], "", None)),
        ];
        // An endless chain: deep-0 → deep-1 → …
        let deep = |i: usize| key("example.com/v1", "Deep", &format!("deep-{i}"));
        let lookup = |k: &ObjectKey| -> Result<ObjectLookup, ()> {
            if k.kind == "Deep" {
                let i: usize = k.name["deep-".len()..].parse().unwrap();
                return Ok(obj(vec![oref("example.com/v1", "Deep", &format!("deep-{}", i + 1), Some(true))], &[], None));
            }
            Ok(cluster.iter().find(|(c, _)| c == k).map_or(ObjectLookup::Missing, |(_, l)| l.clone()))
        };
        let blocked = |k: ObjectKey, forbidden| Some(Blocked { key: k, forbidden });
        // (start, (kind, name), revision, created?, owner gone, blocked)
        type Case = (ObjectKey, (&'static str, &'static str), Option<u64>, bool, bool, Option<Blocked>);
        let cases: Vec<Case> = vec![
            (rs.clone(), ("Deployment", "web"), Some(4), true, false, None),
            (key("apps/v1", "ReplicaSet", "shop-7f9c"), ("Rollout", "shop"), Some(7), true, false, None),
            (job, ("CronJob", "nightly"), None, true, false, None),
            (pod, ("App", "web"), None, true, false, None),
            (key("apps/v1", "StatefulSet", "db"), ("StatefulSet", "db"), None, true, false, None),
            (key("apps/v1", "ReplicaSet", "locked-1"), ("ReplicaSet", "locked-1"), None, true, false,
                blocked(key("argoproj.io/v1alpha1", "Rollout", "locked"), true)),
            (key("apps/v1", "ReplicaSet", "odd-1"), ("ReplicaSet", "odd-1"), None, false, false,
                blocked(key("gone.example.com/v1", "Thing", "odd"), false)),
            (key("apps/v1", "ReplicaSet", "orphan-1"), ("Deployment", "orphan"), Some(2), false, false, None),
            (key("apps/v1", "ReplicaSet", "gone-1"), ("ReplicaSet", "gone-1"), None, false, true, None),
            (key("apps/v1", "ReplicaSet", "secret-1"), ("ReplicaSet", "secret-1"), None, false, false, None),
            (key("example.com/v1", "Loop", "a"), ("Loop", "b"), None, true, false, None),
            (deep(0), ("Deep", "deep-7"), None, false, false, None),
            (key("batch/v1", "Job", "migrate-41"), ("Job", "migrate-*"), None, true, false, None),
            (key("v1", "Pod", "ci-x7k2p"), ("Pod", "ci-*"), None, true, false, None),
            (key("v1", "Pod", "debug"), ("Pod", "debug"), None, true, false, None),
            (key("v1", "Pod", "build-x7k2p-1234"), ("Workflow", "build-*"), None, true, false, None),
            // The workflow may not be read: the run-once pod is the nearest run, named by its base
            (key("v1", "Pod", "lint-q9z-55"), ("Pod", "lint-q9z-*"), None, true, false,
                blocked(key("argoproj.io/v1alpha1", "Workflow", "lint-q9z"), true)),
            // A CronJob gone above its Job: the CronJob by name, not a family
            (key("batch/v1", "Job", "gone-7"), ("CronJob", "gone"), None, false, false, None),
        ];
        for (start, (kind, name), revision, created, gone, want_blocked) in cases {
            let got = resolve_chain(&start, lookup).unwrap();
            let what = format!("{start:?}");
            assert_eq!((got.workload.kind.as_str(), got.workload.name.as_str()), (kind, name), "{what}");
            assert_eq!(got.workload.namespace, "shop", "{what}");
            assert_eq!(got.revision, revision, "{what}");
            assert_eq!(got.created.is_some(), created, "{what}");
            assert_eq!(got.owner_gone, gone, "{what}");
            assert_eq!(got.blocked, want_blocked, "{what}");
        }
    }

    #[test]
    fn a_lookup_error_stops_the_chain() {
        let rs = key("apps/v1", "ReplicaSet", "web-5d8f");
        let got = resolve_chain(&rs, |k| {
            if k.kind == "ReplicaSet" {
                Ok(obj(vec![oref("apps/v1", "Deployment", "web", Some(true))], &[], None))
            } else {
                Err("timeout")
            }
        });
        assert_eq!(got, Err("timeout"));
    }

    #[test]
    fn kinds_whose_replicasets_carry_a_revision() {
        let cases = [
            ("Deployment", Some(DEPLOYMENT_REVISION)),
            ("Rollout", Some(ROLLOUT_REVISION)),
            ("StatefulSet", None),
            ("DaemonSet", None),
            ("ReplicaSet", None),
            ("CronJob", None),
            ("Pod", None),
            ("CloneSet", None),
        ];
        for (kind, want) in cases {
            assert_eq!(revision_annotation(kind), want, "{kind}");
            assert_eq!(has_revisions(kind), want.is_some(), "{kind}");
        }
    }

    #[test]
    fn a_rollout_maps_both_replicasets_to_one_workload() {
        for (api, kind, annotation) in [
            ("apps/v1", "Deployment", DEPLOYMENT_REVISION),
            ("argoproj.io/v1alpha1", "Rollout", ROLLOUT_REVISION),
        ] {
            let lookup = |k: &ObjectKey| -> Result<ObjectLookup, ()> {
                Ok(match k.name.as_str() {
                    "web-aaaa" => obj(vec![oref(api, kind, "web", Some(true))], &[(annotation, 1)], None),
                    "web-bbbb" => obj(vec![oref(api, kind, "web", Some(true))], &[(annotation, 2)], None),
                    _ => obj(vec![], &[], None),
                })
            };
            let a = resolve_chain(&key("apps/v1", "ReplicaSet", "web-aaaa"), lookup).unwrap();
            let b = resolve_chain(&key("apps/v1", "ReplicaSet", "web-bbbb"), lookup).unwrap();
            assert_eq!(a.workload, b.workload, "{kind}");
            assert_eq!((a.revision, b.revision), (Some(1), Some(2)), "{kind}");
        }
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
    fn names_compare_with_their_numbers_as_numbers() {
        use Ordering::*;
        let cases = [
            ("job-migrate-9-app", "job-migrate-10-app", Less),
            ("job-migrate-10-app", "job-migrate-9-app", Greater),
            ("job-migrate-41-app", "job-migrate-41-app", Equal),
            ("job-migrate-041-app", "job-migrate-41-app", Less), // equal numbers: by bytes
            ("pod-a-app", "pod-b-app", Less),
            ("web-5d8f", "web-5d8g", Less),
            ("run-2", "run-2-retry", Less),
            ("9", "10", Less),
            ("", "a", Less),
            ("a1", "aa", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(natural_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(natural_cmp(b, a), want.reverse(), "{b} vs {a}");
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
