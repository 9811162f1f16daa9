//! Liveness, readiness and metrics over HTTP for the kubelet and Prometheus.
//!
//! [`HealthState`] is what the probes report, shared by every thread of the agent; `server`
//! ([`HealthServer`]) answers the probes and scrapes over HTTP; `metrics` adds the build and
//! process metrics (read from `/proc` by `proc`) to the agent's own.
//!
//! Probes never block on the database: readiness is computed by `spawn_readiness_checker` in
//! the background and the handler only reads the cached answer.

mod metrics;
mod proc;
pub(crate) mod server;

pub use server::HealthServer;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the probes report, shared by every thread of the agent.
pub struct HealthState {
    started: Instant,
    /// Milliseconds since `started` at the poll loop's last sign of progress.
    last_progress_ms: AtomicU64,
    stall_bound: Duration,
    shutting_down: AtomicBool,
    dead_worker: Mutex<Option<String>>,
    /// Named readiness conditions (`database`, …): `None` until first checked, then the outcome.
    conditions: Mutex<BTreeMap<&'static str, Option<Result<(), String>>>>,
}

impl HealthState {
    /// `stall_bound` is how long the poll loop may go without progress before liveness fails;
    /// see `stall_bound_for`.
    pub fn new(stall_bound: Duration) -> Arc<HealthState> {
        Arc::new(HealthState {
            started: Instant::now(),
            last_progress_ms: AtomicU64::new(0),
            stall_bound,
            shutting_down: AtomicBool::new(false),
            dead_worker: Mutex::new(None),
            conditions: Mutex::new(BTreeMap::new()),
        })
    }

    /// Called by the poll loop whenever it gets something done (a cycle starts, a report is
    /// processed, a cycle ends).
    pub fn progress(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_progress_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Marks a worker thread as gone; liveness fails from then on.
    pub(crate) fn worker_died(&self, name: &str, reason: &str) {
        *lock(&self.dead_worker) = Some(format!("{name} thread stopped: {reason}"));
    }

    /// Declares a readiness condition that must be checked before the agent is ready.
    pub(crate) fn require(&self, condition: &'static str) {
        lock(&self.conditions).entry(condition).or_insert(None);
    }

    pub(crate) fn set_condition(&self, condition: &'static str, outcome: Result<(), String>) {
        lock(&self.conditions).insert(condition, Some(outcome));
    }

    /// Liveness: `Err` with a reason when a worker died or the poll loop is stuck.
    pub(crate) fn liveness(&self) -> Result<(), String> {
        if let Some(reason) = lock(&self.dead_worker).clone() {
            return Err(reason);
        }
        let now = self.started.elapsed();
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed));
        let idle = now.saturating_sub(last);
        if idle > self.stall_bound {
            return Err(format!(
                "poll loop made no progress for {}s (bound {}s)",
                idle.as_secs(),
                self.stall_bound.as_secs()
            ));
        }
        Ok(())
    }

    /// Readiness: `Err` with a one-line reason unless every condition passed its last check.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        for (name, outcome) in lock(&self.conditions).iter() {
            match outcome {
                None => return Err(format!("{name}: not checked yet")),
                Some(Err(reason)) => return Err(format!("{name}: {reason}")),
                Some(Ok(())) => {}
            }
        }
        Ok(())
    }
}

/// The documented liveness bound: two poll intervals plus five minutes. A cycle may legitimately
/// take minutes on a large cluster, and the loop reports progress within a cycle too, so only a
/// loop that is truly stuck (a hung connection past every timeout, a deadlock) trips it.
pub(crate) fn stall_bound_for(poll_interval: Duration) -> Duration {
    poll_interval * 2 + Duration::from_secs(300)
}

/// A poisoned lock only means another thread panicked, which ends the process anyway; the data
/// (flags and strings) is still usable for the last probe answers.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks one readiness condition every `interval`, so that probes read a cached answer and
/// never wait for the database.
///
/// The check runs on a worker thread of its own and the checker only waits `timeout` for its
/// answer: a check still in flight after that (a store that accepts the connection but never
/// answers) fails the condition at once, and so does an answer that came too late. Nothing
/// waits for the worker: a check stuck for good (a PostgreSQL client whose `Drop` blocks on a
/// silent server, rust-postgres issue 755) neither delays readiness nor shutdown; the next check
/// is only asked for once it answered, so there is never more than one stuck.
/// `timeout: None` is for checks that bound their own time.
pub(crate) fn spawn_readiness_checker<F>(
    state: Arc<HealthState>,
    condition: &'static str,
    interval: Duration,
    timeout: Option<Duration>,
    stop: crossbeam_channel::Receiver<()>,
    mut check: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnMut() -> Result<(), String> + Send + 'static,
{
    state.require(condition);
    let (ask_tx, ask_rx) = crossbeam_channel::bounded::<()>(1);
    let (answer_tx, answer_rx) = crossbeam_channel::bounded::<Result<(), String>>(1);
    // Detached on purpose; it ends when the checker drops `ask_tx`, or with the process.
    thread::Builder::new()
        .name(format!("check-{condition}"))
        .spawn(move || {
            for () in ask_rx {
                if answer_tx.send(check()).is_err() {
                    return;
                }
            }
        })?;
    thread::Builder::new()
        .name(format!("ready-{condition}"))
        .spawn(move || {
            loop {
                let asked = Instant::now();
                if ask_tx.send(()).is_err() {
                    return;
                }
                let Some(outcome) = await_answer(&state, condition, timeout, &answer_rx, &stop)
                else {
                    return;
                };
                let outcome = judge(outcome, asked.elapsed(), timeout);
                if let Err(reason) = &outcome {
                    log::debug!(condition = condition, reason = reason.as_str(); "readiness check failed");
                }
                state.set_condition(condition, outcome);
                match stop.recv_timeout(interval) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        })
}

/// Waits for the worker's answer; once `timeout` passes without one, marks the condition failed
/// and keeps waiting. `None` when told to stop (or the worker is gone).
fn await_answer(
    state: &HealthState,
    condition: &'static str,
    timeout: Option<Duration>,
    answers: &crossbeam_channel::Receiver<Result<(), String>>,
    stop: &crossbeam_channel::Receiver<()>,
) -> Option<Result<(), String>> {
    let never = crossbeam_channel::never();
    let deadline = match timeout {
        Some(t) => crossbeam_channel::after(t),
        None => never.clone(),
    };
    crossbeam_channel::select! {
        recv(answers) -> a => return a.ok(),
        recv(stop) -> _ => return None,
        recv(deadline) -> _ => {}
    }
    let timeout = timeout.unwrap_or_default();
    let reason = format!("no answer within {}ms", timeout.as_millis());
    log::debug!(condition = condition, reason = reason.as_str(); "readiness check failed");
    state.set_condition(condition, Err(reason));
    crossbeam_channel::select! {
        recv(answers) -> a => a.ok(),
        recv(stop) -> _ => None,
    }
}

/// A check's outcome, failed if it came after `timeout`: readiness promises an answer within
/// that bound, so a store that answers slower than that is not ready.
fn judge(
    outcome: Result<(), String>,
    took: Duration,
    timeout: Option<Duration>,
) -> Result<(), String> {
    match (outcome, timeout) {
        (Ok(()), Some(t)) if took > t => Err(format!(
            "answered after {}ms, over the {}ms bound",
            took.as_millis(),
            t.as_millis()
        )),
        (outcome, _) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_conditions_and_shutdown() {
        let state = HealthState::new(Duration::from_secs(60));
        assert_eq!(state.readiness(), Ok(()));
        state.require("database");
        assert_eq!(state.readiness(), Err("database: not checked yet".into()));
        state.set_condition("database", Err("connection refused".into()));
        assert_eq!(
            state.readiness(),
            Err("database: connection refused".into())
        );
        state.set_condition("database", Ok(()));
        assert_eq!(state.readiness(), Ok(()));
        state.begin_shutdown();
        assert_eq!(state.readiness(), Err("shutting down".into()));
    }

    #[test]
    fn liveness_fails_on_a_dead_worker_or_a_stall() {
        let state = HealthState::new(Duration::from_secs(60));
        assert_eq!(state.liveness(), Ok(()));
        state.worker_died("poll", "returned an error");
        assert!(
            state
                .liveness()
                .unwrap_err()
                .contains("poll thread stopped")
        );

        let stalled = HealthState::new(Duration::ZERO);
        let until = Instant::now() + Duration::from_secs(5);
        // Any elapsed time at all exceeds a zero bound.
        while stalled.started.elapsed() == Duration::ZERO && Instant::now() < until {}
        assert!(stalled.liveness().unwrap_err().contains("no progress"));
    }

    #[test]
    fn stall_bound_is_two_intervals_plus_five_minutes() {
        assert_eq!(
            stall_bound_for(Duration::from_secs(300)),
            Duration::from_secs(900)
        );
        assert_eq!(
            stall_bound_for(Duration::from_secs(30)),
            Duration::from_secs(360)
        );
    }

    /// A check that never answers fails readiness within its timeout, and stopping the checker
    /// does not wait for it.
    #[test]
    fn a_hung_check_fails_readiness_and_does_not_hold_up_stop() {
        let state = HealthState::new(Duration::from_secs(60));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (hang_tx, hang_rx) = crossbeam_channel::bounded::<()>(0);
        let mut calls = 0;
        let checker = spawn_readiness_checker(
            Arc::clone(&state),
            "database",
            Duration::from_millis(50),
            Some(Duration::from_millis(200)),
            stop_rx,
            move || {
                calls += 1;
                if calls > 1 {
                    // Hangs until the test ends (the sender is dropped then).
                    let _ = hang_rx.recv();
                }
                Ok(())
            },
        )
        .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while state.readiness().is_err() && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(state.readiness(), Ok(()));
        let hung = Instant::now();
        while state.readiness().is_ok() && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        let took = hung.elapsed();
        assert_eq!(
            state.readiness(),
            Err("database: no answer within 200ms".into())
        );
        assert!(took < Duration::from_secs(1), "unready after {took:?}");
        let stopping = Instant::now();
        drop(stop_tx);
        checker.join().unwrap();
        assert!(stopping.elapsed() < Duration::from_secs(1));
        drop(hang_tx);
    }

    #[test]
    fn a_late_answer_counts_as_a_failure() {
        let t = Some(Duration::from_millis(100));
        assert_eq!(judge(Ok(()), Duration::from_millis(50), t), Ok(()));
        assert_eq!(
            judge(Ok(()), Duration::from_millis(150), t),
            Err("answered after 150ms, over the 100ms bound".into())
        );
        assert_eq!(
            judge(Err("refused".into()), Duration::from_millis(150), t),
            Err("refused".into())
        );
        assert_eq!(judge(Ok(()), Duration::from_secs(60), None), Ok(()));
    }
}
