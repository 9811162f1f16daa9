//! The HTTP server behind the probes and `/metrics`: a small GET-only HTTP/1.1 responder with
//! request heads parsed by `httparse`, on one event-loop thread (mio).
//!
//! It replaces the planned tiny_http because tiny_http 0.12 cannot apply the mitigations its
//! open request-smuggling report (CVE-2026-66752, tiny-http#287) calls for: it drops a
//! `Connection` header set by the application and reads header lines without any size limit.
//! Here every response closes its connection (no request is ever read after the first, so
//! nothing can be smuggled behind it), only GET and HEAD are served, a request announcing a body
//! is refused, and the head is capped at [`MAX_HEAD`] bytes.
//!
//! Slow clients cannot starve the probes: a connection is only a socket and a buffer in the
//! event loop, not a thread; the whole request head must arrive within [`HEAD_DEADLINE`] of
//! the connection being accepted (one absolute deadline, not a timeout per read that a client
//! sending a byte a second would reset); and when [`MAX_CONNECTIONS`] are open, a new
//! connection is still let in and the oldest one is closed instead. A probe therefore waits
//! for nothing but its own request.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener as MioListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::HealthState;
use crate::metrics::{self, Registry};

/// Largest request head accepted; probes and scrapers send a few hundred bytes.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// How long after being accepted a client may take to send its whole request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// How long writing the answer may take.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// Connections open at once (at most one head buffer each); beyond it the oldest is closed.
const MAX_CONNECTIONS: usize = 512;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// The running server; dropping it does not stop it, call [`HealthServer::stop`].
pub struct HealthServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    waker: Arc<Waker>,
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
        listener.set_nonblocking(true)?;
        let mut listener = MioListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let server = Server {
            poll,
            listener,
            state,
            registries: [registry, Arc::new(super::metrics::registry())],
            stopping: Arc::clone(&stopping),
            connections: HashMap::new(),
            next_token: WAKER.0 + 1,
        };
        let thread = thread::Builder::new()
            .name("health".into())
            .spawn(move || server.run())?;
        Ok(HealthServer {
            addr,
            stopping,
            waker,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One accepted connection: reading its head, then writing its answer.
struct Connection {
    stream: TcpStream,
    accepted: Instant,
    deadline: Instant,
    head: Vec<u8>,
    /// The answer once the head is read, and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
}

/// What to do with a connection after handling an event.
enum Next {
    Keep,
    Close,
}

struct Server {
    poll: Poll,
    listener: MioListener,
    state: Arc<HealthState>,
    /// The agent's metrics, then the server's own (build and process).
    registries: [Arc<Registry>; 2],
    stopping: Arc<AtomicBool>,
    connections: HashMap<Token, Connection>,
    next_token: usize,
}

impl Server {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .connections
                .values()
                .map(|c| c.deadline)
                .min()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(err) = self.poll.poll(&mut events, timeout)
                && err.kind() != io::ErrorKind::Interrupted
            {
                log::error!("health server stopped: {err}");
                return;
            }
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    token => self.ready(token),
                }
            }
            self.expire();
        }
    }

    /// Accepts every pending connection; past the limit the oldest open one makes room.
    fn accept(&mut self) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                // One connection that went away before it was accepted: take the next.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                // Out of file descriptors or the like: try again at the next readiness event
                // (every new connection is one), without spinning.
                Err(err) => {
                    log::warn!("health server cannot accept a connection: {err}");
                    return;
                }
            };
            if self.connections.len() >= MAX_CONNECTIONS {
                let oldest = self
                    .connections
                    .iter()
                    .min_by_key(|(_, c)| c.accepted)
                    .map(|(t, _)| *t);
                if let Some(token) = oldest {
                    self.close(token);
                }
            }
            let token = Token(self.next_token);
            self.next_token = self.next_token.wrapping_add(1).max(WAKER.0 + 1);
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE)
                .is_err()
            {
                continue;
            }
            let now = Instant::now();
            self.connections.insert(
                token,
                Connection {
                    stream,
                    accepted: now,
                    deadline: now + HEAD_DEADLINE,
                    head: Vec::with_capacity(1024),
                    answer: None,
                },
            );
        }
    }

    /// The socket of `token` became readable or writable.
    fn ready(&mut self, token: Token) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        let next = if conn.answer.is_none() {
            match read_some(conn) {
                None => Next::Keep,
                Some(Ok(head)) => {
                    let head_only = head.method == "HEAD";
                    let reply = route(&head, &self.state, &self.registries);
                    answer(conn, &reply, head_only, &self.poll, token)
                }
                Some(Err(reply)) => answer(conn, &reply, false, &self.poll, token),
            }
        } else {
            write_some(conn)
        };
        if let Next::Close = next {
            self.close(token);
        }
    }

    /// Answers heads that missed their deadline with 408 (best effort) and drops answers that
    /// could not be written in time.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            if let Some(conn) = self.connections.get_mut(&token)
                && conn.answer.is_none()
            {
                let reply = Reply::text(408, "request head not received in time");
                let _ = conn.stream.write(&encode(&reply, false));
            }
            self.close(token);
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut conn) = self.connections.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            let _ = conn.stream.flush();
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }
}

/// Reads what is available. `None`: the head is still incomplete; otherwise the parsed head or
/// the reply to send instead.
fn read_some(conn: &mut Connection) -> Option<Result<Head, Reply>> {
    let mut chunk = [0u8; 1024];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(0) => return Some(Err(Reply::text(400, "incomplete request"))),
            Ok(n) => conn.head.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Some(Err(Reply::text(400, "connection error"))),
        }
        match parse_head(&conn.head) {
            Ok(Some(head)) => return Some(Ok(head)),
            Ok(None) if conn.head.len() >= MAX_HEAD => {
                return Some(Err(Reply::text(431, "request head too large")));
            }
            Ok(None) => {}
            Err(reply) => return Some(Err(reply)),
        }
    }
}

/// Starts writing `reply`; the rest is written as the socket drains.
fn answer(
    conn: &mut Connection,
    reply: &Reply,
    head_only: bool,
    poll: &Poll,
    token: Token,
) -> Next {
    conn.answer = Some((encode(reply, head_only), 0));
    conn.deadline = Instant::now() + WRITE_DEADLINE;
    conn.head = Vec::new();
    if poll
        .registry()
        .reregister(&mut conn.stream, token, Interest::WRITABLE)
        .is_err()
    {
        return Next::Close;
    }
    write_some(conn)
}

fn write_some(conn: &mut Connection) -> Next {
    let Some((bytes, written)) = conn.answer.as_mut() else {
        return Next::Close;
    };
    while *written < bytes.len() {
        match conn.stream.write(&bytes[*written..]) {
            Ok(0) => return Next::Close,
            Ok(n) => *written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
    Next::Close
}

/// An answer before it is written: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
    pub(crate) allow: bool,
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

/// The parts of a request head the server looks at.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) has_body: bool,
}

/// Parses a request head from the bytes read so far: `Ok(None)` means "need more bytes".
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, Reply> {
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

/// Chooses the reply for a parsed head. Pure apart from reading the shared state and the
/// metrics.
pub(crate) fn route(head: &Head, state: &HealthState, registries: &[Arc<Registry>]) -> Reply {
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
            body: registries.iter().map(|r| metrics::render(r)).collect(),
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

/// The bytes of a response: every one closes its connection.
fn encode(reply: &Reply, head_only: bool) -> Vec<u8> {
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
    out.into_bytes()
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
        let registry = [Arc::new(Registry::default())];
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
    fn metrics_text_has_the_agent_build_and_process_metrics() {
        let mut registry = Registry::default();
        let c = metrics::Counter::<u64>::default();
        registry.register("kijo_test_events", "Test events.", c.clone());
        c.inc();
        let registries = [
            Arc::new(registry),
            Arc::new(super::super::metrics::registry()),
        ];
        let state = HealthState::new(Duration::from_secs(60));
        let text = route(&head("GET", "/metrics", false), &state, &registries).body;
        assert!(text.contains("kijo_test_events_total 1"), "{text}");
        assert!(text.contains("kijo_build_info{version=\""), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_threads "), "{text}");
    }

    #[test]
    fn responses_close_their_connection() {
        let mut reply = Reply::text(405, "only GET and HEAD are allowed");
        reply.allow = true;
        let text = String::from_utf8(encode(&reply, false)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\nonly GET and HEAD are allowed\n"),
            "{text}"
        );
        let head_only = String::from_utf8(encode(&Reply::text(200, "ok"), true)).unwrap();
        assert!(
            head_only.ends_with(
                "Content-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            ),
            "{head_only}"
        );
    }
}
