//! No log line, at any level, carries a secret: the real binary runs each mode that talks to
//! the Kubernetes API, the database and every notification target, with every secret
//! configured, at error, warn, info, debug and trace, and every line of its output is searched
//! for every secret (as text and as the hex a request dump would show).

use crate::support::agent::{TempDir, run};
use crate::support::pg::TestDb;
use crate::support::receiver::Receiver;
use crate::support::sandbox::Sandbox;

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn no_level_logs_a_secret() {
    let sb = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let receiver = Receiver::start();
    let db = TestDb::create("log_secrets");
    let db_password = "pg-Pa55word-4f1c9e";
    let slack_path = "/services/T0SECRET/B0SECRET/slackTokenb7e21d";
    let webhook_path = "/hooks/webhookPathSecret93ad0";
    let webhook_secret = "whsec-SigningSecret-6c2f4a";
    let saas_key = "kijo-SaasApiKey-1d8e3b";
    let secrets = [
        ("API token", sb.token.clone()),
        ("database password", db_password.to_owned()),
        ("Slack webhook path", slack_path.to_owned()),
        ("webhook path", webhook_path.to_owned()),
        ("webhook secret", webhook_secret.to_owned()),
        ("SaaS API key", saas_key.to_owned()),
    ];
    let kubeconfig = sb.kubeconfig.display().to_string();
    let database = db.url_with_password(db_password);
    let slack = receiver.url(slack_path);
    let webhook = receiver.url(webhook_path);
    let saas = receiver.url("/saas");
    let dir = TempDir::new("log-secrets");
    let mut lines_seen = 0;
    for level in ["error", "warn", "info", "debug", "trace"] {
        for format in ["json", "text"] {
            let env = [
                ("KIJO_DATABASE_URL", database.as_str()),
                ("KIJO_KUBECONFIG", kubeconfig.as_str()),
                ("KIJO_CLUSTER_NAME", "secrets"),
                ("KIJO_NOTIFY_SLACK", slack.as_str()),
                ("KIJO_NOTIFY_WEBHOOK", webhook.as_str()),
                ("KIJO_NOTIFY_WEBHOOK_SECRET", webhook_secret),
                ("KIJO_SAAS_ENDPOINT", saas.as_str()),
                ("KIJO_SAAS_API_KEY", saas_key),
                ("KIJO_LOG_LEVEL", level),
                ("KIJO_LOG_FORMAT", format),
                ("KIJO_NOTIFY_ONCE_WAIT", "5s"),
                ("KIJO_NOTIFY_BATCH_WINDOW", "0"),
                ("HOME", dir.path().to_str().unwrap()),
            ];
            for args in [&["notify-test"][..], &["--dry-run"], &["--once"]] {
                let before = receiver.requests().len();
                let (status, stdout, stderr) = run(&env, args);
                assert!(
                    status.success(),
                    "{args:?} at {level}: {status}\n{stdout}\n{stderr}"
                );
                if args == ["notify-test"] {
                    // Slack, the webhook and the SaaS heartbeat were really sent.
                    assert!(receiver.requests().len() >= before + 3, "{stdout}");
                }
                for line in stdout.lines().chain(stderr.lines()) {
                    lines_seen += 1;
                    for (what, secret) in &secrets {
                        assert!(
                            !line.contains(secret.as_str()) && !line.contains(&hex(secret)),
                            "{what} in a {level} {format} line of {args:?}: {line}"
                        );
                    }
                }
            }
        }
    }
    // The runs said something (the search above was not over nothing): at trace every cycle
    // logs its own progress.
    assert!(lines_seen > 50, "only {lines_seen} lines");
}
