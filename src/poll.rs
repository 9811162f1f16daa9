//! The poll loop: one cycle every `KIJO_POLL_INTERVAL`, the first at start, never overlapping
//! (cycles run one after another on this one thread).
//!
//! A cycle that fails changes no state: the store commits per unit of work, and the next cycle
//! starts from what was committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::config::Config;
use crate::health::HealthState;
use crate::metrics::{Counter, Family, Gauge, Histogram, Registry};
use crate::store::{DatabaseTarget, Store, StoreError};

/// The poll loop's own metrics.
#[derive(Clone)]
pub struct PollMetrics {
    cycles: Family<Vec<(String, String)>, Counter>,
    duration: Histogram,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl PollMetrics {
    pub fn new(registry: &mut Registry) -> PollMetrics {
        let m = PollMetrics {
            cycles: Family::default(),
            duration: Histogram::new([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
            last_success: Gauge::default(),
        };
        registry.register(
            "kijo_poll_cycles",
            "Poll cycles by outcome (ok, failed).",
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

    fn record(&self, ok: bool, took: Duration) {
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
    pub reports_read: u64,
    pub reports_changed: u64,
    pub reports_skipped: u64,
    pub new: u64,
    pub fixed: u64,
    pub reintroduced: u64,
}

/// Why a cycle failed.
#[derive(Debug)]
pub enum CycleError {
    Store(StoreError),
}

impl std::fmt::Display for CycleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CycleError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl std::error::Error for CycleError {}

impl From<StoreError> for CycleError {
    fn from(e: StoreError) -> Self {
        CycleError::Store(e)
    }
}

pub struct Poller {
    config: Config,
    target: DatabaseTarget,
    health: Arc<HealthState>,
    metrics: PollMetrics,
    store: Option<Store>,
}

impl Poller {
    pub fn new(
        config: Config,
        target: DatabaseTarget,
        health: Arc<HealthState>,
        metrics: PollMetrics,
    ) -> Poller {
        Poller {
            config,
            target,
            health,
            metrics,
            store: None,
        }
    }

    /// Runs cycles until `stop` disconnects (or once). Returns whether the last cycle succeeded.
    pub fn run(mut self, stop: Receiver<()>, once: bool) -> bool {
        loop {
            self.health.progress();
            let started = Instant::now();
            let result = self.cycle();
            let took = started.elapsed();
            self.metrics.record(result.is_ok(), took);
            self.health.progress();
            let ok = match result {
                Ok(s) => {
                    log::info!(
                        cluster = self.config.cluster_name.as_str(),
                        duration_ms = took.as_millis() as u64,
                        reports_read = s.reports_read,
                        reports_changed = s.reports_changed,
                        reports_skipped = s.reports_skipped,
                        new_count = s.new,
                        fixed_count = s.fixed,
                        reintroduced_count = s.reintroduced;
                        "poll cycle finished"
                    );
                    true
                }
                Err(err) => {
                    log::error!(
                        cluster = self.config.cluster_name.as_str(),
                        duration_ms = took.as_millis() as u64;
                        "poll cycle failed, nothing was changed; retrying next cycle: {err}"
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

    /// One cycle. The store connection is opened (and the schema migrated) lazily, so a
    /// database that is down at start delays work instead of crashing the agent; a lost
    /// connection is dropped and reopened by the next cycle.
    fn cycle(&mut self) -> Result<CycleSummary, CycleError> {
        let store = match &mut self.store {
            Some(store) => store,
            None => self.store.insert(Store::open(&self.target)?),
        };
        if let Err(err) = store.ping() {
            if err.is_connection_loss() {
                self.store = None;
            }
            return Err(err.into());
        }
        Ok(CycleSummary::default())
    }
}
