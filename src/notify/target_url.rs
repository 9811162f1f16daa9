//! The check of a notification target URL, shared by start-up validation, `--dry-run` and
//! delivery (which never sends loopback targets through a proxy).

use crate::secret::mask_target_url;

/// Checks a target URL without sending anything (`--dry-run`). `https://` is required;
/// `http://` is accepted for loopback hosts, and for other hosts only with
/// `allow_insecure_http` (`KIJO_NOTIFY_ALLOW_HTTP=true`, e.g. an in-cluster receiver behind a
/// service mesh). Errors show only the masked URL.
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

/// Whether `host` (a URI host, IPv6 in brackets or not) is this machine.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
}
