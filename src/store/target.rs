//! `KIJO_DATABASE_URL`: which database, and how it is shown in logs.
//!
//! A PostgreSQL URL is split exactly as the driver splits it (tokio-postgres' URL parser takes
//! everything after `://` up to the *first* `@` as user and password, the rest as hosts,
//! database and parameters), so a password holding `?`, `/`, `:`, `#`, `%` or `@` ends up where
//! the driver expects it and nowhere else. What is printed is rebuilt from the parsed
//! [`::postgres::Config`], never cut out of the string: no password can survive in it.

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use ::postgres::config::Host;
use percent_encoding::percent_decode_str;

use super::error::redact;

/// How the agent talks TLS to PostgreSQL. The names are libpq's, the meanings differ where noted
/// in the README: `require` verifies like `verify-full`, because an unverified "encrypted"
/// connection gives a false sense of safety and rustls has no opportunistic mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without certificate verification (libpq's default);
    /// plain TCP otherwise.
    Prefer,
    /// TLS required; certificate chain and host name verified.
    Require,
    /// TLS required; certificate chain verified, host name not.
    VerifyCa,
    /// TLS required; certificate chain and host name verified.
    VerifyFull,
}

impl PgSslMode {
    fn parse(value: &str) -> Option<PgSslMode> {
        Some(match value {
            "disable" => PgSslMode::Disable,
            "prefer" => PgSslMode::Prefer,
            "require" => PgSslMode::Require,
            "verify-ca" => PgSslMode::VerifyCa,
            "verify-full" => PgSslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PgSslMode::Disable => "disable",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed PostgreSQL URL: the driver's config without the TLS parameters we handle ourselves.
#[derive(Clone)]
pub struct PgTarget {
    pub(crate) config: ::postgres::Config,
    pub ssl_mode: PgSslMode,
    pub root_cert: Option<PathBuf>,
    pub(crate) masked: String,
    /// Password spellings (raw and decoded) scrubbed from every driver message.
    pub(crate) secrets: Vec<String>,
}

/// Where the lifecycle state lives, parsed from `KIJO_DATABASE_URL`.
// One value per process, parsed once: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum DatabaseTarget {
    Postgres(PgTarget),
    Sqlite(PathBuf),
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl DatabaseTarget {
    /// Parses `postgres://…`/`postgresql://…` (libpq-style URL) or `sqlite:PATH`/`sqlite://PATH`.
    /// Errors name the problem and never show a password.
    pub fn parse(url: &str) -> Result<DatabaseTarget, String> {
        let url = url.trim();
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err("sqlite URL has no file path; use sqlite:/var/lib/kijo/kijo.db".into());
            }
            if rest.contains('?') {
                return Err(format!(
                    "sqlite:{rest} has parameters; the sqlite URL takes a file path only"
                ));
            }
            return Ok(DatabaseTarget::Sqlite(PathBuf::from(rest)));
        }
        match Parts::of(url) {
            Some(parts) => parse_postgres(&parts).map(DatabaseTarget::Postgres),
            None => Err(format!(
                "{} is neither a postgres://, postgresql:// nor a sqlite: URL",
                url.split_once("://")
                    .map_or_else(|| "the value".to_owned(), |(s, _)| format!("a {s}:// URL"))
            )),
        }
    }

    /// A masked description for logs: no password, no credential parameter.
    pub fn describe(&self) -> String {
        match self {
            DatabaseTarget::Postgres(pg) => pg.masked.clone(),
            DatabaseTarget::Sqlite(path) => format!("sqlite:{}", path.display()),
        }
    }
}

/// A `postgres://` URL cut where the driver cuts it.
struct Parts<'a> {
    scheme: &'a str,
    /// Everything before the `@`, when there is one: `user[:password]`.
    userinfo: Option<&'a str>,
    /// Hosts, database and parameters.
    rest: &'a str,
    /// More than one `@`: the driver would end the password at the first one and take the
    /// rest of it for a host name, so the URL is refused (and shown cut at the last one).
    ambiguous: bool,
}

impl<'a> Parts<'a> {
    fn of(url: &'a str) -> Option<Parts<'a>> {
        let (scheme, after) = ["postgresql", "postgres"]
            .into_iter()
            .find_map(|s| Some((s, url.strip_prefix(s)?.strip_prefix("://")?)))?;
        let (userinfo, rest) = match after.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, after),
        };
        Some(Parts {
            scheme,
            userinfo,
            rest,
            ambiguous: after.matches('@').count() > 1,
        })
    }

    fn user(&self) -> Option<&'a str> {
        self.userinfo
            .map(|u| u.split_once(':').map_or(u, |(user, _)| user))
    }

    fn password(&self) -> Option<&'a str> {
        self.userinfo?.split_once(':').map(|(_, p)| p)
    }

    /// The hosts and database part, and the parameters as (key, raw value) pairs.
    fn split_rest(&self) -> (&'a str, Vec<(&'a str, &'a str)>) {
        let (base, query) = self.rest.split_once('?').unwrap_or((self.rest, ""));
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        (base, params)
    }

    /// For error messages before the driver parsed the URL: user and hosts, every secret
    /// replaced.
    fn shown(&self) -> String {
        // Ambiguous: where the driver's user info, hosts and parameters end is not what the last
        // `@` suggests (a `password=` may sit in what looks like a host), so show nothing of it.
        if self.ambiguous {
            return format!("{}://***", self.scheme);
        }
        let (base, params) = self.split_rest();
        let mut out = format!("{}://", self.scheme);
        if let Some(user) = self.user() {
            out.push_str(user);
            if self.password().is_some() {
                out.push_str(":***");
            }
            out.push('@');
        }
        out.push_str(base);
        let params: Vec<String> = params
            .iter()
            .map(|(k, v)| {
                if is_secret_param(k) {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        if !params.is_empty() {
            let _ = write!(out, "?{}", params.join("&"));
        }
        out
    }

    /// The password as written and percent-decoded, from the user info and `password=`.
    fn secrets(&self) -> Vec<String> {
        let (_, params) = self.split_rest();
        let mut out = Vec::new();
        let written = self.password().into_iter().chain(
            params
                .iter()
                .filter(|(k, _)| is_secret_param(k))
                .map(|(_, v)| *v),
        );
        for pw in written {
            out.push(pw.to_owned());
            out.push(decode(pw));
        }
        out.retain(|s| !s.is_empty());
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Whether a URL parameter may carry a credential.
fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "pass", "secret", "token", "key"]
        .iter()
        .any(|s| key.contains(s))
}

fn parse_postgres(parts: &Parts<'_>) -> Result<PgTarget, String> {
    let shown = parts.shown();
    if parts.ambiguous {
        return Err(format!(
            "{shown}: the URL holds more than one '@'; percent-encode an '@' in the password (or a parameter) as %40"
        ));
    }
    let secrets = parts.secrets();
    let (base, params) = parts.split_rest();
    let mut ssl_mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, raw) in params {
        let value = decode(raw);
        match key {
            "sslmode" => {
                ssl_mode = Some(PgSslMode::parse(&value).ok_or_else(|| {
                    format!(
                        "{shown}: sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full"
                    )
                })?);
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                return Err(format!(
                    "{shown}: {key} is not supported; use password or scram authentication over sslmode=require"
                ));
            }
            _ => kept.push(format!("{key}={raw}")),
        }
    }
    let mut rebuilt = format!("{}://", parts.scheme);
    if let Some(userinfo) = parts.userinfo {
        let _ = write!(rebuilt, "{userinfo}@");
    }
    rebuilt.push_str(base);
    if !kept.is_empty() {
        let _ = write!(rebuilt, "?{}", kept.join("&"));
    }
    let mut config: ::postgres::Config = rebuilt
        .parse()
        .map_err(|e: ::postgres::Error| format!("{shown}: {}", redact(&e.to_string(), &secrets)))?;
    if root_cert.is_some() && ssl_mode == Some(PgSslMode::Disable) {
        return Err(format!("{shown}: sslrootcert is given but sslmode=disable"));
    }
    // The driver fills in 5432 where no port is written; show ports only when they were.
    let authority = base.split('/').next().unwrap_or("");
    let ports_written = authority
        .split(',')
        .any(|h| h.rsplit_once(']').map_or(h, |(_, p)| p).contains(':'));
    let masked = describe(
        parts.scheme,
        &config,
        ports_written,
        ssl_mode,
        root_cert.as_ref(),
    );
    let ssl_mode = ssl_mode.unwrap_or(PgSslMode::Prefer);
    config.ssl_mode(match ssl_mode {
        PgSslMode::Disable => ::postgres::config::SslMode::Disable,
        PgSslMode::Prefer => ::postgres::config::SslMode::Prefer,
        _ => ::postgres::config::SslMode::Require,
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_tcp_user_timeout().is_none() {
        // A dead peer fails writes after this long instead of hanging the poll thread.
        config.tcp_user_timeout(Duration::from_secs(30));
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(60));
    if config.get_application_name().is_none() {
        config.application_name("kijo-agent");
    }
    Ok(PgTarget {
        config,
        ssl_mode,
        root_cert,
        masked,
        secrets,
    })
}

/// The log form of a parsed URL, from the driver's view of it: user (the password only as
/// `***`), hosts and ports, database, and the TLS parameters given.
fn describe(
    scheme: &str,
    config: &::postgres::Config,
    ports_written: bool,
    ssl_mode: Option<PgSslMode>,
    root_cert: Option<&PathBuf>,
) -> String {
    let mut out = format!("{scheme}://");
    if let Some(user) = config.get_user() {
        out.push_str(user);
        if config.get_password().is_some() {
            out.push_str(":***");
        }
        out.push('@');
    }
    let ports = if ports_written {
        config.get_ports()
    } else {
        &[]
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    out.push_str(&hosts.join(","));
    if let Some(db) = config.get_dbname() {
        let _ = write!(out, "/{db}");
    }
    let mut params = Vec::new();
    if let Some(mode) = ssl_mode {
        params.push(format!("sslmode={}", mode.as_str()));
    }
    if let Some(path) = root_cert {
        params.push(format!("sslrootcert={}", path.display()));
    }
    if !params.is_empty() {
        let _ = write!(out, "?{}", params.join("&"));
    }
    out
}

/// Masks a PostgreSQL URL for display: parsed as the agent parses it and shown without any
/// password; any other value is masked whole.
pub fn mask_database_url(url: &str) -> String {
    match DatabaseTarget::parse(url) {
        Ok(DatabaseTarget::Postgres(pg)) => pg.masked,
        _ => Parts::of(url.trim()).map_or_else(|| "***".to_owned(), |p| p.shown()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn parses_database_urls() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (
                "sqlite:/var/lib/kijo/kijo.db",
                Ok("sqlite:/var/lib/kijo/kijo.db"),
            ),
            ("sqlite:///tmp/x.db", Ok("sqlite:/tmp/x.db")),
            ("sqlite://rel.db", Ok("sqlite:rel.db")),
            ("sqlite:", Err("no file path")),
            ("sqlite:/x.db?mode=ro", Err("file path only")),
            (
                "postgres://kijo:hunter2@db:5432/kijo",
                Ok("postgres://kijo:***@db:5432/kijo"),
            ),
            (
                "postgresql://kijo:hunter2@db/kijo?sslmode=require",
                Ok("postgresql://kijo:***@db/kijo?sslmode=require"),
            ),
            (
                "postgres://kijo:hunter2@db/kijo?sslmode=allow",
                Err("sslmode=allow"),
            ),
            (
                "postgres://kijo:hunter2@db/kijo?sslmode=bogus",
                Err("is not one of"),
            ),
            (
                "postgres://kijo:hunter2@db/kijo?sslcert=/c.pem",
                Err("sslcert is not supported"),
            ),
            (
                "postgres://kijo:hunter2@db/kijo?frobnicate=1",
                Err("frobnicate"),
            ),
            ("postgres://kijo:hunter2@db:notaport/kijo", Err("port")),
            (
                "postgres://kijo:hunter2@db/kijo?sslmode=disable&sslrootcert=/ca.pem",
                Err("sslmode=disable"),
            ),
            ("mysql://kijo:hunter2@db/kijo", Err("neither")),
            ("host=db password=hunter2", Err("neither")),
        ];
        for (url, want) in cases {
            let got = DatabaseTarget::parse(url);
            match (want, &got) {
                (Ok(desc), Ok(t)) => assert_eq!(&t.describe(), desc, "{url}"),
                (Err(needle), Err(msg)) => {
                    assert!(msg.contains(needle), "{url}: {msg}");
                    assert!(!msg.contains("hunter2"), "{url} leaked: {msg}");
                }
                _ => panic!("{url}: got {got:?}, want {want:?}"),
            }
            if let Ok(t) = &got {
                assert!(!format!("{t:?}").contains("hunter2"));
            }
        }
    }

    #[test]
    fn ssl_parameters_are_stripped_and_mapped() {
        let cases = [
            ("postgres://u@h/d", PgSslMode::Prefer, None),
            ("postgres://u@h/d?sslmode=disable", PgSslMode::Disable, None),
            ("postgres://u@h/d?sslmode=require", PgSslMode::Require, None),
            (
                "postgres://u@h/d?sslmode=verify-ca&sslrootcert=/ca.pem",
                PgSslMode::VerifyCa,
                Some("/ca.pem"),
            ),
            (
                "postgres://u@h/d?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-full&connect_timeout=3",
                PgSslMode::VerifyFull,
                Some("/etc/ca.pem"),
            ),
        ];
        for (url, mode, root) in cases {
            let Ok(DatabaseTarget::Postgres(pg)) = DatabaseTarget::parse(url) else {
                panic!("{url} did not parse as postgres");
            };
            assert_eq!(pg.ssl_mode, mode, "{url}");
            assert_eq!(pg.root_cert.as_deref(), root.map(Path::new), "{url}");
            assert_eq!(pg.config.get_user(), Some("u"));
            assert_eq!(pg.config.get_application_name(), Some("kijo-agent"));
            assert!(pg.config.get_connect_timeout().is_some());
        }
    }

    #[test]
    fn passwords_are_collected_for_redaction() {
        let cases = [
            ("postgres://u:p%40ss@h/d", vec!["p%40ss", "p@ss"]),
            ("postgres://u@h/d?password=x", vec!["x"]),
            (
                "postgres://u:a@h/d?password=a&pass=b%20&token=a",
                vec!["a", "b ", "b%20"],
            ),
            ("postgres://u@h/d", vec![]),
        ];
        for (url, want) in cases {
            assert_eq!(Parts::of(url).unwrap().secrets(), want, "{url}");
        }
    }

    /// A driver error about a URL with many one-character passwords stays the size of the URL:
    /// masking a `*` must not make the next mask's `***` a match (the fuzzer's 442-byte input
    /// took minutes and gigabytes before).
    #[test]
    fn errors_about_many_star_passwords_stay_small() {
        let params = "pass=*&".repeat(30);
        let url = format!("postgres://u:*@h:notaport/d?{params}x=1");
        // No `expect_err`: a DatabaseTarget is not Debug (it holds the password).
        let Err(err) = DatabaseTarget::parse(&url) else {
            panic!("a bad port is refused");
        };
        assert!(err.contains("port"), "{err}");
        assert!(err.len() < 4 * url.len(), "{} bytes: {err}", err.len());
        assert!(mask_database_url(&url).len() < 2 * url.len());
    }

    /// Every character that has a meaning in a URL, in a password, as the driver takes it: the
    /// URL parses, the driver gets the whole password, and neither the description, the
    /// `Debug` form nor the masker shows any of it.
    #[test]
    fn passwords_with_url_characters_never_show() {
        for (written, password) in [
            ("pa?ss", "pa?ss"),
            ("pa/ss", "pa/ss"),
            ("pa%40ss", "pa@ss"),
            ("pa:ss", "pa:ss"),
            ("pa%25ss", "pa%ss"),
            ("pa%ss", "pa%ss"),
            ("pa#ss", "pa#ss"),
            ("a?b/c:d%40e#f%25g", "a?b/c:d@e#f%g"),
        ] {
            let url = format!("postgres://kijo:{written}@db.example:5432/kijo?sslmode=require");
            let Ok(DatabaseTarget::Postgres(pg)) = DatabaseTarget::parse(&url) else {
                panic!("{url} did not parse");
            };
            assert_eq!(pg.config.get_password(), Some(password.as_bytes()), "{url}");
            assert_eq!(pg.config.get_user(), Some("kijo"));
            assert_eq!(pg.config.get_hosts().len(), 1, "{url}");
            let want = "postgres://kijo:***@db.example:5432/kijo?sslmode=require";
            assert_eq!(pg.masked, want, "{url}");
            assert_eq!(mask_database_url(&url), want, "{url}");
            assert_eq!(format!("{:?}", DatabaseTarget::Postgres(pg)), want);
        }
        let refused = "postgres://kijo:p@ss@db/kijo";
        let err = DatabaseTarget::parse(refused).err().unwrap();
        assert!(err.contains("%40") && !err.contains("p@ss"), "{err}");
        assert_eq!(mask_database_url(refused), "postgres://***");
        // Found by the fuzz target: the driver's query (with a password) can sit before the last
        // `@`, so nothing of an ambiguous URL is shown.
        let tricky = "postgresql://u:x@db/kijo?host=/run@o&password=lockiij";
        assert_eq!(mask_database_url(tricky), "postgresql://***");
        assert_eq!(
            mask_database_url("postgres://db/kijo?user=a&password=hunter2"),
            "postgres://a:***@db/kijo"
        );
    }
}
