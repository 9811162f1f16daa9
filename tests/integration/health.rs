//! The health server under hostile clients: slow heads and idle connections must never keep
//! the kubelet's probes from an answer (a failing liveness probe restarts the pod in a loop).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use kijo_agent::health::{HealthServer, HealthState};
use kijo_agent::metrics::Registry;

use crate::support::agent::wait_until;

/// One probe as the kubelet sends it, with its own 1 s budget; the status, or why there was
/// none.
fn probe(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let budget = Duration::from_secs(1);
    let started = Instant::now();
    let mut stream =
        TcpStream::connect_timeout(&addr, budget).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(budget)).unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if started.elapsed() > budget {
        return Err(format!("answered after {:?}", started.elapsed()));
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))
}

#[test]
fn slow_and_idle_clients_never_keep_probes_from_an_answer() {
    let state = HealthState::new(Duration::from_secs(600));
    state.progress();
    let server = HealthServer::start(
        "127.0.0.1:0".parse().unwrap(),
        state,
        Arc::new(Registry::default()),
    )
    .unwrap();
    let addr = server.local_addr();
    // Dropping `stop_tx` ends the attack.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let slow_connected = Arc::new(AtomicUsize::new(0));

    // 20 slowloris clients: one byte of a never-ending head per second, reconnecting whenever
    // the server closes them, as an attacker would.
    let mut attackers = Vec::new();
    for _ in 0..20 {
        let (stop, connected) = (stop_rx.clone(), Arc::clone(&slow_connected));
        attackers.push(thread::spawn(move || {
            let mut first = true;
            loop {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    return;
                };
                let head = b"GET /health/live HTTP/1.1\r\nX-Slow: ".iter();
                for byte in head.chain(std::iter::repeat(&b'a')) {
                    if s.write_all(&[*byte]).is_err() {
                        break;
                    }
                    if first {
                        connected.fetch_add(1, Ordering::SeqCst);
                        first = false;
                    }
                    // The attack's pace; returns at once when the test ends.
                    match stop.recv_timeout(Duration::from_secs(1)) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            }
        }));
    }
    // 200 clients that connect and never send a byte.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).expect("idle connection"))
        .collect();
    wait_until(
        "every slow client connected",
        Duration::from_secs(10),
        || slow_connected.load(Ordering::SeqCst) == 20,
    );

    // Fifteen probes over several seconds, while the slow clients keep sending: every one
    // answered, within its second.
    let mut failures = Vec::new();
    for i in 0..15 {
        let path = ["/health/live", "/health/ready", "/metrics"][i % 3];
        match probe(addr, path) {
            Ok(200) => {}
            other => failures.push(format!("probe {i} {path}: {other:?}")),
        }
        // Pacing, not a wait for a condition: the probes are spread over the attack as the
        // kubelet's period spreads them.
        thread::sleep(Duration::from_millis(300));
    }
    drop(stop_tx);
    drop(stop_rx);
    for a in attackers {
        a.join().unwrap();
    }
    drop(idle);
    server.stop();
    assert!(
        failures.is_empty(),
        "{} of 15 probes failed: {failures:#?}",
        failures.len()
    );
}
