//! Leader election on a `coordination.k8s.io/v1` Lease, so that with `replicas: 2` exactly one
//! agent polls and writes while the other waits, ready to take over.
//!
//! The algorithm is client-go's `tryAcquireOrRenew` (k8s-api.md §5.2):
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

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::{Value, json};

use crate::kube::{Client, KubeError, KubeOptions, RetryPolicy};
use crate::metrics::{Counter, Gauge, Registry};

/// `KIJO_LEADER_ELECTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// On in-cluster (service account, no kubeconfig), off for a local run.
    Auto,
    On,
    Off,
}

impl Election {
    pub fn parse(s: &str) -> Result<Election, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Election::Auto),
            "true" | "on" | "yes" | "1" => Ok(Election::On),
            "false" | "off" | "no" | "0" => Ok(Election::Off),
            _ => Err("expected auto, true or false".into()),
        }
    }
}

/// Leader election as configured (validated, not yet resolved against the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    pub election: Election,
    pub lease_name: String,
    /// `None`: the service account's namespace, else `POD_NAMESPACE`, else `default`.
    pub lease_namespace: Option<String>,
    pub lease_duration: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            election: Election::Auto,
            lease_name: "kijo-agent".into(),
            lease_namespace: None,
            lease_duration: Duration::from_secs(15),
        }
    }
}

/// A Lease name is a DNS subdomain.
pub fn check_lease_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_owned())
    } else {
        Err("is not a Lease name (lower-case letters, digits, '-' and '.')".into())
    }
}

/// Whole seconds (the Lease stores `leaseDurationSeconds`), between 2 s and 1 h.
pub fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a duration like 15s or 1m";
    let d: jiff::SignedDuration = s.trim().parse().map_err(|_| HINT.to_owned())?;
    let d = Duration::try_from(d).map_err(|_| format!("{HINT}, not negative"))?;
    if d.subsec_nanos() != 0 {
        return Err("must be whole seconds".into());
    }
    if d < Duration::from_secs(2) || d > Duration::from_secs(3600) {
        return Err("must be between 2s and 1h".into());
    }
    Ok(d)
}

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

    fn path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.namespace, self.lease_name
        )
    }

    fn collection(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        )
    }
}

/// Lease `MicroTime`: microseconds, UTC, always six digits.
pub fn micro_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The spec fields the algorithm reads; the rest of the object is kept as fetched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub holder: String,
    pub duration_seconds: i64,
    pub transitions: i64,
    pub acquire_time: String,
    pub renew_time: String,
}

impl Record {
    pub fn of(lease: &Value) -> Record {
        let spec = &lease["spec"];
        Record {
            holder: spec["holderIdentity"].as_str().unwrap_or("").to_owned(),
            duration_seconds: spec["leaseDurationSeconds"].as_i64().unwrap_or(0),
            transitions: spec["leaseTransitions"].as_i64().unwrap_or(0),
            acquire_time: spec["acquireTime"].as_str().unwrap_or("").to_owned(),
            renew_time: spec["renewTime"].as_str().unwrap_or("").to_owned(),
        }
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No Lease yet: POST this one.
    Create(Value),
    /// Take over or renew: PUT this one (it carries the fetched resourceVersion).
    Update(Value),
    /// Someone else holds a valid lease.
    Standby { holder: String },
}

/// One decision of `tryAcquireOrRenew`, from plain data. `observed_for` is how long ago (on our
/// clock) we first saw the current record unchanged.
pub fn decide(
    settings: &Settings,
    fetched: Option<&Value>,
    observed_for: Duration,
    now: jiff::Timestamp,
) -> Step {
    let now_text = micro_time(now);
    let seconds = settings.lease_duration.as_secs() as i64;
    let Some(lease) = fetched else {
        return Step::Create(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": settings.lease_name, "namespace": settings.namespace},
            "spec": {
                "holderIdentity": settings.identity,
                "leaseDurationSeconds": seconds,
                "acquireTime": now_text,
                "renewTime": now_text,
                "leaseTransitions": 0,
            }
        }));
    };
    let record = Record::of(lease);
    let held_by_other = !record.holder.is_empty() && record.holder != settings.identity;
    let valid_for = Duration::from_secs(record.duration_seconds.max(0) as u64);
    if held_by_other && observed_for < valid_for {
        return Step::Standby {
            holder: record.holder,
        };
    }
    let mut next = lease.clone();
    let spec = &mut next["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    spec["holderIdentity"] = json!(settings.identity);
    spec["leaseDurationSeconds"] = json!(seconds);
    spec["renewTime"] = json!(now_text);
    if record.holder != settings.identity {
        spec["acquireTime"] = json!(now_text);
        spec["leaseTransitions"] = json!(record.transitions + 1);
    }
    Step::Update(next)
}

/// The Lease as released on shutdown: nobody holds it, and it is over in a second.
pub fn released(lease: &Value, now: jiff::Timestamp) -> Value {
    let mut next = lease.clone();
    next["spec"]["holderIdentity"] = json!("");
    next["spec"]["leaseDurationSeconds"] = json!(1);
    next["spec"]["renewTime"] = json!(micro_time(now));
    next
}

/// The leader metrics.
#[derive(Clone, Default)]
pub struct LeaderMetrics {
    leader: Gauge,
    transitions: Counter,
    errors: Counter,
}

impl LeaderMetrics {
    pub fn new(registry: &mut Registry) -> LeaderMetrics {
        let m = LeaderMetrics::default();
        registry.register(
            "kijo_leader",
            "1 while this agent holds the Lease and does the work (always 1 without leader election), 0 on standby.",
            m.leader.clone(),
        );
        registry.register(
            "kijo_leader_acquired",
            "Times this agent became leader.",
            m.transitions.clone(),
        );
        registry.register(
            "kijo_lease_errors",
            "Lease requests that failed (API errors other than a lost race).",
            m.errors.clone(),
        );
        m
    }

    /// Without leader election this agent always does the work.
    pub fn always_leading(&self) {
        self.leader.set(1);
    }
}

/// Whether this agent may work now, shared by the `leader` thread (writer) and the poll loop.
pub struct LeaderState {
    /// Leader until this instant (monotonic); `None` while standing by.
    until: Mutex<Option<Instant>>,
    changed: Condvar,
    metrics: LeaderMetrics,
}

impl LeaderState {
    pub fn new(metrics: LeaderMetrics) -> Arc<LeaderState> {
        metrics.leader.set(0);
        Arc::new(LeaderState {
            until: Mutex::new(None),
            changed: Condvar::new(),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while the last successful renewal is recent enough by our own clock.
    pub fn is_leader(&self) -> bool {
        let leading = self.lock().is_some_and(|u| Instant::now() < u);
        self.metrics.leader.set(i64::from(leading));
        leading
    }

    /// Waits up to `timeout` for leadership; returns whether we lead.
    pub fn wait_for_leadership(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut until = self.lock();
        loop {
            let now = Instant::now();
            if until.is_some_and(|u| now < u) {
                drop(until);
                return self.is_leader();
            }
            if now >= deadline {
                drop(until);
                return self.is_leader();
            }
            until = self
                .changed
                .wait_timeout(until, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn lead_until(&self, until: Instant) {
        let mut guard = self.lock();
        let was = guard.is_some_and(|u| Instant::now() < u);
        *guard = Some(until);
        drop(guard);
        if !was {
            self.metrics.transitions.inc();
        }
        self.metrics.leader.set(1);
        self.changed.notify_all();
    }

    fn stand_by(&self) {
        *self.lock() = None;
        self.metrics.leader.set(0);
        self.changed.notify_all();
    }
}

/// The running `leader` thread.
pub struct Elector {
    state: Arc<LeaderState>,
    stop: Option<Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Elector {
    /// Starts the `leader` thread. `kube` is how the poll loop reaches the API; lease requests
    /// are not retried (the next tick is the retry).
    pub fn start(
        settings: Settings,
        mut kube: KubeOptions,
        metrics: LeaderMetrics,
    ) -> std::io::Result<Elector> {
        kube.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        let state = LeaderState::new(metrics);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let worker = Worker {
            settings,
            kube,
            client: None,
            state: Arc::clone(&state),
            observed: None,
            held: None,
        };
        let thread = thread::Builder::new()
            .name("leader".into())
            .spawn(move || worker.run(stop_rx))?;
        Ok(Elector {
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn state(&self) -> Arc<LeaderState> {
        Arc::clone(&self.state)
    }

    /// Stops renewing and releases the Lease if we hold it. Call after the poll loop stopped,
    /// so that nothing writes once a successor may start.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    settings: Settings,
    kube: KubeOptions,
    client: Option<Client>,
    state: Arc<LeaderState>,
    /// The last record seen and when (our clock) it was first seen.
    observed: Option<(Record, Instant)>,
    /// The Lease as we last wrote it while leading: renewed without a GET.
    held: Option<Value>,
}

/// Outcome of one attempt.
enum Attempt {
    Leading,
    Standby(String),
}

impl Worker {
    fn run(mut self, stop: Receiver<()>) {
        log::info!(
            lease = self.settings.lease_name.as_str(),
            namespace = self.settings.namespace.as_str(),
            identity = self.settings.identity.as_str(),
            lease_duration_seconds = self.settings.lease_duration.as_secs();
            "leader election started"
        );
        let mut last_holder: Option<String> = None;
        loop {
            let started = Instant::now();
            let was_leader = self.held.is_some();
            match self.try_acquire_or_renew() {
                Ok(Attempt::Leading) => {
                    self.state
                        .lead_until(started + self.settings.renew_deadline);
                    if !was_leader {
                        log::info!(
                            lease = self.settings.lease_name.as_str(),
                            identity = self.settings.identity.as_str();
                            "became leader; this agent now polls and writes"
                        );
                    }
                    last_holder = None;
                }
                Ok(Attempt::Standby(holder)) => {
                    if was_leader {
                        log::warn!(holder = holder.as_str(); "lost the lease to another agent; standing by");
                    } else if last_holder.as_deref() != Some(holder.as_str()) {
                        log::info!(holder = holder.as_str(); "another agent holds the lease; standing by");
                    }
                    self.held = None;
                    self.state.stand_by();
                    last_holder = Some(holder);
                }
                Err(e) => {
                    self.state.metrics.errors.inc();
                    if matches!(e, KubeError::Transport { .. }) {
                        self.client = None;
                    }
                    // Leadership lapses by itself at the renew deadline; nothing to undo here.
                    log::warn!(error:% = e; "lease request failed; retrying");
                }
            }
            let wait = if self.held.is_some() {
                self.settings.retry_period
            } else {
                jittered(self.settings.retry_period)
            };
            match stop.recv_timeout(wait.saturating_sub(started.elapsed())) {
                Err(RecvTimeoutError::Timeout) => continue,
                _ => break,
            }
        }
        self.release();
    }

    fn client(&mut self) -> Result<&Client, KubeError> {
        if self.client.is_none() {
            self.client = Some(Client::connect(&self.kube)?);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    fn try_acquire_or_renew(&mut self) -> Result<Attempt, KubeError> {
        let settings = self.settings.clone();
        // Fast path: renew the lease we hold without reading it first.
        if let Some(held) = self.held.take()
            && self.state.is_leader()
        {
            let mut next = held;
            next["spec"]["renewTime"] = json!(micro_time(jiff::Timestamp::now()));
            if let Ok(written) = self
                .client()?
                .write_json::<Value>("PUT", &settings.path(), &next)
            {
                self.observe(&written);
                self.held = Some(written);
                return Ok(Attempt::Leading);
            }
        }
        let fetched = self.client()?.get_json::<Value>(&settings.path())?;
        if let Some(lease) = &fetched {
            self.observe(lease);
        }
        let observed_for = self
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, at)| at.elapsed());
        let (method, path, body) = match decide(
            &settings,
            fetched.as_ref(),
            observed_for,
            jiff::Timestamp::now(),
        ) {
            Step::Standby { holder } => return Ok(Attempt::Standby(holder)),
            Step::Create(body) => ("POST", settings.collection(), body),
            Step::Update(body) => ("PUT", settings.path(), body),
        };
        match self.client()?.write_json::<Value>(method, &path, &body) {
            Ok(written) => {
                self.observe(&written);
                self.held = Some(written);
                Ok(Attempt::Leading)
            }
            // Another agent created or changed it first.
            Err(e) if e.status() == Some(409) => {
                let holder = fetched
                    .as_ref()
                    .map(|l| Record::of(l).holder)
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "another agent".to_owned());
                Ok(Attempt::Standby(holder))
            }
            Err(e) => Err(e),
        }
    }

    fn observe(&mut self, lease: &Value) {
        let record = Record::of(lease);
        if self.observed.as_ref().map(|(r, _)| r) != Some(&record) {
            self.observed = Some((record, Instant::now()));
        }
    }

    fn release(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        self.state.stand_by();
        let body = released(&held, jiff::Timestamp::now());
        let path = self.settings.path();
        match self
            .client()
            .and_then(|c| c.write_json::<Value>("PUT", &path, &body))
        {
            Ok(_) => log::info!(lease = self.settings.lease_name.as_str(); "lease released"),
            Err(e) => {
                log::warn!(error:% = e; "could not release the lease; a standby takes over when it expires")
            }
        }
    }
}

/// client-go's acquire jitter (`wait.Jitter(retryPeriod, 1.2)`): up to +120 %, spreading
/// standbys' attempts.
fn jittered(d: Duration) -> Duration {
    crate::backoff::jittered(
        d,
        crate::backoff::Jitter::Up(1.2),
        crate::backoff::random_unit(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            lease_name: "kijo-agent".into(),
            namespace: "kijo".into(),
            identity: "me_1".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn lease(holder: &str, seconds: i64, transitions: i64) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kijo-agent", "namespace": "kijo", "resourceVersion": "42"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                     "acquireTime": "2026-01-01T10:00:00.000000Z",
                     "renewTime": "2026-01-01T10:05:00.000000Z", "leaseTransitions": transitions}
        })
    }

    fn now() -> jiff::Timestamp {
        "2026-01-01T10:05:03.5Z".parse().unwrap()
    }

    #[test]
    fn decisions_follow_client_go() {
        let s = settings();
        let secs = Duration::from_secs;
        // (fetched, observed for, expect: create / update(transitions, acquire kept) / standby)
        enum Want {
            Create,
            Update {
                transitions: i64,
                keeps_acquire: bool,
            },
            Standby,
        }
        let cases: Vec<(&str, Option<Value>, Duration, Want)> = vec![
            ("absent", None, secs(0), Want::Create),
            (
                "other holder, fresh",
                Some(lease("other_2", 15, 3)),
                secs(14),
                Want::Standby,
            ),
            (
                "other holder, expired on our clock",
                Some(lease("other_2", 15, 3)),
                secs(15),
                Want::Update {
                    transitions: 4,
                    keeps_acquire: false,
                },
            ),
            (
                "other holder's own duration counts",
                Some(lease("other_2", 60, 3)),
                secs(30),
                Want::Standby,
            ),
            (
                "released (empty holder)",
                Some(lease("", 1, 3)),
                secs(0),
                Want::Update {
                    transitions: 4,
                    keeps_acquire: false,
                },
            ),
            (
                "ours: renew",
                Some(lease("me_1", 15, 3)),
                secs(0),
                Want::Update {
                    transitions: 3,
                    keeps_acquire: true,
                },
            ),
        ];
        for (name, fetched, observed, want) in cases {
            let step = decide(&s, fetched.as_ref(), observed, now());
            match (want, step) {
                (Want::Create, Step::Create(v)) => {
                    assert_eq!(v["spec"]["holderIdentity"], "me_1", "{name}");
                    assert_eq!(v["spec"]["leaseTransitions"], 0, "{name}");
                    assert_eq!(v["spec"]["leaseDurationSeconds"], 15, "{name}");
                    assert_eq!(
                        v["spec"]["renewTime"], "2026-01-01T10:05:03.500000Z",
                        "{name}"
                    );
                    assert_eq!(v["metadata"]["namespace"], "kijo", "{name}");
                }
                (Want::Standby, Step::Standby { holder }) => {
                    assert_eq!(holder, "other_2", "{name}")
                }
                (
                    Want::Update {
                        transitions,
                        keeps_acquire,
                    },
                    Step::Update(v),
                ) => {
                    assert_eq!(v["spec"]["holderIdentity"], "me_1", "{name}");
                    assert_eq!(v["spec"]["leaseTransitions"], transitions, "{name}");
                    assert_eq!(
                        v["metadata"]["resourceVersion"], "42",
                        "{name}: optimistic concurrency"
                    );
                    assert_eq!(
                        v["spec"]["renewTime"], "2026-01-01T10:05:03.500000Z",
                        "{name}"
                    );
                    let acquire = v["spec"]["acquireTime"].as_str().unwrap();
                    assert_eq!(
                        acquire == "2026-01-01T10:00:00.000000Z",
                        keeps_acquire,
                        "{name}"
                    );
                }
                (_, step) => panic!("{name}: unexpected {step:?}"),
            }
        }
    }

    #[test]
    fn release_empties_the_holder_and_shortens_the_lease() {
        let v = released(&lease("me_1", 15, 3), now());
        assert_eq!(v["spec"]["holderIdentity"], "");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 1);
        assert_eq!(v["spec"]["leaseTransitions"], 3);
        assert_eq!(v["metadata"]["resourceVersion"], "42");
    }

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

    #[test]
    fn values_are_checked() {
        assert_eq!(Election::parse("AUTO"), Ok(Election::Auto));
        assert_eq!(Election::parse("true"), Ok(Election::On));
        assert_eq!(Election::parse("false"), Ok(Election::Off));
        assert!(Election::parse("sometimes").is_err());
        assert_eq!(
            check_lease_name("kijo-agent.v1"),
            Ok("kijo-agent.v1".into())
        );
        for bad in ["", "Kijo", "-x", "x-", "a_b"] {
            assert!(check_lease_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_lease_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["1s", "2h", "1.5s", "soon", "-5s"] {
            assert!(parse_lease_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn leadership_lapses_by_our_own_clock() {
        let state = LeaderState::new(LeaderMetrics::default());
        assert!(!state.is_leader());
        state.lead_until(Instant::now() + Duration::from_millis(80));
        assert!(state.is_leader());
        assert!(state.wait_for_leadership(Duration::ZERO));
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.is_leader() {
            assert!(Instant::now() < deadline, "leadership never lapsed");
            thread::sleep(Duration::from_millis(10));
        }
        assert!(!state.wait_for_leadership(Duration::from_millis(20)));
        state.lead_until(Instant::now() + Duration::from_secs(60));
        state.stand_by();
        assert!(!state.is_leader());
    }
}
