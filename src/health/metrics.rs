//! The health server's own metrics: `kijo_build_info` and the process figures Prometheus
//! client libraries conventionally export (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_threads`), read from `/proc` at every scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;

use super::proc::ProcessStats;
use crate::metrics::Registry;

/// A registry holding `kijo_build_info{version}` and the process collector.
pub(crate) fn registry() -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "kijo_build",
        "Build information of the running agent",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(ProcessCollector));
    registry
}

/// Reads `/proc/self` on each scrape; leaves the metrics out where `/proc` is unreadable.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let rss = ConstGauge::new(p.rss_bytes as i64);
        encode(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &rss,
        )?;
        let cpu = ConstCounter::new(p.cpu_seconds);
        encode(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            &cpu,
        )?;
        let threads = ConstGauge::new(p.threads as i64);
        encode(
            &mut encoder,
            "process_threads",
            "Number of OS threads in the process.",
            &threads,
        )
    }
}

/// One metric with its `# HELP` and `# TYPE` lines (a counter's name gains `_total`).
fn encode(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_process_metrics_keep_their_names() {
        let text = crate::metrics::render(&registry());
        for want in [
            "# TYPE kijo_build_info gauge\n",
            &format!(
                "kijo_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            ),
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ",
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ",
            "# TYPE process_threads gauge\nprocess_threads ",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
