//! `--synthetic WORKLOADS:VULNS[:SEED]`: a reproducible generated cluster.

use crate::store::Store;

pub struct Spec {
    pub workloads: usize,
    pub vulns: usize,
    pub seed: u64,
}

impl Spec {
    pub fn parse(s: &str) -> Result<Spec, String> {
        let bad =
            || format!("--synthetic {s:?}: expected WORKLOADS:VULNS[:SEED], e.g. 3000:150:42");
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(bad());
        }
        Ok(Spec {
            workloads: parts[0].parse().map_err(|_| bad())?,
            vulns: parts[1].parse().map_err(|_| bad())?,
            seed: parts
                .get(2)
                .map(|p| p.parse())
                .transpose()
                .map_err(|_| bad())?
                .unwrap_or(1),
        })
    }
}

pub fn generate(_store: &Store, spec: &Spec) -> usize {
    log::warn!(
        "synthetic generation ({}:{}:{}) is not implemented yet",
        spec.workloads,
        spec.vulns,
        spec.seed
    );
    0
}
