//! Notification settings from environment variables, validated in one place so that startup,
//! `--dry-run` and the test-message command report the same problems, each naming its variable.

use std::time::Duration;

use super::deliver::{DelivererConfig, Target, validate_target_url};
use super::event::Severity;
use super::slack;
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
    /// `KIJO_NOTIFY_ALLOW_HTTP`, default false.
    pub allow_insecure_http: bool,
}

impl NotifySettings {
    /// Reads the settings through `get` (`|k| std::env::var(k).ok()` in the binary, a map in
    /// tests). An empty value counts as unset. Returns every problem at once, never a value of
    /// a secret variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut errors = Vec::new();

        let min_severity = match get("KIJO_NOTIFY_SEVERITY") {
            None => Severity::Critical,
            Some(v) => v.parse().unwrap_or_else(|e| {
                errors.push(format!("KIJO_NOTIFY_SEVERITY: {e}"));
                Severity::Critical
            }),
        };
        let mut flag = |name: &str| match get(name).map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => false,
            Some(v) => {
                errors.push(format!("{name}: {v:?} is not a boolean: use true or false"));
                false
            }
        };
        let notify_workload_removed = flag("KIJO_NOTIFY_WORKLOAD_REMOVED");
        let allow_insecure_http = flag("KIJO_NOTIFY_ALLOW_HTTP");

        let max_age = match get("KIJO_NOTIFY_MAX_AGE") {
            None => Duration::from_secs(24 * 3600),
            Some(v) => match parse_duration(&v) {
                Some(d) if d >= Duration::from_secs(60) => d,
                _ => {
                    errors.push(format!(
                        "KIJO_NOTIFY_MAX_AGE: {v:?} is not a duration of at least 1m (e.g. 24h, 90m, 3600)"
                    ));
                    Duration::from_secs(24 * 3600)
                }
            },
        };

        let details_url = get("KIJO_DETAILS_URL");
        if let Some(t) = &details_url {
            let sample = slack::details_url(t, "cluster", "namespace");
            if !(sample.starts_with("https://") || sample.starts_with("http://"))
                || validate_target_url(&sample, true).is_err()
            {
                errors.push(
                    "KIJO_DETAILS_URL: not an http(s) URL template (e.g. https://kijo.example.com/clusters/{cluster})"
                        .to_owned(),
                );
            }
        }

        let mut targets = Vec::new();
        let mut url = |name: &str| {
            let value = get(name)?;
            match validate_target_url(&value, allow_insecure_http) {
                Ok(()) => Some(Secret::new(value)),
                Err(e) => {
                    errors.push(format!("{name}: {e}"));
                    None
                }
            }
        };
        if let Some(url) = url("KIJO_NOTIFY_SLACK") {
            targets.push(Target::Slack { url });
        }
        if let Some(url) = url("KIJO_NOTIFY_WEBHOOK") {
            targets.push(Target::Webhook {
                url,
                secret: get("KIJO_NOTIFY_WEBHOOK_SECRET").map(Secret::new),
            });
        }
        let endpoint = url("KIJO_SAAS_ENDPOINT");
        match (endpoint, get("KIJO_SAAS_API_KEY")) {
            (Some(endpoint), Some(key)) => targets.push(Target::Saas {
                endpoint,
                api_key: Secret::new(key),
            }),
            (Some(_), None) => {
                errors.push("KIJO_SAAS_API_KEY: required when KIJO_SAAS_ENDPOINT is set".to_owned())
            }
            (None, Some(_)) if get("KIJO_SAAS_ENDPOINT").is_none() => {
                errors.push("KIJO_SAAS_ENDPOINT: required when KIJO_SAAS_API_KEY is set".to_owned())
            }
            _ => {}
        }

        if errors.is_empty() {
            Ok(NotifySettings {
                targets,
                min_severity,
                notify_workload_removed,
                details_url,
                max_age,
                allow_insecure_http,
            })
        } else {
            Err(errors)
        }
    }

    /// Copies the settings that shape delivery into a deliverer configuration.
    pub fn apply(&self, config: &mut DelivererConfig) {
        config.details_url = self.details_url.clone();
        config.policy.max_age = self.max_age;
    }
}

/// `24h`, `90m`, `1h30m`, `45s`, or plain seconds.
fn parse_duration(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let d: jiff::SignedDuration = v.parse().ok()?;
    Duration::try_from(d).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<NotifySettings, Vec<String>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        NotifySettings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let s = settings(&[]).unwrap();
        assert!(s.targets.is_empty());
        assert_eq!(s.min_severity, Severity::Critical);
        assert!(!s.notify_workload_removed && !s.allow_insecure_http);
        assert_eq!(s.max_age, Duration::from_secs(86_400));
        assert_eq!(s.details_url, None);
    }

    #[test]
    fn full_configuration() {
        let s = settings(&[
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
            (
                "KIJO_DETAILS_URL",
                "https://kijo.example.com/clusters/{cluster}",
            ),
        ])
        .unwrap();
        let names: Vec<&str> = s.targets.iter().map(Target::name).collect();
        assert_eq!(names, ["slack", "webhook", "saas"]);
        assert!(matches!(
            &s.targets[1],
            Target::Webhook {
                secret: Some(_),
                ..
            }
        ));
        assert_eq!(s.min_severity, Severity::High);
        assert!(s.notify_workload_removed);
        assert_eq!(s.max_age, Duration::from_secs(5400));
        let mut config = DelivererConfig::new("c");
        s.apply(&mut config);
        assert_eq!(config.policy.max_age, Duration::from_secs(5400));
        assert!(config.details_url.is_some());
    }

    #[test]
    fn every_problem_names_its_variable_and_hides_secrets() {
        let cases: [(&[(&str, &str)], &str); 8] = [
            (
                &[("KIJO_NOTIFY_SEVERITY", "severe")],
                "KIJO_NOTIFY_SEVERITY",
            ),
            (
                &[("KIJO_NOTIFY_WORKLOAD_REMOVED", "maybe")],
                "KIJO_NOTIFY_WORKLOAD_REMOVED",
            ),
            (&[("KIJO_NOTIFY_MAX_AGE", "soon")], "KIJO_NOTIFY_MAX_AGE"),
            (&[("KIJO_NOTIFY_MAX_AGE", "5")], "KIJO_NOTIFY_MAX_AGE"),
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
            let errors = settings(vars).unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].starts_with(name), "{errors:?}");
            assert!(!errors[0].contains("TOPSECRET"), "{errors:?}");
        }
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3600"), Some(Duration::from_secs(3600)));
    }
}
