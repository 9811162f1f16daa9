//! The database-URL masker on arbitrary strings. Besides never panicking: whenever the
//! PostgreSQL client would read a password from the URL, the masked text must not show it.
//!
//! "Not show it" is checked against a control, so that a password that happens to equal other
//! text (user `a`, password `a`) is not a false alarm: the password's text in the URL is replaced
//! by a neutral one, and if the client then reads exactly the same settings with only the
//! password changed, the masked original may contain the password (raw or decoded) only where
//! the masked control contains it too. A masker that works from the parsed settings passes
//! trivially (both outputs are equal); one that leaks the password fails.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use tokio_postgres::Config;

/// The control password: URL-safe, so replacing the original by it never changes how the rest
/// of the URL is read.
const NEUTRAL: &str = "fuzzneutralpw";

/// Where a password's text can sit in a URL or key=value string: after `:` (userinfo) or `=`
/// (`?password=`, `password=`), up to the next `@`, `&`, space or the end. A candidate is only
/// used once the client confirms it (see `is_password_region`), so this may over-approximate.
fn candidate_regions(url: &str) -> Vec<(usize, usize)> {
    let bytes = url.as_bytes();
    let mut out = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b':' && b != b'=' {
            continue;
        }
        let start = i + 1;
        let rest = &url[start..];
        let mut ends: Vec<usize> = ['@', '&', ' ']
            .iter()
            .filter_map(|c| rest.find(*c).map(|p| start + p))
            .collect();
        ends.push(url.len());
        ends.sort_unstable();
        ends.dedup();
        out.extend(ends.into_iter().filter(|&e| e > start).map(|e| (start, e)));
    }
    out
}

/// True when replacing `url[start..end]` by [`NEUTRAL`] leaves every setting the client reads
/// unchanged except the password, which becomes [`NEUTRAL`].
fn is_password_region(
    original: &Config,
    url: &str,
    (start, end): (usize, usize),
) -> Option<String> {
    let control = format!("{}{NEUTRAL}{}", &url[..start], &url[end..]);
    let parsed = Config::from_str(&control).ok()?;
    let mut expected = original.clone();
    expected.password(NEUTRAL);
    (parsed == expected).then_some(control)
}

fn contains(haystack: &str, needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let masked = kijo_agent::fuzz_api::mask_database_url(url);
    let Ok(config) = Config::from_str(url) else {
        return;
    };
    let Some(password) = config
        .get_password()
        .filter(|p| !p.is_empty() && *p != NEUTRAL.as_bytes())
    else {
        return;
    };
    for region in candidate_regions(url) {
        let Some(control) = is_password_region(&config, url, region) else {
            continue;
        };
        let masked_control = kijo_agent::fuzz_api::mask_database_url(&control);
        let raw = &url.as_bytes()[region.0..region.1];
        for (form, text) in [("decoded", password), ("as written", raw)] {
            assert!(
                !contains(&masked, text) || contains(&masked_control, text),
                "the masked URL shows the password ({form}): {masked:?}"
            );
        }
        return;
    }
});
