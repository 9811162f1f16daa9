//! The service shell end to end: the real binary, real loopback HTTP, a real PostgreSQL.

use std::time::{Duration, Instant};

use crate::support::agent::{Agent, TempDir, get, raw_request, run, wait_until};
use crate::support::pg::TestDb;
use crate::support::sandbox::Sandbox;

const EVERY_VARIABLE: [&str; 15] = [
    "KIJO_DATABASE_URL",
    "KIJO_POLL_INTERVAL",
    "KIJO_NAMESPACES",
    "KIJO_CLUSTER_NAME",
    "KIJO_NOTIFY_SLACK",
    "KIJO_NOTIFY_WEBHOOK",
    "KIJO_NOTIFY_WEBHOOK_SECRET",
    "KIJO_NOTIFY_SEVERITY",
    "KIJO_SAAS_ENDPOINT",
    "KIJO_SAAS_API_KEY",
    "KIJO_LOG_FORMAT",
    "KIJO_LOG_LEVEL",
    "KIJO_HEALTH_ADDR",
    "KIJO_KUBECONFIG",
    "KIJO_KUBE_CONTEXT",
];

#[test]
fn help_lists_every_variable_and_version_prints() {
    let (status, out, _) = run(&[], &["--help"]);
    assert!(status.success());
    for var in EVERY_VARIABLE {
        assert!(out.contains(var), "--help lacks {var}:\n{out}");
    }
    for flag in [
        "--database-url",
        "--poll-interval",
        "--once",
        "--dry-run",
        "--version",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    let (status, out, _) = run(&[], &["--version"]);
    assert!(status.success());
    assert_eq!(
        out.trim(),
        format!("kijo-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_values_exit_2_naming_every_variable() {
    let (status, out, err) = run(
        &[("KIJO_POLL_INTERVAL", "banana"), ("KIJO_LOG_FORMAT", "xml")],
        &[],
    );
    assert_eq!(status.code(), Some(2), "stdout {out}\nstderr {err}");
    assert!(err.contains("KIJO_POLL_INTERVAL=banana"), "{err}");
    assert!(err.contains("KIJO_LOG_FORMAT=xml"), "{err}");
    // The log format is bad, so problems are reported in the default JSON format.
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["level"], "error");
    }
}

#[test]
fn a_password_never_reaches_a_log_line_or_an_error() {
    let secret = "hunter2-never-log-me";
    // Port 1 refuses connections: the cycle fails and logs the failure.
    let url = format!("postgres://kijo:{secret}@127.0.0.1:1/kijo?sslmode=disable");
    let (status, out, err) = run(
        &[
            ("KIJO_DATABASE_URL", url.as_str()),
            ("KIJO_CLUSTER_NAME", "t"),
        ],
        &["--once"],
    );
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("failed"), "{err}");
    let (status, dry_out, dry_err) = run(
        &[("KIJO_CLUSTER_NAME", "t")],
        &[&format!("--database-url={url}"), "--dry-run"],
    );
    assert_eq!(status.code(), Some(1), "{dry_out}");
    assert!(
        dry_out.contains("FAIL") && dry_out.contains("database"),
        "{dry_out}"
    );
    // A bad value with a password in it is masked too.
    let bad = format!("mysql://kijo:{secret}@db/kijo");
    let (status, bad_out, bad_err) = run(&[("KIJO_DATABASE_URL", bad.as_str())], &[]);
    assert_eq!(status.code(), Some(2));
    for text in [out, err, dry_out, dry_err, bad_out, bad_err] {
        assert!(!text.contains(secret), "secret leaked:\n{text}");
    }
}

#[test]
fn dry_run_passes_on_a_reachable_database_as_the_original_readme_writes_it() {
    let sandbox = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let kubeconfig = sandbox.kubeconfig.display().to_string();
    let db = TestDb::create("dryrun");
    let url = db.url_with_password("pw");
    let env = [
        ("KIJO_CLUSTER_NAME", "t"),
        ("KIJO_KUBECONFIG", kubeconfig.as_str()),
    ];
    let (status, out, err) = run(&env, &[&format!("--database-url={url}"), "--dry-run"]);
    assert!(status.success(), "stdout {out}\nstderr {err}");
    for check in ["database", "kubernetes", "list vulnerabilityreports"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("OK") && l.contains(check)),
            "no OK line for {check}:\n{out}"
        );
    }
    assert!(out.contains("checks passed"), "{out}");
    assert!(!out.contains("pw@"), "password shown: {out}");

    // Without permission to list reports the same command fails and says which check.
    let (status, out, _) = run(
        &[
            ("KIJO_CLUSTER_NAME", "t"),
            ("KIJO_KUBECONFIG", "/nonexistent/kubeconfig"),
        ],
        &[&format!("--database-url={url}"), "--dry-run"],
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("kubernetes")),
        "{out}"
    );
}

#[test]
fn probes_metrics_and_http_hardening() {
    let dir = TempDir::new("probes");
    let db = format!("sqlite:{}", dir.path().join("kijo.db").display());
    let agent = Agent::start(
        &[
            ("KIJO_DATABASE_URL", db.as_str()),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0"),
            ("KIJO_CLUSTER_NAME", "probe-test"),
        ],
        &[],
    );
    let addr = agent.health_addr();

    let live = get(addr, "/health/live");
    assert_eq!(live.status, 200, "{}", live.body);
    wait_until("ready", Duration::from_secs(20), || {
        get(addr, "/health/ready").status == 200
    });

    // The cycle counter appears when the first cycle ends, which under a loaded test run can
    // be after readiness.
    wait_until("a finished poll cycle", Duration::from_secs(20), || {
        get(addr, "/metrics")
            .body
            .contains("kijo_poll_cycles_total")
    });
    let metrics = get(addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .contains("version=0.0.4")
    );
    for name in [
        "kijo_build_info{version=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "kijo_poll_cycles_total",
    ] {
        assert!(
            metrics.body.contains(name),
            "metrics lack {name}:\n{}",
            metrics.body
        );
    }

    // Every response closes its connection: raw_request reads to EOF.
    for r in [&live, &metrics] {
        assert_eq!(r.header("connection").as_deref(), Some("close"));
    }

    let head = raw_request(addr, b"HEAD /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let post = raw_request(
        addr,
        b"POST /health/live HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
    assert_eq!(post.header("connection").as_deref(), Some("close"));

    let with_body = raw_request(
        addr,
        b"GET /health/live HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(with_body.status, 400);
    let chunked = raw_request(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    );
    assert_eq!(chunked.status, 400);
    assert!(!chunked.body.contains("smuggled"));

    let mut huge = b"GET /health/live HTTP/1.1\r\nX-Fill: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 16 * 1024));
    huge.extend(b"\r\n\r\n");
    assert_eq!(raw_request(addr, &huge).status, 431);

    // A pipelined second request is never answered: one request per connection.
    let pipelined = raw_request(
        addr,
        b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\nGET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(pipelined.status, 200);
    assert!(
        !pipelined.body.contains("kijo_build_info"),
        "second request was answered"
    );

    assert_eq!(get(addr, "/nope").status, 404);

    // Every JSON log line parses and carries level, msg and timestamp.
    let lines = agent.lines();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["level", "msg", "timestamp"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        v["timestamp"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("timestamp not RFC 3339 in {line}: {e}"));
    }
}

#[test]
fn readiness_follows_the_database_and_sigterm_exits_0_quickly() {
    let db = TestDb::create("ready");
    let secret = "pg-password-not-in-logs";
    let url = db.url_with_password(secret);
    let mut agent = Agent::start(
        &[
            ("KIJO_DATABASE_URL", url.as_str()),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0"),
            ("KIJO_CLUSTER_NAME", "ready-test"),
            ("KIJO_LOG_LEVEL", "debug"),
        ],
        &[],
    );
    let addr = agent.health_addr();
    wait_until("ready", Duration::from_secs(20), || {
        get(addr, "/health/ready").status == 200
    });

    db.take_away();
    wait_until(
        "not ready once the database is gone",
        Duration::from_secs(20),
        || {
            let r = get(addr, "/health/ready");
            r.status == 503 && r.body.contains("database")
        },
    );
    assert_eq!(
        get(addr, "/health/live").status,
        200,
        "a missing database is not a dead agent"
    );

    db.bring_back();
    wait_until(
        "ready again once the database is back",
        Duration::from_secs(20),
        || get(addr, "/health/ready").status == 200,
    );

    let sent = Instant::now();
    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(sent.elapsed() < Duration::from_secs(10));
    let lines = agent.lines();
    assert!(lines.iter().any(|l| l.contains("shutting down")));
    for line in lines {
        assert!(!line.contains(secret), "password leaked: {line}");
    }
}

#[test]
fn once_runs_one_cycle_and_exits_0_or_1() {
    let sandbox = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let kubeconfig = sandbox.kubeconfig.display().to_string();
    let dir = TempDir::new("once");
    let db = format!("sqlite:{}", dir.path().join("kijo.db").display());
    let env = [
        ("KIJO_DATABASE_URL", db.as_str()),
        ("KIJO_CLUSTER_NAME", "once"),
        ("KIJO_KUBECONFIG", kubeconfig.as_str()),
    ];
    let (status, _, err) = run(&env, &["--once"]);
    assert!(status.success(), "{err}");
    let summary = err
        .lines()
        .find(|l| l.contains("poll cycle finished"))
        .unwrap_or_else(|| panic!("no summary line in {err}"));
    let v: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!(v["baseline"], true, "{summary}");
    assert!(v["reports_changed"].as_u64().unwrap() >= 4, "{summary}");
    assert!(
        dir.path().join("kijo.db").exists(),
        "the embedded store was created"
    );

    // The API failing makes the cycle, and so --once, fail.
    sandbox.fault(r#"{"kind":"500","count":100}"#);
    let (status, _, err) = run(&env, &["--once"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("poll cycle failed"), "{err}");
}

#[test]
fn sigterm_interrupts_a_retry_after_wait_and_exits_0_quickly() {
    let sandbox = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    // Every list answers 429 with a long Retry-After: the agent sits in its wait.
    sandbox.fault(r#"{"kind":"429","count":1000,"retry_after_seconds":30}"#);
    let kubeconfig = sandbox.kubeconfig.display().to_string();
    let dir = TempDir::new("retry-wait");
    let db = format!("sqlite:{}", dir.path().join("kijo.db").display());
    let mut agent = Agent::start(
        &[
            ("KIJO_DATABASE_URL", db.as_str()),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0"),
            ("KIJO_CLUSTER_NAME", "retry-wait"),
            ("KIJO_KUBECONFIG", kubeconfig.as_str()),
        ],
        &[],
    );
    agent.health_addr();
    wait_until(
        "the agent got its first 429",
        Duration::from_secs(20),
        || sandbox.count("list", "vulnerabilityreports") >= 1,
    );
    let sent = Instant::now();
    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        agent.lines().join("\n")
    );
    assert!(sent.elapsed() < Duration::from_secs(10));
    assert!(
        !agent
            .lines()
            .iter()
            .any(|l| l.contains("poll cycle failed")),
        "an interrupted cycle is not a failure:\n{}",
        agent.lines().join("\n")
    );
}

/// Issue 12, case 7: settings that used to panic, be dropped or widen the scope silently.
#[test]
fn configuration_gaps_exit_2_naming_the_variable() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::process::Command;

    let huge = "9223372036854775807s";
    for var in [
        "KIJO_POLL_INTERVAL",
        "KIJO_NOTIFY_MAX_AGE",
        "KIJO_NOTIFY_RETRY_BASE",
        "KIJO_NOTIFY_ONCE_WAIT",
        "KIJO_NOTIFY_BATCH_WINDOW",
        "KIJO_LEASE_DURATION",
    ] {
        // --dry-run: whatever happens, the process ends.
        let (status, out, err) = run(&[(var, huge), ("KIJO_CLUSTER_NAME", "t")], &["--dry-run"]);
        assert_eq!(status.code(), Some(2), "{var}: stdout {out}\nstderr {err}");
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("{var}={huge}: must be at most"))),
            "{var}: {err}"
        );
        assert!(!err.contains("panicked"), "{var}: {err}");
    }

    let (status, out, err) = run(
        &[("KIJO_NAMESPACES", ",,,"), ("KIJO_CLUSTER_NAME", "t")],
        &["--dry-run"],
    );
    assert_eq!(status.code(), Some(2), "stdout {out}\nstderr {err}");
    assert!(
        err.contains("KIJO_NAMESPACES=,,,: names no namespace"),
        "{err}"
    );

    // A batch window that is not shorter than the max age: refused at start, one line.
    let (status, out, err) = run(
        &[
            ("KIJO_NOTIFY_BATCH_WINDOW", "2h"),
            ("KIJO_NOTIFY_MAX_AGE", "2h"),
            ("KIJO_CLUSTER_NAME", "t"),
        ],
        &["--once"],
    );
    assert_eq!(status.code(), Some(2), "stdout {out}\nstderr {err}");
    let refusals: Vec<&str> = err
        .lines()
        .filter(|l| {
            l.contains("KIJO_NOTIFY_BATCH_WINDOW=2h: must be shorter than KIJO_NOTIFY_MAX_AGE=2h")
        })
        .collect();
    assert_eq!(refusals.len(), 1, "{err}");

    // A database URL that is not UTF-8 must not become a fresh ./kijo-agent.db.
    let dir = TempDir::new("not-utf8");
    let out = Command::new(crate::support::agent::binary())
        .env_clear()
        .env("KIJO_CLUSTER_NAME", "t")
        .env(
            "KIJO_DATABASE_URL",
            OsStr::from_bytes(b"postgres://kijo:\xff@127.0.0.1:1/kijo"),
        )
        .arg("--dry-run")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("KIJO_DATABASE_URL: is not valid UTF-8"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "the agent created files in its working directory"
    );
}

/// Issue 12, case 8: a cluster configuration that can never work is a configuration error at
/// start, in service mode and with --once, as --dry-run reports it.
#[test]
fn a_broken_cluster_configuration_exits_2_at_start() {
    let dir = TempDir::new("bad-kube");
    let bad_yaml = dir.path().join("bad-yaml");
    std::fs::write(
        &bad_yaml,
        "clusters: [\n  - name: x\n    cluster: {server: \n",
    )
    .unwrap();
    let bad_ca = dir.path().join("bad-ca");
    std::fs::write(
        &bad_ca,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{name: k, cluster: {server: \"https://127.0.0.1:1\", certificate-authority-data: bm90IGEgY2VydGlmaWNhdGU=}}]\n\
         contexts: [{name: c, context: {cluster: k, user: u}}]\n\
         users: [{name: u, user: {token: t}}]\n",
    )
    .unwrap();
    let missing = dir.path().join("missing");
    let db = format!("sqlite:{}", dir.path().join("k.db").display());
    let cases = [
        (&bad_yaml, "is not valid YAML"),
        (&bad_ca, "certificate-authority holds no PEM certificate"),
        (&missing, "does not exist"),
    ];
    for (kubeconfig, want) in cases {
        let kubeconfig = kubeconfig.display().to_string();
        let env = [
            ("KIJO_CLUSTER_NAME", "t"),
            ("KIJO_DATABASE_URL", db.as_str()),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0"),
            ("KIJO_KUBECONFIG", kubeconfig.as_str()),
        ];
        let (status, out, err) = run(&env, &["--once"]);
        assert_eq!(status.code(), Some(2), "{kubeconfig} --once: {out}\n{err}");
        assert!(err.contains(want), "{err}");
        assert!(err.contains("did not start"), "{err}");

        let mut agent = Agent::start(&env, &[]);
        let status = agent.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{kubeconfig} service mode");
        let lines = agent.lines();
        assert!(
            !lines.iter().any(|l| l.contains("health server listening")),
            "probes were served with a broken configuration: {lines:?}"
        );

        let (status, out, _) = run(&env, &["--dry-run"]);
        assert_eq!(status.code(), Some(1));
        assert!(
            out.lines()
                .any(|l| l.starts_with("FAIL") && l.contains("kubernetes") && l.contains(want)),
            "{out}"
        );
    }
}

/// Issue 12, case 8: a credential the API keeps rejecting makes the pod unready with the
/// reason; accepted again, the pod is ready again.
#[test]
fn a_rejected_token_makes_the_agent_unready_with_the_reason() {
    let mut sandbox = Sandbox::start(&["--load", &Sandbox::fixtures_dir().display().to_string()]);
    let dir = TempDir::new("rejected-token");
    let db = format!("sqlite:{}", dir.path().join("k.db").display());
    let kubeconfig = sandbox.kubeconfig.display().to_string();
    let token = sandbox.token.clone();
    let agent = Agent::start(
        &[
            ("KIJO_CLUSTER_NAME", "t"),
            ("KIJO_DATABASE_URL", db.as_str()),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0"),
            ("KIJO_KUBECONFIG", kubeconfig.as_str()),
            ("KIJO_POLL_INTERVAL", "1s"),
        ],
        &[],
    );
    let addr = agent.health_addr();
    wait_until("ready", Duration::from_secs(20), || {
        get(addr, "/health/ready").status == 200
    });

    sandbox.set_tokens(&["some-other-token"]);
    wait_until(
        "not ready while the token is rejected",
        Duration::from_secs(30),
        || {
            let r = get(addr, "/health/ready");
            r.status == 503 && r.body.contains("kubernetes") && r.body.contains("401")
        },
    );
    assert_eq!(
        get(addr, "/health/live").status,
        200,
        "a rejected credential is not a dead agent"
    );

    sandbox.set_tokens(&[token.as_str()]);
    wait_until(
        "ready again once the token is accepted",
        Duration::from_secs(30),
        || get(addr, "/health/ready").status == 200,
    );
    for line in agent.lines() {
        assert!(!line.contains(&token), "token leaked: {line}");
    }
}
