//! The poll loop: one cycle every `KIJO_POLL_INTERVAL`, the first at start, never overlapping
//! (cycles run one after another on this one thread).
//!
//! A cycle that fails changes no state: the store commits per unit of work, and the next cycle
//! starts from what was committed.
//!
//! With leader election (`crate::leader`) the loop waits on standby until this agent holds the
//! Lease, and checks it still does before a cycle's first write and before each unit of work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::{HashMap, HashSet};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::config::{Config, Mode};
use crate::health::HealthState;
use crate::kube::workload::Existence;
use crate::kube::{Client, KubeError, KubeMetrics, KubeOptions, ListEvent, OwnerResolver};
use crate::leader::LeaderState;
use crate::lifecycle::{self, AssetId, Event, EventKind, Observation};
use crate::metrics::{Counter, Family, Gauge, Histogram, Registry};
use crate::notify::NotifySettings;
use crate::severity::Severity;
use crate::store::{
    DatabaseTarget, KnownReport, OpenFindings, ReportVersion, Store, StoreError, StoreMetrics,
};
use crate::trivy::report::{LABEL_CONTAINER, owner_of};
use crate::trivy::{
    Keyed, ObjectMeta, Owner, OwnerLookup, Report, ReportKind, Revision, Workload, newest_by_key,
};

/// A metric's label set.
type Labels = Vec<(String, String)>;

/// The poll loop's own metrics.
#[derive(Clone)]
pub struct PollMetrics {
    cycles: Family<Vec<(String, String)>, Counter>,
    duration: Histogram,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    events: Family<Vec<(String, String)>, Counter>,
    malformed: Counter,
    failed: Counter,
    store: StoreMetrics,
    open: Family<Vec<(String, String)>, Gauge>,
    oldest_open: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The (severity, namespace) label sets exported at the last refresh, so series of
    /// namespaces without open findings disappear instead of freezing at their last value.
    open_series: Arc<std::sync::Mutex<HashSet<Labels>>>,
}

impl PollMetrics {
    pub fn new(registry: &mut Registry) -> PollMetrics {
        let m = PollMetrics {
            cycles: Family::default(),
            duration: Histogram::new([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
            last_success: Gauge::default(),
            events: Family::default(),
            malformed: Counter::default(),
            failed: Counter::default(),
            store: StoreMetrics::new(registry),
            open: Family::default(),
            oldest_open: Family::default(),
            open_series: Arc::default(),
        };
        registry.register(
            "kijo_findings_open",
            "Open findings in the store by severity and namespace (\"\" for cluster-scoped reports), after the last successful cycle.",
            m.open.clone(),
        );
        registry.register(
            "kijo_findings_open_oldest_first_seen_timestamp_seconds",
            "Unix time of the oldest first sighting among open findings first seen after the baseline, by severity and namespace; absent when there is none.",
            m.oldest_open.clone(),
        );
        registry.register(
            "kijo_lifecycle_events",
            "Lifecycle events recorded, by kind (new, fixed, reintroduced, severity_changed, workload_removed).",
            m.events.clone(),
        );
        registry.register(
            "kijo_reports_skipped",
            "Reports skipped because they could not be used (malformed, owner unknown).",
            m.malformed.clone(),
        );
        registry.register(
            "kijo_reports_failed",
            "Reports skipped because the store refused their write for a reason other than a lost connection; retried next cycle.",
            m.failed.clone(),
        );
        registry.register(
            "kijo_poll_cycles",
            "Poll cycles by outcome (ok, failed, lost_lease).",
            m.cycles.clone(),
        );
        registry.register(
            "kijo_poll_cycle_duration_seconds",
            "Wall time of a poll cycle.",
            m.duration.clone(),
        );
        registry.register(
            "kijo_poll_last_success_timestamp_seconds",
            "Unix time at which the last successful poll cycle ended.",
            m.last_success.clone(),
        );
        m
    }

    /// Refreshes the open-findings gauges from one aggregate query's rows. Every severity reads
    /// 0 in a namespace that has any open finding; a namespace without open findings has no
    /// series, and the oldest-first-seen gauge exists only where an announced finding is open.
    fn set_open(&self, rows: &[OpenFindings]) {
        let labels = |severity: Severity, namespace: &str| {
            vec![
                ("severity".to_owned(), severity.as_str().to_owned()),
                ("namespace".to_owned(), namespace.to_owned()),
            ]
        };
        let namespaces: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.namespace.as_str()).collect();
        let mut shown = HashSet::new();
        for namespace in namespaces {
            for severity in Severity::ALL {
                let row = rows
                    .iter()
                    .find(|r| r.severity == severity && r.namespace == namespace);
                let key = labels(severity, namespace);
                let open = row.map_or(0, |r| r.open);
                self.open
                    .get_or_create(&key)
                    .set(i64::try_from(open).unwrap_or(i64::MAX));
                match row.and_then(|r| r.oldest_announced) {
                    Some(t) => {
                        let seconds = t.as_millisecond() as f64 / 1000.0;
                        self.oldest_open.get_or_create(&key).set(seconds);
                    }
                    None => {
                        self.oldest_open.remove(&key);
                    }
                }
                shown.insert(key);
            }
        }
        let mut previous = self.open_series.lock().unwrap_or_else(|e| e.into_inner());
        for gone in previous.difference(&shown) {
            self.open.remove(gone);
            self.oldest_open.remove(gone);
        }
        *previous = shown;
    }

    fn count_outcome(&self, outcome: &str) {
        self.cycles
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    fn record(&self, summary: Option<&CycleSummary>, took: Duration) {
        let ok = summary.is_some();
        let outcome = if ok { "ok" } else { "failed" };
        self.cycles
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
        self.duration.observe(took.as_secs_f64());
        if ok {
            let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
            self.last_success.set(now);
        }
    }
}

/// What one cycle did, for the summary log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleSummary {
    pub baseline: bool,
    pub reports_read: u64,
    pub reports_changed: u64,
    pub reports_skipped: u64,
    pub reports_superseded: u64,
    pub new: u64,
    pub fixed: u64,
    pub reintroduced: u64,
    pub workloads_removed: u64,
}

/// Why a cycle failed. A failed cycle leaves every workload it did not finish as it was.
#[derive(Debug)]
pub enum CycleError {
    Store(StoreError),
    Kube(KubeError),
    /// Shutdown began; the cycle stopped between two units of work.
    Interrupted,
    /// Leader election is on and this agent no longer holds the Lease (or its renewal is
    /// overdue by its own clock); the cycle stopped before its next write.
    NotLeader,
}

impl std::fmt::Display for CycleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CycleError::Store(e) => write!(f, "store: {e}"),
            CycleError::Kube(e) => write!(f, "kubernetes: {e}"),
            CycleError::Interrupted => f.write_str("interrupted by shutdown"),
            CycleError::NotLeader => f.write_str("this agent no longer holds the lease"),
        }
    }
}

impl std::error::Error for CycleError {}

impl From<StoreError> for CycleError {
    fn from(e: StoreError) -> Self {
        CycleError::Store(e)
    }
}

impl From<KubeError> for CycleError {
    fn from(e: KubeError) -> Self {
        match e {
            // Only shutdown shuts the client down: the request was interrupted on purpose.
            KubeError::Shutdown => CycleError::Interrupted,
            e => CycleError::Kube(e),
        }
    }
}

/// The poll loop's Kubernetes client once connected, so shutdown can interrupt a request in
/// flight (or a Retry-After wait) instead of waiting for it.
pub type KubeHandle = Arc<std::sync::Mutex<Option<Client>>>;

/// A report as the metadata-only listing shows it: enough to tell whether it changed and whom
/// it belongs to, a few hundred bytes however many findings it holds.
struct Listed {
    kind: ReportKind,
    namespace: String,
    name: String,
    uid: String,
    resource_version: String,
    owner: Result<Owner, String>,
    container: String,
    created: Option<jiff::Timestamp>,
}

impl Listed {
    fn new(kind: ReportKind, meta: ObjectMeta) -> Listed {
        Listed {
            kind,
            owner: owner_of(&meta),
            container: meta
                .labels
                .get(LABEL_CONTAINER)
                .cloned()
                .unwrap_or_default(),
            created: meta
                .creation_timestamp
                .as_deref()
                .and_then(|t| t.parse().ok()),
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            resource_version: meta.resource_version,
        }
    }
}

pub struct Poller {
    config: Config,
    target: DatabaseTarget,
    health: Arc<HealthState>,
    metrics: PollMetrics,
    store: Option<Store>,
    kube: Option<Client>,
    kube_handle: KubeHandle,
    kube_metrics: KubeMetrics,
    owners: OwnerResolver,
    stop: Option<Receiver<()>>,
    /// Told after every cycle that events may have been committed (the notify thread).
    committed: Option<crossbeam_channel::Sender<()>>,
    /// `None` without leader election: this agent always works.
    leader: Option<Arc<LeaderState>>,
    /// The open-findings gauges reflect the store as this process last wrote it; false at start
    /// and after a failed cycle (another agent may have written meanwhile).
    open_gauges_fresh: bool,
}

impl Poller {
    pub fn new(
        config: Config,
        target: DatabaseTarget,
        health: Arc<HealthState>,
        metrics: PollMetrics,
        kube_metrics: KubeMetrics,
    ) -> Poller {
        Poller {
            config,
            target,
            health,
            metrics,
            store: None,
            kube: None,
            kube_handle: KubeHandle::default(),
            kube_metrics,
            owners: OwnerResolver::default(),
            stop: None,
            committed: None,
            leader: None,
            open_gauges_fresh: false,
        }
    }

    /// Makes every cycle, and every unit of work in it, wait for / check leadership.
    pub fn with_leader(mut self, leader: Arc<LeaderState>) -> Poller {
        self.leader = Some(leader);
        self
    }

    /// Standby: waits until this agent leads (`true`) or shutdown begins (`false`), reporting
    /// progress so liveness holds while another agent does the work.
    fn await_leadership(&self, stop: &Receiver<()>) -> bool {
        let Some(leader) = &self.leader else {
            return true;
        };
        let mut announced = false;
        loop {
            self.health.progress();
            if stopping(&Some(stop.clone())) {
                return false;
            }
            if leader.wait_for_leadership(Duration::from_millis(200)) {
                if announced {
                    log::info!("leading now; starting a poll cycle");
                }
                return true;
            }
            if !announced {
                log::info!("standing by: another agent holds the lease");
                announced = true;
            }
        }
    }

    /// After every cycle (even a failed one: it may have committed some workloads) a message
    /// is offered on `tx`; a full channel means a wake-up is already pending.
    /// A handle on the client the loop will connect, for [`KubeHandle`]'s purpose.
    pub fn kube_handle(&self) -> KubeHandle {
        Arc::clone(&self.kube_handle)
    }

    pub fn notify_on_commit(&mut self, tx: crossbeam_channel::Sender<()>) {
        self.committed = Some(tx);
    }

    /// Runs cycles until `stop` disconnects (or once). Returns whether the last cycle succeeded.
    pub fn run(mut self, stop: Receiver<()>, once: bool) -> bool {
        self.stop = Some(stop.clone());
        loop {
            if !self.await_leadership(&stop) {
                return true;
            }
            self.health.progress();
            let started = Instant::now();
            let result = self.cycle();
            let took = started.elapsed();
            if result.is_err() {
                self.open_gauges_fresh = false;
            }
            if matches!(result, Err(CycleError::NotLeader)) {
                self.metrics.count_outcome("lost_lease");
            } else {
                self.metrics.record(result.as_ref().ok(), took);
            }
            if let Some(tx) = &self.committed {
                let _ = tx.try_send(());
            }
            self.health.progress();
            let ok = match result {
                Ok(s) => {
                    log::info!(
                        cluster = self.config.cluster_name.as_str(),
                        duration_ms = took.as_millis() as u64,
                        baseline = s.baseline,
                        reports_read = s.reports_read,
                        reports_changed = s.reports_changed,
                        reports_skipped = s.reports_skipped,
                        new_count = s.new,
                        fixed_count = s.fixed,
                        reintroduced_count = s.reintroduced,
                        workloads_removed = s.workloads_removed;
                        "poll cycle finished"
                    );
                    true
                }
                Err(CycleError::Interrupted) => {
                    log::info!("poll cycle stopped for shutdown; finished work is committed");
                    return true;
                }
                Err(CycleError::NotLeader) => {
                    log::warn!(
                        cluster = self.config.cluster_name.as_str();
                        "lost the lease during a poll cycle; stopped before the next write, finished work is committed"
                    );
                    // Not a failure of this agent; wait for leadership again at once.
                    if once {
                        return false;
                    }
                    continue;
                }
                Err(err) => {
                    self.forget_broken_connections(&err);
                    log::error!(
                        cluster = self.config.cluster_name.as_str(),
                        duration_ms = took.as_millis() as u64;
                        "poll cycle failed; what it did not finish is unchanged and is retried next cycle: {err}"
                    );
                    false
                }
            };
            if once {
                return ok;
            }
            match stop.recv_timeout(self.config.poll_interval) {
                Err(RecvTimeoutError::Timeout) => continue,
                _ => return true,
            }
        }
    }

    fn forget_broken_connections(&mut self, err: &CycleError) {
        if let CycleError::Store(e) = err
            && e.is_connection_loss()
        {
            self.store = None;
        }
    }

    /// One cycle: list report metadata, read and apply only the reports that changed, then close
    /// the findings of workloads that no longer exist.
    ///
    /// Connections are opened lazily, so a database or API server that is down at start delays
    /// work instead of crashing the agent.
    fn cycle(&mut self) -> Result<CycleSummary, CycleError> {
        let (mut store, client) = self.connect()?;
        let result = self.cycle_steps(&mut store, &client);
        // Kept for the next cycle; `forget_broken_connections` drops it after a connection loss.
        self.store = Some(store);
        result
    }

    /// The store and the Kubernetes client, each opened on first use.
    fn connect(&mut self) -> Result<(Store, Client), CycleError> {
        let store = match self.store.take() {
            Some(store) => store,
            None => Store::open(&self.target)?.with_metrics(self.metrics.store.clone()),
        };
        if self.kube.is_none() {
            let opts = KubeOptions {
                kubeconfig: self.config.kubeconfig.clone(),
                context: self.config.kube_context.clone(),
                metrics: Some(self.kube_metrics.clone()),
                ..KubeOptions::default()
            };
            let client = match Client::connect(&opts) {
                Ok(c) => c,
                Err(e) => {
                    self.store = Some(store);
                    return Err(e.into());
                }
            };
            log::info!(api = client.describe().as_str(); "connected to the Kubernetes API");
            *self.kube_handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
            self.kube = Some(client);
        }
        let client = self.kube.clone().expect("connected above");
        Ok((store, client))
    }

    fn cycle_steps(
        &mut self,
        store: &mut Store,
        client: &Client,
    ) -> Result<CycleSummary, CycleError> {
        let cluster = self.config.cluster_name.clone();
        let targets = NotifySettings::from_config(&self.config).target_names();
        let mut summary = CycleSummary::default();
        still_leading(&self.leader)?;
        summary.baseline = store.baseline_pending(&cluster)?;
        let known = store.report_versions(&cluster)?;
        let listed = self.list_reports(client)?;
        summary.reports_read = listed.len() as u64;
        let (changed, mut live) = changed_reports(&listed, &known);
        for r in changed {
            self.apply_report(store, client, &listed, r, &targets, &mut live, &mut summary)?;
        }
        self.remove_gone_workloads(store, client, &live, &targets, &mut summary)?;
        still_leading(&self.leader)?;
        let live_uids: Vec<String> = listed.iter().map(|r| r.uid.clone()).collect();
        store.retain_report_versions(&cluster, &live_uids)?;
        if summary.baseline {
            store.finish_baseline(&cluster, jiff::Timestamp::now())?;
        }
        self.owners.prune();
        // The gauges are read only through /metrics, which `--once` does not serve, and a cycle
        // that wrote nothing leaves them as the last refresh set them: the aggregate reads every
        // open finding, the largest read of a quiet cycle, so it runs only when it can differ.
        let wrote =
            summary.baseline || summary.reports_changed > 0 || summary.workloads_removed > 0;
        if self.config.mode != Mode::Once && (wrote || !self.open_gauges_fresh) {
            // A read, not a write: a failure here does not undo the cycle.
            match store.open_findings(&cluster) {
                Ok(rows) => {
                    self.metrics.set_open(&rows);
                    self.open_gauges_fresh = true;
                }
                Err(e) => {
                    self.open_gauges_fresh = false;
                    log::warn!(error:% = e; "cannot count open findings for the metrics");
                }
            }
        }
        Ok(summary)
    }

    /// What exists: metadata only, one small listing per kind.
    fn list_reports(&self, client: &Client) -> Result<Vec<Listed>, CycleError> {
        let mut listed: Vec<Listed> = Vec::new();
        for &kind in ReportKind::ALL {
            let mut items = Vec::new();
            client.list_metadata(kind, &self.config.namespaces, &mut |event| match event {
                ListEvent::Restart => items.clear(),
                ListEvent::Item(meta) => items.push(Listed::new(kind, meta)),
            })?;
            listed.extend(items);
            self.health.progress();
        }
        Ok(listed)
    }

    /// Reads and applies one changed report: one transaction for its workload container. A
    /// store error that concerns only this report (a statement the database refused) skips it:
    /// logged, counted, and retried next cycle because its version was not recorded.
    #[allow(clippy::too_many_arguments)]
    fn apply_report(
        &mut self,
        store: &mut Store,
        client: &Client,
        listed: &[Listed],
        r: &Listed,
        targets: &[String],
        live: &mut HashSet<WorkloadKey>,
        summary: &mut CycleSummary,
    ) -> Result<(), CycleError> {
        if stopping(&self.stop) {
            return Err(CycleError::Interrupted);
        }
        still_leading(&self.leader)?;
        let owner = match &r.owner {
            Ok(o) => o,
            Err(reason) => {
                summary.reports_skipped += 1;
                self.metrics.malformed.inc();
                log::warn!(kind = r.kind.as_str(), namespace = r.namespace.as_str(), report = r.name.as_str(); "skipping a report whose owner is unknown: {reason}");
                return Ok(());
            }
        };
        if self.owners.lookup(client, owner)? == OwnerLookup::Missing {
            // The ReplicaSet is gone and its report goes with it (garbage collection):
            // recording it under the ReplicaSet's own name would announce old findings as
            // new ones of a workload nobody knows.
            summary.reports_superseded += 1;
            return Ok(());
        }
        let (workload, revision) = self.owners.resolve(client, owner)?;
        live.insert((
            workload.namespace.clone(),
            workload.kind.clone(),
            workload.name.clone(),
        ));
        let rivals = rivals(client, &mut self.owners, listed, r, &workload, revision)?;
        let (newest, _) = newest_by_key(rivals);
        if newest.values().any(|(_, uid)| *uid != r.uid) {
            // An older ReplicaSet's report after a rollout: the newer one speaks for the
            // Deployment.
            summary.reports_superseded += 1;
            return Ok(());
        }
        let report = match client.get_report(r.kind, &r.namespace, &r.name)? {
            None => return Ok(()), // deleted since the listing
            Some(Err(_)) => {
                // Logged and counted by the client; its previous state stays as it was.
                summary.reports_skipped += 1;
                return Ok(());
            }
            Some(Ok(report)) => report,
        };
        let observation = observe(&self.config.cluster_name, &workload, &report);
        let version = ReportVersion {
            uid: report.uid.clone(),
            resource_version: report.resource_version.clone(),
        };
        match store.apply(&observation, Some(&version), summary.baseline, targets) {
            Ok(applied) => {
                summary.reports_changed += 1;
                count_events(summary, &self.metrics, &applied.events);
            }
            Err(e) if e.concerns_one_write() => {
                summary.reports_skipped += 1;
                self.metrics.failed.inc();
                log::error!(
                    kind = r.kind.as_str(),
                    namespace = r.namespace.as_str(),
                    report = r.name.as_str();
                    "skipping a report the store refused; it is retried next cycle: {e}"
                );
            }
            Err(e) => return Err(e.into()),
        }
        self.health.progress();
        Ok(())
    }

    /// Workloads whose every report vanished: removed, or just between two scans? Only a
    /// workload the API says is gone is closed (absence of a report is not a fix).
    fn remove_gone_workloads(
        &mut self,
        store: &mut Store,
        client: &Client,
        live: &HashSet<WorkloadKey>,
        targets: &[String],
        summary: &mut CycleSummary,
    ) -> Result<(), CycleError> {
        let cluster = self.config.cluster_name.as_str();
        for key in store.known_workloads(cluster)? {
            if live.contains(&key) {
                continue;
            }
            if stopping(&self.stop) {
                return Err(CycleError::Interrupted);
            }
            still_leading(&self.leader)?;
            let (namespace, kind, name) = &key;
            if client.workload_existence(kind, namespace, name)? == Existence::Gone {
                let applied = store.remove_workload(
                    cluster,
                    namespace,
                    kind,
                    name,
                    jiff::Timestamp::now(),
                    targets,
                )?;
                summary.workloads_removed += 1;
                count_events(summary, &self.metrics, &applied.events);
            }
        }
        Ok(())
    }
}

/// (namespace, kind, name) of a workload.
type WorkloadKey = (String, String, String);

/// What changed since the last cycle (indices into `listed`), and the workloads kept alive by
/// the reports that did not change.
fn changed_reports<'l>(
    listed: &'l [Listed],
    known: &HashMap<String, KnownReport>,
) -> (Vec<&'l Listed>, HashSet<WorkloadKey>) {
    let mut live = HashSet::new();
    let mut changed = Vec::new();
    for r in listed {
        match known.get(&r.uid) {
            Some(k) if k.resource_version == r.resource_version => {
                live.insert((
                    k.asset.namespace.clone(),
                    k.asset.workload_kind.clone(),
                    k.asset.workload.clone(),
                ));
            }
            _ => changed.push(r),
        }
    }
    (changed, live)
}

/// `Err(NotLeader)` unless this agent may write now: checked before a cycle's first write and
/// before each unit of work.
fn still_leading(leader: &Option<Arc<LeaderState>>) -> Result<(), CycleError> {
    match leader {
        Some(l) if !l.is_leader() => Err(CycleError::NotLeader),
        _ => Ok(()),
    }
}

/// Whether shutdown began: checked between units of work.
fn stopping(stop: &Option<Receiver<()>>) -> bool {
    stop.as_ref()
        .is_some_and(|s| matches!(s.try_recv(), Err(TryRecvError::Disconnected)))
}

/// The listed reports that may speak for the same Deployment container as `report`, itself
/// included, with how recent each is; [`newest_by_key`] picks the one that does. Only reports of
/// ReplicaSets named after the Deployment are looked at, so the owner lookups stay few (and
/// cached).
fn rivals<'l>(
    client: &Client,
    owners: &mut OwnerResolver,
    listed: &'l [Listed],
    report: &'l Listed,
    workload: &Workload,
    revision: Option<u64>,
) -> Result<Vec<((), Revision, &'l str)>, KubeError> {
    let revision_of = |r: &Listed, deployment_revision| Revision {
        deployment_revision,
        update_timestamp: None,
        creation_timestamp: r.created,
        name: r.name.clone(),
    };
    let mut out = vec![((), revision_of(report, revision), report.uid.as_str())];
    if workload.kind != "Deployment" {
        return Ok(out);
    }
    let prefix = format!("{}-", workload.name);
    for other in listed {
        let Ok(owner) = &other.owner else { continue };
        if other.uid == report.uid
            || other.kind != report.kind
            || other.namespace != report.namespace
            || other.container != report.container
            || owner.kind != "ReplicaSet"
            || !owner.name.starts_with(&prefix)
        {
            continue;
        }
        let (w, rev) = owners.resolve(client, owner)?;
        if &w == workload {
            out.push(((), revision_of(other, rev), other.uid.as_str()));
        }
    }
    Ok(out)
}

/// The lifecycle's view of a report: plain data, no Kubernetes types.
fn observe(cluster: &str, workload: &Workload, report: &Report) -> Observation {
    Observation {
        cluster: cluster.to_owned(),
        asset: AssetId {
            namespace: workload.namespace.clone(),
            workload_kind: workload.kind.clone(),
            workload: workload.name.clone(),
            container: report.container.clone(),
        },
        image: report.image.to_string(),
        revision: None,
        // A report without updateTimestamp is dated by its creation; never "now", which would
        // make every re-read look like a newer scan.
        scanned_at: report
            .update_timestamp
            .or(report.creation_timestamp)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        findings: report
            .findings
            .iter()
            .map(|f| lifecycle::Finding {
                key: f.key(),
                severity: f.severity,
                installed_version: f.installed_version.clone(),
                fixed_version: f.fixed_version.clone(),
                title: f.title.clone(),
                link: f.primary_link.clone(),
                package_path: if f.package_path.is_empty() {
                    f.target.clone()
                } else {
                    f.package_path.clone()
                },
            })
            .collect(),
    }
}

fn count_events(summary: &mut CycleSummary, metrics: &PollMetrics, events: &[Event]) {
    for e in events {
        match e.kind {
            EventKind::New => summary.new += 1,
            EventKind::Fixed => summary.fixed += 1,
            EventKind::Reintroduced => summary.reintroduced += 1,
            EventKind::Withdrawn
            | EventKind::ReportedAgain
            | EventKind::SeverityChanged
            | EventKind::WorkloadRemoved
            | EventKind::ContainerRemoved => {}
        }
        metrics
            .events
            .get_or_create(&vec![("kind".to_owned(), e.kind.as_str().to_owned())])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(severity: Severity, namespace: &str, open: u64, oldest: Option<&str>) -> OpenFindings {
        OpenFindings {
            severity,
            namespace: namespace.to_owned(),
            open,
            oldest_announced: oldest.map(|t| t.parse().unwrap()),
        }
    }

    #[test]
    fn open_findings_gauges_follow_the_last_refresh() {
        let mut registry = Registry::default();
        let m = PollMetrics::new(&mut registry);
        m.set_open(&[
            row(Severity::Critical, "shop", 3, Some("2026-01-01T00:00:00Z")),
            row(Severity::Low, "shop", 2, None),
            row(Severity::High, "", 1, None),
        ]);
        let text = crate::metrics::render(&registry);
        for line in [
            "kijo_findings_open{severity=\"CRITICAL\",namespace=\"shop\"} 3",
            "kijo_findings_open{severity=\"LOW\",namespace=\"shop\"} 2",
            "kijo_findings_open{severity=\"HIGH\",namespace=\"shop\"} 0",
            "kijo_findings_open{severity=\"HIGH\",namespace=\"\"} 1",
            "kijo_findings_open_oldest_first_seen_timestamp_seconds{severity=\"CRITICAL\",namespace=\"shop\"} 1767225600",
        ] {
            assert!(
                text.lines().any(|l| l == line || l == format!("{line}.0")),
                "{line} missing:\n{text}"
            );
        }
        assert_eq!(
            text.matches("kijo_findings_open_oldest_first_seen_timestamp_seconds{")
                .count(),
            1,
            "only where an announced finding is open:\n{text}"
        );

        // The namespace without open findings loses its series; the announced one is fixed.
        m.set_open(&[row(Severity::Low, "shop", 1, None)]);
        let text = crate::metrics::render(&registry);
        assert!(!text.contains("namespace=\"\""), "{text}");
        assert!(
            !text.contains("kijo_findings_open_oldest_first_seen_timestamp_seconds{"),
            "{text}"
        );
        assert!(
            text.contains("kijo_findings_open{severity=\"CRITICAL\",namespace=\"shop\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("kijo_store_write_seconds"),
            "store metrics registered"
        );
        assert!(text.contains("kijo_reports_failed"), "{text}");
    }
}
