//! Untrusted report text made safe to store, send and print.
//!
//! Every string of a report body comes from whoever built the scanned image (package versions,
//! titles) or from the scanner's database (links). PostgreSQL rejects a text value holding NUL
//! (`invalid byte sequence for encoding "UTF8": 0x00`), which used to fail the report's
//! transaction on every cycle; other control characters ring terminal bells or move the cursor
//! in `kijo-agent history`, and the bidirectional overrides and isolates (Unicode TR#9,
//! "Trojan Source", CVE-2021-42574) make a line read differently from what it says. Pure
//! functions, so the report model and every renderer apply the same rule.

use std::borrow::Cow;

/// True for a character that must not reach storage, a message or a terminal: C0 and C1
/// control characters (including DEL) and the bidi embedding, override and isolate controls
/// U+202A–U+202E and U+2066–U+2069.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The text without unsafe characters: a tab, line break or other whitespace control becomes
/// one space (a title keeps its word boundaries), every other unsafe character is dropped.
/// Borrowed when nothing had to change, which is the usual case.
pub(crate) fn clean(text: &str) -> Cow<'_, str> {
    // Printable ASCII, the usual case, is checked a byte at a time (the compiler vectorises
    // it); only text with other bytes is decoded to characters.
    let printable_ascii = text.bytes().all(|b| (0x20..0x7f).contains(&b));
    if printable_ascii || !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if c.is_whitespace() {
            out.push(' ');
        }
    }
    Cow::Owned(out)
}

/// [`clean`] for an owned string, reusing it when nothing changes.
pub(crate) fn cleaned(text: String) -> String {
    match clean(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(s) => s,
    }
}

/// A link that may become clickable in a message: `https` to any host, `http` only to a
/// loopback host (local receivers in tests). Anything else (`javascript:`, `data:`, a relative
/// or unparsable reference, text with spaces or control characters) is `None`, so the caller
/// drops the link instead of passing it on.
pub(crate) fn safe_link(link: &str) -> Option<&str> {
    if link.chars().any(|c| c.is_whitespace() || is_unsafe(c)) {
        return None;
    }
    let uri: ureq::http::Uri = link.parse().ok()?;
    let host = uri.host().filter(|h| !h.is_empty())?;
    let scheme = uri.scheme_str()?;
    if scheme.eq_ignore_ascii_case("https") {
        return Some(link);
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (scheme.eq_ignore_ascii_case("http") && loopback).then_some(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_removes_controls_and_bidi_characters() {
        let cases = [
            ("1.2.3-r0", "1.2.3-r0"),
            ("1.2\u{0}.3", "1.2.3"),
            ("a\tb\nc\r\nd", "a b c  d"),
            ("bell\u{7}esc\u{1b}[31mred", "bellesc[31mred"),
            ("del\u{7f}c1\u{85}\u{9b}x", "delc1 x"),
            ("evil\u{202E}txt.exe", "eviltxt.exe"),
            ("\u{2066}iso\u{2069}\u{202A}\u{202D}", "iso"),
            ("ünïcødé — fine, 漢字", "ünïcødé — fine, 漢字"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "{input:?}");
            assert_eq!(cleaned(input.to_owned()), want, "{input:?}");
        }
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn only_https_links_or_loopback_http_are_kept() {
        let kept = [
            "https://avd.aquasec.com/nvd/cve-2024-45337",
            "HTTPS://nvd.nist.gov/vuln/detail/CVE-2024-1",
            "http://127.0.0.1:8080/cve",
            "http://localhost/cve",
            "http://[::1]:9/x",
        ];
        for link in kept {
            assert_eq!(safe_link(link), Some(link), "{link}");
        }
        let dropped = [
            "javascript:alert(1)",
            "JavaScript://avd.aquasec.com/%0aalert(1)",
            "data:text/html,<script>alert(1)</script>",
            "http://avd.aquasec.com/nvd/cve-2024-1",
            "ftp://example.com/x",
            "//avd.aquasec.com/x",
            "/relative/path",
            "https://",
            "https://exa mple.com/",
            "https://example.com/\u{0}",
            "https://example.com/\u{202E}",
            "",
        ];
        for link in dropped {
            assert_eq!(safe_link(link), None, "{link:?}");
        }
    }
}
