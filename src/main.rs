//! The `kijo-agent` binary: turns the process environment into a [`Config`], and the outcome of
//! the service into an exit status. Everything else lives in the library.
//!
//! Exit statuses: 0 success, 1 a runtime failure (a failed `--once` cycle, a failed dry-run
//! check, a worker that stopped), 2 a configuration problem (nothing was started).

use std::process::ExitCode;

use kijo_agent::config::{self, Mode, RawConfig};
use kijo_agent::{logging, service};

fn main() -> ExitCode {
    // As PID 1 in a scratch image an unhandled SIGTERM is ignored, so the handler comes first,
    // before anything that could take time.
    let signals = match service::Signals::install() {
        Ok(s) => s,
        Err(err) => {
            eprintln!("kijo-agent: cannot install signal handlers: {err}");
            return ExitCode::FAILURE;
        }
    };
    let raw = RawConfig::from_process();
    match raw.mode() {
        Mode::Help => {
            print!("{}", config::help_text());
            return ExitCode::SUCCESS;
        }
        Mode::Version => {
            println!("kijo-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // Best effort first, so that problems are logged in the format the operator asked for even
    // when other settings are wrong; a valid configuration's own values otherwise.
    let best_effort = raw.log_settings();
    let validated = raw.validate();
    let (format, level) = match &validated {
        Ok(config) => (config.log_format, config.log_level),
        Err(_) => best_effort,
    };
    logging::init(format, level);
    let config = match validated {
        Ok(config) => config,
        Err(problems) => {
            for problem in &problems {
                log::error!(setting = problem.culprit.as_str(); "invalid configuration: {problem}");
            }
            return did_not_start(problems.len());
        }
    };
    // The cluster configuration is checked as `--dry-run` checks it: one that can never work
    // is a configuration problem, not a pod that looks healthy and fails every cycle.
    if matches!(config.mode, Mode::Once | Mode::Run)
        && let Err(problem) = service::check_kubernetes(&config)
    {
        log::error!(setting = "kubernetes"; "invalid configuration: {problem}");
        return did_not_start(1);
    }
    service::install_panic_hook();
    let ok = match config.mode {
        Mode::DryRun => service::dry_run(&config),
        Mode::History => service::history(&config),
        Mode::NotifyTest => service::notify_test(&config),
        Mode::Once | Mode::Run => service::run(&config, signals),
        Mode::Help | Mode::Version => unreachable!("handled above"),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Exit status 2 after the problems were logged.
fn did_not_start(problems: usize) -> ExitCode {
    log::error!(problems = problems; "kijo-agent did not start: fix the settings above (see --help)");
    log::logger().flush();
    ExitCode::from(2)
}
