//! The lifecycle of a finding, decided from plain data.
//!
//! A store loads what it knows about one workload container ([`StoredAsset`]), the poll cycle
//! provides a scan of it ([`Observation`]), and [`diff`] says which rows change and which events
//! happened. Nothing here does I/O, so every rule of the lifecycle is a table-driven unit test and
//! both stores behave identically because neither makes a lifecycle decision itself.
//!
//! The rules follow from one promise: a message states only what the agent has evidence for.
//! - **Identity** is (workload container, vulnerability id, package name). Path, scan target
//!   and installed version are attributes: several entries of one scan with the same identity
//!   are instances of one finding ([`merge_instances`]), open while any instance is listed.
//! - **Order**: only a newer scan of the container moves state; a scan of a higher Deployment
//!   revision (a rollout, or a rollback to a ReplicaSet whose report is older) is newer whatever
//!   its scan time ([`is_stale`]). Applying the same scan twice is harmless.
//! - **Absence is not a fix.** A report that vanished is never passed here. A finding missing
//!   from a newer scan is `fixed` only with evidence that what runs changed (another image
//!   digest, another installed version of the package); without it the scanner stopped
//!   reporting it (configuration or vulnerability database) and it is `withdrawn`
//!   (`closing_kind`).
//! - **Returns**: a fixed finding listed again is `reintroduced`, a withdrawn one
//!   `reported_again`; one closed because its workload or container went away reopens silently
//!   when they come back.
//! - **News**: during a baseline (a cluster's first cycle, a scope newly covered, a workload
//!   created before its scope was covered: [`silence`]) findings are recorded without any
//!   event; a finding that another container of the same workload held is not new either (a
//!   renamed container).
//! - **Severity**: a change is recorded (`severity_changed`); `peak_severity` remembers the
//!   highest severity of the current open period, so the closing of a finding announced as
//!   CRITICAL is told even if it was lowered meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::{SignedDuration, Timestamp};

use crate::severity::Severity;

/// How far in the future a scan may be dated before it is refused: clocks of nodes and the
/// operator drift by seconds, not minutes. A scan dated later would freeze its container (every
/// real scan before that date would look stale), so it is skipped and logged instead.
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(5);

/// One workload container: what a report describes after ReplicaSets are resolved to their
/// Deployment. `namespace` is empty for cluster-scoped reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AssetId {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub container: String,
}

/// What makes two findings of one container the same finding across scans: the vulnerability
/// and the package. Path, target, installed version, score, title and links are attributes: a
/// tag bump changes Trivy's `target`, a versioned path (`requests-2.31.0.dist-info`) changes
/// with the package, and neither makes a still-present vulnerability "fixed and new".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FindingKey {
    pub vulnerability_id: String,
    pub package: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Finding {
    pub key: FindingKey,
    pub severity: Severity,
    /// Installed versions of every instance: sorted, distinct, joined by ", ".
    pub installed_version: String,
    pub fixed_version: String,
    pub title: String,
    pub link: String,
    /// Package paths (else scan targets) of every instance: sorted, distinct, joined by ", ";
    /// empty when the report has none.
    pub package_path: String,
}

/// The separator of several instances' values in one attribute.
const INSTANCE_SEPARATOR: &str = ", ";

/// Merges entries with the same key into one finding per key, in first-seen order: the
/// instances' installed versions and paths become sorted distinct lists, the severity the
/// highest, the other attributes those of the first instance. Log4j in `a.jar` and `b.jar` is
/// one finding that stays open until neither jar has it.
pub fn merge_instances(findings: Vec<Finding>) -> Vec<Finding> {
    // Most reports list every key once: then there is nothing to merge, and the list is passed
    // on without copying a string.
    let mut keys = std::collections::HashSet::with_capacity(findings.len());
    if findings.iter().all(|f| keys.insert(&f.key)) {
        return findings;
    }
    drop(keys);
    struct Merged {
        finding: Finding,
        versions: BTreeSet<String>,
        paths: BTreeSet<String>,
    }
    let mut order: Vec<FindingKey> = Vec::new();
    let mut by_key: BTreeMap<FindingKey, Merged> = BTreeMap::new();
    for f in findings {
        match by_key.get_mut(&f.key) {
            Some(m) => {
                m.finding.severity = m.finding.severity.max(f.severity);
                m.versions.extend(split_instances(&f.installed_version));
                m.paths.extend(split_instances(&f.package_path));
                if m.finding.fixed_version.is_empty() {
                    m.finding.fixed_version = f.fixed_version;
                }
            }
            None => {
                order.push(f.key.clone());
                let versions = split_instances(&f.installed_version).collect();
                let paths = split_instances(&f.package_path).collect();
                by_key.insert(
                    f.key.clone(),
                    Merged {
                        finding: f,
                        versions,
                        paths,
                    },
                );
            }
        }
    }
    order
        .into_iter()
        .filter_map(|k| by_key.remove(&k))
        .map(|m| {
            let join = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>().join(INSTANCE_SEPARATOR);
            Finding {
                installed_version: join(m.versions),
                package_path: join(m.paths),
                ..m.finding
            }
        })
        .collect()
}

fn split_instances(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(INSTANCE_SEPARATOR)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// One scan of one workload container, taken from a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub cluster: String,
    pub asset: AssetId,
    /// registry/repository:tag@digest, as far as the report knows it.
    pub image: String,
    /// The report's `updateTimestamp`: when Trivy scanned, not when we read it.
    pub scanned_at: Timestamp,
    /// The Deployment revision of the report's ReplicaSet (`deployment.kubernetes.io/revision`),
    /// `None` for other owners or when it could not be read.
    pub revision: Option<u64>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingState {
    Open,
    /// Gone after what runs changed.
    Fixed,
    /// No longer reported by the scanner although the image did not change.
    Withdrawn,
    WorkloadRemoved,
    /// The workload's current revision no longer has the container.
    ContainerRemoved,
}

impl FindingState {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingState::Open => "open",
            FindingState::Fixed => "fixed",
            FindingState::Withdrawn => "withdrawn",
            FindingState::WorkloadRemoved => "workload_removed",
            FindingState::ContainerRemoved => "container_removed",
        }
    }

    pub fn parse(s: &str) -> Option<FindingState> {
        Some(match s {
            "open" => FindingState::Open,
            "fixed" => FindingState::Fixed,
            "withdrawn" => FindingState::Withdrawn,
            "workload_removed" => FindingState::WorkloadRemoved,
            "container_removed" => FindingState::ContainerRemoved,
            _ => return None,
        })
    }
}

/// A finding row as stored (one row of `vulnerability_history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFinding {
    pub finding: Finding,
    pub image: String,
    pub state: FindingState,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// When the finding stopped being open (fixed, withdrawn, or its workload or container
    /// removed).
    pub fixed_at: Option<Timestamp>,
    pub reintroduced_count: u32,
    /// The highest severity of the current (or last) open period: what people were told.
    pub peak_severity: Severity,
    /// It was opened as news ("new"), not recorded silently by a baseline, a coverage baseline
    /// or a rename: what the oldest-announced gauge counts. Kept for the finding's life.
    pub announced: bool,
}

/// Everything stored about one workload container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredAsset {
    /// The newest scan applied so far; `None` for a container never seen.
    pub last_scan_at: Option<Timestamp>,
    /// The image of the scan last applied; empty for a container never seen.
    pub image: String,
    /// The Deployment revision of the report last applied, when known.
    pub revision: Option<u64>,
    pub findings: Vec<StoredFinding>,
    /// Keys open, or closed as `container_removed`, in the workload's other containers, each
    /// with its earliest `first_seen` there; `None` until loaded (see
    /// [`Changes::needs_siblings`]).
    pub sibling_keys: Option<BTreeMap<FindingKey, Timestamp>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    New,
    Fixed,
    Withdrawn,
    Reintroduced,
    ReportedAgain,
    SeverityChanged,
    WorkloadRemoved,
    ContainerRemoved,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::New => "new",
            EventKind::Fixed => "fixed",
            EventKind::Withdrawn => "withdrawn",
            EventKind::Reintroduced => "reintroduced",
            EventKind::ReportedAgain => "reported_again",
            EventKind::SeverityChanged => "severity_changed",
            EventKind::WorkloadRemoved => "workload_removed",
            EventKind::ContainerRemoved => "container_removed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Some(match s {
            "new" => EventKind::New,
            "fixed" => EventKind::Fixed,
            "withdrawn" => EventKind::Withdrawn,
            "reintroduced" => EventKind::Reintroduced,
            "reported_again" => EventKind::ReportedAgain,
            "severity_changed" => EventKind::SeverityChanged,
            "workload_removed" => EventKind::WorkloadRemoved,
            "container_removed" => EventKind::ContainerRemoved,
            _ => return None,
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle event with everything a notification needs, so delivery never has to join
/// against state that may have moved on since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Derived from what happened (see [`event_id`]): the same change computed by two agents
    /// gets the same id, and the store's unique constraint keeps only one.
    pub event_id: String,
    pub kind: EventKind,
    pub cluster: String,
    pub asset: AssetId,
    pub image: String,
    /// The finding as of the event (for `severity_changed`, with the new severity).
    pub finding: Finding,
    pub previous_severity: Option<Severity>,
    /// The highest severity of the finding's open period as of the event: for a closing event,
    /// the severity people were told of.
    pub peak_severity: Severity,
    pub reintroduced_count: u32,
    pub occurred_at: Timestamp,
}

/// Rows to write and events to record for one asset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The scan was not newer than the stored state; nothing changes.
    pub stale: bool,
    /// Complete new versions of every row that changes (inserted or updated by key).
    pub rows: Vec<StoredFinding>,
    pub events: Vec<Event>,
    /// The diff would announce a new finding but [`StoredAsset::sibling_keys`] was not loaded:
    /// load them and diff again. Keeps the sibling query off every scan without news.
    pub needs_siblings: bool,
}

/// How far apart the reports of one scan may be dated. Trivy Operator scans every container of a
/// workload in one job, so their reports carry nearly the same `updateTimestamp`; a finding a
/// sibling container got within this window came with the same scan (a CVE new in two
/// containers at once is news in both), one it had before came with an earlier revision (a
/// renamed container is not news).
pub const SAME_SCAN_WINDOW: SignedDuration = SignedDuration::from_mins(10);

/// Whether another container of the workload held `key` since a scan earlier than `at`'s
/// ([`SAME_SCAN_WINDOW`]).
fn held_before(siblings: &BTreeMap<FindingKey, Timestamp>, key: &FindingKey, at: Timestamp) -> bool {
    siblings
        .get(key)
        .is_some_and(|first_seen| at.duration_since(*first_seen) >= SAME_SCAN_WINDOW)
}

/// The namespace of the scope that covers every namespace (`KIJO_NAMESPACES=all`). No Kubernetes
/// namespace can be named `*` (a namespace name is a DNS label).
pub const ALL_NAMESPACES: &str = "*";

/// One scope the agent covers (reports of one kind in one namespace, or in all namespaces) and
/// since when: recorded at the end of the first cycle that covered it and kept when the scope
/// is narrowed away, so that covering it again does not start from zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    /// A namespace, `""` for cluster-scoped reports, or [`ALL_NAMESPACES`].
    pub namespace: String,
    /// The report kind (`VulnerabilityReport`, ...).
    pub kind: String,
    pub since: Timestamp,
}

/// Since when reports of `kind` in `namespace` are covered: the earlier of the namespace's own
/// scope and the all-namespaces scope of that kind. `None` when neither was covered before this
/// cycle: its coverage begins now. Per kind, so a report kind tracked for the first time is
/// covered from the cycle that first lists it.
pub fn covered_since(covered: &[Covered], namespace: &str, kind: &str) -> Option<Timestamp> {
    covered
        .iter()
        .filter(|c| c.kind == kind && (c.namespace == namespace || c.namespace == ALL_NAMESPACES))
        .map(|c| c.since)
        .min()
}

/// What the agent knows of when a workload (its top owner) was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Not asked yet: asking costs an API request, made only when [`silence`] needs it.
    NotRead,
    /// Asked, and the API did not tell (forbidden, gone, a kind the agent cannot read).
    Unknown,
    At(Timestamp),
}

/// Everything [`silence`] decides on, for one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewsContext {
    /// The cluster's first cycle has not completed yet.
    pub first_cycle: bool,
    /// Since when the scan's (namespace, kind) is covered ([`covered_since`]); `None`: coverage
    /// begins this cycle.
    pub covered_since: Option<Timestamp>,
    /// The store holds a scan of this workload (any container): what it brings is compared with
    /// what the agent saw, so a container added to a known workload is news.
    pub workload_known: bool,
    /// The creation time of the workload's top owner.
    pub created: Created,
}

/// Whether findings never seen before are recorded silently ([`diff`]'s `baseline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// They existed before the agent covered them: recorded, not announced.
    Silent,
    /// They are news.
    News,
    /// Read the workload's creation time ([`Created::NotRead`]) and ask again.
    ReadCreated,
}

/// The coverage baseline: findings that existed before the agent covered them are not news.
/// That holds for the cluster's first cycle, for a scope (namespace, report kind) whose coverage
/// begins this cycle, and for a workload whose first report appears later but which was created
/// before its scope was covered (Trivy Operator was still scanning, or the scope was widened
/// while nobody had scanned it yet). A workload the store already knows is compared as usual,
/// and one created after its scope was covered is new.
///
/// `creationTimestamp` has second precision: a workload created in the same second as coverage
/// began counts as created after it, so a new workload is never silenced. When the creation
/// time cannot be read, the agent has no evidence that the workload is new and says nothing
/// (its findings are recorded; later changes are announced as usual).
pub fn silence(c: &NewsContext) -> Silence {
    if c.first_cycle {
        return Silence::Silent;
    }
    let Some(since) = c.covered_since else {
        return Silence::Silent;
    };
    if c.workload_known {
        return Silence::News;
    }
    match c.created {
        Created::NotRead => Silence::ReadCreated,
        Created::Unknown => Silence::Silent,
        Created::At(created) if created < floor_second(since) => Silence::Silent,
        Created::At(_) => Silence::News,
    }
}

/// `t` without its fraction of a second.
fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// A stable event id: SHA-256 over the change's identity, 32 hex digits. `moment` is the scan
/// time for scan-driven events and the finding's last sighting for removals, never the wall clock,
/// so that a stale leader repeating the same change produces the same id.
pub fn event_id(
    cluster: &str,
    asset: &AssetId,
    key: &FindingKey,
    kind: EventKind,
    moment: Timestamp,
) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        cluster,
        &asset.namespace,
        &asset.workload_kind,
        &asset.workload,
        &asset.container,
        &key.vulnerability_id,
        &key.package,
        kind.as_str(),
    ] {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    ctx.update(&moment.as_microsecond().to_be_bytes());
    let digest = ctx.finish();
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a scan must not move the stored state: it is not newer than the scan last applied.
/// A scan of a higher Deployment revision than the one last applied is newer whatever its scan
/// time: a rollback makes an old ReplicaSet current again, and its report, scanned before the
/// revision it replaces, speaks for what runs now. A lower revision is compared by time only:
/// the poll cycle passes only the current revision's report, and a re-created Deployment starts
/// counting revisions at 1 again.
pub fn is_stale(stored: &StoredAsset, obs: &Observation) -> bool {
    let Some(last) = stored.last_scan_at else {
        return false;
    };
    match (stored.revision, obs.revision) {
        (Some(applied), Some(seen)) if seen > applied => false,
        _ => obs.scanned_at <= last,
    }
}

/// Whether a scan is dated further in the future than clocks drift ([`MAX_CLOCK_SKEW`]).
pub fn is_future(scanned_at: Timestamp, now: Timestamp) -> bool {
    scanned_at.duration_since(now) > MAX_CLOCK_SKEW
}

/// The digest of an image string (`repo:tag@sha256:…`), if it carries one.
pub(crate) fn digest_of(image: &str) -> Option<&str> {
    image.split_once('@').map(|(_, d)| d).filter(|d| !d.is_empty())
}

/// The image reference without its digest (`repo:tag`).
pub(crate) fn reference_of(image: &str) -> &str {
    image.split_once('@').map_or(image, |(r, _)| r)
}

/// The installed versions of each package a set of findings lists.
fn package_versions<'a>(
    findings: impl IntoIterator<Item = &'a Finding>,
) -> BTreeMap<&'a str, BTreeSet<&'a str>> {
    let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for f in findings {
        out.entry(f.key.package.as_str())
            .or_default()
            .extend(f.installed_version.split(INSTANCE_SEPARATOR).filter(|v| !v.is_empty()));
    }
    out
}

/// Whether the container's image provably changed between the stored state and a scan: two
/// digests that differ (equal digests prove it did not); without a digest on either side, a
/// different reference (`repo:tag`) or a package both scans list at different installed
/// versions. Without any such sign the image counts as unchanged: "fixed" needs evidence.
fn image_changed(
    stored_image: &str,
    stored: &BTreeMap<&str, BTreeSet<&str>>,
    obs_image: &str,
    seen: &BTreeMap<&str, BTreeSet<&str>>,
) -> bool {
    if let (Some(a), Some(b)) = (digest_of(stored_image), digest_of(obs_image)) {
        return a != b;
    }
    reference_of(stored_image) != reference_of(obs_image)
        || stored
            .iter()
            .any(|(package, versions)| seen.get(package).is_some_and(|v| v != versions))
}

/// How an open finding that a newer scan no longer lists closes: `fixed` when its package is
/// listed at another installed version, or is not listed and the image changed
/// ([`image_changed`]); `withdrawn` when the package is listed at the very same version (the
/// scanner stopped reporting the vulnerability, e.g. `ignoreUnfixed` or a database update), or
/// nothing shows the image changed.
fn closing_kind(
    old: &Finding,
    seen: &BTreeMap<&str, BTreeSet<&str>>,
    image_changed: bool,
) -> EventKind {
    let old_versions: BTreeSet<&str> = old
        .installed_version
        .split(INSTANCE_SEPARATOR)
        .filter(|v| !v.is_empty())
        .collect();
    match seen.get(old.key.package.as_str()) {
        Some(versions) if *versions == old_versions => EventKind::Withdrawn,
        Some(_) => EventKind::Fixed,
        None if image_changed => EventKind::Fixed,
        None => EventKind::Withdrawn,
    }
}

/// Compares a newer scan with the stored state of the same workload container.
///
/// With `baseline`, findings never seen are recorded as open without a `new` event (the README
/// calls this the baseline); every other transition produces its event as usual. Entries with
/// the same key are instances of one finding ([`merge_instances`]).
pub fn diff(stored: &StoredAsset, obs: &Observation, baseline: bool) -> Changes {
    if is_stale(stored, obs) {
        return Changes {
            stale: true,
            ..Changes::default()
        };
    }
    let at = obs.scanned_at;
    let findings = merge_instances(obs.findings.clone());
    let known: BTreeMap<&FindingKey, &StoredFinding> = stored
        .findings
        .iter()
        .map(|f| (&f.finding.key, f))
        .collect();
    let mut changes = Changes::default();
    let event = |kind, finding: &Finding, previous, peak, count| Event {
        event_id: event_id(&obs.cluster, &obs.asset, &finding.key, kind, at),
        kind,
        cluster: obs.cluster.clone(),
        asset: obs.asset.clone(),
        image: obs.image.clone(),
        finding: finding.clone(),
        previous_severity: previous,
        peak_severity: peak,
        reintroduced_count: count,
        occurred_at: at,
    };
    let reopened = |finding: &Finding, old: &StoredFinding, count| StoredFinding {
        finding: finding.clone(),
        image: obs.image.clone(),
        state: FindingState::Open,
        first_seen: old.first_seen,
        last_seen: at,
        fixed_at: None,
        reintroduced_count: count,
        peak_severity: finding.severity,
        announced: old.announced,
    };

    for finding in &findings {
        let sev = finding.severity;
        match known.get(&finding.key) {
            None => {
                let news = !baseline
                    && match &stored.sibling_keys {
                        None => {
                            // Diffed again once they are loaded; this row is replaced then.
                            changes.needs_siblings = true;
                            false
                        }
                        // Held by another container of the workload since an earlier scan: a
                        // rename, not news.
                        Some(siblings) => !held_before(siblings, &finding.key, at),
                    };
                changes.rows.push(StoredFinding {
                    finding: finding.clone(),
                    image: obs.image.clone(),
                    state: FindingState::Open,
                    first_seen: at,
                    last_seen: at,
                    fixed_at: None,
                    reintroduced_count: 0,
                    peak_severity: sev,
                    announced: news,
                });
                if news {
                    changes
                        .events
                        .push(event(EventKind::New, finding, None, sev, 0));
                }
            }
            Some(old) => match old.state {
                FindingState::Open => {
                    let peak = old.peak_severity.max(sev);
                    if old.finding.severity != sev {
                        changes.events.push(event(
                            EventKind::SeverityChanged,
                            finding,
                            Some(old.finding.severity),
                            peak,
                            old.reintroduced_count,
                        ));
                    }
                    changes.rows.push(StoredFinding {
                        finding: finding.clone(),
                        image: obs.image.clone(),
                        last_seen: at,
                        peak_severity: peak,
                        ..(*old).clone()
                    });
                }
                FindingState::Fixed => {
                    let count = old.reintroduced_count + 1;
                    changes
                        .events
                        .push(event(EventKind::Reintroduced, finding, None, sev, count));
                    changes.rows.push(reopened(finding, old, count));
                }
                FindingState::Withdrawn => {
                    let count = old.reintroduced_count;
                    changes
                        .events
                        .push(event(EventKind::ReportedAgain, finding, None, sev, count));
                    changes.rows.push(reopened(finding, old, count));
                }
                // Its workload or container is back: nothing was fixed, so nothing is news.
                FindingState::WorkloadRemoved | FindingState::ContainerRemoved => {
                    changes
                        .rows
                        .push(reopened(finding, old, old.reintroduced_count));
                }
            },
        }
    }
    if changes.needs_siblings {
        return Changes {
            needs_siblings: true,
            ..Changes::default()
        };
    }

    let listed: BTreeSet<&FindingKey> = findings.iter().map(|f| &f.key).collect();
    let seen = package_versions(&findings);
    let stored_open = package_versions(
        stored
            .findings
            .iter()
            .filter(|f| f.state == FindingState::Open)
            .map(|f| &f.finding),
    );
    let changed = image_changed(&stored.image, &stored_open, &obs.image, &seen);
    for old in &stored.findings {
        if old.state != FindingState::Open || listed.contains(&old.finding.key) {
            continue;
        }
        let kind = closing_kind(&old.finding, &seen, changed);
        let mut ev = event(
            kind,
            &old.finding,
            None,
            old.peak_severity,
            old.reintroduced_count,
        );
        ev.image = old.image.clone();
        changes.events.push(ev);
        changes.rows.push(StoredFinding {
            state: if kind == EventKind::Fixed {
                FindingState::Fixed
            } else {
                FindingState::Withdrawn
            },
            fixed_at: Some(at),
            ..old.clone()
        });
    }
    changes
}

/// Closes every open finding of a workload container whose workload no longer exists. `at` is
/// when the agent noticed; the event id uses the finding's last sighting instead, so two agents
/// noticing at different moments record one event.
pub fn workload_removed(
    cluster: &str,
    asset: &AssetId,
    stored: &StoredAsset,
    at: Timestamp,
) -> Changes {
    close_all(cluster, asset, stored, at, EventKind::WorkloadRemoved)
}

/// Closes every open finding of a container that the workload's current revision no longer
/// has (a sidecar dropped by a rollout): removed, not fixed. Ids as in [`workload_removed`].
pub fn container_removed(
    cluster: &str,
    asset: &AssetId,
    stored: &StoredAsset,
    at: Timestamp,
) -> Changes {
    close_all(cluster, asset, stored, at, EventKind::ContainerRemoved)
}

fn close_all(
    cluster: &str,
    asset: &AssetId,
    stored: &StoredAsset,
    at: Timestamp,
    kind: EventKind,
) -> Changes {
    let state = match kind {
        EventKind::ContainerRemoved => FindingState::ContainerRemoved,
        _ => FindingState::WorkloadRemoved,
    };
    let mut changes = Changes::default();
    for old in stored
        .findings
        .iter()
        .filter(|f| f.state == FindingState::Open)
    {
        changes.events.push(Event {
            event_id: event_id(cluster, asset, &old.finding.key, kind, old.last_seen),
            kind,
            cluster: cluster.to_owned(),
            asset: asset.clone(),
            image: old.image.clone(),
            finding: old.finding.clone(),
            previous_severity: None,
            peak_severity: old.peak_severity,
            reintroduced_count: old.reintroduced_count,
            occurred_at: at,
        });
        changes.rows.push(StoredFinding {
            state,
            fixed_at: Some(at),
            ..old.clone()
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-02T00:00:00Z";
    const T2: &str = "2026-01-03T00:00:00Z";
    const IMG_A: &str = "docker.io/library/web:1@sha256:aa";
    const IMG_B: &str = "docker.io/library/web:1@sha256:bb";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn asset() -> AssetId {
        AssetId {
            namespace: "shop".into(),
            workload_kind: "Deployment".into(),
            workload: "web".into(),
            container: "app".into(),
        }
    }

    /// "CVE-1 HIGH pkg=openssl@1.0 path=/a.jar" → a finding; package `pkg@1.0` by default.
    fn finding(spec: &str) -> Finding {
        let mut words = spec.split_whitespace();
        let id = words.next().unwrap();
        let severity = words.next().unwrap().parse().expect("a severity name");
        let (mut package, mut version, mut path) = ("pkg", "1.0", "");
        for w in words {
            match w.split_once('=') {
                Some(("pkg", p)) => {
                    let (name, v) = p.split_once('@').unwrap_or((p, "1.0"));
                    package = name;
                    version = v;
                }
                Some(("path", p)) => path = p,
                _ => {}
            }
        }
        Finding {
            key: FindingKey {
                vulnerability_id: id.into(),
                package: package.into(),
            },
            severity,
            installed_version: version.into(),
            fixed_version: "9.9".into(),
            title: format!("{id} title"),
            link: format!("https://avd.aquasec.com/nvd/{id}"),
            package_path: path.into(),
        }
    }

    fn obs(at: &str, image: &str, specs: &[&str]) -> Observation {
        Observation {
            cluster: "prod".into(),
            asset: asset(),
            image: image.into(),
            scanned_at: ts(at),
            revision: None,
            findings: specs.iter().map(|s| finding(s)).collect(),
        }
    }

    /// Rows as "CVE-1 HIGH open [count=2] [peak=CRITICAL] [pkg=…]"; no sibling keys.
    fn stored(last_scan: &str, image: &str, rows: &[&str]) -> StoredAsset {
        StoredAsset {
            last_scan_at: Some(ts(last_scan)),
            image: image.into(),
            revision: None,
            sibling_keys: Some(BTreeMap::new()),
            findings: rows
                .iter()
                .map(|r| {
                    let words: Vec<&str> = r.split_whitespace().collect();
                    let state = FindingState::parse(words[2]).unwrap();
                    let opt = |k: &str| {
                        words
                            .iter()
                            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
                    };
                    let f = finding(&words.join(" ").replacen(&format!(" {}", words[2]), "", 1));
                    StoredFinding {
                        peak_severity: opt("peak").map_or(f.severity, |p| p.parse().unwrap()),
                        finding: f,
                        image: image.into(),
                        state,
                        first_seen: ts(T0),
                        last_seen: ts(last_scan),
                        fixed_at: (state != FindingState::Open).then(|| ts(last_scan)),
                        reintroduced_count: opt("count").map_or(0, |c| c.parse().unwrap()),
                        announced: true,
                    }
                })
                .collect(),
        }
    }

    /// Events as "kind:id" and rows as "id:state:count:peak", each sorted.
    fn summary(c: &Changes) -> (Vec<String>, Vec<String>) {
        let mut events: Vec<String> = c
            .events
            .iter()
            .map(|e| format!("{}:{}", e.kind, e.finding.key.vulnerability_id))
            .collect();
        events.sort();
        let mut rows: Vec<String> = c
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{}:{}:{}:{}",
                    r.finding.key.vulnerability_id,
                    r.state.as_str(),
                    r.reintroduced_count,
                    r.peak_severity
                )
            })
            .collect();
        rows.sort();
        (events, rows)
    }

    /// Applies changes to a stored asset in memory, as a store would.
    fn apply_in_memory(stored: &mut StoredAsset, changes: &Changes, obs: Option<&Observation>) {
        if changes.stale {
            return;
        }
        for row in &changes.rows {
            match stored
                .findings
                .iter_mut()
                .find(|f| f.finding.key == row.finding.key)
            {
                Some(existing) => *existing = row.clone(),
                None => stored.findings.push(row.clone()),
            }
        }
        if let Some(o) = obs {
            stored.last_scan_at = Some(o.scanned_at);
            stored.image = o.image.clone();
            stored.revision = o.revision.or(stored.revision);
        }
    }

    struct Case {
        name: &'static str,
        stored: StoredAsset,
        obs: Observation,
        baseline: bool,
        events: &'static [&'static str],
        rows: &'static [&'static str],
    }

    fn check(cases: Vec<Case>) {
        for c in cases {
            let got = diff(&c.stored, &c.obs, c.baseline);
            assert!(!got.stale && !got.needs_siblings, "{}", c.name);
            let (events, rows) = summary(&got);
            assert_eq!(events, c.events, "{}: events", c.name);
            assert_eq!(rows, c.rows, "{}: rows", c.name);
        }
    }


    #[test]
    fn coverage_starts_at_the_earliest_scope_of_its_kind() {
        let c = |namespace: &str, kind: &str, since: &str| Covered {
            namespace: namespace.into(),
            kind: kind.into(),
            since: ts(since),
        };
        const VR: &str = "VulnerabilityReport";
        const CVR: &str = "ClusterVulnerabilityReport";
        // (what, stored scopes, namespace, kind, want)
        type Case = (&'static str, Vec<Covered>, &'static str, &'static str, Option<&'static str>);
        let cases: Vec<Case> = vec![
            ("nothing covered yet", vec![], "team-a", VR, None),
            ("its own namespace", vec![c("team-a", VR, T0)], "team-a", VR, Some(T0)),
            ("another namespace only: begins now", vec![c("team-a", VR, T0)], "team-b", VR, None),
            ("all namespaces", vec![c(ALL_NAMESPACES, VR, T1)], "team-b", VR, Some(T1)),
            (
                "widened to all: the namespace keeps its earlier start",
                vec![c("team-a", VR, T0), c(ALL_NAMESPACES, VR, T1)],
                "team-a",
                VR,
                Some(T0),
            ),
            (
                "narrowed from all to a list: still covered since all began",
                vec![c(ALL_NAMESPACES, VR, T0), c("team-b", VR, T1)],
                "team-b",
                VR,
                Some(T0),
            ),
            (
                "another kind's coverage does not count: a newly tracked kind begins now",
                vec![c(ALL_NAMESPACES, VR, T0)],
                "",
                CVR,
                None,
            ),
            ("cluster-scoped under all", vec![c(ALL_NAMESPACES, CVR, T2)], "", CVR, Some(T2)),
        ];
        for (what, covered, namespace, kind, want) in cases {
            assert_eq!(covered_since(&covered, namespace, kind), want.map(ts), "{what}");
        }
    }

    #[test]
    fn findings_that_existed_before_coverage_are_silent() {
        let since = ts("2026-01-02T00:00:00.600Z");
        let ctx = |first_cycle, covered_since: Option<Timestamp>, workload_known, created| NewsContext {
            first_cycle,
            covered_since,
            workload_known,
            created,
        };
        use Created::{At, NotRead, Unknown};
        use Silence::{News, ReadCreated, Silent};
        let before = At(ts("2026-01-01T23:59:59Z"));
        let same_second = At(ts("2026-01-02T00:00:00Z"));
        let after = At(ts("2026-01-02T00:00:01Z"));
        // (what, context, want)
        let cases: Vec<(&str, NewsContext, Silence)> = vec![
            ("the cluster's first cycle", ctx(true, None, false, NotRead), Silent),
            ("first cycle, even for a known workload", ctx(true, Some(since), true, after), Silent),
            ("a scope covered from this cycle on", ctx(false, None, false, NotRead), Silent),
            ("a newly covered scope, workload created later", ctx(false, None, false, after), Silent),
            ("a known workload: a new container or finding is news", ctx(false, Some(since), true, before), News),
            ("an unseen workload: its creation time decides", ctx(false, Some(since), false, NotRead), ReadCreated),
            ("created before coverage began: scanned late", ctx(false, Some(since), false, before), Silent),
            ("created after coverage began", ctx(false, Some(since), false, after), News),
            ("created in the second coverage began: counts as after", ctx(false, Some(since), false, same_second), News),
            ("creation time unknown: no evidence it is new", ctx(false, Some(since), false, Unknown), Silent),
        ];
        for (what, c, want) in cases {
            assert_eq!(silence(&c), want, "{what}");
        }
    }

    #[test]
    fn opening_and_persisting() {
        check(vec![
            Case {
                name: "new: never seen finding on a known container",
                stored: stored(T1, IMG_A, &[]),
                obs: obs(T2, IMG_A, &["CVE-1 HIGH"]),
                baseline: false,
                events: &["new:CVE-1"],
                rows: &["CVE-1:open:0:HIGH"],
            },
            Case {
                name: "new: a workload deployed after the baseline",
                stored: StoredAsset {
                    sibling_keys: Some(BTreeMap::new()),
                    ..StoredAsset::default()
                },
                obs: obs(T2, IMG_A, &["CVE-1 HIGH", "CVE-2 LOW"]),
                baseline: false,
                events: &["new:CVE-1", "new:CVE-2"],
                rows: &["CVE-1:open:0:HIGH", "CVE-2:open:0:LOW"],
            },
            Case {
                name: "baseline: recorded open, no event",
                stored: StoredAsset::default(),
                obs: obs(T2, IMG_A, &["CVE-1 HIGH", "CVE-2 LOW"]),
                baseline: true,
                events: &[],
                rows: &["CVE-1:open:0:HIGH", "CVE-2:open:0:LOW"],
            },
            Case {
                name: "persistent: row rewritten with new last_seen, no event",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH open"]),
                obs: obs(T2, IMG_A, &["CVE-1 HIGH"]),
                baseline: false,
                events: &[],
                rows: &["CVE-1:open:0:HIGH"],
            },
            Case {
                name: "persistent across an image change: an upgraded package still vulnerable",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH open pkg=zlib@1.0"]),
                obs: obs(T2, IMG_B, &["CVE-1 HIGH pkg=zlib@1.1"]),
                baseline: false,
                events: &[],
                rows: &["CVE-1:open:0:HIGH"],
            },
            Case {
                name: "a renamed container: the key another container held is not news",
                stored: StoredAsset {
                    sibling_keys: Some(BTreeMap::from([(finding("CVE-1 HIGH").key, ts(T1))])),
                    ..StoredAsset::default()
                },
                obs: obs(T2, IMG_A, &["CVE-1 HIGH", "CVE-2 HIGH"]),
                baseline: false,
                events: &["new:CVE-2"],
                rows: &["CVE-1:open:0:HIGH", "CVE-2:open:0:HIGH"],
            },
            Case {
                name: "new in two containers with the same scan: news in both",
                stored: StoredAsset {
                    sibling_keys: Some(BTreeMap::from([(
                        finding("CVE-1 HIGH").key,
                        ts("2026-01-02T23:55:00Z"),
                    )])),
                    ..StoredAsset::default()
                },
                obs: obs(T2, IMG_A, &["CVE-1 HIGH"]),
                baseline: false,
                events: &["new:CVE-1"],
                rows: &["CVE-1:open:0:HIGH"],
            },
        ]);
    }

    #[test]
    fn closing_needs_evidence_that_what_runs_changed() {
        let no_digest_a = "registry.example/web:1.0";
        let no_digest_b = "registry.example/web:1.1";
        check(vec![
            Case {
                name: "fixed: the digest changed and the package is gone",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH open pkg=zlib", "CVE-2 LOW open"]),
                obs: obs(T2, IMG_B, &["CVE-2 LOW"]),
                baseline: false,
                events: &["fixed:CVE-1"],
                rows: &["CVE-1:fixed:0:HIGH", "CVE-2:open:0:LOW"],
            },
            Case {
                name: "fixed: the package is listed at another installed version",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH open pkg=ssl@3.0", "CVE-2 LOW open pkg=ssl@3.0"]),
                obs: obs(T2, IMG_B, &["CVE-2 LOW pkg=ssl@3.1"]),
                baseline: false,
                events: &["fixed:CVE-1"],
                rows: &["CVE-1:fixed:0:HIGH", "CVE-2:open:0:LOW"],
            },
            Case {
                name: "fixed: an empty newer scan of another digest fixes everything open",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH open", "CVE-2 LOW fixed"]),
                obs: obs(T2, IMG_B, &[]),
                baseline: false,
                events: &["fixed:CVE-1"],
                rows: &["CVE-1:fixed:0:HIGH"],
            },
            Case {
                name: "withdrawn: the same digest no longer lists it (ignoreUnfixed, severity filter, database)",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH open pkg=zlib", "CVE-2 LOW open"]),
                obs: obs(T2, IMG_A, &["CVE-2 LOW"]),
                baseline: false,
                events: &["withdrawn:CVE-1"],
                rows: &["CVE-1:withdrawn:0:HIGH", "CVE-2:open:0:LOW"],
            },
            Case {
                name: "withdrawn: another digest, but the package is listed at the same version",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH open pkg=ssl@3.0", "CVE-2 LOW open pkg=ssl@3.0"]),
                obs: obs(T2, IMG_B, &["CVE-2 LOW pkg=ssl@3.0"]),
                baseline: false,
                events: &["withdrawn:CVE-1"],
                rows: &["CVE-1:withdrawn:0:HIGH", "CVE-2:open:0:LOW"],
            },
            Case {
                name: "no digest: another tag is evidence",
                stored: stored(T1, no_digest_a, &["CVE-1 HIGH open pkg=zlib"]),
                obs: obs(T2, no_digest_b, &[]),
                baseline: false,
                events: &["fixed:CVE-1"],
                rows: &["CVE-1:fixed:0:HIGH"],
            },
            Case {
                name: "no digest: same tag, another installed version of a package both list",
                stored: stored(T1, no_digest_a, &["CVE-1 HIGH open pkg=zlib", "CVE-2 LOW open pkg=ssl@3.0"]),
                obs: obs(T2, no_digest_a, &["CVE-2 LOW pkg=ssl@3.1"]),
                baseline: false,
                events: &["fixed:CVE-1"],
                rows: &["CVE-1:fixed:0:HIGH", "CVE-2:open:0:LOW"],
            },
            Case {
                name: "no digest: same tag, same versions: no evidence, withdrawn",
                stored: stored(T1, no_digest_a, &["CVE-1 HIGH open pkg=zlib", "CVE-2 LOW open pkg=ssl@3.0"]),
                obs: obs(T2, no_digest_a, &["CVE-2 LOW pkg=ssl@3.0"]),
                baseline: false,
                events: &["withdrawn:CVE-1"],
                rows: &["CVE-1:withdrawn:0:HIGH", "CVE-2:open:0:LOW"],
            },
            Case {
                name: "a digest on one side only: judged by reference and versions",
                stored: stored(T1, "docker.io/library/web:1", &["CVE-1 HIGH open pkg=zlib"]),
                obs: obs(T2, IMG_A, &[]),
                baseline: false,
                events: &["withdrawn:CVE-1"],
                rows: &["CVE-1:withdrawn:0:HIGH"],
            },
            Case {
                name: "already closed and still absent: untouched",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH fixed", "CVE-2 HIGH withdrawn"]),
                obs: obs(T2, IMG_B, &[]),
                baseline: false,
                events: &[],
                rows: &[],
            },
            Case {
                name: "the closing event carries the peak severity people were told",
                stored: stored(T1, IMG_A, &["CVE-1 LOW open peak=CRITICAL"]),
                obs: obs(T2, IMG_B, &[]),
                baseline: false,
                events: &["fixed:CVE-1"],
                rows: &["CVE-1:fixed:0:CRITICAL"],
            },
        ]);
    }

    #[test]
    fn returning_findings() {
        check(vec![
            Case {
                name: "reintroduced: a fixed finding is back, counted",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH fixed count=1"]),
                obs: obs(T2, IMG_B, &["CVE-1 HIGH"]),
                baseline: false,
                events: &["reintroduced:CVE-1"],
                rows: &["CVE-1:open:2:HIGH"],
            },
            Case {
                name: "reintroduced even during a baseline (only new is silenced)",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH fixed"]),
                obs: obs(T2, IMG_B, &["CVE-1 HIGH"]),
                baseline: true,
                events: &["reintroduced:CVE-1"],
                rows: &["CVE-1:open:1:HIGH"],
            },
            Case {
                name: "reported again: a withdrawn finding listed again, not counted",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH withdrawn count=1"]),
                obs: obs(T2, IMG_A, &["CVE-1 HIGH"]),
                baseline: false,
                events: &["reported_again:CVE-1"],
                rows: &["CVE-1:open:1:HIGH"],
            },
            Case {
                name: "a returning workload reopens silently",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH workload_removed"]),
                obs: obs(T2, IMG_A, &["CVE-1 HIGH"]),
                baseline: false,
                events: &[],
                rows: &["CVE-1:open:0:HIGH"],
            },
            Case {
                name: "a returning container reopens silently",
                stored: stored(T1, IMG_A, &["CVE-1 HIGH container_removed count=2"]),
                obs: obs(T2, IMG_B, &["CVE-1 MEDIUM"]),
                baseline: false,
                events: &[],
                rows: &["CVE-1:open:2:MEDIUM"],
            },
            Case {
                name: "a reopened finding starts a new open period: peak is its severity",
                stored: stored(T1, IMG_A, &["CVE-1 LOW fixed peak=CRITICAL"]),
                obs: obs(T2, IMG_B, &["CVE-1 LOW"]),
                baseline: false,
                events: &["reintroduced:CVE-1"],
                rows: &["CVE-1:open:1:LOW"],
            },
        ]);
    }

    #[test]
    fn severity_changes_and_peak() {
        check(vec![
            Case {
                name: "a rise is recorded with the previous severity; peak rises",
                stored: stored(T1, IMG_A, &["CVE-1 MEDIUM open"]),
                obs: obs(T2, IMG_A, &["CVE-1 CRITICAL"]),
                baseline: false,
                events: &["severity_changed:CVE-1"],
                rows: &["CVE-1:open:0:CRITICAL"],
            },
            Case {
                name: "a lowering is recorded; peak stays what people were told",
                stored: stored(T1, IMG_A, &["CVE-1 CRITICAL open"]),
                obs: obs(T2, IMG_A, &["CVE-1 LOW"]),
                baseline: false,
                events: &["severity_changed:CVE-1"],
                rows: &["CVE-1:open:0:CRITICAL"],
            },
        ]);
        let c = diff(
            &stored(T1, IMG_A, &["CVE-1 MEDIUM open"]),
            &obs(T2, IMG_A, &["CVE-1 CRITICAL"]),
            false,
        );
        assert_eq!(c.events[0].previous_severity, Some(Severity::Medium));
        assert_eq!(c.events[0].finding.severity, Severity::Critical);
        assert_eq!(c.events[0].peak_severity, Severity::Critical);
    }

    #[test]
    fn instances_are_one_finding() {
        let a = "CVE-44228 CRITICAL pkg=log4j@2.14 path=/a.jar";
        let b = "CVE-44228 CRITICAL pkg=log4j@2.14 path=/b.jar";
        let b_old = "CVE-44228 CRITICAL pkg=log4j@2.13 path=/b.jar";
        check(vec![
            Case {
                name: "two jars, one finding",
                stored: stored(T1, IMG_A, &[]),
                obs: obs(T2, IMG_A, &[a, b]),
                baseline: false,
                events: &["new:CVE-44228"],
                rows: &["CVE-44228:open:0:CRITICAL"],
            },
            Case {
                name: "one jar upgraded: still open through the other",
                stored: stored(T1, IMG_A, &["CVE-44228 CRITICAL open pkg=log4j@2.14"]),
                obs: obs(T2, IMG_B, &[b]),
                baseline: false,
                events: &[],
                rows: &["CVE-44228:open:0:CRITICAL"],
            },
            Case {
                name: "a path change (tag bump changes Trivy's target) is not fixed+new",
                stored: stored(T1, IMG_A, &["CVE-44228 CRITICAL open pkg=log4j@2.14 path=/a.jar"]),
                obs: obs(T2, IMG_B, &[b]),
                baseline: false,
                events: &[],
                rows: &["CVE-44228:open:0:CRITICAL"],
            },
        ]);
        let merged = merge_instances(vec![finding(b), finding(a), finding(b_old), finding(a)]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].installed_version, "2.13, 2.14");
        assert_eq!(merged[0].package_path, "/a.jar, /b.jar");
        let rows = diff(&stored(T1, IMG_A, &[]), &obs(T2, IMG_A, &[a, b]), false).rows;
        assert_eq!(rows[0].finding.package_path, "/a.jar, /b.jar");
    }

    #[test]
    fn merge_instances_keeps_first_seen_order_and_the_highest_severity() {
        /// (id, severity, installed versions) of each merged finding.
        type Merged<'a> = &'a [(&'a str, &'a str, &'a str)];
        let cases: &[(&[&str], Merged)] = &[
            (&[], &[]),
            (
                &["CVE-2 LOW pkg=a", "CVE-1 HIGH pkg=b"],
                &[("CVE-2", "LOW", "1.0"), ("CVE-1", "HIGH", "1.0")],
            ),
            (
                &["CVE-1 LOW pkg=a@1", "CVE-1 HIGH pkg=a@2", "CVE-1 LOW pkg=a@1"],
                &[("CVE-1", "HIGH", "1, 2")],
            ),
            // Same vulnerability in two packages: two findings.
            (
                &["CVE-1 LOW pkg=a", "CVE-1 LOW pkg=b"],
                &[("CVE-1", "LOW", "1.0"), ("CVE-1", "LOW", "1.0")],
            ),
        ];
        for (input, want) in cases {
            let got: Vec<(String, String, String)> =
                merge_instances(input.iter().map(|s| finding(s)).collect())
                    .into_iter()
                    .map(|f| {
                        (
                            f.key.vulnerability_id,
                            f.severity.as_str().to_owned(),
                            f.installed_version,
                        )
                    })
                    .collect();
            let want: Vec<(String, String, String)> = want
                .iter()
                .map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into()))
                .collect();
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn siblings_are_loaded_only_when_a_finding_would_be_new() {
        let unloaded = |rows: &[&str]| StoredAsset {
            sibling_keys: None,
            ..stored(T1, IMG_A, rows)
        };
        let cases = [
            ("would announce new", unloaded(&[]), &["CVE-1 HIGH"][..], false, true),
            ("nothing new", unloaded(&["CVE-1 HIGH open"]), &["CVE-1 HIGH"][..], false, false),
            ("baseline never announces", unloaded(&[]), &["CVE-1 HIGH"][..], true, false),
            ("only closings", unloaded(&["CVE-1 HIGH open"]), &[][..], false, false),
        ];
        for (name, s, specs, baseline, needs) in cases {
            let c = diff(&s, &obs(T2, IMG_B, specs), baseline);
            assert_eq!(c.needs_siblings, needs, "{name}");
            if needs {
                assert!(c.rows.is_empty() && c.events.is_empty(), "{name}: nothing half-done");
            }
        }
    }

    /// `announced` (what the oldest-announced gauge counts) is set only where a "new" is
    /// emitted, and a finding keeps it through its life.
    #[test]
    fn a_finding_is_announced_only_when_it_opened_as_news() {
        let silent = |rows: &[&str]| {
            let mut s = stored(T1, IMG_A, rows);
            s.findings.iter_mut().for_each(|f| f.announced = false);
            s
        };
        let renamed = StoredAsset {
            sibling_keys: Some(BTreeMap::from([(finding("CVE-1 HIGH").key, ts(T0))])),
            ..stored(T1, IMG_A, &[])
        };
        // (what, stored, scan, baseline, announced after the scan)
        let cases: Vec<(&str, StoredAsset, &str, bool, bool)> = vec![
            ("news", stored(T1, IMG_A, &[]), IMG_A, false, true),
            ("recorded by a baseline or a coverage baseline", stored(T1, IMG_A, &[]), IMG_A, true, false),
            ("a renamed container's finding", renamed, IMG_A, false, false),
            ("still open: kept", silent(&["CVE-1 HIGH open"]), IMG_A, false, false),
            ("reintroduced: kept", silent(&["CVE-1 HIGH fixed"]), IMG_B, false, false),
            ("reported again: kept", stored(T1, IMG_A, &["CVE-1 HIGH withdrawn"]), IMG_A, false, true),
        ];
        for (what, s, image, baseline, want) in cases {
            let c = diff(&s, &obs(T2, image, &["CVE-1 HIGH"]), baseline);
            let row = c.rows.iter().find(|r| r.finding.key.vulnerability_id == "CVE-1");
            assert_eq!(row.map(|r| r.announced), Some(want), "{what}");
            let new = c.events.iter().any(|e| e.kind == EventKind::New);
            assert_eq!(new, want && s.findings.is_empty(), "{what}: a new event exactly then");
        }
    }

    #[test]
    fn which_scan_is_newer() {
        let with = |last: &str, rev: Option<u64>| StoredAsset {
            revision: rev,
            ..stored(last, IMG_A, &[])
        };
        let scan = |at: &str, rev: Option<u64>| Observation {
            revision: rev,
            ..obs(at, IMG_A, &[])
        };
        let cases = [
            ("never seen", StoredAsset::default(), scan(T1, None), false),
            ("newer scan", with(T1, None), scan(T2, None), false),
            ("same scan again (idempotence)", with(T2, None), scan(T2, None), true),
            ("older scan", with(T2, None), scan(T1, None), true),
            ("rollback: higher revision, older scan", with(T2, Some(2)), scan(T1, Some(3)), false),
            ("same revision, older scan", with(T2, Some(3)), scan(T1, Some(3)), true),
            ("same revision, newer scan (TTL rescan)", with(T1, Some(3)), scan(T2, Some(3)), false),
            ("re-created Deployment: revision 1 again, newer scan", with(T1, Some(5)), scan(T2, Some(1)), false),
            ("lower revision, older scan", with(T2, Some(5)), scan(T1, Some(1)), true),
            ("revision unknown on one side", with(T2, Some(2)), scan(T1, None), true),
        ];
        for (name, s, o, want) in cases {
            assert_eq!(is_stale(&s, &o), want, "{name}");
            let c = diff(&s, &o, false);
            assert_eq!(c.stale, want, "{name}: diff agrees");
            if want {
                assert!(c.rows.is_empty() && c.events.is_empty(), "{name}");
            }
        }
    }

    #[test]
    fn scans_from_the_future_are_recognised() {
        let now = ts("2026-06-01T12:00:00Z");
        let cases = [
            ("2026-06-01T12:00:00Z", false),
            ("2026-06-01T11:00:00Z", false),
            ("2026-06-01T12:04:59Z", false),
            ("2026-06-01T12:05:00Z", false),
            ("2026-06-01T12:05:01Z", true),
            ("2026-06-01T14:00:00Z", true),
        ];
        for (at, want) in cases {
            assert_eq!(is_future(ts(at), now), want, "{at}");
        }
    }

    #[test]
    fn row_timestamps_follow_the_scan() {
        let s = stored(
            T1,
            IMG_A,
            &["CVE-1 HIGH open", "CVE-2 HIGH open pkg=zlib", "CVE-3 HIGH fixed"],
        );
        let c = diff(&s, &obs(T2, IMG_B, &["CVE-1 HIGH", "CVE-3 HIGH"]), false);
        let row = |id: &str| {
            c.rows
                .iter()
                .find(|r| r.finding.key.vulnerability_id == id)
                .unwrap()
        };
        // persistent: last_seen moves to the scan, first_seen stays
        assert_eq!(row("CVE-1").last_seen, ts(T2));
        assert_eq!(row("CVE-1").first_seen, ts(T0));
        assert_eq!(row("CVE-1").image, IMG_B);
        // fixed: fixed_at is the scan that no longer has it, last_seen stays the last sighting
        assert_eq!(row("CVE-2").state, FindingState::Fixed);
        assert_eq!(row("CVE-2").fixed_at, Some(ts(T2)));
        assert_eq!(row("CVE-2").last_seen, ts(T1));
        // reintroduced: open again, fixed_at cleared, first_seen kept
        assert_eq!(row("CVE-3").fixed_at, None);
        assert_eq!(row("CVE-3").first_seen, ts(T0));
    }

    #[test]
    fn events_carry_what_a_notification_needs() {
        let s = stored(T1, IMG_A, &["CVE-2 LOW open pkg=zlib"]);
        let c = diff(&s, &obs(T2, IMG_B, &["CVE-3 HIGH"]), false);
        let by_kind = |k| c.events.iter().find(|e| e.kind == k).unwrap();
        let new = by_kind(EventKind::New);
        assert_eq!(new.cluster, "prod");
        assert_eq!(new.asset, asset());
        assert_eq!(new.image, IMG_B);
        assert_eq!(new.finding.title, "CVE-3 title");
        assert_eq!(new.finding.fixed_version, "9.9");
        assert_eq!(new.occurred_at, ts(T2));
        assert_eq!(new.peak_severity, Severity::High);
        // a fixed event names the image the finding was last seen in
        let fixed = by_kind(EventKind::Fixed);
        assert_eq!(fixed.image, IMG_A);
        assert_eq!(fixed.finding.key.vulnerability_id, "CVE-2");
    }

    #[test]
    fn applying_the_same_scan_twice_yields_no_second_events() {
        let mut state = StoredAsset::default();
        let scans = [
            (obs(T1, IMG_A, &["CVE-1 HIGH"]), true, 0),
            (obs(T2, IMG_B, &["CVE-2 HIGH"]), false, 2),
        ];
        for (o, baseline, want) in scans {
            state.sibling_keys = Some(BTreeMap::new());
            let first = diff(&state, &o, baseline);
            assert_eq!(first.events.len(), want);
            apply_in_memory(&mut state, &first, Some(&o));
            let again = diff(&state, &o, baseline);
            assert!(again.stale && again.events.is_empty() && again.rows.is_empty());
        }
    }

    /// The sequence for a scanner change, applied in memory: withdrawn, then reported
    /// again — never fixed, never reintroduced.
    #[test]
    fn a_scanner_change_and_its_revert_are_not_a_fix() {
        let mut state = stored(T0, IMG_A, &["CVE-1 HIGH open", "CVE-2 LOW open"]);
        let steps = [
            (T1, vec!["CVE-2 LOW"], vec!["withdrawn:CVE-1"]),
            (T2, vec!["CVE-1 HIGH", "CVE-2 LOW"], vec!["reported_again:CVE-1"]),
        ];
        for (at, specs, want) in steps {
            let o = obs(at, IMG_A, &specs);
            let c = diff(&state, &o, false);
            assert_eq!(summary(&c).0, want, "{at}");
            apply_in_memory(&mut state, &c, Some(&o));
        }
    }

    #[test]
    fn event_ids_are_stable_and_distinct() {
        let k = finding("CVE-1 HIGH").key;
        let a = event_id("prod", &asset(), &k, EventKind::New, ts(T1));
        assert_eq!(a, event_id("prod", &asset(), &k, EventKind::New, ts(T1)));
        assert_eq!(a.len(), 32);
        let others = [
            event_id("stage", &asset(), &k, EventKind::New, ts(T1)),
            event_id("prod", &asset(), &k, EventKind::Fixed, ts(T1)),
            event_id("prod", &asset(), &k, EventKind::Withdrawn, ts(T1)),
            event_id("prod", &asset(), &k, EventKind::New, ts(T2)),
            event_id("prod", &AssetId::default(), &k, EventKind::New, ts(T1)),
        ];
        for o in others {
            assert_ne!(a, o);
        }
    }

    #[test]
    fn removals_close_only_open_findings() {
        let s = stored(
            T1,
            IMG_A,
            &["CVE-1 HIGH open", "CVE-2 LOW fixed", "CVE-3 LOW open count=2 peak=HIGH"],
        );
        let at = ts("2026-02-01T00:00:00Z");
        type Remove = fn(&str, &AssetId, &StoredAsset, Timestamp) -> Changes;
        let cases: [(Remove, &str); 2] = [
            (workload_removed, "workload_removed"),
            (container_removed, "container_removed"),
        ];
        for (remove, kind) in cases {
            let c = remove("prod", &asset(), &s, at);
            let (events, rows) = summary(&c);
            assert_eq!(events, [format!("{kind}:CVE-1"), format!("{kind}:CVE-3")]);
            assert_eq!(
                rows,
                [format!("CVE-1:{kind}:0:HIGH"), format!("CVE-3:{kind}:2:HIGH")]
            );
            assert!(c.rows.iter().all(|r| r.fixed_at == Some(at)));
            assert_eq!(c.events[1].peak_severity, Severity::High, "{kind}: told HIGH");
            // noticed later by another agent: same ids
            let later = remove("prod", &asset(), &s, ts("2026-02-02T00:00:00Z"));
            let ids = |c: &Changes| c.events.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(&c), ids(&later));
            // nothing open: nothing happens
            let mut after = s.clone();
            apply_in_memory(&mut after, &c, None);
            assert_eq!(remove("prod", &asset(), &after, at), Changes::default());
        }
    }

    #[test]
    fn kinds_and_states_round_trip_their_stored_names() {
        for k in [
            EventKind::New,
            EventKind::Fixed,
            EventKind::Withdrawn,
            EventKind::Reintroduced,
            EventKind::ReportedAgain,
            EventKind::SeverityChanged,
            EventKind::WorkloadRemoved,
            EventKind::ContainerRemoved,
        ] {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        for s in [
            FindingState::Open,
            FindingState::Fixed,
            FindingState::Withdrawn,
            FindingState::WorkloadRemoved,
            FindingState::ContainerRemoved,
        ] {
            assert_eq!(FindingState::parse(s.as_str()), Some(s));
        }
    }
}
