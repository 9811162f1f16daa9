//! The `leader` thread: acquires and renews the Lease every retry period through the
//! Kubernetes client, applies [`decide`]'s answer, and releases the Lease on stop.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::Value;

use super::Settings;
use super::decision::{Record, Step, decide, released, renewed};
use super::state::{LeaderMetrics, LeaderState};
use crate::kube::{Client, KubeError, KubeOptions, RetryPolicy};

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
                    self.state.count_error();
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
            let next = renewed(&held, jiff::Timestamp::now());
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
