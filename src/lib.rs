//! kijo-agent: reads Trivy Operator reports through the Kubernetes API, tracks every finding's
//! lifecycle in a store and notifies once per real change.
//!
//! The crate is split into a functional core (report model, workload identity, lifecycle diff,
//! message rendering: pure functions over plain data) and an imperative shell (Kubernetes client,
//! stores, notifiers, health server) that is tested against real servers. The binary in
//! `main.rs` only wires them together.

pub(crate) mod backoff;
pub(crate) mod check;
pub mod config;
#[cfg(fuzzing)]
pub mod fuzz_api;
pub mod health;
pub mod kube;
pub(crate) mod leader;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod poll;
pub mod secret;
pub mod service;
pub mod severity;
pub mod store;
pub(crate) mod text;
pub(crate) mod tls_verifier;
pub mod trivy;
