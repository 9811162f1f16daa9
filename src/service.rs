//! The running agent: threads, signals, shutdown and the `--dry-run` checklist.
//!
//! Threads: `signals` (turns SIGTERM/SIGINT into a channel message), `poll` (one cycle at a
//! time), `health` (probes and metrics), `ready-database` and `ready-kubernetes` (keep the
//! readiness answer fresh, each running its check on a detached `check-…` worker so that a hung
//! check never holds them up) and, with targets, `notify`.
//! They share an [`HealthState`] and one stop channel whose sender is dropped on shutdown, which
//! every thread sees at once as a disconnect.
//! With leader election a `leader` thread renews the Lease; it is stopped (and releases the
//! Lease) only after the poll loop finished, so a successor never overlaps our last write; a
//! poll loop abandoned at shutdown (blocked on a hung store) keeps the Lease until it expires.
//!
//! Crash-only: a panicking thread takes the whole process down (see [`install_panic_hook`]) and
//! Kubernetes restarts it; there is never a half-alive agent whose probes still pass.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::check::Check;
use crate::config::{Config, Mode};
use crate::health::{self, HealthServer, HealthState};
use crate::kube::{self, KubeError, KubeMetrics, KubeOptions, RetryPolicy};
use crate::leader::{self, Elector, LeaderMetrics};
use crate::metrics::Registry;
use crate::notify::outbox::SERVICE_REQUEST_TIMEOUT;
use crate::notify::{Deliverer, Dispatcher, NotifyMetrics, NotifySettings, Outcome, Target};
use crate::poll::{PollMetrics, Poller};
use crate::store::{self, Pinger};

/// Time allowed between a signal and exit, inside Kubernetes' default 30 s grace period and the
/// 10 s this agent promises.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(9);
/// How long shutdown waits for the poll loop to finish its unit of work. Past it the loop is
/// taken to be blocked (on a hung store, typically) and abandoned; the rest of the budget is
/// left for the notify thread and the probes.
const POLL_STOP_WAIT: Duration = Duration::from_secs(6);
/// How often the readiness checker pings the store: one trivial query a second, so that with
/// `PING_TIMEOUT` a hung store shows as unready within about 2 s.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long one readiness ping may take before the store counts as unavailable.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the readiness checker asks the API whether it still accepts the credential: a
/// token that stops working shows within this long, at one small request per interval.
const KUBE_READINESS_INTERVAL: Duration = Duration::from_secs(10);

/// SIGTERM and SIGINT as channel messages.
pub struct Signals {
    rx: Receiver<i32>,
}

impl Signals {
    /// Installs the handlers. Must run first in `main`: as PID 1 the kernel ignores SIGTERM for a
    /// process without a handler.
    pub fn install() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let (tx, rx) = crossbeam_channel::unbounded();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if tx.send(signal).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Signals { rx })
    }

    pub fn receiver(&self) -> &Receiver<i32> {
        &self.rx
    }
}

/// Logs a panic with its thread and location as an ordinary error line, then ends the process.
/// Release builds abort on panic anyway; this makes the reason visible in the log pipeline and
/// gives debug builds (and tests) the same crash-only behaviour.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        log::error!(
            thread = name,
            location = location.as_str();
            "worker panicked, exiting so that Kubernetes restarts the agent: {message}"
        );
        log::logger().flush();
        std::process::exit(70);
    }));
}

/// The metrics of every subsystem, registered once.
struct Metrics {
    poll: PollMetrics,
    kube: KubeMetrics,
    notify: NotifyMetrics,
    leader: LeaderMetrics,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        Metrics {
            poll: PollMetrics::new(registry),
            kube: KubeMetrics::new(registry),
            notify: NotifyMetrics::new(registry),
            leader: LeaderMetrics::new(registry),
        }
    }
}

/// The Kubernetes client settings every part of the agent uses.
fn kube_options(config: &Config, metrics: Option<KubeMetrics>) -> KubeOptions {
    KubeOptions {
        kubeconfig: config.kubeconfig.clone(),
        context: config.kube_context.clone(),
        metrics,
        ..KubeOptions::default()
    }
}

/// The start-up check of the cluster configuration, the same `--dry-run` makes: a kubeconfig
/// that is named but missing, not YAML, or names a CA, certificate or token file that cannot be
/// used can never work, and is reported as a configuration error before anything starts. Problems
/// that may pass (an exec plugin that fails now, an API server that is down) are logged and
/// left to the poll loop, which retries them.
pub fn check_kubernetes(config: &Config) -> Result<(), String> {
    match kube::Client::connect(&kube_options(config, None)) {
        Ok(_) => Ok(()),
        Err(e @ KubeError::Config(_)) => Err(e.to_string()),
        Err(e @ KubeError::Credentials(_)) => {
            log::warn!(error:% = e; "kubernetes credentials are not available yet; the poll loop retries");
            Ok(())
        }
        // Nothing configured at all: the agent still serves probes and each cycle says so.
        Err(_) => Ok(()),
    }
}

/// The probe threads of service mode: the HTTP server and the readiness checkers.
struct Probes {
    server: HealthServer,
    checkers: Vec<thread::JoinHandle<()>>,
    /// The credential checker's client, shut down on stop so that a request in flight (or a
    /// server that stalls it) never delays the exit.
    kube_client: Arc<Mutex<Option<kube::Client>>>,
}

impl Probes {
    fn start(
        config: &Config,
        health: &Arc<HealthState>,
        registry: Registry,
        stop: &Receiver<()>,
    ) -> Option<Probes> {
        let server = match HealthServer::start(
            config.health_addr,
            Arc::clone(health),
            Arc::new(registry),
        ) {
            Ok(s) => s,
            Err(err) => {
                log::error!(
                    addr = config.health_addr.to_string().as_str();
                    "cannot listen for health probes: {err}; set KIJO_HEALTH_ADDR to a free address"
                );
                return None;
            }
        };
        log::info!(addr = server.local_addr().to_string().as_str(); "health server listening");
        let mut pinger = Pinger::new(&config.database);
        let database = health::spawn_readiness_checker(
            Arc::clone(health),
            "database",
            READINESS_INTERVAL,
            Some(PING_TIMEOUT),
            stop.clone(),
            move || pinger.ping(PING_TIMEOUT).map_err(|e| e.to_string()),
        );
        let kube_client = Arc::default();
        let mut credential = CredentialCheck {
            opts: KubeOptions {
                // The next tick is the retry; a Retry-After wait would only delay shutdown.
                retry: RetryPolicy {
                    max_attempts: 1,
                    ..RetryPolicy::default()
                },
                ..kube_options(config, None)
            },
            client: Arc::clone(&kube_client),
        };
        let kubernetes = health::spawn_readiness_checker(
            Arc::clone(health),
            "kubernetes",
            KUBE_READINESS_INTERVAL,
            // The client's own request timeouts bound it, and an API that cannot be reached
            // does not make the agent unready.
            None,
            stop.clone(),
            move || credential.check(),
        );
        let checkers = [database, kubernetes]
            .into_iter()
            .filter_map(|c| {
                c.map_err(|err| log::error!("cannot start a readiness checker: {err}"))
                    .ok()
            })
            .collect();
        Some(Probes {
            server,
            checkers,
            kube_client,
        })
    }

    fn stop(self) {
        if let Some(client) = lock(&self.kube_client).as_ref() {
            client.shutdown();
        }
        self.server.stop();
        for checker in self.checkers {
            let _ = checker.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Readiness of the cluster credential: not ready while the API rejects it (401 even after the
/// client re-read the token or re-ran the exec plugin) or it cannot be obtained. An API server
/// that cannot be reached does not make the agent unready: the poll loop rides that out.
struct CredentialCheck {
    opts: KubeOptions,
    client: Arc<Mutex<Option<kube::Client>>>,
}

impl CredentialCheck {
    fn check(&mut self) -> Result<(), String> {
        let mut slot = lock(&self.client);
        if slot.is_none() {
            match kube::Client::connect(&self.opts) {
                Ok(c) => *slot = Some(c),
                Err(e @ KubeError::Credentials(_)) => return Err(e.to_string()),
                // Not a credential problem; each poll cycle reports it.
                Err(_) => return Ok(()),
            }
        }
        let client = slot.clone().expect("connected above");
        // Not held during the request: stop() must be able to shut the client down.
        drop(slot);
        match client.check_credential() {
            Err(e) if e.is_unauthorized() => Err(e.to_string()),
            Err(e @ KubeError::Credentials(_)) => Err(e.to_string()),
            _ => Ok(()),
        }
    }
}

/// Leader election, when configured: its own thread renews the Lease; the poll loop waits for
/// and checks it. `Err` when the thread cannot start.
fn start_elector(config: &Config, metrics: &Metrics) -> Result<Option<Elector>, ()> {
    match leader::Settings::from_process(&config.leader, config.kubeconfig.is_some()) {
        None => {
            metrics.leader.always_leading();
            Ok(None)
        }
        Some(settings) => {
            let kube = kube_options(config, Some(metrics.kube.clone()));
            Elector::start(settings, kube, metrics.leader.clone())
                .map(Some)
                .map_err(|err| log::error!("cannot start the leader election thread: {err}"))
        }
    }
}

/// How messages get delivered: by the `notify` thread in service mode, or after the cycle
/// with `--once`.
enum Delivery {
    None,
    Once(Box<Dispatcher>),
    Thread {
        handle: thread::JoinHandle<()>,
        done: Receiver<()>,
    },
}

impl Delivery {
    /// Starts the notify thread (service mode with targets), waking it after each commit.
    fn start(
        dispatcher: Dispatcher,
        once: bool,
        poller: &mut Poller,
        stop: &Receiver<()>,
    ) -> Result<Delivery, ()> {
        if dispatcher.targets().is_empty() {
            return Ok(Delivery::None);
        }
        if once {
            return Ok(Delivery::Once(Box::new(dispatcher)));
        }
        let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
        poller.notify_on_commit(wake_tx);
        let notify_stop = stop.clone();
        let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
        thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                dispatcher.run(wake_rx, notify_stop);
                let _ = done_tx.send(());
            })
            .map(|handle| Delivery::Thread { handle, done })
            .map_err(|err| log::error!("cannot start the notify thread: {err}"))
    }

    /// Waits for the notify thread within what is left of the shutdown budget. A send in
    /// flight is bounded by SERVICE_REQUEST_TIMEOUT; if it outlasts the budget the message
    /// stays queued and is sent again (same id) after the restart.
    fn finish(self, started: Instant) {
        let Delivery::Thread { handle, done } = self else {
            return;
        };
        let left = SHUTDOWN_BUDGET.saturating_sub(started.elapsed().min(SHUTDOWN_BUDGET));
        match done.recv_timeout(left.max(Duration::from_secs(1))) {
            Ok(()) => {
                let _ = handle.join();
            }
            // Not joined: the thread may be blocked on a hung store, which never returns.
            Err(_) => log::warn!(
                thread = "notify";
                "the notify thread did not stop in time (a send or a store call in flight); abandoning it: its message stays queued and is sent again after the restart"
            ),
        }
    }
}

/// Runs the service (or one cycle with `--once`) until it finishes or a signal arrives. Returns
/// whether everything succeeded.
pub fn run(config: &Config, signals: Signals) -> bool {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = HealthState::new(health::stall_bound_for(config.poll_interval));
    health.progress();
    // Dropping `stop_tx` tells every thread to stop.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let once = config.mode == Mode::Once;
    let probes = if once {
        None
    } else {
        match Probes::start(config, &health, registry, &stop_rx) {
            Some(p) => Some(p),
            None => return false,
        }
    };
    log::info!(
        version = env!("CARGO_PKG_VERSION"),
        cluster = config.cluster_name.as_str(),
        database = config.database.describe().as_str(),
        poll_interval_seconds = config.poll_interval.as_secs(),
        once = once;
        "kijo-agent starting"
    );
    let Ok(elector) = start_elector(config, &metrics) else {
        return false;
    };
    let mut poller = Poller::new(
        config.clone(),
        config.database.clone(),
        Arc::clone(&health),
        metrics.poll,
        metrics.kube,
    );
    let mut dispatcher = Dispatcher::new(
        config,
        SERVICE_REQUEST_TIMEOUT,
        Some(metrics.notify),
        Some(Arc::clone(&health)),
    );
    if let Some(e) = &elector {
        dispatcher = dispatcher.with_leader(e.state());
        poller = poller.with_leader(e.state());
    }
    let Ok(mut delivery) = Delivery::start(dispatcher, once, &mut poller, &stop_rx) else {
        return false;
    };
    let kube_handle = poller.kube_handle();
    let Some((poll_thread, done_rx)) = spawn_poll(poller, stop_rx.clone(), once) else {
        return false;
    };
    // `stopping`: when shutdown began; the budget counts from the signal.
    let (ok, poll_stopped, stopping) = select! {
        recv(signals.receiver()) -> signal => {
            log::info!(signal = signal.unwrap_or_default(); "signal received, shutting down");
            if let Some(client) = kube_handle.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                client.shutdown();
            }
            let stopping = Instant::now();
            let stopped = shutdown(&health, stop_tx, &done_rx);
            (true, stopped, stopping)
        }
        recv(done_rx) -> outcome => {
            let ok = outcome.unwrap_or(false);
            poll_loop_ended(&health, once);
            if let Delivery::Once(d) = &mut delivery {
                deliver_once(d, config.notify_once_wait, signals.receiver());
            }
            health.begin_shutdown();
            drop(stop_tx);
            (ok && once, true, Instant::now())
        }
    };
    if poll_stopped {
        let _ = poll_thread.join();
    }
    delivery.finish(stopping);
    match elector {
        // Only now, with the poll loop stopped, may a successor start: release the Lease.
        Some(e) if poll_stopped => e.stop(),
        // The abandoned poll thread could still commit if the store woke up before the process
        // exits: keep the Lease (never released, never dropped) so that no successor starts
        // before it expires.
        Some(e) => std::mem::forget(e),
        None => {}
    }
    if let Some(probes) = probes {
        probes.stop();
    }
    log::info!(clean = ok; "kijo-agent stopped");
    log::logger().flush();
    ok
}

/// Starts the `poll` thread; its outcome arrives on the returned channel.
fn spawn_poll(
    poller: Poller,
    stop: Receiver<()>,
    once: bool,
) -> Option<(thread::JoinHandle<()>, Receiver<bool>)> {
    let (done_tx, done_rx) = crossbeam_channel::bounded::<bool>(1);
    thread::Builder::new()
        .name("poll".into())
        .spawn(move || {
            let ok = poller.run(stop, once);
            let _ = done_tx.send(ok);
        })
        .map(|handle| (handle, done_rx))
        .map_err(|err| log::error!("cannot start the poll thread: {err}"))
        .ok()
}

/// In service mode the poll loop only returns on a fatal error: liveness fails and the agent
/// exits, so that Kubernetes restarts it.
fn poll_loop_ended(health: &HealthState, once: bool) {
    if !once {
        health.worker_died("poll", "the poll loop stopped");
        log::error!("the poll loop stopped; exiting so that Kubernetes restarts the agent");
    }
}

/// Flips readiness, tells the threads to stop and waits for the poll loop to finish its unit of
/// work. The poll loop commits or rolls back per workload, so stopping between units loses
/// nothing. Returns whether it stopped; if it did not within `POLL_STOP_WAIT` it is blocked
/// (a hung store never answers, and no client timeout covers a server that accepts bytes but
/// never replies) and is abandoned, not joined: its transaction is never committed, so the
/// store keeps the last complete unit and the next start redoes the rest.
fn shutdown(health: &HealthState, stop_tx: Sender<()>, done_rx: &Receiver<bool>) -> bool {
    health.begin_shutdown();
    drop(stop_tx);
    let started = Instant::now();
    match done_rx.recv_timeout(POLL_STOP_WAIT) {
        Ok(_) => {
            log::info!(
                elapsed_ms = started.elapsed().as_millis() as u64;
                "poll loop finished its current work"
            );
            true
        }
        Err(_) => {
            log::error!(
                thread = "poll";
                "the poll loop did not stop within {}s (blocked on the store or the API); abandoning it: its open transaction is never committed, the next start redoes the cycle",
                POLL_STOP_WAIT.as_secs()
            );
            false
        }
    }
}

/// Checks everything that can be checked without side effects and prints a checklist on
/// stdout. Returns whether every check passed.
pub fn dry_run(config: &Config) -> bool {
    let checks = dry_run_checks(config);
    for check in &checks {
        let status = if check.ok { "OK" } else { "FAIL" };
        if check.detail.is_empty() || check.detail == "ok" {
            println!("{status:<4} {}", check.name);
        } else {
            println!("{status:<4} {}: {}", check.name, check.detail);
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        println!("all {} checks passed", checks.len());
    } else {
        println!("{failed} of {} checks failed", checks.len());
    }
    failed == 0
}

fn dry_run_checks(config: &Config) -> Vec<Check> {
    let mut checks = vec![Check::new(
        "configuration",
        Ok(format!("cluster {:?}", config.cluster_name)),
    )];
    let described = config.database.describe();
    checks.push(Check::new(
        "database",
        store::check_only(&config.database)
            .map(|status| {
                if status.is_current() {
                    format!("{described} reachable, schema up to date")
                } else {
                    format!(
                        "{described} reachable, {} migration(s) will be applied at start",
                        status.pending().len()
                    )
                }
            })
            .map_err(|e| format!("{described}: {e}")),
    ));
    match kube::Client::connect(&kube_options(config, None)) {
        Err(err) => checks.push(Check::new("kubernetes", Err(err.to_string()))),
        Ok(client) => {
            checks.push(Check::new("kubernetes", Ok(client.describe())));
            checks.extend(kube::dry_run_checks(&client, &config.namespaces));
        }
    }
    checks.extend(target_checks(config));
    checks
}

/// One line per configured target: the URL's syntax (https, or http to loopback or with
/// `KIJO_NOTIFY_ALLOW_HTTP`), and for the SaaS a heartbeat, which proves the key without
/// creating an event. Nothing is sent to Slack or the webhook.
fn target_checks(config: &Config) -> Vec<Check> {
    let settings = NotifySettings::from_config(config);
    let mut dc = settings.deliverer_config(&config.cluster_name);
    dc.timeout = Duration::from_secs(10);
    let deliverer = Deliverer::new(dc, None);
    let mut checks = Vec::new();
    for target in &settings.targets {
        let masked = target.masked_url();
        let syntax = match target {
            Target::Slack { url } | Target::Webhook { url, .. } => url.expose(),
            Target::Saas { endpoint, .. } => endpoint.expose(),
        };
        let name = format!("notification target {}", target.name());
        if let Err(e) =
            crate::config::target_url::validate_target_url(syntax, settings.allow_insecure_http)
        {
            checks.push(Check::new(name, Err(e)));
            continue;
        }
        let outcome = match target {
            Target::Saas { .. } => match deliverer.heartbeat(target, 0) {
                Outcome::Delivered => Ok(format!("{masked} heartbeat accepted, API key valid")),
                Outcome::AuthRejected { status, .. } => Err(format!(
                    "{masked} rejected KIJO_SAAS_API_KEY (HTTP {status}): check the key"
                )),
                other => Err(format!("{masked} heartbeat {other}")),
            },
            _ => Ok(format!(
                "{masked} (URL syntax only; `kijo-agent notify-test` sends a test message)"
            )),
        };
        checks.push(Check::new(name, outcome));
    }
    checks
}

/// `--once`: delivers what the cycle queued, for at most `wait`; logs what is left. The exit
/// status stays the cycle's: undelivered messages are safe in the outbox for the next run.
fn deliver_once(dispatcher: &mut Dispatcher, wait: Duration, signals: &Receiver<i32>) {
    let started = Instant::now();
    let stop = || !signals.is_empty();
    let pending = dispatcher.drain(started + wait, &stop);
    let held = dispatcher.held();
    if let Some(until) = held.until.filter(|_| held.changes > 0) {
        // Not lost and not late: the next run after the window closes sends them.
        log::info!(
            held = held.changes,
            until = until.to_string().as_str();
            "changes held by KIJO_NOTIFY_BATCH_WINDOW stay queued; a run after the window closes sends them"
        );
    }
    if pending == 0 {
        log::info!(
            elapsed_ms = started.elapsed().as_millis() as u64;
            "notifications delivered"
        );
    } else {
        log::warn!(
            undelivered = pending,
            wait_seconds = wait.as_secs();
            "notifications still queued at exit; the next run delivers them (KIJO_NOTIFY_ONCE_WAIT)"
        );
    }
}

/// `kijo-agent notify-test`: one test message to every configured target, one line each.
/// Returns true only if every target accepted it.
pub fn notify_test(config: &Config) -> bool {
    let settings = NotifySettings::from_config(config);
    if settings.targets.is_empty() {
        println!(
            "FAIL no notification target configured (KIJO_NOTIFY_SLACK, KIJO_NOTIFY_WEBHOOK, KIJO_SAAS_ENDPOINT)"
        );
        return false;
    }
    let mut dc = settings.deliverer_config(&config.cluster_name);
    dc.timeout = Duration::from_secs(15);
    let deliverer = Deliverer::new(dc, None);
    let mut all = true;
    for (name, url, outcome) in crate::notify::send_test_message(&deliverer, &settings.targets) {
        let ok = outcome == Outcome::Delivered;
        all &= ok;
        println!(
            "{:<4} {:<8} {:<40} {}",
            if ok { "OK" } else { "FAIL" },
            name,
            url,
            outcome
        );
    }
    all
}

/// `kijo-agent history`: what the store knows about this cluster, for a person at a terminal.
pub fn history(config: &Config) -> bool {
    let cluster = config.cluster_name.as_str();
    let mut store = match store::Store::open(&config.database) {
        Ok(s) => s,
        Err(err) => {
            log::error!(
                "cannot open the store {}: {err}",
                config.database.describe()
            );
            return false;
        }
    };
    let result = store.open_counts_by_severity(cluster).and_then(|counts| {
        let events = store.recent_events(cluster, HISTORY_EVENTS)?;
        Ok(store::render_history(cluster, &counts, &events))
    });
    match result {
        Ok(text) => {
            // Report text comes from image metadata: nothing in it may drive the terminal.
            print!("{}", crate::notify::slack::terminal_safe(&text));
            true
        }
        Err(err) => {
            log::error!("cannot read the store: {err}");
            false
        }
    }
}

/// How many events `history` prints.
const HISTORY_EVENTS: u32 = 30;
