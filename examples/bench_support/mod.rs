//! Pieces the benchmarks share (included with `#[path]`; not an example of its own).

use std::path::Path;

use kijo_agent::kube::{Client, KubeOptions, ListEvent};
use kijo_agent::trivy::ReportKind;

/// The agent's client on a kubeconfig written by the sandbox.
pub fn client(kubeconfig: &Path) -> Client {
    Client::connect(&KubeOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        ..KubeOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// How many VulnerabilityReports the sandbox serves (a metadata-only listing).
pub fn count_reports(kubeconfig: &Path) -> u64 {
    let mut n = 0;
    client(kubeconfig)
        .list_metadata(ReportKind::VulnerabilityReport, &[], &mut |ev| {
            if let ListEvent::Item(_) = ev {
                n += 1;
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    n
}
