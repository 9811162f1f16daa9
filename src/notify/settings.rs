//! Notification settings, built from the validated [`Config`]. Parsing and validation live in
//! `config.rs` (one table drives the variables, flags, `--help` and the README), so startup,
//! `--dry-run` and `notify-test` report the same problems, each naming its variable.

use std::time::Duration;

use super::deliver::{DelivererConfig, Target};
use super::event::Severity;
use crate::config::Config;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// Configured targets in a fixed order: Slack, webhook, SaaS.
    pub targets: Vec<Target>,
    /// `KIJO_NOTIFY_SEVERITY`, default CRITICAL.
    pub min_severity: Severity,
    /// `KIJO_NOTIFY_WORKLOAD_REMOVED`, default false.
    pub notify_workload_removed: bool,
    /// `KIJO_DETAILS_URL` template.
    pub details_url: Option<String>,
    /// `KIJO_NOTIFY_MAX_AGE`, default 24h.
    pub max_age: Duration,
    /// `KIJO_NOTIFY_BATCH_WINDOW`, default 10m: how long a target's oldest queued change waits
    /// for more before its messages are planned (`notify::window`).
    pub batch_window: Duration,
    /// `KIJO_NOTIFY_ALLOW_HTTP`, default false.
    pub allow_insecure_http: bool,
    /// `KIJO_NOTIFY_RETRY_BASE`, default 5s.
    pub retry_base: Duration,
}

impl NotifySettings {
    pub fn from_config(config: &Config) -> NotifySettings {
        let mut targets = Vec::new();
        if let Some(url) = &config.notify_slack {
            targets.push(Target::Slack { url: url.clone() });
        }
        if let Some(url) = &config.notify_webhook {
            targets.push(Target::Webhook {
                url: url.clone(),
                secret: config.notify_webhook_secret.clone(),
            });
        }
        if let (Some(endpoint), Some(key)) = (&config.saas_endpoint, &config.saas_api_key) {
            targets.push(Target::Saas {
                endpoint: Secret::new(endpoint.clone()),
                api_key: key.clone(),
            });
        }
        NotifySettings {
            targets,
            min_severity: config.notify_severity,
            notify_workload_removed: config.notify_workload_removed,
            details_url: config.details_url.clone(),
            max_age: config.notify_max_age,
            batch_window: config.notify_batch_window,
            allow_insecure_http: config.notify_allow_http,
            retry_base: config.notify_retry_base,
        }
    }

    /// The names of the configured targets: the poll thread queues each event once per name, and
    /// the notify thread drains exactly these, so no row is queued that nothing delivers.
    pub fn target_names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.name().to_owned()).collect()
    }

    /// Copies the settings that shape delivery into a deliverer configuration.
    pub fn apply(&self, config: &mut DelivererConfig) {
        config.details_url = self.details_url.clone();
        config.policy.max_age = self.max_age;
        config.policy.base = self.retry_base;
    }

    /// The deliverer configuration for `cluster` with these settings applied.
    pub fn deliverer_config(&self, cluster: &str) -> DelivererConfig {
        let mut c = DelivererConfig::new(cluster);
        self.apply(&mut c);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;
    use std::ffi::OsString;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        RawConfig::from_parts(
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .chain([("KIJO_CLUSTER_NAME".to_owned(), "c".to_owned())]),
            Vec::<OsString>::new(),
        )
        .validate()
        .map_err(|p| p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let s = NotifySettings::from_config(&config(&[]).unwrap());
        assert!(s.targets.is_empty());
        assert_eq!(s.min_severity, Severity::Critical);
        assert!(!s.notify_workload_removed && !s.allow_insecure_http);
        assert_eq!(s.max_age, Duration::from_secs(86_400));
        assert_eq!(s.retry_base, Duration::from_secs(5));
        assert_eq!(s.details_url, None);
    }

    #[test]
    fn full_configuration() {
        let s = NotifySettings::from_config(
            &config(&[
                (
                    "KIJO_NOTIFY_SLACK",
                    "https://hooks.slack.com/services/T/B/X",
                ),
                (
                    "KIJO_NOTIFY_WEBHOOK",
                    "http://receiver.monitoring.svc:8080/hook",
                ),
                ("KIJO_NOTIFY_ALLOW_HTTP", "TRUE"),
                ("KIJO_NOTIFY_WEBHOOK_SECRET", "s3cret"),
                ("KIJO_SAAS_ENDPOINT", "https://api.kijo.io"),
                ("KIJO_SAAS_API_KEY", "key"),
                ("KIJO_NOTIFY_SEVERITY", "high"),
                ("KIJO_NOTIFY_WORKLOAD_REMOVED", "yes"),
                ("KIJO_NOTIFY_MAX_AGE", "90m"),
                ("KIJO_NOTIFY_RETRY_BASE", "1s"),
                (
                    "KIJO_DETAILS_URL",
                    "https://kijo.example.com/clusters/{cluster}",
                ),
            ])
            .unwrap(),
        );
        let names: Vec<&str> = s.targets.iter().map(Target::name).collect();
        assert_eq!(names, ["slack", "webhook", "saas"]);
        assert_eq!(s.target_names(), names);
        assert!(matches!(
            &s.targets[1],
            Target::Webhook {
                secret: Some(_),
                ..
            }
        ));
        assert_eq!(s.min_severity, Severity::High);
        assert!(s.notify_workload_removed);
        let config = s.deliverer_config("c");
        assert_eq!(config.policy.max_age, Duration::from_secs(5400));
        assert_eq!(config.policy.base, Duration::from_secs(1));
        assert!(config.details_url.is_some());
    }

    #[test]
    fn every_problem_names_its_variable_and_hides_secrets() {
        let cases: [(&[(&str, &str)], &str); 9] = [
            (
                &[("KIJO_NOTIFY_SEVERITY", "severe")],
                "KIJO_NOTIFY_SEVERITY",
            ),
            (
                &[("KIJO_NOTIFY_WORKLOAD_REMOVED", "maybe")],
                "KIJO_NOTIFY_WORKLOAD_REMOVED",
            ),
            (&[("KIJO_NOTIFY_MAX_AGE", "soon")], "KIJO_NOTIFY_MAX_AGE"),
            (&[("KIJO_NOTIFY_MAX_AGE", "5s")], "KIJO_NOTIFY_MAX_AGE"),
            (
                &[("KIJO_NOTIFY_RETRY_BASE", "1h")],
                "KIJO_NOTIFY_RETRY_BASE",
            ),
            (
                &[(
                    "KIJO_NOTIFY_SLACK",
                    "http://hooks.example.com/services/TOPSECRET",
                )],
                "KIJO_NOTIFY_SLACK",
            ),
            (
                &[("KIJO_SAAS_ENDPOINT", "https://api.kijo.io")],
                "KIJO_SAAS_API_KEY",
            ),
            (&[("KIJO_SAAS_API_KEY", "TOPSECRET")], "KIJO_SAAS_ENDPOINT"),
            (
                &[("KIJO_DETAILS_URL", "kijo/{cluster}")],
                "KIJO_DETAILS_URL",
            ),
        ];
        for (vars, name) in cases {
            let errors = config(vars).unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].starts_with(name), "{errors:?}");
            assert!(!errors[0].contains("TOPSECRET"), "{errors:?}");
        }
    }
}
