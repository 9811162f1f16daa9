//! Errors of the Kubernetes client. Callers branch on the variant (a 403 is a configuration
//! problem, a 404 on a collection means the CRD is absent, a transport error fails the cycle);
//! the messages name the URL path and the HTTP status and never carry a credential.

use std::fmt;

#[derive(Debug)]
#[non_exhaustive]
pub enum KubeError {
    /// Start-up configuration: kubeconfig, in-cluster files, certificates. The message names
    /// the file, field or variable.
    Config(String),
    /// No cluster configuration anywhere: not in a cluster, no kubeconfig given or found.
    /// Unlike [`KubeError::Config`] nothing is broken yet; the agent runs (probes, store) and
    /// each cycle reports this.
    NotConfigured(String),
    /// Obtaining a credential failed (exec plugin, token file).
    Credentials(String),
    /// The API answered with an error status (after retries where they apply).
    Api {
        method: &'static str,
        path: String,
        status: u16,
        /// `Status.reason` (e.g. `Forbidden`), empty when the body was not a Status.
        reason: String,
        /// `Status.message` or the start of a non-JSON body.
        message: String,
    },
    /// No usable HTTP response: connection refused, TLS failure, timeout (after retries).
    Transport {
        method: &'static str,
        path: String,
        message: String,
    },
    /// The response body could not be read or decoded (truncated, invalid JSON), after
    /// retries.
    Body { path: String, message: String },
    /// A listing restarted too often (continue tokens kept expiring, or pages kept failing
    /// mid-body).
    TooManyRestarts { path: String, restarts: u32 },
    /// [`crate::kube::Client::shutdown`] was called.
    Shutdown,
}

impl KubeError {
    /// The HTTP status for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403)
    }

    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }
}

/// Drops the query string: continue tokens and selectors make messages long and say nothing
/// a person needs.
pub(crate) fn path_only(path_and_query: &str) -> String {
    path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p)
        .to_owned()
}

impl fmt::Display for KubeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeError::Config(m) | KubeError::NotConfigured(m) => {
                write!(f, "kubernetes configuration: {m}")
            }
            KubeError::Credentials(m) => write!(f, "kubernetes credentials: {m}"),
            KubeError::Api {
                method,
                path,
                status,
                reason,
                message,
            } => {
                write!(f, "{method} {path}: http {status}")?;
                if !reason.is_empty() {
                    write!(f, " {reason}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                let hint = match status {
                    401 => {
                        "; the token or client certificate was rejected: check the kubeconfig user, \
                         the exec plugin or the service-account token"
                    }
                    403 => {
                        "; the agent's identity lacks RBAC for this request: see \
                         \"Required RBAC\" in docs/kubernetes.md for the ClusterRole"
                    }
                    404 => {
                        "; not found (for a report collection: is the Trivy Operator CRD installed?)"
                    }
                    429 | 503 => "; the API server is overloaded, retries were exhausted",
                    _ => "",
                };
                f.write_str(hint)
            }
            KubeError::Transport {
                method,
                path,
                message,
            } => write!(
                f,
                "{method} {path}: no response from the api server: {message}"
            ),
            KubeError::Body { path, message } => {
                write!(f, "GET {path}: could not read the response body: {message}")
            }
            KubeError::TooManyRestarts { path, restarts } => write!(
                f,
                "GET {path}: listing restarted {restarts} times (expired continue tokens or broken pages); giving up this cycle"
            ),
            KubeError::Shutdown => f.write_str("kubernetes client shut down"),
        }
    }
}

impl std::error::Error for KubeError {}
