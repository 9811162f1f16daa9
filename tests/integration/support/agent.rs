//! Runs the real `kijo-agent` binary and watches its log lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kijo-agent"))
}

pub use super::sandbox::TempDir;

/// A running agent whose stderr lines are collected as they arrive.
pub struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Starts the agent with exactly these environment variables (plus PATH) and arguments.
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Agent {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start kijo-agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let sink = Arc::clone(&lines);
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Agent { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a log line satisfies `pred` and returns it.
    pub fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what} within {timeout:?}; got:\n{}",
                self.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The health server's address, from its start-up log line.
    pub fn health_addr(&self) -> SocketAddr {
        let line = self.wait_for_line("'health server listening'", Duration::from_secs(20), |l| {
            l.contains("health server listening")
        });
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        v["addr"].as_str().unwrap().parse().unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the agent to completion and returns (status, stdout, stderr).
pub fn run(env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kijo-agent");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw HTTP exchange: the test writes exactly these bytes and reads until the server closes.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

pub fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer (and close) before the whole request is written.
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    // Reading to end proves the server closed the connection itself.
    stream
        .read_to_end(&mut buf)
        .expect("server closes the connection after answering");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

pub fn get(addr: SocketAddr, path: &str) -> RawResponse {
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// Polls `f` until it returns true, failing after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}
