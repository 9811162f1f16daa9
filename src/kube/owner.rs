//! Owner lookups for workload identity: a report names its direct owner (a ReplicaSet, a Pod,
//! a Job...); that object's controller reference names the next one, up to the workload users
//! know (a Deployment, an Argo Rollout, a CronJob, a custom controller). The rule is
//! [`resolve_chain`]; this is the shell that reads the objects, cached because every container
//! of every workload asks for the same few owners each cycle.
//!
//! Kinds the agent knows are read from their fixed collection ([`workload_collection`]); any
//! other controller kind is located through API discovery (`GET /apis/<group>/<version>`, the
//! resource list the API server serves for every group version, see
//! <https://kubernetes.io/docs/concepts/overview/kubernetes-api/#discovery-api>).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::client::{Client, encode_query};
use super::error::KubeError;
use super::workload::{api_version_of, known_collection};
#[cfg(doc)]
use super::workload::workload_collection;
use crate::metrics::{Counter, Family};
use crate::trivy::identity::{DEPLOYMENT_REVISION, ROLLOUT_REVISION, controller_of};
use crate::trivy::instance::RestartPolicy;
use crate::trivy::{
    Attribution, ObjectInfo, ObjectKey, ObjectLookup, ObjectMeta, Owner, OwnerReference, Workload,
};
#[cfg(doc)]
use crate::trivy::resolve_chain;

/// Where objects of one kind live: the collection's path prefix (`/apis/apps/v1`) and plural.
type Collection = (String, String);

/// One group version's resources as discovery lists them: `(kind, plural, namespaced)`.
type Resources = Vec<(String, String, bool)>;

/// Every served namespaced resource: `(kind, collection prefix, plural)`.
type Served = Vec<(String, String, String)>;

/// One cached owner lookup.
struct Cached {
    lookup: ObjectLookup,
    at: Instant,
    /// The [`OwnerResolver::prune`] cycle that read it.
    cycle: u64,
}

/// Caches owner lookups. ownerReferences never change, but revision annotations do on a
/// rollback, and an object can go away, hence the expiry.
pub struct OwnerResolver {
    /// Each object with when it was read and in which cycle ([`OwnerResolver::prune`] counts
    /// them). One entry per ReplicaSet of the cluster, so entries stay small: no second set of
    /// keys, and only the controller reference ([`controller_of`]) of each object.
    objects: HashMap<ObjectKey, Cached>,
    /// Discovery answers by apiVersion: `(kind, plural, namespaced)` of each resource, `None`
    /// when the group version is not served (or may not be discovered).
    discovered: HashMap<String, (Option<Resources>, Instant)>,
    ttl: Duration,
    /// Kinds already warned about (403 or not locatable): once per kind per process.
    warned: HashSet<String>,
    /// The current cycle, counted by [`OwnerResolver::prune`].
    cycle: u64,
    /// `kijo_kube_owner_forbidden`, by kind.
    forbidden: Family<Vec<(String, String)>, Counter>,
    /// Every served namespaced resource by kind (aggregated discovery), when asked for.
    served: Option<(Option<Served>, Instant)>,
}

impl Default for OwnerResolver {
    fn default() -> Self {
        OwnerResolver::new(Duration::from_secs(600), Family::default())
    }
}

impl OwnerResolver {
    /// `forbidden` counts the lookups RBAC refused, by kind (see [`super::KubeMetrics`]).
    pub fn new(ttl: Duration, forbidden: Family<Vec<(String, String)>, Counter>) -> Self {
        OwnerResolver {
            objects: HashMap::new(),
            discovered: HashMap::new(),
            ttl,
            warned: HashSet::new(),
            cycle: 0,
            forbidden,
            served: None,
        }
    }

    /// The workload a report owner belongs to: the top of its controller chain. 403, 404 and
    /// kinds that cannot be located are answers ([`resolve_chain`] says what they mean); other
    /// errors are returned so the cycle fails rather than recording a wrong identity.
    pub fn attribute(&mut self, client: &Client, owner: &Owner) -> Result<Attribution, KubeError> {
        let Some(start) = start_key(owner) else {
            return Ok(Attribution {
                workload: Workload {
                    kind: owner.kind.clone(),
                    name: owner.name.clone(),
                    namespace: owner.namespace.clone(),
                },
                revision: None,
                created: None,
                owner_gone: false,
                blocked: None,
            });
        };
        crate::trivy::resolve_chain(&start, |key| self.lookup(client, key))
    }

    /// Like [`OwnerResolver::attribute`] but reads the report's own owner again unless this
    /// cycle already did: the revision annotation moves on a rollback (the old ReplicaSet gets
    /// the highest revision), and the poll cycle needs it now, not when the cache entry
    /// expires. Used only where a container of a workload with revisions has several reports,
    /// so a quiet cluster pays nothing.
    pub fn refresh(&mut self, client: &Client, owner: &Owner) -> Result<Attribution, KubeError> {
        if let Some(start) = start_key(owner)
            && self
                .objects
                .get(&start)
                .is_some_and(|c| c.cycle != self.cycle)
        {
            self.objects.remove(&start);
        }
        self.attribute(client, owner)
    }

    /// Drops expired entries (bounding memory by the live owners) and starts a new cycle for
    /// [`OwnerResolver::refresh`]; call once at the start of every cycle.
    pub fn prune(&mut self) {
        let ttl = self.ttl;
        self.cycle += 1;
        self.objects.retain(|_, c| c.at.elapsed() < ttl);
        self.discovered.retain(|_, (_, at)| at.elapsed() < ttl);
        if self.served.as_ref().is_some_and(|(_, at)| at.elapsed() >= ttl) {
            self.served = None;
        }
    }

    /// One object of a chain, from the cache or the API.
    fn lookup(&mut self, client: &Client, key: &ObjectKey) -> Result<ObjectLookup, KubeError> {
        if let Some(c) = self.objects.get(key)
            && c.at.elapsed() < self.ttl
        {
            return Ok(c.lookup.clone());
        }
        let lookup = match self.collection(client, &key.api_version, &key.kind)? {
            None => {
                self.warn_once(&key.kind, || {
                    log::warn!(kind = key.kind.as_str(), api_version = key.api_version.as_str(); "cannot locate this owner kind through API discovery (not served, or cluster-scoped); reports stay attributed to the nearest owner below it");
                });
                ObjectLookup::Unlocatable
            }
            Some((prefix, plural)) => self.read(client, key, &prefix, &plural)?,
        };
        self.objects.insert(
            key.clone(),
            Cached {
                lookup: lookup.clone(),
                at: Instant::now(),
                cycle: self.cycle,
            },
        );
        Ok(lookup)
    }

    fn read(
        &mut self,
        client: &Client,
        key: &ObjectKey,
        prefix: &str,
        plural: &str,
    ) -> Result<ObjectLookup, KubeError> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            metadata: ObjectMeta,
            /// Only a Pod's restart policy is read: it tells a run-once pod (an instance) from
            /// a long-running one.
            #[serde(default)]
            spec: Spec,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Spec {
            #[serde(default)]
            restart_policy: Option<String>,
        }
        let path = format!(
            "{prefix}/namespaces/{}/{plural}/{}",
            encode_query(&key.namespace),
            encode_query(&key.name)
        );
        Ok(match client.get_json::<Object>(&path) {
            Ok(Some(o)) => ObjectLookup::Found(ObjectInfo {
                revisions: [DEPLOYMENT_REVISION, ROLLOUT_REVISION]
                    .into_iter()
                    .filter_map(|a| {
                        let r = o.metadata.annotations.get(a)?.trim().parse().ok()?;
                        Some((a, r))
                    })
                    .collect(),
                created: o
                    .metadata
                    .creation_timestamp
                    .as_deref()
                    .and_then(|t| t.parse().ok()),
                generate_name: (!o.metadata.generate_name.is_empty())
                    .then(|| o.metadata.generate_name.as_str().into()),
                restart_policy: match key.kind.as_str() {
                    "Pod" => o.spec.restart_policy.as_deref().and_then(RestartPolicy::parse),
                    _ => None,
                },
                // The chain follows the controller only, and by name, not uid.
                owner_references: controller_of(&o.metadata.owner_references)
                    .map(|r| OwnerReference {
                        uid: String::new(),
                        ..r.clone()
                    })
                    .into_iter()
                    .collect(),
            }),
            Ok(None) => ObjectLookup::Missing,
            Err(e) if e.is_forbidden() => {
                self.forbidden
                    .get_or_create(&vec![("kind".to_owned(), key.kind.clone())])
                    .inc();
                let group = key.api_version.rsplit_once('/').map_or("", |(g, _)| g);
                let rule = if group.is_empty() {
                    plural.to_owned()
                } else {
                    format!("{plural}.{group}")
                };
                self.warn_once(&key.kind, || {
                    log::warn!(kind = key.kind.as_str(), error = e.to_string().as_str(); "cannot read {} owners (403); reports stay attributed to the nearest readable owner below them (grant get on {rule}, see docs/identity.md)", key.kind);
                });
                ObjectLookup::Forbidden
            }
            Err(e) => return Err(e),
        })
    }

    fn warn_once(&mut self, kind: &str, warn: impl FnOnce()) {
        if self.warned.insert(kind.to_owned()) {
            warn();
        }
    }

    /// Where a kind of this apiVersion lives: the fixed table for the kinds the agent knows,
    /// discovery for the others. `None` when the group version does not serve the kind as a
    /// namespaced resource.
    fn collection(
        &mut self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Collection>, KubeError> {
        if let Some((prefix, plural)) = known_collection(api_version, kind) {
            return Ok(Some((prefix.to_owned(), plural.to_owned())));
        }
        let Some(prefix) = group_version_path(api_version) else {
            return Ok(None);
        };
        let fresh = self
            .discovered
            .get(api_version)
            .is_some_and(|(_, at)| at.elapsed() < self.ttl);
        if !fresh {
            let resources = discover(client, &prefix)?;
            self.discovered
                .insert(api_version.to_owned(), (resources, Instant::now()));
        }
        let resources = self.discovered.get(api_version).and_then(|(r, _)| r.as_ref());
        Ok(resources.and_then(|list| {
            list.iter()
                .find(|(k, plural, namespaced)| k == kind && *namespaced && !plural.contains('/'))
                .map(|(_, plural, _)| (prefix.clone(), plural.clone()))
        }))
    }
}

impl OwnerResolver {
    /// Where a workload kind the agent does not know by name lives, for "does it still exist?":
    /// the store records a workload's kind, not its group. Answered from aggregated discovery
    /// (`GET /apis`, one request listing every served resource, see
    /// <https://kubernetes.io/docs/concepts/overview/kubernetes-api/#aggregated-discovery>)
    /// when exactly one namespaced resource serves that kind; `None` otherwise (several groups
    /// have that kind, or the server does not offer aggregated discovery): nothing is closed on
    /// a guess. Asked only for a known workload whose reports all vanished.
    pub fn collection_of_kind(
        &mut self,
        client: &Client,
        kind: &str,
    ) -> Result<Option<(String, String)>, KubeError> {
        if let Some((prefix, plural)) = super::workload::workload_collection(kind) {
            return Ok(Some((prefix.to_owned(), plural.to_owned())));
        }
        let fresh = self
            .served
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < self.ttl);
        if !fresh {
            let served = match client.get_text_as("/apis", ACCEPT_AGGREGATED) {
                Ok(Some(text)) => served_kinds(&text),
                Ok(None) => None,
                Err(e) if e.is_forbidden() => None,
                Err(e) => return Err(e),
            };
            self.served = Some((served, Instant::now()));
        }
        let Some((Some(served), _)) = &self.served else {
            return Ok(None);
        };
        let mut matching = served.iter().filter(|(k, _, _)| k == kind);
        Ok(match (matching.next(), matching.next()) {
            (Some((_, prefix, plural)), None) => Some((prefix.clone(), plural.clone())),
            _ => None,
        })
    }
}

/// Aggregated discovery, as the API server serves it from Kubernetes 1.26 (v2beta1) and 1.30
/// (v2); a server without it answers the legacy group list, which [`served_kinds`] declines.
const ACCEPT_AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

/// `(kind, collection prefix, plural)` of every namespaced resource (subresources left out) of
/// every group version an `APIGroupDiscoveryList` lists; `None` for any other answer.
fn served_kinds(text: &str) -> Option<Served> {
    #[derive(Deserialize)]
    struct List {
        kind: String,
        #[serde(default)]
        items: Vec<Group>,
    }
    #[derive(Deserialize)]
    struct Group {
        #[serde(default)]
        metadata: GroupMeta,
        #[serde(default)]
        versions: Vec<Version>,
    }
    #[derive(Deserialize, Default)]
    struct GroupMeta {
        #[serde(default)]
        name: String,
    }
    #[derive(Deserialize)]
    struct Version {
        #[serde(default)]
        version: String,
        #[serde(default)]
        resources: Vec<Resource>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Resource {
        #[serde(default)]
        resource: String,
        #[serde(default)]
        response_kind: Option<Kind>,
        #[serde(default)]
        scope: String,
    }
    #[derive(Deserialize)]
    struct Kind {
        #[serde(default)]
        kind: String,
    }
    let list: List = serde_json::from_str(text).ok()?;
    if list.kind != "APIGroupDiscoveryList" {
        return None;
    }
    let mut out = Vec::new();
    for group in list.items {
        // The first version listed is the preferred one; one collection per kind and group.
        let Some(version) = group.versions.into_iter().next() else {
            continue;
        };
        let api_version = if group.metadata.name.is_empty() {
            version.version.clone()
        } else {
            format!("{}/{}", group.metadata.name, version.version)
        };
        let Some(prefix) = group_version_path(&api_version) else {
            continue;
        };
        for r in version.resources {
            if r.scope == "Namespaced"
                && !r.resource.is_empty()
                && !r.resource.contains('/')
                && let Some(kind) = r.response_kind
            {
                out.push((kind.kind, prefix.clone(), r.resource));
            }
        }
    }
    Some(out)
}

/// The chain's first object: the report's own owner, by the apiVersion its kind has. `None`
/// for cluster-scoped owners and kinds the operator does not scan (nothing to follow).
fn start_key(owner: &Owner) -> Option<ObjectKey> {
    if owner.namespace.is_empty() {
        return None;
    }
    Some(ObjectKey {
        api_version: api_version_of(&owner.kind)?.to_owned(),
        kind: owner.kind.clone(),
        namespace: owner.namespace.clone(),
        name: owner.name.clone(),
    })
}

/// `/api/v1` for the core group, `/apis/<group>/<version>` otherwise; `None` for an apiVersion
/// that is not `[group/]version` of plain DNS characters (it came from an object's metadata).
fn group_version_path(api_version: &str) -> Option<String> {
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    };
    match api_version.split_once('/') {
        None if ok(api_version) => Some(format!("/api/{api_version}")),
        Some((group, version)) if ok(group) && ok(version) => {
            Some(format!("/apis/{group}/{version}"))
        }
        _ => None,
    }
}

/// One group version's resource list. 404 (not served) and 403 are "no such kind here".
fn discover(
    client: &Client,
    prefix: &str,
) -> Result<Option<Resources>, KubeError> {
    #[derive(Deserialize)]
    struct ResourceList {
        #[serde(default)]
        resources: Vec<Resource>,
    }
    #[derive(Deserialize)]
    struct Resource {
        #[serde(default)]
        name: String,
        #[serde(default)]
        kind: String,
        #[serde(default)]
        namespaced: bool,
    }
    match client.get_json::<ResourceList>(prefix) {
        Ok(Some(list)) => Ok(Some(
            list.resources
                .into_iter()
                .map(|r| (r.kind, r.name, r.namespaced))
                .collect(),
        )),
        Ok(None) => Ok(None),
        Err(e) if e.is_forbidden() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_kinds_from_aggregated_discovery() {
        let text = r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","items":[
            {"metadata":{"name":"apps.kruise.io"},"versions":[
                {"version":"v1beta1","resources":[
                    {"resource":"clonesets","responseKind":{"group":"apps.kruise.io","version":"v1beta1","kind":"CloneSet"},"scope":"Namespaced"},
                    {"resource":"clonesets/status","responseKind":{"kind":"CloneSet"},"scope":"Namespaced"},
                    {"resource":"nodeimages","responseKind":{"kind":"NodeImage"},"scope":"Cluster"}]},
                {"version":"v1alpha1","resources":[
                    {"resource":"clonesets","responseKind":{"kind":"CloneSet"},"scope":"Namespaced"}]}]},
            {"metadata":{},"versions":[{"version":"v1","resources":[
                {"resource":"pods","responseKind":{"kind":"Pod"},"scope":"Namespaced"}]}]}]}"#;
        let want = vec![
            ("CloneSet".to_owned(), "/apis/apps.kruise.io/v1beta1".to_owned(), "clonesets".to_owned()),
            ("Pod".to_owned(), "/api/v1".to_owned(), "pods".to_owned()),
        ];
        assert_eq!(served_kinds(text), Some(want));
        // The legacy group list (no aggregated discovery) and garbage are no answer.
        assert_eq!(served_kinds(r#"{"kind":"APIGroupList","groups":[]}"#), None);
        assert_eq!(served_kinds("<html>"), None);
    }

    #[test]
    fn group_version_paths() {
        let cases = [
            ("v1", Some("/api/v1")),
            ("apps/v1", Some("/apis/apps/v1")),
            ("argoproj.io/v1alpha1", Some("/apis/argoproj.io/v1alpha1")),
            ("apps.kruise.io/v1beta1", Some("/apis/apps.kruise.io/v1beta1")),
            ("", None),
            ("a/b/c", None),
            ("../x/v1", None),
            ("../v1", None),
            ("Apps/v1", None),
            ("apps/v1?watch=1", None),
            ("/v1", None),
        ];
        for (api_version, want) in cases {
            assert_eq!(group_version_path(api_version).as_deref(), want, "{api_version}");
        }
    }
}
