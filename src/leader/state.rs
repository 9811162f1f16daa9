//! Whether this agent may work now: written by the `leader` thread, read by the poll loop, and
//! lapsing by itself on the monotonic clock when renewals stop.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{Counter, Gauge, Registry};

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

    /// A Lease request failed (other than a lost race).
    pub(super) fn count_error(&self) {
        self.metrics.errors.inc();
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

    pub(super) fn lead_until(&self, until: Instant) {
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

    pub(super) fn stand_by(&self) {
        *self.lock() = None;
        self.metrics.leader.set(0);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

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
