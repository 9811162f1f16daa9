//! The Kubernetes-API sandbox (`examples/sandbox`): one launcher for the tests, the demo and
//! the benchmarks, and a client for its API and its `/_sandbox` controls.
//!
//! ```ignore
//! let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
//! sb.url;          // "https://127.0.0.1:PORT"
//! sb.kubeconfig;   // kubeconfig written by the sandbox (context `sandbox`, token auth, CA data)
//! sb.token;        // the accepted bearer token
//! sb.ca_pem;       // the sandbox CA (PEM); sb.ca_file() writes it to a file
//! sb.dir.path();   // a private temp dir, removed on drop (HOME and kubectl cache live here)
//! sb.kubectl(&["get", "vulns", "-A"]) -> std::process::Output   // /usr/bin/kubectl, isolated cache
//! sb.kubectl_ok(&[...]) -> String                                // stdout; panics with stderr on failure
//! sb.http("GET", "/apis/...", None, &[("Accept", "...")]) -> HttpReply  // authenticated ureq call
//! sb.fault(r#"{"kind":"429","count":1,"retry_after_seconds":2}"#);
//! sb.set_tokens(&["new-token"]);
//! sb.stats() -> serde_json::Value;  sb.reset_stats();  sb.compact();
//! ```
//!
//! The sandbox binary is the example beside the running program: `target/<profile>/examples/
//! sandbox`, found from a test binary (`target/<profile>/deps/`) or an example
//! (`target/<profile>/examples/`). When it is missing or older than its sources (e.g. after
//! `cargo test --test integration` alone), [`Sandbox::binary`] runs `cargo build --example
//! sandbox` once. The child is killed when the `Sandbox` drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::build;
pub use crate::tempdir::TempDir;

pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {}",
                &self.body[..self.body.len().min(500)]
            )
        })
    }
}

pub struct Sandbox {
    pub url: String,
    pub kubeconfig: PathBuf,
    pub token: String,
    pub ca_pem: String,
    pub dir: TempDir,
    child: Child,
    stderr_path: PathBuf,
}

/// The first `kubectl` on PATH, if any: the demo uses it when there is one and talks to the
/// sandbox's API itself when there is none.
pub fn kubectl_on_path() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
}

/// The CA PEM from the kubeconfig's `certificate-authority-data`, which the sandbox writes inline.
fn ca_from_kubeconfig(kubeconfig: &Path) -> Result<String, String> {
    use base64::Engine as _;
    let kc = std::fs::read_to_string(kubeconfig)
        .map_err(|e| format!("sandbox kubeconfig {}: {e}", kubeconfig.display()))?;
    let data = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .ok_or_else(|| format!("no certificate-authority-data in {}", kubeconfig.display()))?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            format!(
                "certificate-authority-data in {}: {e}",
                kubeconfig.display()
            )
        })?;
    String::from_utf8(pem)
        .map_err(|e| format!("CA in {} is not PEM text: {e}", kubeconfig.display()))
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sandbox {
    /// `target/<profile>/examples/sandbox`, found relative to the running program; built once
    /// when missing or older than its sources.
    pub fn binary() -> PathBuf {
        static BUILT: OnceLock<PathBuf> = OnceLock::new();
        BUILT
            .get_or_init(|| {
                let bin = build::profile_dir().join("examples").join("sandbox");
                // Build the example only when missing or older than its sources: `cargo test`
                // builds it, `cargo test --test integration` alone does not.
                let newest_src = ["examples/sandbox", "tests/testkit/src"]
                    .iter()
                    .flat_map(|d| std::fs::read_dir(build::repo_root().join(d)).into_iter().flatten())
                    .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
                    .max();
                let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
                if built.is_some() && built >= newest_src {
                    return bin;
                }
                let status = build::cargo_build(&["--example", "sandbox"]);
                assert!(
                    bin.exists(),
                    "sandbox binary not found at {} (cargo build --example sandbox: {status:?}); run `cargo build --example sandbox` first",
                    bin.display()
                );
                bin
            })
            .clone()
    }

    /// The project's own small cluster fixtures (`tests/fixtures/cluster`).
    pub fn fixtures_dir() -> PathBuf {
        build::repo_root().join("tests/fixtures/cluster")
    }

    /// [`Sandbox::launch`] for tests: panics with the sandbox's stderr when it fails.
    pub fn start(args: &[&str]) -> Sandbox {
        Self::launch(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the sandbox with `args` (plus, unless given, `--kubeconfig <dir>/kubeconfig` and a
    /// random `--token`) and waits for its ready line; the error carries the sandbox's stderr if
    /// it does not get ready within 120 s.
    pub fn launch(args: &[&str]) -> Result<Sandbox, String> {
        let dir = TempDir::new("kijo-sandbox");
        let kubeconfig = match args.iter().position(|a| *a == "--kubeconfig") {
            Some(i) => PathBuf::from(args.get(i + 1).expect("--kubeconfig needs a value")),
            None => dir.path().join("kubeconfig"),
        };
        let token = match args.iter().position(|a| *a == "--token") {
            Some(i) => args.get(i + 1).expect("--token needs a value").to_string(),
            None => random_token(),
        };
        let mut cmd = Command::new(Self::binary());
        cmd.args(args);
        if !args.contains(&"--kubeconfig") {
            cmd.arg("--kubeconfig").arg(&kubeconfig);
        }
        if !args.contains(&"--token") {
            cmd.args(["--token", &token]);
        }
        let stderr_path = dir.path().join("sandbox.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", Self::binary().display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) if l.starts_with("sandbox ready: ") => l,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "sandbox did not get ready ({other:?}); stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                ));
            }
        };
        let url = line
            .trim_end()
            .trim_start_matches("sandbox ready: ")
            .to_string();
        let ca_pem = if url.starts_with("https") {
            ca_from_kubeconfig(&kubeconfig)?
        } else {
            String::new()
        };
        Ok(Sandbox {
            url,
            kubeconfig,
            token,
            ca_pem,
            dir,
            child,
            stderr_path,
        })
    }

    /// The sandbox's stderr so far (for assertion messages).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Writes the CA to `<dir>/ca.crt` and returns the path.
    pub fn ca_file(&self) -> PathBuf {
        let p = self.dir.path().join("ca.crt");
        std::fs::write(&p, &self.ca_pem).expect("write ca.crt");
        p
    }

    /// A `/usr/bin/kubectl` command using the sandbox kubeconfig and a private HOME/cache dir.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        self.kubectl_command_at(Path::new("/usr/bin/kubectl"), args)
    }

    /// [`Sandbox::kubectl_command`] with another program: the kubectl found on PATH (the demo),
    /// or a wrapper such as `/usr/bin/time` that runs kubectl with this environment (a benchmark).
    pub fn kubectl_command_at(&self, kubectl: &Path, args: &[&str]) -> Command {
        let home = self.dir.path().join("home");
        let _ = std::fs::create_dir_all(&home);
        let mut c = Command::new(kubectl);
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &home)
            .env("KUBECACHEDIR", home.join("cache"))
            .stdin(Stdio::null());
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .output()
            .expect("run /usr/bin/kubectl")
    }

    /// Runs kubectl and returns stdout, panicking with stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A ureq agent trusting the sandbox CA, not turning HTTP statuses into errors.
    pub fn agent(&self) -> ureq::Agent {
        let mut tls = ureq::tls::TlsConfig::builder();
        if !self.ca_pem.is_empty() {
            let cert = ureq::tls::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM");
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])));
        }
        ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    /// One authenticated request; `Err` for transport failures (dropped or truncated replies).
    pub fn try_http(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<HttpReply, ureq::Error> {
        self.try_http_with_token(method, path, body, headers, Some(&self.token))
    }

    pub fn try_http_with_token(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> Result<HttpReply, ureq::Error> {
        let url = format!("{}{}", self.url, path);
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            b = b.header("Content-Type", "application/json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body.unwrap_or("").to_string()).expect("request");
        let mut resp = self.agent().run(req)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()?;
        Ok(HttpReply {
            status,
            headers,
            body,
        })
    }

    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> HttpReply {
        self.try_http(method, path, body, headers)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Queues a fault (`POST /_sandbox/faults`), e.g. `{"kind":"500","count":2}`.
    pub fn fault(&self, json: &str) {
        let r = self.http("POST", "/_sandbox/faults", Some(json), &[]);
        assert_eq!(r.status, 200, "fault {json} refused: {}", r.body);
    }

    /// Replaces the accepted bearer tokens; later harness calls use the first one.
    pub fn set_tokens(&mut self, tokens: &[&str]) {
        let body = serde_json::json!({ "tokens": tokens }).to_string();
        let r = self.http("POST", "/_sandbox/tokens", Some(&body), &[]);
        assert_eq!(r.status, 200, "set_tokens refused: {}", r.body);
        if let Some(t) = tokens.first() {
            self.token = t.to_string();
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        self.http("GET", "/_sandbox/stats", None, &[]).json()
    }

    /// Count of requests with this verb ("list", "get", "watch", ...) whose path contains `path_contains`.
    pub fn count(&self, verb: &str, path_contains: &str) -> u64 {
        self.stats()["requests"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| {
                        r["verb"] == verb
                            && r["path"]
                                .as_str()
                                .is_some_and(|p| p.contains(path_contains))
                    })
                    .map(|r| r["count"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn reset_stats(&self) {
        self.http("DELETE", "/_sandbox/stats", None, &[]);
    }

    /// Expires every continue token and the watch history, like an etcd compaction.
    pub fn compact(&self) {
        let r = self.http("POST", "/_sandbox/compact", None, &[]);
        assert_eq!(r.status, 200, "compact: {}", r.body);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sandbox {
    /// Sends SIGTERM and waits for the exit (for "exits cleanly" checks).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sandbox ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
