//! Slack Block Kit rendering for incoming webhooks.
//!
//! Shaped like the original README's example (title, cluster, namespace, one line per workload
//! with its CVEs and packages, "View details"). Every Slack limit is enforced here, because a
//! post Slack rejects is a message nobody reads: ≤ 50 blocks, section text ≤ 3000 chars, fields
//! ≤ 2000, header ≤ 150, and a total block text well below the undocumented ~13k-char
//! `msg_blocks_too_long` cap (slackapi/bolt-js#2509). Overflow is cut with "…and N more".

use jiff::Timestamp;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::event::{ChangeKind, Severity};
use super::event::non_empty;
use super::group::{ImageGroup, ListedFinding, Message};
use crate::config::target_url::{CLUSTER_PLACEHOLDER, NAMESPACE_PLACEHOLDER, is_loopback};

pub(crate) const MAX_BLOCKS: usize = 50;
pub(crate) const MAX_SECTION_TEXT: usize = 3000;
pub(crate) const MAX_FIELD_TEXT: usize = 2000;
pub(crate) const MAX_HEADER_TEXT: usize = 150;
/// Slack truncates `text` above 40,000 chars; the fallback only feeds notifications and
/// screen readers, so it stays one short line.
pub(crate) const MAX_FALLBACK_TEXT: usize = 300;
/// Our own cap on the sum of all block texts, below Slack's undocumented aggregate limit.
pub(crate) const MAX_TOTAL_TEXT: usize = 12_000;
/// Workload names shown per line before "…and N more".
const MAX_NAMES: usize = 5;

/// Blocks that are not image-group sections: header, fields, summary, "…and N more",
/// details link, context footer (plus the [`explanation`] where a kind has one).
const FIXED_BLOCKS: usize = 6;

/// Shown right after the summary for kinds whose title alone could be misread: "no longer
/// reported" is not "fixed", and "reported again" is not a regression of what runs.
pub(crate) fn explanation(kind: ChangeKind) -> Option<&'static str> {
    match kind {
        ChangeKind::Withdrawn => {
            Some("No longer reported by the scanner — the image did not change.")
        }
        ChangeKind::ReportedAgain => {
            Some("Reported again by the scanner after it had stopped reporting them.")
        }
        _ => None,
    }
}

/// The human title of a message, e.g. "🚨 New Critical Vulnerabilities in production-eu".
pub(crate) fn title(message: &Message) -> String {
    let cluster = &message.cluster;
    let sev = message.severity.title_case();
    match message.kind {
        ChangeKind::New => format!("🚨 New {sev} Vulnerabilities in {cluster}"),
        ChangeKind::Fixed => format!("✅ {sev} Vulnerabilities Fixed in {cluster}"),
        ChangeKind::Reintroduced => format!("⚠️ {sev} Vulnerabilities Reintroduced in {cluster}"),
        ChangeKind::Withdrawn => {
            format!("ℹ️ {sev} Vulnerabilities No Longer Reported in {cluster}")
        }
        ChangeKind::ReportedAgain => format!("🔁 {sev} Vulnerabilities Reported Again in {cluster}"),
        ChangeKind::SeverityRaised => format!("📈 Vulnerabilities Raised to {sev} in {cluster}"),
        ChangeKind::WorkloadRemoved => format!("🗑️ Workloads Removed in {cluster}"),
        ChangeKind::ContainerRemoved => format!("🗑️ Containers Removed in {cluster}"),
    }
}

/// Fills a `KIJO_DETAILS_URL` template: `{cluster}` and `{namespace}` are replaced by their
/// percent-encoded values.
pub(crate) fn details_url(template: &str, cluster: &str, namespace: &str) -> String {
    template
        .replace(CLUSTER_PLACEHOLDER, &percent_encode(cluster))
        .replace(NAMESPACE_PLACEHOLDER, &percent_encode(namespace))
}

/// Everything but RFC 3986's unreserved characters is encoded.
const PLACEHOLDER: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, PLACEHOLDER).to_string()
}

/// Makes report text inert in mrkdwn. Report strings come from image metadata, which whoever
/// builds the image controls, so this is the last defence for anything already stored:
/// - `&`, `<` and `>` become entities (Slack's own escaping rule), so no `<url|label>` link
///   or `<!channel>` mention can be smuggled in;
/// - `` ` `` and `*`, which open and close the code spans and bold names this module writes,
///   become look-alikes (ˋ, ∗);
/// - line breaks and tabs become spaces (a name cannot fake a new line of the message), and
///   every other control character and bidirectional override (which can make text read
///   differently from what it is, CVE-2021-42574) becomes U+FFFD, visible.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\u{02CB}'),
            '*' => out.push('\u{2217}'),
            c if c.is_control() && c.is_whitespace() => out.push(' '),
            c if is_hidden_control(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Control characters (C0, DEL, C1) and the Unicode bidirectional controls.
fn is_hidden_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// A report's link as the clickable CVE link, or `None` when it is not one a reader may
/// safely click: only `https` (or `http` to a loopback host, for local receivers and tests),
/// and nothing that could break out of mrkdwn's `<url|label>`.
fn safe_link(link: &str) -> Option<&str> {
    if link.contains(|c: char| c == '|' || c.is_whitespace() || is_hidden_control(c)) {
        return None;
    }
    let uri: ureq::http::Uri = link.parse().ok()?;
    let host = uri.host().filter(|h| !h.is_empty())?;
    match uri.scheme_str()? {
        s if s.eq_ignore_ascii_case("https") => Some(link),
        s if s.eq_ignore_ascii_case("http") && is_loopback(host) => Some(link),
        _ => None,
    }
}

/// Text for `plain_text` blocks, which Slack shows as is: only the control characters are
/// neutralised, as in [`escape`].
fn plain(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            c if c.is_control() && c.is_whitespace() => ' ',
            c if is_hidden_control(c) => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Cuts `s` to at most `max` chars, marking the cut with "…".
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    // Never leave half an entity ("&am") from escaping behind.
    if let Some(amp) = out.rfind('&')
        && !out[amp..].contains(';')
    {
        out.truncate(amp);
    }
    out.push('…');
    out
}

fn len(s: &str) -> usize {
    s.chars().count()
}

/// Joins `items` with `sep` while the result stays within `max` chars, then appends
/// "…and N more" for the rest. The result is always ≤ `max` chars.
fn join_within(items: &[String], sep: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        let rest = items.len() - i - 1;
        let more = if rest > 0 {
            format!("{sep}…and {rest} more")
        } else {
            String::new()
        };
        let candidate_len = len(&out) + if i > 0 { len(sep) } else { 0 } + len(item);
        if candidate_len + len(&more) <= max {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(item);
            continue;
        }
        let remaining = items.len() - i;
        let tail = if i > 0 {
            format!("{sep}…and {remaining} more")
        } else {
            format!("…and {remaining} more")
        };
        if len(&out) + len(&tail) <= max {
            out.push_str(&tail);
        } else {
            out = truncate(&out, max.saturating_sub(len(&tail)));
            out.push_str(&tail);
        }
        return truncate(&out, max);
    }
    out
}

fn finding_text(listed: &ListedFinding, message_severity: Severity) -> String {
    let f = &listed.finding;
    let id = escape(&f.key.vulnerability_id);
    // A link that is not https, or could break mrkdwn's <url|label> syntax, is left out,
    // not mangled.
    let id = match non_empty(&f.link).and_then(safe_link) {
        Some(link) => format!("<{}|{id}>", escape(link)),
        None => id,
    };
    let mut pkg = escape(&f.key.package);
    if !f.installed_version.is_empty() {
        pkg.push(' ');
        pkg.push_str(&escape(&f.installed_version));
    }
    if let Some(fixed) = non_empty(&f.fixed_version) {
        pkg.push_str(" → ");
        pkg.push_str(&escape(fixed));
    }
    let mut out = format!("{id} ({pkg})");
    if let Some(previous) = listed.previous_severity {
        // A raise states both ends, so the line reads on its own.
        out.push_str(&format!(" now {}, was {previous}", listed.severity));
    } else if listed.severity != message_severity {
        out.push_str(&format!(" [{}]", listed.severity));
    }
    out
}

/// One image group as a section text: "• *web-app*: CVE-… (pkg 1.0 → 1.1)\n   image `x`".
fn group_text(group: &ImageGroup, message_severity: Severity, max: usize) -> String {
    let names: Vec<String> = group
        .workloads
        .iter()
        .map(|w| format!("*{}*", escape(&w.name)))
        .collect();
    let shown = names.len().min(MAX_NAMES);
    let mut who = names[..shown].join(", ");
    if names.len() > shown {
        who.push_str(&format!(" …and {} more", names.len() - shown));
    }
    let kinds: std::collections::BTreeSet<&str> =
        group.workloads.iter().map(|w| w.kind.as_str()).collect();
    if kinds.len() == 1 {
        let kind = kinds.into_iter().next().unwrap_or_default();
        who.push_str(&format!(" ({})", escape(kind)));
    }
    let image_line = format!("\n      image `{}`", escape(&group.image));
    let image_line = truncate(&image_line, 300);
    let head = truncate(&format!("• {who}"), 600);
    if group.findings.is_empty() {
        return truncate(&format!("{head}{image_line}"), max);
    }
    let findings: Vec<String> = group
        .findings
        .iter()
        .map(|f| truncate(&finding_text(f, message_severity), 500))
        .collect();
    let budget = max.saturating_sub(len(&head) + 2 + len(&image_line));
    let list = join_within(&findings, ", ", budget);
    truncate(&format!("{head}: {list}{image_line}"), max)
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The Slack incoming-webhook body for a message. `details_url` is a `KIJO_DETAILS_URL`
/// template.
pub(crate) fn render(message: &Message, details_url_template: Option<&str>) -> Value {
    let title = plain(&title(message));
    let header_text = truncate(&title, MAX_HEADER_TEXT);
    let mut used = len(&header_text);
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": header_text, "emoji": true}
    })];

    let cluster_field = truncate(
        &format!("*Cluster:*\n{}", escape(&message.cluster)),
        MAX_FIELD_TEXT.min(400),
    );
    let namespace_field = truncate(
        &format!("*Namespace:*\n{}", escape(&message.namespace)),
        MAX_FIELD_TEXT.min(400),
    );
    used += len(&cluster_field) + len(&namespace_field);
    blocks.push(json!({
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": cluster_field},
            {"type": "mrkdwn", "text": namespace_field},
        ]
    }));

    // Distinct vulnerabilities, not per-workload findings: one CVE in an image shared by 100
    // StatefulSets reads "1 vulnerability in 100 workloads".
    let findings = message
        .changes
        .iter()
        .filter(|c| c.has_finding())
        .map(|c| c.finding.key.vulnerability_id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let workloads = message.workload_count();
    let summary = if message.kind == ChangeKind::WorkloadRemoved && findings == 0 {
        format!(
            "*Workloads removed:* {}",
            plural(workloads, "workload", "workloads")
        )
    } else {
        format!(
            "*Workloads affected:* {} in {}",
            plural(findings, "vulnerability", "vulnerabilities"),
            plural(workloads, "workload", "workloads")
        )
    };
    used += len(&summary);
    blocks.push(section(summary));
    let explained = explanation(message.kind);
    if let Some(line) = explained {
        used += len(line);
        blocks.push(section(line.to_owned()));
    }

    let details = details_url_template
        .map(|t| details_url(t, &message.cluster, &message.namespace))
        .filter(|u| !u.contains('|') && !u.contains(char::is_whitespace))
        .map(|u| {
            let u = truncate(&escape(&u), 1000);
            format!("View details: <{u}|{u}>")
        });
    let footer = format!(
        "kijo-agent · message `{}` · {}",
        &message.id[..message.id.len().min(12)],
        message.occurred_at
    );
    // Reserve room for the closing blocks before spending the budget on groups.
    let more_reserve = 120;
    let reserved = details.as_ref().map_or(0, |d| len(d)) + len(&footer) + more_reserve;
    let max_group_sections = MAX_BLOCKS - FIXED_BLOCKS - usize::from(explained.is_some());

    let mut shown = 0;
    for g in &message.groups {
        if shown == max_group_sections {
            break;
        }
        let budget = MAX_TOTAL_TEXT.saturating_sub(used + reserved);
        if budget < 200 {
            break;
        }
        let text = group_text(g, message.severity, MAX_SECTION_TEXT.min(budget));
        used += len(&text);
        blocks.push(section(text));
        shown += 1;
    }
    if shown < message.groups.len() {
        let rest = &message.groups[shown..];
        let rest_findings: usize = rest
            .iter()
            .map(|g| g.findings.len() * g.workloads.len())
            .sum();
        let rest_images: std::collections::BTreeSet<&str> =
            rest.iter().map(|g| g.image.as_str()).collect();
        blocks.push(section(format!(
            "…and {} more ({} in {})",
            plural(rest.len(), "workload group", "workload groups"),
            plural(rest_findings, "finding", "findings"),
            plural(rest_images.len(), "image", "images"),
        )));
    }
    if let Some(details) = details {
        blocks.push(section(details));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": footer}]
    }));

    let fallback = truncate(
        &escape(&format!(
            "{}: {} in {} (namespace {})",
            title,
            plural(findings, "vulnerability", "vulnerabilities"),
            plural(workloads, "workload", "workloads"),
            message.namespace
        )),
        MAX_FALLBACK_TEXT,
    );
    json!({"text": fallback, "blocks": blocks})
}

/// The body of `send_test_message` for Slack: proves the channel is reachable without looking
/// like a real finding.
pub(crate) fn render_test(cluster: &str, now: Timestamp) -> Value {
    let cluster = truncate(&escape(cluster), 200);
    json!({
        "text": format!("kijo-agent test message from {cluster}"),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "🧪 kijo-agent test message", "emoji": true}},
            section(format!(
                "This channel receives kijo-agent notifications for cluster *{cluster}*. No action is needed."
            )),
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("sent {now}")}]},
        ]
    })
}

#[cfg(feature = "test-support")]
/// A Slack body as plain terminal text, for the local demo (`examples/demo.rs`; hence
/// `test-support`): one line per block, mrkdwn links shown as their URL, entities unescaped. Control
/// characters other than the line breaks between blocks are dropped, so no text from a report
/// can move the cursor, ring the bell or recolour the terminal (escape sequences start with
/// ESC), and no bidirectional override can reorder what is shown.
pub fn to_terminal_text(body: &Value) -> String {
    let mut lines = Vec::new();
    for block in body["blocks"].as_array().into_iter().flatten() {
        let texts: Vec<&str> = match block["type"].as_str() {
            Some("header") => block["text"]["text"].as_str().into_iter().collect(),
            Some("section") => {
                let mut t: Vec<&str> = block["text"]["text"].as_str().into_iter().collect();
                if let Some(fields) = block["fields"].as_array() {
                    t.extend(fields.iter().filter_map(|f| f["text"].as_str()));
                }
                t
            }
            Some("context") => block["elements"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["text"].as_str())
                .collect(),
            _ => Vec::new(),
        };
        let line: Vec<String> = texts
            .into_iter()
            .map(|t| terminal_safe(&mrkdwn_to_plain(t)))
            .collect();
        if !line.is_empty() {
            lines.push(line.join("   "));
        }
    }
    lines.join("\n")
}

/// `text` with every control character but the line break dropped, and every bidirectional
/// control: what a terminal shows is then exactly the characters printed (no escape sequence
/// can move the cursor, ring the bell, set the window title or recolour the output). For any
/// report text printed to a terminal (`kijo-agent history`, the demo).
pub(crate) fn terminal_safe(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\n' || !is_hidden_control(*c))
        .collect()
}

#[cfg(feature = "test-support")]
fn mrkdwn_to_plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (url, label) = inner.split_once('|').unwrap_or((inner, inner));
        if url == label {
            out.push_str(url);
        } else {
            out.push_str(&format!("{label} ({url})"));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out.replace(":*\n", ": ")
        .replace(['*', '`'], "")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::group::group;
    use crate::notify::group::tests::{change, change_of_kind};

    /// Every limit this module promises, checked on a rendered body.
    fn assert_within_limits(body: &Value) {
        let text = serde_json::to_string(body).unwrap();
        let _: Value = serde_json::from_str(&text).expect("valid JSON");
        let blocks = body["blocks"].as_array().unwrap();
        assert!(blocks.len() <= MAX_BLOCKS, "{} blocks", blocks.len());
        let mut total = 0;
        for b in blocks {
            match b["type"].as_str().unwrap() {
                "header" => {
                    let t = b["text"]["text"].as_str().unwrap();
                    assert!(len(t) <= MAX_HEADER_TEXT, "header {}", len(t));
                    total += len(t);
                }
                "section" => {
                    if let Some(t) = b["text"]["text"].as_str() {
                        assert!(len(t) <= MAX_SECTION_TEXT, "section {}", len(t));
                        total += len(t);
                    }
                    if let Some(fields) = b["fields"].as_array() {
                        assert!(fields.len() <= 10);
                        for f in fields {
                            let t = f["text"].as_str().unwrap();
                            assert!(len(t) <= MAX_FIELD_TEXT);
                            total += len(t);
                        }
                    }
                }
                "context" => {
                    for e in b["elements"].as_array().unwrap() {
                        total += len(e["text"].as_str().unwrap());
                    }
                }
                other => panic!("unexpected block type {other}"),
            }
        }
        assert!(total <= MAX_TOTAL_TEXT, "total block text {total}");
        assert!(len(body["text"].as_str().unwrap()) <= MAX_FALLBACK_TEXT);
    }

    fn all_text(body: &Value) -> String {
        serde_json::to_string(body).unwrap()
    }

    #[test]
    fn one_finding_looks_like_the_readme_example() {
        let mut c = change("1", "web-app", "CVE-2024-45337", Severity::Critical);
        c.finding.link = String::new();
        let m = &group(vec![c])[0];
        let body = render(m, Some("https://kijo.example.com/clusters/{cluster}"));
        assert_within_limits(&body);
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(
            blocks[0]["text"]["text"],
            "🚨 New Critical Vulnerabilities in production-eu"
        );
        assert_eq!(blocks[1]["fields"][0]["text"], "*Cluster:*\nproduction-eu");
        assert_eq!(blocks[1]["fields"][1]["text"], "*Namespace:*\ndefault");
        assert_eq!(
            blocks[3]["text"]["text"],
            "• *web-app* (Deployment): CVE-2024-45337 (golang.org/x/crypto 0.1.0 → 0.31.0)\n      image `registry.example.com/web-app:1.0`"
        );
        assert_eq!(
            blocks[4]["text"]["text"],
            "View details: <https://kijo.example.com/clusters/production-eu|https://kijo.example.com/clusters/production-eu>"
        );
        assert!(!all_text(&body).contains("more"));
    }

    #[test]
    fn titles_per_kind() {
        let cases = [
            (
                ChangeKind::New,
                "🚨 New High Vulnerabilities in production-eu",
            ),
            (
                ChangeKind::Fixed,
                "✅ High Vulnerabilities Fixed in production-eu",
            ),
            (
                ChangeKind::Reintroduced,
                "⚠️ High Vulnerabilities Reintroduced in production-eu",
            ),
            (
                ChangeKind::WorkloadRemoved,
                "🗑️ Workloads Removed in production-eu",
            ),
            (
                ChangeKind::Withdrawn,
                "ℹ️ High Vulnerabilities No Longer Reported in production-eu",
            ),
            (
                ChangeKind::ReportedAgain,
                "🔁 High Vulnerabilities Reported Again in production-eu",
            ),
            (
                ChangeKind::SeverityRaised,
                "📈 Vulnerabilities Raised to High in production-eu",
            ),
            (
                ChangeKind::ContainerRemoved,
                "🗑️ Containers Removed in production-eu",
            ),
        ];
        for (kind, want) in cases {
            let mut c = change("1", "web", "CVE-1", Severity::High);
            c.kind = kind;
            let m = &group(vec![c])[0];
            assert_eq!(title(m), want);
            assert_eq!(render(m, None)["blocks"][0]["text"]["text"], want);
        }
    }

    /// The first lines of a message's terminal preview.
    fn preview(m: &Message) -> Vec<String> {
        let body = render(m, None);
        assert_within_limits(&body);
        to_terminal_text(&body).lines().map(str::to_owned).collect()
    }

    const FINDING_LINE: &str = "• web-app (Deployment): CVE-2024-45337 (https://avd.aquasec.com/nvd/cve-2024-45337) (golang.org/x/crypto 0.1.0 → 0.31.0)";

    #[test]
    fn withdrawn_and_reported_again_explain_themselves() {
        let cases = [
            (
                ChangeKind::Withdrawn,
                "ℹ️ Critical Vulnerabilities No Longer Reported in production-eu",
                "No longer reported by the scanner — the image did not change.",
            ),
            (
                ChangeKind::ReportedAgain,
                "🔁 Critical Vulnerabilities Reported Again in production-eu",
                "Reported again by the scanner after it had stopped reporting them.",
            ),
        ];
        for (kind, want_title, want_line) in cases {
            let c = change_of_kind(kind, "1", "web-app", "CVE-2024-45337", Severity::Critical);
            let lines = preview(&group(vec![c])[0]);
            assert_eq!(lines[0], want_title);
            assert_eq!(lines[1], "Cluster: production-eu   Namespace: default");
            assert_eq!(
                lines[2],
                "Workloads affected: 1 vulnerability in 1 workload"
            );
            assert_eq!(lines[3], want_line, "right after the summary");
            assert_eq!(lines[4], FINDING_LINE);
            assert_eq!(lines[5], "      image registry.example.com/web-app:1.0");
        }
        // No other kind has an explanation line.
        for kind in ChangeKind::ALL {
            let c = change_of_kind(kind, "1", "web-app", "CVE-2024-45337", Severity::Critical);
            let lines = preview(&group(vec![c])[0]);
            let explained = matches!(kind, ChangeKind::Withdrawn | ChangeKind::ReportedAgain);
            assert_eq!(lines[3] == FINDING_LINE, !explained, "{kind:?}: {lines:?}");
        }
    }

    #[test]
    fn a_raised_finding_says_now_and_was() {
        let mut critical = change("1", "web-app", "CVE-2024-45337", Severity::Critical);
        critical.kind = ChangeKind::SeverityRaised;
        critical.previous_severity = Some(Severity::Medium);
        let mut high = change("2", "web-app", "CVE-2024-1", Severity::High);
        high.kind = ChangeKind::SeverityRaised;
        high.previous_severity = Some(Severity::Low);
        let lines = preview(&group(vec![critical, high])[0]);
        assert_eq!(
            lines[0],
            "📈 Vulnerabilities Raised to Critical in production-eu"
        );
        assert_eq!(
            lines[2],
            "Workloads affected: 2 vulnerabilities in 1 workload"
        );
        assert_eq!(
            lines[3],
            format!(
                "{FINDING_LINE} now CRITICAL, was MEDIUM, CVE-2024-1 (https://avd.aquasec.com/nvd/cve-2024-1) (golang.org/x/crypto 0.1.0 → 0.31.0) now HIGH, was LOW"
            ),
            "each finding states both ends, no [HIGH] tag"
        );
    }

    #[test]
    fn a_closing_message_is_told_at_the_peak() {
        // Announced CRITICAL, lowered to LOW, then fixed: told as CRITICAL, without a [LOW] tag.
        let mut lowered = change_of_kind(
            ChangeKind::Fixed,
            "1",
            "web-app",
            "CVE-2024-45337",
            Severity::Low,
        );
        lowered.peak_severity = Severity::Critical;
        let mut high = change_of_kind(ChangeKind::Fixed, "2", "api", "CVE-2024-1", Severity::High);
        high.finding.link = String::new();
        let m = &group(vec![lowered, high])[0];
        assert_eq!(m.severity, Severity::Critical);
        let lines = preview(m);
        assert_eq!(lines[0], "✅ Critical Vulnerabilities Fixed in production-eu");
        assert_eq!(lines[3], FINDING_LINE);
        assert_eq!(
            lines[5],
            "• api (Deployment): CVE-2024-1 (golang.org/x/crypto 0.1.0 → 0.31.0) [HIGH]"
        );
    }

    #[test]
    fn a_removed_container_is_named_with_its_findings() {
        let mut c = change_of_kind(
            ChangeKind::ContainerRemoved,
            "1",
            "web-app",
            "CVE-2024-45337",
            Severity::Critical,
        );
        c.asset.container = "sidecar".to_owned();
        let lines = preview(&group(vec![c])[0]);
        assert_eq!(lines[0], "🗑️ Containers Removed in production-eu");
        assert_eq!(lines[3], FINDING_LINE);
    }

    #[test]
    fn every_kind_stays_within_every_limit() {
        for kind in ChangeKind::ALL {
            // Many small groups: the block limit binds before the text budget.
            let mut changes = Vec::new();
            for w in 0..120 {
                let mut c = change_of_kind(kind, &format!("{w}"), &format!("w{w}"), "C", Severity::High);
                c.image = format!("i{w}");
                c.previous_severity = (kind == ChangeKind::SeverityRaised).then_some(Severity::Low);
                changes.push(c);
            }
            let body = render(&group(changes)[0], Some("https://kijo.example.com/{cluster}"));
            assert_within_limits(&body);
            let blocks = body["blocks"].as_array().unwrap();
            assert_eq!(blocks.len(), MAX_BLOCKS, "{kind:?}: every block used, none more");
            assert!(all_text(&body).contains("…and "), "{kind:?}");
            // And the large case.
            let mut changes = Vec::new();
            for w in 0..250 {
                for v in 0..20 {
                    let mut c = change_of_kind(
                        kind,
                        &format!("{w}-{v}"),
                        &format!("workload-with-a-rather-long-name-{w:04}"),
                        &format!("CVE-2024-{v:05}"),
                        Severity::Critical,
                    );
                    c.previous_severity =
                        (kind == ChangeKind::SeverityRaised).then_some(Severity::Medium);
                    changes.push(c);
                }
            }
            let body = render(&group(changes)[0], Some("https://kijo.example.com/{cluster}"));
            assert_within_limits(&body);
        }
    }

    #[test]
    fn five_thousand_findings_stay_within_every_limit() {
        let mut changes = Vec::new();
        for w in 0..250 {
            for v in 0..20 {
                let mut c = change(
                    &format!("{w}-{v}"),
                    &format!("workload-with-a-rather-long-name-{w:04}"),
                    &format!("CVE-2024-{v:05}"),
                    Severity::Critical,
                );
                c.finding.key.package = format!("some/quite/long/package/path/number/{v}");
                changes.push(c);
            }
        }
        let messages = group(changes);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].count(), 5000);
        let body = render(&messages[0], Some("https://kijo.example.com/c/{cluster}"));
        assert_within_limits(&body);
        let text = all_text(&body);
        assert!(text.contains("…and "), "truncation is visible");
        assert!(text.contains("more (") && text.contains("View details"));
        assert!(text.contains("20 vulnerabilities in 250 workloads"));
    }

    #[test]
    fn one_huge_group_and_hostile_names_stay_within_limits() {
        // One image on 300 workloads with 400 CVEs each; names full of mrkdwn control chars
        // and a very long cluster name.
        let mut changes = Vec::new();
        for w in 0..300 {
            for v in 0..400 {
                let mut c = change(
                    &format!("{w}-{v}"),
                    &format!("w<{w}>&"),
                    &format!("CVE-<{v}>"),
                    Severity::High,
                );
                c.image = "img:<1>".to_owned();
                c.cluster = "c&".repeat(200);
                changes.push(c);
            }
        }
        let m = &group(changes)[0];
        let body = render(m, None);
        assert_within_limits(&body);
        let text = all_text(&body);
        assert!(text.contains("…and 295 more"), "workload names cut");
        assert!(text.contains("&lt;") && text.contains("&amp;"));
        for b in body["blocks"].as_array().unwrap().iter().skip(1) {
            let s = serde_json::to_string(b).unwrap();
            assert!(!s.contains("w<"), "unescaped < in {s}");
        }
    }

    #[test]
    fn escaping_and_details_url_encoding() {
        assert_eq!(escape("a&b<c>d"), "a&amp;b&lt;c&gt;d");
        assert_eq!(
            details_url("https://x/c/{cluster}/ns/{namespace}", "prod eu", "a/b"),
            "https://x/c/prod%20eu/ns/a%2Fb"
        );
        assert_eq!(
            join_within(&["a".into(), "b".into(), "c".into()], ", ", 100),
            "a, b, c"
        );
        let cut = join_within(&["aaaa".into(), "bbbb".into(), "cccc".into()], ", ", 18);
        assert_eq!(cut, "aaaa, …and 2 more");
        assert!(len(&cut) <= 18);
    }

    #[test]
    fn terminal_preview_reads_like_the_readme() {
        let mut a = change("1", "web-app", "CVE-2024-45337", Severity::Critical);
        a.finding.link = "https://avd.aquasec.com/nvd/cve-2024-45337".to_owned();
        a.image = "a&b:<1>".to_owned();
        let m = &group(vec![a])[0];
        let text = to_terminal_text(&render(
            m,
            Some("https://kijo.example.com/clusters/{cluster}"),
        ));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "🚨 New Critical Vulnerabilities in production-eu");
        assert_eq!(lines[1], "Cluster: production-eu   Namespace: default");
        assert_eq!(
            lines[2],
            "Workloads affected: 1 vulnerability in 1 workload"
        );
        assert_eq!(
            lines[3],
            "• web-app (Deployment): CVE-2024-45337 (https://avd.aquasec.com/nvd/cve-2024-45337) (golang.org/x/crypto 0.1.0 → 0.31.0)"
        );
        assert_eq!(lines[4], "      image a&b:<1>");
        assert_eq!(
            lines[5],
            "View details: https://kijo.example.com/clusters/production-eu"
        );
        assert!(lines[6].starts_with("kijo-agent · message "));
    }

    #[test]
    fn a_removed_workload_without_findings_is_named() {
        let mut c = change("1", "old-batch", "", Severity::Unknown);
        c.kind = ChangeKind::WorkloadRemoved;
        c.asset.workload_kind = "CronJob".to_owned();
        let m = &group(vec![c])[0];
        let body = render(m, None);
        assert_within_limits(&body);
        let text = to_terminal_text(&body);
        assert!(text.contains("Workloads removed: 1 workload"), "{text}");
        assert!(text.contains("• old-batch (CronJob)\n"), "{text}");
    }

    #[test]
    fn test_message_is_small_and_valid() {
        let body = render_test("prod", "2024-01-15T10:30:00Z".parse().unwrap());
        assert_within_limits(&body);
        assert!(all_text(&body).contains("test message"));
    }

    #[test]
    fn only_https_links_become_cve_links() {
        let cases = [
            ("https://avd.aquasec.com/nvd/cve-1", true),
            ("HTTPS://avd.aquasec.com/nvd/cve-1", true),
            ("http://127.0.0.1:8080/cve-1", true),
            ("http://[::1]/cve-1", true),
            ("http://avd.aquasec.com/nvd/cve-1", false),
            ("javascript:alert(1)", false),
            ("javascript://avd.aquasec.com/%0aalert(1)", false),
            ("data:text/html,<script>x</script>", false),
            ("file:///etc/passwd", false),
            ("//avd.aquasec.com/nvd/cve-1", false),
            ("https://avd.aquasec.com/a|b", false),
            ("https://avd.aquasec.com/\u{202E}exe.fdp", false),
            ("", false),
        ];
        for (link, linked) in cases {
            let mut c = change("1", "web", "CVE-1", Severity::Critical);
            c.finding.link = link.to_owned();
            let body = render(&group(vec![c])[0], None);
            let text = body["blocks"][3]["text"]["text"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(text.contains("|CVE-1>"), linked, "{link:?}: {text}");
            if !linked {
                assert!(!text.contains('<'), "{link:?}: {text}");
            }
        }
    }

    /// Control characters, line breaks and bidi overrides from a report never reach Slack raw.
    #[test]
    fn report_text_cannot_fake_lines_ring_bells_or_reorder() {
        let hostile = "a\nb\r\tc\u{7}d\u{1b}[31me\u{202E}f\u{2066}g\u{85}h*i*`j`";
        let mut c = change("1", hostile, hostile, Severity::Critical);
        c.finding.key.package = hostile.to_owned();
        c.finding.installed_version = hostile.to_owned();
        c.finding.fixed_version = hostile.to_owned();
        c.image = hostile.to_owned();
        c.asset.namespace = hostile.to_owned();
        c.cluster = hostile.to_owned();
        c.asset.workload_kind = hostile.to_owned();
        let m = &group(vec![c])[0];
        let body = render(m, None);
        assert_within_limits(&body);
        let blocks = body["blocks"].as_array().unwrap();
        let mut texts = vec![
            body["text"].as_str().unwrap(),
            blocks[0]["text"]["text"].as_str().unwrap(),
        ];
        texts.extend(
            blocks[1]["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["text"].as_str().unwrap()),
        );
        texts.extend(
            blocks[2..]
                .iter()
                .filter_map(|b| b["text"]["text"].as_str()),
        );
        for (i, text) in texts.into_iter().enumerate() {
            for c in text.chars() {
                assert!(c == '\n' || !is_hidden_control(c), "{c:?} in {text:?}");
            }
            // Only the line breaks this module writes: "*Cluster:*\n…" and "\n      image".
            assert!(text.matches('\n').count() <= 1, "{text:?}");
            // The header is plain_text, where `*` and `` ` `` are just characters.
            if i != 1 {
                assert!(!text.contains("*i*") && !text.contains("`j`"), "{text:?}");
            }
        }
        let group_text = blocks[3]["text"]["text"].as_str().unwrap();
        assert!(
            group_text.contains("a b  c\u{fffd}d\u{fffd}[31me\u{fffd}f"),
            "{group_text}"
        );
    }

    #[test]
    fn terminal_text_drops_control_characters() {
        // A body as it could have been rendered before report text was neutralised.
        let body = json!({"blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "title\u{1b}]0;pwned\u{7}"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "• *w\u{1b}[2J*: CVE-1\u{202E}\r (pkg)\n      image `x\u{9b}31m`"}},
        ]});
        let text = to_terminal_text(&body);
        assert_eq!(text, "title]0;pwned\n• w[2J: CVE-1 (pkg)\n      image x31m");
    }

    #[test]
    fn terminal_safe_keeps_only_printable_text_and_line_breaks() {
        let cases = [
            ("plain\nlines", "plain\nlines"),
            ("a\u{1b}[2Jb", "a[2Jb"),
            ("bell\u{7} tab\t cr\r", "bell tab cr"),
            ("rtl\u{202E}txt.exe\u{2069}", "rtltxt.exe"),
            ("c1\u{9b}31m", "c131m"),
        ];
        for (text, want) in cases {
            assert_eq!(terminal_safe(text), want, "{text:?}");
        }
    }
}
