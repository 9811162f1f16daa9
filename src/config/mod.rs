//! Configuration from `KIJO_*` environment variables and matching command-line flags.
//!
//! Two phases, as in ripgrep and cargo-deny: [`RawConfig`] collects strings (a flag beats its
//! variable), then [`RawConfig::validate`] turns them into a typed [`Config`] and reports *every*
//! problem at once, each naming the variable or flag that caused it. A pod that crash-loops on a
//! bad value should tell the operator everything that is wrong in one look at its log, not one
//! problem per restart.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

mod duration;
mod election;
pub(crate) mod target_url;

pub(crate) use election::{Election, LeaderConfig};

use duration::{Bounds, parse_duration};
use election::{check_lease_name, parse_lease_duration};

use crate::logging::LogFormat;
use crate::secret::{Secret, mask_database_url, mask_target_url};
use crate::severity::Severity;
use crate::store::DatabaseTarget;

/// Where the embedded store lives when `KIJO_DATABASE_URL` is unset: the working directory, which
/// the Kubernetes manifests point at a writable volume.
pub(crate) const DEFAULT_SQLITE_PATH: &str = "kijo-agent.db";

/// One configurable setting: its flag, its variable, its default and its help line. The table
/// below is the single source for parsing, `--help` and the README's configuration table.
#[derive(Debug)]
pub(crate) struct Setting {
    pub(crate) flag: &'static str,
    pub(crate) env: &'static str,
    pub(crate) default: &'static str,
    pub(crate) help: &'static str,
    /// Secret values are never echoed back in error messages.
    pub(crate) secret: bool,
}

macro_rules! settings {
    ($($id:ident: $flag:literal, $env:literal, $default:literal, $secret:literal, $help:literal;)*) => {
        /// Identifies a setting without string comparisons in the validation code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub(crate) enum SettingId { $($id),* }

        pub(crate) const SETTINGS: &[(SettingId, Setting)] = &[
            $((SettingId::$id, Setting { flag: $flag, env: $env, default: $default, help: $help, secret: $secret }),)*
        ];
    };
}

settings! {
    DatabaseUrl: "database-url", "KIJO_DATABASE_URL", "sqlite:kijo-agent.db", true,
        "postgres://USER:PASS@HOST:PORT/DB[?sslmode=require&sslrootcert=FILE] or sqlite:PATH";
    PollInterval: "poll-interval", "KIJO_POLL_INTERVAL", "5m", false,
        "how often to read Trivy Operator reports (30s, 5m, 1h)";
    Namespaces: "namespaces", "KIJO_NAMESPACES", "all", false,
        "comma-separated namespaces to read, or all";
    ClusterName: "cluster-name", "KIJO_CLUSTER_NAME", "hostname", false,
        "human-readable cluster name used in the store and in messages";
    NotifySlack: "notify-slack", "KIJO_NOTIFY_SLACK", "-", true,
        "Slack incoming webhook URL";
    NotifyWebhook: "notify-webhook", "KIJO_NOTIFY_WEBHOOK", "-", true,
        "generic webhook URL (JSON POST)";
    NotifyWebhookSecret: "notify-webhook-secret", "KIJO_NOTIFY_WEBHOOK_SECRET", "-", true,
        "key for the HMAC-SHA256 signature of webhook bodies";
    NotifySeverity: "notify-severity", "KIJO_NOTIFY_SEVERITY", "CRITICAL", false,
        "minimum severity that notifies (CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN)";
    NotifyWorkloadRemoved: "notify-workload-removed", "KIJO_NOTIFY_WORKLOAD_REMOVED", "false", false,
        "also notify when a workload with findings disappears (true or false)";
    NotifyMaxAge: "notify-max-age", "KIJO_NOTIFY_MAX_AGE", "24h", false,
        "dead-letter a message still undelivered this long after it was created (at least 1m)";
    NotifyBatchWindow: "notify-batch-window", "KIJO_NOTIFY_BATCH_WINDOW", "10m", false,
        "how long a target's first queued change waits for more of the same scan wave before its messages go out (0: at once; below KIJO_NOTIFY_MAX_AGE)";
    NotifyAllowHttp: "notify-allow-http", "KIJO_NOTIFY_ALLOW_HTTP", "false", false,
        "accept plain http:// target URLs to non-loopback hosts (true or false)";
    NotifyRetryBase: "notify-retry-base", "KIJO_NOTIFY_RETRY_BASE", "5s", false,
        "first retry backoff ceiling, doubled per attempt up to 10m (tests and the demo use 1s)";
    NotifyOnceWait: "notify-once-wait", "KIJO_NOTIFY_ONCE_WAIT", "30s", false,
        "with --once: how long to keep delivering the cycle's messages before exiting";
    DetailsUrl: "details-url", "KIJO_DETAILS_URL", "-", false,
        "\"View details\" link template; {cluster} and {namespace} are replaced";
    SaasEndpoint: "saas-endpoint", "KIJO_SAAS_ENDPOINT", "-", false,
        "Kijo SaaS API endpoint";
    SaasApiKey: "saas-api-key", "KIJO_SAAS_API_KEY", "-", true,
        "API key for the Kijo SaaS";
    LogFormat: "log-format", "KIJO_LOG_FORMAT", "json", false,
        "log format: json or text";
    LogLevel: "log-level", "KIJO_LOG_LEVEL", "info", false,
        "log level: error, warn, info, debug, trace";
    HealthAddr: "health-addr", "KIJO_HEALTH_ADDR", ":8080", false,
        "address of the health and metrics server";
    LeaderElection: "leader-election", "KIJO_LEADER_ELECTION", "auto", false,
        "Lease leader election for replicas > 1: auto (on in-cluster, off with a kubeconfig), true, false";
    LeaseName: "lease-name", "KIJO_LEASE_NAME", "kijo-agent", false,
        "name of the coordination.k8s.io/v1 Lease used for leader election";
    LeaseNamespace: "lease-namespace", "KIJO_LEASE_NAMESPACE", "the pod's namespace, else default", false,
        "namespace of the Lease (in-cluster: the service account's namespace, else $POD_NAMESPACE)";
    LeaseDuration: "lease-duration", "KIJO_LEASE_DURATION", "15s", false,
        "how long a leader's Lease lasts without renewal; a standby takes over after it";
    Kubeconfig: "kubeconfig", "KIJO_KUBECONFIG", "in-cluster, else $KUBECONFIG or ~/.kube/config", false,
        "kubeconfig file to use instead of the in-cluster service account";
    KubeContext: "context", "KIJO_KUBE_CONTEXT", "current-context", false,
        "kubeconfig context to use";
}

impl SettingId {
    pub(crate) fn setting(self) -> &'static Setting {
        &SETTINGS
            .iter()
            .find(|(k, _)| *k == self)
            .expect("every key has a setting")
            .1
    }
}

/// What the process was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The service: poll, notify and serve health until a signal arrives.
    #[default]
    Run,
    /// One poll cycle, then exit with its result.
    Once,
    /// Check everything checkable without side effects and print a checklist.
    DryRun,
    /// Print recent lifecycle events and open findings from the store.
    History,
    /// Send a test message to every configured notification target.
    NotifyTest,
    Help,
    Version,
}

/// Where a raw value came from, so an error can name what the user actually typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Env,
    Flag,
}

/// Unvalidated strings, gathered from the environment and the command line.
#[derive(Debug, Default)]
pub struct RawConfig {
    values: BTreeMap<SettingId, (String, Source)>,
    mode: Mode,
    problems: Vec<Problem>,
}

/// The value is not shown: it may be a secret, and it cannot be printed faithfully anyway.
fn not_utf8(culprit: String) -> Problem {
    Problem {
        culprit,
        message: "is not valid UTF-8; set it to a UTF-8 value (or unset it for the default)".into(),
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable or flag as the user wrote it, with the value (masked when secret).
    pub culprit: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.culprit, self.message)
    }
}

/// The validated configuration. Secrets stay wrapped until the one place that uses them.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub(crate) database: DatabaseTarget,
    pub(crate) poll_interval: Duration,
    /// Empty means every namespace.
    pub(crate) namespaces: Vec<String>,
    pub(crate) cluster_name: String,
    pub(crate) notify_slack: Option<Secret<String>>,
    pub(crate) notify_webhook: Option<Secret<String>>,
    pub(crate) notify_webhook_secret: Option<Secret<String>>,
    pub(crate) notify_severity: Severity,
    pub(crate) notify_workload_removed: bool,
    pub(crate) notify_max_age: Duration,
    pub(crate) notify_batch_window: Duration,
    pub(crate) notify_allow_http: bool,
    pub(crate) notify_retry_base: Duration,
    pub(crate) notify_once_wait: Duration,
    /// `KIJO_DETAILS_URL` template.
    pub(crate) details_url: Option<String>,
    pub(crate) saas_endpoint: Option<String>,
    pub(crate) saas_api_key: Option<Secret<String>>,
    pub log_format: LogFormat,
    pub log_level: log::LevelFilter,
    pub(crate) health_addr: SocketAddr,
    /// Leader election as configured; [`crate::leader::Settings::resolve`] turns it into
    /// what the process does.
    pub(crate) leader: LeaderConfig,
    pub(crate) kubeconfig: Option<PathBuf>,
    pub(crate) kube_context: Option<String>,
}

impl RawConfig {
    /// Reads the process environment and arguments.
    pub fn from_process() -> RawConfig {
        RawConfig::from_os_parts(std::env::vars_os(), std::env::args_os().skip(1))
    }

    /// Builds a raw configuration from explicit variables and arguments.
    #[cfg(test)]
    pub(crate) fn from_parts<E, A>(env: E, args: A) -> RawConfig
    where
        E: IntoIterator<Item = (String, String)>,
        A: IntoIterator<Item = OsString>,
    {
        RawConfig::from_os_parts(
            env.into_iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
            args,
        )
    }

    /// As the operating system hands them over. A setting whose value is not valid UTF-8 is a
    /// problem naming the variable: dropping it would silently fall back to the default (a
    /// bad `KIJO_DATABASE_URL` would become a fresh embedded database).
    fn from_os_parts<E, A>(env: E, args: A) -> RawConfig
    where
        E: IntoIterator<Item = (OsString, OsString)>,
        A: IntoIterator<Item = OsString>,
    {
        let mut raw = RawConfig::default();
        for (name, value) in env {
            let Some((key, setting)) = SETTINGS.iter().find(|(_, s)| name == s.env) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    raw.values.insert(*key, (value, Source::Env));
                }
                Err(_) => raw.problems.push(not_utf8(setting.env.to_owned())),
            }
        }
        raw.parse_args(args);
        raw
    }

    fn parse_args<A: IntoIterator<Item = OsString>>(&mut self, args: A) {
        use lexopt::Arg;
        let mut parser = lexopt::Parser::from_args(args);
        loop {
            let arg = match parser.next() {
                Ok(Some(arg)) => arg,
                Ok(None) => break,
                Err(err) => {
                    self.problems.push(Problem {
                        culprit: "command line".into(),
                        message: err.to_string(),
                    });
                    break;
                }
            };
            match arg {
                Arg::Long("help") | Arg::Short('h') => self.mode = Mode::Help,
                Arg::Long("version") | Arg::Short('V') => self.mode = Mode::Version,
                Arg::Long("once") => self.set_mode(Mode::Once, "--once"),
                Arg::Long("dry-run") => self.set_mode(Mode::DryRun, "--dry-run"),
                Arg::Long(name) => {
                    let name = name.to_owned();
                    let Some((key, _)) = SETTINGS.iter().find(|(_, s)| s.flag == name) else {
                        self.problems.push(Problem {
                            culprit: format!("--{name}"),
                            message: "unknown flag; see --help".into(),
                        });
                        continue;
                    };
                    match parser.value().map(OsString::into_string) {
                        Ok(Ok(value)) => {
                            self.values.insert(*key, (value, Source::Flag));
                        }
                        Ok(Err(_)) => self.problems.push(not_utf8(format!("--{name}"))),
                        Err(_) => self.problems.push(Problem {
                            culprit: format!("--{name}"),
                            message: "needs a value".into(),
                        }),
                    }
                }
                Arg::Value(value) if value == "history" && self.mode == Mode::Run => {
                    self.mode = Mode::History
                }
                Arg::Value(value) if value == "notify-test" && self.mode == Mode::Run => {
                    self.mode = Mode::NotifyTest
                }
                Arg::Value(value) => self.problems.push(Problem {
                    culprit: value.to_string_lossy().into_owned(),
                    message: "unexpected argument; see --help".into(),
                }),
                Arg::Short(c) => self.problems.push(Problem {
                    culprit: format!("-{c}"),
                    message: "unexpected argument; see --help".into(),
                }),
            }
        }
    }

    fn set_mode(&mut self, mode: Mode, flag: &str) {
        if matches!(self.mode, Mode::Help | Mode::Version) {
            return;
        }
        if self.mode != Mode::Run && self.mode != mode {
            self.problems.push(Problem {
                culprit: flag.into(),
                message: "cannot be combined with --once or --dry-run".into(),
            });
        }
        self.mode = mode;
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Checks every value and returns the typed configuration, or every problem found.
    pub fn validate(self) -> Result<Config, Vec<Problem>> {
        let mut v = Validator {
            raw: &self,
            problems: self.problems.clone(),
        };
        let database = v.database();
        let poll_interval = v.parse(SettingId::PollInterval, parse_interval);
        let namespaces = v.parse(SettingId::Namespaces, parse_namespaces);
        let cluster_name = v.cluster_name();
        let notify_allow_http = v.parse(SettingId::NotifyAllowHttp, parse_bool);
        let allow_http = notify_allow_http.unwrap_or(false);
        let notify_slack = v.url(SettingId::NotifySlack, allow_http);
        let notify_webhook = v.url(SettingId::NotifyWebhook, allow_http);
        let notify_webhook_secret = v.value(SettingId::NotifyWebhookSecret).map(Secret::new);
        let notify_severity = v.parse(SettingId::NotifySeverity, |s| {
            s.parse::<Severity>().map_err(|e| e.to_string())
        });
        let notify_workload_removed = v.parse(SettingId::NotifyWorkloadRemoved, parse_bool);
        let notify_max_age = v.parse(SettingId::NotifyMaxAge, |s| {
            parse_duration(s, Bounds::at_least(Duration::from_secs(60)))
        });
        let notify_batch_window = v.parse(SettingId::NotifyBatchWindow, |s| {
            if s.trim() == "0" || s.trim() == "0s" {
                return Ok(Duration::ZERO);
            }
            parse_interval(s)
        });
        // The max age says how old a message may get; a window as long would make every held
        // change that old before its first attempt.
        if let (Some(window), Some(max_age)) = (notify_batch_window, notify_max_age)
            && window >= max_age
        {
            v.problem(
                SettingId::NotifyBatchWindow,
                format!(
                    "must be shorter than {}: a change held that long would be older than a message may get",
                    v.culprit(SettingId::NotifyMaxAge)
                ),
            );
        }
        let notify_retry_base = v.parse(SettingId::NotifyRetryBase, |s| {
            parse_duration(
                s,
                Bounds {
                    min: Duration::from_secs(1),
                    max: Duration::from_secs(600),
                },
            )
        });
        let notify_once_wait = v.parse(SettingId::NotifyOnceWait, |s| {
            if s.trim() == "0" || s.trim() == "0s" {
                return Ok(Duration::ZERO);
            }
            parse_interval(s)
        });
        let details_url = v.details_url();
        let saas_endpoint = v
            .url(SettingId::SaasEndpoint, allow_http)
            .map(|u| u.expose().clone());
        let saas_api_key = v.value(SettingId::SaasApiKey).map(Secret::new);
        v.required_together(
            (SettingId::SaasEndpoint, saas_endpoint.is_some()),
            (SettingId::SaasApiKey, saas_api_key.is_some()),
        );
        if notify_webhook_secret.is_some() && notify_webhook.is_none() {
            v.problem_without_value(
                SettingId::NotifyWebhook,
                "is required when KIJO_NOTIFY_WEBHOOK_SECRET is set",
            );
        }
        let log_format = v.parse(SettingId::LogFormat, parse_log_format);
        let log_level = v.parse(SettingId::LogLevel, parse_log_level);
        let health_addr = v.parse(SettingId::HealthAddr, parse_listen_addr);
        let leader = v.leader();
        let kubeconfig = v.value(SettingId::Kubeconfig).map(PathBuf::from);
        let kube_context = v.value(SettingId::KubeContext);

        if !v.problems.is_empty() {
            return Err(v.problems);
        }
        Ok(Config {
            mode: self.mode,
            database: database.expect("validated"),
            poll_interval: poll_interval.expect("validated"),
            namespaces: namespaces.expect("validated"),
            cluster_name: cluster_name.expect("validated"),
            notify_slack,
            notify_webhook,
            notify_webhook_secret,
            notify_severity: notify_severity.expect("validated"),
            notify_workload_removed: notify_workload_removed.expect("validated"),
            notify_max_age: notify_max_age.expect("validated"),
            notify_batch_window: notify_batch_window.expect("validated"),
            notify_allow_http: notify_allow_http.expect("validated"),
            notify_retry_base: notify_retry_base.expect("validated"),
            notify_once_wait: notify_once_wait.expect("validated"),
            details_url,
            saas_endpoint,
            saas_api_key,
            log_format: log_format.expect("validated"),
            log_level: log_level.expect("validated"),
            health_addr: health_addr.expect("validated"),
            leader: leader.expect("validated"),
            kubeconfig,
            kube_context,
        })
    }

    /// The log settings alone, best effort, so that start-up problems can be logged in the
    /// format the operator asked for even when other settings are wrong.
    pub fn log_settings(&self) -> (LogFormat, log::LevelFilter) {
        let format = self
            .values
            .get(&SettingId::LogFormat)
            .and_then(|(v, _)| parse_log_format(v).ok())
            .unwrap_or_default();
        let level = self
            .values
            .get(&SettingId::LogLevel)
            .and_then(|(v, _)| parse_log_level(v).ok())
            .unwrap_or(log::LevelFilter::Info);
        (format, level)
    }
}

struct Validator<'a> {
    raw: &'a RawConfig,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    /// The value as given, or `None` when unset or empty (an empty variable means "default":
    /// that is how Kubernetes renders an optional ConfigMap key).
    fn value(&self, key: SettingId) -> Option<String> {
        self.raw
            .values
            .get(&key)
            .map(|(v, _)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn culprit(&self, key: SettingId) -> String {
        let setting = key.setting();
        let (value, source) = match self.raw.values.get(&key) {
            Some((v, s)) => (v.as_str(), *s),
            None => (setting.default, Source::Env),
        };
        let shown = if setting.secret {
            match key {
                SettingId::DatabaseUrl => mask_database_url(value),
                SettingId::NotifySlack | SettingId::NotifyWebhook => mask_target_url(value),
                _ => "***".to_owned(),
            }
        } else {
            value.to_owned()
        };
        match source {
            Source::Env => format!("{}={shown}", setting.env),
            Source::Flag => format!("--{}={shown}", setting.flag),
        }
    }

    fn problem(&mut self, key: SettingId, message: impl Into<String>) {
        let culprit = self.culprit(key);
        self.problems.push(Problem {
            culprit,
            message: message.into(),
        });
    }

    fn problem_without_value(&mut self, key: SettingId, message: &str) {
        self.problems.push(Problem {
            culprit: key.setting().env.to_owned(),
            message: message.to_owned(),
        });
    }

    /// Parses a value (or the default) and records a problem on failure.
    fn parse<T>(&mut self, key: SettingId, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let value = self
            .value(key)
            .unwrap_or_else(|| key.setting().default.to_owned());
        match parse(&value) {
            Ok(v) => Some(v),
            Err(message) => {
                self.problem(key, message);
                None
            }
        }
    }

    fn database(&mut self) -> Option<DatabaseTarget> {
        let Some(url) = self.value(SettingId::DatabaseUrl) else {
            return Some(DatabaseTarget::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)));
        };
        match DatabaseTarget::parse(&url) {
            Ok(target) => Some(target),
            Err(message) => {
                self.problem(SettingId::DatabaseUrl, message);
                None
            }
        }
    }

    /// Each of two settings needs the other.
    fn required_together(&mut self, a: (SettingId, bool), b: (SettingId, bool)) {
        let message = |other: SettingId| format!("is required when {} is set", other.setting().env);
        match (a.1, b.1) {
            (true, false) => self.problem_without_value(b.0, &message(a.0)),
            (false, true) => self.problem_without_value(a.0, &message(b.0)),
            _ => {}
        }
    }

    /// Leader election as configured; `None` after recording a problem.
    fn leader(&mut self) -> Option<LeaderConfig> {
        let election = self.parse(SettingId::LeaderElection, Election::parse);
        let lease_name = self.parse(SettingId::LeaseName, check_lease_name);
        let lease_namespace = match self.value(SettingId::LeaseNamespace) {
            Some(ns) if !is_dns_label(&ns) => {
                self.problem(SettingId::LeaseNamespace, "is not a namespace name");
                Err(())
            }
            other => Ok(other),
        };
        let lease_duration = self.parse(SettingId::LeaseDuration, parse_lease_duration);
        Some(LeaderConfig {
            election: election?,
            lease_name: lease_name?,
            lease_namespace: lease_namespace.ok()?,
            lease_duration: lease_duration?,
        })
    }

    fn cluster_name(&mut self) -> Option<String> {
        let name = self.value(SettingId::ClusterName).unwrap_or_else(hostname);
        if name.len() > 255 {
            self.problem(SettingId::ClusterName, "must be at most 255 characters");
            return None;
        }
        Some(name)
    }

    /// A target URL: absolute, with a host, `https://` unless loopback or `allow_http`. The
    /// message shows only scheme and host.
    fn url(&mut self, key: SettingId, allow_http: bool) -> Option<Secret<String>> {
        let url = self.value(key)?;
        match target_url::validate_target_url(&url, allow_http) {
            Ok(()) => Some(Secret::new(url)),
            Err(message) => {
                self.problem(key, message);
                None
            }
        }
    }

    fn details_url(&mut self) -> Option<String> {
        let template = self.value(SettingId::DetailsUrl)?;
        match target_url::check_details_template(&template) {
            Ok(()) => Some(template),
            Err(message) => {
                self.problem(SettingId::DetailsUrl, message);
                None
            }
        }
    }
}

/// The host name, the original agent's default cluster name. Inside a pod this is the pod name,
/// which is why the manifests set `KIJO_CLUSTER_NAME` explicitly.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Most durations: at least a second, at most a year.
fn parse_interval(s: &str) -> Result<Duration, String> {
    parse_duration(s, Bounds::at_least(Duration::from_secs(1)))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_namespaces(s: &str) -> Result<Vec<String>, String> {
    if s.trim().eq_ignore_ascii_case("all") || s.trim() == "*" {
        return Ok(Vec::new());
    }
    let mut out: Vec<String> = Vec::new();
    for ns in s.split(',').map(str::trim).filter(|ns| !ns.is_empty()) {
        if !is_dns_label(ns) {
            return Err(format!(
                "{ns:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"
            ));
        }
        if !out.iter().any(|o| o == ns) {
            out.push(ns.to_owned());
        }
    }
    if out.is_empty() {
        // `,,,` is not "all": a list that lost its names must not widen the scope.
        return Err("names no namespace; write all for every namespace".into());
    }
    Ok(out)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err("expected json or text".into()),
    }
}

fn parse_log_level(s: &str) -> Result<log::LevelFilter, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err("expected error, warn, info, debug or trace".into()),
    }
}

/// Accepts `:8080` (all interfaces, as in the original agent), `HOST:PORT` and `[V6]:PORT`.
fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    const HINT: &str = "expected HOST:PORT or :PORT, e.g. :8080 or 127.0.0.1:8080";
    let s = s.trim();
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    if let Ok(addr) = full.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !full.contains(':') {
        return Err(HINT.into());
    }
    full.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| HINT.to_owned())
}

/// The `--help` text, generated from the settings table so it can never miss a variable.
pub fn help_text() -> String {
    let mut out = format!(
        "kijo-agent {}\n\
         Tracks Trivy Operator findings in a Kubernetes cluster and notifies once per real change.\n\n\
         USAGE:\n    kijo-agent [OPTIONS]\n    kijo-agent history [OPTIONS]\n    kijo-agent notify-test [OPTIONS]\n\n\
         MODES:\n\
         \x20   history       print recent lifecycle events and open findings by severity from the store\n\
         \x20   notify-test   send a test message to every configured target; one OK/FAIL line each\n\
         \x20   --once        run one poll cycle and exit (0 on success)\n\
         \x20   --dry-run     check configuration, database, Kubernetes access and targets; change nothing\n\
         \x20   -h, --help    print this help\n\
         \x20   -V, --version print the version\n\n\
         OPTIONS (a flag beats its environment variable):\n",
        env!("CARGO_PKG_VERSION")
    );
    for (_, s) in SETTINGS {
        out.push_str(&format!(
            "    --{:<22} {:<28} {}\n{:<56}default: {}\n",
            format!("{} VALUE", s.flag),
            s.env,
            s.help,
            "",
            s.default
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(env: &[(&str, &str)], args: &[&str]) -> RawConfig {
        RawConfig::from_parts(
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            args.iter().map(OsString::from),
        )
    }

    fn problems(env: &[(&str, &str)], args: &[&str]) -> Vec<String> {
        problem_lines(raw(env, args))
    }

    fn problem_lines(raw: RawConfig) -> Vec<String> {
        match raw.validate() {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_match_the_original_agent() {
        let c = raw(&[("KIJO_CLUSTER_NAME", "prod")], &[])
            .validate()
            .unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(300));
        assert!(c.namespaces.is_empty());
        assert_eq!(c.notify_severity, Severity::Critical);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.health_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            c.database.describe(),
            format!("sqlite:{DEFAULT_SQLITE_PATH}")
        );
        assert_eq!(c.mode, Mode::Run);
    }

    #[test]
    fn flag_beats_variable() {
        let c = raw(
            &[("KIJO_POLL_INTERVAL", "1h"), ("KIJO_LOG_LEVEL", "debug")],
            &["--poll-interval", "30s", "--log-level=warn"],
        )
        .validate()
        .unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.log_level, log::LevelFilter::Warn);
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_variable() {
        let p = problems(
            &[("KIJO_POLL_INTERVAL", "banana"), ("KIJO_LOG_FORMAT", "xml")],
            &[],
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("KIJO_POLL_INTERVAL=banana: "), "{p:?}");
        assert!(p[1].starts_with("KIJO_LOG_FORMAT=xml: "), "{p:?}");
    }

    #[test]
    fn values_are_checked() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
        let cases: &[Case<'_>] = &[
            (
                &[("KIJO_POLL_INTERVAL", "-5m")],
                &[],
                "KIJO_POLL_INTERVAL=-5m: ",
            ),
            (&[("KIJO_POLL_INTERVAL", "0s")], &[], "at least 1s"),
            (&[("KIJO_POLL_INTERVAL", "300")], &[], "like 30s"),
            (
                &[("KIJO_NAMESPACES", "prod,Bad_NS")],
                &[],
                "\"Bad_NS\" is not a namespace",
            ),
            (
                &[("KIJO_NOTIFY_SEVERITY", "severe")],
                &[],
                "KIJO_NOTIFY_SEVERITY=severe: expected one of",
            ),
            (&[("KIJO_LOG_LEVEL", "loud")], &[], "KIJO_LOG_LEVEL=loud"),
            (
                &[("KIJO_HEALTH_ADDR", "8080")],
                &[],
                "KIJO_HEALTH_ADDR=8080",
            ),
            (
                &[("KIJO_DATABASE_URL", "mysql://u:pw@h/db")],
                &[],
                "neither a postgres://",
            ),
            (&[("KIJO_DATABASE_URL", "sqlite:")], &[], "no file path"),
            (
                &[("KIJO_DATABASE_URL", "postgres://db/k?sslmode=maybe")],
                &[],
                "sslmode",
            ),
            (
                &[("KIJO_NOTIFY_WEBHOOK", "ftp://x")],
                &[],
                "KIJO_NOTIFY_WEBHOOK=",
            ),
            (
                &[("KIJO_SAAS_ENDPOINT", "https://api.kijo.io")],
                &[],
                "KIJO_SAAS_API_KEY: is required",
            ),
            (
                &[("KIJO_NOTIFY_WEBHOOK_SECRET", "k")],
                &[],
                "KIJO_NOTIFY_WEBHOOK: is required",
            ),
            (&[], &["--poll-interval"], "--poll-interval: needs a value"),
            (&[], &["--bogus=1"], "--bogus: unknown flag"),
            (&[], &["stray"], "stray: unexpected argument"),
            (&[], &["--once", "--dry-run"], "cannot be combined"),
            (&[], &["--poll-interval=never"], "--poll-interval=never: "),
        ];
        for (env, args, want) in cases {
            let p = problems(env, args);
            assert!(
                p.iter().any(|line| line.contains(want)),
                "env {env:?} args {args:?}: want {want:?} in {p:?}"
            );
        }
    }

    #[test]
    fn the_batch_window_parses_and_stays_below_the_max_age() {
        let window = |env: &[(&str, &str)], args: &[&str]| {
            raw(env, args).validate().map(|c| c.notify_batch_window)
        };
        assert_eq!(
            window(&[], &[]).unwrap(),
            Duration::from_secs(600),
            "default 10m"
        );
        for zero in ["0", "0s", " 0 "] {
            assert_eq!(
                window(&[("KIJO_NOTIFY_BATCH_WINDOW", zero)], &[]).unwrap(),
                Duration::ZERO,
                "{zero:?}: at once"
            );
        }
        assert_eq!(
            window(
                &[("KIJO_NOTIFY_BATCH_WINDOW", "1m")],
                &["--notify-batch-window=90s"]
            )
            .unwrap(),
            Duration::from_secs(90),
            "the flag wins"
        );
        assert_eq!(
            window(
                &[
                    ("KIJO_NOTIFY_BATCH_WINDOW", "59m"),
                    ("KIJO_NOTIFY_MAX_AGE", "1h")
                ],
                &[]
            )
            .unwrap(),
            Duration::from_secs(59 * 60)
        );
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
        let refused: &[Case<'_>] = &[
            (
                &[
                    ("KIJO_NOTIFY_BATCH_WINDOW", "1h"),
                    ("KIJO_NOTIFY_MAX_AGE", "1h"),
                ],
                &[],
                "KIJO_NOTIFY_BATCH_WINDOW=1h: must be shorter than KIJO_NOTIFY_MAX_AGE=1h",
            ),
            (
                &[("KIJO_NOTIFY_BATCH_WINDOW", "25h")],
                &[],
                "KIJO_NOTIFY_BATCH_WINDOW=25h: must be shorter than KIJO_NOTIFY_MAX_AGE=24h",
            ),
            (
                &[],
                &["--notify-batch-window", "2h", "--notify-max-age=90m"],
                "--notify-batch-window=2h: must be shorter than --notify-max-age=90m",
            ),
            (
                &[("KIJO_NOTIFY_BATCH_WINDOW", "soon")],
                &[],
                "KIJO_NOTIFY_BATCH_WINDOW=soon: expected a duration",
            ),
            (
                &[("KIJO_NOTIFY_BATCH_WINDOW", "-1m")],
                &[],
                "KIJO_NOTIFY_BATCH_WINDOW=-1m: ",
            ),
        ];
        for (env, args, want) in refused {
            let p = problems(env, args);
            assert_eq!(p.len(), 1, "{env:?} {args:?}: one line: {p:?}");
            assert!(
                p[0].starts_with(want),
                "{env:?} {args:?}: want {want:?}, got {p:?}"
            );
        }
    }

    #[test]
    fn huge_durations_are_problems_not_panics() {
        let huge = "9223372036854775807s";
        for key in [
            SettingId::PollInterval,
            SettingId::NotifyMaxAge,
            SettingId::NotifyRetryBase,
            SettingId::NotifyOnceWait,
            SettingId::NotifyBatchWindow,
            SettingId::LeaseDuration,
        ] {
            let env = key.setting().env;
            let p = problems(&[(env, huge)], &[]);
            assert_eq!(p.len(), 1, "{env}: {p:?}");
            assert!(
                p[0].starts_with(&format!("{env}={huge}: must be at most")),
                "{p:?}"
            );
        }
    }

    #[test]
    fn a_value_that_is_not_utf8_names_its_variable() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(b"postgres://kijo:\xff@db/kijo".to_vec());
        assert!(bad.to_str().is_none());
        let raw = RawConfig::from_os_parts(
            [(OsString::from("KIJO_DATABASE_URL"), bad.clone())],
            std::iter::empty(),
        );
        let p = problem_lines(raw);
        assert_eq!(
            p,
            [
                "KIJO_DATABASE_URL: is not valid UTF-8; set it to a UTF-8 value (or unset it for the default)"
            ]
        );
        let raw =
            RawConfig::from_os_parts(std::iter::empty(), [OsString::from("--database-url"), bad]);
        let p = problem_lines(raw);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("--database-url: is not valid UTF-8"),
            "{p:?}"
        );
    }

    #[test]
    fn a_namespace_list_without_names_is_not_all_namespaces() {
        for list in [",,,", " , ", ","] {
            let p = problems(&[("KIJO_NAMESPACES", list)], &[]);
            assert_eq!(p.len(), 1, "{list:?}: {p:?}");
            assert!(p[0].contains("names no namespace"), "{p:?}");
        }
        let c = raw(&[("KIJO_NAMESPACES", "")], &[]).validate().unwrap();
        assert!(
            c.namespaces.is_empty(),
            "an empty variable still means the default, all"
        );
    }

    #[test]
    fn secrets_are_masked_in_problems() {
        let p = problems(
            &[
                ("KIJO_DATABASE_URL", "mysql://kijo:hunter2@db/kijo"),
                (
                    "KIJO_NOTIFY_SLACK",
                    "htps://hooks.slack.com/services/T/B/hunter2",
                ),
            ],
            &[],
        );
        assert_eq!(p.len(), 2, "{p:?}");
        for line in p {
            assert!(!line.contains("hunter2"), "secret leaked: {line}");
        }
    }

    #[test]
    fn accepted_forms() {
        let c = raw(
            &[
                (
                    "KIJO_DATABASE_URL",
                    "postgresql://kijo:pw@db:5432/kijo?sslmode=require",
                ),
                ("KIJO_NAMESPACES", " prod, staging ,prod,"),
                ("KIJO_NOTIFY_SEVERITY", "high"),
                ("KIJO_HEALTH_ADDR", "127.0.0.1:9000"),
                ("KIJO_LOG_FORMAT", "TEXT"),
                ("KIJO_SAAS_ENDPOINT", "https://api.kijo.io"),
                ("KIJO_SAAS_API_KEY", "k"),
                ("KIJO_NOTIFY_SLACK", ""),
            ],
            &["--dry-run", "--database-url", "sqlite:/data/k.db"],
        )
        .validate()
        .unwrap();
        assert_eq!(c.database.describe(), "sqlite:/data/k.db");
        assert_eq!(c.namespaces, ["prod", "staging"]);
        assert_eq!(c.notify_severity, Severity::High);
        assert_eq!(c.health_addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.mode, Mode::DryRun);
        assert!(c.notify_slack.is_none(), "an empty variable means unset");
    }

    #[test]
    fn readme_documents_every_variable_and_flag() {
        let readme = include_str!("../../README.md");
        for (_, s) in SETTINGS {
            assert!(
                readme.contains(&format!("`{}`", s.env)),
                "README lacks {}",
                s.env
            );
            assert!(
                readme.contains(&format!("`--{}`", s.flag)),
                "README lacks --{}",
                s.flag
            );
        }
    }

    #[test]
    fn help_lists_every_variable_and_flag() {
        let help = help_text();
        for (_, s) in SETTINGS {
            assert!(help.contains(s.env), "{} missing", s.env);
            assert!(
                help.contains(&format!("--{}", s.flag)),
                "--{} missing",
                s.flag
            );
        }
    }
}
