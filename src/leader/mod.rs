//! Leader election on a `coordination.k8s.io/v1` Lease, so that with `replicas: 2` exactly one
//! agent polls and writes while the other waits, ready to take over.
//!
//! The algorithm is client-go's `tryAcquireOrRenew` (k8s.io/client-go/tools/leaderelection):
//! - a missing Lease is created with us as holder; a 409 on create means another agent won;
//! - a Lease held by someone else is respected until `leaseDurationSeconds` have passed on *our*
//!   clock since we last saw its record change (immune to clock skew between nodes);
//! - taking over or renewing is a PUT carrying the fetched `resourceVersion`: a 409 means another
//!   agent changed it first, and we lost this round;
//! - `leaseTransitions` counts changes of holder; `acquireTime` is kept while we renew.
//!
//! Design: renewal runs on its own thread (`leader`), every `retry_period`, so a long poll cycle
//! never delays it. The poll loop asks [`LeaderState::is_leader`] before each cycle and before
//! each unit of work. That answer is computed from the monotonic clock: a successful renewal
//! whose request *started* at `t` makes us leader until `t + renew_deadline`, which is shorter
//! than the lease duration others wait for. A leader that can no longer renew (API down,
//! network partition, a stalled thread) therefore stops writing on its own before anyone else
//! may start. Leader election gives no fencing: a unit of work already past its check may still
//! commit while a successor starts; the store's transactions (row locks on the container, unique
//! event ids derived from the change) make such a race record each change once.
//!
//! On shutdown the leader releases the Lease (empty holder, one-second duration) after the poll
//! loop has finished its last unit of work, so the standby takes over at once.

mod decision;
mod elector;
mod state;

use std::time::Duration;

pub use elector::Elector;
pub use state::{LeaderMetrics, LeaderState};

use crate::config::{Election, LeaderConfig};

/// Leader election as this process runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// How long others wait after the record last changed before taking over.
    pub lease_duration: Duration,
    /// How long a renewal keeps us leader by our own clock (2/3 of the duration, client-go's
    /// 10 s of 15 s).
    pub renew_deadline: Duration,
    /// How often the lease is renewed, or acquisition tried (2 s of 15 s).
    pub retry_period: Duration,
}

/// Where a pod's namespace is mounted.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl Settings {
    /// Decides whether election runs and with which lease and identity. `env` reads process
    /// variables, `sa_namespace` is the content of the service account's namespace file, and
    /// `hostname` is the fallback identity; all passed in so that every rule is a unit test.
    pub fn resolve(
        cfg: &LeaderConfig,
        kubeconfig_given: bool,
        env: &dyn Fn(&str) -> Option<String>,
        sa_namespace: Option<String>,
        hostname: &str,
        pid: u32,
    ) -> Option<Settings> {
        let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let in_cluster = nonempty(env("KUBERNETES_SERVICE_HOST")).is_some() && !kubeconfig_given;
        let enabled = match cfg.election {
            Election::Auto => in_cluster,
            Election::On => true,
            Election::Off => false,
        };
        if !enabled {
            return None;
        }
        let namespace = cfg
            .lease_namespace
            .clone()
            .or_else(|| {
                if in_cluster {
                    nonempty(sa_namespace)
                } else {
                    None
                }
            })
            .or_else(|| nonempty(env("POD_NAMESPACE")))
            .unwrap_or_else(|| "default".to_owned());
        let base = nonempty(env("POD_NAME")).unwrap_or_else(|| hostname.to_owned());
        let d = cfg.lease_duration;
        Some(Settings {
            lease_name: cfg.lease_name.clone(),
            namespace,
            identity: format!("{base}_{pid}"),
            lease_duration: d,
            renew_deadline: d * 2 / 3,
            retry_period: (d * 2 / 15).max(Duration::from_millis(100)),
        })
    }

    /// [`Settings::resolve`] against this process's environment.
    pub fn from_process(cfg: &LeaderConfig, kubeconfig_given: bool) -> Option<Settings> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "kijo-agent".to_owned());
        Settings::resolve(
            cfg,
            kubeconfig_given,
            &|name| std::env::var(name).ok(),
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok(),
            &hostname,
            std::process::id(),
        )
    }

    pub(crate) fn path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.namespace, self.lease_name
        )
    }

    pub(crate) fn collection(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_of_auto_namespace_and_identity() {
        let cfg = LeaderConfig::default();
        type Case<'a> = (
            &'a str,
            Election,
            bool,
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            Option<(&'a str, &'a str)>,
        );
        let cases: &[Case<'_>] = &[
            ("local run", Election::Auto, false, &[], None, None),
            (
                "in-cluster",
                Election::Auto,
                false,
                &[
                    ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                    ("POD_NAME", "kijo-7f-abc"),
                    ("POD_NAMESPACE", "other"),
                ],
                Some("kijo\n"),
                Some(("kijo", "kijo-7f-abc_1")),
            ),
            (
                "in-cluster but a kubeconfig was given",
                Election::Auto,
                true,
                &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")],
                Some("kijo"),
                None,
            ),
            (
                "forced off",
                Election::Off,
                false,
                &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")],
                Some("kijo"),
                None,
            ),
            (
                "forced on locally: POD_NAMESPACE, else default",
                Election::On,
                true,
                &[("POD_NAMESPACE", "ops")],
                Some("ignored-outside-the-cluster"),
                Some(("ops", "laptop_1")),
            ),
            (
                "forced on, nothing known",
                Election::On,
                false,
                &[],
                None,
                Some(("default", "laptop_1")),
            ),
        ];
        for (name, election, kubeconfig, env, sa, want) in cases {
            let cfg = LeaderConfig {
                election: *election,
                ..cfg.clone()
            };
            let env_fn = |k: &str| {
                env.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            let got = Settings::resolve(
                &cfg,
                *kubeconfig,
                &env_fn,
                sa.map(str::to_owned),
                "laptop",
                1,
            );
            match (want, got) {
                (None, None) => {}
                (Some((ns, id)), Some(s)) => {
                    assert_eq!(s.namespace, *ns, "{name}");
                    assert_eq!(s.identity, *id, "{name}");
                    assert_eq!(s.renew_deadline, Duration::from_secs(10), "{name}");
                    assert_eq!(s.retry_period, Duration::from_secs(2), "{name}");
                }
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
        let explicit = LeaderConfig {
            election: Election::On,
            lease_namespace: Some("pinned".into()),
            ..cfg
        };
        let s =
            Settings::resolve(&explicit, false, &|_| None, Some("kijo".into()), "h", 7).unwrap();
        assert_eq!(s.namespace, "pinned");
    }
}
