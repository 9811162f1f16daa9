//! The RBAC grants the agent's requests need. The packaging (deploy/) must grant exactly these;
//! the test below compares them with every manifest and the Helm chart.

/// One RBAC grant the agent's code needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Every read the agent's code makes against the API. The packaging checks its ClusterRole
/// against this list.
pub const READ_PERMISSIONS: &[Permission] = &[
    Permission {
        api_group: "aquasecurity.github.io",
        resource: "vulnerabilityreports",
        verbs: &["get", "list"],
    },
    Permission {
        api_group: "aquasecurity.github.io",
        resource: "clustervulnerabilityreports",
        verbs: &["get", "list"],
    },
    Permission {
        api_group: "apps",
        resource: "replicasets",
        verbs: &["get"],
    },
    Permission {
        api_group: "apps",
        resource: "deployments",
        verbs: &["get"],
    },
    Permission {
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["get"],
    },
    Permission {
        api_group: "apps",
        resource: "daemonsets",
        verbs: &["get"],
    },
    Permission {
        api_group: "batch",
        resource: "jobs",
        verbs: &["get"],
    },
    Permission {
        api_group: "batch",
        resource: "cronjobs",
        verbs: &["get"],
    },
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["get"],
    },
    Permission {
        api_group: "",
        resource: "replicationcontrollers",
        verbs: &["get"],
    },
];

/// What leader election through [`Client::write_json`] / [`Client::get_json`] on a Lease
/// needs, in the agent's own namespace.
pub const LEASE_PERMISSIONS: &[Permission] = &[Permission {
    api_group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update"],
}];
