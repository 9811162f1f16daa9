//! Runs the real `kijo-agent` binary (`Agent`, shared with the demo, lives in the test kit) and
//! talks raw HTTP to its health server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// The binary under test: this build's, or the one `KIJO_TEST_AGENT_BINARY` names. The override
/// runs today's tests against another build (an earlier commit's, a release) to show that a new
/// scenario fails there and so tests what it claims.
pub fn binary() -> PathBuf {
    match std::env::var_os("KIJO_TEST_AGENT_BINARY") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_kijo-agent")),
    }
}

pub use super::sandbox::TempDir;
pub use kijo_testkit::agent::Agent;

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

pub use kijo_testkit::wait::wait_until;
