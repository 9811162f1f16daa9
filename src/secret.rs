//! Secrets that must never reach a log line or an error message.
//!
//! Database URLs carry passwords, a Slack incoming-webhook URL *is* the credential, and API keys
//! and tokens are bearer secrets. Everything that prints configuration goes through this module,
//! so masking is decided in one place instead of at every call site.

use std::fmt;

/// A value whose `Debug` and `Display` never show it. Use [`Secret::expose`] at the one place
/// where the real value is needed (opening a connection, sending a request).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The real value. Callers must not log or format it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

pub use crate::store::mask_database_url;

/// Masks a notification target URL. Webhook URLs embed their credential in the path (Slack's
/// `/services/T…/B…/xyz`) or the query, so only the scheme and host are kept.
pub fn mask_target_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}/***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_lose_their_password() {
        let cases = [
            (
                "postgres://kijo:s3cret@db:5432/kijo",
                "postgres://kijo:***@db:5432/kijo",
            ),
            // More than one `@`: the driver's password and parameters may sit anywhere in it
            // (a fuzz-found leak), so none of it is shown.
            (
                "postgresql://kijo:p@ss@word@db/kijo?sslmode=require",
                "postgresql://***",
            ),
            ("postgres://kijo@db/kijo", "postgres://kijo@db/kijo"),
            (
                "postgres://db/kijo?user=a&password=hunter2",
                "postgres://a:***@db/kijo",
            ),
            ("sqlite:/var/lib/kijo/kijo.db", "***"),
            ("not a url with hunter2", "***"),
        ];
        for (input, want) in cases {
            assert_eq!(mask_database_url(input), want, "input {input}");
        }
    }

    #[test]
    fn target_urls_keep_only_the_host() {
        let cases = [
            (
                "https://hooks.slack.com/services/T000/B000/XXXX",
                "https://hooks.slack.com/***",
            ),
            (
                "https://user:pw@example.com?token=1",
                "https://example.com/***",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000/***"),
            ("garbage", "***"),
        ];
        for (input, want) in cases {
            assert_eq!(mask_target_url(input), want, "input {input}");
        }
    }

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
