//! The poll loop: one cycle every `KIJO_POLL_INTERVAL`, the first at start, never overlapping
//! (cycles run one after another on this one thread).
//!
//! A cycle that fails changes no state: the store commits per unit of work, and the next cycle
//! starts from what was committed.
//!
//! With leader election (`crate::leader`) the loop waits on standby until this agent holds the
//! Lease, and checks it still does before a cycle's first write and before each unit of work.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::config::{Config, Mode};
use crate::health::HealthState;
use crate::kube::workload::Existence;
use crate::kube::{Client, KubeError, KubeMetrics, KubeOptions, ListEvent, OwnerResolver};
use crate::leader::LeaderState;
use crate::lifecycle::{self, AssetId, Created, Event, EventKind, NewsContext, Observation, Silence};
use crate::metrics::{Counter, Family, Gauge, Histogram, Registry};
use crate::notify::NotifySettings;
use crate::severity::Severity;
use crate::store::{DatabaseTarget, OpenFindings, ReportVersion, Store, StoreError, StoreMetrics};
#[cfg(doc)]
use crate::store::KnownReport;
use crate::trivy::report::{LABEL_CONTAINER, owner_of};
use crate::trivy::instance::is_family;
use crate::trivy::{ObjectMeta, Owner, Report, ReportKind, Revision, has_revisions, newest_by_key};

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
            "Unix time of the oldest first sighting among the open findings announced as new (not recorded silently by a baseline), by severity and namespace; absent when there is none.",
            m.oldest_open.clone(),
        );
        registry.register(
            "kijo_lifecycle_events",
            "Lifecycle events recorded, by kind (new, fixed, withdrawn, reintroduced, reported_again, severity_changed, workload_removed, container_removed).",
            m.events.clone(),
        );
        registry.register(
            "kijo_reports_skipped",
            "Reports skipped because they could not be used (malformed or without their findings list, owner unknown, scan dated in the future).",
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
    /// Malformed, owner unknown, dated in the future, or refused by the store.
    pub reports_skipped: u64,
    /// Reports that do not speak for their container: an older revision's, or their ReplicaSet
    /// is gone.
    pub reports_superseded: u64,
    /// Read and applied, but not newer than what the store holds (nothing changed).
    pub reports_stale: u64,
    pub new: u64,
    pub fixed: u64,
    pub withdrawn: u64,
    pub reintroduced: u64,
    pub reported_again: u64,
    pub severity_changed: u64,
    pub workloads_removed: u64,
    pub containers_removed: u64,
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
    /// Known reports read as their container's head (see [`plan_group`]) whose scan was stale:
    /// not read again each cycle while nothing about them changes.
    stale_heads: HashSet<HeadKey>,
}

impl Poller {
    pub fn new(
        config: Config,
        target: DatabaseTarget,
        health: Arc<HealthState>,
        metrics: PollMetrics,
        kube_metrics: KubeMetrics,
    ) -> Poller {
        let owner_forbidden = kube_metrics.owner_forbidden.clone();
        Poller {
            config,
            target,
            health,
            metrics,
            store: None,
            kube: None,
            kube_handle: KubeHandle::default(),
            kube_metrics,
            owners: OwnerResolver::new(Duration::from_secs(600), owner_forbidden),
            stop: None,
            committed: None,
            leader: None,
            open_gauges_fresh: false,
            stale_heads: HashSet::new(),
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
                        reports_superseded = s.reports_superseded,
                        reports_stale = s.reports_stale,
                        new_count = s.new,
                        fixed_count = s.fixed,
                        withdrawn_count = s.withdrawn,
                        reintroduced_count = s.reintroduced,
                        reported_again_count = s.reported_again,
                        severity_changed_count = s.severity_changed,
                        workloads_removed = s.workloads_removed,
                        containers_removed = s.containers_removed;
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
        // At the start, not the end: a cycle that failed half-way must not leave its lookups
        // counted as this cycle's (see `OwnerResolver::refresh`).
        self.owners.prune();
        still_leading(&self.leader)?;
        // Coverage that begins this cycle begins at its start: a workload created later is news.
        let cycle_started = jiff::Timestamp::now();
        summary.baseline = store.baseline_pending(&cluster)?;
        let scopes = coverage_scopes(&self.config.namespaces);
        let mut news = News {
            first_cycle: summary.baseline,
            covered: store.coverage(&cluster, &scopes)?,
            known_workloads: None,
            created: HashMap::new(),
        };
        if !news.first_cycle {
            for (namespace, kind) in &scopes {
                if lifecycle::covered_since(&news.covered, namespace, kind).is_none() {
                    log::info!(
                        cluster = cluster.as_str(),
                        namespace = namespace.as_str(),
                        kind = kind.as_str();
                        "covering a new scope: what it holds now is recorded without notifications"
                    );
                }
            }
        }
        let known = store.report_versions(&cluster)?;
        let listed = self.list_reports(client)?;
        summary.reports_read = listed.len() as u64;
        // Every listed report on its workload container: a known, unchanged one where the store
        // applied it (no API call), a changed one resolved through its owner.
        let mut live = HashSet::new();
        let mut placed = Vec::with_capacity(listed.len());
        for r in &listed {
            let p = match known.get(&r.uid) {
                Some(k) if k.resource_version == r.resource_version => Some(Placed {
                    report: r,
                    asset: Cow::Borrowed(&k.asset),
                    revision: None,
                    created: None,
                    changed: false,
                    current: k.current,
                }),
                _ => self.place_changed(client, r, &mut summary)?,
            };
            if let Some(p) = p {
                live.insert(workload_key(&p.asset));
                placed.push(p);
            }
        }
        // Each workload container's name is held once: a known report borrows it from `known`,
        // a resolved one from `resolved`; groups and coverage below only copy references. In a
        // cluster of thousands of containers every extra copy is a MiB.
        let resolved: Vec<AssetId> = placed
            .iter_mut()
            .filter_map(|p| match &mut p.asset {
                Cow::Owned(a) => Some(std::mem::take(a)),
                Cow::Borrowed(_) => None,
            })
            .collect();
        let mut resolved_iter = resolved.iter();
        let placed: Vec<Placed> = placed
            .into_iter()
            .map(|p| Placed {
                asset: match p.asset {
                    Cow::Borrowed(a) => a,
                    Cow::Owned(_) => resolved_iter.next().expect("one resolved asset per owned one"),
                },
                report: p.report,
                revision: p.revision,
                created: p.created,
                changed: p.changed,
                current: p.current,
            })
            .collect();
        let mut covering: Vec<Cover> = Vec::with_capacity(placed.len());
        for (asset, group) in group_by_asset(placed.into_iter().map(|p| (p.asset, p))) {
            let group = self.refresh_revisions(client, asset, group, &mut summary)?;
            let entries: Vec<GroupEntry> = group
                .iter()
                .map(|p| GroupEntry {
                    revision: p.recency(),
                    changed: p.changed,
                    current: p.current,
                    stale_before: self.stale_heads.contains(&p.head_key()),
                })
                .collect();
            let plan = plan_group(has_rivals(asset), &entries);
            summary.reports_superseded += plan.superseded;
            for &i in &plan.apply {
                self.apply_report(store, client, &group[i], &targets, &mut news, &mut summary)?;
            }
            covering.extend(group.iter().map(|p| Cover {
                asset: p.asset,
                owner: p.report.owner.as_ref().map_or("", |o| o.name.as_str()),
                revision: p.revision,
            }));
        }
        self.remove_gone_containers(store, client, &covering, &targets, &mut summary)?;
        let known_workloads = match news.known_workloads.take() {
            Some(k) => k,
            None => store.known_workloads(&cluster)?.into_iter().collect(),
        };
        self.remove_gone_workloads(
            store,
            client,
            &known_workloads,
            &live,
            &targets,
            &mut summary,
        )?;
        still_leading(&self.leader)?;
        let live_uids: Vec<String> = listed.iter().map(|r| r.uid.clone()).collect();
        store.retain_report_versions(&cluster, &live_uids)?;
        let listed_uids: HashSet<&str> = live_uids.iter().map(String::as_str).collect();
        self.stale_heads
            .retain(|(uid, _, _)| listed_uids.contains(uid.as_str()));
        // Before the baseline's end: a store with a completed baseline and no coverage is one
        // from before coverage baselines (`Store::coverage`).
        store.record_coverage(&cluster, &scopes, cycle_started)?;
        if summary.baseline {
            store.finish_baseline(&cluster, jiff::Timestamp::now())?;
        }
        // The gauges are read only through /metrics, which `--once` does not serve, and a cycle
        // that wrote nothing leaves them as the last refresh set them: the aggregate reads every
        // open finding, the largest read of a quiet cycle, so it runs only when it can differ.
        let wrote = summary.baseline
            || summary.reports_changed > 0
            || summary.workloads_removed > 0
            || summary.containers_removed > 0;
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

    /// Places a changed (or never applied) report on its workload container through its owner.
    /// `None` for a report that speaks for nothing: owner unknown (skipped) or its ReplicaSet
    /// gone (superseded).
    fn place_changed<'l>(
        &mut self,
        client: &Client,
        r: &'l Listed,
        summary: &mut CycleSummary,
    ) -> Result<Option<Placed<'l, Cow<'l, AssetId>>>, CycleError> {
        if stopping(&self.stop) {
            return Err(CycleError::Interrupted);
        }
        let owner = match &r.owner {
            Ok(o) => o,
            Err(reason) => {
                summary.reports_skipped += 1;
                self.metrics.malformed.inc();
                log::warn!(kind = r.kind.as_str(), namespace = r.namespace.as_str(), report = r.name.as_str(); "skipping a report whose owner is unknown: {reason}");
                return Ok(None);
            }
        };
        let attribution = self.owners.attribute(client, owner)?;
        if attribution.owner_gone && matches!(owner.kind.as_str(), "ReplicaSet" | "Job" | "Pod") {
            // The owner is gone and its report goes with it (garbage collection): recording
            // it under the owner's own name would announce old findings as new ones of a
            // workload nobody knows (an old ReplicaSet, a finished run whose family can no
            // longer be read). A workload already known is judged by `remove_gone_workloads`.
            summary.reports_superseded += 1;
            return Ok(None);
        }
        let workload = attribution.workload;
        Ok(Some(Placed {
            report: r,
            asset: Cow::Owned(AssetId {
                namespace: workload.namespace,
                workload_kind: workload.kind,
                workload: workload.name,
                container: r.container.clone(),
            }),
            revision: attribution.revision,
            created: attribution.created,
            changed: true,
            current: false,
        }))
    }

    /// For a container of a workload with revisions (a Deployment or Rollout, see
    /// [`has_revisions`]) with several reports, reads every ReplicaSet's revision
    /// from the API now: a rollback moves the highest revision to an old ReplicaSet whose
    /// report is unchanged, and the owner cache would notice only when its entry expires. A
    /// report whose ReplicaSet is gone leaves the group. Groups of one are returned as they are
    /// (no API call), so a quiet cluster of single-revision workloads costs nothing here.
    fn refresh_revisions<'l>(
        &mut self,
        client: &Client,
        asset: &AssetId,
        group: Vec<Placed<'l>>,
        summary: &mut CycleSummary,
    ) -> Result<Vec<Placed<'l>>, CycleError> {
        if group.len() < 2 || !has_revisions(&asset.workload_kind) {
            return Ok(group);
        }
        let mut kept = Vec::with_capacity(group.len());
        for mut p in group {
            if let Ok(owner) = &p.report.owner
                && owner.kind == "ReplicaSet"
            {
                if stopping(&self.stop) {
                    return Err(CycleError::Interrupted);
                }
                let attribution = self.owners.refresh(client, owner)?;
                if attribution.owner_gone {
                    if p.changed {
                        summary.reports_superseded += 1;
                    }
                    continue;
                }
                p.revision = attribution.revision;
            }
            kept.push(p);
        }
        Ok(kept)
    }

    /// Reads and applies one report: one transaction for its workload container. A store error
    /// that concerns only this report (a statement the database refused) skips it: logged,
    /// counted, and retried next cycle because its version was not recorded. So are a
    /// malformed report and a scan dated in the future: their container keeps its state.
    fn apply_report(
        &mut self,
        store: &mut Store,
        client: &Client,
        p: &Placed,
        targets: &[String],
        news: &mut News,
        summary: &mut CycleSummary,
    ) -> Result<(), CycleError> {
        if stopping(&self.stop) {
            return Err(CycleError::Interrupted);
        }
        still_leading(&self.leader)?;
        let r = p.report;
        let report = match client.get_report(r.kind, &r.namespace, &r.name)? {
            None => return Ok(()), // deleted since the listing
            Some(Err(_)) => {
                // Logged by the client (naming the report and why); its previous state stays.
                summary.reports_skipped += 1;
                self.metrics.malformed.inc();
                return Ok(());
            }
            Some(Ok(report)) => report,
        };
        let version = ReportVersion {
            uid: report.uid.clone(),
            resource_version: report.resource_version.clone(),
        };
        let observation = observe(&self.config.cluster_name, p.asset, p.revision, report);
        let now = jiff::Timestamp::now();
        if lifecycle::is_future(observation.scanned_at, now) {
            // Applied, it would make every real scan until that date look stale. Its version is
            // not recorded: it is read again next cycle, and applies once the clocks agree or
            // a new scan replaces it.
            summary.reports_skipped += 1;
            self.metrics.malformed.inc();
            log::warn!(
                kind = r.kind.as_str(),
                namespace = r.namespace.as_str(),
                report = r.name.as_str(),
                scanned_at:% = observation.scanned_at,
                agent_clock:% = now;
                "skipping a scan dated more than {} minutes ahead of this agent's clock; check the clocks of the nodes and of Trivy Operator",
                lifecycle::MAX_CLOCK_SKEW.as_mins()
            );
            return Ok(());
        }
        if news.known_workloads.is_none() {
            // Before this cycle's first write: what the store knew when the cycle began. A
            // cycle that applies nothing does not hold the set any longer than before.
            let known = store.known_workloads(&self.config.cluster_name)?;
            news.known_workloads = Some(known.into_iter().collect());
        }
        let silent = news.is_silent(client, p)?;
        match store.apply(&observation, Some(&version), silent, targets) {
            Ok(applied) => {
                summary.reports_changed += 1;
                if applied.stale {
                    summary.reports_stale += 1;
                    if !p.changed {
                        // A known report read again because it heads its group; while it is
                        // unchanged, reading it again would be as stale.
                        self.stale_heads.insert(p.head_key());
                    }
                    log::debug!(
                        kind = r.kind.as_str(),
                        namespace = r.namespace.as_str(),
                        report = r.name.as_str(),
                        scanned_at:% = observation.scanned_at;
                        "stale scan: not newer than the one applied to its container; nothing changes"
                    );
                }
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

    /// Stored containers that their workload's current revision has no report for: removed
    /// from the workload, or just not scanned yet? Only a container the workload's pod template
    /// no longer declares is closed; a template that cannot be read closes nothing. The
    /// template is read only for such candidates.
    fn remove_gone_containers(
        &mut self,
        store: &mut Store,
        client: &Client,
        covering: &[Cover],
        targets: &[String],
        summary: &mut CycleSummary,
    ) -> Result<(), CycleError> {
        let cluster = self.config.cluster_name.clone();
        let coverage = Coverage::new(covering);
        let candidates = store.live_containers(&cluster, &mut |a| coverage.is_candidate(a))?;
        for ((namespace, kind, name), candidates) in by_workload(candidates) {
            if stopping(&self.stop) {
                return Err(CycleError::Interrupted);
            }
            still_leading(&self.leader)?;
            let Some(declared) = client.workload_containers(&kind, &namespace, &name)? else {
                continue;
            };
            for asset in candidates {
                if declared.contains(&asset.container) {
                    continue;
                }
                let applied =
                    store.remove_container(&cluster, &asset, jiff::Timestamp::now(), targets)?;
                log::info!(
                    namespace = namespace.as_str(),
                    kind = kind.as_str(),
                    workload = name.as_str(),
                    container = asset.container.as_str(),
                    closed = applied.events.len();
                    "container no longer in its workload's pod template; its findings close as container_removed"
                );
                summary.containers_removed += 1;
                count_events(summary, &self.metrics, &applied.events);
            }
        }
        Ok(())
    }

    /// Workloads whose every report vanished: removed, or just between two scans? Only a
    /// workload the API says is gone is closed (absence of a report is not a fix).
    ///
    /// Only workloads of namespaces covered now are asked about: narrowing `KIJO_NAMESPACES`
    /// closes nothing and costs no request for the namespaces left out.
    fn remove_gone_workloads(
        &mut self,
        store: &mut Store,
        client: &Client,
        known: &BTreeSet<WorkloadKey>,
        live: &HashSet<WorkloadKey>,
        targets: &[String],
        summary: &mut CycleSummary,
    ) -> Result<(), CycleError> {
        let cluster = self.config.cluster_name.as_str();
        let namespaces = &self.config.namespaces;
        for key in known {
            // Runs of a family come and go: the family is never asked about, only its runs'
            // reports speak for it (docs/identity.md, "Short-lived instances").
            if live.contains(key)
                || is_family(&key.2)
                || !(namespaces.is_empty() || namespaces.contains(&key.0))
            {
                continue;
            }
            if stopping(&self.stop) {
                return Err(CycleError::Interrupted);
            }
            still_leading(&self.leader)?;
            let (namespace, kind, name) = key;
            // A kind the agent does not know by name (a custom controller) is located through
            // discovery; without a unique answer the workload's findings stay open.
            let collection = self.owners.collection_of_kind(client, kind)?;
            let collection = collection.as_ref().map(|(p, r)| (p.as_str(), r.as_str()));
            if client.workload_existence(collection, namespace, name)? == Existence::Gone {
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

/// The scopes (namespace or [`lifecycle::ALL_NAMESPACES`], report kind) this agent covers:
/// every tracked kind in every namespace, or the listed namespaces of the namespaced kinds
/// (cluster-scoped reports are not read with a namespace list).
fn coverage_scopes(namespaces: &[String]) -> Vec<(String, String)> {
    let mut scopes = Vec::new();
    for kind in ReportKind::ALL {
        if namespaces.is_empty() {
            scopes.push((lifecycle::ALL_NAMESPACES.to_owned(), kind.as_str().to_owned()));
        } else if !kind.cluster_scoped() {
            scopes.extend(
                namespaces
                    .iter()
                    .map(|n| (n.clone(), kind.as_str().to_owned())),
            );
        }
    }
    scopes
}

/// What one cycle knows for the coverage baseline ([`lifecycle::silence`]).
struct News {
    /// The cluster's first cycle has not completed.
    first_cycle: bool,
    /// The coverage recorded before this cycle.
    covered: Vec<lifecycle::Covered>,
    /// Workloads the store held a scan of when the cycle began; read before the cycle's first
    /// write (`apply_report`).
    known_workloads: Option<BTreeSet<WorkloadKey>>,
    /// Creation times read this cycle, so a workload's containers cost one request.
    created: HashMap<WorkloadKey, Created>,
}

impl News {
    /// Whether the findings this report brings for the first time are recorded silently. A
    /// request is made only for a workload the store never saw whose scope was covered before
    /// this cycle.
    fn is_silent(&mut self, client: &Client, p: &Placed) -> Result<bool, CycleError> {
        let key = workload_key(p.asset);
        let mut ctx = NewsContext {
            first_cycle: self.first_cycle,
            covered_since: lifecycle::covered_since(
                &self.covered,
                &p.asset.namespace,
                p.report.kind.as_str(),
            ),
            workload_known: self
                .known_workloads
                .as_ref()
                .is_some_and(|k| k.contains(&key)),
            created: match p.created {
                Some(t) => Created::At(t),
                None => self.created.get(&key).copied().unwrap_or(Created::NotRead),
            },
        };
        let mut decided = lifecycle::silence(&ctx);
        if decided == Silence::ReadCreated {
            ctx.created = match top_owner_created(client, p.asset)? {
                Some(t) => Created::At(t),
                None => Created::Unknown,
            };
            self.created.insert(key, ctx.created);
            decided = lifecycle::silence(&ctx);
        }
        Ok(decided == Silence::Silent)
    }
}

/// The creation time of a report's workload (the top owner a report resolves to), read from the
/// API. One small GET, asked only by [`News::is_silent`]; the owner chain can fill
/// [`Placed::created`] instead.
fn top_owner_created(
    client: &Client,
    asset: &AssetId,
) -> Result<Option<jiff::Timestamp>, CycleError> {
    if is_family(&asset.workload) {
        // No object has the family's name; a run's creation comes with its owner chain.
        return Ok(None);
    }
    Ok(client.workload_created(&asset.workload_kind, &asset.namespace, &asset.workload)?)
}

fn workload_key(asset: &AssetId) -> WorkloadKey {
    (
        asset.namespace.clone(),
        asset.workload_kind.clone(),
        asset.workload.clone(),
    )
}

/// A listed report placed on the workload container it speaks for.
struct Placed<'l, A = &'l AssetId> {
    report: &'l Listed,
    /// The workload container, held once per cycle: borrowed from the store's known reports
    /// (unchanged) or from the cycle's resolved assets. While a changed report is being resolved
    /// it is a `Cow` that owns it (`place_changed`).
    asset: A,
    /// The owning ReplicaSet's revision (of its Deployment or Rollout), when read this cycle.
    revision: Option<u64>,
    /// The top owner's `metadata.creationTimestamp`, when its owner chain was read this cycle
    /// (changed reports only: a known, unchanged one costs no API call); otherwise
    /// [`top_owner_created`] reads it where the coverage baseline needs it.
    created: Option<jiff::Timestamp>,
    /// Its version is not recorded: new, or rescanned since it was applied.
    changed: bool,
    /// It is the report last applied to its container ([`KnownReport::current`]).
    current: bool,
}

impl<A> Placed<'_, A> {
    fn recency(&self) -> Revision {
        Revision {
            deployment_revision: self.revision,
            // The listing carries metadata only; creation time and name break ties.
            update_timestamp: None,
            creation_timestamp: self.report.created,
            name: self.report.name.clone(),
        }
    }

    /// A report version together with the revision it was read at: a head that applied stale
    /// is not read again until one of them changes.
    fn head_key(&self) -> HeadKey {
        (
            self.report.uid.clone(),
            self.report.resource_version.clone(),
            self.revision,
        )
    }
}

/// (uid, resourceVersion, revision) of a report that headed its group and applied stale.
type HeadKey = (String, String, Option<u64>);

/// Groups items by the workload container they speak for, in container order.
fn group_by_asset<K: Ord, T>(items: impl IntoIterator<Item = (K, T)>) -> BTreeMap<K, Vec<T>> {
    let mut groups: BTreeMap<K, Vec<T>> = BTreeMap::new();
    for (asset, item) in items {
        groups.entry(asset).or_default().push(item);
    }
    groups
}

/// One report of a group, as [`plan_group`] sees it.
#[derive(Debug, Clone)]
struct GroupEntry {
    revision: Revision,
    changed: bool,
    current: bool,
    /// Read as the group's head before, unchanged since, and it was stale.
    stale_before: bool,
}

/// Which reports of one container's group to read and apply (indices), and how many changed
/// ones were passed over because another report speaks for the container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct GroupPlan {
    apply: Vec<usize>,
    superseded: u64,
}

/// Whether the reports of one workload container are rivals that [`plan_group`] ranks: a
/// workload with revisions ([`has_revisions`]), or a family of runs ([`is_family`]), where the
/// newest run speaks for the family.
fn has_rivals(asset: &AssetId) -> bool {
    has_revisions(&asset.workload_kind) || is_family(&asset.workload)
}

/// The reports of one container of a workload with revisions ([`has_revisions`]: a Deployment
/// or an Argo Rollout), or of a family of runs, are rivals: the newest ([`newest_by_key`]: the
/// highest ReplicaSet revision; for a family, the latest-created run's report) speaks for it.
/// It is applied when it changed, or when it is not the report last applied although it is
/// known and unchanged: a rollback gives an old ReplicaSet, and so its old report, the highest
/// revision. Other owners have one report per container; every changed one is applied (the
/// store orders scans).
fn plan_group(rivals: bool, entries: &[GroupEntry]) -> GroupPlan {
    if !rivals {
        return GroupPlan {
            apply: (0..entries.len()).filter(|&i| entries[i].changed).collect(),
            superseded: 0,
        };
    }
    let (winners, _) = newest_by_key(
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| ((), e.revision.clone(), i)),
    );
    let Some(&(_, head)) = winners.get(&()) else {
        return GroupPlan::default();
    };
    let e = &entries[head];
    let rolled_back = entries.len() >= 2 && !e.current && !e.stale_before;
    GroupPlan {
        apply: if e.changed || rolled_back {
            vec![head]
        } else {
            vec![]
        },
        superseded: entries
            .iter()
            .enumerate()
            .filter(|&(i, o)| i != head && o.changed)
            .count() as u64,
    }
}

/// A listed report as evidence that its container is in its workload's current revision.
#[derive(Debug, Clone)]
struct Cover<'l> {
    asset: &'l AssetId,
    /// The report's direct owner (the ReplicaSet of a Deployment's report).
    owner: &'l str,
    /// Its ReplicaSet revision, when read this cycle.
    revision: Option<u64>,
}

/// The (namespace, kind, name) of an asset's workload, borrowed.
fn workload_of(a: &AssetId) -> (&str, &str, &str) {
    (
        a.namespace.as_str(),
        a.workload_kind.as_str(),
        a.workload.as_str(),
    )
}

/// The listed reports by workload: evidence of which containers the current revisions have.
struct Coverage<'c>(BTreeMap<(&'c str, &'c str, &'c str), Vec<&'c Cover<'c>>>);

impl<'c> Coverage<'c> {
    fn new(covering: &'c [Cover<'c>]) -> Coverage<'c> {
        Coverage(group_by_asset(
            covering.iter().map(|c| (workload_of(c.asset), c)),
        ))
    }

    /// Whether a stored live container is a candidate for removal: its workload has listed
    /// reports, but none in its current revision for this container. A Deployment's current
    /// revision is the ReplicaSet of the highest revision read this cycle (all its reports
    /// count, read or not), and so for a Rollout ([`has_revisions`]); when no revision was read,
    /// every report counts. A workload without
    /// any listed report is not judged here (`remove_gone_workloads` asks whether it exists).
    fn is_candidate(&self, asset: &AssetId) -> bool {
        // A family has no pod template of its own: each run may have other containers.
        if is_family(&asset.workload) {
            return false;
        }
        let Some(reports) = self.0.get(&workload_of(asset)) else {
            return false;
        };
        let newest = reports.iter().filter_map(|c| c.revision).max();
        let current_owners: BTreeSet<&str> = match newest {
            Some(top) if has_revisions(&asset.workload_kind) => reports
                .iter()
                .filter(|c| c.revision == Some(top))
                .map(|c| c.owner)
                .collect(),
            _ => reports.iter().map(|c| c.owner).collect(),
        };
        !reports
            .iter()
            .any(|c| c.asset.container == asset.container && current_owners.contains(c.owner))
    }
}

/// Candidates by workload, so each workload's pod template is read once.
fn by_workload(candidates: Vec<AssetId>) -> BTreeMap<WorkloadKey, Vec<AssetId>> {
    let mut out: BTreeMap<WorkloadKey, Vec<AssetId>> = BTreeMap::new();
    for asset in candidates {
        out.entry(workload_key(&asset)).or_default().push(asset);
    }
    out
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

/// The lifecycle's view of a report: plain data, no Kubernetes types.
/// Takes the report by value: its findings move into the observation. The largest reports hold
/// tens of thousands of findings, and a copy of them would be the first sync's peak.
fn observe(cluster: &str, asset: &AssetId, revision: Option<u64>, report: Report) -> Observation {
    Observation {
        cluster: cluster.to_owned(),
        asset: asset.clone(),
        image: report.image.to_string(),
        revision,
        // A report without updateTimestamp is dated by its creation; never "now", which would
        // make every re-read look like a newer scan.
        scanned_at: report
            .update_timestamp
            .or(report.creation_timestamp)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        // Already one finding per key, its path (packagePath, else target) and installed
        // versions merged over the instances (see `trivy::report`).
        findings: report.findings,
    }
}

fn count_events(summary: &mut CycleSummary, metrics: &PollMetrics, events: &[Event]) {
    for e in events {
        match e.kind {
            EventKind::New => summary.new += 1,
            EventKind::Fixed => summary.fixed += 1,
            EventKind::Withdrawn => summary.withdrawn += 1,
            EventKind::Reintroduced => summary.reintroduced += 1,
            EventKind::ReportedAgain => summary.reported_again += 1,
            EventKind::SeverityChanged => summary.severity_changed += 1,
            // Counted per workload / container by the caller, not per finding.
            EventKind::WorkloadRemoved | EventKind::ContainerRemoved => {}
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

    fn asset(kind: &str, workload: &str, container: &str) -> AssetId {
        AssetId {
            namespace: "shop".into(),
            workload_kind: kind.into(),
            workload: workload.into(),
            container: container.into(),
        }
    }

    #[test]
    fn whose_reports_are_rivals() {
        let cases = [
            ("Deployment", "web", true),
            ("Rollout", "web", true),
            ("Job", "migrate-*", true),
            ("Pod", "ci-runner-*", true),
            ("Job", "migrate-41", false),
            ("StatefulSet", "db", false),
            ("CronJob", "nightly", false),
        ];
        for (kind, name, want) in cases {
            assert_eq!(has_rivals(&asset(kind, name, "app")), want, "{kind} {name}");
        }
    }

    #[test]
    fn reports_group_by_container() {
        let a = asset("Deployment", "web", "app");
        let b = asset("Deployment", "web", "sidecar");
        let c = asset("StatefulSet", "web", "app");
        // (input, expected groups)
        type Case = (Vec<(AssetId, &'static str)>, Vec<(AssetId, Vec<&'static str>)>);
        let cases: Vec<Case> = vec![
            (vec![], vec![]),
            (vec![(a.clone(), "r1")], vec![(a.clone(), vec!["r1"])]),
            (
                vec![(a.clone(), "r1"), (b.clone(), "r2"), (a.clone(), "r3"), (c.clone(), "r4")],
                vec![
                    (a.clone(), vec!["r1", "r3"]),
                    (b.clone(), vec!["r2"]),
                    (c.clone(), vec!["r4"]),
                ],
            ),
        ];
        for (input, want) in cases {
            let got: Vec<_> = group_by_asset(input.clone()).into_iter().collect();
            assert_eq!(got, want, "{input:?}");
        }
    }

    fn entry(revision: Option<u64>, name: &str, changed: bool, current: bool) -> GroupEntry {
        GroupEntry {
            revision: Revision {
                deployment_revision: revision,
                update_timestamp: None,
                creation_timestamp: Some("2026-01-01T00:00:00Z".parse().unwrap()),
                name: name.into(),
            },
            changed,
            current,
            stale_before: false,
        }
    }

    #[test]
    fn the_current_revision_speaks_for_a_deployment_container() {
        let stale = |mut e: GroupEntry| {
            e.stale_before = true;
            e
        };
        // (what, deployment?, entries, indices applied, superseded)
        type Case = (&'static str, bool, Vec<GroupEntry>, Vec<usize>, u64);
        let cases: Vec<Case> = vec![
            ("nothing listed", true, vec![], vec![], 0),
            ("one known report", true, vec![entry(None, "a", false, true)], vec![], 0),
            (
                "one known report, not current: a group of one costs nothing",
                true,
                vec![entry(None, "a", false, false)],
                vec![],
                0,
            ),
            ("one changed report", true, vec![entry(Some(1), "a", true, false)], vec![0], 0),
            (
                "rollout: the new ReplicaSet's report is applied",
                true,
                vec![entry(Some(1), "a", false, true), entry(Some(2), "b", true, false)],
                vec![1],
                0,
            ),
            (
                "an old revision rescanned: superseded",
                true,
                vec![entry(Some(1), "a", true, false), entry(Some(2), "b", false, true)],
                vec![],
                1,
            ),
            (
                "quiet: the head is the report last applied",
                true,
                vec![entry(Some(1), "a", false, false), entry(Some(2), "b", false, true)],
                vec![],
                0,
            ),
            (
                "rollback: the old ReplicaSet has the highest revision, known and unchanged",
                true,
                vec![entry(Some(3), "a", false, false), entry(Some(2), "b", false, true)],
                vec![0],
                0,
            ),
            (
                "rollback already read and stale: not read again",
                true,
                vec![stale(entry(Some(3), "a", false, false)), entry(Some(2), "b", false, true)],
                vec![],
                0,
            ),
            (
                "revisions unknown: the later-created report (then the name) wins",
                true,
                vec![entry(None, "b", false, false), entry(None, "a", false, true)],
                vec![0],
                0,
            ),
            (
                "both changed: only the head is applied",
                true,
                vec![
                    entry(Some(2), "b", true, false),
                    entry(Some(1), "a", true, false),
                    entry(Some(3), "c", true, false),
                ],
                vec![2],
                2,
            ),
            (
                "other owners: every changed report is applied",
                false,
                vec![entry(None, "a", true, false), entry(None, "b", false, false), entry(None, "c", true, false)],
                vec![0, 2],
                0,
            ),
        ];
        for (what, deployment, entries, apply, superseded) in cases {
            assert_eq!(
                plan_group(deployment, &entries),
                GroupPlan { apply, superseded },
                "{what}"
            );
        }
    }

    fn cover<'a>(a: &'a AssetId, owner: &'a str, revision: Option<u64>) -> Cover<'a> {
        Cover {
            asset: a,
            owner,
            revision,
        }
    }

    #[test]
    fn containers_without_a_report_in_the_current_revision_are_candidates() {
        let app = asset("Deployment", "web", "app");
        let sidecar = asset("Deployment", "web", "sidecar");
        let db = asset("StatefulSet", "db", "main");
        let db_old = asset("StatefulSet", "db", "old");
        let other = asset("Deployment", "api", "app");
        let run_main = asset("Job", "migrate-*", "main");
        let run_seed = asset("Job", "migrate-*", "seed");
        let web = ("shop".to_owned(), "Deployment".to_owned(), "web".to_owned());
        let dbk = ("shop".to_owned(), "StatefulSet".to_owned(), "db".to_owned());
        // (what, stored live containers, listed reports, candidates)
        type Case<'a> = (
            &'static str,
            Vec<AssetId>,
            Vec<Cover<'a>>,
            Vec<(WorkloadKey, Vec<AssetId>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "every container reported",
                vec![app.clone(), sidecar.clone()],
                vec![cover(&app, "web-1", None), cover(&sidecar, "web-1", None)],
                vec![],
            ),
            (
                "a workload without any listed report is not judged here",
                vec![other.clone()],
                vec![cover(&app, "web-1", None)],
                vec![],
            ),
            (
                "no report for the container at all",
                vec![app.clone(), sidecar.clone()],
                vec![cover(&app, "web-1", None)],
                vec![(web.clone(), vec![sidecar.clone()])],
            ),
            (
                "only the old ReplicaSet has the container",
                vec![app.clone(), sidecar.clone()],
                vec![
                    cover(&app, "web-1", Some(1)),
                    cover(&sidecar, "web-1", None),
                    cover(&app, "web-2", Some(2)),
                ],
                vec![(web.clone(), vec![sidecar.clone()])],
            ),
            (
                "the current ReplicaSet's other reports count without their revision",
                vec![app.clone(), sidecar.clone()],
                vec![
                    cover(&app, "web-1", Some(1)),
                    cover(&app, "web-2", Some(2)),
                    cover(&sidecar, "web-2", None),
                ],
                vec![],
            ),
            (
                "after a rollback the older-named ReplicaSet is current",
                vec![app.clone(), sidecar.clone()],
                vec![
                    cover(&app, "web-1", Some(3)),
                    cover(&app, "web-2", Some(2)),
                    cover(&sidecar, "web-2", None),
                ],
                vec![(web.clone(), vec![sidecar.clone()])],
            ),
            (
                "no revision read: every report counts",
                vec![app.clone(), sidecar.clone()],
                vec![cover(&app, "web-1", None), cover(&sidecar, "web-2", None)],
                vec![],
            ),
            (
                "other owners: the workload's reports",
                vec![db.clone(), db_old.clone()],
                vec![cover(&db, "db", None)],
                vec![(dbk.clone(), vec![db_old.clone()])],
            ),
            (
                "a family of runs: a run without a container removes nothing",
                vec![run_main.clone(), run_seed.clone()],
                vec![cover(&run_main, "migrate-42", None)],
                vec![],
            ),
        ];
        for (what, stored, covering, want) in cases {
            let coverage = Coverage::new(&covering);
            let kept = stored.iter().filter(|a| coverage.is_candidate(a)).cloned();
            let got: Vec<_> = by_workload(kept.collect()).into_iter().collect();
            assert_eq!(got, want, "{what}");
        }
    }
}
