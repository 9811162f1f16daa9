//! Where the API server is and how to authenticate: in-cluster service account or kubeconfig.
//!
//! The resolution follows client-go (`clientcmd` loading rules and `rest.InClusterConfig`) so that a kubeconfig which works with
//! kubectl works here: several `KUBECONFIG` files merged with "first file wins, entries whole
//! by name", relative paths resolved against the file that named them, `*-data` fields base64.
//! Everything that can be checked is checked here, before the first request, so a broken
//! configuration is a start-up error with the file named, not a failure in the poll loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use super::KubeOptions;
use super::error::KubeError;
use crate::secret::Secret;

/// The service-account mount every pod gets (Kubernetes docs: "Accessing the Kubernetes API
/// from a Pod").
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where a configuration came from, for `describe` and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    InCluster,
    Kubeconfig {
        context: String,
        files: Vec<PathBuf>,
    },
}

/// A client certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct ClientCertPem {
    pub cert: Vec<u8>,
    pub key: Secret<Vec<u8>>,
}

/// How requests authenticate, besides a client certificate.
#[derive(Clone, Debug)]
pub enum AuthConfig {
    None,
    Token(Secret<String>),
    /// Re-read periodically and on 401 (bound tokens rotate). The static token, if the
    /// kubeconfig also has one, is used only while the file is unreadable.
    TokenFile {
        path: PathBuf,
        fallback: Option<Secret<String>>,
    },
    Exec(ExecConfig),
}

/// A `user.exec` stanza (client.authentication.k8s.io). `Debug` shows only the command:
/// arguments and environment may carry credentials.
#[derive(Clone, PartialEq)]
pub struct ExecConfig {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub api_version: String,
    pub install_hint: String,
    /// `spec.cluster` for `KUBERNETES_EXEC_INFO` when `provideClusterInfo` is set.
    pub cluster_info: Option<serde_json::Value>,
}

impl std::fmt::Debug for ExecConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecConfig")
            .field("command", &self.command)
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

/// A resolved, validated configuration.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Base URL without a trailing slash; may carry a path prefix (Rancher-style proxies).
    pub server: String,
    pub origin: Origin,
    /// Trusted CAs (PEM, possibly several). `None` means the compiled-in public roots.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_tls_verify: bool,
    pub tls_server_name: Option<String>,
    pub proxy_url: Option<String>,
    pub client_cert: Option<ClientCertPem>,
    pub auth: AuthConfig,
    /// The default namespace (context namespace, or the pod's namespace in-cluster). Only tests
    /// read it: the agent names namespaces explicitly and the Lease namespace is resolved by
    /// `leader`.
    #[cfg(feature = "test-support")]
    pub namespace: String,
}

fn config_err(msg: impl Into<String>) -> KubeError {
    KubeError::Config(msg.into())
}

impl ClusterConfig {
    /// Resolves the configuration as the agent's flags and environment ask: an explicit
    /// kubeconfig path, else in-cluster when `KUBERNETES_SERVICE_HOST` is set, else
    /// `KUBECONFIG` or `~/.kube/config`.
    pub fn resolve(opts: &KubeOptions) -> Result<ClusterConfig, KubeError> {
        if let Some(path) = &opts.kubeconfig {
            if !path.is_file() {
                return Err(config_err(format!(
                    "kubeconfig {} does not exist or is not a file",
                    path.display()
                )));
            }
            return from_kubeconfig_files(std::slice::from_ref(path), opts.context.as_deref());
        }
        let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
        if !host.is_empty() {
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
            let dir = opts
                .service_account_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR));
            return ClusterConfig::in_cluster(&host, &port, &dir);
        }
        let files = kubeconfig_search_path(
            std::env::var_os("KUBECONFIG").as_deref(),
            std::env::var_os("HOME").as_deref(),
        );
        if files.is_empty() {
            return Err(KubeError::NotConfigured(
                "no kubeconfig: not in a cluster (KUBERNETES_SERVICE_HOST unset), KUBECONFIG unset and no ~/.kube/config; pass --kubeconfig".into(),
            ));
        }
        from_kubeconfig_files(&files, opts.context.as_deref())
    }

    /// In-cluster configuration from the service-account directory. The URL uses the IP from
    /// the environment, as client-go does, and the CA bundle alone is trusted.
    pub fn in_cluster(host: &str, port: &str, sa_dir: &Path) -> Result<ClusterConfig, KubeError> {
        if port.is_empty() {
            return Err(config_err(
                "KUBERNETES_SERVICE_HOST is set but KUBERNETES_SERVICE_PORT is empty",
            ));
        }
        let host_part = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let token_path = sa_dir.join("token");
        let ca_path = sa_dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|e| {
            config_err(format!(
                "in-cluster CA bundle {}: {e}; is the service-account token mounted (automountServiceAccountToken)?",
                ca_path.display()
            ))
        })?;
        check_ca_pem(&ca, &ca_path.display().to_string())?;
        read_token_file(&token_path)?;
        #[cfg(feature = "test-support")]
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string(sa_dir.join("namespace"))
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".to_owned());
        Ok(ClusterConfig {
            server: format!("https://{host_part}:{port}"),
            origin: Origin::InCluster,
            ca_pem: Some(ca),
            insecure_skip_tls_verify: false,
            tls_server_name: None,
            proxy_url: None,
            client_cert: None,
            auth: AuthConfig::TokenFile {
                path: token_path,
                fallback: None,
            },
            #[cfg(feature = "test-support")]
            namespace,
        })
    }
}

/// Reads and trims a token file; an empty file is an error, as in client-go.
pub(crate) fn read_token_file(path: &Path) -> Result<Secret<String>, KubeError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| KubeError::Credentials(format!("token file {}: {e}", path.display())))?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(KubeError::Credentials(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(token.to_owned()))
}

fn check_ca_pem(pem: &[u8], what: &str) -> Result<(), KubeError> {
    let n = ureq::tls::parse_pem(pem)
        .filter(|i| matches!(i, Ok(ureq::tls::PemItem::Certificate(_))))
        .count();
    if n == 0 {
        return Err(config_err(format!("{what} holds no PEM certificate")));
    }
    Ok(())
}

/// The files client-go would read: `KUBECONFIG` entries (deduplicated, empty entries and
/// missing files skipped), else `$HOME/.kube/config` when it exists.
pub fn kubeconfig_search_path(
    kubeconfig_env: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Vec<PathBuf> {
    if let Some(list) = kubeconfig_env.filter(|v| !v.is_empty()) {
        let mut out: Vec<PathBuf> = Vec::new();
        for p in std::env::split_paths(list) {
            if p.as_os_str().is_empty() || out.contains(&p) {
                continue;
            }
            if p.is_file() {
                out.push(p);
            } else {
                log::warn!(path = p.display().to_string().as_str(); "kubeconfig file listed in KUBECONFIG does not exist; skipped");
            }
        }
        return out;
    }
    match home {
        Some(h) => {
            let p = Path::new(h).join(".kube").join("config");
            if p.is_file() { vec![p] } else { vec![] }
        }
        None => vec![],
    }
}

// ---- kubeconfig file model ----

#[derive(Deserialize, Default, Debug)]
struct KubeconfigFile {
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    clusters: Option<Vec<NamedCluster>>,
    users: Option<Vec<NamedUser>>,
    contexts: Option<Vec<NamedContext>>,
}

#[derive(Deserialize, Debug)]
struct NamedCluster {
    name: String,
    cluster: Option<RawCluster>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "kebab-case", default)]
struct RawCluster {
    server: Option<String>,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: Option<bool>,
    tls_server_name: Option<String>,
    proxy_url: Option<String>,
    extensions: Option<Vec<NamedExtension>>,
}

#[derive(Deserialize, Debug, Clone)]
struct NamedExtension {
    name: String,
    extension: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug)]
struct NamedUser {
    name: String,
    user: Option<RawUser>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct RawUser {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    #[serde(rename = "client-certificate")]
    client_certificate: Option<String>,
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key")]
    client_key: Option<String>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_json::Value>,
    exec: Option<RawExec>,
}

/// Never print a user stanza: it holds credentials.
impl std::fmt::Debug for RawUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawUser(***)")
    }
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase", default)]
struct RawExec {
    command: Option<String>,
    args: Option<Vec<String>>,
    env: Option<Vec<RawEnv>>,
    api_version: Option<String>,
    install_hint: Option<String>,
    provide_cluster_info: Option<bool>,
    interactive_mode: Option<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default)]
struct RawEnv {
    name: String,
    value: String,
}

#[derive(Deserialize, Debug)]
struct NamedContext {
    name: String,
    context: Option<RawContext>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default)]
struct RawContext {
    cluster: Option<String>,
    user: Option<String>,
    #[cfg(feature = "test-support")]
    namespace: Option<String>,
}

/// Entries remember the directory of the file that defined them, for relative paths.
#[derive(Default, Debug)]
struct Merged {
    current_context: Option<String>,
    clusters: BTreeMap<String, (PathBuf, RawCluster)>,
    users: BTreeMap<String, (PathBuf, RawUser)>,
    contexts: BTreeMap<String, RawContext>,
}

fn merge(files: Vec<(PathBuf, KubeconfigFile)>) -> Merged {
    let mut m = Merged::default();
    for (path, f) in files {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if m.current_context.is_none() {
            m.current_context = f.current_context.filter(|c| !c.is_empty());
        }
        for c in f.clusters.unwrap_or_default() {
            m.clusters
                .entry(c.name)
                .or_insert_with(|| (dir.clone(), c.cluster.unwrap_or_default()));
        }
        for u in f.users.unwrap_or_default() {
            m.users
                .entry(u.name)
                .or_insert_with(|| (dir.clone(), u.user.unwrap_or_default()));
        }
        for c in f.contexts.unwrap_or_default() {
            m.contexts
                .entry(c.name)
                .or_insert_with(|| c.context.unwrap_or_default());
        }
    }
    m
}

fn parse_kubeconfig(path: &Path, text: &str) -> Result<KubeconfigFile, KubeError> {
    // serde-saphyr's message can quote the offending line, which may hold a token: report
    // only the position.
    serde_saphyr::from_str::<Option<KubeconfigFile>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            let location = e
                .location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            config_err(format!(
                "kubeconfig {} is not valid YAML for a kubeconfig{location}",
                path.display()
            ))
        })
}

/// Loads, merges and resolves kubeconfig files for one context.
pub fn from_kubeconfig_files(
    files: &[PathBuf],
    context: Option<&str>,
) -> Result<ClusterConfig, KubeError> {
    let mut parsed = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_err(format!("kubeconfig {}: {e}", path.display())))?;
        parsed.push((path.clone(), parse_kubeconfig(path, &text)?));
    }
    let merged = merge(parsed);
    resolve_merged(merged, context, files)
}

/// Resolves one context of the merged files, in client-go's order: the context, its cluster
/// (server, trust, proxy), then its user (client certificate, then token, token file or exec).
fn resolve_merged(
    m: Merged,
    context: Option<&str>,
    files: &[PathBuf],
) -> Result<ClusterConfig, KubeError> {
    let files_display = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let (ctx_name, ctx) = select_context(&m, context, &files_display)?;
    let cluster_name = ctx.cluster.clone().unwrap_or_default();
    let (cluster_dir, cluster) = m.clusters.get(&cluster_name).ok_or_else(|| {
        config_err(format!(
            "context {ctx_name:?} names cluster {cluster_name:?}, which is not defined in kubeconfig {files_display}"
        ))
    })?;
    let endpoint = Endpoint::resolve(&cluster_name, cluster_dir, cluster)?;
    let user_name = ctx.user.clone().unwrap_or_default();
    let (user_dir, user) = match m.users.get(&user_name) {
        Some((d, u)) => (d.clone(), u.clone()),
        None if user_name.is_empty() => (PathBuf::from("."), RawUser::default()),
        None => {
            return Err(config_err(format!(
                "context {ctx_name:?} names user {user_name:?}, which is not defined in kubeconfig {files_display}"
            )));
        }
    };
    let uwhat = |field: &str| format!("kubeconfig user {user_name:?} {field}");
    check_user_method(&user, &uwhat)?;
    let client_cert = client_cert(&user, &user_dir, &uwhat)?;
    let auth = user_auth(&user, &user_dir, &uwhat, cluster, &endpoint.server)?;
    Ok(ClusterConfig {
        server: endpoint.server,
        origin: Origin::Kubeconfig {
            context: ctx_name.clone(),
            files: files.to_vec(),
        },
        ca_pem: endpoint.ca_pem,
        insecure_skip_tls_verify: endpoint.insecure,
        tls_server_name: cluster.tls_server_name.clone().filter(|s| !s.is_empty()),
        proxy_url: endpoint.proxy_url,
        client_cert,
        auth,
        #[cfg(feature = "test-support")]
        namespace: ctx
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
    })
}

/// The context asked for, else `current-context`.
fn select_context<'m>(
    m: &'m Merged,
    context: Option<&str>,
    files_display: &str,
) -> Result<(String, &'m RawContext), KubeError> {
    let ctx_name = match context.filter(|c| !c.is_empty()) {
        Some(c) => c.to_owned(),
        None => m.current_context.clone().ok_or_else(|| {
            config_err(format!(
                "kubeconfig {files_display} has no current-context; pass --context"
            ))
        })?,
    };
    let ctx = m.contexts.get(&ctx_name).ok_or_else(|| {
        config_err(format!(
            "context {ctx_name:?} is not defined in kubeconfig {files_display}"
        ))
    })?;
    Ok((ctx_name, ctx))
}

/// A cluster stanza checked: where the server is, what to trust, which proxy.
struct Endpoint {
    server: String,
    ca_pem: Option<Vec<u8>>,
    insecure: bool,
    proxy_url: Option<String>,
}

impl Endpoint {
    fn resolve(
        cluster_name: &str,
        dir: &Path,
        cluster: &RawCluster,
    ) -> Result<Endpoint, KubeError> {
        let server = cluster
            .server
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| config_err(format!("cluster {cluster_name:?} has no server")))?;
        let server = server.trim_end_matches('/').to_owned();
        let what = |field: &str| format!("kubeconfig cluster {cluster_name:?} {field}");
        let ca_pem = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(data), _) if !data.is_empty() => {
                Some(decode_b64(data, &what("certificate-authority-data"))?)
            }
            (_, Some(file)) if !file.is_empty() => {
                let p = resolve_path(dir, file);
                Some(std::fs::read(&p).map_err(|e| {
                    config_err(format!(
                        "{} {}: {e}",
                        what("certificate-authority"),
                        p.display()
                    ))
                })?)
            }
            _ => None,
        };
        if let Some(pem) = &ca_pem {
            check_ca_pem(pem, &what("certificate-authority"))?;
        }
        let insecure = cluster.insecure_skip_tls_verify.unwrap_or(false);
        if insecure && ca_pem.is_some() {
            return Err(config_err(format!(
                "{}: specifying a certificate authority together with insecure-skip-tls-verify is not allowed",
                what("")
            )));
        }
        let proxy_url = cluster.proxy_url.clone().filter(|s| !s.is_empty());
        if let Some(p) = &proxy_url
            && !(p.starts_with("http://") || p.starts_with("https://"))
        {
            return Err(config_err(format!(
                "{}: only http:// and https:// proxies are supported (socks5 is not built in)",
                what("proxy-url")
            )));
        }
        Ok(Endpoint {
            server,
            ca_pem,
            insecure,
            proxy_url,
        })
    }
}

/// Authentication methods kubectl itself no longer supports are refused with what to use.
fn check_user_method(user: &RawUser, uwhat: &dyn Fn(&str) -> String) -> Result<(), KubeError> {
    if user.username.is_some() || user.password.is_some() {
        return Err(config_err(format!(
            "{}: basic authentication (username/password) is not supported; use a token, client certificate or exec plugin",
            uwhat("")
        )));
    }
    if user.auth_provider.is_some() && user.exec.is_none() && user.token.is_none() {
        return Err(config_err(format!(
            "{}: auth-provider plugins were removed from kubectl; convert the kubeconfig to an exec plugin (e.g. kubelogin convert-kubeconfig, gke-gcloud-auth-plugin)",
            uwhat("")
        )));
    }
    Ok(())
}

/// The user's client certificate and key: both or neither, and usable together.
fn client_cert(
    user: &RawUser,
    user_dir: &Path,
    uwhat: &dyn Fn(&str) -> String,
) -> Result<Option<ClientCertPem>, KubeError> {
    let cert = read_data_or_file(
        &user.client_certificate_data,
        &user.client_certificate,
        user_dir,
        &uwhat("client-certificate"),
    )?;
    let key = read_data_or_file(
        &user.client_key_data,
        &user.client_key,
        user_dir,
        &uwhat("client-key"),
    )?;
    match (cert, key) {
        (Some(cert), Some(key)) => {
            validate_client_cert(&cert, &key, &uwhat("client-certificate/client-key"))?;
            Ok(Some(ClientCertPem {
                cert,
                key: Secret::new(key),
            }))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err(config_err(format!(
            "{} is set but client-key is missing",
            uwhat("client-certificate")
        ))),
        (None, Some(_)) => Err(config_err(format!(
            "{} is set but client-certificate is missing",
            uwhat("client-key")
        ))),
    }
}

/// The request credential: token file (with the static token as fallback), else static
/// token, else exec plugin, else none. A token file without fallback must be readable now.
fn user_auth(
    user: &RawUser,
    user_dir: &Path,
    uwhat: &dyn Fn(&str) -> String,
    cluster: &RawCluster,
    server: &str,
) -> Result<AuthConfig, KubeError> {
    let token = user
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    let auth = if let Some(tf) = user.token_file.clone().filter(|t| !t.is_empty()) {
        AuthConfig::TokenFile {
            path: resolve_path(user_dir, &tf),
            fallback: token,
        }
    } else if let Some(t) = token {
        // A static token wins over exec, as in client-go.
        AuthConfig::Token(t)
    } else if let Some(exec) = &user.exec {
        AuthConfig::Exec(exec_config(
            exec,
            user_dir,
            &uwhat("exec"),
            cluster,
            server,
        )?)
    } else {
        AuthConfig::None
    };
    if let AuthConfig::TokenFile { path, fallback } = &auth
        && fallback.is_none()
    {
        read_token_file(path).map_err(|e| config_err(format!("{}: {e}", uwhat("tokenFile"))))?;
    }
    Ok(auth)
}

fn exec_config(
    e: &RawExec,
    dir: &Path,
    what: &str,
    cluster: &RawCluster,
    server: &str,
) -> Result<ExecConfig, KubeError> {
    let command = e
        .command
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| config_err(format!("{what}: command is missing")))?;
    let api_version = e.api_version.clone().unwrap_or_default();
    if !matches!(
        api_version.as_str(),
        "client.authentication.k8s.io/v1" | "client.authentication.k8s.io/v1beta1"
    ) {
        return Err(config_err(format!(
            "{what}: apiVersion {api_version:?} is not supported; use client.authentication.k8s.io/v1 or v1beta1"
        )));
    }
    let mode = e.interactive_mode.clone().unwrap_or_default();
    match mode.as_str() {
        "" if api_version.ends_with("/v1") => {
            return Err(config_err(format!(
                "{what}: interactiveMode is required for client.authentication.k8s.io/v1"
            )));
        }
        "" | "Never" | "IfAvailable" => {}
        "Always" => {
            return Err(config_err(format!(
                "{what}: interactiveMode Always needs a terminal; the agent runs without one, use Never or IfAvailable"
            )));
        }
        other => {
            return Err(config_err(format!(
                "{what}: interactiveMode {other:?} is not one of Never, IfAvailable, Always"
            )));
        }
    }
    // A command with a slash is a path relative to the kubeconfig; a bare name uses $PATH.
    let command = if command.contains('/') {
        resolve_path(dir, &command).display().to_string()
    } else {
        command
    };
    let cluster_info = if e.provide_cluster_info.unwrap_or(false) {
        let mut info = serde_json::json!({ "server": server });
        if let Some(ca) = &cluster.certificate_authority_data {
            info["certificate-authority-data"] = ca.clone().into();
        }
        if let Some(n) = &cluster.tls_server_name {
            info["tls-server-name"] = n.clone().into();
        }
        if let Some(true) = cluster.insecure_skip_tls_verify {
            info["insecure-skip-tls-verify"] = true.into();
        }
        if let Some(p) = &cluster.proxy_url {
            info["proxy-url"] = p.clone().into();
        }
        if let Some(ext) = cluster
            .extensions
            .iter()
            .flatten()
            .find(|x| x.name == "client.authentication.k8s.io/exec")
            .and_then(|x| x.extension.clone())
        {
            info["config"] = ext;
        }
        Some(info)
    } else {
        None
    };
    Ok(ExecConfig {
        command,
        args: e.args.clone().unwrap_or_default(),
        env: e
            .env
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect(),
        api_version,
        install_hint: e.install_hint.clone().unwrap_or_default(),
        cluster_info,
    })
}

fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn decode_b64(data: &str, what: &str) -> Result<Vec<u8>, KubeError> {
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| config_err(format!("{what} is not valid base64: {e}")))
}

fn read_data_or_file(
    data: &Option<String>,
    file: &Option<String>,
    dir: &Path,
    what: &str,
) -> Result<Option<Vec<u8>>, KubeError> {
    match (data, file) {
        (Some(d), _) if !d.is_empty() => Ok(Some(decode_b64(d, &format!("{what}-data"))?)),
        (_, Some(f)) if !f.is_empty() => {
            let p = resolve_path(dir, f);
            std::fs::read(&p)
                .map(Some)
                .map_err(|e| config_err(format!("{what} {}: {e}", p.display())))
        }
        _ => Ok(None),
    }
}

/// Checks a certificate/key pair with rustls before ureq sees it: ureq panics on the first
/// connection when the pair is unusable (ureq#1077), and with `panic = "abort"` that would
/// kill the agent instead of printing which file is wrong.
pub fn validate_client_cert(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<(), KubeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| config_err(format!("{what}: certificate is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(config_err(format!(
            "{what}: no certificate in the PEM data"
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
        config_err(format!(
            "{what}: no usable private key (PKCS#1, PKCS#8 or SEC1 PEM expected)"
        ))
    })?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(format!("{what}: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            config_err(format!(
                "{what}: the certificate and key cannot be used together: {e}"
            ))
        })?;
    // ureq's own parser must accept the same data, or it would fail later.
    ureq::tls::PrivateKey::from_pem(key_pem)
        .map_err(|e| config_err(format!("{what}: private key: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> KubeconfigFile {
        parse_kubeconfig(Path::new("/k/config"), text).unwrap()
    }

    const CA_B64: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJkVENDQVJ1Z0F3SUJBZ0lVRmFrZQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==";

    #[test]
    fn merge_first_file_wins_whole_entries() {
        let a = parse(
            r#"
apiVersion: v1
kind: Config
current-context: a
clusters:
- name: shared
  cluster: {server: "https://a.example:6443", insecure-skip-tls-verify: true}
users:
- name: me
  user: {token: from-a}
contexts:
- name: a
  context: {cluster: shared, user: me, namespace: team-a}
"#,
        );
        let b = parse(
            r#"
current-context: b
clusters:
- name: shared
  cluster: {server: "https://b.example/", tls-server-name: b}
- name: other
  cluster: {server: "https://other.example/prefix/"}
users:
- name: me
  user: {token: from-b, tokenFile: /x}
- name: you
  user: {token: you}
contexts:
- name: b
  context: {cluster: other, user: you}
"#,
        );
        let m = merge(vec![(PathBuf::from("/k/a"), a), (PathBuf::from("/k/b"), b)]);
        assert_eq!(m.current_context.as_deref(), Some("a"));
        let files = [PathBuf::from("/k/a"), PathBuf::from("/k/b")];
        let m2 = |m: Merged, ctx: Option<&str>| resolve_merged(m, ctx, &files);
        let cfg = m2(m, None).unwrap();
        assert_eq!(cfg.server, "https://a.example:6443");
        assert!(cfg.insecure_skip_tls_verify);
        // The whole "shared" entry comes from the first file: no tls-server-name from b.
        assert_eq!(cfg.tls_server_name, None);
        assert_eq!(cfg.namespace, "team-a");
        match cfg.auth {
            AuthConfig::Token(t) => assert_eq!(t.expose(), "from-a"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn context_selection_and_errors() {
        let text = r#"
current-context: a
clusters:
- {name: c, cluster: {server: "https://c.example/prefix/"}}
users:
- {name: u, user: {token: t}}
- {name: basic, user: {username: x, password: y}}
- {name: onlycert, user: {client-certificate-data: "Zm9v"}}
- {name: gcp, user: {auth-provider: {name: gcp}}}
contexts:
- {name: a, context: {cluster: c, user: u}}
- {name: nocluster, context: {cluster: missing, user: u}}
- {name: nouser, context: {cluster: c, user: missing}}
- {name: basic, context: {cluster: c, user: basic}}
- {name: onlycert, context: {cluster: c, user: onlycert}}
- {name: gcp, context: {cluster: c, user: gcp}}
"#;
        let files = [PathBuf::from("/k/config")];
        let run = |ctx: Option<&str>| {
            resolve_merged(merge(vec![(files[0].clone(), parse(text))]), ctx, &files)
        };
        let ok = run(None).unwrap();
        assert_eq!(ok.server, "https://c.example/prefix");
        assert_eq!(ok.namespace, "default");
        let cases = [
            (Some("missing"), "context \"missing\" is not defined"),
            (Some("nocluster"), "cluster \"missing\""),
            (Some("nouser"), "user \"missing\""),
            (Some("basic"), "basic authentication"),
            (Some("onlycert"), "client-key is missing"),
            (Some("gcp"), "auth-provider"),
        ];
        for (ctx, want) in cases {
            let err = run(ctx).unwrap_err().to_string();
            assert!(err.contains(want), "{ctx:?}: {err}");
            assert!(!err.contains("\"t\""), "no token in errors: {err}");
        }
    }

    #[test]
    fn exec_stanzas() {
        let text = |user: &str| {
            format!(
                r#"
current-context: a
clusters:
- name: c
  cluster:
    server: https://eks.example
    certificate-authority-data: {CA_B64}
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {{audience: my-aud}}
users:
- name: u
  user:
{user}
contexts:
- {{name: a, context: {{cluster: c, user: u}}}}
"#
            )
        };
        let files = [PathBuf::from("/k/dir/config")];
        let run = |user: &str| {
            resolve_merged(
                merge(vec![(files[0].clone(), parse(&text(user)))]),
                None,
                &files,
            )
        };
        // EKS shape: v1beta1, no interactiveMode, bare command, env.
        let eks = run("    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [--region, eu-west-1, eks, get-token, --cluster-name, prod]\n      env: [{name: AWS_PROFILE, value: p}]").unwrap();
        let AuthConfig::Exec(e) = eks.auth else {
            panic!()
        };
        assert_eq!(e.command, "aws");
        assert_eq!(e.args.len(), 6);
        assert_eq!(e.env, vec![("AWS_PROFILE".to_string(), "p".to_string())]);
        assert_eq!(e.cluster_info, None);
        // GKE shape: provideClusterInfo gives spec.cluster with the extension as config.
        let gke = run("    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: ./bin/gke-gcloud-auth-plugin\n      provideClusterInfo: true\n      interactiveMode: IfAvailable").unwrap();
        let AuthConfig::Exec(e) = gke.auth else {
            panic!()
        };
        assert_eq!(e.command, "/k/dir/./bin/gke-gcloud-auth-plugin");
        let info = e.cluster_info.unwrap();
        assert_eq!(info["server"], "https://eks.example");
        assert_eq!(info["config"]["audience"], "my-aud");
        assert_eq!(info["certificate-authority-data"], CA_B64);
        // Rejections.
        let cases = [
            (
                "    exec: {apiVersion: client.authentication.k8s.io/v1, command: x}",
                "interactiveMode is required",
            ),
            (
                "    exec: {apiVersion: client.authentication.k8s.io/v1, command: x, interactiveMode: Always}",
                "needs a terminal",
            ),
            (
                "    exec: {apiVersion: client.authentication.k8s.io/v1alpha1, command: x}",
                "not supported",
            ),
            (
                "    exec: {apiVersion: client.authentication.k8s.io/v1beta1}",
                "command is missing",
            ),
        ];
        for (user, want) in cases {
            let err = run(user).unwrap_err().to_string();
            assert!(err.contains(want), "{user}: {err}");
        }
        // A static token wins over exec.
        let both = run("    token: static\n    exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: x}").unwrap();
        assert!(matches!(both.auth, AuthConfig::Token(_)));
    }

    #[test]
    fn search_path_dedupes_and_skips_missing() {
        let dir = std::env::temp_dir().join(format!("kijo-kcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        let b = dir.join("b");
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let list = std::env::join_paths([&a, &dir.join("missing"), &b, &a]).unwrap();
        let got = kubeconfig_search_path(Some(&list), None);
        assert_eq!(got, vec![a.clone(), b.clone()]);
        let empty = kubeconfig_search_path(None, Some(dir.as_os_str()));
        assert!(empty.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_paths_resolve_against_the_kubeconfig_directory() {
        let dir = std::env::temp_dir().join(format!("kijo-kcfg-rel-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(CA_B64)
            .unwrap();
        std::fs::write(dir.join("certs/ca.crt"), pem).unwrap();
        std::fs::write(dir.join("certs/token"), " tok \n").unwrap();
        let kc = dir.join("config");
        std::fs::write(
            &kc,
            "current-context: a\nclusters:\n- {name: c, cluster: {server: 'https://k', certificate-authority: certs/ca.crt}}\nusers:\n- {name: u, user: {tokenFile: certs/token}}\ncontexts:\n- {name: a, context: {cluster: c, user: u}}\n",
        )
        .unwrap();
        let cfg = from_kubeconfig_files(std::slice::from_ref(&kc), None).unwrap();
        assert!(cfg.ca_pem.is_some());
        match &cfg.auth {
            AuthConfig::TokenFile { path, .. } => {
                assert_eq!(path, &dir.join("certs/token"));
                assert_eq!(read_token_file(path).unwrap().expose(), "tok");
            }
            other => panic!("{other:?}"),
        }
        // A missing CA file is named in the error.
        std::fs::remove_file(dir.join("certs/ca.crt")).unwrap();
        let err = from_kubeconfig_files(std::slice::from_ref(&kc), None).unwrap_err();
        assert!(err.to_string().contains("certs/ca.crt"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_yaml_does_not_echo_content() {
        let err = parse_kubeconfig(Path::new("/k/x"), "users: [\n  {token: s3cr3t-token, : : :")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/k/x"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn bad_client_cert_pair_is_an_error_not_a_panic() {
        let err = validate_client_cert(b"not pem", b"not pem", "user x").unwrap_err();
        assert!(err.to_string().contains("user x"), "{err}");
    }
}
