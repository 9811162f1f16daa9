//! A real HTTP/1.1 receiver on 127.0.0.1 standing in for Slack, webhooks and the SaaS: the
//! notification tests assert on what it recorded, the demo prints it.
//!
//! It records every request (method, path, headers, exact body bytes) and answers from a
//! script (200, 400, 429 + Retry-After, 503, a dropped connection, …), then from a default
//! reply. `stop` closes the port so clients get "connection refused"; `restart` binds the same
//! port again, keeping the records. Every connection is answered with `Connection: close`.

use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Close the connection without answering.
    Drop,
    /// Keep the connection open without answering for this long (a hung target).
    Hang(Duration),
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn ok() -> Reply {
        Reply::status(200).body("ok")
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Status { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    pub fn body(mut self, text: &str) -> Reply {
        if let Reply::Status { body, .. } = &mut self {
            *body = text.to_owned();
        }
        self
    }
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status answered, `None` for a dropped connection.
    pub answered: Option<u16>,
    /// When the request was complete.
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Reply,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

pub struct Receiver {
    addr: SocketAddr,
    shared: Shared,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts on a free loopback port, answering 200 by default.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared: Shared = Arc::new((
            Mutex::new(State {
                requests: Vec::new(),
                script: VecDeque::new(),
                default: Reply::ok(),
            }),
            Condvar::new(),
        ));
        let mut receiver = Receiver {
            addr,
            shared,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = Arc::clone(&stop);
        self.thread = Some(std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || handle(stream, &shared));
            }
        }));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replies used in order, one per request, before the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.0.lock().unwrap().script.extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        self.shared.0.lock().unwrap().default = reply;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.0.lock().unwrap().requests.clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.shared;
        let mut state = lock.lock().unwrap();
        while state.requests.len() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "receiver got {} requests, expected {n} within {timeout:?}",
                state.requests.len()
            );
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
        state.requests.clone()
    }

    /// Closes the port: new connections are refused until `restart`.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept so the thread sees the flag and drops the listener.
            let _ = TcpStream::connect(self.addr);
            thread.join().expect("receiver thread");
        }
    }

    /// Listens on the same port again.
    pub fn restart(&mut self) {
        assert!(self.thread.is_none(), "restart of a running receiver");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::yield_now();
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    // `None`: the wake-up connect of `stop`, or a client that gave up; errors: a malformed or
    // oversized request, which no notification client sends.
    let Ok(Some(request)) = http::read_request(&mut reader) else {
        return;
    };
    let headers = request
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let (method, path, body) = (request.method, request.target, request.body);

    let (lock, cond) = &**shared;
    let reply = {
        let mut state = lock.lock().unwrap();
        let reply = state
            .script
            .pop_front()
            .unwrap_or_else(|| state.default.clone());
        state.requests.push(Recorded {
            method,
            path,
            headers,
            body,
            answered: match &reply {
                Reply::Status { status, .. } => Some(*status),
                Reply::Drop | Reply::Hang(_) => None,
            },
            at: Instant::now(),
        });
        cond.notify_all();
        reply
    };
    let mut stream = stream;
    if let Reply::Hang(duration) = reply {
        // Simulates a target that accepted the connection and never answers.
        std::thread::sleep(duration);
        return;
    }
    if let Reply::Status {
        status,
        headers,
        body,
    } = reply
    {
        let mut all = vec![("Connection".to_owned(), "close".to_owned())];
        all.extend(headers);
        let response = http::Response {
            status,
            headers: all,
            body: vec![http::Segment::Owned(body.into_bytes())],
        };
        let _ = response.write_to(&mut stream, false);
        let _ = stream.flush();
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
