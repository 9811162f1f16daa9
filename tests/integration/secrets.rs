//! A database password with URL characters never reaches the binary's output: not in the
//! `kijo-agent starting` line, not in `--dry-run`, at any log level. The database URL is given
//! through `KIJO_DATABASE_URL` exactly as an operator writes it (`@` percent-encoded as `%40`,
//! everything else raw), and the agent really connects with it (PostgreSQL on loopback).

use crate::support::agent::run;
use crate::support::pg::TestDb;
use crate::support::sandbox::Sandbox;

/// (as written in the URL, the password the driver uses): one per character that has a meaning
/// in a URL.
const PASSWORDS: [(&str, &str); 6] = [
    ("Qx7?zz1", "Qx7?zz1"),
    ("Qx7/zz2", "Qx7/zz2"),
    ("Qx7%40zz3", "Qx7@zz3"),
    ("Qx7:zz4", "Qx7:zz4"),
    ("Qx7%25zz5", "Qx7%zz5"),
    ("Qx7#zz6", "Qx7#zz6"),
];

#[test]
fn passwords_with_url_characters_never_show_in_logs_or_dry_run() {
    let sandbox = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let kubeconfig = sandbox.kubeconfig.display().to_string();
    let db = TestDb::create("secrets");
    for (written, password) in PASSWORDS {
        let url = db.url_with_password(written);
        let env = [
            ("KIJO_CLUSTER_NAME", "secrets"),
            ("KIJO_KUBECONFIG", kubeconfig.as_str()),
            ("KIJO_DATABASE_URL", url.as_str()),
            ("KIJO_LOG_LEVEL", "debug"),
        ];
        let (status, dry_out, dry_err) = run(&env, &["--dry-run"]);
        assert!(
            status.success(),
            "{written}: dry-run failed\n{dry_out}\n{dry_err}"
        );
        assert!(
            dry_out
                .lines()
                .any(|l| l.starts_with("OK") && l.contains("database")),
            "{written}: the database check did not pass:\n{dry_out}"
        );
        let (status, out, err) = run(&env, &["--once"]);
        assert!(status.success(), "{written}: --once failed\n{err}");
        assert!(
            err.lines().any(|l| l.contains("kijo-agent starting")
                && l.contains("postgres://postgres:***@127.0.0.1:5432/")),
            "{written}: no masked start line:\n{err}"
        );
        for text in [&dry_out, &dry_err, &out, &err] {
            // Neither spelling, nor the parts around the special character.
            for needle in [written, password, "Qx7", &password[4..]] {
                assert!(
                    !text.contains(needle),
                    "{written}: {needle:?} shown:\n{text}"
                );
            }
        }
    }
}
