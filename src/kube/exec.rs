//! Exec credential plugins (`aws eks get-token`, `gke-gcloud-auth-plugin`, `kubelogin`).
//!
//! The agent is a daemon: the plugin never gets a terminal (`interactive: false`, stdin
//! closed), and `KUBERNETES_EXEC_INFO` is always set because `aws eks get-token` picks its
//! output version from it (Kubernetes docs: "client-go credential plugins").

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Deserialize;

use super::config::ExecConfig;
use super::error::KubeError;
use crate::secret::Secret;

/// How long a plugin may run before it is killed. Cloud CLIs can be slow on a cold start.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a plugin returned.
#[derive(Clone, Debug)]
pub struct ExecCredential {
    pub token: Option<Secret<String>>,
    /// PEM certificate and key.
    pub client_cert: Option<(Vec<u8>, Secret<Vec<u8>>)>,
    /// `None`: valid until the API answers 401.
    pub expires: Option<Timestamp>,
}

impl ExecCredential {
    /// Refreshed a minute early so a request never goes out with a token that expires on the
    /// way.
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        match self.expires {
            None => true,
            Some(exp) => now + jiff::SignedDuration::from_secs(60) < exp,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOutput {
    api_version: Option<String>,
    kind: Option<String>,
    status: Option<RawStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawStatus {
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
    expiration_timestamp: Option<String>,
}

/// Parses a plugin's stdout. Errors never include the output: it holds the credential.
pub fn parse_exec_output(api_version: &str, stdout: &[u8]) -> Result<ExecCredential, String> {
    let raw: RawOutput = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "output is not an ExecCredential JSON object (line {} column {})",
            e.line(),
            e.column()
        )
    })?;
    if raw.kind.as_deref() != Some("ExecCredential") {
        return Err(format!(
            "output kind is {:?}, expected ExecCredential",
            raw.kind.unwrap_or_default()
        ));
    }
    let got = raw.api_version.unwrap_or_default();
    if got != api_version {
        return Err(format!(
            "output apiVersion {got:?} differs from the configured {api_version:?}"
        ));
    }
    let status = raw
        .status
        .ok_or_else(|| "output has no status".to_string())?;
    let token = status.token.filter(|t| !t.is_empty()).map(Secret::new);
    let cert = status.client_certificate_data.filter(|c| !c.is_empty());
    let key = status.client_key_data.filter(|k| !k.is_empty());
    let client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c.into_bytes(), Secret::new(k.into_bytes()))),
        (None, None) => None,
        _ => {
            return Err(
                "status has only one of clientCertificateData and clientKeyData".to_string(),
            );
        }
    };
    if token.is_none() && client_cert.is_none() {
        return Err("status has neither a token nor a client certificate".to_string());
    }
    let expires = match status.expiration_timestamp.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<Timestamp>()
                .map_err(|e| format!("status.expirationTimestamp {s:?}: {e}"))?,
        ),
    };
    Ok(ExecCredential {
        token,
        client_cert,
        expires,
    })
}

/// The `KUBERNETES_EXEC_INFO` document.
pub fn exec_info(cfg: &ExecConfig) -> String {
    let mut spec = serde_json::json!({ "interactive": false });
    if let Some(cluster) = &cfg.cluster_info {
        spec["cluster"] = cluster.clone();
    }
    serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": cfg.api_version,
        "spec": spec,
    })
    .to_string()
}

/// Runs the plugin and parses its credential.
pub fn run_plugin(cfg: &ExecConfig) -> Result<ExecCredential, KubeError> {
    let fail = |m: String| KubeError::Credentials(format!("exec plugin {}: {m}", cfg.command));
    let mut cmd = Command::new(&cfg.command);
    cmd.args(&cfg.args)
        .envs(cfg.env.iter().map(|(k, v)| (k, v)))
        .env("KUBERNETES_EXEC_INFO", exec_info(cfg))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        let hint = if cfg.install_hint.is_empty() {
            String::new()
        } else {
            format!("; {}", cfg.install_hint.trim())
        };
        fail(format!("cannot start: {e}{hint}"))
    })?;
    // Read both pipes on threads so a chatty plugin cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + PLUGIN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "did not finish within {}s; killed",
                    PLUGIN_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(fail(format!("waiting for it failed: {e}"))),
        }
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr);
    if !status.success() {
        return Err(fail(format!(
            "exited with {status}; stderr: {}",
            stderr.trim()
        )));
    }
    if !stderr.trim().is_empty() {
        log::info!(command = cfg.command.as_str(), stderr = stderr.trim(); "exec credential plugin wrote to stderr");
    }
    parse_exec_output(&cfg.api_version, &stdout).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "client.authentication.k8s.io/v1";

    #[test]
    fn exec_output_parsing() {
        // Ok((has token, has client cert, has expiry)) or Err(message fragment).
        type Want = Result<(bool, bool, bool), &'static str>;
        let cases: &[(&str, Want)] = &[
            (
                r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"k8s-aws-v1.abc","expirationTimestamp":"2026-01-01T00:14:00Z"}}"#,
                Ok((true, false, true)),
            ),
            (
                r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}"#,
                Ok((true, false, false)),
            ),
            (
                r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"-----BEGIN CERTIFICATE-----","clientKeyData":"-----BEGIN EC PRIVATE KEY-----"}}"#,
                Ok((false, true, false)),
            ),
            (
                r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t"}}"#,
                Err("differs from the configured"),
            ),
            (
                r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"Other","status":{"token":"t"}}"#,
                Err("expected ExecCredential"),
            ),
            (
                r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{}}"#,
                Err("neither a token"),
            ),
            (
                r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientKeyData":"k"}}"#,
                Err("only one of"),
            ),
            (
                r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t","expirationTimestamp":"soon"}}"#,
                Err("expirationTimestamp"),
            ),
            (r#"token=supersecret"#, Err("not an ExecCredential")),
        ];
        for (input, want) in cases {
            let got = parse_exec_output(V1, input.as_bytes());
            match (want, got) {
                (Ok((tok, cert, exp)), Ok(c)) => {
                    assert_eq!(c.token.is_some(), *tok, "{input}");
                    assert_eq!(c.client_cert.is_some(), *cert, "{input}");
                    assert_eq!(c.expires.is_some(), *exp, "{input}");
                }
                (Err(frag), Err(e)) => {
                    assert!(e.contains(frag), "{input}: {e}");
                    assert!(!e.contains("supersecret"), "{e}");
                }
                (w, g) => panic!("{input}: want {w:?} got {:?}", g.map(|_| ())),
            }
        }
    }

    #[test]
    fn freshness_refreshes_a_minute_early() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let cred = |exp: Option<&str>| ExecCredential {
            token: None,
            client_cert: None,
            expires: exp.map(|e| e.parse().unwrap()),
        };
        assert!(cred(None).is_fresh(now));
        assert!(cred(Some("2026-01-01T00:02:00Z")).is_fresh(now));
        assert!(!cred(Some("2026-01-01T00:00:30Z")).is_fresh(now));
        assert!(!cred(Some("2025-12-31T00:00:00Z")).is_fresh(now));
    }

    #[test]
    fn exec_info_is_never_interactive() {
        let cfg = ExecConfig {
            command: "x".into(),
            args: vec![],
            env: vec![],
            api_version: V1.into(),
            install_hint: String::new(),
            cluster_info: Some(serde_json::json!({"server": "https://s"})),
        };
        let v: serde_json::Value = serde_json::from_str(&exec_info(&cfg)).unwrap();
        assert_eq!(v["apiVersion"], V1);
        assert_eq!(v["spec"]["interactive"], false);
        assert_eq!(v["spec"]["cluster"]["server"], "https://s");
    }
}
