//! Label selectors as the API server parses them: `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default)]
pub struct Selector(Vec<Req>);

/// Splits on commas that are not inside a `(...)` value set.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn value_set(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("found '{s}', expected: '(' ... ')'"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let t = term.trim();
            if t.is_empty() {
                continue;
            }
            let req = if let Some(k) = t.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Req::NotIn(k.trim().to_string(), value_set(v)?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                Req::In(k.trim().to_string(), value_set(v)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Req::Ne(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = t.split_once("==") {
                Req::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = t.split_once('=') {
                Req::Eq(k.trim().to_string(), v.trim().to_string())
            } else if t.contains(char::is_whitespace) || t.contains('(') {
                return Err(format!("unable to parse requirement: {t:?}"));
            } else {
                Req::Exists(t.to_string())
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_like_the_api_server() {
        let labels =
            json!({"app": "web", "tier": "front", "trivy-operator.container.name": "nginx"});
        let labels = labels.as_object();
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=api", false),
            ("app!=api", true),
            ("missing!=x", true),
            ("app in (api,web)", true),
            ("app in (api)", false),
            ("app notin (api)", true),
            ("missing notin (api)", true),
            ("tier", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            (
                "app in (api, web),trivy-operator.container.name=nginx",
                true,
            ),
        ];
        for (sel, want) in cases {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(labels), *want, "{sel}");
        }
        assert!(Selector::parse("").unwrap().matches(None));
        assert!(!Selector::parse("app=web").unwrap().matches(None));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for sel in ["app in web", "a b", "app in (x"] {
            assert!(Selector::parse(sel).is_err(), "{sel}");
        }
    }
}
