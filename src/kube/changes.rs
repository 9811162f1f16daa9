//! Change detection between two metadata listings: which reports must be fetched in full.
//!
//! An unchanged cluster then costs one metadata-only listing per cycle; full report bodies are
//! read only for objects whose `(uid, resourceVersion)` is new. A new uid under a known name
//! is a deleted-and-recreated report (Trivy's TTL rescan) and counts as changed.

use std::collections::{BTreeMap, BTreeSet};

use crate::trivy::ObjectMeta;

/// `uid → resourceVersion` as seen in the previous cycle.
pub type Versions = BTreeMap<String, String>;

/// What differs between the previous versions and the current listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionDiff {
    /// New or modified objects: `(namespace, name, uid)`, to GET in full.
    pub changed: Vec<(String, String, String)>,
    /// uids that are gone.
    pub deleted: Vec<String>,
    /// How many objects are unchanged.
    pub unchanged: usize,
    /// The versions to remember for the next cycle.
    pub current: Versions,
}

/// Compares a listing with the previous versions. resourceVersions are compared for equality
/// only: they are opaque before Kubernetes 1.35.
pub fn diff_versions<'a>(
    previous: &Versions,
    current: impl IntoIterator<Item = &'a ObjectMeta>,
) -> VersionDiff {
    let mut diff = VersionDiff::default();
    for m in current {
        if previous.get(&m.uid) == Some(&m.resource_version) {
            diff.unchanged += 1;
        } else {
            diff.changed
                .push((m.namespace.clone(), m.name.clone(), m.uid.clone()));
        }
        diff.current
            .insert(m.uid.clone(), m.resource_version.clone());
    }
    let seen: BTreeSet<&String> = diff.current.keys().collect();
    diff.deleted = previous
        .keys()
        .filter(|uid| !seen.contains(uid))
        .cloned()
        .collect();
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, uid: &str, rv: &str) -> ObjectMeta {
        ObjectMeta {
            name: name.into(),
            namespace: "ns".into(),
            uid: uid.into(),
            resource_version: rv.into(),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn diffs() {
        let prev: Versions = [("u1", "1"), ("u2", "5"), ("u3", "7")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let now = [
            meta("a", "u1", "1"), // unchanged
            meta("b", "u2", "6"), // modified in place
            meta("c", "u4", "8"), // recreated under the old name of u3, or new
        ];
        let d = diff_versions(&prev, &now);
        assert_eq!(d.unchanged, 1);
        assert_eq!(
            d.changed,
            vec![
                ("ns".into(), "b".into(), "u2".into()),
                ("ns".into(), "c".into(), "u4".into())
            ]
        );
        assert_eq!(d.deleted, vec!["u3".to_string()]);
        assert_eq!(d.current.len(), 3);
        // Second cycle with nothing changed.
        let again = diff_versions(&d.current, &now);
        assert!(again.changed.is_empty() && again.deleted.is_empty());
        assert_eq!(again.unchanged, 3);
        // First cycle: everything is new.
        let first = diff_versions(&Versions::new(), &now);
        assert_eq!(first.changed.len(), 3);
    }
}
