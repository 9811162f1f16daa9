//! One line of the `--dry-run` checklist, shared by every subsystem that contributes checks
//! (configuration, store, Kubernetes access, notification targets).

/// A named check and its outcome; `detail` says what was found or what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    /// `Ok(detail)` passed, `Err(detail)` failed.
    pub(crate) fn new(name: impl Into<String>, outcome: Result<String, String>) -> Check {
        let (ok, detail) = match outcome {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        Check {
            name: name.into(),
            ok,
            detail,
        }
    }
}
