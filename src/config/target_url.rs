//! Which notification target URLs the agent accepts. Validated once at start-up (the
//! configuration) and again by the deliverer before each send, with this one rule.

use crate::secret::mask_target_url;

/// The `KIJO_DETAILS_URL` placeholders; the Slack renderer fills them per message.
pub(crate) const CLUSTER_PLACEHOLDER: &str = "{cluster}";
pub(crate) const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// A target URL must be absolute with a host and use `https`, or plain `http` to a loopback
/// host or when `allow_insecure_http` (`KIJO_NOTIFY_ALLOW_HTTP`) is set. A Slack webhook URL is
/// a credential, so messages show it masked.
pub(crate) fn validate_target_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
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

/// `localhost` or a loopback IP: the hosts where plain http is acceptable (tests, sidecars).
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A `KIJO_DETAILS_URL` template is valid when, filled with sample values, it is an http(s)
/// URL with a host.
pub(crate) fn check_details_template(template: &str) -> Result<(), String> {
    let sample = template
        .replace(CLUSTER_PLACEHOLDER, "cluster")
        .replace(NAMESPACE_PLACEHOLDER, "namespace");
    let http = sample.starts_with("https://") || sample.starts_with("http://");
    if !http || validate_target_url(&sample, true).is_err() {
        return Err(
            "not an http(s) URL template (e.g. https://kijo.example.com/clusters/{cluster})".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn details_templates() {
        assert!(check_details_template("https://kijo.example.com/c/{cluster}/{namespace}").is_ok());
        assert!(check_details_template("http://10.0.0.1/{cluster}").is_ok());
        for bad in [
            "kijo.example.com/{cluster}",
            "javascript:alert(1)",
            "https://{cluster}x y",
        ] {
            assert!(check_details_template(bad).is_err(), "{bad:?}");
        }
    }
}
