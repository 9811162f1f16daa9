//! HTTP delivery to Slack, webhooks and the SaaS, and the retry policy around it.
//!
//! The policy is pure ([`classify`], [`backoff`], [`parse_retry_after`],
//! [`RetryPolicy::dispose`]) so it is table-tested; [`Deliverer`] is the thin shell that does
//! one HTTP attempt and reports a typed [`Outcome`]. Whoever owns the outbox decides when to
//! call it again; [`Deliverer::deliver_until`] is a small in-memory loop built from the same
//! pieces for `--once`-style use and for tests.
//!
//! Peers drop a message when the target fails (peers.md §1c); here nothing is dropped silently:
//! every message ends delivered, or dead-lettered with a reason and a counter.

use std::io::Read;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::group::Message;
use super::metrics::NotifyMetrics;
use super::signature;
use super::{saas, slack, webhook};
use crate::secret::{Secret, mask_target_url};

/// Where messages go. URLs and keys are [`Secret`]s: a Slack webhook URL *is* a credential.
#[derive(Debug, Clone)]
pub enum Target {
    /// `KIJO_NOTIFY_SLACK`
    Slack { url: Secret<String> },
    /// `KIJO_NOTIFY_WEBHOOK`, optionally signed with `KIJO_NOTIFY_WEBHOOK_SECRET`.
    Webhook {
        url: Secret<String>,
        secret: Option<Secret<String>>,
    },
    /// `KIJO_SAAS_ENDPOINT` + `KIJO_SAAS_API_KEY`.
    Saas {
        endpoint: Secret<String>,
        api_key: Secret<String>,
    },
}

impl Target {
    /// Metric label and log field.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Slack { .. } => "slack",
            Target::Webhook { .. } => "webhook",
            Target::Saas { .. } => "saas",
        }
    }

    fn base_url(&self) -> &str {
        match self {
            Target::Slack { url } | Target::Webhook { url, .. } => url.expose(),
            Target::Saas { endpoint, .. } => endpoint.expose(),
        }
    }

    /// Scheme and host only, safe for logs and errors.
    pub fn masked_url(&self) -> String {
        mask_target_url(self.base_url())
    }
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// 429/503 (after `Retry-After`, 1 s to 1 h), other 5xx, 408, timeouts and connection errors
    /// (after a jittered exponential backoff).
    Retry { after: Duration, reason: String },
    /// Any other answer (other 4xx, 3xx: redirects are not followed) or an unusable URL.
    /// Retrying would only repeat it; the message is dead-lettered and kept for inspection.
    Permanent { status: Option<u16>, reason: String },
    /// 401/403: the key or secret is wrong or revoked. Distinct so it can be shown in logs,
    /// `--dry-run`, readiness and `kijo_notify_auth_rejected`.
    AuthRejected { status: u16, reason: String },
}

/// One line for people: the test-message command, `--dry-run` and readiness detail.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Delivered => f.write_str("delivered"),
            Outcome::Retry { after, reason } => {
                write!(f, "failed, retrying in {}ms: {reason}", after.as_millis())
            }
            Outcome::Permanent { reason, .. } => write!(f, "rejected permanently: {reason}"),
            Outcome::AuthRejected { status, .. } => write!(
                f,
                "credentials rejected (HTTP {status}): check KIJO_SAAS_API_KEY, the webhook secret or the webhook URL"
            ),
        }
    }
}

/// Timing knobs of the retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First backoff ceiling; doubles per attempt.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
    /// Largest `Retry-After` honoured; a bigger one is cut to this.
    pub max_retry_after: Duration,
    /// A message still undelivered this long after it was created is dead-lettered
    /// (`KIJO_NOTIFY_MAX_AGE`).
    pub max_age: Duration,
    /// Wait after a rejected key: slow, so a wrong key is not hammered, but messages survive
    /// until someone fixes the key (within `max_age`).
    pub auth_retry: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(600),
            max_retry_after: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
            auth_retry: Duration::from_secs(3600),
        }
    }
}

/// What to do with a message after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Delivered,
    RetryAt(Timestamp),
    DeadLetter { reason: String },
}

impl RetryPolicy {
    /// Turns an attempt's outcome into the message's next state. `created_at` is when the
    /// message entered the outbox.
    pub fn dispose(&self, outcome: &Outcome, created_at: Timestamp, now: Timestamp) -> Disposition {
        let after = match outcome {
            Outcome::Delivered => return Disposition::Delivered,
            Outcome::Permanent { status, reason } => {
                let status = status.map_or_else(|| "no status".to_owned(), |s| format!("HTTP {s}"));
                return Disposition::DeadLetter {
                    reason: format!("permanent failure ({status}): {reason}"),
                };
            }
            Outcome::Retry { after, .. } => *after,
            Outcome::AuthRejected { .. } => self.auth_retry,
        };
        let age = now.duration_since(created_at).unsigned_abs();
        if age >= self.max_age {
            let last = match outcome {
                Outcome::Retry { reason, .. } => reason.clone(),
                Outcome::AuthRejected { status, .. } => {
                    format!("credentials rejected (HTTP {status})")
                }
                _ => String::new(),
            };
            return Disposition::DeadLetter {
                reason: format!(
                    "not delivered within the maximum age of {}s (KIJO_NOTIFY_MAX_AGE); last error: {last}",
                    self.max_age.as_secs()
                ),
            };
        }
        // A retry that would land past the maximum age becomes one last attempt at it.
        let deadline = created_at.checked_add(self.max_age).unwrap_or(now);
        let next = now.checked_add(after).unwrap_or(deadline).min(deadline);
        Disposition::RetryAt(next)
    }
}

/// Exponential backoff with full jitter: a uniformly random delay in
/// `[0, min(cap, base · 2^attempt))`, so many agents recovering from one Slack outage do not
/// retry in lockstep. `rng_value` is in `[0, 1)`; `attempt` starts at 0.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, rng_value: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(31));
    let ceiling = base.saturating_mul(factor).min(cap);
    ceiling.mul_f64(rng_value.clamp(0.0, 1.0))
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110). A date in the
/// past means "now".
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    let at = PARSER.parse_timestamp(value).ok()?;
    Some(at.duration_since(now).try_into().unwrap_or(Duration::ZERO))
}

/// A uniformly distributed value in `[0, 1)` from the OS RNG (ring is already linked).
fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits → an exactly representable fraction.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The shortest `Retry-After` we honour.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Classifies an HTTP answer. `excerpt` is a bounded, already-sanitized piece of the body.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    excerpt: &str,
    attempt: u32,
    policy: &RetryPolicy,
    now: Timestamp,
    rng_value: f64,
) -> Outcome {
    let reason = if excerpt.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {excerpt}")
    };
    match status {
        200..=299 => Outcome::Delivered,
        401 | 403 => Outcome::AuthRejected { status, reason },
        429 | 503 => {
            let after = retry_after
                .and_then(|v| parse_retry_after(v, now))
                // A floor, so a server answering "Retry-After: 0" cannot make us spin.
                .map(|d| d.clamp(MIN_RETRY_AFTER, policy.max_retry_after.max(MIN_RETRY_AFTER)))
                .unwrap_or_else(|| backoff(attempt, policy.base, policy.cap, rng_value));
            Outcome::Retry { after, reason }
        }
        408 | 500..=599 => Outcome::Retry {
            after: backoff(attempt, policy.base, policy.cap, rng_value),
            reason,
        },
        300..=399 => Outcome::Permanent {
            status: Some(status),
            reason: format!("{reason} (redirects are not followed: configure the final URL)"),
        },
        _ => Outcome::Permanent {
            status: Some(status),
            reason,
        },
    }
}

/// Checks a target URL without sending anything (`--dry-run`). `https://` is required;
/// `http://` is accepted for loopback hosts, and for other hosts only with
/// `allow_insecure_http` (`KIJO_NOTIFY_ALLOW_HTTP=true`, e.g. an in-cluster receiver behind a
/// service mesh). Errors show only the masked URL.
pub fn validate_target_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let masked = mask_target_url(url);
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "target url {masked} contains whitespace or control characters"
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "target url {masked} is not an absolute http(s) URL"
        ));
    };
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|_| format!("target url {masked} is not a valid URL"))?;
    let host = uri.host().unwrap_or_default();
    if host.is_empty() || rest.starts_with('/') {
        return Err(format!("target url {masked} has no host"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if is_loopback(host) || allow_insecure_http => Ok(()),
        "http" => Err(format!(
            "target url {masked} uses plain http to a non-loopback host: use https, or set KIJO_NOTIFY_ALLOW_HTTP=true to accept it"
        )),
        other => Err(format!(
            "target url {masked} has scheme {other:?}: use https"
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Static configuration of a [`Deliverer`].
#[derive(Debug, Clone)]
pub struct DelivererConfig {
    /// `KIJO_CLUSTER_NAME`, for SaaS bodies and test messages.
    pub cluster: String,
    pub agent_version: String,
    /// `KIJO_DETAILS_URL` template (`{cluster}`, `{namespace}`).
    pub details_url: Option<String>,
    /// Whole-request timeout of one attempt.
    pub timeout: Duration,
    pub policy: RetryPolicy,
}

impl DelivererConfig {
    pub fn new(cluster: impl Into<String>) -> Self {
        DelivererConfig {
            cluster: cluster.into(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            details_url: None,
            timeout: Duration::from_secs(30),
            policy: RetryPolicy::default(),
        }
    }
}

/// One request ready to send. Not `Debug`: headers hold the bearer key.
pub struct Prepared {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Metric label of what is sent.
    pub event: String,
}

/// The report of [`Deliverer::deliver_until`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: Vec<String>,
    /// (message id, reason)
    pub dead_lettered: Vec<(String, String)>,
    /// Still due a retry when the deadline passed.
    pub pending: Vec<String>,
}

/// Bounded bytes of a response body kept for the log.
const EXCERPT_BYTES: u64 = 512;

/// The HTTP shell. One ureq agent for all targets: TLS verification always on (Mozilla roots
/// compiled in), proxies from `HTTPS_PROXY`/`NO_PROXY`, redirects not followed (a webhook that
/// redirects would receive a GET without the body).
pub struct Deliverer {
    agent: ureq::Agent,
    /// Same settings without a proxy: loopback targets (the local demo, tests) must never be
    /// sent to an `HTTPS_PROXY`, which would reach its own loopback, not ours.
    direct: ureq::Agent,
    config: DelivererConfig,
    metrics: Option<NotifyMetrics>,
}

impl Deliverer {
    pub fn new(config: DelivererConfig, metrics: Option<NotifyMetrics>) -> Self {
        let builder = || {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(config.timeout))
                .timeout_connect(Some(config.timeout.min(Duration::from_secs(10))))
                .user_agent(format!("kijo-agent/{}", config.agent_version))
        };
        let agent: ureq::Agent = builder().build().into();
        let direct: ureq::Agent = builder().proxy(None).build().into();
        Deliverer {
            agent,
            direct,
            config,
            metrics,
        }
    }

    pub fn config(&self) -> &DelivererConfig {
        &self.config
    }

    /// Builds the request for `messages` to `target` (pure apart from `now` for signatures).
    /// Slack and webhooks take one message; the SaaS takes a batch.
    pub fn prepare(&self, target: &Target, messages: &[Message], now: Timestamp) -> Prepared {
        let event = match messages {
            [one] => one.kind.event_name().to_owned(),
            _ => "batch".to_owned(),
        };
        let key = saas::batch_id(messages);
        match target {
            Target::Slack { url } => {
                let body = messages
                    .first()
                    .map(|m| slack::render(m, self.config.details_url.as_deref()))
                    .unwrap_or_default();
                Prepared {
                    url: url.expose().clone(),
                    headers: vec![
                        ("Content-Type", "application/json".to_owned()),
                        ("Idempotency-Key", key),
                    ],
                    body: serde_json::to_vec(&body).expect("slack body serializes"),
                    event,
                }
            }
            Target::Webhook { url, secret } => {
                let body = messages.first().map(webhook::render).unwrap_or_default();
                let headers = webhook_headers(secret.as_ref(), &key, &event, &body, now);
                Prepared {
                    url: url.expose().clone(),
                    headers,
                    body,
                    event,
                }
            }
            Target::Saas { endpoint, api_key } => Prepared {
                url: saas::url(endpoint.expose(), saas::EVENTS_PATH),
                headers: vec![
                    ("Content-Type", "application/json".to_owned()),
                    ("Authorization", format!("Bearer {}", api_key.expose())),
                    ("Idempotency-Key", key),
                ],
                body: saas::events_body(&self.config.agent_version, &self.config.cluster, messages),
                event,
            },
        }
    }

    /// One attempt to deliver one message. `attempt` (0 for the first) sizes the backoff.
    pub fn send(&self, target: &Target, message: &Message, attempt: u32) -> Outcome {
        self.send_batch(target, std::slice::from_ref(message), attempt)
    }

    /// One attempt to deliver several messages in one SaaS request. For Slack and webhooks,
    /// which take one message per request, only a single message is accepted.
    pub fn send_batch(&self, target: &Target, messages: &[Message], attempt: u32) -> Outcome {
        if messages.is_empty() {
            return Outcome::Delivered;
        }
        if messages.len() > 1 && !matches!(target, Target::Saas { .. }) {
            return Outcome::Permanent {
                status: None,
                reason: format!("{} takes one message per request", target.name()),
            };
        }
        let prepared = self.prepare(target, messages, Timestamp::now());
        let outcome = self.execute(target, &prepared, attempt);
        for m in messages {
            log_outcome(target, &m.id, m.kind.event_name(), attempt, &outcome);
        }
        outcome
    }

    /// `POST /v1/heartbeat` to the SaaS (agent version and cluster); also the SaaS "test
    /// message", since it proves the key works without creating an event.
    pub fn heartbeat(&self, target: &Target, attempt: u32) -> Outcome {
        let Target::Saas { endpoint, api_key } = target else {
            return Outcome::Permanent {
                status: None,
                reason: "heartbeats go to the SaaS only".to_owned(),
            };
        };
        let prepared = Prepared {
            url: saas::url(endpoint.expose(), saas::HEARTBEAT_PATH),
            headers: vec![
                ("Content-Type", "application/json".to_owned()),
                ("Authorization", format!("Bearer {}", api_key.expose())),
            ],
            body: saas::heartbeat_body(
                &self.config.agent_version,
                &self.config.cluster,
                Timestamp::now(),
            ),
            event: "heartbeat".to_owned(),
        };
        self.execute(target, &prepared, attempt)
    }

    /// Sends one clearly-marked test message to `target` (a heartbeat for the SaaS).
    pub fn send_test(&self, target: &Target) -> Outcome {
        let now = Timestamp::now();
        let id = super::group::message_id([format!("test-{}", now.as_nanosecond()).as_str()]);
        let prepared = match target {
            Target::Slack { url } => Prepared {
                url: url.expose().clone(),
                headers: vec![("Content-Type", "application/json".to_owned())],
                body: serde_json::to_vec(&slack::render_test(&self.config.cluster, now))
                    .expect("slack body serializes"),
                event: "test".to_owned(),
            },
            Target::Webhook { url, secret } => {
                let body = webhook::render_test(&self.config.cluster, now, &id);
                Prepared {
                    url: url.expose().clone(),
                    headers: webhook_headers(secret.as_ref(), &id, "test", &body, now),
                    body,
                    event: "test".to_owned(),
                }
            }
            Target::Saas { .. } => return self.heartbeat(target, 0),
        };
        let outcome = self.execute(target, &prepared, 0);
        log_outcome(target, &id, "test", 0, &outcome);
        outcome
    }

    fn execute(&self, target: &Target, prepared: &Prepared, attempt: u32) -> Outcome {
        let started = Instant::now();
        let outcome = self.attempt(prepared, attempt);
        if let Some(metrics) = &self.metrics {
            metrics.record(
                target.name(),
                &prepared.event,
                &outcome,
                started.elapsed().as_secs_f64(),
            );
        }
        outcome
    }

    fn attempt(&self, prepared: &Prepared, attempt: u32) -> Outcome {
        let policy = &self.config.policy;
        let loopback = prepared
            .url
            .parse::<ureq::http::Uri>()
            .ok()
            .and_then(|u| u.host().map(is_loopback))
            .unwrap_or(false);
        let agent = if loopback { &self.direct } else { &self.agent };
        let mut request = agent.post(&prepared.url);
        for (name, value) in &prepared.headers {
            request = request.header(*name, value);
        }
        match request.send(&prepared.body[..]) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let excerpt = if (200..300).contains(&status) {
                    // Drain so the connection can be pooled.
                    let _ = std::io::copy(
                        &mut response.body_mut().as_reader().take(64 * 1024),
                        &mut std::io::sink(),
                    );
                    String::new()
                } else {
                    read_excerpt(response.body_mut())
                };
                classify(
                    status,
                    retry_after.as_deref(),
                    &excerpt,
                    attempt,
                    policy,
                    Timestamp::now(),
                    random_unit(),
                )
            }
            Err(err) => classify_error(&err, attempt, policy, random_unit()),
        }
    }

    /// Delivers `messages` to `target`, retrying per the policy, until each is delivered or
    /// dead-lettered or `deadline` passes. In memory only: the outbox owner persists state;
    /// this serves `--once` (bounded wait) and tests. Message age counts from the call.
    pub fn deliver_until(
        &self,
        target: &Target,
        messages: &[Message],
        deadline: Instant,
    ) -> DeliveryReport {
        struct Pending {
            index: usize,
            attempt: u32,
            due: Instant,
        }
        let created = Timestamp::now();
        let mut report = DeliveryReport::default();
        let start = Instant::now();
        let mut pending: Vec<Pending> = (0..messages.len())
            .map(|index| Pending {
                index,
                attempt: 0,
                due: start,
            })
            .collect();
        while !pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let mut still = Vec::with_capacity(pending.len());
            for mut p in pending {
                if p.due > now || Instant::now() >= deadline {
                    still.push(p);
                    continue;
                }
                let message = &messages[p.index];
                let outcome = self.send(target, message, p.attempt);
                let ts_now = Timestamp::now();
                match self.config.policy.dispose(&outcome, created, ts_now) {
                    Disposition::Delivered => report.delivered.push(message.id.clone()),
                    Disposition::DeadLetter { reason } => {
                        log::error!(
                            notify_target = target.name(),
                            message_id = message.id.as_str(),
                            reason = reason.as_str();
                            "notification dead-lettered"
                        );
                        if let Some(m) = &self.metrics {
                            m.record_dead_letter(target.name(), message.kind.event_name());
                        }
                        report.dead_lettered.push((message.id.clone(), reason));
                    }
                    Disposition::RetryAt(at) => {
                        let wait = at
                            .duration_since(ts_now)
                            .try_into()
                            .unwrap_or(Duration::ZERO);
                        p.attempt += 1;
                        p.due = Instant::now() + wait;
                        still.push(p);
                    }
                }
            }
            pending = still;
            if let Some(next) = pending.iter().map(|p| p.due).min() {
                let wake = next.min(deadline);
                let now = Instant::now();
                if wake > now {
                    std::thread::sleep(wake - now);
                }
            }
        }
        report.pending = pending
            .into_iter()
            .map(|p| messages[p.index].id.clone())
            .collect();
        report
    }
}

fn webhook_headers(
    secret: Option<&Secret<String>>,
    key: &str,
    event: &str,
    body: &[u8],
    now: Timestamp,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("Content-Type", "application/json".to_owned()),
        ("Idempotency-Key", key.to_owned()),
        ("X-Kijo-Event", event.to_owned()),
    ];
    if let Some(secret) = secret {
        let ts = now.as_second();
        headers.push((signature::TIMESTAMP_HEADER, ts.to_string()));
        headers.push((
            signature::SIGNATURE_HEADER,
            signature::sign(secret.expose().as_bytes(), ts, body),
        ));
    }
    headers
}

/// A short, printable piece of an error body for the log. Never the URL: only the body.
fn read_excerpt(body: &mut ureq::Body) -> String {
    let mut buf = Vec::new();
    let _ = body.as_reader().take(EXCERPT_BYTES).read_to_end(&mut buf);
    sanitize_excerpt(&buf)
}

fn sanitize_excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Transport errors. Their `Display` can carry the URL (ureq's `BadUri`) or a proxy URL with
/// credentials, so reasons are built from the variant only.
fn classify_error(err: &ureq::Error, attempt: u32, policy: &RetryPolicy, rng: f64) -> Outcome {
    use ureq::Error as E;
    let permanent = |reason: &str| Outcome::Permanent {
        status: None,
        reason: reason.to_owned(),
    };
    let reason = match err {
        E::BadUri(_) | E::Http(_) => return permanent("invalid target url"),
        E::RequireHttpsOnly(_) => return permanent("target url must be https"),
        E::InvalidProxyUrl => return permanent("invalid proxy url in HTTPS_PROXY/ALL_PROXY"),
        E::Timeout(t) => format!("timed out ({t})"),
        E::HostNotFound => "host not found".to_owned(),
        E::ConnectionFailed => "connection failed".to_owned(),
        E::Io(io) => format!("connection error: {}", io.kind()),
        E::Tls(what) => format!("tls error: {what}"),
        E::Rustls(e) => format!("tls error: {e}"),
        E::ConnectProxyFailed(_) => "proxy connect failed".to_owned(),
        E::TooManyRedirects | E::RedirectFailed => {
            return permanent("target redirects: configure the final URL");
        }
        _ => "request failed".to_owned(),
    };
    Outcome::Retry {
        after: backoff(attempt, policy.base, policy.cap, rng),
        reason,
    }
}

fn log_outcome(target: &Target, id: &str, event: &str, attempt: u32, outcome: &Outcome) {
    let url = target.masked_url();
    match outcome {
        Outcome::Delivered => log::info!(
            notify_target = target.name(),
            url = url.as_str(),
            message_id = id,
            event = event,
            attempt = attempt;
            "notification delivered"
        ),
        Outcome::Retry { after, reason } => log::warn!(
            notify_target = target.name(),
            url = url.as_str(),
            message_id = id,
            event = event,
            attempt = attempt,
            retry_in_ms = after.as_millis() as u64,
            reason = reason.as_str();
            "notification delivery failed, will retry"
        ),
        Outcome::Permanent { status, reason } => log::error!(
            notify_target = target.name(),
            url = url.as_str(),
            message_id = id,
            event = event,
            status = status.unwrap_or(0),
            reason = reason.as_str();
            "notification rejected permanently"
        ),
        Outcome::AuthRejected { status, reason } => log::error!(
            notify_target = target.name(),
            url = url.as_str(),
            message_id = id,
            event = event,
            status = *status,
            reason = reason.as_str();
            "notification target rejected our credentials: check the key or secret"
        ),
    }
}

/// Sends a test message to every configured target and returns each outcome, for the
/// documented "send a test message" command. Slack gets a "🧪 kijo-agent test message",
/// webhooks a README-shaped body with `"event": "test"` (signed if a secret is set), the SaaS
/// a heartbeat.
pub fn send_test_message(
    deliverer: &Deliverer,
    targets: &[Target],
) -> Vec<(&'static str, String, Outcome)> {
    targets
        .iter()
        .map(|t| (t.name(), t.masked_url(), deliverer.send_test(t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_table() {
        let base = secs(5);
        let cap = secs(600);
        let cases = [
            (0, 0.0, Duration::ZERO),
            (0, 0.5, Duration::from_millis(2500)),
            (0, 1.0, secs(5)),
            (1, 1.0, secs(10)),
            (3, 0.5, secs(20)),
            (6, 1.0, secs(320)),
            (7, 1.0, secs(600)),
            (40, 1.0, secs(600)),
            (u32::MAX, 0.25, secs(150)),
            (2, 7.0, secs(20)),
            (2, -1.0, Duration::ZERO),
        ];
        for (attempt, rng, want) in cases {
            assert_eq!(
                backoff(attempt, base, cap, rng),
                want,
                "attempt {attempt} rng {rng}"
            );
        }
    }

    #[test]
    fn retry_after_parsing() {
        let now: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let cases = [
            ("120", Some(secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            ("Fri, 27 Nov 2026 10:00:30 GMT", Some(secs(30))),
            ("Fri, 27 Nov 2026 09:00:00 GMT", Some(Duration::ZERO)),
            ("-5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), want, "value {value:?}");
        }
    }

    #[test]
    fn classify_table() {
        let policy = RetryPolicy::default();
        let now: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let retry = |s| Outcome::Retry {
            after: s,
            reason: String::new(),
        };
        let strip = |o: Outcome| match o {
            Outcome::Retry { after, .. } => retry(after),
            Outcome::Permanent { status, .. } => Outcome::Permanent {
                status,
                reason: String::new(),
            },
            Outcome::AuthRejected { status, .. } => Outcome::AuthRejected {
                status,
                reason: String::new(),
            },
            d => d,
        };
        let cases: [(u16, Option<&str>, Outcome); 13] = [
            (200, None, Outcome::Delivered),
            (204, None, Outcome::Delivered),
            (429, Some("7"), retry(secs(7))),
            (503, Some("Fri, 27 Nov 2026 10:01:00 GMT"), retry(secs(60))),
            (429, Some("999999"), retry(secs(3600))),
            (429, Some("0"), retry(secs(1))),
            // No usable Retry-After: backoff for attempt 1 at rng 0.5 = 5 s.
            (429, Some("later"), retry(secs(5))),
            (500, None, retry(secs(5))),
            (408, None, retry(secs(5))),
            (
                400,
                None,
                Outcome::Permanent {
                    status: Some(400),
                    reason: String::new(),
                },
            ),
            (
                404,
                None,
                Outcome::Permanent {
                    status: Some(404),
                    reason: String::new(),
                },
            ),
            (
                301,
                None,
                Outcome::Permanent {
                    status: Some(301),
                    reason: String::new(),
                },
            ),
            (
                401,
                None,
                Outcome::AuthRejected {
                    status: 401,
                    reason: String::new(),
                },
            ),
        ];
        for (status, ra, want) in cases {
            assert_eq!(
                strip(classify(status, ra, "", 1, &policy, now, 0.5)),
                want,
                "status {status}"
            );
        }
        assert!(matches!(
            classify(403, None, "invalid_token", 0, &policy, now, 0.5),
            Outcome::AuthRejected { status: 403, reason } if reason == "HTTP 403: invalid_token"
        ));
    }

    #[test]
    fn dispose_table() {
        let policy = RetryPolicy::default();
        let created: Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let retry = Outcome::Retry {
            after: secs(60),
            reason: "HTTP 503".to_owned(),
        };
        let auth = Outcome::AuthRejected {
            status: 401,
            reason: String::new(),
        };
        let perm = Outcome::Permanent {
            status: Some(400),
            reason: "bad".to_owned(),
        };
        assert_eq!(
            policy.dispose(&Outcome::Delivered, created, at("2026-11-27T01:00:00Z")),
            Disposition::Delivered
        );
        assert_eq!(
            policy.dispose(&retry, created, at("2026-11-27T01:00:00Z")),
            Disposition::RetryAt(at("2026-11-27T01:01:00Z"))
        );
        assert_eq!(
            policy.dispose(&auth, created, at("2026-11-27T01:00:00Z")),
            Disposition::RetryAt(at("2026-11-27T02:00:00Z"))
        );
        let dead = |d: Disposition| match d {
            Disposition::DeadLetter { reason } => reason,
            other => panic!("expected dead letter, got {other:?}"),
        };
        assert!(
            dead(policy.dispose(&perm, created, at("2026-11-27T00:00:01Z"))).contains("HTTP 400")
        );
        // A retry that would land past the maximum age is one last attempt at it…
        assert_eq!(
            policy.dispose(&auth, created, at("2026-11-27T23:30:00Z")),
            Disposition::RetryAt(at("2026-11-28T00:00:00Z"))
        );
        // …after which the message is dead-lettered with its last error.
        assert!(
            dead(policy.dispose(&retry, created, at("2026-11-28T00:00:00Z")))
                .contains("KIJO_NOTIFY_MAX_AGE")
        );
        assert!(dead(policy.dispose(&auth, created, at("2026-11-28T00:00:01Z"))).contains("401"));
    }

    #[test]
    fn target_url_validation() {
        let cases = [
            ("https://hooks.slack.com/services/T/B/X", false, true),
            ("http://127.0.0.1:9000/hook", false, true),
            ("http://localhost/hook", false, true),
            ("http://[::1]:8080/", false, true),
            ("http://receiver.monitoring.svc:8080/hook", false, false),
            ("http://receiver.monitoring.svc:8080/hook", true, true),
            ("ftp://example.com/x", true, false),
            ("hooks.slack.com/services/T/B/X", false, false),
            ("https:///path", false, false),
            ("https://exa mple.com/", false, false),
            ("", false, false),
        ];
        for (url, allow, ok) in cases {
            let got = validate_target_url(url, allow);
            assert_eq!(got.is_ok(), ok, "url {url:?} allow {allow}: {got:?}");
        }
        let err = validate_target_url("http://example.com/services/SECRET123", false).unwrap_err();
        assert!(!err.contains("SECRET123"), "{err}");
        assert!(err.contains("KIJO_NOTIFY_ALLOW_HTTP"), "{err}");
    }

    #[test]
    fn targets_never_show_their_secrets() {
        let targets = [
            Target::Slack {
                url: Secret::new("https://hooks.slack.com/services/T/B/TOPSECRET".to_owned()),
            },
            Target::Webhook {
                url: Secret::new("https://example.com/TOPSECRET".to_owned()),
                secret: Some(Secret::new("TOPSECRET".to_owned())),
            },
            Target::Saas {
                endpoint: Secret::new("https://api.kijo.io".to_owned()),
                api_key: Secret::new("TOPSECRET".to_owned()),
            },
        ];
        for t in &targets {
            let shown = format!("{t:?} {}", t.masked_url());
            assert!(!shown.contains("TOPSECRET"), "{shown}");
        }
        assert_eq!(targets[0].masked_url(), "https://hooks.slack.com/***");
    }

    #[test]
    fn outcomes_read_well() {
        let cases = [
            (Outcome::Delivered, "delivered"),
            (
                Outcome::Retry {
                    after: Duration::from_millis(1500),
                    reason: "HTTP 503".to_owned(),
                },
                "failed, retrying in 1500ms: HTTP 503",
            ),
            (
                Outcome::Permanent {
                    status: Some(404),
                    reason: "HTTP 404: no_service".to_owned(),
                },
                "rejected permanently: HTTP 404: no_service",
            ),
        ];
        for (outcome, want) in cases {
            assert_eq!(outcome.to_string(), want);
        }
        let auth = Outcome::AuthRejected {
            status: 401,
            reason: String::new(),
        };
        assert!(
            auth.to_string()
                .starts_with("credentials rejected (HTTP 401)")
        );
    }

    #[test]
    fn excerpts_are_printable() {
        assert_eq!(
            sanitize_excerpt(b"  no_service\n\r\x07x "),
            "no_service   x"
        );
        assert_eq!(sanitize_excerpt(&[0xff, b'a']), "\u{fffd}a");
    }
}
