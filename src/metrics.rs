//! Prometheus metrics.
//!
//! Each subsystem owns a small struct of its metrics and registers it on the one
//! [`Registry`] that `main` builds, so adding a metric never touches a central list. The health
//! server renders the registry in text format 0.0.4.

pub(crate) use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
pub use prometheus_client::registry::Registry;

/// Renders the registry in the Prometheus text exposition format 0.0.4.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("encoding metrics into a String");
    out
}
