//! Entry points for the cargo-fuzz targets in `tests/fuzz` (compiled only under `cfg(fuzzing)`,
//! which `cargo fuzz` sets).
//!
//! Each function is one target's whole contact with the crate and calls the code the agent runs
//! on that input, nothing re-implemented: a crash found through it is a crash of the agent. The
//! targets therefore depend on these signatures only, and when a parser moves or is renamed only
//! the one line here that calls it changes.

use std::path::Path;

use crate::health::HealthState;
use crate::health::server::{Reply, parse_head, route};
use crate::trivy::{ReportKind, parse_report};

/// Parses one report object as every kind the agent lists (the caller's kind is only a hint
/// the object's own `kind` overrides). Returns how many kinds accepted it.
pub fn report(json: &str) -> usize {
    ReportKind::ALL
        .iter()
        .filter(|kind| parse_report(**kind, json).is_ok())
        .count()
}

/// Streams one list response body through the page decoder and parses each item it hands out,
/// as `Client::list_reports` does. `Ok(n)`: the page was accepted whole with `n` items; `Err`:
/// the decoder rejected it (the listing would retry or restart).
pub fn list_page(body: &[u8]) -> Result<u64, String> {
    let mut items = 0u64;
    let decoded = crate::kube::list::decode_list(body, &mut |item| {
        items += 1;
        for kind in ReportKind::ALL {
            let _ = parse_report(*kind, item.get());
        }
    });
    decoded.map(|_meta| items).map_err(|e| e.to_string())
}

/// Loads `path` as the only kubeconfig file, with its `current-context`, exactly as
/// `--kubeconfig PATH` does at start-up (parse, merge, resolve, check CA and client key).
/// The error text is what the agent would print.
pub fn kubeconfig(path: &Path) -> Result<(), String> {
    crate::kube::config::from_kubeconfig_files(&[path.to_path_buf()], None)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// What the health server decides from the bytes of a request head received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadOutcome {
    /// More bytes are needed.
    Incomplete,
    /// A complete head, and the status `route` answers it with.
    Routed {
        method: String,
        path: String,
        has_body: bool,
        status: u16,
    },
    /// Rejected before routing, with this status.
    Rejected(u16),
}

/// Parses a request head and, when it is complete, routes it against a fresh state whose
/// probes are healthy.
pub fn health_head(buf: &[u8]) -> HeadOutcome {
    match parse_head(buf) {
        Ok(None) => HeadOutcome::Incomplete,
        Ok(Some(head)) => {
            let state = HealthState::new(std::time::Duration::from_secs(600));
            let Reply { status, .. } = route(&head, &state, &[]);
            HeadOutcome::Routed {
                method: head.method,
                path: head.path,
                has_body: head.has_body,
                status,
            }
        }
        Err(reply) => HeadOutcome::Rejected(reply.status),
    }
}

/// The database URL as the agent prints it (start-up line, `--dry-run`).
pub fn mask_database_url(url: &str) -> String {
    crate::secret::mask_database_url(url)
}
