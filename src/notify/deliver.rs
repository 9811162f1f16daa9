//! HTTP delivery to Slack, webhooks and the SaaS: [`Deliverer`] is the thin shell that builds
//! one request, makes one attempt and reports a typed [`Outcome`] (classified by the pure
//! [`super::policy`]). Whoever owns the outbox (the `Dispatcher`) decides when to call it
//! again; tests drive that same loop.

use std::io::Read;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::group::Message;
use super::metrics::NotifyMetrics;
use super::policy::{DeliveryPolicy, Outcome, classify};
use super::signature;
use super::{saas, slack, webhook};
use crate::backoff;
use crate::config::target_url::is_loopback;
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
    pub policy: DeliveryPolicy,
}

impl DelivererConfig {
    pub fn new(cluster: impl Into<String>) -> Self {
        DelivererConfig {
            cluster: cluster.into(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            details_url: None,
            timeout: Duration::from_secs(30),
            policy: DeliveryPolicy::default(),
        }
    }
}

/// One request ready to send. Not `Debug`: headers hold the bearer key.
pub(crate) struct Prepared {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Metric label of what is sent.
    pub event: String,
}

/// Bounded bytes of a response body kept for the log.
const EXCERPT_BYTES: u64 = 512;

/// The HTTP shell. One ureq agent for all targets: TLS verification always on (Mozilla roots
/// compiled in), proxies from `HTTPS_PROXY`/`NO_PROXY`, redirects not followed (a webhook that
/// redirects would receive a GET without the body). Cheap to clone: the agents share their
/// connection pools.
#[derive(Clone)]
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
    pub(crate) fn prepare(
        &self,
        target: &Target,
        messages: &[Message],
        now: Timestamp,
    ) -> Prepared {
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

    pub(super) fn execute(&self, target: &Target, prepared: &Prepared, attempt: u32) -> Outcome {
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
                    backoff::random_unit(),
                )
            }
            Err(err) => classify_error(&err, attempt, policy, backoff::random_unit()),
        }
    }
}

pub(super) fn webhook_headers(
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
fn classify_error(err: &ureq::Error, attempt: u32, policy: &DeliveryPolicy, rng: f64) -> Outcome {
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
        after: policy.backoff(attempt, rng),
        reason,
    }
}

pub(super) fn log_outcome(target: &Target, id: &str, event: &str, attempt: u32, outcome: &Outcome) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn excerpts_are_printable() {
        assert_eq!(
            sanitize_excerpt(b"  no_service\n\r\x07x "),
            "no_service   x"
        );
        assert_eq!(sanitize_excerpt(&[0xff, b'a']), "\u{fffd}a");
    }
}
