//! Owner lookups for workload identity: a report names its ReplicaSet; the ReplicaSet's
//! ownerReferences name the Deployment. Lookups are cached because every container of every
//! workload asks for the same few ReplicaSets each cycle.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::client::{Client, encode_query};
use super::error::KubeError;
use crate::trivy::{ObjectMeta, Owner, OwnerLookup, ReplicaSetInfo, Workload, workload_of};

/// The annotation the Deployment controller sets on each ReplicaSet.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// Caches ReplicaSet lookups. ownerReferences of a ReplicaSet never change, but the revision
/// annotation does on a rollback, hence the expiry.
pub struct OwnerResolver {
    cache: HashMap<(String, String), (OwnerLookup, Instant)>,
    ttl: Duration,
    warned_forbidden: bool,
    /// Entries read from the API since the last [`OwnerResolver::prune`] (this cycle).
    fetched: HashSet<(String, String)>,
}

impl Default for OwnerResolver {
    fn default() -> Self {
        OwnerResolver::new(Duration::from_secs(600))
    }
}

impl OwnerResolver {
    pub fn new(ttl: Duration) -> Self {
        OwnerResolver {
            cache: HashMap::new(),
            ttl,
            warned_forbidden: false,
            fetched: HashSet::new(),
        }
    }

    /// Looks up a report owner. Only ReplicaSets need a lookup. 403 and 404 are answers
    /// (identity falls back to the ReplicaSet), other errors are returned so the cycle fails
    /// rather than recording a wrong identity.
    pub fn lookup(&mut self, client: &Client, owner: &Owner) -> Result<OwnerLookup, KubeError> {
        if owner.kind != "ReplicaSet" || owner.namespace.is_empty() {
            return Ok(OwnerLookup::NotNeeded);
        }
        let key = (owner.namespace.clone(), owner.name.clone());
        if let Some((l, at)) = self.cache.get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(l.clone());
        }
        #[derive(Deserialize)]
        struct Rs {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        let path = format!(
            "/apis/apps/v1/namespaces/{}/replicasets/{}",
            encode_query(&owner.namespace),
            encode_query(&owner.name)
        );
        let lookup = match client.get_json::<Rs>(&path) {
            Ok(Some(rs)) => OwnerLookup::Found(ReplicaSetInfo {
                revision: rs
                    .metadata
                    .annotations
                    .get(REVISION_ANNOTATION)
                    .and_then(|r| r.trim().parse().ok()),
                owner_references: rs.metadata.owner_references,
            }),
            Ok(None) => OwnerLookup::Missing,
            Err(e) if e.is_forbidden() => {
                if !self.warned_forbidden {
                    self.warned_forbidden = true;
                    log::warn!(error = e.to_string().as_str(); "cannot read ReplicaSets; reports stay attributed to ReplicaSets instead of Deployments (grant get on apps/replicasets)");
                }
                OwnerLookup::Forbidden
            }
            Err(e) => return Err(e),
        };
        self.fetched.insert(key.clone());
        self.cache.insert(key, (lookup.clone(), Instant::now()));
        Ok(lookup)
    }

    /// Like [`OwnerResolver::lookup`] but asks the API again unless this cycle already did:
    /// the revision annotation moves on a rollback (the old ReplicaSet gets the highest
    /// revision), and the poll cycle needs it now, not when the cache entry expires. Used only
    /// where a Deployment container has several reports, so a quiet cluster pays nothing.
    pub fn refresh(&mut self, client: &Client, owner: &Owner) -> Result<OwnerLookup, KubeError> {
        let key = (owner.namespace.clone(), owner.name.clone());
        if !self.fetched.contains(&key) {
            self.cache.remove(&key);
        }
        self.lookup(client, owner)
    }

    /// The workload and the Deployment revision (when known) of a report owner.
    pub fn resolve(
        &mut self,
        client: &Client,
        owner: &Owner,
    ) -> Result<(Workload, Option<u64>), KubeError> {
        let lookup = self.lookup(client, owner)?;
        Ok((workload_of(owner, &lookup), lookup.revision()))
    }

    /// Drops expired entries (bounding memory by the live ReplicaSets) and starts a new cycle for
    /// [`OwnerResolver::refresh`]; call once at the start of every cycle.
    pub fn prune(&mut self) {
        let ttl = self.ttl;
        self.fetched.clear();
        self.cache.retain(|_, (_, at)| at.elapsed() < ttl);
    }
}
