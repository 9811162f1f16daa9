//! The HTTP layer: one ureq agent with the cluster's TLS settings, credentials that refresh
//! themselves, and the retry policy. Everything above it (listing, owner lookups, dry-run
//! checks) goes through `Client::execute`, so every request gets the same auth, retry,
//! metrics and error naming.

use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::config::{AuthConfig, ClusterConfig, ExecConfig, Origin, read_token_file};
use super::error::{KubeError, path_only};
use super::exec::{ExecCredential, run_plugin};
use super::{KubeMetrics, KubeOptions, RetryPolicy};
use crate::secret::Secret;

/// Token files are re-read when the cached copy is older than this (client-go: 1 min minus
/// 10 s leeway), and once more on a 401.
const TOKEN_FILE_MAX_AGE: Duration = Duration::from_secs(50);

/// A client for one API server. Cheap to clone; clones share connections and credentials.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    describe: String,
    tls: TlsParts,
    proxy: Option<ureq::Proxy>,
    agent: RwLock<ureq::Agent>,
    creds: Mutex<CredState>,
    retry: RetryPolicy,
    metrics: Option<KubeMetrics>,
    page_size: u32,
    max_page_bytes: u64,
    shutdown: Mutex<bool>,
    shutdown_cv: Condvar,
}

/// The TLS settings that do not change at runtime. Kept so the agent can be rebuilt when an
/// exec plugin hands out a new client certificate.
#[derive(Clone)]
struct TlsParts {
    ca_pem: Option<Vec<u8>>,
    insecure: bool,
    server_name: Option<String>,
}

enum CredState {
    None,
    Static(Secret<String>),
    File {
        path: std::path::PathBuf,
        fallback: Option<Secret<String>>,
        cached: Option<(Secret<String>, Instant)>,
    },
    Exec {
        cfg: ExecConfig,
        cached: Option<ExecCredential>,
        /// The certificate the agent currently uses, to notice a change.
        cert: Option<Vec<u8>>,
    },
}

/// One request as the layers above describe it.
pub(crate) struct Request<'a> {
    pub method: &'static str,
    /// Path and query, appended to the server URL.
    pub path: &'a str,
    pub accept: &'a str,
    pub body: Option<(&'a str, &'a [u8])>,
}

impl Request<'_> {
    pub fn get<'a>(path: &'a str, accept: &'a str) -> Request<'a> {
        Request {
            method: "GET",
            path,
            accept,
            body: None,
        }
    }
}

fn build_agent(
    tls: &TlsParts,
    proxy: Option<ureq::Proxy>,
    cert: Option<(&[u8], &[u8])>,
) -> Result<ureq::Agent, KubeError> {
    let rustls_config = super::tls::client_config(&super::tls::TlsSettings {
        ca_pem: tls.ca_pem.as_deref(),
        insecure: tls.insecure,
        client_cert: cert,
    })?;
    let config = ureq::Agent::config_builder()
        .proxy(proxy)
        .http_status_as_error(false)
        .https_only(false)
        .max_redirects(0)
        .user_agent(concat!("kijo-agent/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_send_request(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(70)))
        // A stalled body (not a slow one) fails; a page as such may take long to stream.
        .timeout_per_read(Some(Duration::from_secs(70)))
        .build();
    super::tls::agent(config, rustls_config, tls.server_name.as_deref())
}

impl Client {
    /// Resolves the configuration and builds the client. Validates certificates, keys and
    /// token files, and runs an exec plugin once, now: a broken configuration is a start-up
    /// error, not a failed first cycle.
    pub fn connect(opts: &KubeOptions) -> Result<Client, KubeError> {
        let cfg = ClusterConfig::resolve(opts)?;
        Client::from_config(cfg, opts)
    }

    /// Builds a client from an already resolved configuration (tests, in-cluster overrides).
    pub fn from_config(cfg: ClusterConfig, opts: &KubeOptions) -> Result<Client, KubeError> {
        if cfg.insecure_skip_tls_verify {
            log::warn!(server = cfg.server.as_str(); "INSECURE: insecure-skip-tls-verify is set in the kubeconfig; the API server's certificate is NOT verified and the token can be stolen by anyone on the network path");
        }
        let proxy =
            match &cfg.proxy_url {
                Some(url) => Some(ureq::Proxy::new(url).map_err(|e| {
                    KubeError::Config(format!("kubeconfig proxy-url is invalid: {e}"))
                })?),
                // In-cluster: never the environment's proxy (NO_PROXY cannot express the service
                // CIDR in ureq). Kubeconfig without proxy-url: the environment, as kubectl does.
                None if cfg.origin == Origin::InCluster => None,
                None => ureq::Proxy::try_from_env(),
            };
        let tls = TlsParts {
            ca_pem: cfg.ca_pem.clone(),
            insecure: cfg.insecure_skip_tls_verify,
            server_name: cfg.tls_server_name.clone(),
        };
        let mut cert: Option<(Vec<u8>, Secret<Vec<u8>>)> = cfg
            .client_cert
            .as_ref()
            .map(|c| (c.cert.clone(), c.key.clone()));
        let mut auth_desc = match &cfg.auth {
            AuthConfig::None => String::new(),
            AuthConfig::Token(_) => "token".to_owned(),
            AuthConfig::TokenFile { path, .. } => format!("token file {}", path.display()),
            AuthConfig::Exec(e) => format!("exec plugin {}", e.command),
        };
        if cfg.client_cert.is_some() {
            if !auth_desc.is_empty() {
                auth_desc.push_str(" + ");
            }
            auth_desc.push_str("client certificate");
        }
        if auth_desc.is_empty() {
            auth_desc.push_str("anonymous");
        }
        let describe = match &cfg.origin {
            Origin::InCluster => format!("{} (in-cluster, {auth_desc})", cfg.server),
            Origin::Kubeconfig { context, .. } => {
                format!("{} (kubeconfig context {context}, {auth_desc})", cfg.server)
            }
        };
        let mut creds = match cfg.auth {
            AuthConfig::None => CredState::None,
            AuthConfig::Token(t) => CredState::Static(t),
            AuthConfig::TokenFile { path, fallback } => CredState::File {
                path,
                fallback,
                cached: None,
            },
            AuthConfig::Exec(cfg) => CredState::Exec {
                cfg,
                cached: None,
                cert: None,
            },
        };
        // An exec plugin that hands out certificates must run before the first connection.
        if let CredState::Exec {
            cfg: exec,
            cached,
            cert: current,
        } = &mut creds
        {
            let cred = run_plugin(exec)?;
            if let Some((c, k)) = &cred.client_cert {
                cert = Some((c.clone(), k.clone()));
                *current = Some(c.clone());
            }
            *cached = Some(cred);
        }
        let agent = build_agent(
            &tls,
            proxy.clone(),
            cert.as_ref()
                .map(|(c, k)| (c.as_slice(), k.expose().as_slice())),
        )?;
        Ok(Client {
            inner: Arc::new(Inner {
                base: cfg.server.trim_end_matches('/').to_owned(),
                describe,
                tls,
                proxy,
                agent: RwLock::new(agent),
                creds: Mutex::new(creds),
                retry: opts.retry.clone(),
                metrics: opts.metrics.clone(),
                page_size: opts.page_size.max(1),
                max_page_bytes: opts.max_page_bytes,
                shutdown: Mutex::new(false),
                shutdown_cv: Condvar::new(),
            }),
        })
    }

    /// Where the client talks to and how it authenticates; no secrets.
    pub fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    /// Interrupts requests in flight and makes every later request fail with
    /// [`KubeError::Shutdown`]; for SIGTERM.
    pub fn shutdown(&self) {
        *self
            .inner
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        self.inner.shutdown_cv.notify_all();
        let agent = self.agent();
        agent.shutdown();
    }

    pub fn is_shut_down(&self) -> bool {
        *self
            .inner
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn page_size(&self) -> u32 {
        self.inner.page_size
    }

    pub(crate) fn max_page_bytes(&self) -> u64 {
        self.inner.max_page_bytes
    }

    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    pub(crate) fn metrics(&self) -> Option<&KubeMetrics> {
        self.inner.metrics.as_ref()
    }

    fn agent(&self) -> ureq::Agent {
        self.inner
            .agent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sleeps unless shut down first.
    pub(crate) fn pause(&self, d: Duration) -> Result<(), KubeError> {
        let deadline = Instant::now() + d;
        let mut down = self
            .inner
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            if *down {
                return Err(KubeError::Shutdown);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            down = self
                .inner
                .shutdown_cv
                .wait_timeout(down, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The bearer token for the next request, refreshing it when due or when `force`d
    /// (after a 401).
    fn bearer(&self, force: bool) -> Result<Option<Secret<String>>, KubeError> {
        let mut creds = self.inner.creds.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *creds {
            CredState::None => Ok(None),
            CredState::Static(t) => Ok(Some(t.clone())),
            CredState::File {
                path,
                fallback,
                cached,
            } => {
                let due = match cached {
                    Some((_, at)) => force || at.elapsed() >= TOKEN_FILE_MAX_AGE,
                    None => true,
                };
                if due {
                    match read_token_file(path) {
                        Ok(t) => *cached = Some((t, Instant::now())),
                        Err(e) => match (cached.as_ref(), fallback.as_ref()) {
                            (Some(_), _) => {
                                log::warn!(error = e.to_string().as_str(); "could not re-read the token file; keeping the last good token");
                            }
                            (None, Some(f)) => return Ok(Some(f.clone())),
                            (None, None) => return Err(e),
                        },
                    }
                }
                Ok(cached.as_ref().map(|(t, _)| t.clone()))
            }
            CredState::Exec { cfg, cached, cert } => {
                let fresh = cached
                    .as_ref()
                    .is_some_and(|c| c.is_fresh(jiff::Timestamp::now()));
                if force || !fresh {
                    let cred = run_plugin(cfg)?;
                    let new_cert = cred.client_cert.as_ref().map(|(c, _)| c.clone());
                    if new_cert != *cert {
                        let cc = cred
                            .client_cert
                            .as_ref()
                            .map(|(c, k)| (c.as_slice(), k.expose().as_slice()));
                        let agent = build_agent(&self.inner.tls, self.inner.proxy.clone(), cc)?;
                        *self.inner.agent.write().unwrap_or_else(|e| e.into_inner()) = agent;
                        *cert = new_cert;
                    }
                    *cached = Some(cred);
                }
                Ok(cached.as_ref().and_then(|c| c.token.clone()))
            }
        }
    }

    fn refreshable(&self) -> bool {
        matches!(
            *self.inner.creds.lock().unwrap_or_else(|e| e.into_inner()),
            CredState::File { .. } | CredState::Exec { .. }
        )
    }

    fn count(&self, status: &str) {
        if let Some(m) = &self.inner.metrics {
            m.requests
                .get_or_create(&vec![("status".to_owned(), status.to_owned())])
                .inc();
        }
    }

    pub(crate) fn count_retry(&self) {
        if let Some(m) = &self.inner.metrics {
            m.retries.inc();
        }
    }

    fn send_once(
        &self,
        req: &Request<'_>,
        token: Option<&Secret<String>>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let url = format!("{}{}", self.inner.base, req.path);
        let agent = self.agent();
        let auth = token.map(|t| format!("Bearer {}", t.expose()));
        macro_rules! headers {
            ($b:expr) => {{
                let mut b = $b.header("Accept", req.accept);
                if let Some(a) = &auth {
                    b = b.header("Authorization", a.as_str());
                }
                b
            }};
        }
        match (req.method, req.body) {
            ("GET", _) => headers!(agent.get(&url)).call(),
            ("DELETE", _) => headers!(agent.delete(&url)).call(),
            ("POST", Some((ct, body))) => headers!(agent.post(&url))
                .header("Content-Type", ct)
                .send(body),
            ("PUT", Some((ct, body))) => headers!(agent.put(&url))
                .header("Content-Type", ct)
                .send(body),
            ("PATCH", Some((ct, body))) => headers!(agent.patch(&url))
                .header("Content-Type", ct)
                .send(body),
            (m, _) => panic!("unsupported request {m} without body"),
        }
    }

    /// One small authenticated request (`GET /api`, the core group's discovery, which every
    /// authenticated user may read), for the readiness check of the credential: `Err` with a
    /// 401 when the API rejects it even after a refresh.
    pub fn check_credential(&self) -> Result<(), KubeError> {
        let resp = self.execute(&Request::get("/api", "application/json"))?;
        let _ = resp
            .into_body()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec();
        Ok(())
    }

    /// Sends a request with authentication and the retry policy. Returns the response for
    /// any 2xx status; every other outcome is a [`KubeError`] naming the path and status.
    pub(crate) fn execute(
        &self,
        req: &Request<'_>,
    ) -> Result<ureq::http::Response<ureq::Body>, KubeError> {
        let policy = &self.inner.retry;
        let mut attempt = 0u32;
        let mut reauthed = false;
        let mut force_refresh = false;
        loop {
            if self.is_shut_down() {
                return Err(KubeError::Shutdown);
            }
            let token = self.bearer(force_refresh)?;
            force_refresh = false;
            let result = self.send_once(req, token.as_ref());
            let retryable_wait: Duration;
            let failure: KubeError;
            match result {
                Err(e) => {
                    if self.is_shut_down() {
                        return Err(KubeError::Shutdown);
                    }
                    self.count("error");
                    let retryable = matches!(
                        e,
                        ureq::Error::Io(_)
                            | ureq::Error::Timeout(_)
                            | ureq::Error::ConnectionFailed
                            | ureq::Error::HostNotFound
                            | ureq::Error::Protocol(_)
                    );
                    failure = KubeError::Transport {
                        method: req.method,
                        path: path_only(req.path),
                        message: e.to_string(),
                    };
                    if !retryable {
                        return Err(failure);
                    }
                    retryable_wait = policy.backoff(attempt);
                }
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    self.count(&status.to_string());
                    for w in resp.headers().get_all("warning") {
                        if let Ok(w) = w.to_str() {
                            log::warn!(path = path_only(req.path).as_str(), warning = w; "api server warning");
                        }
                    }
                    if (200..300).contains(&status) {
                        return Ok(resp);
                    }
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let (reason, message) = read_status(&mut resp);
                    failure = KubeError::Api {
                        method: req.method,
                        path: path_only(req.path),
                        status,
                        reason,
                        message,
                    };
                    match status {
                        401 if !reauthed && self.refreshable() => {
                            reauthed = true;
                            force_refresh = true;
                            log::info!(path = path_only(req.path).as_str(); "api answered 401; refreshing the credential and retrying once");
                            continue;
                        }
                        429 | 503 => {
                            retryable_wait = retry_after
                                .map(|d| d.min(policy.retry_after_cap))
                                .unwrap_or_else(|| policy.backoff(attempt));
                        }
                        500..=599 => {
                            retryable_wait = retry_after
                                .map(|d| d.min(policy.retry_after_cap))
                                .unwrap_or_else(|| policy.backoff(attempt));
                        }
                        _ => return Err(failure),
                    }
                }
            }
            attempt += 1;
            if attempt >= policy.max_attempts {
                return Err(failure);
            }
            self.count_retry();
            log::warn!(path = path_only(req.path).as_str(), attempt = attempt, wait_ms = retryable_wait.as_millis() as u64, error = failure.to_string().as_str(); "kubernetes request failed; retrying");
            self.pause(retryable_wait)?;
        }
    }
}

/// Reads an error body: a `Status` object, or (429 from API Priority and Fairness) plain
/// text. Bounded so a hostile or broken server cannot make it large.
fn read_status(resp: &mut ureq::http::Response<ureq::Body>) -> (String, String) {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Status {
        reason: String,
        message: String,
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    match serde_json::from_str::<Status>(&body) {
        Ok(s) if !s.message.is_empty() || !s.reason.is_empty() => (s.reason, s.message),
        _ => {
            let text: String = body.trim().chars().take(200).collect();
            (String::new(), text)
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff, capped, with up to +25 % jitter (never shorter, so a loaded server
    /// gets at least the planned pause).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let schedule = crate::backoff::Exponential {
            base: self.base_backoff,
            cap: self.max_backoff,
        };
        crate::backoff::jittered(
            schedule.ceiling(attempt.min(16)),
            crate::backoff::Jitter::Up(0.25),
            crate::backoff::random_unit(),
        )
    }
}

/// Everything but RFC 3986's unreserved characters is encoded: continue tokens are base64 with
/// `+`, `/` and `=`, and names must stay one path segment.
const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query value or a path segment.
pub(crate) fn encode_query(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, ENCODED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("eyJ2Ijo+/="), "eyJ2Ijo%2B%2F%3D");
        assert_eq!(encode_query("a=b,c in (d)"), "a%3Db%2Cc%20in%20%28d%29");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            retry_after_cap: Duration::from_secs(30),
            max_list_restarts: 3,
        };
        let b0 = p.backoff(0);
        let b3 = p.backoff(3);
        let b10 = p.backoff(10);
        assert!(b0 >= Duration::from_millis(100) && b0 <= Duration::from_millis(125));
        assert!(b3 >= Duration::from_millis(800));
        assert!(b10 <= Duration::from_millis(1250));
    }
}
