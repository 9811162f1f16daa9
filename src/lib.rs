//! kijo-agent: reads Trivy Operator reports through the Kubernetes API, tracks every finding's
//! lifecycle in a store and notifies once per real change.
//!
//! The crate is split into a functional core (report model, workload identity, lifecycle diff,
//! message rendering: pure functions over plain data) and an imperative shell (Kubernetes client,
//! stores, notifiers, health server) that is tested against real servers. The binary in
//! `main.rs` only wires them together.

pub(crate) mod backoff;
pub(crate) mod check;
#[cfg(fuzzing)]
pub mod fuzz_api;
pub(crate) mod leader;
pub(crate) mod text;
pub(crate) mod tls_verifier;

// What main.rs uses: public in every build.
pub mod config;
pub mod logging;
pub mod service;

/// Declares modules that only the integration tests, examples and benchmarks reach from outside
/// the crate. They are `pub` in a normal build; under `--cfg kijo_bin_view` (`.ci/check-dead-code`)
/// they are private, so rustc sees the crate as the binary does and reports every item that only
/// a test uses as dead code. Without this view, `pub` hides dead code from rustc entirely.
macro_rules! test_visible_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(not(kijo_bin_view))]
        pub mod $name;
        #[cfg(kijo_bin_view)]
        pub(crate) mod $name;
    )*};
}

test_visible_modules!(
    health, kube, lifecycle, metrics, notify, poll, secret, severity, store, trivy
);
