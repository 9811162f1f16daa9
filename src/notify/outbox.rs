//! The notify thread: takes committed lifecycle events out of the store's outbox, groups them
//! into messages once, and delivers each message to each target until it is delivered or
//! dead-lettered.
//!
//! Durability comes from the store, not from memory: the poll thread commits events and their
//! outbox rows in one transaction, this thread records every attempt's outcome
//! (`next_attempt_at`, attempts, last error) before the next one. A crash anywhere leaves either
//! a queued message (sent after the restart, with the same id) or a recorded outcome; nothing is
//! lost, and the rare duplicate carries the same `Idempotency-Key`.
//!
//! The thread owns its own store connection, so a slow target never holds the poll thread's
//! transaction, and it wakes on a channel message from the poll loop ("events committed"), when
//! the earliest retry is due, when the earliest open batch window (`KIJO_NOTIFY_BATCH_WINDOW`)
//! closes, or every [`IDLE_WAKE`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError, select};
use jiff::Timestamp;

use super::deliver::{Deliverer, Target};
use super::metrics::NotifyMetrics;
use super::plan;
use super::policy::{Disposition, Outcome};
use super::settings::NotifySettings;
use crate::config::Config;
use crate::health::HealthState;
use crate::leader::LeaderState;
use crate::store::{DatabaseTarget, MessageUpdate, Store, StoreError};

/// Longest sleep between two passes when nothing is due: a message queued by another replica
/// or a missed wake-up is picked up within this.
pub const IDLE_WAKE: Duration = Duration::from_secs(5);
/// Whole-request timeout of one delivery attempt in the service. Short enough that a hung
/// target cannot hold shutdown long; Slack and webhooks answer in well under a second.
pub const SERVICE_REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// Most message attempts per target and pass before the other targets get their turn.
const BATCH: usize = 100;
/// Messages per SaaS request (`POST /v1/events` takes a batch).
const SAAS_BATCH: u32 = 50;
/// How often the SaaS gets a heartbeat (version, cluster), which also re-checks the key.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Messages newly grouped from queued events.
    pub assigned: usize,
    /// Changes left queued because their target's batch window is still open.
    pub held: usize,
    pub delivered: usize,
    pub dead_lettered: usize,
    pub retrying: usize,
    /// A target had more due messages than one batch: run another pass at once.
    pub more: bool,
    /// Stopped between two sends because shutdown began.
    pub interrupted: bool,
}

/// Delivers the outbox of one cluster. See the module documentation.
pub struct Dispatcher {
    cluster: String,
    settings: NotifySettings,
    database: DatabaseTarget,
    store: Option<Store>,
    deliverer: Deliverer,
    metrics: Option<NotifyMetrics>,
    health: Option<Arc<HealthState>>,
    /// With leader election only the leader delivers; `None`: always.
    leader: Option<Arc<LeaderState>>,
    /// Targets that rejected our credentials: not tried again before this instant (the key is
    /// configuration, so a fix means a restart anyway).
    blocked: HashMap<&'static str, Instant>,
    /// What the last pass left in open batch windows.
    held: Held,
}

/// Changes the last pass left queued in open batch windows, and when the earliest window closes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub changes: usize,
    pub until: Option<Timestamp>,
    /// When the pass that saw this ran (to pick the newest view among lanes).
    seen: Option<Instant>,
}

impl Dispatcher {
    pub fn new(
        config: &Config,
        request_timeout: Duration,
        metrics: Option<NotifyMetrics>,
        health: Option<Arc<HealthState>>,
    ) -> Dispatcher {
        let settings = NotifySettings::from_config(config);
        let mut dc = settings.deliverer_config(&config.cluster_name);
        dc.timeout = request_timeout;
        let deliverer = Deliverer::new(dc, metrics.clone());
        Dispatcher::with_parts(
            &config.cluster_name,
            settings,
            config.database.clone(),
            deliverer,
            metrics,
        )
        .with_health(health)
    }

    /// A dispatcher from its parts: what [`Dispatcher::new`] derives from the configuration,
    /// given directly (tests drive the real delivery loop with a fast retry policy this way).
    /// The deliverer's policy decides retries and dead letters.
    pub fn with_parts(
        cluster: &str,
        settings: NotifySettings,
        database: DatabaseTarget,
        deliverer: Deliverer,
        metrics: Option<NotifyMetrics>,
    ) -> Dispatcher {
        Dispatcher {
            cluster: cluster.to_owned(),
            deliverer,
            settings,
            database,
            store: None,
            metrics,
            health: None,
            leader: None,
            blocked: HashMap::new(),
            held: Held::default(),
        }
    }

    fn with_health(mut self, health: Option<Arc<HealthState>>) -> Dispatcher {
        self.health = health;
        self
    }

    /// Delivers only while this agent holds the Lease, like the poll loop. Message claims make
    /// delivery safe without it; with it a standby does nothing at all.
    pub fn with_leader(mut self, leader: Arc<LeaderState>) -> Dispatcher {
        self.leader = Some(leader);
        self
    }

    fn leading(&self) -> bool {
        self.leader.as_ref().is_none_or(|l| l.is_leader())
    }

    pub fn targets(&self) -> &[Target] {
        &self.settings.targets
    }

    fn store(&mut self) -> Result<&mut Store, StoreError> {
        if self.store.is_none() {
            self.store = Some(Store::open(&self.database)?);
        }
        Ok(self.store.as_mut().expect("opened above"))
    }

    /// Groups newly queued events of every target whose batch window has closed (the others
    /// stay queued, see [`Dispatcher::held`]), then makes one attempt for every due message of
    /// every target, recording each outcome before the next send. `stop` is checked before
    /// each send.
    pub fn pass(&mut self, stop: &dyn Fn() -> bool) -> Result<PassReport, StoreError> {
        let mut report = PassReport::default();
        let cluster = self.cluster.clone();
        let (min, removed, window) = (
            self.settings.min_severity,
            self.settings.notify_workload_removed,
            self.settings.batch_window,
        );
        let assigned = plan::assign_messages(
            self.store()?,
            &cluster,
            min,
            removed,
            window,
            Timestamp::now(),
        )?;
        report.assigned = assigned.messages;
        report.held = assigned.held;
        if assigned.held > 0 && assigned.held_until != self.held.until {
            // Debug only: `--once` logs what it leaves held, the service sends it on time.
            log::debug!(
                cluster = cluster.as_str(),
                held = assigned.held,
                until = assigned.held_until.map(|t| t.to_string()).unwrap_or_default().as_str();
                "batch window open: changes held until it closes"
            );
        }
        self.held = Held {
            changes: assigned.held,
            until: assigned.held_until,
            seen: Some(Instant::now()),
        };
        if assigned.messages + assigned.filtered > 0 {
            log::info!(
                cluster = cluster.as_str(),
                messages = assigned.messages,
                filtered = assigned.filtered;
                "queued lifecycle events grouped into messages"
            );
        }
        let targets = self.settings.targets.clone();
        'targets: for target in &targets {
            // One message claimed at a time: a stop between two sends leaves nothing claimed.
            // Bounded by attempts, not by distinct messages: a message whose short backoff
            // is already over is due and claimed again, and is sent; skipping it once claimed
            // would leave it unsent for a whole claim lease.
            let mut attempts = 0;
            loop {
                if self
                    .blocked
                    .get(target.name())
                    .is_some_and(|until| Instant::now() < *until)
                {
                    continue 'targets;
                }
                if stop() {
                    report.interrupted = true;
                    break 'targets;
                }
                if attempts >= BATCH {
                    report.more = true;
                    continue 'targets;
                }
                // The SaaS takes a batch per request, Slack and webhooks one message.
                let limit = if matches!(target, Target::Saas { .. }) {
                    SAAS_BATCH
                } else {
                    1
                };
                let due = plan::due_messages(
                    self.store()?,
                    &cluster,
                    target.name(),
                    Timestamp::now(),
                    limit,
                )?;
                if due.is_empty() {
                    continue 'targets;
                }
                attempts += due.len();
                let messages: Vec<_> = due.iter().map(|m| m.message.clone()).collect();
                let attempt = due.iter().map(|m| m.attempts).max().unwrap_or(0);
                let outcome = self.deliverer.send_batch(target, &messages, attempt);
                self.note_credentials(target, &outcome);
                for m in due {
                    self.record(target, m, &outcome, &mut report)?;
                }
                if matches!(outcome, Outcome::AuthRejected { .. }) {
                    // Every other message would be rejected the same way.
                    self.blocked.insert(
                        target.name(),
                        Instant::now() + self.deliverer.config().policy.auth_retry,
                    );
                }
            }
        }
        self.update_gauges();
        Ok(report)
    }

    /// Records the outcome of one attempt for one claimed message.
    fn record(
        &mut self,
        target: &Target,
        m: plan::DueMessage,
        outcome: &Outcome,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let disposition = self
            .deliverer
            .config()
            .policy
            .dispose(outcome, m.created_at, now);
        let event = m.message.kind.event_name();
        let update = match disposition {
            Disposition::Delivered => {
                report.delivered += 1;
                MessageUpdate::Delivered { at: now }
            }
            Disposition::RetryAt(at) => {
                report.retrying += 1;
                MessageUpdate::Retry {
                    at,
                    error: outcome.to_string(),
                }
            }
            Disposition::DeadLetter { reason } => {
                report.dead_lettered += 1;
                log::error!(
                    notify_target = target.name(),
                    message_id = m.message.id.as_str(),
                    event = event,
                    attempts = m.attempts + 1,
                    reason = reason.as_str();
                    "notification dead-lettered; kept in the outbox for inspection"
                );
                if let Some(metrics) = &self.metrics {
                    metrics.record_dead_letter(target.name(), event);
                }
                MessageUpdate::Dead { at: now, reason }
            }
        };
        self.store()?
            .update_message(target.name(), &m.message.id, &update)
    }

    /// Readiness detail and log line for a rejected (or again accepted) SaaS key.
    fn note_credentials(&self, target: &Target, outcome: &Outcome) {
        let Target::Saas { .. } = target else {
            return;
        };
        let Some(health) = &self.health else { return };
        match outcome {
            Outcome::AuthRejected { status, .. } => health.set_condition(
                "saas",
                Err(format!(
                    "the Kijo SaaS rejected KIJO_SAAS_API_KEY (HTTP {status}); fix the key and restart"
                )),
            ),
            Outcome::Delivered | Outcome::Permanent { .. } => health.set_condition("saas", Ok(())),
            Outcome::Retry { .. } => {}
        }
    }

    fn update_gauges(&mut self) {
        let Some(metrics) = self.metrics.clone() else {
            return;
        };
        let cluster = self.cluster.clone();
        let Ok(stats) = self.store().and_then(|s| s.outbox_stats(&cluster)) else {
            return;
        };
        let now = Timestamp::now();
        for target in &self.settings.targets {
            let s = stats.iter().find(|s| s.target == target.name());
            let pending = s.map_or(0, |s| s.pending as i64);
            let age = s
                .and_then(|s| s.oldest_created_at)
                .map_or(0, |t| now.duration_since(t).as_secs().max(0));
            metrics.set_outbox(target.name(), pending, age);
        }
    }

    /// Undelivered messages (all targets) and when the earliest is due.
    pub fn pending(&mut self) -> Result<(u64, Option<Timestamp>), StoreError> {
        let cluster = self.cluster.clone();
        let names: Vec<&'static str> = self.settings.targets.iter().map(Target::name).collect();
        let store = self.store()?;
        let pending = store
            .outbox_stats(&cluster)?
            .iter()
            .filter(|s| names.contains(&s.target.as_str()))
            .map(|s| s.pending)
            .sum();
        Ok((pending, store.next_due(&cluster)?))
    }

    fn heartbeat(&mut self) {
        let targets = self.settings.targets.clone();
        for target in targets.iter().filter(|t| matches!(t, Target::Saas { .. })) {
            let outcome = self.deliverer.heartbeat(target, 0);
            self.note_credentials(target, &outcome);
            if let Outcome::AuthRejected { status, .. } = outcome {
                log::error!(
                    notify_target = "saas",
                    url = target.masked_url().as_str(),
                    status = status;
                    "the Kijo SaaS rejected KIJO_SAAS_API_KEY; events stay queued until the key is fixed or KIJO_NOTIFY_MAX_AGE passes"
                );
            }
        }
    }

    /// One dispatcher per target, each with its own store connection and its own thread, so
    /// that a target that never answers holds back only its own messages: a hung Slack
    /// endpoint used to delay a healthy webhook by a whole request timeout per message.
    fn lanes(&self) -> Vec<Dispatcher> {
        self.settings
            .targets
            .iter()
            .map(|target| Dispatcher {
                cluster: self.cluster.clone(),
                settings: NotifySettings {
                    targets: vec![target.clone()],
                    ..self.settings.clone()
                },
                database: self.database.clone(),
                store: None,
                deliverer: self.deliverer.clone(),
                metrics: self.metrics.clone(),
                health: self.health.clone(),
                leader: self.leader.clone(),
                blocked: HashMap::new(),
                held: Held::default(),
            })
            .collect()
    }

    /// The notify thread, until `stop` disconnects: with several targets, one lane thread per
    /// target (see `Dispatcher::lanes`), each woken by the poll loop's wake-ups.
    pub fn run(self, wake: Receiver<()>, stop: Receiver<()>) {
        if self.settings.targets.len() <= 1 {
            return self.run_lane(wake, stop);
        }
        let mut wakes = Vec::new();
        let mut lanes = Vec::new();
        for lane in self.lanes() {
            let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
            let lane_stop = stop.clone();
            let name = format!("notify-{}", lane.settings.targets[0].name());
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || lane.run_lane(wake_rx, lane_stop))
            {
                Ok(handle) => {
                    wakes.push(wake_tx);
                    lanes.push(handle);
                }
                Err(err) => log::error!("cannot start a notification lane thread: {err}"),
            }
        }
        loop {
            select! {
                recv(stop) -> _ => break,
                recv(wake) -> msg => match msg {
                    Ok(()) => {
                        for lane in &wakes {
                            let _ = lane.try_send(());
                        }
                    }
                    Err(_) => {
                        // The poll loop is gone: the lanes keep delivering on their timers.
                        wakes.clear();
                        let _ = stop.recv();
                        break;
                    }
                },
            }
        }
        drop(wakes);
        for lane in lanes {
            let _ = lane.join();
        }
    }

    /// One lane's loop (all targets of this dispatcher, in turn), until `stop` disconnects.
    fn run_lane(mut self, wake: Receiver<()>, stop: Receiver<()>) {
        let stopping = || matches!(stop.try_recv(), Err(TryRecvError::Disconnected));
        // The "saas" readiness condition appears only once the SaaS has answered: an
        // unreachable SaaS is retried like any target and does not make the agent unready.
        let mut next_heartbeat = Instant::now();
        loop {
            if Instant::now() >= next_heartbeat {
                self.heartbeat();
                next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
            }
            if !self.leading() {
                match stop.recv_timeout(Duration::from_millis(500)) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
            let wait = match self.pass(&stopping) {
                Ok(r) if r.interrupted => return,
                Ok(r) if r.more => Duration::ZERO,
                Ok(_) => self.until_next_due(),
                Err(err) => {
                    log::warn!(
                        cluster = self.cluster.as_str();
                        "notification outbox unavailable, retrying: {err}"
                    );
                    if err.is_connection_loss() {
                        self.store = None;
                    }
                    IDLE_WAKE
                }
            };
            select! {
                recv(stop) -> _ => return,
                recv(wake) -> msg => if msg.is_err() {
                    // The poll loop is gone: keep delivering on the timer only.
                    match stop.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                },
                default(wait) => {}
            }
        }
    }

    /// How long to sleep before the next pass: until the earliest retry or the earliest batch
    /// window's close, at most [`IDLE_WAKE`], at least a little so a due-now retry cannot spin.
    fn until_next_due(&mut self) -> Duration {
        let next = self
            .pending()
            .ok()
            .and_then(|(n, due)| (n > 0).then_some(due).flatten());
        let next = match (next, self.held.until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(due) = next else { return IDLE_WAKE };
        let wait: Duration = due
            .duration_since(Timestamp::now())
            .try_into()
            .unwrap_or(Duration::ZERO);
        wait.clamp(Duration::from_millis(100), IDLE_WAKE)
    }

    /// What the last pass left in open batch windows (after [`Dispatcher::drain`]: the newest
    /// view of its lanes).
    pub fn held(&self) -> Held {
        self.held
    }

    /// `--once`: delivers what is queued until nothing is pending, `deadline` passes or `stop`
    /// says so, each target in its own lane. Returns the messages still pending (all targets).
    /// Changes held by an open batch window are not pending: `--once` does not wait for a
    /// window to close (that can take minutes); they stay queued for a later run, see
    /// [`Dispatcher::held`].
    pub fn drain(&mut self, deadline: Instant, stop: &(dyn Fn() -> bool + Sync)) -> u64 {
        if self.settings.targets.len() <= 1 {
            return self.drain_lane(deadline, stop);
        }
        let mut lanes = self.lanes();
        let pending = std::thread::scope(|scope| {
            let running: Vec<_> = lanes
                .iter_mut()
                .map(|lane| scope.spawn(move || lane.drain_lane(deadline, stop)))
                .collect();
            running
                .into_iter()
                .map(|lane| lane.join().unwrap_or(u64::MAX))
                .fold(0u64, u64::saturating_add)
        });
        // Every lane plans the whole cluster's queue; the last to look saw the latest state.
        if let Some(newest) = lanes.iter().map(|l| l.held).max_by_key(|h| h.seen) {
            self.held = newest;
        }
        pending
    }

    fn drain_lane(&mut self, deadline: Instant, stop: &(dyn Fn() -> bool + Sync)) -> u64 {
        self.heartbeat();
        loop {
            let stop_now = || stop() || Instant::now() >= deadline;
            match self.pass(&stop_now) {
                Ok(r) if r.more && !r.interrupted => continue,
                Ok(_) => {}
                Err(err) => log::warn!("notification outbox unavailable: {err}"),
            }
            let pending = self.pending().map(|(n, _)| n).unwrap_or(u64::MAX);
            if pending == 0 || stop() || Instant::now() >= deadline {
                return pending;
            }
            let wait = self.until_next_due().min(deadline - Instant::now());
            std::thread::sleep(wait);
        }
    }
}
