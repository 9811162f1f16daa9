//! Finding severity, shared by the report model, the lifecycle, the threshold setting and the
//! messages. Trivy Operator writes the upper-case names; anything else it counts as UNKNOWN, so
//! parsing here is case-insensitive and the ordering puts UNKNOWN lowest.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

    /// Reads a severity as Trivy Operator writes it: anything it does not recognise counts as
    /// UNKNOWN, exactly as the operator's own summary counts it.
    pub fn from_trivy(s: &str) -> Severity {
        s.parse().unwrap_or(Severity::Unknown)
    }

    /// The spelling used in human-facing titles ("New Critical Vulnerabilities").
    pub fn title_case(self) -> &'static str {
        match self {
            Severity::Unknown => "Unknown-Severity",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }

    /// The upper-case spelling Trivy uses, also used in payloads and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a word that is not a severity; it lists the accepted ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSeverity;

impl fmt::Display for UnknownSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected one of CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN")
    }
}

impl std::error::Error for UnknownSeverity {}

impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(UnknownSeverity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively() {
        let cases = [
            ("CRITICAL", Ok(Severity::Critical)),
            ("critical", Ok(Severity::Critical)),
            (" High ", Ok(Severity::High)),
            ("medium", Ok(Severity::Medium)),
            ("Low", Ok(Severity::Low)),
            ("unknown", Ok(Severity::Unknown)),
            ("severe", Err(UnknownSeverity)),
            ("", Err(UnknownSeverity)),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Severity>(), want, "input {input:?}");
        }
    }

    #[test]
    fn orders_from_unknown_to_critical() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::High > Severity::Medium);
        assert!(Severity::Medium > Severity::Low);
        assert!(Severity::Low > Severity::Unknown);
    }
}
