//! Short-lived instances: workloads that are one run of something, so that running the same
//! image again under a new name is not news.
//!
//! A Job per release (`migrate-41`, `migrate-42`), a CI or workflow pod, a pod made with
//! `generateName`: each run is a new object with a new name, and Trivy Operator writes a new
//! report for it (`job-<name>-<container>`, `pod-<name>-<container>`). Filed under its own name,
//! every run would announce the same CVEs of the same image as "new". Runs of one *family* are
//! filed under one workload instead, named by what the runs share and marked with a trailing
//! [`FAMILY_MARK`]: `migrate-*`, `ci-runner-*`. The family is then an ordinary workload for the
//! lifecycle: a CVE no earlier run had is "new", one the newest run no longer has is "fixed"
//! (with the usual evidence rules), and the same image again changes nothing.
//!
//! What is *not* an instance: the top of a long-running controller chain (a Deployment, a
//! StatefulSet, a CronJob, which already names all its runs) keeps its own name.

/// The last character of a family's name. Kubernetes names are DNS labels or subdomains, which
/// never contain `*`, so a family cannot collide with a real object's name.
pub const FAMILY_MARK: char = '*';

/// `spec.restartPolicy` of a Pod: `Never` and `OnFailure` run to completion
/// (<https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#restart-policy>).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// `None` for a value Kubernetes does not define (the API server would refuse it).
    pub fn parse(s: &str) -> Option<RestartPolicy> {
        match s {
            "Always" => Some(RestartPolicy::Always),
            "OnFailure" => Some(RestartPolicy::OnFailure),
            "Never" => Some(RestartPolicy::Never),
            _ => None,
        }
    }
}

/// What the top of an owner chain says about itself, as far as instances need it.
#[derive(Clone, Copy, Debug)]
pub struct TopObject<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    /// `metadata.generateName`, `""` when the name was given.
    pub generate_name: &'a str,
    /// A Pod's `spec.restartPolicy` (`None` for other kinds, or when it was not read).
    pub restart_policy: Option<RestartPolicy>,
}

/// Kinds whose objects live until someone deletes them and keep their name across changes:
/// never instances, even when made with `generateName`.
const LONG_RUNNING: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "ReplicationController",
    "CronJob",
    "Rollout",
    "CronWorkflow",
];

/// Kinds whose every object is one run: Kubernetes Jobs, Argo Workflows, Tekton PipelineRuns and
/// TaskRuns (<https://argo-workflows.readthedocs.io/en/latest/workflow-concepts/>,
/// <https://tekton.dev/docs/pipelines/pipelineruns/>).
const RUN_KINDS: &[&str] = &["Job", "Workflow", "PipelineRun", "TaskRun"];

/// The family a chain's top object is a run of, or `None` when it is a workload of its own.
///
/// - Made with `generateName`: the family is that prefix (`ci-runner-` → `ci-runner-*`); every
///   object made from it shares it.
/// - A run kind (`RUN_KINDS`) or a Pod that runs to completion (`restartPolicy: Never` or
///   `OnFailure`), named by hand: the name without its run number ([`run_base`]:
///   `migrate-41` → `migrate-*`, `db-seed` → `db-seed*`).
/// - Anything else (a long-running kind, a bare Pod that restarts forever, a custom
///   controller's object): `None`.
pub fn family_of(top: &TopObject) -> Option<String> {
    if LONG_RUNNING.contains(&top.kind) {
        return None;
    }
    if !top.generate_name.is_empty() {
        return Some(format!("{}{FAMILY_MARK}", top.generate_name));
    }
    let runs = RUN_KINDS.contains(&top.kind)
        || (top.kind == "Pod"
            && matches!(
                top.restart_policy,
                Some(RestartPolicy::Never | RestartPolicy::OnFailure)
            ));
    runs.then(|| format!("{}{FAMILY_MARK}", run_base(top.name)))
}

/// Whether a stored workload name is a family ([`family_of`]) rather than one object.
pub fn is_family(workload: &str) -> bool {
    workload.ends_with(FAMILY_MARK)
}

/// A run's name without its run number: trailing `-<digits>` parts are dropped and the last
/// dash kept (`migrate-41` → `migrate-`, `backup-2026-12-01` → `backup-`). A name that is all
/// digits after its first part keeps that part; a name without a numeric suffix is returned
/// whole.
pub fn run_base(name: &str) -> &str {
    let mut base = name;
    while let Some((head, last)) = base.trim_end_matches('-').rsplit_once('-') {
        if last.is_empty() || !last.bytes().all(|b| b.is_ascii_digit()) || head.is_empty() {
            break;
        }
        base = &name[..head.len() + 1];
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_bases() {
        let cases = [
            ("migrate-41", "migrate-"),
            ("migrate-42", "migrate-"),
            ("migrate-100", "migrate-"),
            ("backup-2026-12-01", "backup-"),
            ("db-seed", "db-seed"),
            ("release-v2-3", "release-v2-"),
            ("job-7", "job-"),
            ("42", "42"),
            ("-42", "-42"),
            ("a--42", "a--"),
            ("ci-x7k2p", "ci-x7k2p"),
        ];
        for (name, want) in cases {
            assert_eq!(run_base(name), want, "{name}");
        }
    }

    #[test]
    fn which_tops_are_runs_of_a_family() {
        let top = |kind, name, generate_name, restart_policy| TopObject {
            kind,
            name,
            generate_name,
            restart_policy,
        };
        use RestartPolicy::*;
        let cases: &[(TopObject, Option<&str>, &str)] = &[
            (top("Job", "migrate-41", "", None), Some("migrate-*"), "a Job per release"),
            (top("Job", "db-seed", "", None), Some("db-seed*"), "a one-off Job"),
            (top("Job", "ci-x7k2p", "ci-", None), Some("ci-*"), "generateName wins over the name"),
            (top("Pod", "ci-runner-abcde", "ci-runner-", Some(Always)), Some("ci-runner-*"), "a generated pod, even one that restarts"),
            (top("Pod", "smoke-12", "", Some(Never)), Some("smoke-*"), "a bare pod that runs once"),
            (top("Pod", "smoke-12", "", Some(OnFailure)), Some("smoke-*"), "OnFailure runs to completion too"),
            (top("Pod", "debug", "", Some(Always)), None, "a bare pod that restarts forever is a workload"),
            (top("Pod", "debug-1", "", None), None, "a pod whose policy was not read is not guessed"),
            (top("Workflow", "build-x7k2p", "build-", None), Some("build-*"), "an Argo Workflow"),
            (top("Workflow", "nightly-1733212800", "", None), Some("nightly-*"), "a CronWorkflow's run read without its parent"),
            (top("PipelineRun", "deploy-run-3", "", None), Some("deploy-run-*"), "a Tekton PipelineRun"),
            (top("Deployment", "web-x7k2p", "web-", None), None, "a long-running kind keeps its name"),
            (top("CronJob", "nightly", "", None), None, "a CronJob already names all its runs"),
            (top("StatefulSet", "db", "", None), None, "a StatefulSet"),
            (top("CloneSet", "api-3", "", None), None, "a custom controller's object"),
        ];
        for (t, want, why) in cases {
            assert_eq!(family_of(t).as_deref(), *want, "{why}");
            if let Some(f) = want {
                assert!(is_family(f), "{f}");
            }
        }
        assert!(!is_family("migrate-41"));
    }

    #[test]
    fn restart_policies() {
        assert_eq!(RestartPolicy::parse("Never"), Some(RestartPolicy::Never));
        assert_eq!(RestartPolicy::parse("OnFailure"), Some(RestartPolicy::OnFailure));
        assert_eq!(RestartPolicy::parse("Always"), Some(RestartPolicy::Always));
        assert_eq!(RestartPolicy::parse("never"), None);
    }
}
