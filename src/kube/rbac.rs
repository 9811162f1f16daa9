//! The RBAC grants the agent's requests need. The packaging (deploy/) must grant exactly these;
//! the test below compares them with every manifest and the Helm chart.

/// One RBAC grant the agent's code needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// Whether a Role in a namespace can grant it; cluster-scoped resources need a
    /// ClusterRole, so a namespaced install does without them.
    pub namespaced: bool,
}

/// Every read the agent's code makes against the API. The packaging checks its ClusterRole
/// against this list.
pub const READ_PERMISSIONS: &[Permission] = &[
    Permission {
        api_group: "aquasecurity.github.io",
        resource: "vulnerabilityreports",
        verbs: &["get", "list"],
        namespaced: true,
    },
    Permission {
        api_group: "aquasecurity.github.io",
        resource: "clustervulnerabilityreports",
        verbs: &["get", "list"],
        namespaced: false,
    },
    Permission {
        api_group: "apps",
        resource: "replicasets",
        verbs: &["get"],
        namespaced: true,
    },
    Permission {
        api_group: "apps",
        resource: "deployments",
        verbs: &["get"],
        namespaced: true,
    },
    Permission {
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["get"],
        namespaced: true,
    },
    Permission {
        api_group: "apps",
        resource: "daemonsets",
        verbs: &["get"],
        namespaced: true,
    },
    Permission {
        api_group: "batch",
        resource: "jobs",
        verbs: &["get"],
        namespaced: true,
    },
    Permission {
        api_group: "batch",
        resource: "cronjobs",
        verbs: &["get"],
        namespaced: true,
    },
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["get"],
        namespaced: true,
    },
    Permission {
        api_group: "",
        resource: "replicationcontrollers",
        verbs: &["get"],
        namespaced: true,
    },    // The controller of an Argo Rollout's ReplicaSets (owner chain, see docs/identity.md).
    Permission {
        api_group: "argoproj.io",
        resource: "rollouts",
        verbs: &["get"],
        namespaced: true,
    },
];

/// What leader election (get, create and update of one Lease) needs, in the agent's own
/// namespace.
pub const LEASE_PERMISSIONS: &[Permission] = &[Permission {
    api_group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update"],
    namespaced: true,
}];

/// The RBAC consistency check: the code's tables, `deploy/rbac-permissions.json` (the list the
/// Helm chart renders its rules from), every kustomize rendering as real `kubectl kustomize`
/// produces it, the committed single-file manifest and the chart's templates grant exactly
/// what the agent's requests need: no less (a 403 in production), no more (the read-only
/// promise).
#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use serde::Deserialize;

    use super::*;

    /// (api group, resource, verb).
    type Grant = (String, String, String);

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn grants(perms: &[Permission], namespaced_only: bool) -> BTreeSet<Grant> {
        perms
            .iter()
            .filter(|p| p.namespaced || !namespaced_only)
            .flat_map(|p| {
                p.verbs.iter().map(|v| {
                    (
                        p.api_group.to_owned(),
                        p.resource.to_owned(),
                        (*v).to_owned(),
                    )
                })
            })
            .collect()
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct ListedPermission {
        api_group: String,
        resource: String,
        verbs: Vec<String>,
        namespaced: bool,
    }

    fn listed(path: &Path) -> Vec<ListedPermission> {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_permission_list_is_the_code_s_table() {
        let code: Vec<ListedPermission> = READ_PERMISSIONS
            .iter()
            .map(|p| ListedPermission {
                api_group: p.api_group.to_owned(),
                resource: p.resource.to_owned(),
                verbs: p.verbs.iter().map(|v| (*v).to_owned()).collect(),
                namespaced: p.namespaced,
            })
            .collect();
        let json = root().join("deploy/rbac-permissions.json");
        assert_eq!(
            listed(&json),
            code,
            "{} differs from READ_PERMISSIONS",
            json.display()
        );
        let chart = root().join("deploy/helm/kijo-agent/files/rbac-permissions.json");
        assert_eq!(
            std::fs::read(&chart).unwrap(),
            std::fs::read(&json).unwrap(),
            "{} must be a copy of {}",
            chart.display(),
            json.display()
        );
        // Every report kind the agent lists is granted, and cluster-scoped kinds only by a
        // ClusterRole.
        for kind in crate::trivy::ReportKind::ALL {
            let p = READ_PERMISSIONS
                .iter()
                .find(|p| p.resource == kind.plural())
                .unwrap_or_else(|| panic!("{} is not in READ_PERMISSIONS", kind.plural()));
            assert_eq!(p.namespaced, !kind.cluster_scoped(), "{}", kind.plural());
            assert_eq!(p.verbs, ["get", "list"], "{}", kind.plural());
        }
    }

    // ---- just enough of the Kubernetes objects ----

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct Object {
        kind: String,
        metadata: Metadata,
        rules: Vec<Rule>,
        #[serde(rename = "roleRef")]
        role_ref: Option<RoleRef>,
        subjects: Vec<Subject>,
        spec: Option<DeploymentSpec>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct Metadata {
        name: String,
        namespace: Option<String>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Rule {
        api_groups: Vec<String>,
        resources: Vec<String>,
        verbs: Vec<String>,
        resource_names: Vec<String>,
        #[serde(rename = "nonResourceURLs")]
        non_resource_urls: Vec<String>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct RoleRef {
        kind: String,
        name: String,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct Subject {
        kind: String,
        name: String,
        namespace: Option<String>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct DeploymentSpec {
        template: PodTemplate,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct PodTemplate {
        spec: PodSpec,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct PodSpec {
        service_account_name: Option<String>,
        containers: Vec<Container>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct Container {
        env: Vec<EnvVar>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    struct EnvVar {
        name: String,
        value: Option<String>,
    }

    fn parse_documents(what: &str, yaml: &str) -> Vec<Object> {
        serde_saphyr::from_multiple::<Option<Object>>(yaml)
            .unwrap_or_else(|e| panic!("{what}: not YAML Kubernetes objects: {e}"))
            .into_iter()
            .flatten()
            .collect()
    }

    /// Expands rules into grants; wildcards, resource names and non-resource URLs are
    /// refused (none of them is needed).
    fn rule_grants(what: &str, rules: &[Rule]) -> BTreeSet<Grant> {
        let mut out = BTreeSet::new();
        for rule in rules {
            assert!(
                rule.non_resource_urls.is_empty(),
                "{what}: nonResourceURLs granted"
            );
            assert!(
                rule.resource_names.is_empty(),
                "{what}: limited by resourceNames"
            );
            for g in &rule.api_groups {
                for r in &rule.resources {
                    for v in &rule.verbs {
                        assert!(
                            ![g, r, v].contains(&&"*".to_owned()),
                            "{what}: wildcard in {g}/{r}/{v}"
                        );
                        out.insert((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
        out
    }

    /// Checks one complete rendering (every object an install creates).
    fn check_rendering(what: &str, objects: &[Object]) {
        let deployments: Vec<&Object> = objects.iter().filter(|o| o.kind == "Deployment").collect();
        assert_eq!(deployments.len(), 1, "{what}: one Deployment expected");
        let dep = deployments[0];
        let sa_ns = dep
            .metadata
            .namespace
            .clone()
            .expect("the Deployment has a namespace");
        let pod = &dep.spec.as_ref().expect("Deployment spec").template.spec;
        let sa = pod
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let bound = |b: &Object| {
            b.subjects.iter().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == sa
                    && s.namespace.as_ref().or(b.metadata.namespace.as_ref()) == Some(&sa_ns)
            })
        };
        let role = |kind: &str, name: &str, ns: Option<&String>| -> &Object {
            objects
                .iter()
                .find(|o| {
                    o.kind == kind
                        && o.metadata.name == name
                        && (kind == "ClusterRole" || o.metadata.namespace.as_ref() == ns)
                })
                .unwrap_or_else(|| {
                    panic!("{what}: {kind} {name} is bound but not in the manifests")
                })
        };
        let mut cluster_wide = BTreeSet::new();
        let mut per_ns: BTreeMap<String, BTreeSet<Grant>> = BTreeMap::new();
        for b in objects.iter().filter(|o| bound(o)) {
            let r = b
                .role_ref
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: binding without roleRef"));
            match b.kind.as_str() {
                "ClusterRoleBinding" => cluster_wide
                    .extend(rule_grants(what, &role("ClusterRole", &r.name, None).rules)),
                "RoleBinding" => {
                    let ns = b.metadata.namespace.clone().expect("RoleBinding namespace");
                    let granted = rule_grants(what, &role(&r.kind, &r.name, Some(&ns)).rules);
                    per_ns.entry(ns).or_default().extend(granted);
                }
                _ => {}
            }
        }
        assert_eq!(
            per_ns.remove(&sa_ns).unwrap_or_default(),
            grants(LEASE_PERMISSIONS, true),
            "{what}: the leader-election Role in {sa_ns}"
        );
        let namespaces: BTreeSet<String> = pod
            .containers
            .iter()
            .flat_map(|c| &c.env)
            .filter(|e| e.name == "KIJO_NAMESPACES")
            .flat_map(|e| e.value.as_deref().unwrap_or("").split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        if namespaces.is_empty() {
            assert_eq!(
                cluster_wide,
                grants(READ_PERMISSIONS, false),
                "{what}: the ClusterRole"
            );
            assert!(
                per_ns.is_empty(),
                "{what}: a cluster-wide install also binds Roles in {per_ns:?}"
            );
        } else {
            assert!(
                cluster_wide.is_empty(),
                "{what}: a namespaced install binds a ClusterRole: {cluster_wide:?}"
            );
            assert_eq!(
                per_ns.keys().cloned().collect::<BTreeSet<_>>(),
                namespaces,
                "{what}: KIJO_NAMESPACES and the namespaces with a Role"
            );
            for (ns, have) in per_ns {
                assert_eq!(
                    have,
                    grants(READ_PERMISSIONS, true),
                    "{what}: the Role in {ns}"
                );
            }
        }
    }

    #[test]
    fn every_manifest_grants_exactly_what_the_agent_reads() {
        let single = root().join("deploy/kubernetes/deployment.yaml");
        let text = std::fs::read_to_string(&single).unwrap();
        check_rendering(
            &single.display().to_string(),
            &parse_documents("deployment.yaml", &text),
        );
        // kubectl's built-in kustomize renders each directory as `kubectl apply -k` would.
        for dir in [
            "base",
            "patches",
            "patches/embedded-pvc",
            "patches/namespaced",
        ] {
            let path = root().join("deploy/kubernetes").join(dir);
            let out = std::process::Command::new("kubectl")
                .arg("kustomize")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "kubectl kustomize {}: {e} (kubectl must be on PATH)",
                        path.display()
                    )
                });
            assert!(
                out.status.success(),
                "kubectl kustomize {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            check_rendering(&format!("kustomize {dir}"), &parse_documents(dir, &text));
        }
    }

    /// Helm cannot run here; the chart's templates are checked as text: the read rules come
    /// only from the permission list through `kijo-agent.readRules` (namespaced entries only
    /// for Roles) plus `kijo-agent.extraOwnerRules`, which grants `get` and nothing else (the
    /// user's `rbac.extraOwnerRules`), and the leader-election Role is literal.
    #[test]
    fn the_chart_renders_its_rules_from_the_permission_list() {
        let chart = root().join("deploy/helm/kijo-agent/templates");
        let helpers = std::fs::read_to_string(chart.join("_helpers.tpl")).unwrap();
        let define = helpers
            .split("{{- define \"kijo-agent.readRules\" -}}")
            .nth(1)
            .and_then(|rest| rest.split("{{- end -}}").next())
            .expect("_helpers.tpl defines kijo-agent.readRules");
        for needle in [
            ".Files.Get \"files/rbac-permissions.json\" | fromJsonArray",
            "{{- if or (not $namespacedOnly) .namespaced }}",
            "apiGroups: [{{ .api_group | quote }}]",
            "resources: [{{ .resource | quote }}]",
            "verbs: {{ toJson .verbs }}",
        ] {
            assert!(
                define.contains(needle),
                "kijo-agent.readRules lacks {needle:?}:\n{define}"
            );
        }
        let extra = helpers
            .split("{{- define \"kijo-agent.extraOwnerRules\" -}}")
            .nth(1)
            .and_then(|rest| rest.split("{{- end -}}").next())
            .expect("_helpers.tpl defines kijo-agent.extraOwnerRules");
        let verbs: Vec<&str> = extra
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("verbs:"))
            .collect();
        assert_eq!(
            verbs,
            ["verbs: [\"get\"]"],
            "kijo-agent.extraOwnerRules grants get only:\n{extra}"
        );
        let rbac = std::fs::read_to_string(chart.join("rbac.yaml")).unwrap();
        let documents: Vec<&str> = rbac.split("\n---\n").collect();
        let with = |kind: &str| -> Vec<&&str> {
            documents
                .iter()
                .filter(|d| d.lines().any(|l| l == format!("kind: {kind}")))
                .collect()
        };
        for (kind, namespaced_only) in [("ClusterRole", false), ("Role", true)] {
            let read: Vec<&&str> = with(kind)
                .into_iter()
                .filter(|d| d.contains("kijo-agent.readRules"))
                .collect();
            assert_eq!(read.len(), 1, "one {kind} with the read rules");
            let include = format!("\"namespacedOnly\" {namespaced_only})");
            assert!(
                read[0].contains(&include),
                "the {kind} includes readRules with {include}"
            );
            assert!(
                read[0].contains("{{- include \"kijo-agent.extraOwnerRules\" "),
                "the {kind} includes the user's extra owner rules"
            );
            assert!(
                !read[0].contains("apiGroups"),
                "the {kind} adds rules of its own"
            );
        }
        // The leader-election Role, with template expressions replaced by a placeholder.
        let lease: Vec<&&str> = with("Role")
            .into_iter()
            .filter(|d| d.contains("leader-election"))
            .collect();
        assert_eq!(lease.len(), 1, "one leader-election Role");
        let plain: String = lease[0]
            .lines()
            .filter(|l| !l.trim_start().starts_with("{{-") && !l.trim_start().starts_with('#'))
            .map(|l| match l.split_once("{{") {
                Some((head, _)) => format!("{head}placeholder"),
                None => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let role = parse_documents("the chart's leader-election Role", &plain);
        assert_eq!(
            rule_grants("chart leader-election Role", &role[0].rules),
            grants(LEASE_PERMISSIONS, true)
        );
    }
}
