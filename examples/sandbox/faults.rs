//! Fault injection: the next N matching requests answer with an error, slowly, truncated or
//! not at all. Queued from `--fault SPEC` or `POST /_sandbox/faults`.

use std::sync::Mutex;

use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Status401,
    Status500,
    Status503,
    Status429,
    ExpireContinue,
    Slow,
    Truncate,
    Drop,
}

impl FaultKind {
    fn parse(s: &str) -> Option<FaultKind> {
        Some(match s {
            "401" => FaultKind::Status401,
            "500" => FaultKind::Status500,
            "503" => FaultKind::Status503,
            "429" => FaultKind::Status429,
            "410-continue" | "410" => FaultKind::ExpireContinue,
            "slow" => FaultKind::Slow,
            "truncate" => FaultKind::Truncate,
            "drop" => FaultKind::Drop,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            FaultKind::Status401 => "401",
            FaultKind::Status500 => "500",
            FaultKind::Status503 => "503",
            FaultKind::Status429 => "429",
            FaultKind::ExpireContinue => "410-continue",
            FaultKind::Slow => "slow",
            FaultKind::Truncate => "truncate",
            FaultKind::Drop => "drop",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub count: u64,
    pub retry_after_seconds: u64,
    pub delay_ms: u64,
    pub path_contains: Option<String>,
}

impl Fault {
    /// `KIND[:COUNT][:retry=SECONDS][:delay=MS][:path=SUBSTRING]`, e.g. `500:3`, `429:2:retry=1`,
    /// `slow:1:delay=2000`, `410-continue:1`, `truncate:1:path=vulnerabilityreports`.
    pub fn parse_cli(spec: &str) -> Result<Fault, String> {
        let mut parts = spec.split(':');
        let kind_s = parts.next().unwrap_or("");
        let kind = FaultKind::parse(kind_s)
            .ok_or_else(|| format!("--fault {spec:?}: unknown kind {kind_s:?} (500, 503, 429, 401, 410-continue, slow, truncate, drop)"))?;
        let mut f = Fault {
            kind,
            count: 1,
            retry_after_seconds: 1,
            delay_ms: 1000,
            path_contains: None,
        };
        let rest: Vec<&str> = parts.collect();
        let mut i = 0;
        while i < rest.len() {
            let p = rest[i];
            let bad = || format!("--fault {spec:?}: cannot parse {p:?}");
            if let Some(v) = p.strip_prefix("retry=") {
                f.retry_after_seconds = v.parse().map_err(|_| bad())?;
            } else if let Some(v) = p.strip_prefix("delay=") {
                f.delay_ms = v.parse().map_err(|_| bad())?;
            } else if let Some(v) = p.strip_prefix("path=") {
                // The path filter is last and may itself contain ':'.
                f.path_contains = Some(
                    std::iter::once(v)
                        .chain(rest[i + 1..].iter().copied())
                        .collect::<Vec<_>>()
                        .join(":"),
                );
                break;
            } else {
                f.count = p.parse().map_err(|_| bad())?;
            }
            i += 1;
        }
        Ok(f)
    }

    pub fn from_json(v: &Value) -> Result<Fault, String> {
        let kind_s = v
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("fault needs a string \"kind\"")?;
        let kind =
            FaultKind::parse(kind_s).ok_or_else(|| format!("unknown fault kind {kind_s:?}"))?;
        Ok(Fault {
            kind,
            count: v.get("count").and_then(Value::as_u64).unwrap_or(1),
            retry_after_seconds: v
                .get("retry_after_seconds")
                .and_then(Value::as_u64)
                .unwrap_or(1),
            delay_ms: v.get("delay_ms").and_then(Value::as_u64).unwrap_or(1000),
            path_contains: v
                .get("path_contains")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "kind": self.kind.name(), "count": self.count, "retry_after_seconds": self.retry_after_seconds,
            "delay_ms": self.delay_ms, "path_contains": self.path_contains,
        })
    }
}

#[derive(Default)]
pub struct Faults(Mutex<Vec<Fault>>);

impl Faults {
    pub fn add(&self, f: Fault) {
        if f.count > 0 {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(f);
        }
    }
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    pub fn pending(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(Fault::to_json)
            .collect()
    }

    /// Consumes one use of the first fault matching this request, if any.
    pub fn take(&self, path_and_query: &str, is_continue_list: bool) -> Option<Fault> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let i = g.iter().position(|f| {
            (f.kind != FaultKind::ExpireContinue || is_continue_list)
                && f.path_contains
                    .as_deref()
                    .is_none_or(|p| path_and_query.contains(p))
        })?;
        g[i].count -= 1;
        let f = g[i].clone();
        if g[i].count == 0 {
            g.remove(i);
        }
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_specs_parse() {
        let f = Fault::parse_cli("500:3").unwrap();
        assert_eq!((f.kind, f.count), (FaultKind::Status500, 3));
        let f = Fault::parse_cli("429:2:retry=7").unwrap();
        assert_eq!(
            (f.kind, f.count, f.retry_after_seconds),
            (FaultKind::Status429, 2, 7)
        );
        let f = Fault::parse_cli("slow:delay=250").unwrap();
        assert_eq!((f.kind, f.count, f.delay_ms), (FaultKind::Slow, 1, 250));
        let f = Fault::parse_cli("truncate:1:path=/apis/x:y").unwrap();
        assert_eq!(f.path_contains.as_deref(), Some("/apis/x:y"));
        assert_eq!(
            Fault::parse_cli("410-continue").unwrap().kind,
            FaultKind::ExpireContinue
        );
        assert_eq!(
            Fault::parse_cli("503:retry=4").unwrap().retry_after_seconds,
            4
        );
        assert_eq!(Fault::parse_cli("401").unwrap().kind, FaultKind::Status401);
        assert!(Fault::parse_cli("teapot:1").is_err());
        assert!(Fault::parse_cli("500:many").is_err());
    }

    #[test]
    fn faults_are_consumed_per_matching_request() {
        let faults = Faults::default();
        faults.add(Fault::parse_cli("500:2:path=reports").unwrap());
        faults.add(Fault::parse_cli("410-continue:1").unwrap());
        assert!(faults.take("/api/v1/pods", false).is_none());
        assert_eq!(
            faults.take("/apis/x/reports", false).map(|f| f.kind),
            Some(FaultKind::Status500)
        );
        assert_eq!(
            faults.take("/apis/x/reports", false).map(|f| f.kind),
            Some(FaultKind::Status500)
        );
        assert!(
            faults.take("/apis/x/reports", false).is_none(),
            "410-continue needs a continue list"
        );
        assert_eq!(
            faults
                .take("/apis/x/reports?continue=a", true)
                .map(|f| f.kind),
            Some(FaultKind::ExpireContinue)
        );
        assert!(faults.pending().is_empty());
    }
}
