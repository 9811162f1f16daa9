//! kijo sandbox: a small Kubernetes-API-compatible server for tests, demos and benchmarks.
//! Not part of the release binary. See docs/sandbox.md for the flags.
//!
//! `cargo run --example sandbox -- [--listen ADDR] [--plain-http] [--token TOKEN]
//!   [--client-ca-dir DIR] [--kubeconfig PATH] [--load DIR]... [--synthetic W:V[:SEED]] [--fault SPEC]...
//!   [--namespaced-token TOKEN=NS[,NS...]]... [--gzip]`
//!
//! Prints exactly one line to stdout when ready: `sandbox ready: <URL>`. Logs go to stderr.

mod api;
mod discovery;
mod faults;
mod jsonpatch;
mod load;
mod resources;
mod selector;
mod store;
mod synthetic;
mod tls;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

// The HTTP/1.1 framing is shared with the tests' loopback receiver.
use kijo_testkit::http;

use api::{Outcome, State};
use base64::Engine as _;

struct Args {
    listen: String,
    plain_http: bool,
    token: Option<String>,
    client_ca_dir: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    load: Vec<PathBuf>,
    synthetic: Option<String>,
    faults: Vec<String>,
    namespaced_tokens: Vec<(String, Vec<String>)>,
    gzip: bool,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        listen: "127.0.0.1:0".into(),
        plain_http: false,
        token: None,
        client_ca_dir: None,
        kubeconfig: None,
        load: Vec::new(),
        synthetic: None,
        faults: Vec::new(),
        namespaced_tokens: Vec::new(),
        gzip: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("listen") => a.listen = p.value()?.string()?,
            Long("plain-http") => a.plain_http = true,
            Long("token") => a.token = Some(p.value()?.string()?),
            Long("client-ca-dir") => a.client_ca_dir = Some(p.value()?.into()),
            Long("kubeconfig") => a.kubeconfig = Some(p.value()?.into()),
            Long("load") => a.load.push(p.value()?.into()),
            Long("synthetic") => a.synthetic = Some(p.value()?.string()?),
            Long("fault") => a.faults.push(p.value()?.string()?),
            Long("namespaced-token") => {
                let v = p.value()?.string()?;
                let (tok, nss) = v
                    .split_once('=')
                    .ok_or("--namespaced-token expects TOKEN=NS[,NS...]")?;
                a.namespaced_tokens.push((
                    tok.to_string(),
                    nss.split(',').map(str::to_string).collect(),
                ));
            }
            Long("gzip") => a.gzip = true,
            Long("help") | Short('h') => {
                eprintln!(
                    "usage: sandbox [--listen ADDR] [--plain-http] [--token TOKEN] [--client-ca-dir DIR] [--kubeconfig PATH] [--load DIR]... [--synthetic WORKLOADS:VULNS[:SEED]] [--fault KIND[:COUNT][:retry=S][:delay=MS][:path=SUBSTR]]... [--namespaced-token TOKEN=NS[,NS...]]... [--gzip]"
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            // Never panic on a closed stderr (a reader that went away must not stop shutdown).
            let _ = writeln!(
                std::io::stderr(),
                "sandbox {} {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn random_token() -> String {
    let mut seed = [0u8; 24];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed)
}

/// A connection the server reads requests from and writes answers to.
trait Conn: Read + Write {
    fn has_client_cert(&self) -> bool;
}

impl Conn for TcpStream {
    fn has_client_cert(&self) -> bool {
        false
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn has_client_cert(&self) -> bool {
        self.conn.peer_certificates().is_some_and(|c| !c.is_empty())
    }
}

fn serve<C: Conn>(conn: C, state: &State) {
    let mut reader = BufReader::with_capacity(16 << 10, conn);
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    let r = http::Response::json(
                        400,
                        store::ApiError::bad_request(e.to_string()).status_json(),
                    );
                    let _ = r.write_to(reader.get_mut(), false);
                }
                return;
            }
        };
        let close = req.wants_close();
        let client_cert = reader.get_ref().has_client_cert();
        let started = Instant::now();
        let outcome = api::handle(state, &req, client_cert);
        let result = match outcome {
            Outcome::Respond(r)
                if state.gzip
                    && r.body_len() > 128 << 10
                    && req
                        .header("accept-encoding")
                        .is_some_and(|v| v.contains("gzip")) =>
            {
                r.write_gzip(reader.get_mut())
            }
            Outcome::Respond(r) => {
                log::debug!(
                    "{} {} -> {} ({} bytes, {:?})",
                    req.method,
                    req.path,
                    r.status,
                    r.body_len(),
                    started.elapsed()
                );
                r.write_to(reader.get_mut(), false)
            }
            Outcome::Truncate(r) => {
                let _ = r.write_to(reader.get_mut(), true);
                return;
            }
            Outcome::Drop => return,
            Outcome::Watch(spec) => api::run_watch(state, spec, reader.get_mut()),
        };
        if result.is_err() || close {
            return;
        }
    }
}

fn kubeconfig_yaml(url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: sandbox\n  user:\n    token: {token}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\n    namespace: default\ncurrent-context: sandbox\npreferences: {{}}\n"
    )
}

fn run() -> Result<(), String> {
    let args = parse_args().map_err(|e| format!("sandbox: {e}"))?;
    let level = match std::env::var("SANDBOX_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    };
    let _ = log::set_logger(&StderrLogger).map(|()| log::set_max_level(level));

    let mut faults_list = Vec::new();
    for f in &args.faults {
        faults_list.push(faults::Fault::parse_cli(f)?);
    }
    let token = args.token.clone().unwrap_or_else(random_token);
    let seed = jiff::Timestamp::now().as_nanosecond() as u64;
    let store = store::Store::new(seed);
    let t0 = Instant::now();
    for dir in &args.load {
        let n = load::load_dir(&store, dir)?;
        log::info!("loaded {n} objects from {}", dir.display());
    }
    if let Some(spec) = &args.synthetic {
        let s = synthetic::Spec::parse(spec)?;
        let n = synthetic::generate(&store, &s);
        log::info!(
            "generated {n} synthetic objects ({spec}) in {:?}",
            t0.elapsed()
        );
    }
    load::ensure_namespaces(&store);
    store.start_recording();

    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if args.plain_http { "http" } else { "https" };
    let host = if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let url = format!("{scheme}://{host}:{}", addr.port());

    let pki = tls::Pki::generate()?;
    if let Some(dir) = &args.client_ca_dir {
        pki.write_client_files(dir)?;
    }
    let tls_config = if args.plain_http {
        None
    } else {
        Some(pki.server_config(args.client_ca_dir.is_some())?)
    };
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, kubeconfig_yaml(&url, &pki.ca_pem, &token))
            .map_err(|e| format!("cannot write kubeconfig {}: {e}", path.display()))?;
    }

    let faults = faults::Faults::default();
    for f in faults_list {
        faults.add(f);
    }
    let state = Arc::new(State {
        store,
        tokens: RwLock::new(api::Tokens {
            full: HashSet::from([token]),
            namespaced: args.namespaced_tokens.iter().cloned().collect(),
        }),
        gzip: args.gzip,
        faults,
        stats: Mutex::new(BTreeMap::new()),
        server_addr: format!("{host}:{}", addr.port()),
        shutdown: AtomicBool::new(false),
        forbidden: RwLock::new(HashSet::new()),
    });

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!("signal {sig}, shutting down");
            let _ = std::io::stderr().flush();
            std::process::exit(0);
        }
    });

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "sandbox ready: {url}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }

    for stream in listener.incoming() {
        let Ok(tcp) = stream else { continue };
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(600)));
        let state = state.clone();
        let tls_config = tls_config.clone();
        std::thread::spawn(move || match tls_config {
            None => serve(tcp, &state),
            Some(cfg) => match rustls::ServerConnection::new(cfg) {
                Ok(conn) => serve(rustls::StreamOwned::new(conn, tcp), &state),
                Err(e) => log::warn!("tls setup failed: {e}"),
            },
        });
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("sandbox: {e}");
        std::process::exit(2);
    }
}
