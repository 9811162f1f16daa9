//! Leader-election settings as configured (`KIJO_LEADER_ELECTION`, `KIJO_LEASE_*`), validated
//! with the rest of the configuration; [`crate::leader`] resolves them against the environment.

use std::time::Duration;

use super::duration::{Bounds, parse_duration};

/// `KIJO_LEADER_ELECTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// On in-cluster (service account, no kubeconfig), off for a local run.
    Auto,
    On,
    Off,
}

impl Election {
    pub(crate) fn parse(s: &str) -> Result<Election, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Election::Auto),
            "true" | "on" | "yes" | "1" => Ok(Election::On),
            "false" | "off" | "no" | "0" => Ok(Election::Off),
            _ => Err("expected auto, true or false".into()),
        }
    }
}

/// Leader election as configured (validated, not yet resolved against the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    pub election: Election,
    pub lease_name: String,
    /// `None`: the service account's namespace, else `POD_NAMESPACE`, else `default`.
    pub lease_namespace: Option<String>,
    pub lease_duration: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            election: Election::Auto,
            lease_name: "kijo-agent".into(),
            lease_namespace: None,
            lease_duration: Duration::from_secs(15),
        }
    }
}

/// A Lease name is a DNS subdomain.
pub(crate) fn check_lease_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_owned())
    } else {
        Err("is not a Lease name (lower-case letters, digits, '-' and '.')".into())
    }
}

/// Whole seconds (the Lease stores `leaseDurationSeconds`), between 2 s and 1 h.
pub(crate) fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(
        s,
        Bounds {
            min: Duration::from_secs(2),
            max: Duration::from_secs(3600),
        },
    )?;
    if d.subsec_nanos() != 0 {
        return Err("must be whole seconds".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked() {
        assert_eq!(Election::parse("AUTO"), Ok(Election::Auto));
        assert_eq!(Election::parse("true"), Ok(Election::On));
        assert_eq!(Election::parse("false"), Ok(Election::Off));
        assert!(Election::parse("sometimes").is_err());
        assert_eq!(
            check_lease_name("kijo-agent.v1"),
            Ok("kijo-agent.v1".into())
        );
        for bad in ["", "Kijo", "-x", "x-", "a_b"] {
            assert!(check_lease_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_lease_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["1s", "2h", "1.5s", "soon", "-5s"] {
            assert!(parse_lease_duration(bad).is_err(), "{bad:?}");
        }
    }
}
