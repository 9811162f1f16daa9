//! Liveness, readiness and metrics over HTTP for the kubelet and Prometheus.
//!
//! The server is a small GET-only HTTP/1.1 responder on a std `TcpListener`, with request heads
//! parsed by `httparse`. It replaces the planned tiny_http because tiny_http 0.12 cannot apply the
//! mitigations its open request-smuggling report (CVE-2026-66752, tiny-http#287) calls for: it
//! drops a `Connection` header set by the application and reads header lines without any size
//! limit. Here every response closes its connection (no request is ever read after the first, so
//! nothing can be smuggled behind it), only GET and HEAD are served, a request announcing a body
//! is refused, and the head is capped at [`MAX_HEAD`] bytes.
//!
//! Probes never block on the database: readiness is computed by [`spawn_readiness_checker`] in
//! the background and the handler only reads the cached answer.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::metrics::{self, Registry};

/// Largest request head accepted; probes and scrapers send a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its head.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections handled at once; more are refused so a flood cannot exhaust threads.
const MAX_CONNECTIONS: usize = 16;

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
    /// see [`stall_bound_for`].
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

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Marks a worker thread as gone; liveness fails from then on.
    pub fn worker_died(&self, name: &str, reason: &str) {
        *lock(&self.dead_worker) = Some(format!("{name} thread stopped: {reason}"));
    }

    /// Declares a readiness condition that must be checked before the agent is ready.
    pub fn require(&self, condition: &'static str) {
        lock(&self.conditions).entry(condition).or_insert(None);
    }

    pub fn set_condition(&self, condition: &'static str, outcome: Result<(), String>) {
        lock(&self.conditions).insert(condition, Some(outcome));
    }

    /// Liveness: `Err` with a reason when a worker died or the poll loop is stuck.
    pub fn liveness(&self) -> Result<(), String> {
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
    pub fn readiness(&self) -> Result<(), String> {
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
pub fn stall_bound_for(poll_interval: Duration) -> Duration {
    poll_interval * 2 + Duration::from_secs(300)
}

/// A poisoned lock only means another thread panicked, which ends the process anyway; the data
/// (flags and strings) is still usable for the last probe answers.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks one readiness condition every `interval` on its own thread, so that probes read a
/// cached answer and never wait for the database. The check itself must bound its own time
/// (the store's ping uses a 1 s timeout).
pub fn spawn_readiness_checker<F>(
    state: Arc<HealthState>,
    condition: &'static str,
    interval: Duration,
    stop: crossbeam_channel::Receiver<()>,
    mut check: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnMut() -> Result<(), String> + Send + 'static,
{
    state.require(condition);
    thread::Builder::new()
        .name(format!("ready-{condition}"))
        .spawn(move || {
            loop {
                let outcome = check();
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

/// The running server; dropping it does not stop it, call [`HealthServer::stop`].
pub struct HealthServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HealthServer {
    /// Binds and starts serving on its own thread. Binding happens here so that an address in
    /// use is a start-up error, not a silent dead probe.
    pub fn start(
        addr: SocketAddr,
        state: Arc<HealthState>,
        registry: Arc<Registry>,
    ) -> io::Result<HealthServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let thread = thread::Builder::new()
            .name("health".into())
            .spawn(move || serve(listener, state, registry, flag))?;
        Ok(HealthServer {
            addr,
            stopping,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the thread.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    state: Arc<HealthState>,
    registry: Arc<Registry>,
    stopping: Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let (state, registry, active) = (
            Arc::clone(&state),
            Arc::clone(&registry),
            Arc::clone(&active),
        );
        let spawned = thread::Builder::new()
            .name("health-conn".into())
            .spawn(move || {
                handle(stream, &state, &registry);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            log::warn!("health server could not start a connection thread");
        }
    }
}

/// An answer before it is written: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub allow: bool,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        let mut body = body.into();
        body.push('\n');
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            allow: false,
        }
    }
}

fn handle(mut stream: TcpStream, state: &HealthState, registry: &Registry) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let (reply, head_only) = match read_head(&mut stream) {
        Ok(head) => {
            let head_only = head.method == "HEAD";
            (route(&head, state, registry), head_only)
        }
        Err(reply) => (reply, false),
    };
    let _ = write_reply(&mut stream, &reply, head_only);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// The parts of a request head the server looks at.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub has_body: bool,
}

/// Reads and parses one request head; an `Err` is the reply to send instead.
fn read_head(stream: &mut TcpStream) -> Result<Head, Reply> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(Reply::text(400, "incomplete request")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(Reply::text(408, "request head not received in time")),
        }
        match parse_head(&buf) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) if buf.len() >= MAX_HEAD => {
                return Err(Reply::text(431, "request head too large"));
            }
            Ok(None) => continue,
            Err(reply) => return Err(reply),
        }
    }
}

/// Parses a request head from the bytes read so far: `Ok(None)` means "need more bytes".
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, Reply> {
    if buf.len() > MAX_HEAD {
        // Only the first MAX_HEAD bytes may hold the head.
        return match parse_head(&buf[..MAX_HEAD]) {
            Ok(None) => Err(Reply::text(431, "request head too large")),
            other => other,
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(_)) => {
            let has_body = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length")
                        && std::str::from_utf8(h.value).map(str::trim) != Ok("0"))
            });
            Ok(Some(Head {
                method: req.method.unwrap_or_default().to_owned(),
                path: req.path.unwrap_or_default().to_owned(),
                has_body,
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(Reply::text(431, "too many request headers")),
        Err(_) => Err(Reply::text(400, "malformed request")),
    }
}

/// Chooses the reply for a parsed head. Pure apart from reading the shared state.
pub fn route(head: &Head, state: &HealthState, registry: &Registry) -> Reply {
    if head.method != "GET" && head.method != "HEAD" {
        let mut reply = Reply::text(405, "only GET and HEAD are allowed");
        reply.allow = true;
        return reply;
    }
    if head.has_body {
        return Reply::text(400, "request bodies are not accepted");
    }
    let path = head.path.split('?').next().unwrap_or("");
    match path {
        "/health/live" | "/healthz" | "/livez" => match state.liveness() {
            Ok(()) => Reply::text(200, "ok"),
            Err(reason) => Reply::text(503, reason),
        },
        "/health/ready" | "/readyz" => match state.readiness() {
            Ok(()) => Reply::text(200, "ok"),
            Err(reason) => Reply::text(503, reason),
        },
        "/metrics" => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: render_metrics(registry),
            allow: false,
        },
        _ => Reply::text(
            404,
            "not found; try /health/live, /health/ready or /metrics",
        ),
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_reply(stream: &mut impl Write, reply: &Reply, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reply.status,
        reason_phrase(reply.status),
        reply.content_type,
        reply.body.len()
    );
    if reply.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&reply.body);
    }
    stream.write_all(out.as_bytes())
}

/// The registry's metrics followed by build and process metrics read from `/proc`.
pub fn render_metrics(registry: &Registry) -> String {
    let mut out = metrics::render(registry);
    out.push_str(&format!(
        "# HELP kijo_build_info Build information of the running agent.\n\
         # TYPE kijo_build_info gauge\n\
         kijo_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    if let Some(p) = ProcessStats::read() {
        out.push_str(&format!(
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}\n\
             # HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {}\n\
             # HELP process_threads Number of OS threads in the process.\n\
             # TYPE process_threads gauge\n\
             process_threads {}\n",
            p.rss_bytes, p.cpu_seconds, p.threads
        ));
    }
    out
}

/// Process figures from `/proc/self` (Linux only, which is where the agent runs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub threads: u64,
}

impl ProcessStats {
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        ProcessStats::parse(&stat, &status)
    }

    /// `stat` fields after the command name: utime and stime are fields 14 and 15 (in clock
    /// ticks, 100 per second on every Linux the agent targets); RSS comes from `VmRSS` in
    /// `status` so no page size is needed.
    pub fn parse(stat: &str, status: &str) -> Option<ProcessStats> {
        let after_comm = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // after_comm starts at field 3 (state).
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let threads: u64 = fields.get(17)?.parse().ok()?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(ProcessStats {
            rss_bytes: rss_kib * 1024,
            cpu_seconds: (utime + stime) as f64 / 100.0,
            threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str, has_body: bool) -> Head {
        Head {
            method: method.into(),
            path: path.into(),
            has_body,
        }
    }

    #[test]
    fn routes() {
        let state = HealthState::new(Duration::from_secs(60));
        state.progress();
        let registry = Registry::default();
        let cases = [
            (head("GET", "/health/live", false), 200),
            (head("HEAD", "/health/live", false), 200),
            (head("GET", "/health/ready", false), 200),
            (head("GET", "/metrics", false), 200),
            (head("GET", "/metrics?x=1", false), 200),
            (head("POST", "/health/live", true), 405),
            (head("PUT", "/metrics", false), 405),
            (head("GET", "/health/live", true), 400),
            (head("GET", "/", false), 404),
        ];
        for (h, want) in cases {
            assert_eq!(route(&h, &state, &registry).status, want, "{h:?}");
        }
        assert!(route(&head("DELETE", "/", false), &state, &registry).allow);
    }

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

    #[test]
    fn heads_are_parsed_and_bounded() {
        let ok = parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (ok.method.as_str(), ok.path.as_str(), ok.has_body),
            ("GET", "/metrics", false)
        );
        assert!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost:")
                .unwrap()
                .is_none()
        );
        let chunked = parse_head(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(chunked.has_body);
        let zero = parse_head(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!zero.has_body);
        let mut huge = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(parse_head(&huge).unwrap_err().status, 431);
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n").unwrap_err().status,
            400
        );
    }

    #[test]
    fn process_stats_parse_proc_files() {
        let stat = "4242 (kijo agent) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 5 0 100 1000000 300 18446744073709551615";
        let status = "Name:\tkijo-agent\nVmHWM:\t  9000 kB\nVmRSS:\t  8192 kB\nThreads:\t5\n";
        let p = ProcessStats::parse(stat, status).unwrap();
        assert_eq!(p.rss_bytes, 8192 * 1024);
        assert_eq!(p.cpu_seconds, 2.0);
        assert_eq!(p.threads, 5);
        assert!(ProcessStats::read().is_some(), "this test runs on Linux");
    }

    #[test]
    fn metrics_text_has_build_and_process_metrics() {
        let mut registry = Registry::default();
        let c = metrics::Counter::<u64>::default();
        registry.register("kijo_test_events", "Test events.", c.clone());
        c.inc();
        let text = render_metrics(&registry);
        assert!(text.contains("kijo_test_events_total 1"), "{text}");
        assert!(text.contains("kijo_build_info{version=\""), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }
}
